"""Small helpers around ``ip netns`` / ``ip link`` / ``nft`` (the lab's only I/O with iproute2).

The one way tests, the lab and bench build network namespaces: :func:`add_ns` for one that
outlives the process (the lab), :func:`temporary` for a test's or a benchmark's own (a
per-process name, always deleted).  Commands raise :class:`LabError` with the failing
command and its stderr, so a broken step names itself instead of surfacing three steps later.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    # os.setns only exists from Python 3.12.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and what it printed."""


def run(cmd: Sequence[str], ns: str | None = None, check: bool = True, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command (inside namespace ``ns`` if given)."""
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    p = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(full)} -> exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` inside namespace ``ns`` (on the host if None)."""
    # ``ip -n`` switches namespace inside ip itself (as ``ip netns exec`` does, /sys included)
    # without a second exec: tests run thousands of these.
    return run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def batch(ns: str | None, lines: Sequence[str]) -> None:
    """Many ``ip`` commands in one ``ip -batch`` (one process, not one per line)."""
    run(["ip", *(["-n", ns] if ns else []), "-batch", "-"], input="\n".join(lines) + "\n")


def namespaces() -> list[str]:
    """The names of every namespace on the host (``ip netns list``)."""
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [n["name"] for n in json.loads(out)]


def add_ns(name: str) -> None:
    """Create a namespace with lo up, IPv6 DAD and router advertisements off.

    No DAD: addresses are usable at once, and link-local addresses finishing DAD cannot add
    local-table routes while snmpd walks /proc/net/ipv6_route (that walk then skips rows).
    No RA: nothing in a lab or test network sends them; a namespace must not pick up one.
    """
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")
    run(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
         "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"], ns=name)


def del_ns(name: str) -> None:
    """Delete a namespace (its veth ends, and so their peers, go with it); no error if absent."""
    run(["ip", "netns", "del", name], check=False)


_live: set[str] = set()   # temporary namespaces this process has now


def unique(base: str) -> str:
    """``<base>-<pid>`` (``-<n>`` added while that is in use here): parallel runs cannot collide."""
    name, n = f"{base}-{os.getpid()}", 1
    while name in _live:
        name, n = f"{base}-{os.getpid()}-{n}", n + 1
    return name


@contextlib.contextmanager
def temporary(*bases: str) -> Iterator[list[str]]:
    """Namespaces named :func:`unique` from ``bases`` (as :func:`add_ns` makes them); always deleted.

    A namespace of the same name left by a killed earlier process with this PID is deleted
    first.
    """
    names: list[str] = []
    try:
        for base in bases:
            name = unique(base)
            _live.add(name)
            names.append(name)
            del_ns(name)
            add_ns(name)
        yield names
    finally:
        for name in names:
            del_ns(name)
            _live.discard(name)


def sysctl(ns: str | None, key: str, value: str) -> None:
    """``sysctl -w key=value`` inside ``ns`` (on the host if None)."""
    run(["sysctl", "-qw", f"{key}={value}"], ns=ns)


def veth(ns_a: str | None, name_a: str, ns_b: str, name_b: str, mtu: int = 1500) -> None:
    """A veth pair with one end in each namespace, both up, no DAD on either end.

    Created in ns_a (``None``: the host) with the peer made directly in ns_b, so no host
    name is ever taken by the peer end.
    """
    ip(ns_a, "link", "add", name_a, "mtu", str(mtu), "type", "veth", "peer", "name", name_b,
       "mtu", str(mtu), "netns", ns_b)
    for ns, n in ((ns_a, name_a), (ns_b, name_b)):
        sysctl(ns, f"net.ipv6.conf.{n}.accept_dad", "0")
        ip(ns, "link", "set", n, "up")


def addr(ns: str | None, ifname: str, cidr: str) -> None:
    """Add an address without DAD (usable at once)."""
    ip(ns, "addr", "add", cidr, "dev", ifname, "nodad")


def link_info(ns: str, ifname: str) -> dict[str, Any]:
    """``ip -j -d link show dev IFNAME`` (one interface's attributes, details included)."""
    data = json.loads(ip(ns, "-d", "-j", "link", "show", "dev", ifname).stdout)
    return dict(data[0])


def mac(ns: str, ifname: str) -> bytes:
    """An interface's MAC address."""
    return bytes.fromhex(str(link_info(ns, ifname)["address"]).replace(":", ""))


def ifindex(ns: str, ifname: str) -> int:
    """An interface's index (in its namespace)."""
    return int(link_info(ns, ifname)["ifindex"])


def nft(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset into ``ns``."""
    run(["nft", "-f", "-"], ns=ns, input=ruleset)


@contextlib.contextmanager
def in_netns(name: str) -> Any:
    """Switch this thread into a namespace for the block (for opening sockets there)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(fd)
        yield
    finally:
        _setns(own)
        os.close(fd)
        os.close(own)
