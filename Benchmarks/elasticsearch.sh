#!/usr/bin/env bash
# Elasticsearch sink benchmark: N documents backfilled into an index beside a raw `_bulk`
# load of the same documents with curl (pre-built NDJSON, the same batch size and the same
# number of requests in flight), into the same server, in the same run. Runs against both
# Elasticsearch-API servers the tests use (no Elasticsearch distribution installs here).
#
#   Benchmarks/elasticsearch.sh [DOCUMENTS]      (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/elasticsearch.sh
records=${1:-200000}
batch=5000        # ElasticsearchSink.Limits.maxDocumentsPerRequest
in_flight=4       # ElasticsearchSink.Limits.concurrentRequests
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; stop_test_elasticsearch; rm -rf "$work"' EXIT

source Benchmarks/common.sh
start_test_elasticsearch 2>/dev/null

echo "generating $records orders"
python3 Benchmarks/generate_orders.py "$records" "$work/orders.jsonl"
# The same documents as the product writes them, as bulk requests of $batch documents.
mkdir "$work/bulk"
python3 - "$work/orders.jsonl" "$work/bulk" "$batch" <<'PY'
import json, sys
source, directory, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
out, count, part = None, 0, 0
for line in open(source):
    o = json.loads(line)
    if count % batch == 0:
        if out: out.close()
        out = open(f"{directory}/{part:05d}.ndjson", "w"); part += 1
    doc = {k: o[k] for k in ("order_id", "customer_id", "amount", "region", "items", "placed_at")}
    out.write(json.dumps({"index": {"_index": "INDEX", "_id": o["order_id"]}}, separators=(",", ":")) + "\n")
    out.write(json.dumps(doc, separators=(",", ":")) + "\n")
    count += 1
out.close()
PY

start_server "$work/data"
"$bin" apply -f Benchmarks/orders-dataset.yaml --server "$server" >/dev/null
"$bin" produce orders --file "$work/orders.jsonl" --key order_id --time placed_at --server "$server" >/dev/null

echo
echo "documents: $records, release build, $(nproc) cores, batches of $batch, $in_flight requests in flight"
printf '%-16s %-40s %12s %10s\n' "server" "measure" "docs/s" "seconds"
IFS=',' read -ra targets <<<"$PROVISION_TEST_ELASTICSEARCH_URLS"
for target in "${targets[@]}"; do
  name=${target%%=*}
  url=${target#*=}
  product="bench-$name"
  index="orders-$name"
  cat >"$work/$product.yaml" <<YAML
apiVersion: provision/v1
kind: DataProduct
metadata: {name: $product}
spec:
  from: orders
  backfill: all
  select: {order_id: order_id, customer_id: customer_id, amount: amount, region: region, items: items, placed_at: placed_at}
  key: order_id
  sink: {elasticsearch: {url: "$url", index: $index}}
YAML
  begin=$(now_seconds)
  "$bin" apply -f "$work/$product.yaml" --server "$server" >/dev/null
  wait_live "$product" "$records"
  provision_seconds=$(elapsed "$begin" "$(now_seconds)")
  curl -s -XPOST "$url/$index/_refresh" >/dev/null
  provision_count=$(curl -s "$url/$index/_count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')

  # Peer: the same documents into a fresh index with the same mappings, straight from curl.
  peer="raw-$name"
  curl -s -XPUT "$url/$peer" -H 'content-type: application/json' \
    -d "{\"mappings\": $(curl -s "$url/$index-1/_mapping" | python3 -c 'import json,sys; m=list(json.load(sys.stdin).values())[0]["mappings"]; m.pop("_meta", None); print(json.dumps(m))')}" >/dev/null
  for file in "$work"/bulk/*.ndjson; do sed -i "s/\"_index\":\"[^\"]*\"/\"_index\":\"$peer\"/" "$file"; done
  begin=$(now_seconds)
  ls "$work"/bulk/*.ndjson | xargs -P "$in_flight" -I{} curl -s -o /dev/null -XPOST "$url/_bulk" \
    -H 'content-type: application/x-ndjson' --data-binary @{}
  curl_seconds=$(elapsed "$begin" "$(now_seconds)")
  curl -s -XPOST "$url/$peer/_refresh" >/dev/null
  curl_count=$(curl -s "$url/$peer/_count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  [ "$provision_count" = "$records" ] && [ "$curl_count" = "$records" ] || {
    echo "document counts differ on $name: provision $provision_count, curl $curl_count, expected $records" >&2; exit 1; }
  printf '%-16s %-40s %12s %10.2f\n' "$name" "provision backfill -> index" "$(rate "$records" "$provision_seconds")" "$provision_seconds"
  printf '%-16s %-40s %12s %10.2f\n' "$name" "curl _bulk of the same NDJSON" "$(rate "$records" "$curl_seconds")" "$curl_seconds"
  printf '%-16s ratio provision / curl: %.2fx\n' "$name" "$(echo "$curl_seconds / $provision_seconds" | bc -l)"
done
stop_server
