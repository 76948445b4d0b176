#!/usr/bin/env bash
# Kafka benchmark: on librdkafka's mock cluster (three brokers, `scripts/kafka-mock`), in the same run,
# `provisionctl produce` (through `serve --store kafka://…`) beside `kcat -P` producing the
# same keyed records, and a backfill through where + select into a file beside `kcat -C -c N`
# consuming the topic, both from a topic of 6 partitions.
#
# Both emulators keep only the newest few megabytes of a partition (the mock cluster 5 MiB,
# noida-db's Kafka API about as much), so the default is the largest topic they hold whole;
# the script checks the product's output against jq on the same records.
#
# Produce is also timed at PRODUCE_RECORDS (default 1,000,000, the size the goal is set at):
# appending needs no broker to keep what it was given, so the mock's limit does not apply.
#
#   Benchmarks/kafka.sh [RECORDS] [PRODUCE_RECORDS]   (default 100000 1000000; needs kcat, jq, cc and librdkafka-dev)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-100000}
produce_records=${2:-1000000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source Benchmarks/common.sh

# The mock cluster has no CreateTopics: both topics are made with it, 6 partitions each, and
# the server's own control and checkpoint topics.
cc -O1 -o "$work/mock_cluster" scripts/kafka-mock/mock_cluster.c -lrdkafka
"$work/mock_cluster" orders:6 kcat-orders:6 big-orders:6 kcat-big-orders:6 _provision.control:1 _provision.checkpoints:1 >"$work/mock.out" 2>"$work/mock.log" &
until [ -s "$work/mock.out" ]; do sleep 0.1; done
broker=$(head -1 "$work/mock.out")

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
# kcat's input: the key, a tab, the record.
python3 - "$work/orders.jsonl" "$work/keyed.txt" <<'PY'
import json, sys
with open(sys.argv[1]) as source, open(sys.argv[2], "w") as out:
    for line in source:
        out.write(json.loads(line)["order_id"] + "\t" + line)
PY

cat >"$work/datasets.yaml" <<'YAML'
apiVersion: provision/v1
kind: Dataset
metadata: {name: orders}
spec:
  key: order_id
  time: placed_at
  partitions: 6
  schema: {order_id: string, customer_id: string, amount: decimal, currency: string, region: string,
           status: string, items: integer, channel: string, placed_at: timestamp}
---
apiVersion: provision/v1
kind: Dataset
metadata: {name: kcat-orders}
spec:
  key: order_id
  partitions: 6
  schema: {order_id: string}
YAML

start_kafka_server() {
  "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --log-level warning --dev --store "kafka://$broker" >"$work/serve.log" 2>&1 &
  server_pid=$!
  until curl -sf "$server/healthz" >/dev/null; do sleep 0.05; done
}
wait_all_read() {  # product records: Live with every partition's checkpoint adding up to records
  # Polled: the watch stream wakes on stored changes, and a product's progress is stored
  # less often than it is shown.
  until curl -s "$server/v1/products/$1" | jq -e "([.status.checkpoint[]] | add) == $2 and .status.phase == \"Live\"" >/dev/null; do
    sleep 0.02
  done
}

start_kafka_server
"$bin" apply -f "$work/datasets.yaml" --server "$server" >/dev/null

begin=$(now_seconds)
"$bin" produce orders --file "$work/orders.jsonl" --server "$server" >/dev/null
produce_seconds=$(elapsed "$begin" "$(now_seconds)")

begin=$(now_seconds)
kcat -P -b "$broker" -t kcat-orders -K $'\t' -X topic.partitioner=murmur2_random -X acks=all -X enable.idempotence=true <"$work/keyed.txt"
kcat_produce_seconds=$(elapsed "$begin" "$(now_seconds)")

stop_server
start_kafka_server
begin=$(now_seconds)
"$bin" apply -f Benchmarks/eu-large-orders.yaml --server "$server" >/dev/null
wait_all_read eu-large-orders "$records"
backfill_seconds=$(elapsed "$begin" "$(now_seconds)")
lines=$(wc -l <"$work/data/files/eu-large-orders.jsonl")
expected=$(jq -c 'select(.amount > 1000 and .region == "EU")' "$work/orders.jsonl" | wc -l)
[ "$lines" = "$expected" ] || { echo "the product wrote $lines lines, jq finds $expected: the broker did not keep every record" >&2; exit 1; }
stop_server

# The same backfill on the embedded log, in the same run: what of the time is the Kafka
# store's, and what is the control plane's fixed cost (apply, planning, status), which at
# this size is a large share of either figure.
start_server "$work/embedded"
"$bin" apply -f "$work/datasets.yaml" --server "$server" >/dev/null
"$bin" produce orders --file "$work/orders.jsonl" --server "$server" >/dev/null
stop_server
start_server "$work/embedded"
begin=$(now_seconds)
"$bin" apply -f Benchmarks/eu-large-orders.yaml --server "$server" >/dev/null
wait_all_read eu-large-orders "$records"
embedded_seconds=$(elapsed "$begin" "$(now_seconds)")
stop_server

begin=$(now_seconds)
# -c N, not -e: against both emulators kcat's end-of-partition comes early at this size.
consumed=$(kcat -C -b "$broker" -t orders -o beginning -c "$records" -q | wc -l)
kcat_consume_seconds=$(elapsed "$begin" "$(now_seconds)")
[ "$consumed" = "$records" ] || { echo "kcat consumed $consumed records, not $records" >&2; exit 1; }

# Produce at the larger size, into topics of their own (the key and time fields given, as no
# dataset names these topics).
python3 Benchmarks/generate_orders.py "$produce_records" "$work/big.jsonl"
python3 - "$work/big.jsonl" "$work/big-keyed.txt" <<'PY'
import json, sys
with open(sys.argv[1]) as source, open(sys.argv[2], "w") as out:
    for line in source:
        out.write(json.loads(line)["order_id"] + "\t" + line)
PY
start_kafka_server
begin=$(now_seconds)
"$bin" produce big-orders --file "$work/big.jsonl" --key order_id --time placed_at --server "$server" >/dev/null
big_produce_seconds=$(elapsed "$begin" "$(now_seconds)")
stop_server
begin=$(now_seconds)
kcat -P -b "$broker" -t kcat-big-orders -K $'\t' -X topic.partitioner=murmur2_random -X acks=all -X enable.idempotence=true <"$work/big-keyed.txt"
kcat_big_produce_seconds=$(elapsed "$begin" "$(now_seconds)")

echo
echo "records: $records ($lines match the filter), 6 partitions, librdkafka's mock cluster, release build, $(nproc) cores"
printf '%-48s %12s %12s\n' "measure" "records/s" "seconds"
printf '%-48s %12s %12.2f\n' "provisionctl produce (serve --store kafka)" "$(rate "$records" "$produce_seconds")" "$produce_seconds"
printf '%-48s %12s %12.2f\n' "kcat -P (acks=all, idempotent)" "$(rate "$records" "$kcat_produce_seconds")" "$kcat_produce_seconds"
printf '%-48s %12s %12.2f\n' "provision backfill where+select -> file" "$(rate "$records" "$backfill_seconds")" "$backfill_seconds"
printf '%-48s %12s %12.2f\n' "kcat -C -c N (consume every record)" "$(rate "$records" "$kcat_consume_seconds")" "$kcat_consume_seconds"
printf '%-48s %12s %12.2f\n' "the same backfill on the embedded log" "$(rate "$records" "$embedded_seconds")" "$embedded_seconds"
printf '%-48s %12s %12.2f\n' "provisionctl produce, $produce_records records" "$(rate "$produce_records" "$big_produce_seconds")" "$big_produce_seconds"
printf '%-48s %12s %12.2f\n' "kcat -P, $produce_records records" "$(rate "$produce_records" "$kcat_big_produce_seconds")" "$kcat_big_produce_seconds"
printf 'ratio produce / kcat -P:    %.2fx\n' "$(echo "$kcat_produce_seconds / $produce_seconds" | bc -l)"
printf 'ratio produce / kcat -P, %s records: %.2fx\n' "$produce_records" "$(echo "$kcat_big_produce_seconds / $big_produce_seconds" | bc -l)"
printf 'ratio backfill / kcat -C:   %.2fx\n' "$(echo "$kcat_consume_seconds / $backfill_seconds" | bc -l)"
printf 'ratio backfill Kafka / embedded: %.2fx\n' "$(echo "$embedded_seconds / $backfill_seconds" | bc -l)"
