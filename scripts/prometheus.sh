# Makes sure a Prometheus server binary is there for the metrics test, which starts its own
# (scraping the test's Provision server) on 127.0.0.1. Sourced by scripts/test; exports
# PROVISION_TEST_PROMETHEUS_BIN.

ensure_test_prometheus() {
  if ! command -v prometheus >/dev/null; then
    echo "installing Prometheus (Debian's package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  PROVISION_TEST_PROMETHEUS_BIN=$(command -v prometheus)
  export PROVISION_TEST_PROMETHEUS_BIN
}
