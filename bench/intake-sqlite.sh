#!/usr/bin/env bash
# SubmitCase on the embedded SQLite store against a one-row-per-transaction insert loop on the
# same disk and durability setting, in one run.
#   bench/intake-sqlite.sh [requests] [concurrency] [full|normal]
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-3000}"; concurrency="${2:-32}"; sync="${3:-full}"
bin="${CARGO_TARGET_DIR:-target}/release/minqing"
[ -x "$bin" ] || cargo build --release -p minqing
work=$(mktemp -d -p "${TMPDIR:-/tmp}")
cleanup() {
  [ -n "${pid:-}" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

MINQING_INTAKE__LISTEN=127.0.0.1:0 MINQING_HTTP_LISTEN=127.0.0.1:0 MINQING_LOG__FILTER=warn \
MINQING_STORAGE__SQLITE_SYNCHRONOUS=$sync \
  "$bin" serve intake --data-dir "$work" > "$work/banner" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "Press Ctrl-C" "$work/banner" 2>/dev/null && break; sleep 0.1; done
endpoint="http://$(grep -o 'grpc://[0-9.:]*' "$work/banner" | head -1 | cut -d/ -f3)"

"$bin" bench submit --endpoint "$endpoint" --data-dir "$work" --requests "$requests" \
  --warmup 200 --concurrency "$concurrency" --server-pid "$pid" --json > "$work/ours.json"
cat "$work/ours.json"
"$bin" bench sqlite-floor --dir "$work/floor" --rows "$requests" --synchronous "$sync" --json > "$work/floor.json"
cat "$work/floor.json"
python3 - "$work/ours.json" "$work/floor.json" <<'PY'
import json, sys
ours, floor = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"SubmitCase {ours['rate']:.0f}/s (p50 {ours['p50_ms']:.1f} ms, p99 {ours['p99_ms']:.1f} ms, "
      f"server peak RSS {ours['server_peak_rss_kib']/1024:.1f} MiB) vs insert loop {floor['rate']:.0f}/s: "
      f"ratio {ours['rate']/floor['rate']:.2f}")
PY
