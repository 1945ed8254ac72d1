"""Fuzz the parser and brancher: random and mutated inputs give a packet or a reason, nothing else."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.forwarding.branch import Brancher
from engine.wire.codec import Reject, XcastPacket, build_l2, build_xcast, parse, parse_checked
from engine.wire.reasons import DropReason
from engine.wire.xou import build_xou
from tests.engine.helpers import ENGINE_ADDR, SENDER, a, example_fib

SEEDS = [
    build_xcast(SENDER, [a("2001:db8:1::1"), a("2001:db8:2::1"), a("2001:db8:3::1")], b"seed", sport=1,
                dport=2),
    build_xcast(SENDER, [a(f"2001:db8:1::{i + 1:x}") for i in range(20)], b"x" * 30, ports=list(range(20))),
    build_xou(SENDER, [a("2001:db8:1::1"), a("2001:db8:4::1")], b"xou", sport=1, dport=2),
]


def check(buf: bytes, b: Brancher) -> None:
    # the fast path and the full checker agree on every input
    assert parse(buf) == parse_checked(buf)
    for l2 in (False, True):
        p = parse(buf, l2=l2)
        assert isinstance(p, XcastPacket | Reject)
        if isinstance(p, Reject):
            assert isinstance(p.reason, DropReason) and p.detail
        else:
            r = b.branch(p, explain=True)
            assert all(isinstance(k, DropReason) for k in r.drops)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(buf: bytes) -> None:
    check(buf, Brancher(example_fib(), ENGINE_ADDR.get))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
       st.integers(0, 2000))
def test_mutated_packets(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    b = bytearray(seed)
    for off, val in flips:
        if b:
            b[off % len(b)] = val
    check(bytes(b[: max(cut, 0)] if cut < len(b) else b), Brancher(example_fib(), ENGINE_ADDR.get))


def test_mutation_campaign_is_fast_and_total() -> None:
    """20,000 deterministic mutations (byte flips, truncations, framed) in bounded time."""
    rng = random.Random(5058)
    br = Brancher(example_fib(), ENGINE_ADDR.get)
    seen: set[str] = set()
    t0 = time.monotonic()
    for k in range(20000):
        seed = bytearray(SEEDS[k % len(SEEDS)])
        for _ in range(rng.randint(1, 4)):
            seed[rng.randrange(len(seed))] = rng.randrange(256)
        if rng.random() < 0.3:
            del seed[rng.randrange(len(seed)) :]
        buf = bytes(seed)
        if rng.random() < 0.2:
            buf = build_l2(buf, dst_mac=b"\x02" * 6, src_mac=b"\x02" * 6, vlan=rng.randrange(4096))
            p = parse(buf, l2=True)
        else:
            p = parse(buf)
            assert p == parse_checked(buf)
        if isinstance(p, Reject):
            seen.add(p.reason.value)
        else:
            br.branch(p)
    assert time.monotonic() - t0 < 60
    assert len(seen) >= 8, seen      # the campaign reaches many distinct rejection paths
