# The libraries a function's receiver verifies and parses requests with, for the function
# sink's tests: the Standard Webhooks reference package and the CloudEvents SDK (pip,
# pinned). Sourced by scripts/test.

FUNCTION_STANDARDWEBHOOKS_VERSION=1.3.0
FUNCTION_CLOUDEVENTS_VERSION=2.2.0

ensure_test_function_libraries() {
  if ! python3 -m pip show standardwebhooks 2>/dev/null | grep "^Version: $FUNCTION_STANDARDWEBHOOKS_VERSION$" >/dev/null \
    || ! python3 -m pip show cloudevents 2>/dev/null | grep "^Version: $FUNCTION_CLOUDEVENTS_VERSION$" >/dev/null; then
    echo "installing standardwebhooks $FUNCTION_STANDARDWEBHOOKS_VERSION and cloudevents $FUNCTION_CLOUDEVENTS_VERSION (pip)" >&2
    python3 -m pip install -q "standardwebhooks==$FUNCTION_STANDARDWEBHOOKS_VERSION" "cloudevents==$FUNCTION_CLOUDEVENTS_VERSION" >&2
  fi
}
