"""Egress: whether a copy may leave on a link, and the Ethernet header it leaves with.

One rule, :func:`egress_for`, answers for a router interface from its engine link:

* **no engine link at all** (``None``): the interface is never an egress for copies (the
  router's own engine-facing links, say).  The brancher treats a route that only leaves there
  as ``no_route`` and skips such ECMP members (:meth:`Egress.routable`, its ``egress_ok``).
* **the link is down**: the copy is dropped and counted as ``egress_no_link``;
* **the router's MAC on the link is not learned yet**: dropped, counted as ``egress_no_mac``;
* otherwise the copy leaves: :class:`EgressEntry` (ifindex, Ethernet header, MTU).

Why a down or MAC-less link still gets its copies (counted, then dropped) instead of being
routed around like a missing link: those states are transient (a flap, neighbour discovery in
progress) while the router's route still says this interface, and the engine mirrors the
router's forwarding decision; the loss shows as a named counter and in ``xcast6_links``
(``down`` / ``no_router_mac``) instead of copies silently moving to another ECMP member or
vanishing as ``no_route``.  A missing link is structural: no copy could ever leave there.
These were the semantics of both former checks (the brancher's ``egress_ok`` tested only that
a link exists, the worker's resolver the rest); now both ask this one function.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.model import EngineLink, LinkMap
from engine.wire.layout import ETH_P_IPV6

EGRESS_NO_LINK = "egress_no_link"
EGRESS_NO_MAC = "egress_no_mac"
_ETHERTYPE_IPV6 = ETH_P_IPV6.to_bytes(2, "big")


@dataclass(slots=True)
class EgressEntry:
    """Where a copy leaves: the engine link's ifindex, its Ethernet header, its MTU."""

    ifindex: int
    l2: bytes          # Ethernet header: router MAC, link MAC, 0x86dd
    mtu: int


def egress_for(link: EngineLink | None) -> EgressEntry | str | None:
    """The rule (module docstring): None = never an egress, a str = the drop counter, else the entry."""
    if link is None:
        return None
    if not link.oper_up:
        return EGRESS_NO_LINK
    if link.router_mac is None:
        return EGRESS_NO_MAC
    return EgressEntry(link.engine_ifindex, link.router_mac + link.engine_mac + _ETHERTYPE_IPV6, link.mtu)


class Egress:
    """Router interface -> (engine link ifindex, Ethernet header), cached per link map."""

    def __init__(self, links: LinkMap) -> None:
        self.links = links
        self._cache: dict[str, EgressEntry | str] = {}

    def clear(self, generation: object = None) -> None:
        """Forget the cached answers (called with the worker's other derived caches)."""
        self._cache = {}

    def routable(self, router_ifname: str) -> bool:
        """May the brancher send copies towards this router interface at all (its ``egress_ok``)?"""
        return egress_for(self.links.for_router_if(router_ifname)) is not None

    def resolve(self, router_ifname: str) -> EgressEntry | str:
        """The egress entry, or the name of the counter explaining why there is none."""
        hit = self._cache.get(router_ifname)
        if hit is not None:
            return hit
        res = egress_for(self.links.for_router_if(router_ifname))
        if res is None:     # only reached by a brancher that was not given routable()
            res = EGRESS_NO_LINK
        self._cache[router_ifname] = res
        return res
