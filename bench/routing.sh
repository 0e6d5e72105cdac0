#!/usr/bin/env bash
# Routing end to end on PostgreSQL, with pgbench's floor measured in the same run:
#   1. pgbench, 32 clients: one case row + one event row per transaction;
#   2. `minqing up` on a fresh PostgreSQL database;
#   3. the maximum rate: cases submitted closed loop (64 in flight), each timed to its
#      assignment on the partner's PullAssignments stream;
#   4. once the background work the closed loop left is done, half that rate, open loop: the
#      latency from SubmitCase returning to the stream;
#   5. with the suite stopped, pgbench again on emptied tables; the closed loop's rate is
#      given against each pgbench run and against their mean (on a shared machine the floor
#      moves within minutes, so one run before is a noisy yardstick).
# SERVICES="intake routing" runs only those services (`minqing serve intake routing`), as a
# deployment that gives supervision and matching machines of their own would; by default the
# whole suite runs (`minqing up`) on the same two cores. Minqing reaches a server on loopback
# without TLS when the URL does not ask for it (kit db.rs); pgbench runs the same way
# (PGSSLMODE=disable), so the floor and the suite pay for the same transport.
# Needs a release build (cargo build --release -p minqing) and PostgreSQL at 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/release/minqing"
pg="postgres://postgres@127.0.0.1:5432"
requests="${REQUESTS:-6000}"
work="$(mktemp -d)"
db="mq_routebench_$$"
trap 'kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; dropdb -h 127.0.0.1 -U postgres --if-exists "$db"; dropdb -h 127.0.0.1 -U postgres --if-exists "${db}_pgbench"; rm -rf "$work"' EXIT

# pgbench on freshly emptied tables; prints its lines and leaves its tps in $work/$1.
floor() {
  psql -q -h 127.0.0.1 -U postgres -d "${db}_pgbench" -c "TRUNCATE bench_cases, bench_events"
  PGSSLMODE=disable pgbench -h 127.0.0.1 -U postgres -n -c 32 -j 2 -T 20 -f bench/pgbench-case-event.sql \
    "${db}_pgbench" | grep -E "^(tps|latency)" | tee "$work/$1"
}

echo "== pgbench: case row + event row per transaction, 32 clients, 20 s"
createdb -h 127.0.0.1 -U postgres "${db}_pgbench"
psql -q -h 127.0.0.1 -U postgres -d "${db}_pgbench" -c \
  "CREATE TABLE bench_cases (id TEXT PRIMARY KEY, create_time BIGINT NOT NULL, body TEXT NOT NULL);
   CREATE TABLE bench_events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL,
     subject TEXT NOT NULL, create_time BIGINT NOT NULL, payload BYTEA NOT NULL);"
floor pgbench-before.txt

if [ -n "${SERVICES:-}" ]; then
  # shellcheck disable=SC2206
  run=(serve ${SERVICES})
else
  run=(up)
fi
echo "== minqing ${run[*]} on PostgreSQL"
createdb -h 127.0.0.1 -U postgres "$db"
MINQING_INTAKE__LISTEN=127.0.0.1:27401 MINQING_ROUTING__LISTEN=127.0.0.1:27402 MINQING_HTTP_LISTEN=127.0.0.1:27400 \
  MINQING_LOG__FILTER=warn "$bin" "${run[@]}" --data-dir "$work/data" --database-url "$pg/$db" >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 1 60); do [ -s "$work/data/admin.token" ] && grep -q "is up" "$work/up.log" && break; sleep 0.5; done
args=(--intake http://127.0.0.1:27401 --routing http://127.0.0.1:27402 --data-dir "$work/data")

echo "== maximum rate (closed loop, 64 in flight)"
"$bin" bench route "${args[@]}" --requests 1000 --concurrency 64 >/dev/null   # warm-up
"$bin" bench route "${args[@]}" --requests "$requests" --concurrency 64 | tee "$work/max.txt"
max=$(grep -oE 'submitted [0-9]+ \(([0-9]+)/s\)' "$work/max.txt" | grep -oE '\([0-9]+' | tr -d '(')
half=$((max / 2))

# The closed loop leaves background work behind (supervision, matching and the indicators
# follow the feeds a second apart): the half-rate run starts once it is done, when `minqing`
# uses under 5 % of a core for a second (at most 60 s), so that it measures the suite at that
# rate and not its catching up. The wait is printed: work still to do after the closed loop
# was not part of the rate it sustained.
ticks() { awk '{print $14 + $15}' "/proc/$up/stat"; }
hz=$(getconf CLK_TCK)
for waited in $(seq 1 60); do
  a=$(ticks); sleep 1; b=$(ticks)
  [ $(((b - a) * 20)) -lt "$hz" ] && break
done
echo "== background work after the closed loop: done within ${waited} s"

echo "== half the maximum submit rate ($half/s, open loop)"
"$bin" bench route "${args[@]}" --requests "$requests" --rate "$half" --concurrency 256

kill "$up" 2>/dev/null || true
wait "$up" 2>/dev/null || true
echo "== pgbench again, the suite stopped"
floor pgbench-after.txt
tps() { grep -oE '^tps = [0-9.]+' "$work/$1" | grep -oE '[0-9.]+$'; }
routed=$(grep -oE 'fully routed [0-9]+' "$work/max.txt" | grep -oE '[0-9]+$')
awk -v r="$routed" -v a="$(tps pgbench-before.txt)" -v b="$(tps pgbench-after.txt)" 'BEGIN {
  printf "== closed loop %d cases/s fully routed: %.2f x pgbench before (%.0f tps), %.2f x after (%.0f tps), %.2f x their mean\n",
    r, r / a, a, r / b, b, 2 * r / (a + b) }'
