#!/usr/bin/env bash
# Webhook sink benchmark: (1) N records delivered in batches of 500 to a local receiver that
# acknowledges at once, beside curl sending the same records in the same bodies (pre-built,
# four requests in flight, like the sink's lanes) to the same receiver; (2) delivery latency
# from produce to receipt, p50 and p99, at 10,000 records/s. Both for today's body unsigned
# and for each format and signing mode in the same run: Provision-Signature, Standard
# Webhooks, a CloudEvents batch, and CloudEvents binary mode (a request per record, so it
# delivers the 3% of orders `amount > 1000 and region == "EU"` selects).
#
#   Benchmarks/webhook.sh [RECORDS]      (default 200000; needs curl, wrk and bc)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source Benchmarks/common.sh
receiver_port=$(free_port); receiver="http://127.0.0.1:$receiver_port/hook"
# The secrets the signed variants use, as the server's environment gives them to a spec.
export PROVISION_BENCH_HOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"

# name | sink settings after the url | a where filter (binary mode only)
variants=(
  "unsigned|format: provision|"
  "provision-signed|format: provision, signing: provision, secret: \"\${env:PROVISION_BENCH_HOOK_SECRET}\"|"
  "standard|format: provision, signing: standard, secret: \"\${env:PROVISION_BENCH_HOOK_SECRET}\"|"
  "cloudevents|format: cloudevents, signing: standard, secret: \"\${env:PROVISION_BENCH_HOOK_SECRET}\"|"
  "cloudevents-binary|format: cloudevents-binary, signing: standard, secret: \"\${env:PROVISION_BENCH_HOOK_SECRET}\"|amount > 1000 and region == \"EU\""
)

product_spec() {  # name settings filter url
  cat <<YAML
apiVersion: provision/v1
kind: DataProduct
metadata: {name: hook-$1}
spec:
  from: orders
  backfill: all
${3:+  where: '$3'
}  select: {order_id: order_id, customer_id: customer_id, amount: amount, placed_at: placed_at}
  key: customer_id
  sink: {webhook: {url: "$4/$1", batch: {maxRecords: 500, maxBytes: 4MiB, linger: 5ms}, $2}}
YAML
}

# Its stderr would fill with wrk's connections reset at the end of its run.
python3 Benchmarks/webhook_receiver.py "$receiver_port" 2>/dev/null &
start_server "$work/data"
until curl -s -o /dev/null -XPOST "$receiver" -d '{"records":[]}'; do sleep 0.05; done

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
"$bin" apply -f Benchmarks/orders-dataset.yaml --server "$server" >/dev/null
"$bin" produce orders --file "$work/orders.jsonl" --key order_id --time placed_at --server "$server" >/dev/null

# 1. throughput, one product per variant, one after another on the same server and receiver
declare -A delivered seconds
counted=0
for variant in "${variants[@]}"; do
  IFS='|' read -r name settings filter <<<"$variant"
  product_spec "$name" "$settings" "$filter" "$receiver" >"$work/$name.yaml"
  begin=$(now_seconds)
  "$bin" apply -f Benchmarks/orders-dataset.yaml -f "$work/$name.yaml" --server "$server" >/dev/null
  wait_live "hook-$name" "$records"
  seconds[$name]=$(elapsed "$begin" "$(now_seconds)")
  total=$(curl -s "$receiver")
  delivered[$name]=$(( total - counted ))
  counted=$total
done
provision_received=$counted
[ "${delivered[unsigned]}" = "$records" ] || { echo "the receiver counted ${delivered[unsigned]} of $records records" >&2; exit 1; }

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
[ "$curl_received" = "$records" ] || { echo "curl's records received: $curl_received, expected $records" >&2; exit 1; }
# Binary mode's peer: wrk sending one record per request, as binary mode does, on 16
# kept-alive connections for 3 s (the sink's 16 lanes).
cat >"$work/binary.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"order_id":"o-1","customer_id":"c-1","amount":1234.5,"placed_at":"2026-12-07T10:00:00Z"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-id"] = "hook:0:1"
LUA
wrk_rate=$(wrk -t2 -c16 -d3s -s "$work/binary.lua" "$receiver" 2>/dev/null | awk '/Requests\/sec/ {printf "%.0f", $2}')
stop_server
kill %1 2>/dev/null || true

# 2. latency at 10,000 records/s: for each variant a fresh server, the receiver timing each record.
declare -A p50 p99 timed
for variant in "${variants[@]}"; do
  IFS='|' read -r name settings filter <<<"$variant"
  rm -rf "$work/data"
  receiver_port=$(free_port); receiver="http://127.0.0.1:$receiver_port/hook"
  python3 Benchmarks/webhook_receiver.py "$receiver_port" --latency "$work/latency-$name.txt" &
  receiver_pid=$!
  start_server "$work/data"
  until curl -s -o /dev/null -XPOST "$receiver" -d '{"records":[]}'; do sleep 0.05; done
  # Unfiltered: the producer's orders would not pass binary mode's filter.
  product_spec "$name" "$settings" "" "$receiver" >"$work/latency-$name.yaml"
  "$bin" apply -f Benchmarks/orders-dataset.yaml -f "$work/latency-$name.yaml" --server "$server" >/dev/null
  : >"$work/latency-$name.txt"
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
  kill "$receiver_pid" 2>/dev/null || true
  read -r timed[$name] p50[$name] p99[$name] < <(sort -n "$work/latency-$name.txt" | awk '{v[NR]=$1} END {print NR, v[int(NR*0.5)], v[int(NR*0.99)]}')
done

echo
echo "records: $records, release build, $(nproc) cores, batches of 500, 4 lanes"
printf '%-52s %10s %10s %9s %16s\n' "measure" "records" "records/s" "seconds" "p50 / p99 (ms)"
for variant in "${variants[@]}"; do
  IFS='|' read -r name settings filter <<<"$variant"
  printf '%-52s %10s %10s %9.2f %16s\n' "provision backfill -> webhook, $name" "${delivered[$name]}" \
    "$(rate "${delivered[$name]}" "${seconds[$name]}")" "${seconds[$name]}" "${p50[$name]} / ${p99[$name]}"
done
printf '%-52s %10s %10s %9.2f\n' "curl -P 4 of the same bodies (unsigned)" "$records" "$(rate "$records" "$curl_seconds")" "$curl_seconds"
printf '%-52s %10s %10s\n' "wrk -c 16, a record per request (binary mode's peer)" "" "$wrk_rate"
printf 'ratio provision (unsigned) / curl: %.2fx\n' "$(echo "$curl_seconds / ${seconds[unsigned]}" | bc -l)"
printf 'ratio provision cloudevents-binary / wrk: %.2fx\n' "$(echo "(${delivered[cloudevents-binary]} / ${seconds[cloudevents-binary]}) / $wrk_rate" | bc -l)"
for name in provision-signed standard cloudevents cloudevents-binary; do
  printf 'ratio %s / unsigned (records/s): %.2fx\n' "$name" \
    "$(echo "(${delivered[$name]} / ${seconds[$name]}) / (${delivered[unsigned]} / ${seconds[unsigned]})" | bc -l)"
done
echo "latency: produce -> receipt at 10000 records/s for 10 s, per record received within 2 s of the end (binary mode: a request per record)"
