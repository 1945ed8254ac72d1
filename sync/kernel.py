"""Mirror the router's table into a dedicated Linux routing table (e.g. ``table 6464 proto 245``).

Ownership: the engine only ever writes, replaces and deletes routes that are in *its* table
**and** carry *its* protocol number.  A foreign route in the same table at the same
prefix/priority is never overwritten: that prefix is skipped and counted.

Next hops: the router's egress interface is mapped to the engine link that stands for it
(``ifname_map``, later the vlan ``LinkMap``); a gateway route keeps the *router's* next-hop
address and is installed with the ``onlink`` flag, because that address (often link-local
of a neighbour the engine never sees, or in a subnet the engine link has no address in) is
not on the engine link's subnets.  The mirror shows the router's view; it is not used by the
engine's own forwarding (copies are framed and sent by the worker).  Router metrics are not
written as kernel priority: the kernel keys IPv6 routes on (prefix, priority), so one fixed
priority keeps "one route per prefix" and makes every update a real replace.

Batching: requests are hand-encoded (:mod:`sync.rtnl`) and sent many per ``send()`` with
only the last one of each chunk asking for an ACK; the kernel processes a chunk
synchronously and reports errors per request (sequence number), so we know exactly which
requests took effect and can roll them back when one fails.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.model import NextHop, Route
from sync import rtnl
from sync.gcpause import gc_paused
from sync.rtnl import KernelNextHop, KernelRoute

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

DEFAULT_TABLE = 6464
DEFAULT_PROTOCOL = 245      # "xcast6"; add "245 xcast6" to /etc/iproute2/rt_protos to see the name
DEFAULT_PRIORITY = 1024

Key = tuple[bytes, int, int]
_NO_LINK, _MISSING, _DOWN, _BAD_GW = -1, -2, -3, -4   # plan_mirror's reasons to leave a hop out
_UNSPECIFIED = bytes(16)
IFF_UP = 0x1
Op = tuple[bool, KernelRoute, KernelRoute | None]   # (is_replace, route, previous route or None)


class KernelApplyError(Exception):
    """The kernel rejected a request; ``rolled_back`` says whether the previous state is back."""

    def __init__(self, message: str, err: int, rolled_back: bool) -> None:
        super().__init__(message)
        self.errno = err
        self.rolled_back = rolled_back


@dataclass(slots=True)
class MirrorPlan:
    """What the kernel table should hold, and why some routes are left out."""

    desired: dict[Key, KernelRoute]
    skipped_no_link: int = 0          # router interface has no engine link (ifname_map -> None)
    skipped_missing_device: int = 0   # engine link name not present in the kernel
    skipped_link_down: int = 0        # engine link administratively down (the kernel refuses those)
    skipped_bad_gateway: int = 0      # gateway the kernel refuses whatever the link (multicast, ::)
    skipped_foreign: int = 0          # a foreign route (other protocol) owns that prefix
    skipped_examples: list[str] = field(default_factory=list)

    def skipped(self) -> dict[str, int]:
        return {
            "no_engine_link": self.skipped_no_link,
            "missing_device": self.skipped_missing_device,
            "link_down": self.skipped_link_down,
            "bad_gateway": self.skipped_bad_gateway,
            "foreign_conflict": self.skipped_foreign,
        }


@dataclass(slots=True)
class MirrorResult:
    """Outcome of one apply: what was sent and what the table holds now."""

    replaced: int
    deleted: int
    unchanged: int
    installed: int
    skipped: dict[str, int]
    duration_s: float
    skipped_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"replaced": self.replaced, "deleted": self.deleted, "unchanged": self.unchanged,
                "installed": self.installed, "skipped": dict(self.skipped),
                "skipped_examples": list(self.skipped_examples), "duration_s": round(self.duration_s, 4)}


def _prefix_text(dst: bytes, dst_len: int) -> str:
    return f"{ipaddress.IPv6Address(dst)}/{dst_len}"


def describe(route: KernelRoute) -> str:
    """Human text for a kernel route, for errors and logs."""
    hops = ", ".join(
        f"{'via ' + str(ipaddress.IPv6Address(nh.gateway)) + ' ' if nh.gateway else ''}dev #{nh.oif}"
        f"{' onlink' if nh.onlink else ''}"
        for nh in route.nexthops
    )
    return f"{_prefix_text(route.dst, route.dst_len)} {hops} table {route.table} proto {route.protocol}"


def to_model(route: KernelRoute, names: dict[int, str]) -> Route:
    """A kernel mirror route in the shared model (next-hop ifname = *engine* interface name)."""
    hops = tuple(NextHop(names.get(nh.oif, f"#{nh.oif}"), nh.gateway) for nh in route.nexthops)
    prefix = ipaddress.IPv6Network((int.from_bytes(route.dst, "big"), route.dst_len))
    return Route(prefix, hops or (NextHop("-"),), f"proto-{route.protocol}", route.priority)


def _map_hops(
    nexthops: tuple[NextHop, ...],
    ifname_map: Callable[[str], str | None],
    links: dict[str, tuple[int, bool]],
    engine_if_cache: dict[str, int],
    onlink: bool,
) -> tuple[tuple[KernelNextHop, ...], int, str]:
    """Kernel next hops for one router next-hop tuple, plus (reason code, ifname) if none."""
    hops: list[KernelNextHop] = []
    why, why_if = 0, ""
    for nh in nexthops:
        oif = engine_if_cache.get(nh.ifname)
        if oif is None:
            engine_name = ifname_map(nh.ifname)
            if engine_name is None:
                oif = _NO_LINK
            else:
                idx, up = links.get(engine_name, (_MISSING, False))
                oif = idx if idx == _MISSING or up else _DOWN
            engine_if_cache[nh.ifname] = oif
        if oif >= 0 and nh.gateway is not None and (nh.gateway[0] == 0xFF or nh.gateway == _UNSPECIFIED):
            oif = _BAD_GW
        if oif < 0:
            if not why:
                why, why_if = oif, nh.ifname
            continue
        hop = KernelNextHop(oif, nh.gateway, onlink and nh.gateway is not None)
        if hop not in hops:
            hops.append(hop)
    if len(hops) > 1 and any(h.gateway is None for h in hops):
        # The kernel cannot ECMP a device-only hop with gateway hops: keep the gateway ones.
        hops = [h for h in hops if h.gateway is not None] or hops[:1]
    hops.sort(key=lambda h: (h.oif, h.gateway or b""))
    return tuple(hops), why, why_if


def plan_mirror(
    routes: Iterable[Route],
    ifname_map: Callable[[str], str | None],
    links: dict[str, tuple[int, bool]],
    foreign: set[Key],
    table: int = DEFAULT_TABLE,
    protocol: int = DEFAULT_PROTOCOL,
    priority: int = DEFAULT_PRIORITY,
    onlink: bool = True,
) -> MirrorPlan:
    """Translate router routes into kernel routes (pure: no netlink).

    ``links`` is the engine namespace's interfaces: name -> (ifindex, administratively up).
    A hop whose engine link is down is left out (the kernel refuses such next hops, and
    one refused route would otherwise fail the whole all-or-nothing apply).
    """
    plan = MirrorPlan({})
    desired = plan.desired
    # router ifname -> engine ifindex, or _NO_LINK / _MISSING / _DOWN
    engine_if_cache: dict[str, int] = {}
    reasons = {_NO_LINK: "has no engine link", _MISSING: "maps to an engine link missing from the kernel",
               _DOWN: "maps to an engine link that is down",
               _BAD_GW: "has a multicast or unspecified gateway (kernel refuses it)"}
    # Sources share next-hop tuples between routes: map each tuple once.  Keyed by id() with
    # the tuple kept alive in the value (NextHop hashing is Python code).
    hop_cache: dict[int, tuple[tuple[NextHop, ...], tuple[KernelNextHop, ...], int, str]] = {}
    for r in routes:
        cached = hop_cache.get(id(r.nexthops))
        if cached is None:
            hops, why, why_if = _map_hops(r.nexthops, ifname_map, links, engine_if_cache, onlink)
            hop_cache[id(r.nexthops)] = (r.nexthops, hops, why, why_if)
        else:
            _, hops, why, why_if = cached
        if not hops:
            if why == _NO_LINK:
                plan.skipped_no_link += 1
            elif why == _DOWN:
                plan.skipped_link_down += 1
            elif why == _BAD_GW:
                plan.skipped_bad_gateway += 1
            else:
                plan.skipped_missing_device += 1
            if len(plan.skipped_examples) < 5:
                plan.skipped_examples.append(f"{r.prefix}: router interface {why_if!r} {reasons[why]}")
            continue
        dst = r.prefix.network_address.packed
        key = (dst, r.prefix.prefixlen, priority)
        if key in foreign:
            plan.skipped_foreign += 1
            if len(plan.skipped_examples) < 5:
                plan.skipped_examples.append(f"{r.prefix}: a foreign route holds it in table {table}")
            continue
        desired[key] = KernelRoute(dst, key[1], table, protocol, priority, hops)
    return plan


class KernelMirror:
    """Owner of one kernel routing table's engine routes (one protocol number).

    Not thread-safe: one netlink socket, one caller at a time (SyncService serialises its
    writers and read-backs with one lock).  ``netns`` opens the socket inside a named
    network namespace (tests, labs); production uses the engine's own namespace.
    """

    def __init__(
        self,
        table: int = DEFAULT_TABLE,
        protocol: int = DEFAULT_PROTOCOL,
        priority: int = DEFAULT_PRIORITY,
        netns: str | None = None,
        onlink: bool = True,
        chunk_bytes: int = 64 * 1024,
    ) -> None:
        if not 1 <= table < 2**32 or table in (253, 254, 255):
            raise ValueError(f"kernel table must be a dedicated table id (not 253/254/255), got {table}")
        if not 1 <= protocol <= 255 or protocol in (1, 2, 3, 4):
            raise ValueError(f"kernel protocol must be 5..255 (1-4 are reserved), got {protocol}")
        self.table = table
        self.protocol = protocol
        self.priority = priority
        self.netns = netns
        self.onlink = onlink
        self.chunk_bytes = chunk_bytes
        self._sock: socket.socket | None = None
        self._seq = int(time.time()) & 0xFFFF
        # What we installed last (None = unknown, dump before the next apply) + foreign keys seen.
        self._installed: dict[Key, KernelRoute] | None = None
        self._foreign: set[Key] = set()
        self._last_links: dict[str, tuple[int, bool]] | None = None

    # -- socket -------------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.netns is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            else:
                from pyroute2.netns import create_socket

                sock = create_socket(self.netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE,
                                     flags=0)
            sock.bind((0, 0))
            for opt, size in ((SO_RCVBUFFORCE, 8 << 20), (SO_SNDBUFFORCE, 4 << 20)):
                with contextlib.suppress(OSError):  # not root: default buffers, chunks cope
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
            with contextlib.suppress(OSError):  # old kernel: dump returns every table, filtered below
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.settimeout(60.0)   # the kernel answers synchronously; a silent socket is a fault
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> KernelMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    # -- reading ------------------------------------------------------------------------
    def link_index(self) -> dict[str, tuple[int, bool]]:
        """Kernel interface name -> (index, administratively up) in the mirror's namespace (pyroute2)."""
        from pyroute2 import IPRoute

        with IPRoute(netns=self.netns) if self.netns else IPRoute() as ipr:
            return {str(link.get("ifname")): (int(link["index"]), bool(link["flags"] & IFF_UP))
                    for link in ipr.get_links()}

    def links_changed(self) -> bool:
        """Whether engine links appeared, vanished, went up/down since the last apply."""
        return self._last_links is not None and self.link_index() != self._last_links

    def _links(self) -> dict[str, tuple[int, bool]]:
        """Current links; when any changed since the last apply, re-read the table.

        The kernel itself deletes IPv6 routes whose device goes down, so after a link event
        the cached "installed" view is stale and a route would never be re-added.
        """
        links = self.link_index()
        if self._last_links is not None and links != self._last_links:
            self._installed = None
        self._last_links = links
        return links

    def dump(self) -> tuple[dict[Key, KernelRoute], set[Key]]:
        """Read the table: (our routes by key, keys of foreign routes in the same table)."""
        with gc_paused():
            return self._dump()

    def _dump(self) -> tuple[dict[Key, KernelRoute], set[Key]]:
        sock = self._socket()
        seq = self._next_seq()
        sock.send(rtnl.encode_dump_request(seq, self.table))
        ours: dict[Key, KernelRoute] = {}
        foreign: set[Key] = set()
        done = False
        while not done:
            buf = sock.recv(1 << 20)
            for mtype, _flags, mseq, payload in rtnl.iter_messages(buf):
                if mseq != seq:
                    continue
                if mtype == rtnl.NLMSG_DONE:
                    done = True
                    break
                if mtype == rtnl.NLMSG_ERROR:
                    code = rtnl.error_code(payload)
                    raise OSError(code, f"route dump of table {self.table} failed: {os.strerror(code)}")
                if mtype != rtnl.RTM_NEWROUTE:
                    continue
                kr = rtnl.decode_route(payload)
                if kr is None or kr.table != self.table:
                    continue
                if kr.protocol == self.protocol:
                    ours[kr.key] = kr
                else:
                    foreign.add(kr.key)
        return ours, foreign

    def installed(self) -> dict[Key, KernelRoute]:
        """Our routes as last installed (dumps the kernel when unknown)."""
        if self._installed is None:
            self._installed, self._foreign = self.dump()
        return self._installed

    def installed_foreign(self) -> set[Key]:
        """Keys of foreign routes in our table (as of the last dump)."""
        self.installed()
        return self._foreign

    def invalidate(self) -> None:
        """Forget the cached table; the next apply re-reads the kernel."""
        self._installed = None

    # -- writing ------------------------------------------------------------------------
    def plan(self, routes: Iterable[Route], ifname_map: Callable[[str], str | None]) -> MirrorPlan:
        links = self._links()
        self.installed()
        return plan_mirror(routes, ifname_map, links, self._foreign, self.table, self.protocol,
                           self.priority, self.onlink)

    def apply(self, routes: Iterable[Route], ifname_map: Callable[[str], str | None]) -> MirrorResult:
        """Make the table equal to ``routes`` (mapped); all-or-nothing with rollback."""
        t0 = time.perf_counter()
        plan = self.plan(routes, ifname_map)
        result = self.apply_plan(plan)
        result.duration_s = time.perf_counter() - t0
        return result

    def apply_plan(self, plan: MirrorPlan) -> MirrorResult:
        """Send the difference between the installed table and ``plan.desired`` (whole table)."""
        current = self.installed()
        desired = plan.desired
        ops: list[Op] = []
        unchanged = 0
        for key, kr in desired.items():
            old = current.get(key)
            if old == kr:
                unchanged += 1
            else:
                ops.append((True, kr, old))
        ops.extend((False, old, old) for key, old in current.items() if key not in desired)
        self._commit(ops)
        self._installed = dict(desired)
        return self._result(ops, unchanged, plan)

    def apply_changes(
        self,
        upserts: Iterable[Route],
        removals: Iterable[ipaddress.IPv6Network],
        ifname_map: Callable[[str], str | None],
        full_routes: Iterable[Route] | None = None,
    ) -> MirrorResult:
        """Incremental update: install/replace ``upserts``, delete ``removals`` (by prefix).

        Cost is proportional to the change, not the table, so a 1,000-route change on a
        250k table takes milliseconds.  An upsert that no longer maps to an engine link
        removes the prefix from the mirror.  When the engine links changed since the last
        apply (a link went down or came back), routes outside the change may need adding or
        have been flushed by the kernel: with ``full_routes`` (the whole new table) the
        whole mirror is reconciled instead.
        """
        t0 = time.perf_counter()
        links_before = self._last_links
        links = self._links()
        if full_routes is not None and links_before is not None and links != links_before:
            result = self.apply_plan(plan_mirror(full_routes, ifname_map, links, self.installed_foreign(),
                                                 self.table, self.protocol, self.priority, self.onlink))
            result.duration_s = time.perf_counter() - t0
            return result
        current = self.installed()
        upserts = list(upserts)
        plan = plan_mirror(upserts, ifname_map, links, self._foreign, self.table, self.protocol,
                           self.priority, self.onlink)
        ops: list[Op] = []
        unchanged = 0
        for key, kr in plan.desired.items():
            old = current.get(key)
            if old == kr:
                unchanged += 1
            else:
                ops.append((True, kr, old))
        gone = [(r.network_address.packed, r.prefixlen, self.priority) for r in removals]
        gone += [(r.prefix.network_address.packed, r.prefix.prefixlen, self.priority) for r in upserts]
        seen: set[Key] = set()
        for key in gone:
            old = current.get(key)
            if old is not None and key not in plan.desired and key not in seen:
                seen.add(key)
                ops.append((False, old, old))
        self._commit(ops)
        for is_replace, kr, _ in ops:
            if is_replace:
                current[kr.key] = kr
            else:
                current.pop(kr.key, None)
        result = self._result(ops, unchanged, plan)
        result.installed = len(current)
        result.duration_s = time.perf_counter() - t0
        return result

    def _result(self, ops: list[Op], unchanged: int, plan: MirrorPlan) -> MirrorResult:
        return MirrorResult(
            replaced=sum(1 for op in ops if op[0]),
            deleted=sum(1 for op in ops if not op[0]),
            unchanged=unchanged,
            installed=len(plan.desired),
            skipped=plan.skipped(),
            duration_s=0.0,
            skipped_examples=list(plan.skipped_examples),
        )

    def _commit(self, ops: list[Op]) -> None:
        """Send ops; on any refusal undo the ones that took effect and raise KernelApplyError."""
        try:
            failed, sent = self._send(ops)
        except OSError:
            self._installed = None     # socket trouble mid-way: state unknown, re-read next time
            raise
        if not failed:
            return
        first_idx, code = failed[0]
        is_replace, kr, _ = ops[first_idx]
        what = "install" if is_replace else "delete"
        msg = (f"kernel refused to {what} route {describe(kr)}: {os.strerror(code)} (errno {code}); "
               f"{len(failed)} of {len(ops)} requests failed")
        rolled_back = self._rollback(ops[:sent], {i for i, _ in failed})
        if rolled_back:
            msg += "; previous table restored"
        else:
            self._installed = None
            msg += "; rollback incomplete, table will be re-read"
        raise KernelApplyError(msg, code, rolled_back)

    def _rollback(self, ops: list[Op], failed: set[int]) -> bool:
        undo: list[Op] = []
        for i, (is_replace, kr, prev) in enumerate(ops):
            if i in failed:
                continue
            if prev is not None:
                undo.append((True, prev, None))
            elif is_replace:
                undo.append((False, kr, None))
        return not self._send(undo)[0]

    def _send(self, ops: list[Op]) -> tuple[list[tuple[int, int]], int]:
        """Send ops in chunks: ([(op index, errno)] the kernel refused, number of ops sent).

        Stops after the first chunk that had a failure (later chunks are never sent, so only
        ``ops[:sent]`` need undoing).
        """
        if not ops:
            return [], 0
        sock = self._socket()
        failed: list[tuple[int, int]] = []
        hop_bytes: dict[int, tuple[tuple[KernelNextHop, ...], tuple[bytes, int]]] = {}
        i, n = 0, len(ops)
        while i < n:
            seq0 = self._next_seq()
            parts: list[bytes] = []
            size = 0
            j = i
            while j < n and size < self.chunk_bytes:
                is_replace, kr, _ = ops[j]
                seq = seq0 + (j - i)
                if is_replace:
                    enc = hop_bytes.get(id(kr.nexthops))
                    if enc is None or enc[0] is not kr.nexthops:
                        enc = hop_bytes[id(kr.nexthops)] = (kr.nexthops, rtnl.encode_hops(kr.nexthops))
                    msg = rtnl.encode_replace(kr, seq, hops=enc[1])
                else:
                    msg = rtnl.encode_delete(kr, seq)
                parts.append(msg)
                size += len(msg)
                j += 1
            last_seq = seq0 + (j - i) - 1
            self._seq = last_seq
            # Only the chunk's last request asks for an ACK: errors of the others arrive before it.
            last_is_replace, last_kr, _ = ops[j - 1]
            parts[-1] = (rtnl.encode_replace(last_kr, last_seq, ack=True) if last_is_replace
                         else rtnl.encode_delete(last_kr, last_seq, ack=True))
            sock.send(b"".join(parts))
            acked = False
            while not acked:
                buf = sock.recv(1 << 20)
                for mtype, _flags, _mseq, payload in rtnl.iter_messages(buf):
                    if mtype != rtnl.NLMSG_ERROR:
                        continue
                    rseq = rtnl.error_request_seq(payload)
                    if not seq0 <= rseq <= last_seq:
                        continue
                    code = rtnl.error_code(payload)
                    idx = i + (rseq - seq0)
                    if code and not (code == errno.ESRCH and not ops[idx][0]):  # already gone = deleted
                        failed.append((idx, code))
                    if rseq == last_seq:
                        acked = True
            i = j
            if failed:
                break
        return failed, i
