#!/usr/bin/env bash
# Prepares the NVMe-under-QEMU test (collectors/tests/nvme_qemu.rs) on Debian:
# QEMU for software emulation, a static busybox and cpio for the initramfs,
# and the vmlinuz of Debian's cloud kernel (NVMe built in, no modules needed).
# Idempotent and quick once done; safe to call from .ci/run before `make test`.
#
#   collectors/tests/nvme-qemu/setup.sh [OUT_DIR]    (default: target/nvme-qemu)
#
# Needs root (apt). The kernel is only downloaded and unpacked, not installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
out=${1:-${SPARKHOST_NVME_QEMU_DIR:-$root/target/nvme-qemu}}
pkgs=(qemu-system-x86 busybox-static cpio)
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
updated=0
if ((${#missing[@]})); then
  apt-get update -qq
  updated=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
if [ ! -s "$out/vmlinuz" ]; then
  # The meta package points at a versioned image whose ABI number changes and
  # whose old versions leave the mirror, so resolve it rather than pin it.
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$kpkg" ] && [ "$updated" = 0 ]; then
    apt-get update -qq
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  [ -n "$kpkg" ] || { echo "nvme-qemu setup: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp" # apt's _apt user writes the download
  (cd "$tmp" && apt-get download -qq "$kpkg" 2>/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/"$kpkg"_*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
  cp "$tmp"/boot/vmlinuz-* "$out/vmlinuz.part"
  mv "$out/vmlinuz.part" "$out/vmlinuz"
  echo "$kpkg" >"$out/kernel-package"
fi
echo "nvme-qemu: ready in $out ($(cat "$out/kernel-package" 2>/dev/null || echo kernel); $(qemu-system-x86_64 --version | head -1))"
