"""Differential harness: one frame through the TC program on real veths and through the brancher.

A namespace holds the ingress veth (``kin``, the program on its clsact ingress; frames are sent
into it from its peer ``kinp``) and one veth per router interface (``keN``, the engine link the
copies leave on; captured on the peer ``keNp``).  IPv6 is off on every one of them, so the only
frames are the test's.  The Python reference is the worker's brancher and egress rule
(``default_brancher_factory`` + ``Egress``) over the same Fib and link map.

What is compared, per frame: the multiset of (egress link, frame bytes), the punt (the frame
reaches an ``ETH_P_IPV6`` AF_PACKET socket on ``kin`` -- exactly how the worker is bound --
unchanged, and nothing else is sent), and the drop counters.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from engine.dataplane import afpacket
from engine.dataplane.egress import Egress, EgressEntry
from engine.dataplane.kernel_path import KernelPath
from engine.forwarding.branch import Brancher
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, Route
from engine.wire.layout import ETH_P_IPV6
from lab import netns

ROUTER_MAC = bytes.fromhex("02000000aa01")
MTU = 9000           # 126 destinations make a 2 KB packet
ETH_P_ALL = 0x0003
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263


@dataclass
class Outcome:
    """What one side did with one frame."""

    frames: Counter[tuple[str, bytes]]     # (router interface, frame)
    punted: bool
    drops: dict[str, int]


class Harness:
    """The namespace, the loaded program and both data paths over one table."""

    def __init__(self, ns: str, kp: KernelPath, names: list[str]) -> None:
        self.ns = ns
        self.kp = kp
        self.names = names                       # router interface names r0..rK-1
        self.engine_links: list[EngineLink] = []
        self.caps: dict[str, socket.socket] = {}
        self.fib = Fib()
        self.linkmap = LinkMap([])

    # -- set-up -------------------------------------------------------------------------------
    def build(self, nlinks: int) -> None:
        ns = self.ns
        netns.veth(ns, "kin", ns, "kinp", mtu=MTU)
        for i in range(nlinks):
            netns.veth(ns, f"ke{i}", ns, f"ke{i}p", mtu=MTU)
        for n in ["kin", "kinp", *(f"ke{i}{s}" for i in range(nlinks) for s in ("", "p"))]:
            netns.sysctl(ns, f"net.ipv6.conf.{n}.disable_ipv6", "1")
        for i, name in enumerate(self.names[:nlinks]):
            self.engine_links.append(EngineLink(
                router_ifname=name, engine_ifname=f"ke{i}",
                engine_ifindex=netns.ifindex(ns, f"ke{i}"), vlan_id=None,
                engine_addr=bytes.fromhex(f"20010db8ee000000000000000000{i + 1:04x}"),
                router_addr=None, engine_mac=netns.mac(ns, f"ke{i}"), router_mac=ROUTER_MAC, mtu=MTU))
        with netns.in_netns(ns):
            for i, name in enumerate(self.names[:nlinks]):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                s.bind((f"ke{i}p", ETH_P_ALL))
                s.setblocking(False)
                self.caps[name] = s
            # the worker's own ingress socket (classic BPF filter, bound to ETH_P_IPV6)
            self.punt = afpacket.open_ingress("kin", None)
            self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self.tx.bind(("kinp", 0))
            self.kp.attach(["kin"])
        self.kin_mac = netns.mac(ns, "kin")

    def set_table(self, routes: list[Route], links: list[EngineLink] | None = None) -> None:
        """Both paths get the same table and link map."""
        self.linkmap = LinkMap(self.engine_links if links is None else links)
        old = [r.prefix for r in self.fib.routes()]
        self.fib = Fib(routes)
        self.kp.set_links(self.linkmap)
        self.kp.apply(routes, [p for p in old if self.fib.get(p) is None])

    def close(self) -> None:
        for s in [*self.caps.values(), getattr(self, "punt", None), getattr(self, "tx", None)]:
            if s is not None:
                s.close()
        with netns.in_netns(self.ns):
            self.kp.detach()

    # -- the two paths ------------------------------------------------------------------------
    def python(self, packet: bytes) -> Outcome:
        """The reference: the worker's brancher and egress rule."""
        egress = Egress(self.linkmap)
        res = Brancher(self.fib, self.linkmap.source_for, egress_ok=egress.routable).branch(packet)
        frames: Counter[tuple[str, bytes]] = Counter()
        for c in res.copies:
            e = egress.resolve(c.nexthop.ifname)
            if not isinstance(e, EgressEntry):
                return Outcome(Counter(), True, {})     # the kernel punts these
            frames[(c.nexthop.ifname, e.l2 + c.data)] += 1
        drops = {str(getattr(k, "value", k)): v for k, v in res.drops.items()}
        return Outcome(frames, False, drops)

    def kernel(self, packet: bytes, expect: int, wait: float = 0.25) -> Outcome:
        """Send the frame into ``kin``; collect copies and the punt."""
        before = self.kp.counters()
        frame = self.kin_mac + bytes.fromhex("020000000b01") + ETH_P_IPV6.to_bytes(2, "big") + packet
        self.tx.send(frame)
        frames: Counter[tuple[str, bytes]] = Counter()
        punted: list[bytes] = []
        by_fd = {s.fileno(): (n, s) for n, s in self.caps.items()}
        by_fd[self.punt.fileno()] = ("punt", self.punt)
        deadline = time.monotonic() + wait
        settle: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline or (settle is not None and now >= settle):
                break
            if settle is None and (sum(frames.values()) >= expect > 0 or punted):
                settle = now + 0.01       # a little longer: nothing more may come
            r, _, _ = select.select(list(by_fd), [], [], 0.005)
            for fd in r:
                name, s = by_fd[fd]
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data = s.recv(65536)
                        if name == "punt":
                            punted.append(data)
                        else:
                            frames[(name, data)] += 1
        after = self.kp.counters()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        drops = {k[5:]: v for k, v in delta.items() if k.startswith("drop.")}
        punt_counted = any(k.startswith("punt.") for k in delta)
        if punted:
            assert punted == [frame], "a punted frame must reach the worker unchanged, once"
            assert punt_counted, delta
        if punt_counted:
            assert not frames, f"punted but also sent {len(frames)} copies"
            assert "received" not in delta, delta
        return Outcome(frames, punt_counted, drops)


@contextlib.contextmanager
def harness(kp: KernelPath, nlinks: int = 4) -> Iterator[Harness]:
    """A namespace with ``nlinks`` engine links (router interfaces r0..) and the program attached."""
    with netns.temporary("bpf-kd") as (ns,):
        h = Harness(ns, kp, [f"r{i}" for i in range(nlinks + 2)])
        try:
            h.build(nlinks)
            yield h
        finally:
            h.close()
