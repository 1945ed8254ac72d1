"""Flow templates (engine/forwarding/flowcache.py): a later packet of a session rendered from the template
is byte for byte what the brancher makes of it, and only the forms the template covers are learned."""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.dataplane.afpacket import TxRing
from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Egress, Worker, WorkerSpec, default_brancher_factory
from engine.forwarding.branch import Brancher
from engine.forwarding.fib import Fib
from engine.forwarding.flowcache import FlowCache, applies, flow_key, learn, render, write_frames
from engine.model import EngineLink, LinkMap
from engine.wire.codec import FLAG_ANONYMOUS, FLAG_DONT_X2U, build_xcast
from engine.wire.xou import build_xou
from tests.engine.helpers import SENDER, a, example_fib, route

SLOT = 9216
# ge-0/0/4 has a route but no engine link: its destinations count as no_route (egress_ok).
LINKS = LinkMap([
    EngineLink(f"ge-0/0/{k}", f"xc-v10{k}", 10 + k, 100 + k, a(f"2001:db8:e{k}::2"), a(f"2001:db8:e{k}::1"),
               bytes([2, 0, 0, 0, 1, k]), bytes([2, 0, 0, 0, 0, k]))
    for k in (1, 2, 3)
])

POOL = [
    a("2001:db8:1::10"), a("2001:db8:1::11"),          # gateway fe80::1
    a("2001:db8:2::10"), a("2001:db8:21::5"),          # gateway fe80::2 (two prefixes)
    a("2001:db8:3::7"), a("2001:db8:3::8"),            # connected: one copy each
    a("2001:db8:4::1"),                                # route via an interface without engine link
    a("2001:db8:dead::1"),                             # no route
]


def brancher(fib: Fib | None = None) -> Brancher:
    return default_brancher_factory(fib or example_fib(), LINKS).__self__   # type: ignore[attr-defined]


def expected_frames(b: Brancher, packet: bytes, egress: Egress) -> list[tuple[int, bytes]]:
    res = b.branch(packet)
    out = []
    for c in res.copies:
        e = egress.resolve(c.nexthop.ifname)
        assert not isinstance(e, str)
        out.append((e.ifindex, e.l2 + c.data))
    return out


def drop_names(res: object) -> list[tuple[str, int]]:
    return [("drop." + r.value, n) for r, n in res.drops.items()]   # type: ignore[attr-defined]


def learned(packet: bytes, b: Brancher | None = None) -> object:
    b = b or brancher()
    res = b.branch(packet)
    return learn(packet, res, Egress(LINKS).resolve, SLOT, drop_names(res))


def session(dests: list[bytes], payload: bytes, **kw: object) -> bytes:
    return build_xcast(SENDER, dests, payload, sport=40000, dport=9000, **kw)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dests=st.lists(st.sampled_from(POOL), min_size=1, max_size=8, unique=True),
    flags=st.sampled_from([0, FLAG_ANONYMOUS, FLAG_DONT_X2U, FLAG_ANONYMOUS | FLAG_DONT_X2U]),
    hop_limit=st.sampled_from([2, 3, 64, 255]),
    size=st.integers(0, 300),
    data=st.data(),
)
def test_template_renders_what_the_brancher_makes(dests: list[bytes], flags: int, hop_limit: int, size: int,
                                                   data: st.DataObject) -> None:
    n = len(dests)
    bitmap = data.draw(st.integers(1, (1 << n) - 1))
    first = data.draw(st.binary(min_size=size, max_size=size))
    later = data.draw(st.binary(min_size=size, max_size=size))
    kw = {"flags": flags, "hop_limit": hop_limit, "bitmap": bitmap}
    p1, p2 = session(dests, first, **kw), session(dests, later, **kw)
    assert flow_key(p1) == flow_key(p2)
    b = brancher()
    tpl = learned(p1, b)
    res1 = b.branch(p1)
    if not res1.copies:
        assert tpl is None
        return
    # every copy here has an engine link and a UDP checksum: the session must be learned
    assert tpl is not None
    assert render(tpl, p1) == expected_frames(b, p1, Egress(LINKS))   # type: ignore[arg-type]
    assert render(tpl, p2) == expected_frames(b, p2, Egress(LINKS))   # type: ignore[arg-type]
    assert dict(tpl.drops) == dict(drop_names(b.branch(p2)))          # type: ignore[attr-defined]
    # the buffer writer the worker uses produces the same frames (into a ring already holding one)
    ring = TxRing(capacity=130, slot_size=SLOT)
    ring.add(99, b"", b"an earlier frame")
    tx_tpl = learn(p1, res1, Egress(LINKS).resolve, SLOT, drop_names(res1), ring.prepare)
    assert tx_tpl is not None
    assert write_frames(tx_tpl, p2, ring.arena, ring.put)
    got = ring.frames()[1:]
    assert got == render(tpl, p2)                                         # type: ignore[arg-type]


@given(size=st.integers(1, 200), delta=st.integers(-40, 40).filter(bool))
@settings(max_examples=100, deadline=None)
def test_other_length_or_missing_checksum_does_not_apply(size: int, delta: int) -> None:
    dests = [a("2001:db8:3::7"), a("2001:db8:1::10")]
    tpl = learned(session(dests, b"x" * size))
    assert tpl is not None
    assume(size + delta >= 0)
    assert not applies(tpl, session(dests, b"x" * (size + delta)))   # type: ignore[arg-type]
    p = bytearray(session(dests, b"x" * size))
    t = 104 + 16 * 2
    p[t + 6:t + 8] = b"\0\0"       # a sender that left the UDP checksum out: full path computes it
    assert not applies(tpl, bytes(p))                                  # type: ignore[arg-type]
    assert render(tpl, bytes(p)) is None                               # type: ignore[arg-type]


def test_forms_the_template_does_not_cover_are_not_learned() -> None:
    dests = [a("2001:db8:3::7"), a("2001:db8:1::10")]
    assert learned(build_xcast(SENDER, dests, b"p", sport=1, ports=[7, 8])) is None   # port list
    xou = build_xou(SENDER, dests, b"p", sport=1, dport=2)
    assert learned(xou) is None                                                      # XOU encoding
    assert learned(build_xcast(SENDER, dests, b"p", transport=58,
                               transport_bytes=b"\x80\0\0\0\0\0\0\0")) is None       # not UDP
    local = Brancher(example_fib(), LINKS.source_for, frozenset({a("2001:db8:3::7")}))
    assert learned(session(dests, b"p"), local) is None                              # local delivery
    only_no_link = session([a("2001:db8:4::1")], b"p")
    assert learned(only_no_link) is None                                             # no copy at all
    # a next hop whose link has no router MAC yet: the worker counts egress_no_mac each time
    no_mac = LinkMap([EngineLink("ge-0/0/3", "xc-v103", 13, 103, a("2001:db8:e3::2"), None,
                                 bytes([2, 0, 0, 0, 0, 3]), None)])
    b = Brancher(example_fib(), no_mac.source_for)
    res = b.branch(session([a("2001:db8:3::7")], b"p"))
    assert learn(session([a("2001:db8:3::7")], b"p"), res, Egress(no_mac).resolve, SLOT, []) is None


def test_cache_is_bounded_and_cleared_whole() -> None:
    c = FlowCache(max_flows=2)
    tpl = learned(session([a("2001:db8:3::7")], b"p"))
    assert tpl is not None
    for k in (b"a", b"b", b"c"):
        c.put(k, tpl)                                    # type: ignore[arg-type]
    assert list(c.flows) == [b"b", b"c"]                 # the oldest went (bytes: test_flowcache_memory.py)
    assert c.evictions == 1
    c.clear(7)
    assert c.flows == {} and c.generation == 7 and c.nbytes == 0


# ---------------------------------------------------------------- in the worker
@pytest.mark.root
def test_worker_uses_the_template_and_relearns_after_a_table_change() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (the worker opens an AF_PACKET egress socket)")
    fib = example_fib()
    with tempfile.TemporaryDirectory(prefix="xfc-") as tmp:
        path = Path(tmp) / "stats.shm"
        cf = CounterFile.create(path, 1)
        w = Worker(WorkerSpec(0, [], path), fib, LINKS, default_brancher_factory)
        try:
            dests = [a("2001:db8:1::10"), a("2001:db8:3::7"), a("2001:db8:dead::1")]
            packets = [session(dests, f"payload {i}".encode()) for i in range(3)]
            for p in packets:
                w.process(p)
            w.flush_tally()
            got = w.sender.frames()
            b = brancher(fib)
            assert got == [f for p in packets for f in expected_frames(b, p, Egress(LINKS))]
            snap = cf.snapshot()
            assert snap.totals["branched"] == 3 and snap.totals["flow_cache_hits"] == 2
            assert snap.totals["drop.no_route"] == 3          # counted on every packet, cached or not
            assert snap.totals["copies_out"] + snap.totals["x2u_out"] == 6
            # the table changes: 2001:db8:1::/48 now leaves via ge-0/0/2; the next packet must follow
            w.sender.count = 0
            fib.update(add=[route("2001:db8:1::/48", "ge-0/0/2", "fe80::2")], remove=[])
            w.process(packets[0])
            w.flush_tally()
            frames = [ifindex for ifindex, _ in w.sender.frames()]
            assert sorted(frames) == [12, 13]
            assert cf.snapshot().totals["flow_cache_hits"] == 2       # relearned, not a stale hit
            # a sync diff: applied as one generation, templates dropped, new routes frozen (no GC pauses)
            frozen = gc.get_freeze_count()
            w.handle_control(("diff", [route("2001:db8:1::/48", "ge-0/0/1", "fe80::1")], []))
            assert w.flows.flows == {} and w.flows.generation == fib.generation
            assert gc.get_freeze_count() > frozen
        finally:
            gc.unfreeze()
            w.close()
