#!/usr/bin/env bash
# Set up this machine for autoserv and run something: the whole set-up is here.
#
#   ./dev.sh demo    build the local test bed and guest image, run the seed KVM control file
#   ./dev.sh test    run the test suite (what CI runs: .ci/run calls this)
#   ./dev.sh deps    only install the Debian packages and the package itself
#
# Needs root (network namespaces, sshd, qemu) on Debian 12 or similar.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  openssh-server openssh-client iproute2 procps kmod cpio
  qemu-system-x86 qemu-utils busybox-static dropbear-bin
  ifupdown dash syslinux syslinux-common mtools dosfstools
  build-essential xz-utils bzip2 ca-certificates socat python3
  meson ninja-build libglib2.0-dev libpixman-1-dev flex bison pkg-config
  zlib1g-dev libslirp-dev libfdt-dev
  chromium
)

install_deps() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "dev.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  python3 -m pip install -q --disable-pip-version-check -e '.[test]'
}

case "${1:-}" in
  demo) shift; install_deps; exec python3 -m autoserv.lab.demo "$@" ;;
  test) shift; install_deps; exec python3 -m pytest "$@" ;;
  deps) install_deps ;;
  *) echo "usage: $0 demo|test|deps [args...]" >&2; exit 2 ;;
esac
