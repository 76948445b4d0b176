# Makes sure the Kafka clients the tests check Provision against are there: kafka-python
# (pinned, from pip), whose DefaultPartitioner is the reference for where a keyed record
# goes. Sourced by scripts/test; exports PROVISION_TEST_KAFKA_PYTHON (the python3 that has it).

KAFKA_PYTHON_VERSION=2.3.3

ensure_test_kafka_clients() {
  if ! python3 -m pip show kafka-python 2>/dev/null | grep -q "^Version: $KAFKA_PYTHON_VERSION$"; then
    echo "installing kafka-python $KAFKA_PYTHON_VERSION (pip)" >&2
    python3 -m pip install -q "kafka-python==$KAFKA_PYTHON_VERSION" >&2
  fi
  PROVISION_TEST_KAFKA_PYTHON=$(command -v python3)
  export PROVISION_TEST_KAFKA_PYTHON
}
