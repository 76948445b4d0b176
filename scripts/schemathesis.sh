# Makes sure schemathesis (pinned, from pip) is there for the API contract test, which runs
# it against its own server. Sourced by scripts/test; exports PROVISION_TEST_SCHEMATHESIS_BIN.

SCHEMATHESIS_VERSION=3.39.16

ensure_test_schemathesis() {
  if ! pip show schemathesis 2>/dev/null | grep "^Version: $SCHEMATHESIS_VERSION$" >/dev/null; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION (pip)" >&2
    pip install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
  PROVISION_TEST_SCHEMATHESIS_BIN=$(command -v schemathesis)
  export PROVISION_TEST_SCHEMATHESIS_BIN
}
