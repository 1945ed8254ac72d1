#!/usr/bin/env bash
# Install everything the engine, its lab and its tests need on a fresh Debian 12 / Ubuntu box:
# Debian packages (snmpd, nftables, tshark, qemu + a Debian kernel for the 802.1Q VM tests, ...)
# and a virtualenv in .venv with the project and its test extras. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc make
  iproute2 nftables snmpd snmp tshark tcpdump ethtool kmod
  qemu-system-x86 linux-image-amd64 busybox-static
  libyang2-tools libyuma-base openssh-client debootstrap systemd systemd-container
  frr
)

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: must run as root (network namespaces, raw sockets, apt)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian enables snmpd on install; the lab and tests start their own agents in namespaces.
if systemctl is-active --quiet snmpd 2>/dev/null; then systemctl stop snmpd || true; fi
# Likewise FRR (engine pairs): the engines and the lab run their own bfdd with private sockets.
if systemctl is-active --quiet frr 2>/dev/null; then systemctl stop frr || true; fi

PY=/usr/bin/python3
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "bootstrap: ready ($(.venv/bin/python --version), .venv)"
