"""Keeps the engine links in step with the router at run time, for the daemon.

The runtime pipeline (api/pipeline.py) calls :meth:`LinkService.update` with each new router
interface list and is the one ``on_linkmap`` subscriber: it hands each new LinkMap to the
workers and the kernel mirror.  :meth:`LinkService.start` keeps router MACs fresh.

A failed reconcile (bad mapping for a new interface, netlink refusal) keeps the last good
LinkMap in service, counts the error and remembers its message for ``state()``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.model import Interface, LinkMap
from vlan.config import LinksConfig, PlanError
from vlan.neighbors import NeighborRefresher
from vlan.reconcile import ReconcileError, ReconcileResult, open_ipr, reconcile

log = logging.getLogger(__name__)
LinkMapListener = Callable[[LinkMap], None]


class LinkService:
    """Owns the current LinkMap: reconciles on new router interface lists, refreshes router MACs."""

    def __init__(
        self,
        config: LinksConfig,
        *,
        netns: str | None = None,
        neighbor_interval_s: float = 5.0,
        neighbor_wait_s: float = 1.0,
        on_linkmap: LinkMapListener | None = None,
    ) -> None:
        self.config = config
        self.netns = netns
        # told of every new map, from the thread that made it (a reconcile or the MAC refresher)
        self.on_linkmap = on_linkmap
        self._map = LinkMap([])
        self._lock = threading.Lock()
        self._neighbor_wait_s = neighbor_wait_s
        self._refresher = NeighborRefresher(
            lambda: open_ipr(netns), lambda: self.linkmap, self._merge_macs, interval_s=neighbor_interval_s
        )
        self.reconciles = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_reconcile_at: float | None = None
        self.last_actions: list[str] = []

    @property
    def linkmap(self) -> LinkMap:
        """The LinkMap in service (swapped whole; safe to read from any thread)."""
        return self._map

    def engine_ifname(self, router_ifname: str) -> str | None:
        """Router interface -> engine interface name (the sync kernel mirror's ``IfnameMap``)."""
        link = self._map.for_router_if(router_ifname)
        return None if link is None else link.engine_ifname

    def update(self, router_interfaces: Iterable[Interface]) -> ReconcileResult | None:
        """Reconcile against a new router interface list; None (and last map kept) on error."""
        with self._lock:
            try:
                result = reconcile(
                    self.config, router_interfaces, netns=self.netns, neighbor_wait_s=self._neighbor_wait_s
                )
            except (PlanError, ReconcileError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.error(
                    "engine links not updated (keeping the previous %d): %s", len(self._map.links()), exc
                )
                return None
            self.reconciles += 1
            self.last_error = None
            self.last_reconcile_at = time.time()
            self.last_actions = [a.describe() for a in result.actions]
            self._swap(result.linkmap)
            return result

    def _merge_macs(self, fresh: LinkMap) -> None:
        """Take refreshed router MACs, but only for links still the same (a reconcile may have
        swapped the map while the refresher was reading the neighbor table)."""
        with self._lock:
            current = self._map
            macs = {(lk.router_ifname, lk.engine_ifindex): lk.router_mac for lk in fresh.links()}
            merged = [
                dataclasses.replace(
                    lk, router_mac=macs.get((lk.router_ifname, lk.engine_ifindex), lk.router_mac)
                )
                for lk in current.links()
            ]
            if any(a.router_mac != b.router_mac for a, b in zip(merged, current.links(), strict=True)):
                self._swap(LinkMap(merged))

    def _swap(self, new_map: LinkMap) -> None:
        self._map = new_map
        if self.on_linkmap is not None:
            try:
                self.on_linkmap(new_map)
            except Exception:  # the map is in service whatever the subscriber does with it
                log.exception("link map subscriber %r failed", self.on_linkmap)

    def start(self) -> None:
        """Start keeping router MACs fresh (background thread)."""
        self._refresher.start()

    def stop(self) -> None:
        self._refresher.stop()

    def state(self) -> dict[str, Any]:
        """Counters and the last outcome, for the API's status."""
        return {
            "mode": self.config.mode,
            "links": len(self._map.links()),
            "links_unresolved_mac": sum(
                1 for lk in self._map.links() if lk.oper_up and lk.router_mac is None
            ),
            "reconciles": self.reconciles,
            "errors": self.errors,
            "neighbor_errors": self._refresher.errors,
            "last_error": self.last_error,
            "last_reconcile_at": self.last_reconcile_at,
            "last_actions": self.last_actions,
        }
