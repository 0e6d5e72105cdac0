#!/usr/bin/env bash
# Where the CPU goes at a fixed submit rate: `minqing up` (or SERVICES="intake routing" for
# `minqing serve intake routing`) on a fresh PostgreSQL database, a 1,000-case warm-up, then
# `minqing bench route` open loop at RATE cases/s for N cases, timed to the partner's
# PullAssignments stream; prints the latency, then the CPU seconds used during the run by
# minqing, by the load tool, and by PostgreSQL's connections grouped by service
# (bench/pgcpu.py). Needs a release build and PostgreSQL at 127.0.0.1:5432 on this machine.
# STATS=1 adds rows written per table, how many updates were made in place, and the rows read
# by sequential scans. ANALYZE=1 gathers the planner's statistics after the warm-up, as
# autovacuum would on a server that runs it (this machine's has it off, so a fresh database
# is otherwise never analysed). HELD=1 logs each wait of a feed's readers behind a running
# transaction of its service and sums them per feed (bench/held.py).
#   RATE=400 N=6000 ./bench/route-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/release/minqing"
rate="${RATE:-400}"
n="${N:-6000}"
work="$(mktemp -d)"
db="mq_routecpu_$$"
trap 'kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; dropdb -h 127.0.0.1 -U postgres --if-exists "$db"; rm -rf "$work"' EXIT

if [ -n "${SERVICES:-}" ]; then
  # shellcheck disable=SC2206
  run=(serve ${SERVICES})
else
  run=(up)
fi
createdb -h 127.0.0.1 -U postgres "$db"
MINQING_INTAKE__LISTEN=127.0.0.1:27401 MINQING_ROUTING__LISTEN=127.0.0.1:27402 MINQING_HTTP_LISTEN=127.0.0.1:27400 \
  MINQING_LOG__FILTER="${FILTER:-warn${HELD:+,minqing_kit::feed::tail=debug}}" "$bin" "${run[@]}" --data-dir "$work/data" \
  --database-url "postgres://postgres@127.0.0.1:5432/$db" >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 1 60); do [ -s "$work/data/admin.token" ] && grep -q "is up" "$work/up.log" && break; sleep 0.5; done
args=(--intake http://127.0.0.1:27401 --routing http://127.0.0.1:27402 --data-dir "$work/data")
"$bin" bench route "${args[@]}" --requests 1000 --concurrency 64 >/dev/null
sleep 3
if [ -n "${ANALYZE:-}" ]; then vacuumdb -h 127.0.0.1 -U postgres -d "$db" --analyze-only --quiet; fi
python3 bench/pgcpu.py snap "$work/pg-before.json"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(cpu "$up")
/usr/bin/time -f "  load tool CPU %U s user + %S s system" \
  "$bin" bench route "${args[@]}" --requests "$n" --rate "$rate" --concurrency 256
after=$(cpu "$up")
python3 bench/pgcpu.py snap "$work/pg-after.json"
echo "  minqing CPU $(awk -v a="$before" -v b="$after" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }') s"
python3 bench/pgcpu.py diff "$work/pg-before.json" "$work/pg-after.json"
if [ -n "${STATS:-}" ]; then
  # Rows written per table and how many updates were made in place (HOT). Backends report
  # their counts when idle, so wait for them first.
  sleep 12
  psql -h 127.0.0.1 -U postgres -d "$db" -c "SELECT relname, n_tup_ins AS inserted, n_tup_upd AS updated, \
    n_tup_hot_upd AS in_place, n_tup_del AS deleted FROM pg_stat_user_tables \
    WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY n_tup_upd + n_tup_ins DESC"
  psql -h 127.0.0.1 -U postgres -d "$db" -Atc "SELECT 'rows read by sequential scans, whole run: ' \
    || sum(seq_tup_read) || ' in ' || sum(seq_scan) || ' scans' FROM pg_stat_user_tables"
fi
if [ -n "${HELD:-}" ]; then
  echo "  feeds' readers held back behind running transactions (bench/held.py), whole run:"
  python3 bench/held.py "$work/up.log"
fi
if [ -n "${KEEP_LOG:-}" ]; then cp "$work/up.log" "$KEEP_LOG"; fi
