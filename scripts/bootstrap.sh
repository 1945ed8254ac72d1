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
  libyang2-tools libyuma-base openssh-client openssh-server debootstrap systemd systemd-container
  prometheus groff-base frr
)
# openssh-server: its sshd is the real SSH server of the NETCONF host-key pinning test
# (tests/sync/test_netconf_hostkey_openssh.py runs it in a namespace as nobody).
# The TC eBPF fast path ([dataplane] mode auto|bpf): clang builds it, libbpf loads it; trafgen
# (netsniff-ng) is the lab benchmark's load generator, bpftool the operator's inspection tool.
# Installed when the distribution has them (Debian 12 does); without them mode auto falls back
# to the Python workers and says why.
KERNEL_PATH_PACKAGES=(clang llvm libbpf-dev libbpf1 linux-libc-dev netsniff-ng bpftool)

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
kmissing=()
for p in "${KERNEL_PATH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || kmissing+=("$p")
done
if [ "${#kmissing[@]}" -gt 0 ]; then
  echo "bootstrap: apt-get install ${kmissing[*]} (the TC eBPF fast path)"
  export DEBIAN_FRONTEND=noninteractive
  [ "${#missing[@]}" -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${kmissing[@]}" >/dev/null \
    || echo "bootstrap: some of ${kmissing[*]} could not be installed; [dataplane] mode = \"auto\" will use the Python path" >&2
fi
# Debian enables snmpd, prometheus and FRR on install; the lab and the tests start their own
# (agents in namespaces, a metrics server on a private port, bfdd with private sockets).
for unit in snmpd prometheus frr; do
  if systemctl is-active --quiet "$unit" 2>/dev/null; then systemctl stop "$unit" || true; fi
done

PY=/usr/bin/python3
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The TC eBPF fast path (engine/dataplane/kernel): built here with clang, not shipped as an object.
if ! .venv/bin/python -m engine.dataplane.kernel.build >/dev/null; then
  echo "bootstrap: the TC program did not build; [dataplane] mode = \"auto\" will use the Python path" >&2
fi
echo "bootstrap: ready ($(.venv/bin/python --version), .venv)"
