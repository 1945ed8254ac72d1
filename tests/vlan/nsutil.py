"""Small helpers for tests that build network namespaces (host tests and VM tests)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (optionally ``ip -n ns``) and return stdout; raise with stderr on failure."""
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def link_json(ns: str, name: str) -> dict[str, object]:
    out = json.loads(sh("-d", "-j", "link", "show", "dev", name, ns=ns))
    return dict(out[0])


def addrs(ns: str, name: str) -> set[str]:
    out = json.loads(sh("-j", "-6", "addr", "show", "dev", name, "scope", "global", ns=ns))
    return {
        f"{a['local']}/{a['prefixlen']}" for entry in out for a in entry.get("addr_info", []) if "local" in a
    }


def links(ns: str) -> set[str]:
    return {str(e["ifname"]) for e in json.loads(sh("-j", "link", "show", ns=ns))}


@contextmanager
def namespaces(*names: str) -> Iterator[list[str]]:
    """Create uniquely named namespaces (suffix = pid) and always delete them."""
    full = [f"{n}-{os.getpid()}" for n in names]
    for n in full:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "netns", "add", n], check=True)
        sh("link", "set", "lo", "up", ns=n)
    try:
        yield full
    finally:
        for n in full:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
