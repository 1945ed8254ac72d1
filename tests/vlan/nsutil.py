"""Read-back helpers for tests that check what landed in a namespace (host tests and VM tests).

The namespaces themselves come from :func:`lab.netns.temporary`, the one way tests, the lab
and bench build them.
"""

from __future__ import annotations

import json

from lab import netns


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (in namespace ``ns`` if given) and return stdout; raise with stderr on failure."""
    return netns.ip(ns, *args, check=check).stdout


def addrs(ns: str, name: str) -> set[str]:
    """An interface's global IPv6 addresses as ``addr/len``."""
    out = json.loads(sh("-j", "-6", "addr", "show", "dev", name, "scope", "global", ns=ns))
    return {
        f"{a['local']}/{a['prefixlen']}" for entry in out for a in entry.get("addr_info", []) if "local" in a
    }


def links(ns: str) -> set[str]:
    """The names of every interface in a namespace."""
    return {str(e["ifname"]) for e in json.loads(sh("-j", "link", "show", ns=ns))}
