#!/usr/bin/env bash
# GitOps benchmark: the time from `git commit` to the product Live (empty source topic) with a
# 1 s interval and with the push hook; and a sync of a repository of 1,000 products where
# nothing changed, beside `git fetch` of the same repository alone, in the same run.
#
#   Benchmarks/gitops.sh [RUNS]      (default 5 commits per way)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
work=$(mktemp -d /tmp/provision-bench-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

swift build -c release --product provisionctl >/dev/null
bin="$(swift build -c release --show-bin-path)/provisionctl"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

catalog='apiVersion: provision/v1
kind: Dataset
metadata: {name: orders, owner: sales}
spec:
  key: order_id
  schema: {order_id: string, amount: decimal}'
product() {  # name
  printf 'apiVersion: provision/v1\nkind: DataProduct\nmetadata: {name: %s, team: bench}\nspec:\n  from: orders\n  where: amount > 1\n  sink: {file: {path: bench/%s.jsonl}}\n' "$1" "$1"
}
new_repository() {  # directory
  git init --quiet --initial-branch=main "$1"
  git -C "$1" config user.email bench@provision.invalid
  git -C "$1" config user.name bench
  printf '%s\n' "$catalog" >"$1/catalog.yaml"
  git -C "$1" add --all && git -C "$1" commit --quiet -m catalog
}
serve() {  # port repository interval
  "$bin" serve --dev --data-dir "$work/data-$1" --listen "127.0.0.1:$1" --log-level warning \
    --gitops "file://$2" --gitops-interval "$3" >"$work/serve-$1.log" 2>&1 &
  until curl -sf "http://127.0.0.1:$1/livez" >/dev/null; do sleep 0.05; done
  until curl -s "http://127.0.0.1:$1/v1/sources/git" | grep -q '"reason":"Synced"'; do sleep 0.05; done
}
live() { curl -s "http://127.0.0.1:$1/v1/products/$2" | grep -q '"phase":"Live"'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }

# Commit to Live: every interval (1 s), and on the push hook (interval 1 h).
for way in interval hook; do
  repository="$work/repo-$way"
  new_repository "$repository"
  port=$(free_port)
  serve "$port" "$repository" "$([ "$way" = interval ] && echo 1s || echo 1h)"
  for run in $(seq 1 "$runs"); do
    product "p-$way-$run" >"$repository/p-$run.yaml"
    git -C "$repository" add --all
    start=$(now_ms)
    git -C "$repository" commit --quiet -m "p-$run"
    [ "$way" = hook ] && curl -sf -X POST "http://127.0.0.1:$port/v1/sources/git/sync" >/dev/null
    until live "$port" "p-$way-$run"; do sleep 0.01; done
    echo $(($(now_ms) - start)) >>"$work/$way.ms"
  done
done
printf '| commit → Live | median of %s | min | max |\n|---|---:|---:|---:|\n' "$runs"
for way in interval hook; do
  printf '| %s | %s ms | %s ms | %s ms |\n' "$([ "$way" = interval ] && echo "1 s interval" || echo "push hook")" \
    "$(median <"$work/$way.ms")" "$(sort -n "$work/$way.ms" | head -1)" "$(sort -n "$work/$way.ms" | tail -1)"
done

# A sync of 1,000 products that changes nothing, beside `git fetch` of the same repository.
repository="$work/repo-large"
new_repository "$repository"
for i in $(seq -w 0 999); do product "p-$i" >"$repository/p-$i.yaml"; done
git -C "$repository" add --all && git -C "$repository" commit --quiet -m "1,000 products"
port=$(free_port)
serve "$port" "$repository" 1h
until [ "$(curl -s "http://127.0.0.1:$port/v1/products?limit=1000" | grep -o '"phase":"Live"' | wc -l)" = 1000 ]; do sleep 0.5; done
git clone --bare --quiet "file://$repository" "$work/fetch-only.git"
for run in $(seq 1 "$runs"); do
  before=$(curl -s "http://127.0.0.1:$port/v1/sources/git" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastFetchedAt"])')
  start=$(now_ms)
  curl -sf -X POST "http://127.0.0.1:$port/v1/sources/git/sync" >/dev/null
  until [ "$(curl -s "http://127.0.0.1:$port/v1/sources/git" | python3 -c 'import json,sys; s = json.load(sys.stdin); print(s["lastFetchedAt"] != "'"$before"'" and s["conditions"][0]["reason"] == "Synced")')" = True ]; do sleep 0.005; done
  echo $(($(now_ms) - start)) >>"$work/sync.ms"
  start=$(now_ms)
  git -C "$work/fetch-only.git" fetch --quiet --prune --force origin '+refs/heads/*:refs/heads/*'
  echo $(($(now_ms) - start)) >>"$work/fetch.ms"
done
sync=$(median <"$work/sync.ms")
fetch=$(median <"$work/fetch.ms")
printf '\n| 1,000 products, nothing changed | median of %s |\n|---|---:|\n| a sync (fetch, read, validate, plan) | %s ms |\n| `git fetch` alone | %s ms |\n' "$runs" "$sync" "$fetch"
printf 'sync / fetch: %.1f\n' "$(echo "$sync / $fetch" | bc -l)"
