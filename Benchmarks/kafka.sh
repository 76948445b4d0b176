#!/usr/bin/env bash
# Kafka benchmark: on one Kafka-API broker (noida-db's, pip), in the same run,
# `provisionctl produce` (through `serve --store kafka://…`) beside `kcat -P` producing the
# same keyed records, and a backfill through where + select into a file beside `kcat -C -e`
# consuming the topic, both from a topic of 6 partitions.
#
#   Benchmarks/kafka.sh [RECORDS]      (default 1000000; needs kcat, jq and noida-db==0.2.3)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${broker_pid:-}" ] && kill -TERM -- "-$broker_pid" 2>/dev/null; rm -rf "$work"' EXIT

source Benchmarks/common.sh

broker_port=$(free_port)
setsid noida-db start --data-dir "$work/broker" --only kafka --kafka-port "$broker_port" >"$work/broker.log" 2>&1 &
broker_pid=$!
broker="127.0.0.1:$broker_port"
until kcat -b "$broker" -L -m 2 >/dev/null 2>&1; do sleep 0.1; done

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
wait_all_read() {
  until curl -s "$server/v1/products/$1" | jq -e "([.status.checkpoint[]] | add) == $2 and .status.phase == \"Live\"" >/dev/null; do
    sleep 0.05
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
stop_server

begin=$(now_seconds)
consumed=$(kcat -C -b "$broker" -t orders -o beginning -e -q | wc -l)
kcat_consume_seconds=$(elapsed "$begin" "$(now_seconds)")
[ "$consumed" = "$records" ] || { echo "kcat consumed $consumed records, not $records" >&2; exit 1; }

echo
echo "records: $records ($lines match the filter), 6 partitions, noida-db's Kafka API, release build, $(nproc) cores"
printf '%-48s %12s %12s\n' "measure" "records/s" "seconds"
printf '%-48s %12s %12.2f\n' "provisionctl produce (serve --store kafka)" "$(rate "$records" "$produce_seconds")" "$produce_seconds"
printf '%-48s %12s %12.2f\n' "kcat -P (acks=all, idempotent)" "$(rate "$records" "$kcat_produce_seconds")" "$kcat_produce_seconds"
printf '%-48s %12s %12.2f\n' "provision backfill where+select -> file" "$(rate "$records" "$backfill_seconds")" "$backfill_seconds"
printf '%-48s %12s %12.2f\n' "kcat -C -e (consume to the end)" "$(rate "$records" "$kcat_consume_seconds")" "$kcat_consume_seconds"
printf 'ratio produce / kcat -P:    %.2fx\n' "$(echo "$kcat_produce_seconds / $produce_seconds" | bc -l)"
printf 'ratio backfill / kcat -C:   %.2fx\n' "$(echo "$kcat_consume_seconds / $backfill_seconds" | bc -l)"
