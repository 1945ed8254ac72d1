"""The engine's runtime pipeline, in one place.

Routes::

    route source --fetch--> SyncService --diff, safety valve--> apply: kernel mirror, then Fib
                                                                  |
                                                                  +--> workers (the diff, over pipes)

Links::

    router interface list (from sync) --> LinkService (reconcile) --> LinkMap --+--> workers
                                                                                +--> kernel mirror
                                                                                +--> API (LinkView)

The kernel mirror follows the links through SyncService's one link watch (told of each new map
here, and looking at the kernel's links itself for links that go down or come back).

Start-up order: the last good table from the store (the Fib serves at once; without a stored
table the first fetch gets up to 10 s) -> engine links -> packet workers (forked from the loaded
table).  Stop: sync, workers, links.
"""

from __future__ import annotations

import asyncio
import logging

from api.config import Config
from api.linkview import LinkView
from engine.dataplane.supervisor import WorkerSupervisor
from engine.dataplane.worker import WorkerPool
from engine.forwarding.fib import Fib
from engine.model import Interface, InterfaceDiff, LinkMap, Snapshot, SnapshotDiff
from sync.apply import ApplyResult
from sync.service import SyncService, build_service
from sync.source import RouteSource
from vlan.service import LinkService

log = logging.getLogger("xcast6.daemon")


class Pipeline:
    """Source -> sync -> apply -> workers, and links -> (workers, mirror), for one configuration.

    Build, ``await start()``, ``await stop()``; the parts (``fib``, ``sync``, ``links``,
    ``workers``) are what the API reads.  It is the SyncService's subscriber.
    """

    def __init__(self, cfg: Config, source: RouteSource) -> None:
        self.cfg = cfg
        self.fib = Fib()
        self.sync: SyncService = build_service(
            source,
            self.fib,
            cfg.engine.state_dir,
            kernel_table=cfg.sync.kernel_table,
            kernel_protocol=cfg.sync.kernel_proto,
            config=cfg.sync,
        )
        self.links = LinkView(cfg.links.mode)
        self.link_service = LinkService(cfg.links, on_linkmap=self._linkmap_changed)
        self.workers = WorkerSupervisor(None)      # the real pool once the table is loaded
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Table (store, then a first fetch), engine links, workers -- in that order."""
        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        self.sync.subscriber = self
        # 1. the stored table serves at once; the sync loops start with it
        await self.sync.start(initial_sync=True)
        await self.sync.wait_first_fetch(min(cfg.sync.timeout, 10.0))
        # 2. engine links for the router's interfaces as known now (later lists: interfaces_changed)
        interfaces = self.sync.router_interfaces()
        if interfaces:
            await asyncio.to_thread(self.link_service.update, interfaces)
        self.link_service.start()
        log.info("engine links (%s mode): %d", cfg.links.mode, len(self.links.links()))
        # 3. workers, forked from the loaded table
        pool = self._worker_pool()
        if pool is not None:
            # set before the fork: a diff applied meanwhile queues behind it in the supervisor
            self.workers = WorkerSupervisor(pool, backoff=cfg.workers.restart_backoff)
            await self.workers.start()

    async def stop(self) -> None:
        """Sync first (no new diffs), then the workers, then the link service."""
        await self.sync.stop()
        await self.workers.stop()
        await asyncio.to_thread(self.link_service.stop)

    def reconfigure(self, source: RouteSource, cfg: Config) -> None:
        """New route-source settings (SIGHUP); the serving table and everything else stay."""
        self.sync.reconfigure(source, cfg.sync)

    def _worker_pool(self) -> WorkerPool | None:
        w, links = self.cfg.workers, self.cfg.links
        if not w.count:
            return None
        direct = [m.link for m in links.entries if m.link]
        ingress = list(w.ingress) or ([links.trunk] if links.mode == "vlan" and links.trunk else direct)
        if w.busy_poll_us and not w.cpus:
            log.warning("workers.busy_poll_us = %d without workers.cpus: polling workers spin on CPUs "
                        "the scheduler shares with sync, the API and other processes; pin them",
                        w.busy_poll_us)
        return WorkerPool(
            fib=self.fib,
            links=self.links.linkmap(),
            ingress=ingress,
            workers=w.count,
            counters_path=w.counters_file,
            cpus=w.cpus,
            busy_poll_us=w.busy_poll_us,
            rx_buffer=w.rx_buffer_kb * 1024,
            flow_cache_bytes=w.flow_cache_mb << 20,
            plan_cache_bytes=w.plan_cache_mb << 20,
            icmp_rate=w.icmp_rate,
            icmp_burst=w.icmp_burst,
            dataplane=self.cfg.dataplane.mode,
            pin_dir=self.cfg.dataplane.pin_dir,
        )

    # -- routes: SyncService's subscriber (on the event loop) ---------------------------------
    def table_applied(self, snap: Snapshot, d: SnapshotDiff, res: ApplyResult | None) -> None:
        """The Fib and the mirror serve the new table: the workers get the diff."""
        self.workers.feed(d)

    def interfaces_changed(self, interfaces: list[Interface], d: InterfaceDiff) -> None:
        """New router interface list: reconcile the engine links (blocking netlink: off the loop)."""
        assert self._loop is not None
        self._loop.run_in_executor(None, self._reconcile, interfaces)

    def _reconcile(self, interfaces: list[Interface]) -> None:
        try:
            self.link_service.update(interfaces)
        except Exception:
            log.exception("engine links not reconciled")

    # -- links: LinkService's subscriber (on its threads) -------------------------------------
    def _linkmap_changed(self, linkmap: LinkMap) -> None:
        """A new LinkMap: to the API and the workers now, to the kernel mirror via sync's link watch."""
        self.links.set(linkmap)
        self.workers.set_links(linkmap)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.sync.links_updated, self.link_service.engine_ifname)
