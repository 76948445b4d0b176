# Starts a throwaway PostgreSQL server for the integration tests and stops it on exit.
# Sourced by scripts/test; exports PROVISION_TEST_POSTGRES_URL.

start_test_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v openssl >/dev/null; then
    echo "installing PostgreSQL and openssl (Debian's packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openssl >/dev/null
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PROVISION_TEST_POSTGRES_DIR=$(mktemp -d /tmp/provision-postgres-XXXXXX)
  # PostgreSQL refuses to run as root: as root, run it as the postgres user.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PROVISION_TEST_POSTGRES_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PROVISION_TEST_POSTGRES_DIR/data" -A trust -U postgres >/dev/null
  # TLS with a self-signed certificate: clients that prefer TLS (the default) get it, and a
  # test can check that verify-full refuses a certificate no authority signed.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -keyout "$PROVISION_TEST_POSTGRES_DIR/data/server.key" -out "$PROVISION_TEST_POSTGRES_DIR/data/server.crt" 2>/dev/null
  chmod 600 "$PROVISION_TEST_POSTGRES_DIR/data/server.key"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PROVISION_TEST_POSTGRES_DIR/data/server.key" "$PROVISION_TEST_POSTGRES_DIR/data/server.crt"; fi
  local options="-p $port -k $PROVISION_TEST_POSTGRES_DIR -c listen_addresses=127.0.0.1 -c ssl=on"
  "${as[@]}" "$bin/pg_ctl" -D "$PROVISION_TEST_POSTGRES_DIR/data" -l "$PROVISION_TEST_POSTGRES_DIR/server.log" -w \
    -o "$options" start >/dev/null
  PROVISION_TEST_POSTGRES_STOP=("${as[@]}" "$bin/pg_ctl" -D "$PROVISION_TEST_POSTGRES_DIR/data" -m fast stop)
  export PROVISION_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  # What a test needs to stop and start this server itself (an outage test).
  export PROVISION_TEST_POSTGRES_CTL="${as[*]} $bin/pg_ctl -D $PROVISION_TEST_POSTGRES_DIR/data -l $PROVISION_TEST_POSTGRES_DIR/server.log"
  export PROVISION_TEST_POSTGRES_OPTIONS="$options"
  echo "PostgreSQL for the tests at $PROVISION_TEST_POSTGRES_URL" >&2
}

stop_test_postgres() {
  if [ -n "${PROVISION_TEST_POSTGRES_DIR:-}" ]; then
    "${PROVISION_TEST_POSTGRES_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PROVISION_TEST_POSTGRES_DIR"
  fi
}
