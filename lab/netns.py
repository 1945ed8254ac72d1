"""Small helpers around ``ip netns`` / ``ip link`` / ``nft`` (the lab's only I/O with iproute2).

Commands raise :class:`LabError` with the failing command and its stderr, so a broken step
names itself instead of surfacing three steps later.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
from collections.abc import Sequence
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
    return run(["ip", *args], ns=ns, check=check)


def namespaces() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [n["name"] for n in json.loads(out)]


def add_ns(name: str) -> None:
    """Create a namespace with lo up and IPv6 DAD off (addresses usable at once)."""
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")
    sysctl(name, "net.ipv6.conf.all.accept_dad", "0")
    sysctl(name, "net.ipv6.conf.default.accept_dad", "0")
    sysctl(name, "net.ipv6.conf.default.accept_ra", "0")
    sysctl(name, "net.ipv6.conf.all.accept_ra", "0")


def del_ns(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def sysctl(ns: str, key: str, value: str) -> None:
    run(["sysctl", "-qw", f"{key}={value}"], ns=ns)


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mtu: int = 1500) -> None:
    """A veth pair with one end in each namespace, both up (created in ns_a to avoid host names)."""
    ip(ns_a, "link", "add", name_a, "mtu", str(mtu), "type", "veth", "peer", "name", name_b,
       "mtu", str(mtu), "netns", ns_b)
    for ns, n in ((ns_a, name_a), (ns_b, name_b)):
        sysctl(ns, f"net.ipv6.conf.{n}.accept_dad", "0")
        ip(ns, "link", "set", n, "up")


def link_info(ns: str, ifname: str) -> dict[str, Any]:
    data = json.loads(ip(ns, "-j", "link", "show", "dev", ifname).stdout)
    return dict(data[0])


def mac(ns: str, ifname: str) -> bytes:
    return bytes.fromhex(str(link_info(ns, ifname)["address"]).replace(":", ""))


def ifindex(ns: str, ifname: str) -> int:
    return int(link_info(ns, ifname)["ifindex"])


def nft(ns: str, ruleset: str) -> None:
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
