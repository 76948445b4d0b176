#!/usr/bin/env bash
# Foundation benchmark: produce throughput, backfill through where + select into a file sink
# beside jq and DuckDB doing the same filter and projection on the same JSON Lines, and the
# server's peak RSS when backfilling N versus 4N events.
#
#   Benchmarks/foundation.sh [RECORDS]      (default 1000000; needs jq and `pip install duckdb==1.4.4`)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source Benchmarks/common.sh
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# backfill_run DATA-DIR RECORDS: restarts the server on a filled log, so its peak RSS
# covers the backfill only; prints "seconds peak-rss-mb".
backfill_run() {
  start_server "$1"
  local begin end
  begin=$(now_seconds)
  "$bin" apply -f Benchmarks/orders-dataset.yaml -f Benchmarks/eu-large-orders.yaml --server "$server" >/dev/null
  wait_live eu-large-orders "$2"
  end=$(now_seconds)
  local rss
  rss=$(peak_rss_mb "$server_pid")
  stop_server
  echo "$(elapsed "$begin" "$end") $rss"
}

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
bytes=$(stat -c %s "$work/orders.jsonl")
echo "  $(rate "$bytes" "$records") bytes per event on average"

# 1. produce, durable
start_server "$work/data"
begin=$(now_seconds)
"$bin" produce orders --file "$work/orders.jsonl" --key order_id --time placed_at --server "$server" >/dev/null
produce_seconds=$(elapsed "$begin" "$(now_seconds)")
stop_server
# Peer: the same bytes copied to a file and synced once, the disk's ceiling for a durable write.
begin=$(now_seconds)
dd if="$work/orders.jsonl" of="$work/copy.jsonl" bs=8M conv=fsync status=none
copy_seconds=$(elapsed "$begin" "$(now_seconds)")
rm -f "$work/copy.jsonl"

# 2. backfill through where + select into a file
read -r backfill_seconds backfill_rss < <(backfill_run "$work/data" "$records")
provision_lines=$(wc -l <"$work/data/files/eu-large-orders.jsonl")

# Peers on the same JSON Lines, same filter and projection.
begin=$(now_seconds)
jq -c 'select(.amount > 1000 and .region == "EU") | {order_id, customer_id, amount, placed_at}' \
  "$work/orders.jsonl" >"$work/jq.jsonl"
jq_seconds=$(elapsed "$begin" "$(now_seconds)")
jq_lines=$(wc -l <"$work/jq.jsonl")

begin=$(now_seconds)
python3 - "$work/orders.jsonl" "$work/duckdb.jsonl" <<'PY'
import sys, duckdb
duckdb.sql(f"""COPY (SELECT order_id, customer_id, amount, placed_at FROM read_json('{sys.argv[1]}',
    format='newline_delimited', columns={{'order_id':'VARCHAR','customer_id':'VARCHAR','amount':'DOUBLE',
    'currency':'VARCHAR','region':'VARCHAR','status':'VARCHAR','items':'INTEGER','channel':'VARCHAR','placed_at':'VARCHAR'}})
    WHERE amount > 1000 AND region = 'EU') TO '{sys.argv[2]}' (FORMAT json)""")
PY
duckdb_seconds=$(elapsed "$begin" "$(now_seconds)")
duckdb_lines=$(wc -l <"$work/duckdb.jsonl")
[ "$provision_lines" = "$jq_lines" ] && [ "$jq_lines" = "$duckdb_lines" ] || {
  echo "output line counts differ: provision $provision_lines, jq $jq_lines, duckdb $duckdb_lines" >&2; exit 1; }

# 3. memory against history: the same backfill over 4x the events.
python3 - "$work/orders.jsonl" "$work/orders4x.jsonl" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "wb") as out:
    for _ in range(4):
        out.write(data)
PY
start_server "$work/data4x"
"$bin" produce orders --file "$work/orders4x.jsonl" --key order_id --time placed_at --server "$server" >/dev/null
stop_server
read -r backfill4x_seconds backfill4x_rss < <(backfill_run "$work/data4x" $((records * 4)))

echo
echo "records: $records ($provision_lines match the filter), release build, $(nproc) cores"
printf '%-44s %12s %12s\n' "measure" "records/s" "seconds"
printf '%-44s %12s %12.2f\n' "provisionctl produce (durable)" "$(rate "$records" "$produce_seconds")" "$produce_seconds"
printf '%-44s %12s %12.2f\n' "dd conv=fsync of the same JSON Lines" "$(rate "$records" "$copy_seconds")" "$copy_seconds"
printf '%-44s %12s %12.2f\n' "provision backfill where+select -> file" "$(rate "$records" "$backfill_seconds")" "$backfill_seconds"
printf '%-44s %12s %12.2f\n' "jq -c 'select(...) | {...}'" "$(rate "$records" "$jq_seconds")" "$jq_seconds"
printf '%-44s %12s %12.2f\n' "duckdb COPY (SELECT ... WHERE ...)" "$(rate "$records" "$duckdb_seconds")" "$duckdb_seconds"
printf 'ratio produce / dd:        %.2fx\n' "$(echo "$copy_seconds / $produce_seconds" | bc -l)"
printf 'ratio provision / jq:      %.2fx\n' "$(echo "$jq_seconds / $backfill_seconds" | bc -l)"
printf 'ratio provision / duckdb:  %.2fx\n' "$(echo "$duckdb_seconds / $backfill_seconds" | bc -l)"
printf 'peak RSS of serve backfilling %d events: %s MiB; %d events: %s MiB (%.2fx)\n' \
  "$records" "$backfill_rss" $((records * 4)) "$backfill4x_rss" "$(echo "$backfill4x_rss / $backfill_rss" | bc -l)"
