"""Router MAC per engine link, learned from (and kept fresh in) the kernel's IPv6 neighbor table.

The worker frames copies itself (AF_PACKET), so it needs the router's MAC on each link.  The
kernel's ND machinery does the protocol work: when an entry is missing we ask it to resolve the
router address with an ``NTF_USE`` neighbor request (the kernel then sends a Neighbor
Solicitation, exactly as if a packet were queued), and we read the answer from the table.
Frames sent through AF_PACKET bypass the neighbor state machine, so a STALE entry would never
be re-verified on its own; :func:`refresh_linkmap` re-solicits STALE and missing entries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from engine.model import LinkMap

NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_VALID = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT
NTF_USE = 0x01


@dataclass(frozen=True, slots=True)
class NeighborTarget:
    """Resolve ``router_addr`` on engine interface ``ifindex`` (standing for ``router_ifname``)."""

    router_ifname: str
    ifindex: int
    router_addr: IPv6Address


@dataclass(frozen=True, slots=True)
class NeighborEntry:
    mac: bytes | None
    state: int

    @property
    def usable(self) -> bool:
        return self.mac is not None and bool(self.state & NUD_VALID)


def read_neighbors(ipr: Any) -> dict[tuple[int, IPv6Address], NeighborEntry]:
    """The IPv6 neighbor table: (ifindex, address) -> MAC and NUD state."""
    table: dict[tuple[int, IPv6Address], NeighborEntry] = {}
    for msg in ipr.get_neighbours(family=socket.AF_INET6):
        dst = msg.get_attr("NDA_DST")
        if not dst:
            continue
        lladdr = msg.get_attr("NDA_LLADDR")
        mac = bytes(int(x, 16) for x in lladdr.split(":")) if lladdr else None
        table[(msg["ifindex"], IPv6Address(dst))] = NeighborEntry(mac, msg["state"])
    return table


def solicit(ipr: Any, ifindex: int, addr: IPv6Address) -> None:
    """Ask the kernel to (re)resolve ``addr`` on ``ifindex``: it sends a Neighbor Solicitation."""
    ipr.neigh("replace", dst=str(addr), ifindex=ifindex, family=socket.AF_INET6, flags=NTF_USE)


_RESOLICIT_S = 1.0


def learn_router_macs(
    ipr: Any, targets: Iterable[NeighborTarget], *, wait_s: float = 0.0, poll_s: float = 0.05
) -> dict[str, bytes]:
    """Router MAC by router ifname; solicits unresolved or stale entries, waits up to ``wait_s``."""
    targets = list(targets)
    macs: dict[str, bytes] = {}
    solicited_at: dict[str, float] = {}
    deadline = time.monotonic() + wait_s
    while True:
        table = read_neighbors(ipr)
        now = time.monotonic()
        for target in targets:
            entry = table.get((target.ifindex, target.router_addr))
            resolved = False
            if entry is not None and entry.usable and entry.mac is not None:
                resolved = True
                macs[target.router_ifname] = entry.mac
                if not entry.state & NUD_STALE:
                    continue
            last = solicited_at.get(target.router_ifname)
            # Once per call for a stale entry; an unresolved one is asked again every second while we
            # wait (a solicitation sent while the link or its link-local address was still coming up
            # ends FAILED and the kernel does not retry by itself).
            if last is None or (not resolved and now - last >= _RESOLICIT_S):
                solicited_at[target.router_ifname] = now
                # A link that went down meanwhile stays unresolved; the caller sees it missing.
                with contextlib.suppress(Exception):
                    solicit(ipr, target.ifindex, target.router_addr)
        missing = [t for t in targets if t.router_ifname not in macs]
        if not missing or time.monotonic() >= deadline:
            return macs
        time.sleep(poll_s)


def refresh_linkmap(ipr: Any, linkmap: LinkMap, *, wait_s: float = 0.0) -> LinkMap:
    """A LinkMap with router MACs re-read from the neighbor table (re-soliciting stale/missing)."""
    targets = [
        NeighborTarget(lk.router_ifname, lk.engine_ifindex, IPv6Address(lk.router_addr))
        for lk in linkmap.links()
        if lk.router_addr is not None and lk.engine_ifindex > 0 and lk.oper_up
    ]
    macs = learn_router_macs(ipr, targets, wait_s=wait_s)
    return LinkMap(
        [
            dataclasses.replace(
                lk, router_mac=macs.get(lk.router_ifname, lk.router_mac if lk.oper_up else None)
            )
            for lk in linkmap.links()
        ]
    )


class NeighborRefresher:
    """Background thread keeping router MACs fresh; calls ``on_change(new_map)`` when one changes."""

    def __init__(
        self,
        open_ipr: Callable[[], Any],
        get_map: Callable[[], LinkMap],
        on_change: Callable[[LinkMap], None],
        interval_s: float = 5.0,
    ) -> None:
        self._open_ipr = open_ipr
        self._get_map = get_map
        self._on_change = on_change
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xcast6-neighbors", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 2)

    def _run(self) -> None:
        with self._open_ipr() as ipr:
            while not self._stop.is_set():
                try:
                    current = self._get_map()
                    fresh = refresh_linkmap(ipr, current)
                    before = {lk.router_ifname: lk.router_mac for lk in current.links()}
                    if any(before.get(lk.router_ifname) != lk.router_mac for lk in fresh.links()):
                        self._on_change(fresh)
                except Exception:  # keep the last good map; the counter tells the operator
                    self.errors += 1
                self._stop.wait(self._interval_s)
