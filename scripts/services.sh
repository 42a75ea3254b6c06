#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis that the tests use are running,
# and that the test role exists. Idempotent.
#   TEST_DB_USER / TEST_DB_PASSWORD: the role the tests connect as
#   (default callcenter / callcenter; it needs CREATEDB for the test database).
set -euo pipefail

TEST_DB_USER="${TEST_DB_USER:-callcenter}"
TEST_DB_PASSWORD="${TEST_DB_PASSWORD:-callcenter}"

say() { printf 'services: %s\n' "$*"; }

wait_for() { # wait_for WHAT COMMAND...
    local what="$1"; shift
    for _ in $(seq 1 30); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    say "$what did not come up"; exit 1
}

if ! pg_isready -q -h 127.0.0.1; then
    say "starting PostgreSQL"
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1
fi

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis-cli -h 127.0.0.1 ping
fi

# psql as the cluster's superuser: over TCP where trust auth allows it,
# else over the local socket as the postgres system user.
admin_psql() {
    if psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
        psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -tA "$@"
    elif [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- psql -d postgres -v ON_ERROR_STOP=1 -tA "$@"
    else
        say "cannot reach PostgreSQL as its superuser to create role $TEST_DB_USER"; exit 1
    fi
}

if ! PGPASSWORD="$TEST_DB_PASSWORD" psql -h 127.0.0.1 -U "$TEST_DB_USER" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    say "creating PostgreSQL role $TEST_DB_USER"
    if [ "$(admin_psql -c "select 1 from pg_roles where rolname = '$TEST_DB_USER'")" = "1" ]; then
        admin_psql -c "alter role \"$TEST_DB_USER\" with login createdb password '$TEST_DB_PASSWORD'" >/dev/null
    else
        admin_psql -c "create role \"$TEST_DB_USER\" with login createdb password '$TEST_DB_PASSWORD'" >/dev/null
    fi
fi
say "ok (PostgreSQL and Redis are up)"
