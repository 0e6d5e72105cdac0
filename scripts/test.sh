#!/usr/bin/env bash
# Runs the whole test suite: every test on the embedded SQLite store, and on PostgreSQL too
# when one is reachable (MINQING_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres).
# With MINQING_REQUIRE_POSTGRES=1 (as in CI) an unreachable PostgreSQL fails the run instead.
set -euo pipefail
cd "$(dirname "$0")/.."

url="${MINQING_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export MINQING_TEST_POSTGRES_URL="$url"

postgres_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$url" -t 3
  else
    # Without the client tools, a TCP connect to the host and port tells enough.
    local hostport="${url#*@}"; hostport="${hostport%%/*}"
    timeout 3 bash -c "exec 3<>/dev/tcp/${hostport%%:*}/${hostport##*:}" 2>/dev/null
  fi
}

if postgres_up; then
  echo "== PostgreSQL reachable at ${url%%\?*}: every test runs on SQLite and on PostgreSQL"
  pg=ran
else
  if [ "${MINQING_REQUIRE_POSTGRES:-0}" = "1" ]; then
    echo "== PostgreSQL is required (MINQING_REQUIRE_POSTGRES=1) but ${url} cannot be reached" >&2
    exit 1
  fi
  echo "== PostgreSQL NOT reachable at ${url}: tests run on SQLite only; PostgreSQL tests are SKIPPED"
  pg=skipped
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi

if [ "$pg" = skipped ]; then
  echo "== Reminder: PostgreSQL tests did NOT run (no server at ${url})."
fi
