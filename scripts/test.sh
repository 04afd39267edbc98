#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it: every cargo test, then
# each example rules file's own `tests:` through `ccrelay rules test`, as an operator's CI would,
# then the admin page in headless Chromium (installed from Debian's package when missing), span
# export, and the Dockerfile and Helm chart checks. The sink tests talk to real brokers:
# scripts/brokers.sh starts RabbitMQ and Kafka (tansu) and CCRELAY_BROKERS=1 turns those tests
# on (without it they say they are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/brokers.sh
export CCRELAY_BROKERS=1
cargo test --locked --all-targets
for rules in tests/rules/*.yaml; do
  [ -e "$rules" ] || continue
  echo "ccrelay rules test $rules"
  cargo run --locked --quiet -- rules test "$rules"
done
scripts/install-chromium.sh
cargo test --locked --features browser --test browser
# Span export with the otel feature, against a collector stand-in.
cargo test --locked --features otel --test otel
# The Dockerfile and the Helm chart: lints, rendering, and ccrelay started from their configs.
scripts/check-deploy.sh
