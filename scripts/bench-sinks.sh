#!/usr/bin/env bash
# Sink benchmark: how many envelopes per second each network sink delivers (confirmed by the far
# side: broker acks, Kafka delivery reports, 2xx answers), on the real brokers of
# scripts/brokers.sh and a local HTTP receiver (examples/bare_server.rs). Two measurements per
# sink, each with a release build of ccrelay and the 2 KB form of bench/ (or, with `case` as the
# third argument, the case forward of bench/case.json, ~0.8 KB of JSON: what a case-keyed topic
# typically carries):
#
#   sustained  wrk posts forms (32 connections) while the sink delivers them: the rate at which
#              envelopes reached the far side during the load, and how far delivery trailed.
#   drain      envelopes are first accepted while the sink is unreachable, then ccrelay restarts
#              with the sink reachable: the rate at which it empties that backlog, which is the
#              sink's own throughput, apart from ingest competing for the two cores.
#
# Counts come from ccrelay_sink_deliveries_total{outcome="delivered"}, sampled every second, and
# are checked against the far side (messages in the queue or topic) at the end.
# The machine is shared and noisy: run it when nothing else builds, and compare runs.
#
# Usage: scripts/bench-sinks.sh [seconds of load, default 20] [sinks, default "kafka amqp http"]
#                               [payload: form (default) or case]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
sinks=${2:-"kafka amqp http"}
payload=${3:-form}
case $payload in
  form) payload_label="2 KB form XML" ;;
  case) payload_label="case JSON (bench/case.json)"
        export BENCH_FORM=bench/case.json BENCH_CONTENT_TYPE=application/json ;;
  *) echo "payload must be form or case, not $payload" >&2; exit 64 ;;
esac

source scripts/bench-common.sh
ensure_wrk
scripts/brokers.sh >/dev/null
cargo build --release --quiet --bin ccrelay --example bare_server --example bench_far_side
target_dir=$(target_dir)
ccrelay=$target_dir/release/ccrelay
far_side=$target_dir/release/examples/bench_far_side

amqp_url='amqp://guest:guest@127.0.0.1:5672/%2f'
kafka_brokers=127.0.0.1:9092
ingress=127.0.0.1:18181
admin=127.0.0.1:19191
receiver=127.0.0.1:18190

work=$(mktemp -d)
relay_pid=
receiver_pid=
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null || true; fi
  if [ -n "$receiver_pid" ]; then kill "$receiver_pid" 2>/dev/null; wait "$receiver_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap 'status=$?; cleanup; exit $status' EXIT

# Arithmetic on decimals (awk: bc is not on every machine).
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }


# A counter from the relay's metrics (0 when absent): $1 is a regex on the series.
metric() {
  curl -sf "http://$admin/metrics" | awk -v pattern="$1" '$0 ~ pattern { sum += $NF } END { printf "%d\n", sum }'
}
delivered() { metric '^ccrelay_sink_deliveries_total\{outcome="delivered",sink="bench"\}'; }
accepted() { metric '^ccrelay_ingress_requests_total\{.*status="202"'; }

start_relay() { # data dir, rules file
  RUST_LOG=warn "$ccrelay" serve --data-dir "$1" --rules "$2" --listen "$ingress" --admin-listen "$admin" >>"$work/relay.log" 2>&1 &
  relay_pid=$!
  wait_port "${ingress##*:}"
}

stop_relay() {
  kill "$relay_pid"
  wait "$relay_pid" 2>/dev/null || true
  relay_pid=
}

# The `bench` sink of kind $1 for run $2, as a YAML flow map.
sink_yaml() {
  case $1 in
    kafka) echo "{ type: kafka, brokers: \"$kafka_brokers\", topic: \"$2\", compression: lz4 }" ;;
    amqp) echo "{ type: amqp, url: \"$amqp_url\", routing_key: \"$2\" }" ;;
    http) echo "{ type: http, url: \"http://$receiver/ingest/sink\" }" ;;
    unreachable) echo "{ type: http, url: \"http://127.0.0.1:1/\" }" ;;
  esac
}

write_rules() { # file, sink yaml
  printf 'version: 1\nsinks:\n  bench: %s\nrules:\n  - { name: all, to: bench }\n' "$2" >"$1"
}

prepare_far_side() { # kind, name
  case $1 in
    kafka) "$far_side" kafka-topic "$kafka_brokers" "$2" ;;
    amqp) "$far_side" amqp-queue "$amqp_url" "$2" ;;
    http)
      if [ -z "$receiver_pid" ]; then
        "$target_dir/release/examples/bare_server" "$receiver" & receiver_pid=$!
        wait_port "${receiver##*:}"
      fi ;;
  esac
}

far_side_count() { # kind, name; never fails the run
  case $1 in
    kafka) "$far_side" kafka-count "$kafka_brokers" "$2" 2>/dev/null || echo "n/a (broker gone)" ;;
    amqp) "$far_side" amqp-count "$amqp_url" "$2" 2>/dev/null || echo "n/a" ;;
    http) echo "n/a (the receiver only answers)" ;;
  esac
}

# Samples `delivered` every second into $1 as "seconds count" until $2 exists.
sample() {
  local start now
  start=$(date +%s.%N)
  while [ ! -e "$2" ]; do
    now=$(date +%s.%N)
    echo "$(calc "$now - $start") $(delivered)" >>"$1"
    sleep 1
  done
}

# Waits until everything accepted is delivered (at most 300 s); prints the seconds waited.
wait_drained() {
  local target=$1 start
  start=$(date +%s)
  while [ "$(delivered)" -lt "$target" ] && [ $(($(date +%s) - start)) -lt 300 ]; do sleep 0.2; done
  echo $(($(date +%s) - start))
}

echo "$payload_label, wrk 32 connections, ${seconds} s per load, release build; targets: kafka >= 20000/s, amqp >= 5000/s, http >= 5000/s"
for kind in $sinks; do
  run=bench-$kind-$(date +%s)
  prepare_far_side "$kind" "$run"

  # Sustained: load and delivery together.
  data=$work/$run-sustained
  write_rules "$work/rules.yaml" "$(sink_yaml "$kind" "$run")"
  start_relay "$data" "$work/rules.yaml"
  rm -f "$work/stop"
  sample "$work/$run.samples" "$work/stop" &
  sampler=$!
  wrk_out=$(wrk -t2 -c32 -d"${seconds}s" -s bench/post-form.lua "http://$ingress" 2>&1)
  touch "$work/stop"; wait "$sampler"
  ingest_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$wrk_out")
  total=$(accepted)
  trailing=$(wait_drained "$total")
  sustained=$(awk -v skip=2 'NR == 1 { next } { t[NR] = $1; c[NR] = $2 } END {
      first = 0; for (i = 2; i <= NR; i++) if (t[i] >= skip) { first = i; break }
      if (first == 0 || NR <= first) { print 0; exit }
      printf "%.0f\n", (c[NR] - c[first]) / (t[NR] - t[first]) }' "$work/$run.samples")
  sustained_count=$(delivered)
  stop_relay
  printf '%-6s sustained: ingest %8.0f req/s, delivered %7s/s during the load (%s of %s delivered, caught up %ss after it); the far side holds %s\n' \
    "$kind" "$ingest_rps" "$sustained" "$sustained_count" "$total" "$trailing" "$(far_side_count "$kind" "$run")"

  # Drain: a backlog accepted while the sink was unreachable, then delivered at full speed.
  data=$work/$run-drain
  write_rules "$work/rules.yaml" "$(sink_yaml unreachable "")"
  start_relay "$data" "$work/rules.yaml"
  wrk -t2 -c32 -d"${seconds}s" -s bench/post-form.lua "http://$ingress" >/dev/null 2>&1
  backlog=$(accepted)
  stop_relay
  # A fresh queue or topic for the drain, so its count stands alone. tansu (in memory) has
  # been seen to exit under these loads: it is started again if it did.
  scripts/brokers.sh start-kafka >/dev/null
  run=$run-drain
  prepare_far_side "$kind" "$run"
  write_rules "$work/rules.yaml" "$(sink_yaml "$kind" "$run")"
  start_relay "$data" "$work/rules.yaml"
  # Timed from the first delivery: opening a large spool is not the sink's time.
  drain_start=
  limit=$(($(date +%s) + 300))
  while [ "$(date +%s)" -lt "$limit" ]; do
    count=$(delivered)
    if [ -z "$drain_start" ] && [ "$count" -gt 0 ]; then drain_start=$(date +%s.%N); first=$count; fi
    [ "$count" -ge "$backlog" ] && break
    sleep 0.1
  done
  drain_end=$(date +%s.%N)
  drained=$(delivered)
  drain_rate=$(calc "($drained - ${first:-0}) / ($drain_end - ${drain_start:-$drain_end} + 0.001)")
  stop_relay
  at_far_side=$(far_side_count "$kind" "$run")

  printf '       drain:     %7s envelopes in %s s = %7s/s (backlog %s); the far side holds %s\n' \
    "$drained" "$(calc "$drain_end - ${drain_start:-$drain_end}")" "$drain_rate" "$backlog" "$at_far_side"
done
