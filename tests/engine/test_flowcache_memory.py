"""Worker memory (issue 15, MEDIUM "Worker memory"): the flow templates and the branch plans are
bounded in bytes, not only in entries, and what they drop for room is counted.

The issue's scenario (4,096 sessions of 1,488-byte packets to 86 destinations of one /64, DONT_X2U:
636 MiB in one worker) is measured by bench/bench_worker_memory.py; here it is scaled down: a byte
budget of a few MB, many distinct big templates.
"""

from __future__ import annotations

import gc
import itertools
import os
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from engine.dataplane.afpacket import TxRing
from engine.dataplane.config import parse_workers
from engine.dataplane.counters import CounterFile
from engine.dataplane.worker import Egress, Worker, WorkerSpec, default_brancher_factory
from engine.forwarding import branch as branch_mod
from engine.forwarding.branch import Brancher
from engine.forwarding.flowcache import FlowCache, FlowTemplate, flow_key, learn
from engine.wire.codec import FLAG_DONT_X2U, build_xcast
from tests.engine.helpers import SENDER, a, example_fib
from tests.engine.test_flowcache import LINKS, SLOT, brancher

# 2001:db8:3::/64 is connected in example_fib: every destination is its own next hop, one copy each
BIG = [a(f"2001:db8:3::{0x100 + i:x}") for i in range(86)]


def big_sessions(count: int, n: int = 40, flags: int = FLAG_DONT_X2U,
                 payload: bytes = b"x" * 16) -> list[bytes]:
    """``count`` distinct sessions to ``n`` destinations of one /64: the source port varies and, from
    8 destinations on, the bitmap (two bits clear, a different pair each time: distinct plans)."""
    pairs = list(itertools.combinations(range(n), 2)) if n >= 8 else [()]
    out = []
    for i in range(count):
        bitmap = (1 << n) - 1
        for bit in pairs[i % len(pairs)]:
            bitmap &= ~(1 << bit)
        out.append(build_xcast(SENDER, BIG[:n], payload, sport=1024 + i, dport=9000, flags=flags,
                               bitmap=bitmap))
    return out


def issue_sessions(count: int) -> list[bytes]:
    """The issue's packets: 1,488 bytes, 86 destinations of one /64, DONT_X2U, bitmap and port vary."""
    out = big_sessions(count, 86, FLAG_DONT_X2U, b"")
    assert len(out[0]) == 1488
    return out


RING = TxRing(capacity=256, slot_size=SLOT)


def template(b: Brancher, packet: bytes) -> FlowTemplate:
    """As the worker learns it: with the transmit ring's form of its frames."""
    res = b.branch(packet)
    tpl = learn(packet, res, Egress(LINKS).resolve, SLOT, [], RING.prepare)
    assert tpl is not None
    return tpl


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_flow_cache_keeps_its_bytes_under_the_budget_and_counts_evictions() -> None:
    cap = 2 << 20
    b = brancher()
    packets = big_sessions(600)
    tracemalloc.start()
    try:
        c = FlowCache(max_bytes=cap)
        m0 = traced()
        for p in packets:                 # each template ~25 KB: 600 of them would be ~15 MB
            key = flow_key(p)
            assert key is not None
            c.put(key, template(b, p))
            assert c.nbytes <= cap
        b.clear()                         # the brancher's own caches are not the flow cache's
        held = traced() - m0
    finally:
        tracemalloc.stop()
    assert c.nbytes == sum(t.footprint for t in c.flows.values())
    assert c.evictions == len(packets) - len(c.flows) > 0
    # the accounting is honest: what the cache really holds is within its budget (+10 %)
    assert held <= cap * 1.1, (held, cap)
    # the oldest went first: the newest sessions are the ones kept
    assert list(c.flows) == [flow_key(p) for p in packets[-len(c.flows):]]


def test_a_template_larger_than_the_whole_budget_is_not_kept() -> None:
    tpl = template(brancher(), big_sessions(1)[0])
    c = FlowCache(max_bytes=tpl.footprint - 1)
    assert c.put(b"k", tpl) == 1
    assert c.flows == {} and c.nbytes == 0 and c.evictions == 1


def test_same_key_replaced_is_accounted_once() -> None:
    b = brancher()
    t1, t2 = (template(b, p) for p in big_sessions(2))
    c = FlowCache(max_bytes=1 << 20)
    c.put(b"k", t1)
    assert c.put(b"k", t2) == 0
    assert c.nbytes == t2.footprint and c.evictions == 0


@pytest.mark.parametrize(("n", "flags"), [(2, 0), (8, 0), (8, FLAG_DONT_X2U), (40, 0), (40, FLAG_DONT_X2U)])
def test_footprint_estimate_matches_the_real_memory(n: int, flags: int) -> None:
    """Templates (with their keys) and plans: the estimate is not below what tracemalloc sees
    (+10 %), nor half as much again (a budget that means something)."""
    packets = big_sessions(150, n, flags)
    b = brancher()
    b.branch(packets[0])            # per-destination cache warm: measured below are the plans
    b._plans.clear()
    b.plan_bytes = 0
    tracemalloc.start()
    try:
        m0 = traced()
        kept = {flow_key(p): template(b, p) for p in packets}
        m1 = traced()
        b._plans.clear()
        m2 = traced()
    finally:
        tracemalloc.stop()
    estimate = sum(t.footprint for t in kept.values())
    real_templates = m2 - m0
    assert real_templates <= estimate * 1.1 and estimate <= 1.5 * real_templates, (real_templates, estimate)
    real_plans = m1 - m2
    plan_estimate = b.plan_bytes
    assert real_plans <= plan_estimate * 1.1 and plan_estimate <= 1.5 * real_plans, \
        (real_plans, plan_estimate)


def test_plans_keep_their_bytes_under_the_budget_and_count_evictions() -> None:
    cap = 512 << 10
    b = Brancher(example_fib(), LINKS.source_for, plan_cache_bytes=cap)
    packets = big_sessions(400)      # each plan ~14 KB: 400 would be ~5.6 MB
    b.branch(packets[0])
    tracemalloc.start()
    try:
        m0 = traced()
        for p in packets:
            assert b.branch(p).copies
            assert b.plan_bytes <= cap
        held = traced() - m0
    finally:
        tracemalloc.stop()
    assert b.plan_bytes == sum(branch_mod.plan_cost(k, p) for k, p in b._plans.items())
    assert b.plan_evictions == len(packets) - len(b._plans) > 0
    assert held <= cap * 1.1, (held, cap)
    evicted = b.plan_evictions
    b.clear()          # a table change is not an eviction
    assert b._plans == {} and b.plan_bytes == 0 and b.plan_evictions == evicted


def test_worker_budgets_come_from_the_workers_section() -> None:
    cfg, problems = parse_workers({})
    assert not problems and cfg is not None
    assert (cfg.flow_cache_mb, cfg.plan_cache_mb) == (24, 8)
    cfg, problems = parse_workers({"flow_cache_mb": 4, "plan_cache_mb": 2})
    assert cfg is not None and (cfg.flow_cache_mb, cfg.plan_cache_mb) == (4, 2)
    assert cfg.summary()["flow_cache_mb"] == 4
    _, problems = parse_workers({"flow_cache_mb": 0, "plan_cache_mb": "lots"})
    assert len(problems) == 2 and all("cache_mb" in p for p in problems)


def held_after_sessions(w: Worker, packets: list[bytes]) -> int:
    """Bytes the worker still holds after branching ``packets[1:]`` (the first one warms it up);
    the TX ring is reset after each packet instead of sending."""
    w.process(packets[0])
    w.sender.count = 0
    tracemalloc.start()
    try:
        m0 = traced()
        for p in packets[1:]:
            w.process(p)
            w.sender.count = 0
        w.flush_tally()
        return traced() - m0
    finally:
        tracemalloc.stop()


@pytest.mark.root
def test_worker_memory_stays_within_its_budgets_and_exports_the_evictions() -> None:
    """The issue's scenario scaled down: many distinct big sessions through Worker.process."""
    if os.geteuid() != 0:
        pytest.fail("needs root (the worker opens an AF_PACKET egress socket)")
    flow_cap, plan_cap = 2 << 20, 1 << 20
    packets = big_sessions(500)
    with tempfile.TemporaryDirectory(prefix="xfm-") as tmp:
        path = Path(tmp) / "stats.shm"
        cf = CounterFile.create(path, 1)
        spec = WorkerSpec(0, [], path, flow_cache_bytes=flow_cap, plan_cache_bytes=plan_cap)
        w = Worker(spec, example_fib(), LINKS, default_brancher_factory)
        try:
            held = held_after_sessions(w, packets)
            assert w.flows.nbytes <= flow_cap and w.brancher is not None and w.brancher.plan_bytes <= plan_cap
            assert held <= (flow_cap + plan_cap) * 1.1, held
            totals = cf.snapshot().totals
            evicted = len(packets) - len(w.flows.flows)
            assert totals["flow_cache_evictions"] == w.flows.evictions == evicted > 0
            assert totals["plan_cache_evictions"] > 0 and w.brancher.plan_evictions == 0   # published
            # the newest session is still cached: its next packet is a hit
            w.process(packets[-1])
            w.flush_tally()
            assert cf.snapshot().totals["flow_cache_hits"] == 1
        finally:
            w.close()


@pytest.mark.root
def test_worker_at_the_default_budgets_holds_no_more_than_them() -> None:
    """The issue's packets (each one a ~160 KB template and a ~27 KB plan): 320 sessions would hold
    ~58 MB; the defaults (workers.flow_cache_mb = 24, plan_cache_mb = 8) hold the worker to 32 MiB."""
    if os.geteuid() != 0:
        pytest.fail("needs root (the worker opens an AF_PACKET egress socket)")
    packets = issue_sessions(320)
    with tempfile.TemporaryDirectory(prefix="xfm-") as tmp:
        path = Path(tmp) / "stats.shm"
        CounterFile.create(path, 1)
        w = Worker(WorkerSpec(0, [], path), example_fib(), LINKS, default_brancher_factory)
        try:
            held = held_after_sessions(w, packets)
            assert len(w.flows.flows) > 1                       # learned: the big form is cached
            assert held <= 32 * 2**20 * 1.1, f"{held / 2**20:.1f} MiB held"
        finally:
            w.close()
