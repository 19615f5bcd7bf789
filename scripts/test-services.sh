#!/usr/bin/env bash
# Starts the private PostgreSQL and Redis that the tests and benchmarks use (called by setup.sh --test).
# Idempotent: installs the Debian packages if missing, initialises the PostgreSQL data directory once,
# and starts each server only when nothing answers on its port yet. Both listen on 127.0.0.1 only.
# Where they listen comes from scripts/test-services.env (BACKENDAI_TEST_PG / BACKENDAI_TEST_REDIS in the
# environment override it); a URL whose host is not 127.0.0.1/localhost is left alone (your own server).
#   PostgreSQL: data in /var/lib/backendai-test/pg, trust auth from loopback only, fsync off.
#   Redis: no persistence, 256 databases (tests take one each), daemonized.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
ROOT=${BACKENDAI_TEST_ROOT:-/var/lib/backendai-test}

say() { echo "[test-services] $*" >&2; }

pg_url=${BACKENDAI_TEST_PG:-}
redis_url=${BACKENDAI_TEST_REDIS:-}
# shellcheck source=test-services.env
source scripts/test-services.env
pg_url=${pg_url:-$BACKENDAI_TEST_PG}
redis_url=${redis_url:-$BACKENDAI_TEST_REDIS}

# host_port URL -> "host port" (default port: $2)
host_port() {
  local re='^[a-z+]+://([^@/]*@)?([^:/?]+)(:([0-9]+))?'
  [[ $1 =~ $re ]] || { say "cannot parse $1"; exit 1; }
  echo "${BASH_REMATCH[2]} ${BASH_REMATCH[4]:-$2}"
}
is_local() { [[ $1 == 127.0.0.1 || $1 == localhost ]]; }
read -r pg_host pg_port <<<"$(host_port "$pg_url" 5432)"
read -r redis_host redis_port <<<"$(host_port "$redis_url" 6379)"

# Concurrent runs (several people running make test) must not initialise the data directory twice.
exec 9>/tmp/backendai-test-services.lock
flock -w 300 9 || { say "another setup holds /tmp/backendai-test-services.lock"; exit 1; }

# 1. Debian packages
missing=()
for p in postgresql redis-server; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. PostgreSQL
PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n1)
[[ -x $PGBIN/pg_ctl ]] || { say "no PostgreSQL server binaries under /usr/lib/postgresql"; exit 1; }
pg_answers() { "$PGBIN/psql" "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; }
if is_local "$pg_host" && ! pg_answers; then
  PGDATA=$ROOT/pg
  $SUDO mkdir -p "$ROOT"
  if [[ ! -f $PGDATA/PG_VERSION ]]; then
    say "initialising a PostgreSQL data directory in $PGDATA"
    $SUDO rm -rf "$PGDATA"
    $SUDO install -d -o postgres -g postgres -m 700 "$PGDATA"
    $SUDO runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      >/dev/null
  fi
  # Rewritten on every run so that a changed port takes effect; included from postgresql.conf.
  $SUDO runuser -u postgres -- tee "$PGDATA/backendai-test.conf" >/dev/null <<EOF
# Written by scripts/test-services.sh: a throw-away server for tests, not for data you want to keep.
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = ''
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  $SUDO runuser -u postgres -- tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/test-services.sh: trust, but only over loopback TCP (there is no Unix socket).
host all all 127.0.0.1/32 trust
EOF
  grep -q "^include_if_exists = 'backendai-test.conf'" "$PGDATA/postgresql.conf" 2>/dev/null ||
    echo "include_if_exists = 'backendai-test.conf'" | $SUDO runuser -u postgres -- tee -a "$PGDATA/postgresql.conf" \
      >/dev/null
  say "starting PostgreSQL on 127.0.0.1:$pg_port"
  # A server of ours may still run with an older configuration (e.g. another port): restart it then.
  if $SUDO runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    $SUDO runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$ROOT/pg.log" -w -t 60 restart >/dev/null 9>&-
  else
    $SUDO touch "$ROOT/pg.log" && $SUDO chown postgres: "$ROOT/pg.log"
    $SUDO runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$ROOT/pg.log" -w -t 60 start >/dev/null 9>&-
  fi
fi
pg_answers || { say "PostgreSQL at $pg_url does not answer; see $ROOT/pg.log"; exit 1; }

# 3. Redis
redis_answers() { [[ $(redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null) == PONG ]]; }
if is_local "$redis_host" && ! redis_answers; then
  say "starting Redis on 127.0.0.1:$redis_port"
  $SUDO install -d -o redis -g redis -m 750 "$ROOT/redis"
  $SUDO runuser -u redis -- redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --databases 256 --daemonize yes --dir "$ROOT/redis" --logfile "$ROOT/redis/redis.log" \
    --pidfile "$ROOT/redis/redis.pid" 9>&-  # the daemon must not keep holding the lock
  for _ in $(seq 1 50); do redis_answers && break; sleep 0.1; done
fi
redis_answers || { say "Redis at $redis_url does not answer; see $ROOT/redis/redis.log"; exit 1; }
