#!/usr/bin/env bash
# API benchmark: with 1,000 products and 100 datasets, wrk (Debian's) on the catalog and
# product routes (and the portal's catalog query and script) with a valid token, each beside wrk on /livez of the same server in the
# same run (the floor: the HTTP stack with no work); then the cost of authentication: the
# same route on a server started with --dev.
#
#   Benchmarks/api.sh [SECONDS]      (default 10 per route)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

swift build -c release --product provisionctl >/dev/null
bin="$(swift build -c release --show-bin-path)/provisionctl"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
token="pvn_bench-$(date +%s%N)"

serve() {  # port, extra arguments
  PROVISION_ADMIN_TOKEN="$token" "$bin" serve --data-dir "$work/data-$1" --listen "127.0.0.1:$1" --log-level warning "${@:2}" \
    >"$work/serve-$1.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$1/livez" >/dev/null; do sleep 0.05; done
}

python3 - "$work/specs" <<'PY'
import os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for d in range(100):
    with open(f"{out}/datasets-{d:03d}.yaml", "w") as f:
        f.write(f"apiVersion: provision/v1\nkind: Dataset\nmetadata: {{name: ds-{d:03d}, owner: team-{d % 10}, description: \"dataset number {d}\"}}\n"
                f"spec:\n  key: id\n  schema: {{id: string, amount: decimal, field_{d:03d}: string}}\n")
for chunk in range(10):
    docs = []
    for i in range(chunk * 100, chunk * 100 + 100):
        docs.append(f"apiVersion: provision/v1\nkind: DataProduct\nmetadata: {{name: p-{i:05d}, team: bench}}\n"
                    f"spec:\n  from: ds-{i % 100:03d}\n  where: amount > 1\n  sink: {{file: {{path: bench/p-{i:05d}.jsonl}}}}\n")
    with open(f"{out}/products-{chunk}.yaml", "w") as f:
        f.write("\n---\n".join(docs))
PY

# wrk's requests/s and p99 latency for a path.
measure() {  # port path [token]
  local header=()
  [ -n "${3:-}" ] && header=(-H "Authorization: Bearer $3")
  wrk -t2 -c16 -d"${seconds}s" --latency "${header[@]}" "http://127.0.0.1:$1$2" >"$work/wrk.txt"
  local rate p99
  rate=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  echo "$rate $p99"
}

port=$(free_port)
serve "$port"
PROVISION_TOKEN="$token" "$bin" apply -f "$work/specs" --server "http://127.0.0.1:$port" >/dev/null
until [ "$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/products?limit=1000" | grep -o '"phase":"Live"' | wc -l)" = 1000 ]; do sleep 0.5; done

printf '| route | requests/s | p99 | /livez requests/s | ratio |\n|---|---:|---:|---:|---:|\n'
for path in "/v1/products?limit=1000" "/v1/products/p-00500" "/v1/datasets?q=field_042" "/v1/datasets?stats=true" "/portal/portal.js"; do
  read -r rate p99 < <(measure "$port" "$path" "$token")
  read -r floor _ < <(measure "$port" /livez)
  printf '| `GET %s` | %s | %s | %s | %.2f |\n' "$path" "$rate" "$p99" "$floor" "$(echo "$rate / $floor" | bc -l)"
done

dev=$(free_port)
serve "$dev" --dev
"$bin" apply -f "$work/specs" --server "http://127.0.0.1:$dev" >/dev/null
read -r with_auth with_p99 < <(measure "$port" /v1/products/p-00500 "$token")
read -r without_auth without_p99 < <(measure "$dev" /v1/products/p-00500)
printf '\n| `GET /v1/products/p-00500` | requests/s | p99 |\n|---|---:|---:|\n'
printf '| with a token | %s | %s |\n| `--dev` (no authentication) | %s | %s |\n' "$with_auth" "$with_p99" "$without_auth" "$without_p99"
printf 'auth on / off: %.2f\n' "$(echo "$with_auth / $without_auth" | bc -l)"
