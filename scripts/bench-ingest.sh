#!/usr/bin/env bash
# Ingest benchmark: the same load (wrk, 2 KB form XML, 32 connections) against a bare axum
# server that only reads the body, then against ccrelay with its default config (fsync-durable
# spool + file sink), one after the other. Prints both throughputs, the ratio and ccrelay's
# p99. Compare ratios, not absolute numbers: this machine is shared and noisy.
#
# Usage: scripts/bench-ingest.sh [seconds per run, default 15] [connections, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
connections=${2:-32}

source scripts/bench-common.sh
ensure_wrk
cargo build --release --quiet --bin ccrelay --example bare_server
target_dir=$(target_dir)

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Let ccrelay finish its drain before its data dir goes.
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT


# Prints "requests_per_second p99_ms" for a wrk run against port $1.
load() {
  local out
  out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/post-form.lua "http://127.0.0.1:$1" 2>&1)
  echo "$out" > "$work/wrk-$1.txt"
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  if [ -n "$non2xx" ]; then echo "warning: $non2xx non-2xx answers on port $1" >&2; fi
  echo "$rps $p99"
}

"$target_dir/release/examples/bare_server" 127.0.0.1:18080 & pids+=($!)
wait_port 18080
read -r bare_rps bare_p99 < <(load 18080)
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

RUST_LOG=warn "$target_dir/release/ccrelay" serve --data-dir "$work/data" --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 & pids+=($!)
wait_port 18081
read -r relay_rps relay_p99 < <(load 18081)
# Rotated files (`*.jsonl.1`, ...) count too: at 256 MiB a file is renamed aside.
written=$(cat "$work"/data/out/form/*.jsonl* 2>/dev/null | wc -l || true)
appended=$(curl -s http://127.0.0.1:19091/metrics | awk '/^ccrelay_spool_appended_records_total/ {print $2}')

python3 - "$bare_rps" "$bare_p99" "$relay_rps" "$relay_p99" "$written" "$connections" "${appended:-0}" <<'PY'
import sys
bare, bare_p99, relay, relay_p99, written, conns, appended = sys.argv[1:]
bare, relay = float(bare), float(relay)
print(f"2 KB form XML, {conns} connections, wrk")
print(f"bare axum server : {bare:10.0f} req/s   p99 {float(bare_p99):7.2f} ms")
print(f"ccrelay (durable): {relay:10.0f} req/s   p99 {float(relay_p99):7.2f} ms")
print(f"  the file sink had written {written} of {float(appended):.0f} accepted envelopes when the load stopped")
print(f"ratio ccrelay/bare: {relay / bare:.2f}  (target >= 0.50, p99 < 20 ms)")
PY
