# The Kafka side of the tests. No Apache Kafka distribution installs on these machines, so the
# tests run against two independent implementations of the Kafka protocol on 127.0.0.1:
# noida-db's Kafka API (pip, pinned; its own data directory) and librdkafka's mock cluster
# (three brokers, from rdkafka_mock.h in Debian's librdkafka-dev, started by a few lines of C
# built here). Also kcat (Debian's) and kafka-python (pip, pinned), whose partitioner is the
# reference for where a keyed record goes. Sourced by scripts/test; exports
# PROVISION_TEST_KAFKA_BROKERS ("name=host:port,...;name=...") and PROVISION_TEST_KAFKA_PYTHON.

KAFKA_PYTHON_VERSION=2.3.3
KAFKA_NOIDA_DB_VERSION=0.2.3

ensure_test_kafka_clients() {
  if ! command -v kcat >/dev/null; then
    echo "installing kcat (Debian's package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat >/dev/null
  fi
  if ! python3 -m pip show kafka-python 2>/dev/null | grep "^Version: $KAFKA_PYTHON_VERSION$" >/dev/null; then
    echo "installing kafka-python $KAFKA_PYTHON_VERSION (pip)" >&2
    python3 -m pip install -q "kafka-python==$KAFKA_PYTHON_VERSION" >&2
  fi
  PROVISION_TEST_KAFKA_PYTHON=$(command -v python3)
  export PROVISION_TEST_KAFKA_PYTHON
}

start_test_kafka() {
  ensure_test_kafka_clients
  if ! pip show noida-db 2>/dev/null | grep "^Version: $KAFKA_NOIDA_DB_VERSION$" >/dev/null; then
    echo "installing noida-db==$KAFKA_NOIDA_DB_VERSION" >&2
    pip install -q "noida-db==$KAFKA_NOIDA_DB_VERSION" >&2
  fi
  PROVISION_TEST_KAFKA_DIR=$(mktemp -d /tmp/provision-kafka-XXXXXX)
  local noida_port
  noida_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setsid noida-db start --data-dir "$PROVISION_TEST_KAFKA_DIR/noida" --only kafka --kafka-port "$noida_port" \
    >"$PROVISION_TEST_KAFKA_DIR/noida.log" 2>&1 &
  PROVISION_TEST_KAFKA_NOIDA_PID=$!
  # The mock cluster has no CreateTopics: the conformance tests' topics are made up front.
  cc -O1 -o "$PROVISION_TEST_KAFKA_DIR/mock_cluster" scripts/kafka-mock/mock_cluster.c -lrdkafka
  setsid "$PROVISION_TEST_KAFKA_DIR/mock_cluster" conformance-order:1 conformance-time:1 conformance-partitions:3 \
    conformance-wait:1 conformance-idle:2 conformance-kcat:3 conformance-control:1 conformance-checkpoints:1 e2e-trades:6 e2e-resume:6 \
    _provision.kcat.control:1 _provision.kcat.checkpoints:1 _provision.resume.control:1 _provision.resume.checkpoints:1 >"$PROVISION_TEST_KAFKA_DIR/mock.out" 2>"$PROVISION_TEST_KAFKA_DIR/mock.log" &
  PROVISION_TEST_KAFKA_MOCK_PID=$!
  local mock=""
  for _ in $(seq 1 200); do
    mock=$(head -1 "$PROVISION_TEST_KAFKA_DIR/mock.out" 2>/dev/null || true)
    if [ -n "$mock" ] && kcat -b "127.0.0.1:$noida_port" -L -m 2 >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  kcat -b "127.0.0.1:$noida_port" -L -m 5 >/dev/null || { echo "noida-db's Kafka API did not answer" >&2; return 1; }
  [ -n "$mock" ] || { echo "librdkafka's mock cluster did not start" >&2; return 1; }
  export PROVISION_TEST_KAFKA_BROKERS="noida-db=127.0.0.1:$noida_port;librdkafka-mock=$mock"
  # For the test that stops a broker of its own: the server itself, not the pip launcher that
  # runs it as a child (a signal to the launcher would not reach it).
  PROVISION_TEST_NOIDA_DB=$(python3 -c 'from importlib.resources import files; print(files("noida_db").joinpath("noida-db"))')
  export PROVISION_TEST_NOIDA_DB
  echo "Kafka APIs for the tests at $PROVISION_TEST_KAFKA_BROKERS" >&2
}

stop_test_kafka() {
  for pid in ${PROVISION_TEST_KAFKA_NOIDA_PID:-} ${PROVISION_TEST_KAFKA_MOCK_PID:-}; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  if [ -n "${PROVISION_TEST_KAFKA_DIR:-}" ]; then rm -rf "$PROVISION_TEST_KAFKA_DIR"; fi
}
