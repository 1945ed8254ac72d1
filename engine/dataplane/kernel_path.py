"""The kernel data path's control plane: load, attach, program and read the TC eBPF program.

The program (engine/dataplane/kernel/xcast6_tc.c) branches the common case on TC ingress of
the engine links and punts everything else, unchanged, to the Python workers
(engine/dataplane/worker.py), whose AF_PACKET sockets are bound to ``ETH_P_IPV6`` and so see a
frame only after TC let it pass: nothing is handled twice.  This module is the sibling of the
worker pool that keeps the program's maps equal to the Fib and the link map.

**Loader: libbpf (the Debian ``libbpf1`` shared library) through ctypes.**  Why: one library
does open/load (with the verifier's log on failure), clsact hook + filter attach with atomic
replace (``bpf_tc_attach(..., BPF_TC_F_REPLACE)`` swaps the program of our filter in place, so
an upgrade never has a moment without one), pinning and map updates, all in-process with errno
results instead of parsing ``tc``/``bpftool`` output; the maps are written from the process that
holds sync's diffs without a subprocess per batch.  No BCC (it needs kernel headers and a
compiler at run time).  bpftool stays the operator's tool to look (``bpftool map dump pinned
/sys/fs/bpf/xcast6-engine/counters``).

**No packet sees half a change.**  Routes live in two LPM tries (``routes_a``/``routes_b``);
``ctl[0]`` says which one serves, and the program reads it once per packet.  A sync diff is
written to the idle trie, ``ctl`` is flipped (one 4-byte store), then the diff is written to the
other trie too, so both are equal again before the next diff.  Each route value is
self-consistent (next-hop id + router-interface id + flags); the per-interface link entries
live in a hash map, whose updates replace whole elements (RCU), so a MAC learned or a link going
down is one atomic entry.  Link entries are written before any route that names them.

**After a crash** (``kill -9``, OOM) the program stays attached with its last table and keeps
branching, as a router's FIB outlives its control plane; the next start replaces it in place on
the same filter handle (a fresh program whose maps were filled from the synced table before the
swap); only a clean stop detaches (tests/lab/test_lab_kernel_restart.py).

**What the maps say** (pure functions below, tested without root): a route with one next hop
-> (next-hop id, interface id, connected?); an ECMP route -> the id of its next-hop set in the
``ecmp`` map, whose members (in the route's order) the program chooses from exactly as the
brancher does: ``Fib.lookup``'s CRC-32 of the destination modulo the member count, and when no
engine link stands for that member's interface, ``Brancher._usable_member``'s low 32 bits of the
destination modulo the usable members (more than ``ECMP_MAX`` members: punt).  A set's id names
that member list for good (allocated per distinct list, written before any route names it); its
usable members (those with an engine link: the brancher's ``egress_ok``) are computed here and
rewritten, as a whole entry, with every link map, so a packet's one lookup sees a consistent
member list and usable set; the interface entry is
:func:`engine.dataplane.egress.egress_for` (no engine link -> ``no_route``, link down / no
router MAC -> punt, else ifindex, Ethernet header, MTU, the engine's address on the link).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import heapq
import ipaddress
import logging
import os
import re
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.dataplane.egress import EGRESS_NO_LINK, EGRESS_NO_MAC, egress_for
from engine.dataplane.mmsg import libc
from engine.model import LinkMap, NextHop, Route
from engine.wire.layout import ETH_HLEN, IP6_ADDR_LEN

log = logging.getLogger(__name__)

# Counter indexes of the program's per-CPU ``counters`` map, in its enum order (a test parses
# the C enum and checks).  Names already used by the workers' counter file keep their meaning.
COUNTERS: tuple[str, ...] = (
    "received", "received_bytes", "branched", "copies_out", "x2u_out", "bytes_out",
    "egress_errors", "drop.no_route", "drop.invalid_destination", "drop.no_source_address",
    "punt.parse", "punt.no_live", "punt.hop_limit", "punt.ecmp", "punt.local", "punt.egress",
    "punt.mtu", "punt.groups", "punt.csum0", "punt.vlan", "punt.no_route",
    "latency_count", "latency_sum_ns", "latency_max_ns",
)
PUNT_REASONS = {
    "parse": "not the common form (XOU, port list, non-UDP, malformed: Python decides and counts)",
    "no_live": "empty bitmap",
    "hop_limit": "outer hop limit <= 1 (ICMP time exceeded is Python's)",
    "ecmp": "a destination's route has more than 16 next hops (or 16,383 distinct ECMP sets are in use)",
    "local": "a destination is the engine's own address",
    "egress": "an egress link is down or its router MAC is not learned",
    "mtu": "a copy is larger than its link's MTU",
    "groups": "more copies than the program's bound (32)",
    "csum0": "UDP checksum 0 with an X2U copy",
    "vlan": "an in-band VLAN tag (not taken off by the device)",
    "no_route": "no destination is routable (ICMP destination unreachable is Python's)",
}
MAX_GROUPS = 32          # XC_MAX_GROUPS in the C program
ECMP_MAX = 16            # XC_ECMP_MAX: next hops per ECMP route the program chooses among
ECMP_SETS = 16383        # distinct ECMP next-hop sets (the ecmp map's size; more: punted)

# route_val.flags and link_val.state (the C program's XC_* values)
F_ECMP_PUNT = 1
F_CONNECTED = 2
F_LOCAL = 4
F_ECMP = 8
LINK_OK = 1
LINK_DOWN = 2
LINK_NO_MAC = 3
LINK_NONE = 4

_KEY = struct.Struct("<I16s")                 # struct lpm_key
_ROUTE = struct.Struct("<III")                # struct route_val
_LINK = struct.Struct("<IIII14s2x16s")        # struct link_val
_U32 = struct.Struct("<I")
_MEMBER = struct.Struct("<III")               # struct ecmp_member
_ECMP_HEAD = struct.Struct("<III16s4x")       # struct ecmp_val before its members

PIN_ROOT = Path("/sys/fs/bpf/xcast6-engine")
PROGRAM = "xcast6_ingress"
REDIRECT_WATCH = "xcast6_redirect_done"     # fexit on skb_do_redirect: the last copy's outcome
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
TC_HANDLE = 0x5C6          # our filter's handle and priority on clsact ingress
TC_PRIORITY = 0x5C6


class KernelPathError(RuntimeError):
    """The kernel path cannot run here (the message says why: the mode ``auto`` logs it)."""


# ------------------------------------------------------------------------------------------
# What the maps hold: pure
# ------------------------------------------------------------------------------------------
@dataclass
class Registry:
    """Stable small ids for next hops (grouping) and router interfaces (link entries), and the
    ECMP sets' ids, counted by the routes that use them and freed with the last one."""

    hops: dict[NextHop, int] = field(default_factory=dict)
    ifnames: dict[str, int] = field(default_factory=dict)
    ecmp: dict[tuple[NextHop, ...], int] = field(default_factory=dict)   # the sets in use
    ecmp_users: dict[tuple[NextHop, ...], int] = field(default_factory=dict)
    route_sets: dict[ipaddress.IPv6Network, tuple[NextHop, ...]] = field(default_factory=dict)
    ecmp_free: list[int] = field(default_factory=list)        # reusable ids (a heap: lowest first)
    # sets the diff being applied left without a route: released at its end unless taken again
    ecmp_unused: set[tuple[NextHop, ...]] = field(default_factory=set)
    ecmp_next: int = 1                                         # the lowest id never handed out
    ecmp_new: list[tuple[tuple[NextHop, ...], int]] = field(default_factory=list)
    # ECMP routes punted because no id was free: written again once one is (the next diff)
    ecmp_waiting: dict[ipaddress.IPv6Network, Route] = field(default_factory=dict)

    def hop_id(self, nh: NextHop) -> int:
        # connected hops group per destination in the program; one id per (interface, connected)
        key = NextHop(nh.ifname) if nh.gateway is None else nh
        hid = self.hops.get(key)
        if hid is None:
            hid = self.hops[key] = len(self.hops) + 1
        return hid

    def link_id(self, ifname: str) -> tuple[int, bool]:
        """(id, new?) of a router interface."""
        lid = self.ifnames.get(ifname)
        if lid is None:
            lid = self.ifnames[ifname] = len(self.ifnames) + 1
            return lid, True
        return lid, False

    def ecmp_id(self, nexthops: tuple[NextHop, ...]) -> tuple[int, bool]:
        """(id, new?) of an ECMP next-hop set (the order matters: it is the member index).

        A new set takes the lowest freed id, else the next unused one; a set the diff being
        applied left unused keeps its id until the diff ends (:meth:`settle`)."""
        gid = self.ecmp.get(nexthops)
        if gid is not None:
            return gid, False
        if self.ecmp_free:
            gid = heapq.heappop(self.ecmp_free)
        else:
            gid, self.ecmp_next = self.ecmp_next, self.ecmp_next + 1
        self.ecmp[nexthops] = gid
        self.ecmp_new.append((nexthops, gid))
        return gid, True

    def take_new_sets(self) -> list[tuple[tuple[NextHop, ...], int]]:
        """The sets allocated since the last call that are still in use (their entries to write)."""
        new, self.ecmp_new = self.ecmp_new, []
        return [(hops, gid) for hops, gid in new if self.ecmp.get(hops) == gid]

    def ecmp_full(self, nexthops: tuple[NextHop, ...]) -> bool:
        """No id for this set: it is new and all ECMP_SETS ids are taken (in use, or left unused by
        the diff being applied)."""
        return nexthops not in self.ecmp and not self.ecmp_free and self.ecmp_next > ECMP_SETS

    def bind(self, prefix: ipaddress.IPv6Network, nexthops: tuple[NextHop, ...] | None) -> None:
        """``prefix``'s route now uses ECMP set ``nexthops`` (None: none); its previous set loses
        a user, and is released with its last (:meth:`settle`)."""
        old = self.route_sets.get(prefix)
        if old == nexthops:
            return
        if nexthops is not None:
            self.route_sets[prefix] = nexthops
            self.ecmp_users[nexthops] = self.ecmp_users.get(nexthops, 0) + 1
            self.ecmp_unused.discard(nexthops)
        else:
            self.route_sets.pop(prefix, None)
        if old is not None:
            left = self.ecmp_users[old] - 1
            if left:
                self.ecmp_users[old] = left
            else:
                del self.ecmp_users[old]
                self.ecmp_unused.add(old)

    def settle(self) -> list[int]:
        """End of a diff: the ids of the sets its routes stopped using (their map entries can
        go, every trie has the diff), reusable from the next diff on -- a packet that read a
        route from the trie written last may still look its old set up during this one: it
        misses and punts, but never finds another set under that id."""
        freed = sorted(self.ecmp.pop(hops) for hops in self.ecmp_unused)
        self.ecmp_unused.clear()
        for gid in freed:
            heapq.heappush(self.ecmp_free, gid)
        return freed


def lpm_key(prefix: ipaddress.IPv6Network) -> bytes:
    """The LPM-trie key of a prefix (prefix length, then the address in network order)."""
    return _KEY.pack(prefix.prefixlen, prefix.network_address.packed)


def route_value(route: Route, reg: Registry) -> bytes:
    """route_val bytes (registers the next hops, interfaces and ECMP set it names; the set the
    prefix used before loses a user)."""
    hops = route.nexthops
    reg.ecmp_waiting.pop(route.prefix, None)
    if len(hops) > ECMP_MAX or (len(hops) > 1 and reg.ecmp_full(hops)):
        reg.bind(route.prefix, None)
        if len(hops) <= ECMP_MAX:
            reg.ecmp_waiting[route.prefix] = route
        return _ROUTE.pack(0, 0, F_ECMP_PUNT)
    if len(hops) > 1:
        gid, _ = reg.ecmp_id(hops)
        reg.bind(route.prefix, hops)
        return _ROUTE.pack(gid, 0, F_ECMP)
    reg.bind(route.prefix, None)
    nh = hops[0]
    lid, _ = reg.link_id(nh.ifname)
    return _ROUTE.pack(reg.hop_id(nh), lid, F_CONNECTED if nh.gateway is None else 0)


def ecmp_value(nexthops: tuple[NextHop, ...], reg: Registry, links: LinkMap) -> bytes:
    """ecmp_val bytes of a next-hop set: count, which members have an engine link (the brancher's
    ``egress_ok``: bit mask, count, indexes), then (hop id, interface id, connected?) each."""
    usable = [j for j, nh in enumerate(nexthops) if egress_for(links.for_router_if(nh.ifname)) is not None]
    mask = sum(1 << j for j in usable)
    out = [_ECMP_HEAD.pack(len(nexthops), mask, len(usable), bytes(usable))]
    for nh in nexthops:
        lid, _ = reg.link_id(nh.ifname)
        out.append(_MEMBER.pack(reg.hop_id(nh), lid, F_CONNECTED if nh.gateway is None else 0))
    out.append(bytes(_MEMBER.size * (ECMP_MAX - len(nexthops))))
    return b"".join(out)


def link_value(ifname: str, links: LinkMap) -> bytes:
    """link_val bytes of a router interface: the one egress rule (engine/dataplane/egress.py)."""
    link = links.for_router_if(ifname)
    verdict = egress_for(link)
    if verdict is None or link is None:
        return _LINK.pack(LINK_NONE, 0, 0, 0, bytes(ETH_HLEN), bytes(IP6_ADDR_LEN))
    if verdict == EGRESS_NO_LINK:
        return _LINK.pack(LINK_DOWN, 0, 0, 0, bytes(ETH_HLEN), bytes(IP6_ADDR_LEN))
    if verdict == EGRESS_NO_MAC or isinstance(verdict, str):
        return _LINK.pack(LINK_NO_MAC, 0, 0, 0, bytes(ETH_HLEN), bytes(IP6_ADDR_LEN))
    src = links.source_for(ifname)
    return _LINK.pack(LINK_OK, verdict.ifindex, verdict.mtu, 1 if src else 0, verdict.l2,
                      src or bytes(IP6_ADDR_LEN))


def c_enum_counters(source: str) -> list[str]:
    """The C program's counter enum (``C_RECEIVED, ...``) as written, for the agreement test."""
    m = re.search(r"enum \{(.*?)C_NCOUNTERS", source, re.S)
    if not m:
        raise ValueError("counter enum not found in the C source")
    return [t.strip() for t in m.group(1).split(",") if t.strip()]


# ------------------------------------------------------------------------------------------
# libbpf through ctypes
# ------------------------------------------------------------------------------------------
class _OpenOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("_stub", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p), ("kernel_log_buf", ctypes.c_void_p),
                ("kernel_log_size", ctypes.c_size_t), ("kernel_log_level", ctypes.c_uint32)]


class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32)]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


BPF_TC_INGRESS = 1
BPF_TC_F_REPLACE = 1
_LIB: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """The libbpf shared library with the prototypes used here (KernelPathError if missing)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise KernelPathError(f"libbpf is not installed ({e}; apt-get install libbpf1)") from e
    vp, i, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for fn, res, args in (
        ("bpf_object__open_file", vp, [cp, ctypes.POINTER(_OpenOpts)]),
        ("bpf_object__load", i, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__find_program_by_name", vp, [vp, cp]),
        ("bpf_program__fd", i, [vp]),
        ("bpf_object__find_map_fd_by_name", i, [vp, cp]),
        ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", i, [i, vp, vp]),
        ("bpf_map_delete_elem", i, [i, vp]),
        ("bpf_obj_pin", i, [i, cp]),
        ("bpf_tc_hook_create", i, [ctypes.POINTER(_TcHook)]),
        ("bpf_tc_attach", i, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        ("bpf_tc_detach", i, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        ("bpf_prog_test_run_opts", i, [i, ctypes.POINTER(_TestRunOpts)]),
        ("bpf_program__set_autoload", i, [vp, ctypes.c_bool]),
        ("bpf_program__attach", vp, [vp]),
        ("bpf_link__destroy", i, [vp]),
        ("libbpf_num_possible_cpus", i, []),
    ):
        f = getattr(lib, fn)
        f.restype = res
        f.argtypes = args
    _route_libbpf_messages(lib)
    _LIB = lib
    return lib


# libbpf prints its own messages to stderr, which under systemd becomes journal lines with no
# priority prefix (and on a kernel that refuses the redirect watch, an error-looking block at every
# start though the engine goes on without it and says so). They go through logging instead, one
# level down: what matters to the operator the engine reports itself (KernelPathError with the
# verifier's log, the watch_problem warning).
_LIBBPF_LEVELS = {0: logging.INFO, 1: logging.DEBUG}      # LIBBPF_WARN, LIBBPF_INFO; DEBUG dropped
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_print_cb: object = None
_libbpf_log = logging.getLogger("xcast6.libbpf")


def _route_libbpf_messages(lib: ctypes.CDLL) -> None:
    global _print_cb
    vsnprintf = libc.vsnprintf
    # va_list is handed on as the pointer the callback receives (x86-64 and arm64 pass it by reference)
    vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    vsnprintf.restype = ctypes.c_int

    def forward(level: int, fmt: bytes | None, args: int | None) -> int:
        pylevel = _LIBBPF_LEVELS.get(level)
        if pylevel is None or fmt is None or not _libbpf_log.isEnabledFor(pylevel):
            return 0
        buf = ctypes.create_string_buffer(1024)
        vsnprintf(buf, len(buf), fmt, args)
        text = buf.value.decode(errors="replace").rstrip()
        if text:
            _libbpf_log.log(pylevel, "%s", text)
        return 0

    _print_cb = _PRINT_FN(forward)              # kept alive as long as libbpf may call it
    lib.libbpf_set_print.restype = ctypes.c_void_p
    lib.libbpf_set_print.argtypes = [_PRINT_FN]
    lib.libbpf_set_print(_print_cb)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = -rc if rc < -1 else ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return rc


@dataclass
class TestRun:
    """One BPF_PROG_TEST_RUN: the program's verdict and the frame as it left it."""

    retval: int
    data: bytes


class Program:
    """The loaded object: program fd, map fds, map access (one per daemon)."""

    MAPS = ("routes_a", "routes_b", "ctl", "links", "ecmp", "counters", "latency")

    def __init__(self, obj_path: Path) -> None:
        lib = libbpf()
        self.lib = lib
        self.obj_path = Path(obj_path)
        self._watch_link: int | None = None
        # the redirect watch (fexit) needs the kernel's BTF; without it, or refused, the TC
        # program runs alone and a failed last-copy redirect is not in egress_errors
        self.watch_problem: str | None = None
        if not VMLINUX_BTF.exists():
            self.watch_problem = f"no kernel BTF ({VMLINUX_BTF})"
        self._obj: int | None = self._open(0, watch=self.watch_problem is None)
        rc = lib.bpf_object__load(self._obj)
        if rc < 0 and self.watch_problem is None:
            lib.bpf_object__close(self._obj)
            self.watch_problem = f"the kernel refused it ({os.strerror(-rc)})"
            self._obj = self._open(0, watch=False)
            rc = lib.bpf_object__load(self._obj)
        if rc < 0:
            lib.bpf_object__close(self._obj)
            self._obj = None
            raise KernelPathError(f"the kernel refused the TC program ({os.strerror(-rc)}):\n"
                                  + self._verifier_log())
        prog = lib.bpf_object__find_program_by_name(self._obj, PROGRAM.encode())
        self.prog_fd = lib.bpf_program__fd(prog)
        self.maps = {m: _check(lib.bpf_object__find_map_fd_by_name(self._obj, m.encode()), m)
                     for m in self.MAPS}
        self.ncpus = max(1, lib.libbpf_num_possible_cpus())

    def _open(self, level: int, buf: ctypes.Array[ctypes.c_char] | None = None, watch: bool = False) -> int:
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts))
        if buf is not None:
            opts.kernel_log_buf = ctypes.cast(buf, ctypes.c_void_p)
            opts.kernel_log_size = len(buf)
            opts.kernel_log_level = level
        obj = self.lib.bpf_object__open_file(str(self.obj_path).encode(), ctypes.byref(opts))
        if not obj:
            code = ctypes.get_errno()
            raise KernelPathError(f"cannot open {self.obj_path}: {os.strerror(code)}")
        if not watch:
            prog = self.lib.bpf_object__find_program_by_name(obj, REDIRECT_WATCH.encode())
            if prog:
                self.lib.bpf_program__set_autoload(prog, False)
        return int(obj)

    def _verifier_log(self) -> str:
        """Load once more with the verifier's log on (only after a failure): its last lines."""
        buf = ctypes.create_string_buffer(4 << 20)
        obj = self._open(1, buf, watch=self.watch_problem is None)
        self.lib.bpf_object__load(obj)
        self.lib.bpf_object__close(obj)
        lines = buf.value.decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-25:])

    def watch_redirects(self) -> None:
        """Attach the redirect watch (fexit on skb_do_redirect; see the C program), once; a
        refusal is kept in ``watch_problem`` (the data path runs without it)."""
        if self._watch_link is not None or self.watch_problem is not None or self._obj is None:
            return
        prog = self.lib.bpf_object__find_program_by_name(self._obj, REDIRECT_WATCH.encode())
        link = self.lib.bpf_program__attach(prog) if prog else None
        if not link:
            self.watch_problem = f"attach refused ({os.strerror(ctypes.get_errno() or errno.ENOENT)})"
            return
        self._watch_link = int(link)

    def unwatch_redirects(self) -> None:
        if self._watch_link is not None:
            self.lib.bpf_link__destroy(self._watch_link)
            self._watch_link = None

    def close(self) -> None:
        self.unwatch_redirects()
        if self._obj is not None:
            self.lib.bpf_object__close(self._obj)
            self._obj = None

    # -- maps -------------------------------------------------------------------------------
    def update(self, m: str, key: bytes, value: bytes) -> None:
        _check(self.lib.bpf_map_update_elem(self.maps[m], key, value, 0), f"update {m}")

    def delete(self, m: str, key: bytes) -> None:
        rc = self.lib.bpf_map_delete_elem(self.maps[m], key)
        if rc < 0 and -rc != errno.ENOENT and ctypes.get_errno() != errno.ENOENT:
            _check(rc, f"delete {m}")

    def lookup(self, m: str, key: bytes, size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(size)
        rc = self.lib.bpf_map_lookup_elem(self.maps[m], key, buf)
        return None if rc < 0 else buf.raw

    def counters(self) -> dict[str, int]:
        """The per-CPU counters summed over CPUs, by name."""
        out = {}
        for i, name in enumerate(COUNTERS):
            per_cpu = self._per_cpu("counters", i)
            out[name] = max(per_cpu, default=0) if name == "latency_max_ns" else sum(per_cpu)
        return out

    def _per_cpu(self, m: str, index: int) -> tuple[int, ...]:
        raw = self.lookup(m, _U32.pack(index), 8 * self.ncpus) or b""
        return struct.unpack(f"<{len(raw) // 8}Q", raw)

    def latency_buckets(self) -> list[int]:
        """The branched packets' latency histogram (engine/dataplane/histogram.py buckets)."""
        from engine.dataplane import histogram

        return [sum(self._per_cpu("latency", i)) for i in range(histogram.NBUCKETS)]

    def memory(self) -> dict[str, int]:
        """Kernel memory charged to each map (``memlock`` in its fdinfo), bytes."""
        out = {}
        for m, fd in self.maps.items():
            try:
                text = Path(f"/proc/self/fdinfo/{fd}").read_text()
            except OSError:
                continue
            hit = re.search(r"^memlock:\s*(\d+)", text, re.M)
            if hit:
                out[m] = int(hit.group(1))
        return out

    def pin(self, directory: Path) -> None:
        """Pin the program and its maps under ``directory`` (replacing older pins there)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, fd in (("prog", self.prog_fd), *self.maps.items()):
            p = directory / name
            if p.exists():
                p.unlink()
            _check(self.lib.bpf_obj_pin(fd, str(p).encode()), f"pin {p}")

    def test_run(self, frame: bytes) -> TestRun:
        """BPF_PROG_TEST_RUN on one frame (copies it redirects really leave on their links)."""
        out = ctypes.create_string_buffer(len(frame) + 256)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
        inp = ctypes.create_string_buffer(frame, len(frame))
        opts.data_in = ctypes.cast(inp, ctypes.c_void_p)
        opts.data_size_in = len(frame)
        opts.data_out = ctypes.cast(out, ctypes.c_void_p)
        opts.data_size_out = len(out)
        opts.repeat = 1
        _check(self.lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(opts)), "test run")
        return TestRun(opts.retval, out.raw[: opts.data_size_out])

    # -- TC ---------------------------------------------------------------------------------
    def attach(self, ifindex: int) -> None:
        """Our filter on the link's clsact ingress; an existing one's program is replaced in place."""
        hook = _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS)
        rc = self.lib.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and -rc != errno.EEXIST:
            _check(rc, f"clsact on ifindex {ifindex}")
        opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=self.prog_fd, flags=BPF_TC_F_REPLACE,
                       handle=TC_HANDLE, priority=TC_PRIORITY)
        _check(self.lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
               f"attach to ifindex {ifindex}")

    def detach(self, ifindex: int) -> None:
        """Remove our filter (the clsact qdisc and other filters stay)."""
        hook = _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS)
        opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=TC_HANDLE, priority=TC_PRIORITY)
        rc = self.lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
        if rc < 0 and -rc not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            _check(rc, f"detach from ifindex {ifindex}")


# ------------------------------------------------------------------------------------------
# The control plane
# ------------------------------------------------------------------------------------------
class KernelPath:
    """Program + maps kept equal to the Fib and link map; attach/detach on the ingress links."""

    def __init__(self, program: Program, pin_dir: Path | None = None) -> None:
        self.prog = program
        self.reg = Registry()
        self.links = LinkMap([])
        self.active = 0
        self.pin_dir = pin_dir
        self.attached: list[int] = []
        self._lock = threading.Lock()
        self._routes: dict[ipaddress.IPv6Network, bytes] = {}

    @classmethod
    def load(cls, obj_path: Path | None = None, pin_dir: Path | None = None) -> KernelPath:
        """Build (if needed) and load the program; KernelPathError says why it cannot run."""
        from engine.dataplane.kernel.build import BuildError, build

        try:
            path = obj_path or build()
        except BuildError as e:
            raise KernelPathError(str(e)) from e
        except OSError as e:
            # an install the service user may not write (the Ansible role builds it as root)
            raise KernelPathError(
                f"the TC program is not built for this install and cannot be built here ({e.strerror}: "
                f"{e.filename}); run 'python -m engine.dataplane.kernel.build' as root") from e
        return cls(Program(path), pin_dir)

    # -- maps -------------------------------------------------------------------------------
    def _link_entries(self, ifnames: Iterable[str]) -> None:
        for name in ifnames:
            lid, _ = self.reg.link_id(name)
            self.prog.update("links", _U32.pack(lid), link_value(name, self.links))

    def set_links(self, links: LinkMap) -> None:
        """A new link map: every router interface's entry rewritten (each one atomic)."""
        with self._lock:
            self.links = links
            names = set(self.reg.ifnames) | {lk.router_ifname for lk in links.links()}
            self._link_entries(sorted(names))
            # then the ECMP sets' usable members (each entry replaced whole)
            for hops, gid in self.reg.ecmp.items():
                self.prog.update("ecmp", _U32.pack(gid), ecmp_value(hops, self.reg, links))

    def _write(self, trie: str, adds: list[tuple[bytes, bytes]], removes: list[bytes]) -> None:
        for k in removes:
            self.prog.delete(trie, k)
        for k, v in adds:
            self.prog.update(trie, k, v)

    def apply(self, adds: Iterable[Route], removes: Iterable[ipaddress.IPv6Network]) -> None:
        """One sync diff: idle trie, flip, other trie (see the module docstring)."""
        with self._lock:
            entries = []
            reg = self.reg
            if_before = len(reg.ifnames)
            adds, removes = list(adds), list(removes)
            if reg.ecmp_free and reg.ecmp_waiting:
                # ids an earlier diff freed: the routes punted for want of one get theirs now
                named = {r.prefix for r in adds} | set(removes)
                adds = [r for p, r in reg.ecmp_waiting.items() if p not in named] + adds
            for r in adds:
                entries.append((lpm_key(r.prefix), route_value(r, reg)))
            dels = []
            for p in removes:
                reg.bind(p, None)              # after the adds: a set one of them took over stays
                reg.ecmp_waiting.pop(p, None)
                dels.append(lpm_key(p))
            sets = [(gid, ecmp_value(hops, reg, self.links)) for hops, gid in reg.take_new_sets()]
            # before any route names them: interface entries, then the (immutable) ECMP sets
            new_ifnames = list(reg.ifnames)[if_before:]
            if new_ifnames:
                self._link_entries(new_ifnames)
            for gid, val in sets:
                self.prog.update("ecmp", _U32.pack(gid), val)
            tries = ("routes_a", "routes_b")
            idle = 1 - self.active
            self._write(tries[idle], entries, dels)
            self.prog.update("ctl", _U32.pack(0), _U32.pack(idle))
            self.active = idle
            self._write(tries[1 - idle], entries, dels)
            # no route in either trie names them now: the sets the diff stopped using go
            for gid in reg.settle():
                self.prog.delete("ecmp", _U32.pack(gid))

    def replace(self, routes: Iterable[Route], links: LinkMap) -> None:
        """Fill the (empty, freshly loaded) maps from the whole table and link map."""
        self.set_links(links)
        self.apply(routes, ())

    # -- TC ---------------------------------------------------------------------------------
    def attach(self, ifnames: Iterable[str]) -> None:
        """Attach to each ingress link (replacing an older instance's program atomically), pin."""
        for name in ifnames:
            idx = socket_if_nametoindex(name)
            self.prog.attach(idx)
            self.attached.append(idx)
        self.prog.watch_redirects()
        if self.prog.watch_problem:
            log.warning("kernel path: a failed redirect of a packet's last copy is not counted in "
                        "egress_errors (the links' own drop counters have it): redirect watch: %s",
                        self.prog.watch_problem)
        if self.pin_dir is not None:
            try:
                self.prog.pin(self.pin_dir)
            except OSError as e:     # no bpffs: the path works, only bpftool by path does not
                log.warning("kernel path: not pinned under %s (%s)", self.pin_dir, e)

    def detach(self) -> None:
        """Remove our filters and pins; the maps go with the last reference."""
        for idx in self.attached:
            try:
                self.prog.detach(idx)
            except OSError as e:
                log.warning("kernel path: detach from ifindex %d: %s", idx, e)
        self.attached.clear()
        self.prog.unwatch_redirects()
        if self.pin_dir is not None and self.pin_dir.is_dir():
            for p in self.pin_dir.iterdir():
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.pin_dir.rmdir()

    def close(self) -> None:
        self.detach()
        self.prog.close()

    def counters(self) -> dict[str, int]:
        return self.prog.counters()


def socket_if_nametoindex(name: str) -> int:
    """ifindex of a link (OSError naming the link if it does not exist)."""
    import socket

    try:
        return socket.if_nametoindex(name)
    except OSError as e:
        raise OSError(e.errno, f"engine link {name!r} does not exist") from e


# ------------------------------------------------------------------------------------------
# Start-up by mode, and the counters' way into the workers' counter file
# ------------------------------------------------------------------------------------------
def start(mode: str, routes: Iterable[Route], links: LinkMap, ingress: Iterable[str],
          pin_dir: Path | None) -> tuple[KernelPath | None, str]:
    """``[dataplane] mode``: (the attached kernel path or None, a sentence for the log).

    ``bpf`` raises KernelPathError when the program cannot run; ``auto`` returns None and why.
    """
    if mode == "python":
        return None, "data path: Python workers ([dataplane] mode = \"python\")"
    kp: KernelPath | None = None
    try:
        kp = KernelPath.load(pin_dir=pin_dir)
        kp.replace(routes, links)
        kp.attach(ingress)
    except (KernelPathError, OSError) as e:
        if kp is not None:
            kp.close()
        if mode == "bpf":
            raise KernelPathError(f"[dataplane] mode = \"bpf\": {e}") from e
        first = str(e).splitlines()[0]
        return None, f"data path: Python workers (mode auto: the TC eBPF path did not start: {first})"
    mem = sum(kp.prog.memory().values())
    return kp, (f"data path: TC eBPF on {', '.join(ingress)} (mode {mode}), Python workers for what it "
                f"punts; maps {mem // 1024} KiB")


class CounterPublisher:
    """Copies the program's counters into its own row of the counter file, every ``interval``.

    The row is one more slot after the workers' (their reader sums rows), so ``stats``, /stats
    and /metrics show kernel and Python work together under the same names; ``kernel_received``
    and ``kernel_punted`` say how it divided.
    """

    def __init__(self, kp: KernelPath, counters_path: Path, slot: int, interval: float = 0.1) -> None:
        from engine.dataplane.counters import CounterFile

        self.kp = kp
        self.cf = CounterFile.open(counters_path, writable=True)
        self.slot = self.cf.slot(slot)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xcast6-bpf-counters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self) -> None:
        """One copy now (absolute values: the program's counters only grow)."""
        c = self.kp.counters()
        row = dict(c)
        row["kernel_received"] = c["received"]
        row["kernel_punted"] = sum(v for k, v in c.items() if k.startswith("punt."))
        for k, v in c.items():
            if k.startswith("punt."):
                row[f"kernel_punt_{k[5:]}"] = v
        w, idx = self.slot.words, self.slot.index_of
        for name, value in row.items():
            i = idx.get(name)
            if i is not None:
                w[i] = value
        self.slot.set_histogram(self.kp.prog.latency_buckets())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception:          # a counter read must never take the data path down
                log.exception("kernel path: counters not published")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 1)
        with contextlib.suppress(Exception):
            self.publish()
        self.cf.close()
