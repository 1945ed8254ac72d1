"""The packet path: worker processes that receive diverted packets, branch them, send copies.

Design (why it looks like this):

* **Fork after load, diffs after that.**  The supervisor (:class:`WorkerPool`) builds the
  forwarding table once, then forks the workers, so a 250k-route table is shared copy-on-write
  instead of being pickled to every worker.  Later sync changes travel as *diffs* (routes added,
  prefixes removed) over one pipe per worker; each worker applies them to its own :class:`Fib`
  between batches, which is a generation swap inside the Fib, so traffic never stops and
  no packet sees half an update.  The link map (small) is sent whole when vlan/ changes it.
* **Kernel does the sorting.**  Ingress sockets carry the hand-written BPF filter
  (engine/dataplane/bpf.py) and join a ``PACKET_FANOUT_HASH`` group per link, so each flow sticks to one
  worker and non-XCAST traffic never reaches Python.
* **Batching.**  A worker reads up to ``batch`` frames with ONE ``recvmmsg`` (engine/dataplane/rxbatch.py,
  preallocated arena), branches each, queues every copy into the preallocated ``sendmmsg``
  ring (``afpacket.TxRing``: one ``put()`` per packet, the only code that knows its layout)
  and writes them every ``flush_copies`` queued copies and at the end of the batch: a
  busy worker makes a few system calls per batch instead of one per frame, and the first
  packets of a batch do not wait for the last.  A quiet worker never waits to fill a batch
  (epoll wakes it on the first frame; what is there is processed and written at once).
* **Destination cache.**  Route lookups are cached per destination by the Fib (keyed by its
  generation); the egress side caches router-interface -> (ifindex, Ethernet header), decided
  by the one egress rule (engine/dataplane/egress.py).
* **Flow cache.**  After a session's first packet has been branched, its later packets (same
  header bytes, other payload) are rendered from a flow template (engine/forwarding/flowcache.py): one
  dict hit and a few buffer copies instead of parsing and branching again.  Emptied with the
  egress cache whenever the table generation or the link map changes (one rule:
  engine/forwarding/generation.py).
* **No collector pauses.**  A worker moves everything it inherited (the table: ~800k objects
  for 250k routes) and every table update it applies into the collector's permanent
  generation (``gc.freeze``): a full collection over the table took ~100 ms, a stall that
  overflows the socket queue at line rate.  Routes hold no reference cycles, so nothing
  that should be collected is kept.
* **Counters.**  Each worker owns one slot in the shared counter file (engine/dataplane/counters.py);
  per-packet counts are summed in plain ints and published once per write; latency is
  measured from the kernel's arrival time of a frame (``SO_TIMESTAMPNS``: the time it queued
  for the worker counts) to the moment the ``sendmmsg`` carrying its copies returned (one
  histogram update per write, from its oldest frame, weighted by its packets).
* **ICMPv6 errors.**  A packet whose hop limit runs out, a copy that does not fit its link's MTU,
  or a packet none of whose destinations is routable gets one error (rules, quote and rate
  limit: engine/forwarding/icmp_errors.py), sent like a copy: framed to the router on the link
  the packet arrived on (its socket's engine link; when the ingress is not an engine link, e.g.
  the trunk, the link the route to the error's destination leaves on), from the engine's
  address on that link.  Only the slow path can produce one: a flow template never covers a
  packet that was dropped or had a copy over the MTU.  The token bucket is per worker, with the
  engine's rate split between the workers (``WorkerPool``).
* **Relayed ICMPv6 errors.**  A router between two branch points answers the copy's outer
  source, us.  The ingress filter also passes Destination Unreachable, Packet Too Big and Time
  Exceeded quoting an IPv6-in-IPv6 packet (engine/dataplane/bpf.py; the TC program passes them,
  their traffic class not being XCAST's), and :meth:`Worker.relay_error` passes them on to the
  original sender with the router named in an RFC 5837 object (engine/forwarding/icmp_errors.py),
  out of the link towards the sender, under the same token bucket.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.dataplane import afpacket
from engine.dataplane.counters import CounterFile, Slot
from engine.dataplane.egress import Egress as Egress
from engine.dataplane.egress import EgressEntry as EgressEntry
from engine.dataplane.rxbatch import BatchReceiver
from engine.forwarding.branch import PLAN_CACHE_BYTES, Brancher, BranchResult
from engine.forwarding.fib import Fib
from engine.forwarding.flowcache import MAX_BYTES as FLOW_CACHE_BYTES
from engine.forwarding.flowcache import FlowCache, flow_key, learn, write_frames
from engine.forwarding.generation import DerivedCaches
from engine.forwarding.icmp_errors import (
    NOT_ELIGIBLE,
    RELAY_REFUSED,
    TokenBucket,
    plan_error,
    plan_relay,
    relay_suppressed_counter,
    relayed_counter,
    sent_counter,
    suppressed_counter,
)
from engine.model import EngineLink, LinkMap, Route, SnapshotDiff
from engine.wire.icmp6 import parse_icmp6
from engine.wire.layout import IP6_NH_OFF, NH_ICMPV6
from engine.wire.reasons import NOT_XCAST, DropReason

log = logging.getLogger(__name__)

ETH_HLEN = afpacket.ETH_HLEN
# Drops that may call for an ICMPv6 error (engine/forwarding/icmp_errors.py decides).
_ERROR_DROPS = frozenset({DropReason.HOP_LIMIT_EXCEEDED, DropReason.NO_ROUTE})
# Engine-wide ICMPv6 error rate limit defaults (config workers.icmp_rate / icmp_burst).
ICMP_RATE = 100.0
ICMP_BURST = 50


BranchFn = Callable[[bytes], BranchResult]
Conn = multiprocessing.connection.Connection
# (fib, links) -> branch function; rebuilt when the link map changes (outer source addresses).
BrancherFactory = Callable[[Fib, LinkMap], BranchFn]


def default_brancher_factory(fib: Fib, links: LinkMap) -> BranchFn:
    """The engine core's RFC 5058 branching (engine/forwarding/branch.py).

    Next hops on router interfaces that no engine link stands for are not forwarding paths for
    copies (the router's own engine-facing interfaces): such destinations count as no_route.
    The one egress rule (engine/dataplane/egress.py) decides that and the per-copy verdict.
    """
    return Brancher(fib, links.source_for, egress_ok=Egress(links).routable).branch


def reason_name(reason: object) -> str:
    """Counter name of a drop reason (enum value, enum name, or the string itself)."""
    value = getattr(reason, "value", None)
    if isinstance(value, str):
        return value
    name = getattr(reason, "name", None)
    return str(name.lower() if isinstance(name, str) else reason)


@dataclass(slots=True)
class WorkerSpec:
    """What one worker process needs besides the table (which it inherits by fork)."""

    index: int
    ingress: list[str]
    counters_path: Path
    batch: int = 64
    fanout: bool = True
    # write copies once this many are queued (mid-batch): bounds the wait of a batch's first packets
    flush_copies: int = 8
    cpu: int | None = None     # pin the worker to this CPU (config workers.cpus)
    busy_poll_us: int = 0      # keep polling this long after the last frame before sleeping in epoll
    rx_buffer: int = afpacket.DEFAULT_RX_BUFFER   # ingress queue, bytes (config workers.rx_buffer_kb)
    flow_cache_bytes: int = FLOW_CACHE_BYTES      # flow templates' budget (config workers.flow_cache_mb)
    plan_cache_bytes: int = PLAN_CACHE_BYTES      # branch plans' budget (config workers.plan_cache_mb)
    icmp_rate: float = ICMP_RATE    # this worker's share of workers.icmp_rate (errors/s; 0 = none)
    icmp_burst: int = ICMP_BURST    # this worker's share of workers.icmp_burst


def apply_diff(fib: Fib, adds: Iterable[Route], removes: Iterable[ipaddress.IPv6Network]) -> None:
    """Apply a sync diff to a Fib as ONE new generation (readers see before or after, not a mix)."""
    fib.update(add=adds, remove=removes)


class Worker:
    """One worker's loop (runs in its own process; also usable in-process for tests)."""

    def __init__(self, spec: WorkerSpec, fib: Fib, links: LinkMap, factory: BrancherFactory,
                 control: multiprocessing.connection.Connection | None = None) -> None:
        self.spec = spec
        self.fib = fib
        self.factory = factory
        self.control = control
        self.counters = CounterFile.open(spec.counters_path, writable=True)
        self.slot: Slot = self.counters.slot(spec.index)
        self.ix = self.slot.index_of
        self.sender = afpacket.BatchSender(capacity=max(256, spec.batch * 4))
        self._tx_arena, self._tx_put = self.sender.arena, self.sender.put    # bound once: per-packet use
        self.rx_batch = BatchReceiver(capacity=max(1, spec.batch), timestamps=True)
        # branched, x2u_out, copies_out, bytes_out, flow_cache_hits: summed per packet, written per batch
        self._tally = [0, 0, 0, 0, 0]
        ix = self.ix
        self._i_branched, self._i_x2u_out = ix["branched"], ix["x2u_out"]
        self._i_flow_hits = ix["flow_cache_hits"]
        self._i_plan_evictions = ix["plan_cache_evictions"]
        self.flows = FlowCache(max_bytes=spec.flow_cache_bytes)
        self._i_copies_out, self._i_bytes_out = ix["copies_out"], ix["bytes_out"]
        self._i_syscalls_rx, self._i_syscalls_tx = ix["syscalls_rx"], ix["syscalls_tx"]
        self._i_received, self._i_received_bytes = ix["received"], ix["received_bytes"]
        self.flush_copies = spec.flush_copies
        self._tx_seen = 0
        self.rx: list[socket.socket] = []
        self.rx_ifname: dict[int, str] = {}      # ingress socket fd -> its interface
        for ifname in spec.ingress:
            group = afpacket.fanout_group_for(afpacket.ifindex_of(ifname)) if spec.fanout else None
            sock = afpacket.open_ingress(ifname, group, spec.rx_buffer)
            self.rx.append(sock)
            self.rx_ifname[sock.fileno()] = ifname
        self.icmp_bucket = TokenBucket(spec.icmp_rate, spec.icmp_burst, time.monotonic())
        self.arrival: EngineLink | None = None   # the engine link of the frames being processed
        self.set_links(links)
        self.stopping = False
        # The daemon that forked us: when it dies (kill -9 included) we must stop too.  The
        # control pipe does not tell -- every forked process holds copies of both its ends --
        # and a worker that outlives its daemon forwards from a frozen table and, once the
        # engine is restarted, shares the links' packets with the new workers (issue 16).
        self.parent_pid = os.getppid()

    def set_links(self, links: LinkMap) -> None:
        self.links = links
        self.egress = Egress(links)
        by_engine_if = {link.engine_ifname: link for link in links.links()}
        # the addresses routers' errors about our copies are sent to (copies' outer sources)
        self.own_addrs = frozenset(link.engine_addr for link in links.links())
        self.arrival_links: dict[int, EngineLink | None] = {
            fd: by_engine_if.get(ifname) for fd, ifname in self.rx_ifname.items()}
        self.branch = self.factory(self.fib, links)    # a new brancher: its own caches start empty
        # The engine's Brancher (not a test's stand-in): its plans get the configured byte budget
        # and their evictions are published with the batch's counters.
        b = getattr(self.branch, "__self__", None)
        self.brancher = b if isinstance(b, Brancher) else None
        if self.brancher is not None:
            self.brancher.plan_cache_bytes = self.spec.plan_cache_bytes
        # Everything derived from (table, link map) on this side is emptied together
        # (engine/forwarding/generation.py): on a table generation change, checked per packet,
        # and now, for the new link map.
        self.derived = DerivedCaches(self.flows, self.egress)
        self.derived.renew(self.fib.generation)

    def handle_control(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "diff":
            apply_diff(self.fib, msg[1], msg[2])
            self.slot.add("table_updates")
            self.derived.renew(self.fib.generation)
            gc.freeze()      # the new routes are long-lived: keep them out of collections
        elif kind == "links":
            self.set_links(LinkMap(msg[1]))
        elif kind == "stop":
            self.stopping = True
        if self.control is not None and kind in ("diff", "links"):
            self.control.send(("ack", kind, self.fib.generation))

    def process(self, packet: bytes) -> None:
        """Branch one IPv6 packet (Ethernet header already stripped) and queue its copies."""
        if packet[IP6_NH_OFF] == NH_ICMPV6:     # only a router's error about a copy passes the filter
            self.relay_error(packet)
            return
        slot = self.slot
        derived = self.derived
        if derived.generation != self.fib.generation:     # the table changed: relearn
            derived.renew(self.fib.generation)
        # Flow cache (engine/forwarding/flowcache.py): key = every header byte the branching reads.
        key = flow_key(packet)
        if key is not None:
            tpl = self.flows.flows.get(key)
            if tpl is not None and write_frames(tpl, packet, self._tx_arena, self._tx_put):
                if tpl.drops:
                    for name, n in tpl.drops:
                        slot.add(name, n)
                t = self._tally
                t[1] += tpl.x2u
                t[2] += tpl.multi
                t[3] += tpl.nbytes
                t[4] += 1      # a flow cache hit; branched = t[0] + t[4] (published by flush_tally)
                return
        try:
            result = self.branch(packet)
        except Exception:   # a codec/branch bug must cost one packet, never the worker
            slot.drop("other")
            return
        drops = result.drops
        drop_names: list[tuple[str, int]] = []
        if drops:
            for reason, n in drops.items():
                if reason in NOT_XCAST:
                    slot.add("not_xcast", n)
                    key = None
                else:
                    name = "drop." + reason_name(reason)
                    slot.add(name, n)
                    drop_names.append((name, n))
        copies = result.copies
        if not copies:
            if drops and not _ERROR_DROPS.isdisjoint(drops):
                self.icmp_error(result, None)
            return
        if key is not None:
            tpl = learn(packet, result, self.egress.resolve, self.sender.slot_size, drop_names,
                        self.sender.prepare)
            if tpl is not None:
                evicted = self.flows.put(key, tpl)
                if evicted:
                    slot.add("flow_cache_evictions", evicted)
        # Hot loop: resolve each copy's link, then ONE put() for the packet's frames (a call per
        # copy was ~1/3 of the per-copy cost), which copies each Ethernet header and packet into
        # the ring.  Counts are summed in plain ints, published once per batch.
        cache = self.egress._cache
        resolve = self.egress.resolve
        size = self.sender.slot_size
        frames: list[tuple[int, bytes, bytes]] = []      # (ifindex, Ethernet header, packet)
        x2u = multi = nbytes = 0
        too_big: int | None = None      # the smallest MTU a copy did not fit (Packet Too Big)
        for c in copies:
            name = c.nexthop.ifname
            e = cache.get(name) or resolve(name)
            if isinstance(e, str):
                slot.add(e)
                continue
            data = c.data
            n = len(data)
            if n > e.mtu or n + ETH_HLEN > size:
                slot.add("egress_mtu")
                mtu = min(e.mtu, size - ETH_HLEN)       # the ring's slot is a limit of ours too
                too_big = mtu if too_big is None else min(too_big, mtu)
                continue
            frames.append((e.ifindex, e.l2, data))
            if c.x2u:
                x2u += 1
            else:
                multi += 1
            nbytes += n + ETH_HLEN
        if frames:
            self._tx_put(frames)
        if too_big is not None:
            self.icmp_error(result, too_big)
        t = self._tally
        t[0] += 1
        t[1] += x2u
        t[2] += multi
        t[3] += nbytes

    def icmp_error(self, result: BranchResult, too_big_mtu: int | None) -> None:
        """Send the ICMPv6 error ``result`` calls for, if any (rules: engine/forwarding/icmp_errors.py).

        Out of the link the packet arrived on, to the router, from the engine's address there;
        counted per type as sent or suppressed by the rate limit, or as not eligible.
        """
        plan = plan_error(result, too_big_mtu)
        if plan is None:
            return
        slot = self.slot
        if plan.refused is not None:
            slot.add(NOT_ELIGIBLE)
            return
        if not self.icmp_bucket.allow(time.monotonic()):
            slot.add(suppressed_counter(plan.kind))
            return
        link = self.arrival
        if link is None:
            # Not an engine link (the trunk, say): the link the route to the sender leaves on.
            link = self.link_towards(plan.dst)
            if link is None:
                slot.add("egress_no_link")
                return
        self._send_error(link, plan.build, sent_counter(plan.kind))

    def relay_error(self, packet: bytes) -> None:
        """Pass a router's ICMPv6 error about one of our copies on to the original sender
        (rules: engine/forwarding/icmp_errors.py, "Relaying"), out of the link the route to the
        sender leaves on, from the engine's address there; the same token bucket as our own."""
        slot = self.slot
        msg = parse_icmp6(packet)
        plan = plan_relay(msg, self.own_addrs) if msg is not None else None
        if plan is None or plan.refused is not None:
            slot.add(RELAY_REFUSED)
            return
        if not self.icmp_bucket.allow(time.monotonic()):
            slot.add(relay_suppressed_counter(plan.kind))
            return
        link = self.link_towards(plan.dst)
        if link is None:
            slot.add("egress_no_link")
            return
        self._send_error(link, plan.build, relayed_counter(plan.kind))

    def _send_error(self, link: EngineLink, build: Callable[[bytes], bytes], counter: str) -> None:
        """Queue an ICMPv6 error built from ``link``'s engine address toward the router on
        ``link``, counting ``counter`` (or why the egress could not be resolved)."""
        e = self.egress.resolve(link.router_ifname)
        if isinstance(e, str):
            self.slot.add(e)
            return
        self._tx_put([(e.ifindex, e.l2, build(link.engine_addr))])
        self.slot.add(counter)

    def link_towards(self, dst: bytes) -> EngineLink | None:
        """The engine link the route to ``dst`` leaves on (None: no route, or not via an engine link)."""
        hit = self.fib.lookup(dst)
        return self.links.for_router_if(hit[1].ifname) if hit is not None else None

    def drain(self, sock: socket.socket) -> int:
        """Read up to ``batch`` frames from one socket with ONE recvmmsg, branch and send them.

        Returns how many frames were read.  Copies are written every ``flush_copies`` queued
        copies (4x that when the batch came back full) and at the end, so the first packets of
        a batch do not wait for the last ones (latency), while a busy worker still writes many
        frames per ``sendmmsg``.  Every frame of the batch counts as received when the call
        returned.  Latency: for each group of frames written by one ``sendmmsg``, from the
        kernel's arrival time of the group's oldest frame (time queued in the socket included)
        to the moment that ``sendmmsg`` returned, one sample per frame of the group.
        """
        rx = self.rx_batch
        w = self.slot.words
        try:
            n = rx.receive(sock.fileno(), self.spec.batch)
        except OSError:    # e.g. ENETDOWN while a link flaps: counted, the worker keeps serving
            w[self._i_syscalls_rx] += 1
            self.slot.drop("other")
            return 0
        w[self._i_syscalls_rx] += 1
        if not n:
            return 0
        t0 = time.perf_counter_ns()
        self.arrival = self.arrival_links.get(sock.fileno())
        process = self.process
        sender = self.sender
        # A full batch means a queue is building: latency is the queue's then, so write 4x bigger
        # batches (fewer sendmmsg calls per packet, more capacity to drain the queue).
        flush_at = self.flush_copies if n < self.spec.batch else 4 * self.flush_copies
        latency = self.slot.latency
        age = self._age
        hlen = afpacket.ETH_HLEN
        nbytes = 0
        done = 0        # frames processed
        first = 0       # the oldest frame whose copies are not written yet
        for packet in rx.frames(n, hlen):
            nbytes += len(packet)
            process(packet)
            done += 1
            if sender.count >= flush_at:
                self.flush()
                latency(age(first, t0), done - first)
                first = done
        self.flush()
        if done > first:
            latency(age(first, t0), done - first)
        w[self._i_received] += n
        w[self._i_received_bytes] += nbytes + n * hlen
        return n

    def _age(self, i: int, t0: int) -> int:
        """ns since frame ``i`` of the batch reached the link (since ``recvmmsg`` returned, ``t0``,
        when the kernel gave no arrival time)."""
        stamp = self.rx_batch.stamp_ns(i)
        if stamp:
            return max(0, time.time_ns() - stamp)
        return time.perf_counter_ns() - t0

    def flush(self) -> None:
        """Write the queued copies and publish the per-batch counter sums."""
        sender = self.sender
        w = self.slot.words
        if sender.count:
            sender.flush()
        if sender.syscalls != self._tx_seen:     # also the calls made when the arena was full
            w[self._i_syscalls_tx] += sender.syscalls - self._tx_seen
            self._tx_seen = sender.syscalls
        if sender.failed_total:     # includes batches add() had to flush early
            self.slot.add("egress_errors", sender.failed_total)
            sender.failed_total = 0
        self.flush_tally()

    def flush_tally(self) -> None:
        """Publish the branched/copies/bytes sums (and the brancher's plan evictions) of the packets
        processed since the last call."""
        w = self.slot.words
        t = self._tally
        if t[0] or t[4]:
            w[self._i_branched] += t[0] + t[4]
            w[self._i_x2u_out] += t[1]
            w[self._i_copies_out] += t[2]
            w[self._i_bytes_out] += t[3]
            w[self._i_flow_hits] += t[4]
            t[0] = t[1] = t[2] = t[3] = t[4] = 0
        b = self.brancher
        if b is not None and b.plan_evictions:
            w[self._i_plan_evictions] += b.plan_evictions
            b.plan_evictions = 0

    def run(self) -> None:
        """Serve until a ``stop`` message, SIGTERM or the control pipe closes."""
        ep = select.epoll()
        by_fd = {s.fileno(): s for s in self.rx}
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        ctl_fd = self.control.fileno() if self.control is not None else -1
        if ctl_fd >= 0:
            ep.register(ctl_fd, select.EPOLLIN)
        next_stats = 0.0
        # Busy polling (workers.busy_poll_us): after traffic, poll without sleeping for a while,
        # so the next frame does not pay the wake-up of an idle CPU (~50 µs on a VM) -- at the
        # cost of that CPU; meant for workers pinned to their own core.
        spin_s = self.spec.busy_poll_us / 1e6
        spin_until = 0.0
        try:
            while not self.stopping:
                events = ep.poll(0 if spin_s and time.monotonic() < spin_until else 0.5)
                self.slot.add("syscalls_poll")
                now = time.monotonic()
                if now >= next_stats:     # overload drops happen in the kernel: fetch its count
                    next_stats = now + 0.5
                    if os.getppid() != self.parent_pid:
                        log.error("worker %d: the engine daemon (pid %d) is gone: stopping",
                                  self.spec.index, self.parent_pid)
                        break
                    for s in self.rx:
                        lost = afpacket.queue_drops(s)
                        if lost:
                            self.slot.add("rx_queue_drops", lost)
                for fd, _ in events:
                    if fd == ctl_fd:
                        assert self.control is not None
                        try:
                            self.handle_control(self.control.recv())
                        except EOFError:
                            self.stopping = True
                        continue
                    sock = by_fd[fd]
                    # Keep draining while the socket is busy (a full batch means more may wait).
                    while self.drain(sock) == self.spec.batch:
                        pass
                    if spin_s:
                        spin_until = time.monotonic() + spin_s
        finally:
            ep.close()
            self.close()

    def close(self) -> None:
        """Close the ingress sockets, the egress socket and the receive arena."""
        for s in self.rx:
            s.close()
        self.sender.close()
        self.rx_batch.close()


def pin_to_cpu(cpu: int) -> str | None:
    """Pin the calling process to ``cpu``; returns what went wrong instead of raising.

    Refused pinning (a seccomp filter such as systemd's ``SystemCallFilter=~@resources`` answers
    sched_setaffinity with EPERM) leaves the worker forwarding unpinned: better than a worker
    that dies at start and is restarted forever.  The API shows each worker's CPUs.
    """
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        return (f"cannot pin to CPU {cpu} (workers.cpus): {exc.strerror or exc}; forwarding unpinned "
                "(a systemd unit must allow sched_setaffinity: SystemCallFilter=sched_setaffinity)")
    return None


def _worker_main(spec: WorkerSpec, fib: Fib, links: list[EngineLink], factory: BrancherFactory,
                 control: multiprocessing.connection.Connection,
                 inherited: list[multiprocessing.connection.Connection]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the supervisor decides when we stop
    # The fork copied the supervisor's ends of every worker's pipe, ours included: while we hold
    # ours, the daemon's death never reads as EOF here.
    for conn in inherited:
        with contextlib.suppress(OSError):
            conn.close()
    if spec.cpu is not None:
        # A pinned worker keeps its caches warm and does not share a core with the sync/API
        # threads or (in the lab) with the router's forwarding; validated by the config loader.
        problem = pin_to_cpu(spec.cpu)
        if problem:
            log.error("worker %d: %s", spec.index, problem)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)                     # forked from an asyncio loop: not ours
    w = Worker(spec, fib, LinkMap(links), factory, control)
    gc.freeze()    # the inherited table never needs a collector pass (see the module docstring)
    signal.signal(signal.SIGTERM, lambda *_: setattr(w, "stopping", True))
    control.send(("ready", spec.index, os.getpid()))
    w.run()


@dataclass
class WorkerPool:
    """Parent side of the workers: forks them from the master Fib, fans out table/link changes
    (blocking; engine/dataplane/supervisor.py runs it from the event loop and restarts workers)."""

    fib: Fib
    links: LinkMap
    ingress: list[str]
    workers: int = 1
    counters_path: Path = Path("/run/xcast6-engine/stats.shm")
    factory: BrancherFactory = default_brancher_factory
    batch: int = 64
    cpus: tuple[int, ...] = ()     # worker i runs on cpus[i % len(cpus)]; () = not pinned
    busy_poll_us: int = 0
    rx_buffer: int = afpacket.DEFAULT_RX_BUFFER    # bytes per ingress socket
    flow_cache_bytes: int = FLOW_CACHE_BYTES        # per worker (config workers.flow_cache_mb)
    plan_cache_bytes: int = PLAN_CACHE_BYTES        # per worker (config workers.plan_cache_mb)
    icmp_rate: float = ICMP_RATE      # ICMPv6 errors per second, the whole engine (workers.icmp_rate)
    icmp_burst: int = ICMP_BURST      # (workers.icmp_burst)
    dataplane: str = "python"       # [dataplane] mode: auto | bpf | python
    pin_dir: Path | None = None     # [dataplane] pin_dir
    procs: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    conns: list[multiprocessing.connection.Connection] = field(default_factory=list)
    kernel: Any = None              # the attached KernelPath (engine/dataplane/kernel_path.py)
    data_path: str = ""             # what runs and why (logged, shown by the API)
    _publisher: Any = None

    restarts: int = 0

    def _fork(self, i: int) -> tuple[multiprocessing.process.BaseProcess, Conn]:
        # Forked from the supervisor, whose Fib is always the current one: a (re)started worker
        # inherits today's table, not the one from boot.
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        cpu = self.cpus[i % len(self.cpus)] if self.cpus else None
        spec = WorkerSpec(i, list(self.ingress), self.counters_path, self.batch, cpu=cpu,
                          busy_poll_us=self.busy_poll_us, rx_buffer=self.rx_buffer,
                          flow_cache_bytes=self.flow_cache_bytes, plan_cache_bytes=self.plan_cache_bytes,
                          # each worker has its own bucket: the engine's rate is split between them
                          icmp_rate=self.icmp_rate / self.workers,
                          icmp_burst=max(1, self.icmp_burst // self.workers))
        args = (spec, self.fib, self.links.links(), self.factory, child, [parent, *self.conns])
        p = ctx.Process(target=_worker_main, args=args, name=f"xcast6-worker-{i}", daemon=True)
        p.start()
        child.close()
        return p, parent

    @staticmethod
    def _await_ready(i: int, c: multiprocessing.connection.Connection, timeout: float) -> None:
        if not c.poll(timeout):
            raise RuntimeError(f"worker {i} did not start within {timeout}s")
        msg = c.recv()
        if msg[0] != "ready":
            raise RuntimeError(f"worker {i} failed to start: {msg!r}")

    def start(self, timeout: float = 10.0) -> None:
        """Create the counter file and fork the workers (after the table is loaded)."""
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        from engine.dataplane import kernel_path

        # The TC program first (it punts to the workers, whose sockets see only what it passes);
        # its counters get the row after the workers'.
        self.kernel, self.data_path = kernel_path.start(
            self.dataplane, self.fib.routes(), self.links, self.ingress, self.pin_dir)
        log.info("%s", self.data_path)
        CounterFile.create(self.counters_path, self.workers + (1 if self.kernel else 0))
        if self.kernel is not None:
            self._publisher = kernel_path.CounterPublisher(self.kernel, self.counters_path, self.workers)
            self._publisher.start()
        for i in range(self.workers):
            p, c = self._fork(i)
            self.procs.append(p)
            self.conns.append(c)
        try:
            for i, c in enumerate(self.conns):
                self._await_ready(i, c, timeout)
        except (RuntimeError, EOFError):
            self.stop()
            raise

    def revive(self, timeout: float = 10.0) -> list[int]:
        """Restart dead workers in their slots (same fanout group); returns their indexes."""
        revived = []
        for i, p in enumerate(self.procs):
            if p.is_alive():
                continue
            p.join(0)
            self.conns[i].close()
            self.procs[i], self.conns[i] = self._fork(i)
            self._await_ready(i, self.conns[i], timeout)
            revived.append(i)
            self.restarts += 1
        return revived

    def _broadcast(self, msg: tuple[Any, ...], timeout: float = 30.0) -> None:
        self.revive()
        for c in self.conns:
            c.send(msg)
        for i, c in enumerate(self.conns):
            if not c.poll(timeout):
                raise RuntimeError(f"worker {i} did not acknowledge {msg[0]} within {timeout}s")
            c.recv()

    def send_diff(self, d: SnapshotDiff) -> None:
        """Send a sync diff to every worker (waits for their acks).

        Sync's apply has already written the master Fib (this pool's ``fib``, shared by
        reference), so only the workers are updated here.
        """
        adds = [*d.added, *(c.new for c in d.changed)]
        removes = [r.prefix for r in d.removed]
        if adds or removes:
            if self.kernel is not None:
                self.kernel.apply(adds, removes)
            self._broadcast(("diff", adds, removes))

    def set_links(self, links: LinkMap) -> None:
        """Send a new link map to every worker (waits for their acks)."""
        self.links = links
        if self.kernel is not None:
            self.kernel.set_links(links)
        self._broadcast(("links", links.links()))

    def alive(self) -> list[bool]:
        return [p.is_alive() for p in self.procs]

    def stop(self, timeout: float = 5.0) -> None:
        # the TC program first: what it would branch goes to the workers until they stop
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None
        for c in self.conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                c.send(("stop",))
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():
                p.terminate()
                p.join(1)
        for c in self.conns:
            c.close()
        self.procs.clear()
        self.conns.clear()
