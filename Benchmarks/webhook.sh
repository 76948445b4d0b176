#!/usr/bin/env bash
# Webhook sink benchmark: (1) N records delivered in batches of 500 to a local receiver that
# acknowledges at once, beside curl sending the same records in the same bodies (pre-built,
# four requests in flight, like the sink's lanes) to the same receiver; (2) delivery latency
# from produce to receipt, p50 and p99, at 10,000 records/s.
#
#   Benchmarks/webhook.sh [RECORDS]      (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source Benchmarks/common.sh
receiver_port=$(free_port); receiver="http://127.0.0.1:$receiver_port/hook"

python3 Benchmarks/webhook_receiver.py "$receiver_port" &
start_server "$work/data"
until curl -s -o /dev/null -XPOST "$receiver" -d '{"records":[]}'; do sleep 0.05; done

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
cat >"$work/specs.yaml" <<YAML
apiVersion: provision/v1
kind: DataProduct
metadata: {name: hook}
spec:
  from: orders
  backfill: all
  select: {order_id: order_id, customer_id: customer_id, amount: amount, placed_at: placed_at}
  key: customer_id
  sink: {webhook: {url: "$receiver", batch: {maxRecords: 500, maxBytes: 4MiB, linger: 5ms}}}
YAML
"$bin" apply -f Benchmarks/orders-dataset.yaml --server "$server" >/dev/null
"$bin" produce orders --file "$work/orders.jsonl" --key order_id --time placed_at --server "$server" >/dev/null

# 1. throughput
begin=$(now_seconds)
"$bin" apply -f Benchmarks/orders-dataset.yaml -f "$work/specs.yaml" --server "$server" >/dev/null
wait_live hook "$records"
provision_seconds=$(elapsed "$begin" "$(now_seconds)")
provision_received=$(curl -s "$receiver")

# Peer: the same records in the sink's body format, 500 per request, four curl at a time.
mkdir "$work/bodies"
python3 - "$work/orders.jsonl" "$work/bodies" <<'PY'
import json, sys
records, part = [], 0
def flush():
    global records, part
    if records:
        with open(f"{sys.argv[2]}/{part:05d}.json", "w") as out:
            json.dump({"product": "hook", "records": records}, out, separators=(",", ":"))
        records, part = [], part + 1
for offset, line in enumerate(open(sys.argv[1])):
    o = json.loads(line)
    records.append({"id": f"hook:0:{offset}", "key": o["customer_id"], "partition": 0, "offset": offset, "time": o["placed_at"],
                    "value": {k: o[k] for k in ("order_id", "customer_id", "amount", "placed_at")}})
    if len(records) == 500: flush()
flush()
PY
begin=$(now_seconds)
ls "$work"/bodies/*.json | xargs -P 4 -I{} curl -s -o /dev/null -XPOST "$receiver" -H 'content-type: application/json' --data-binary @{}
curl_seconds=$(elapsed "$begin" "$(now_seconds)")
curl_received=$(( $(curl -s "$receiver") - provision_received ))
[ "$provision_received" = "$records" ] && [ "$curl_received" = "$records" ] || {
  echo "records received differ: provision $provision_received, curl $curl_received, expected $records" >&2; exit 1; }
stop_server
kill %1 2>/dev/null || true

# 2. latency at 10,000 records/s: a fresh server, the receiver timing each record.
rm -rf "$work/data"
receiver_port=$(free_port); receiver="http://127.0.0.1:$receiver_port/hook"
python3 Benchmarks/webhook_receiver.py "$receiver_port" --latency "$work/latency.txt" &
start_server "$work/data"
until curl -s -o /dev/null -XPOST "$receiver" -d '{"records":[]}'; do sleep 0.05; done
sed "s#http://127.0.0.1:[0-9]*/hook#$receiver#" "$work/specs.yaml" >"$work/specs-latency.yaml"
"$bin" apply -f Benchmarks/orders-dataset.yaml -f "$work/specs-latency.yaml" --server "$server" >/dev/null
: >"$work/latency.txt"
python3 - "$server" 10000 10 <<'PY'
import json, sys, time, urllib.request
from datetime import datetime, timezone
server, per_second, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = per_second // 100   # every 10 ms
start = time.monotonic()
for tick in range(seconds * 100):
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    lines = "\n".join(json.dumps({"order_id": f"l-{tick}-{i}", "customer_id": f"c-{(tick * chunk + i) % 5000}",
                                  "amount": 10.5, "currency": "EUR", "region": "EU", "status": "placed", "items": 1,
                                  "channel": "web", "placed_at": stamp}) for i in range(chunk))
    request = urllib.request.Request(f"{server}/v1/topics/orders/records?key=order_id&time=placed_at", data=lines.encode(),
                                     method="POST", headers={"Content-Type": "application/x-ndjson"})
    urllib.request.urlopen(request).read()
    delay = start + (tick + 1) / 100 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
PY
sleep 2
stop_server
read -r latency_count p50 p99 < <(sort -n "$work/latency.txt" | awk '{v[NR]=$1} END {print NR, v[int(NR*0.5)], v[int(NR*0.99)]}')

echo
echo "records: $records, release build, $(nproc) cores, batches of 500, 4 lanes"
printf '%-48s %12s %10s\n' "measure" "records/s" "seconds"
printf '%-48s %12s %10.2f\n' "provision backfill -> webhook" "$(rate "$records" "$provision_seconds")" "$provision_seconds"
printf '%-48s %12s %10.2f\n' "curl -P 4 of the same bodies" "$(rate "$records" "$curl_seconds")" "$curl_seconds"
printf 'ratio provision / curl: %.2fx\n' "$(echo "$curl_seconds / $provision_seconds" | bc -l)"
printf 'latency produce -> receipt at 10000 records/s (%d records): p50 %s ms, p99 %s ms\n' "$latency_count" "$p50" "$p99"
