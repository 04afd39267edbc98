#!/usr/bin/env bash
# Ingest benchmark: the same load (wrk, 2 KB form XML, 32 connections) against a bare axum
# server that only reads the body, then against ccrelay with its default config (fsync-durable
# spool + file sink), one after the other, for several rounds. Prints each round's throughputs
# and ratio, then the median ratio and ccrelay's median p99: this machine is shared and noisy,
# so one pair of runs says little; alternating them puts the same noise on both sides.
#
# Usage: scripts/bench-ingest.sh [seconds per run, default 15] [connections, default 32]
#                                [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
connections=${2:-32}
rounds=${3:-3}

source scripts/bench-common.sh
ensure_wrk
cargo build --release --quiet --bin ccrelay --example bare_server
target_dir=$(target_dir)

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    # Let ccrelay finish its drain before its data dir goes.
    wait "$pid" 2>/dev/null || true
  fi
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

stop() {
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

results=()
for round in $(seq "$rounds"); do
  "$target_dir/release/examples/bare_server" 127.0.0.1:18080 & pid=$!
  wait_port 18080
  read -r bare_rps bare_p99 < <(load 18080)
  stop

  data="$work/data-$round"
  RUST_LOG=warn "$target_dir/release/ccrelay" serve --data-dir "$data" --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 & pid=$!
  wait_port 18081
  read -r relay_rps relay_p99 < <(load 18081)
  # Rotated files (`*.jsonl.1`, ...) count too: at 256 MiB a file is renamed aside.
  written=$(cat "$data"/out/form/*.jsonl* 2>/dev/null | wc -l || true)
  metrics=$(curl -s http://127.0.0.1:19091/metrics)
  appended=$(awk '/^ccrelay_spool_appended_records_total/ {print $2}' <<<"$metrics")
  # Every form carries its own id: a duplicate answer (200) would be a cheaper request than
  # the benchmark means to measure.
  duplicates=$(awk '/^ccrelay_ingress_duplicates_total/ {sum += $2} END {print sum + 0}' <<<"$metrics")
  if [ "$duplicates" != 0 ]; then echo "warning: $duplicates answers were duplicates" >&2; fi
  stop
  rm -rf "$data"
  echo "round $round: bare $bare_rps req/s, ccrelay $relay_rps req/s (p99 $relay_p99 ms), file sink had written $written of ${appended:-0} accepted when the load stopped" >&2
  results+=("$bare_rps $bare_p99 $relay_rps $relay_p99")
done

python3 - "$connections" "${results[@]}" <<'PY'
import statistics, sys
conns, rounds = sys.argv[1], [list(map(float, r.split())) for r in sys.argv[2:]]
print(f"2 KB form XML, {conns} connections, wrk, {len(rounds)} rounds (bare, then ccrelay)")
for i, (bare, bare_p99, relay, relay_p99) in enumerate(rounds, 1):
    print(f"  round {i}: bare {bare:8.0f} req/s   ccrelay {relay:8.0f} req/s   ratio {relay / bare:.2f}   ccrelay p99 {relay_p99:6.2f} ms")
ratio = statistics.median(relay / bare for bare, _, relay, _ in rounds)
p99 = statistics.median(r[3] for r in rounds)
bare = statistics.median(r[0] for r in rounds)
relay = statistics.median(r[2] for r in rounds)
print(f"median: bare {bare:.0f} req/s, ccrelay (durable) {relay:.0f} req/s, p99 {p99:.2f} ms")
print(f"median ratio ccrelay/bare: {ratio:.2f}  (target >= 0.50, p99 < 20 ms)")
PY
