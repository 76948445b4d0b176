#!/usr/bin/env bash
# Partitions benchmark, on the embedded log: `provisionctl produce` and a backfill through
# where + select into a file, from a topic of 1 partition and from one of 6, in the same run
# on the same records (the single partition is the peer: how fast the log was before topics
# had several).
#
#   Benchmarks/partitions.sh [RECORDS]      (default 1000000; needs jq)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source Benchmarks/common.sh

# Until the product is Live with its checkpoint over every partition summing to RECORDS.
wait_all_read() {
  until curl -s "$server/v1/products/$1" | jq -e "([.status.checkpoint[]] | add) == $2 and .status.phase == \"Live\"" >/dev/null; do
    sleep 0.05
  done
}

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"

declare -A produce_seconds backfill_seconds lines
for partitions in 1 6; do
  sed "s/^  key: order_id$/  key: order_id\n  partitions: $partitions/" Benchmarks/orders-dataset.yaml >"$work/dataset-$partitions.yaml"
  data="$work/data-$partitions"
  start_server "$data"
  "$bin" apply -f "$work/dataset-$partitions.yaml" --server "$server" >/dev/null
  begin=$(now_seconds)
  "$bin" produce orders --file "$work/orders.jsonl" --server "$server" >/dev/null
  produce_seconds[$partitions]=$(elapsed "$begin" "$(now_seconds)")
  stop_server
  # A restarted server, so the backfill reads from disk as after any restart.
  start_server "$data"
  begin=$(now_seconds)
  "$bin" apply -f Benchmarks/eu-large-orders.yaml --server "$server" >/dev/null
  wait_all_read eu-large-orders "$records"
  backfill_seconds[$partitions]=$(elapsed "$begin" "$(now_seconds)")
  stop_server
  lines[$partitions]=$(wc -l <"$data/files/eu-large-orders.jsonl")
done
[ "${lines[1]}" = "${lines[6]}" ] || { echo "outputs differ: ${lines[1]} lines from 1 partition, ${lines[6]} from 6" >&2; exit 1; }

echo
echo "records: $records (${lines[1]} match the filter), release build, $(nproc) cores"
printf '%-44s %12s %12s\n' "measure" "records/s" "seconds"
for partitions in 1 6; do
  printf '%-44s %12s %12.2f\n' "produce, $partitions partition(s)" "$(rate "$records" "${produce_seconds[$partitions]}")" "${produce_seconds[$partitions]}"
  printf '%-44s %12s %12.2f\n' "backfill where+select -> file, $partitions partition(s)" "$(rate "$records" "${backfill_seconds[$partitions]}")" "${backfill_seconds[$partitions]}"
done
printf 'ratio produce 6 / 1 partitions:   %.2fx\n' "$(echo "${produce_seconds[1]} / ${produce_seconds[6]}" | bc -l)"
printf 'ratio backfill 6 / 1 partitions:  %.2fx\n' "$(echo "${backfill_seconds[1]} / ${backfill_seconds[6]}" | bc -l)"
