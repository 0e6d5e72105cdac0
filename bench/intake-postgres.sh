#!/usr/bin/env bash
# SubmitCase on PostgreSQL against pgbench doing the same database work, in one run.
#   bench/intake-postgres.sh [requests] [concurrency]
# Needs a PostgreSQL at $PGURL_ADMIN (default postgres://postgres@127.0.0.1:5432/postgres) with
# durable commits (synchronous_commit on, the default), pgbench on PATH, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-30000}"; concurrency="${2:-32}"
admin="${PGURL_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
db=minqing_bench_$$
url="${admin%/*}/$db"
bin="${CARGO_TARGET_DIR:-target}/release/minqing"
[ -x "$bin" ] || cargo build --release -p minqing
work=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$admin" -qc "CREATE DATABASE $db"
echo "synchronous_commit = $(psql "$url" -Atc 'SHOW synchronous_commit'), fsync = $(psql "$url" -Atc 'SHOW fsync')"

MINQING_INTAKE__LISTEN=127.0.0.1:0 MINQING_HTTP_LISTEN=127.0.0.1:0 MINQING_LOG__FILTER=warn \
MINQING_STORAGE__MAX_CONNECTIONS=$((concurrency + 8)) \
  "$bin" serve intake --data-dir "$work" --database-url "$url" > "$work/banner" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "Press Ctrl-C" "$work/banner" 2>/dev/null && break; sleep 0.1; done
endpoint="http://$(grep -o 'grpc://[0-9.:]*' "$work/banner" | head -1 | cut -d/ -f3)"

"$bin" bench submit --endpoint "$endpoint" --data-dir "$work" --requests "$requests" \
  --concurrency "$concurrency" --server-pid "$pid" --json > "$work/ours.json"
cat "$work/ours.json"
seconds=$(python3 -c "import json;print(max(10,round(json.load(open('$work/ours.json'))['seconds'])))")

psql "$url" -q -f bench/pgbench/intake-setup.sql
# The suite reaches a server on loopback without TLS (kit db.rs); so does the floor.
PGSSLMODE=disable pgbench -n -c "$concurrency" -j 2 -T "$seconds" -f bench/pgbench/intake-submit.sql "$url" > "$work/pgbench.txt" 2>&1
grep -E "^tps|latency average" "$work/pgbench.txt"
python3 - "$work/ours.json" "$work/pgbench.txt" <<'PY'
import json, re, sys
ours = json.load(open(sys.argv[1]))
tps = float(re.search(r"tps = ([0-9.]+)", open(sys.argv[2]).read()).group(1))
print(f"SubmitCase {ours['rate']:.0f}/s (p50 {ours['p50_ms']:.1f} ms, p99 {ours['p99_ms']:.1f} ms, "
      f"server peak RSS {ours['server_peak_rss_kib']/1024:.1f} MiB) vs pgbench {tps:.0f}/s: "
      f"ratio {ours['rate']/tps:.2f}")
PY
