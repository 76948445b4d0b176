# Shared by the benchmark scripts: a release provisionctl, timing, and a server to run it.
# The sourcing script sets `work` (a temporary directory) first.

# PROVISIONCTL_BIN measures another build (an earlier commit's, say) with the same script.
if [ -n "${PROVISIONCTL_BIN:-}" ]; then
  bin="$PROVISIONCTL_BIN"
else
  swift build -c release --product provisionctl >/dev/null
  bin="$(swift build -c release --show-bin-path)/provisionctl"
fi

now_seconds() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
rate() { printf '%.0f' "$(echo "$1 / $2" | bc -l)"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
server="http://127.0.0.1:$port"

start_server() {  # data-dir: `provisionctl serve` in the background, once it answers
  # --dev: no tokens, so curl and the CLI need none (an earlier build without the flag runs as it was).
  local dev=""; "$bin" serve --help 2>/dev/null | grep -q -- "--dev" && dev="--dev"
  "$bin" serve --data-dir "$1" --listen "127.0.0.1:$port" --log-level warning $dev >"$work/serve.log" 2>&1 &
  server_pid=$!
  until curl -sf "$server/healthz" >/dev/null; do sleep 0.05; done
}

stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }

wait_live() {  # product records: until it is Live with its checkpoint at that offset
  # One light request per poll, to leave the cores to the servers being measured.
  local pattern="\"checkpoint\":\\{\"0\":$2\\}.*\"phase\":\"Live\""
  until [[ "$(curl -s "$server/v1/products/$1")" =~ $pattern ]]; do sleep 0.02; done
}

