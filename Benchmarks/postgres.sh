#!/usr/bin/env bash
# PostgreSQL sink benchmark: N orders backfilled into a table, beside `psql \copy` of the
# same rows (already projected) into an identical table, in the same run on the same
# server; then live upserts with 10% updates of existing keys.
#
#   Benchmarks/postgres.sh [RECORDS]      (default 1000000; starts its own PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
records=${1:-1000000}
live_records=$((records / 5))
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; stop_test_postgres; rm -rf "$work"' EXIT

source Benchmarks/common.sh
start_test_postgres 2>/dev/null
database="$PROVISION_TEST_POSTGRES_URL"
export PROVISION_BENCH_POSTGRES_URL="$database"   # the product's ${env:…} URL
sql() { psql "$database" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

cat >"$work/specs.yaml" <<'YAML'
apiVersion: provision/v1
kind: DataProduct
metadata: {name: orders-table}
spec:
  from: orders
  backfill: all
  select: {order_id: order_id, customer_id: customer_id, amount: amount, region: region, items: items, placed_at: placed_at}
  key: order_id
  sink: {postgres: {url: "${env:PROVISION_BENCH_POSTGRES_URL}", table: orders_provision}}
YAML

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
# The same rows projected, as the peer loads them; offsets fill the bookkeeping column so
# both tables are identical.
python3 - "$work/orders.jsonl" "$work/orders.tsv" <<'PY'
import json, sys
with open(sys.argv[1]) as source, open(sys.argv[2], "w") as out:
    for offset, line in enumerate(source):
        o = json.loads(line)
        out.write(f"{o['order_id']}\t{o['customer_id']}\t{o['amount']}\t{o['region']}\t{o['items']}\t{o['placed_at']}\t{offset}\n")
PY

start_server "$work/data"
"$bin" produce orders --file "$work/orders.jsonl" --key order_id --time placed_at --server "$server" >/dev/null

# 1. backfill into a table Provision creates
begin=$(now_seconds)
"$bin" apply -f Benchmarks/orders-dataset.yaml -f "$work/specs.yaml" --server "$server" >/dev/null
wait_live orders-table "$records"
backfill_seconds=$(elapsed "$begin" "$(now_seconds)")
provision_rows=$(sql "SELECT count(*) FROM orders_provision")

# Peer: psql \copy of the projected rows into an identical table, on the same server.
sql "CREATE TABLE orders_copy (LIKE orders_provision INCLUDING ALL)"
begin=$(now_seconds)
psql "$database" -X -q -v ON_ERROR_STOP=1 -c "\\copy orders_copy FROM '$work/orders.tsv' WITH (FORMAT text)"
copy_seconds=$(elapsed "$begin" "$(now_seconds)")
copy_rows=$(sql "SELECT count(*) FROM orders_copy")
[ "$provision_rows" = "$records" ] && [ "$copy_rows" = "$records" ] || {
  echo "row counts differ: provision $provision_rows, copy $copy_rows, expected $records" >&2; exit 1; }
differing=$(sql "SELECT count(*) FROM (SELECT order_id, customer_id, amount, region, items, placed_at FROM orders_provision
                 EXCEPT SELECT order_id, customer_id, amount, region, items, placed_at FROM orders_copy) d")
[ "$differing" = 0 ] || { echo "$differing rows differ between the two tables" >&2; exit 1; }

# 2. live: more orders while the product is live, one in ten an update of an existing key.
python3 - "$work/orders.jsonl" "$work/live.jsonl" "$live_records" "$records" <<'PY'
import json, random, sys
rng = random.Random(7)
count, existing = int(sys.argv[3]), int(sys.argv[4])
with open(sys.argv[1]) as source:
    template = [json.loads(next(source)) for _ in range(1000)]
with open(sys.argv[2], "w") as out:
    for index in range(count):
        order = dict(template[index % 1000])
        order["order_id"] = f"o-{rng.randrange(existing)}" if index % 10 == 0 else f"o-{existing + index}"
        order["amount"] = round(order["amount"] + 1, 2)
        out.write(json.dumps(order, separators=(",", ":")) + "\n")
PY
begin=$(now_seconds)
"$bin" produce orders --file "$work/live.jsonl" --key order_id --time placed_at --server "$server" >/dev/null
wait_live orders-table $((records + live_records))
live_seconds=$(elapsed "$begin" "$(now_seconds)")
stop_server

echo
echo "records: $records, release build, $(nproc) cores, PostgreSQL $(sql 'SHOW server_version')"
printf '%-52s %12s %10s\n' "measure" "rows/s" "seconds"
printf '%-52s %12s %10.2f\n' "provision backfill -> PostgreSQL table" "$(rate "$records" "$backfill_seconds")" "$backfill_seconds"
printf '%-52s %12s %10.2f\n' "psql \\copy of the projected rows -> same table" "$(rate "$records" "$copy_seconds")" "$copy_seconds"
printf '%-52s %12s %10.2f\n' "provision live upserts, 10% updates (incl. produce)" "$(rate "$live_records" "$live_seconds")" "$live_seconds"
printf 'ratio provision backfill / psql \\copy: %.2fx\n' "$(echo "$copy_seconds / $backfill_seconds" | bc -l)"
