"""Read the REAL IPv6 routes and interfaces of a network namespace (via ``ip -j``)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class KernelHop:
    """One next hop of a kernel route: gateway (text or None) and device."""

    dev: str
    gateway: str | None = None


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A main-table route as ``ip -6 route`` shows it."""

    dst: str
    kind: str  # unicast | blackhole | unreachable | prohibit
    protocol: str
    metric: int
    hops: tuple[KernelHop, ...] = ()


@dataclass(frozen=True, slots=True)
class KernelLink:
    """An interface: name, ifindex, admin and oper state, its IPv6 addresses."""

    name: str
    index: int
    admin_up: bool
    oper_up: bool
    addresses: tuple[str, ...] = field(default=())
    loopback: bool = False


def _ip_json(netns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-n", netns, "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout or "[]")


def routes(netns: str) -> list[KernelRoute]:
    """All main-table IPv6 routes of ``netns``."""
    found = []
    for r in _ip_json(netns, "-6", "route", "show", "table", "main"):
        dst = str(r["dst"])
        if dst == "default":
            dst = "::/0"
        elif "/" not in dst:
            dst += "/128"
        kind = str(r.get("type", "unicast"))
        if "nexthops" in r:
            hops = tuple(
                KernelHop(dev=str(h["dev"]), gateway=str(h["gateway"]) if "gateway" in h else None)
                for h in r["nexthops"]  # type: ignore[attr-defined]
            )
        elif kind == "unicast":
            hops = (KernelHop(dev=str(r["dev"]), gateway=str(r["gateway"]) if "gateway" in r else None),)
        else:
            hops = ()
        found.append(KernelRoute(dst=dst, kind=kind, protocol=str(r.get("protocol", "boot")),
                                 metric=int(r.get("metric", 0)), hops=hops))  # type: ignore[call-overload]
    return found


def links(netns: str) -> list[KernelLink]:
    """Interfaces of ``netns`` with their IPv6 addresses."""
    found = []
    for link in _ip_json(netns, "-6", "addr", "show"):
        flags = list(link.get("flags", []))  # type: ignore[call-overload]
        addrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))  # type: ignore[attr-defined]
        found.append(KernelLink(
            name=str(link["ifname"]), index=int(link["ifindex"]),  # type: ignore[call-overload]
            admin_up="UP" in flags, oper_up="UP" in flags and "LOWER_UP" in flags,
            addresses=addrs, loopback="LOOPBACK" in flags,
        ))
    known = {link.name for link in found}
    # Links without IPv6 addresses are missing from `ip -6 addr`; list them too.
    for link in _ip_json(netns, "link", "show"):
        if link["ifname"] in known:
            continue
        flags = list(link.get("flags", []))  # type: ignore[call-overload]
        found.append(KernelLink(name=str(link["ifname"]), index=int(link["ifindex"]),  # type: ignore[call-overload]
                                admin_up="UP" in flags, oper_up="UP" in flags and "LOWER_UP" in flags,
                                loopback="LOOPBACK" in flags))
    return sorted(found, key=lambda link: link.index)
