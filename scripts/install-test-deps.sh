#!/usr/bin/env bash
# System packages the test suite needs beyond Rust and Python: headless
# Chromium (report.html tests) and QEMU + a Debian kernel (the emulated NVMe
# controller test). Idempotent; needs root for apt on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: chromium is missing; install Debian's 'chromium' package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# A real OCI registry for the sharing tests (tests/e2e/registry.rs):
# Debian's docker-registry (CNCF distribution), skopeo to inspect what it
# stores, and htpasswd (apache2-utils) for its bcrypt password file.
missing=()
for pair in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: missing ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
collectors/tests/nvme-qemu/setup.sh
