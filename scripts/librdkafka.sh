# Makes sure Debian's librdkafka-dev is there: Provision's Kafka log links librdkafka, so it is
# needed to build. Sourced by scripts/test and scripts/demo before they build.

ensure_librdkafka() {
  if ! pkg-config --exists rdkafka 2>/dev/null || [ ! -f /usr/include/librdkafka/rdkafka_mock.h ]; then
    echo "installing librdkafka-dev (Debian's package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends librdkafka-dev pkg-config >/dev/null
  fi
}
