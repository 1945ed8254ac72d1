"""The engine links behind :class:`api.state.LinkPort`.

vlan/ owns the real work (plan, reconcile, neighbour learning) and produces a
:class:`vlan.linkmap.LinkMap`; the daemon hands each new map to :meth:`LinkHolder.set`.
Until vlan/ runs, :func:`direct_links_from_config` reads the configured ``direct`` links
from the kernel (ifindex, MAC, MTU, state) read-only, so ``/interfaces`` shows real data.
"""

from __future__ import annotations

import ipaddress

from api.config import LinksSection
from vlan.linkmap import EngineLink, LinkMap


class LinkHolder:
    """Holds the current LinkMap (swapped whole)."""

    def __init__(self, mode: str, linkmap: LinkMap | None = None) -> None:
        self._mode = mode
        self._map = linkmap or LinkMap([])

    def mode(self) -> str:
        return self._mode

    def links(self) -> list[EngineLink]:
        return self._map.links()

    def linkmap(self) -> LinkMap:
        return self._map

    def set(self, linkmap: LinkMap) -> None:
        self._map = linkmap


def _mac(text: str | None) -> bytes | None:
    return None if not text else bytes(int(x, 16) for x in text.split(":"))


def direct_links_from_config(links: LinksSection) -> LinkMap:
    """EngineLinks for ``direct`` mappings whose engine interface exists in this namespace."""
    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        for m in links.map:
            if m.link is None:
                continue
            idx = ipr.link_lookup(ifname=m.link)
            if not idx:
                continue
            link = ipr.get_links(idx[0])[0]
            engine_addr = ipaddress.IPv6Address(m.engine_addr).packed if m.engine_addr else b"\0" * 16
            out.append(
                EngineLink(
                    router_ifname=m.router_if,
                    engine_ifname=m.link,
                    engine_ifindex=idx[0],
                    vlan_id=m.vlan,
                    engine_addr=engine_addr,
                    router_addr=None
                    if m.router_addr is None
                    else ipaddress.IPv6Address(m.router_addr).packed,
                    engine_mac=_mac(link.get("address")) or b"\0" * 6,
                    router_mac=None,
                    mtu=link.get("mtu") or 1500,
                    oper_up=link.get("operstate") in ("UP", "UNKNOWN"),
                )
            )
    return LinkMap(out)
