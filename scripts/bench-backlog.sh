#!/usr/bin/env bash
# Backlog benchmark: ccrelay under sustained ingest (wrk, 2 KB form XML, 32 connections) with
# one file sink, which is made to fail for an outage in the middle of the load (a plain file
# stands where the sink's folder should be, so every write fails transiently), then recovers.
# Samples once a second: RSS, the sink's backlog, envelopes routed and delivered. Prints
#   - before the outage: ingest rate, delivery rate and how much the backlog moved (flat?);
#   - during it: the peak backlog and the peak RSS (target < 200 MB);
#   - after it: the delivery rate while the backlog drains, against the ingest rate over the
#     same seconds (target >= 2x).
#
# Usage: scripts/bench-backlog.sh [outage seconds, default 60] [connections, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
outage=${1:-60}
connections=${2:-32}
warmup=15
after=45

source scripts/bench-common.sh
ensure_wrk
cargo build --release --quiet --bin ccrelay
target_dir=$(target_dir)

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/rules.yaml" <<'YAML'
version: 1
sinks:
  archive:
    type: file
    path: "bench-out/{{ kind }}.jsonl"
    max_backlog: 100000000
    retry: { initial_delay: 100ms, max_delay: 1s }
rules:
  - { name: all, to: [archive] }
YAML
mkdir -p "$work/data"
RUST_LOG=error "$target_dir/release/ccrelay" serve --data-dir "$work/data" --rules "$work/rules.yaml" \
  --listen 127.0.0.1:18082 --admin-listen 127.0.0.1:19092 & pids+=($!)
relay=$!
wait_port 18082

total=$((warmup + outage + after))
wrk -t2 -c"$connections" -d"${total}s" -s bench/post-form.lua http://127.0.0.1:18082 > "$work/wrk.txt" 2>&1 & pids+=($!)
load=$!

# t rss_kb backlog routed delivered, once a second until the load ends and the backlog is gone.
sample() {
  local metrics rss
  metrics=$(curl -s http://127.0.0.1:19092/metrics || true)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$relay/status")
  awk -v t="$1" -v rss="$rss" '
    /^ccrelay_sink_backlog_records\{sink="archive"\}/ {b=$2}
    /^ccrelay_sink_routed_total\{sink="archive"\}/ {r=$2}
    /^ccrelay_sink_deliveries_total\{outcome="delivered",sink="archive"\}/ {d=$2}
    END {printf "%s %s %d %d %d\n", t, rss, b, r, d}' <<<"$metrics"
}
start=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.2f}')" "$(date +%s.%N)" "$start"; }
blocked=0
: > "$work/samples.txt"
while :; do
  t=$(elapsed)
  sample "$t" >> "$work/samples.txt"
  if [ $blocked = 0 ] && python3 -c "import sys; sys.exit(0 if float('$t') >= $warmup else 1)"; then
    # Moved aside in one step (the sink keeps writing until it notices), then a plain file
    # takes the folder's place.
    mv "$work/data/bench-out" "$work/data/bench-out.before-outage"
    echo "a plain file where the sink's folder was" > "$work/data/bench-out"
    blocked=1; echo "t=$t sink stopped" >&2
  elif [ $blocked = 1 ] && python3 -c "import sys; sys.exit(0 if float('$t') >= $warmup + $outage else 1)"; then
    rm -f "$work/data/bench-out"; blocked=2; echo "t=$t sink back" >&2
  fi
  if ! kill -0 "$load" 2>/dev/null; then
    backlog=$(tail -1 "$work/samples.txt" | awk '{print $3}')
    [ "$backlog" -eq 0 ] && break
    python3 -c "import sys; sys.exit(0 if float('$t') < $total + 60 else 1)" || break
  fi
  sleep 1
done

python3 - "$work/samples.txt" "$warmup" "$outage" "$connections" "$total" <<'PY'
import sys
path, warmup, outage, conns, total = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
rows = [tuple(float(x) for x in line.split()) for line in open(path) if line.strip()]
def at(t):  # the first sample at or after t
    return next(r for r in rows if r[0] >= t)
def rate(a, b, column):
    return (b[column] - a[column]) / (b[0] - a[0])
t, rss, backlog, routed, delivered = range(5)
steady = [r for r in rows if 3 <= r[t] <= warmup]
print(f"2 KB form XML, {conns} connections, wrk; one file sink stopped for {outage:.0f} s")
a, b = steady[0], steady[-1]
print(f"before : ingest {rate(a, b, routed):8.0f}/s  delivered {rate(a, b, delivered):8.0f}/s  "
      f"backlog {min(r[backlog] for r in steady):.0f}..{max(r[backlog] for r in steady):.0f} records (flat = keeping up)")
during = [r for r in rows if warmup <= r[t] <= warmup + outage + 1]
print(f"outage : backlog peaked at {max(r[backlog] for r in rows):.0f} records; "
      f"RSS peaked at {max(r[rss] for r in rows) / 1024:.0f} MB (target < 200 MB)")
back = at(warmup + outage + 1)
drained = next((r for r in rows if r[t] > back[t] and r[backlog] <= 1000), rows[-1])
# Only the seconds while the load still ran compare two rates that share the machine.
end_t = min(drained[t], total - 1)
end = [r for r in rows if r[t] <= end_t][-1]
ingest, drain = rate(back, end, routed), rate(back, end, delivered)
print(f"after  : delivered {drain:8.0f}/s while ingest ran at {ingest:8.0f}/s over {end[t] - back[t]:.0f} s; "
      f"backlog {back[backlog]:.0f} -> {end[backlog]:.0f}")
print(f"drain/ingest ratio: {drain / ingest if ingest else float('inf'):.2f}  (target >= 2)")
PY
