# Starts two independent implementations of the Elasticsearch REST API for the integration
# tests (no Elasticsearch distribution installs on these machines) and stops them on exit.
# Sourced by scripts/test; exports PROVISION_TEST_ELASTICSEARCH_URLS ("name=url,name=url").

NOIDA_DB_VERSION=0.2.3
OSMEM_SERVER_VERSION=0.1.6

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_http() {  # url
  for _ in $(seq 1 200); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

start_test_elasticsearch() {
  if ! pip show noida-db 2>/dev/null | grep "^Version: $NOIDA_DB_VERSION$" >/dev/null \
    || ! pip show osmem-server 2>/dev/null | grep "^Version: $OSMEM_SERVER_VERSION$" >/dev/null; then
    echo "installing noida-db==$NOIDA_DB_VERSION and osmem-server==$OSMEM_SERVER_VERSION" >&2
    pip install -q "noida-db==$NOIDA_DB_VERSION" "osmem-server==$OSMEM_SERVER_VERSION" >&2
  fi
  PROVISION_TEST_ELASTICSEARCH_DIR=$(mktemp -d /tmp/provision-elasticsearch-XXXXXX)
  local noida_port osmem_port osmem_bin
  noida_port=$(free_port)
  osmem_port=$(free_port)
  # setsid: each server leads its own process group, so stopping it stops its children too.
  setsid noida-db start --data-dir "$PROVISION_TEST_ELASTICSEARCH_DIR/noida" --only elasticsearch \
    --elasticsearch-port "$noida_port" >"$PROVISION_TEST_ELASTICSEARCH_DIR/noida.log" 2>&1 &
  PROVISION_TEST_NOIDA_PID=$!
  osmem_bin="$(python3 -c 'import osmem_server, os; print(os.path.dirname(osmem_server.__file__))')/bin/osmem-server"
  setsid "$osmem_bin" -addr "127.0.0.1:$osmem_port" -no-stdin-watch >"$PROVISION_TEST_ELASTICSEARCH_DIR/osmem.log" 2>&1 &
  PROVISION_TEST_OSMEM_PID=$!
  wait_for_http "http://127.0.0.1:$noida_port/"
  wait_for_http "http://127.0.0.1:$osmem_port/"
  export PROVISION_TEST_ELASTICSEARCH_URLS="noida-db=http://127.0.0.1:$noida_port,osmem-server=http://127.0.0.1:$osmem_port"
  echo "Elasticsearch APIs for the tests at $PROVISION_TEST_ELASTICSEARCH_URLS" >&2
}

stop_test_elasticsearch() {
  for pid in ${PROVISION_TEST_NOIDA_PID:-} ${PROVISION_TEST_OSMEM_PID:-}; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${PROVISION_TEST_ELASTICSEARCH_DIR:-}" ]; then rm -rf "$PROVISION_TEST_ELASTICSEARCH_DIR"; fi
}
