"""The map the rest of the engine uses: router interface -> engine link.

Produced by vlan/ (from the operator's plan, the router's interface list and the kernel),
read by the worker (where to send a copy, which MACs to put in the frame, which source
address to write) and by the API (``GET /interfaces``).  Same shape in ``vlan`` mode
(802.1Q subinterfaces on a trunk) and ``direct`` mode (pre-existing links, e.g. veths).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineLink:
    """One engine link standing for one router interface."""

    router_ifname: str          # the router's interface name as sync reports it (e.g. ge-0/0/1.0)
    engine_ifname: str          # the engine's kernel interface (e.g. xc-trunk.101, or a veth)
    engine_ifindex: int
    vlan_id: int | None         # None in direct mode
    engine_addr: bytes          # 16 bytes: outer source of copies sent on this link
    router_addr: bytes | None   # 16 bytes: the router's address on this VLAN
    engine_mac: bytes           # 6 bytes: frame source
    router_mac: bytes | None    # 6 bytes: frame destination (None until learned)
    mtu: int = 1500
    oper_up: bool = True


class LinkMap:
    """Immutable lookup by router interface name; swapped whole when vlan/ reconciles."""

    __slots__ = ("_by_router_if",)

    def __init__(self, links: list[EngineLink]) -> None:
        self._by_router_if = {link.router_ifname: link for link in links}

    def for_router_if(self, router_ifname: str) -> EngineLink | None:
        return self._by_router_if.get(router_ifname)

    def source_for(self, router_ifname: str) -> bytes | None:
        """Engine address to write as outer source for copies leaving via this router interface."""
        link = self._by_router_if.get(router_ifname)
        return None if link is None else link.engine_addr

    def links(self) -> list[EngineLink]:
        return list(self._by_router_if.values())
