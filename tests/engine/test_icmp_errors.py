"""ICMPv6 errors: the message format (checked with scapy), every rule of when one is due and
what it quotes, and the token bucket (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6, in6_chksum

from engine.forwarding.branch import Brancher, BranchResult
from engine.forwarding.icmp_errors import (
    ErrorKind,
    TokenBucket,
    counter_names,
    plan_error,
    quote_of,
    refusal,
)
from engine.wire.codec import FLAG_ANONYMOUS, build_xcast, parse
from engine.wire.icmp6 import MAX_QUOTE, build_error, parse_icmp6, parse_quote
from engine.wire.layout import (
    DEST_OFF,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    IPV6_MIN_MTU,
    NH_ICMPV6,
)
from engine.wire.packet import XcastPacket
from engine.wire.reasons import DropReason
from tests.engine.helpers import ENGINE_ADDR, SENDER, a, example_fib

ENGINE = a("2001:db8:e1::1")
H1, H2, H3 = a("2001:db8:1::1"), a("2001:db8:2::1"), a("2001:db8:3::5")
UNROUTABLE = a("2001:db8:99::1")


def branch(pkt: bytes) -> BranchResult:
    return Brancher(example_fib(), ENGINE_ADDR.get).branch(pkt)


def xc(dests: list[bytes], payload: bytes = b"x", **kw: object) -> bytes:
    return build_xcast(SENDER, dests, payload, sport=7, dport=33434, **kw)  # type: ignore[arg-type]


def parsed(pkt: bytes) -> XcastPacket:
    p = parse(pkt)
    assert isinstance(p, XcastPacket)
    return p


# ---------------------------------------------------------------------------- the message
def test_error_is_valid_icmpv6_for_scapy() -> None:
    invoking = xc([H1, H2], b"p" * 100)
    err = build_error(ICMP6_TIME_EXCEEDED, 0, 0, ENGINE, SENDER, invoking)
    s = IPv6(err)
    assert s.nh == NH_ICMPV6 and s.hlim == 64 and s.src == "2001:db8:e1::1" and s.dst == "2001:db8:ff::1"
    te = s[ICMPv6TimeExceeded]
    assert te.code == 0
    icmp = bytes(s.payload)
    assert in6_chksum(NH_ICMPV6, s, icmp) == 0 or in6_chksum(NH_ICMPV6, s, icmp) == 0xFFFF
    assert icmp[8:] == invoking


def test_packet_too_big_carries_mtu_and_fits_1280() -> None:
    invoking = xc([H1], b"z" * 1400)
    err = build_error(ICMP6_PACKET_TOO_BIG, 0, 1300, ENGINE, SENDER, invoking)
    assert len(err) == IPV6_MIN_MTU
    assert IPv6(err)[ICMPv6PacketTooBig].mtu == 1300
    m = parse_icmp6(err)
    assert m is not None and m.checksum_ok and m.mtu == 1300 and m.body == invoking[:MAX_QUOTE]


def test_parse_detects_corruption() -> None:
    err = bytearray(build_error(ICMP6_TIME_EXCEEDED, 0, 0, ENGINE, SENDER, xc([H1])))
    err[-1] ^= 0xFF
    m = parse_icmp6(bytes(err))
    assert m is not None and not m.checksum_ok


def test_quote_parsing_xcast_and_cut_short() -> None:
    dests = [a(f"2001:db8:1::{i:x}") for i in range(1, 91)]   # 90 dests: header 1544 > quote
    pkt = xc(dests, bitmap=0b101)
    q = parse_quote(pkt[:MAX_QUOTE])
    assert q is not None and q.kind == "xcast" and q.source == SENDER
    assert len(q.dests) == (MAX_QUOTE - DEST_OFF) // 16 and q.live == (dests[0], dests[2])
    assert q.sport is None            # the UDP header was cut off
    full = parse_quote(xc([H1, H2]))
    assert full is not None and (full.sport, full.dport) == (7, 33434) and full.live == (H1, H2)


# ---------------------------------------------------------------------------- the rules
def test_time_exceeded_one_per_packet_quoting_it_as_received() -> None:
    pkt = xc([H1, H2, H3], hop_limit=1)
    plan = plan_error(branch(pkt))
    assert plan is not None and plan.kind is ErrorKind.TIME_EXCEEDED and plan.refused is None
    assert plan.dst == SENDER and plan.quote == pkt
    err = IPv6(plan.build(ENGINE))
    assert err.src == "2001:db8:e1::1" and err[ICMPv6TimeExceeded].code == 0 and bytes(err)[48:] == pkt


def test_time_exceeded_goes_to_original_sender_not_outer_source() -> None:
    pkt = xc([H1, H2], hop_limit=1, outer_src=a("2001:db8:ea3::2"))    # a copy from engine A
    plan = plan_error(branch(pkt))
    assert plan is not None and plan.dst == SENDER


def test_no_error_while_forwarding() -> None:
    assert plan_error(branch(xc([H1, H2, H3], hop_limit=2))) is None


def test_destination_unreachable_only_when_nothing_routable() -> None:
    only_bad = xc([UNROUTABLE, a("2001:db8:98::1")])
    plan = plan_error(branch(only_bad))
    assert plan is not None and plan.kind is ErrorKind.DEST_UNREACHABLE and plan.quote == only_bad
    mixed = branch(xc([UNROUTABLE, H1]))
    assert mixed.drops[DropReason.NO_ROUTE] == 1 and plan_error(mixed) is None


def test_packet_too_big_with_the_link_mtu() -> None:
    pkt = xc([H1, H2], b"y" * 1500)
    plan = plan_error(branch(pkt), too_big_mtu=1280)
    assert plan is not None and plan.kind is ErrorKind.PACKET_TOO_BIG and plan.param == 1280
    assert IPv6(plan.build(ENGINE))[ICMPv6PacketTooBig].mtu == 1280


def test_packet_too_big_quotes_the_packet_as_the_sender_sent_it() -> None:
    """Straight from the sender the packet is quoted as received (it *is* the sender's); a copy
    from an upstream branch point gets the sender's outer source and destination back, the
    only quote the sender's kernel matches to its path-MTU cache (icmp_errors module doc)."""
    direct = xc([H1, H2], b"y" * 1500)
    plan = plan_error(branch(direct), too_big_mtu=1280)
    assert plan is not None and plan.quote == direct
    upstream = a("2001:db8:77::1")                  # another engine's copy for h2 only
    copied = xc([H1, H2], b"y" * 1500, bitmap=0b10, outer_src=upstream, hop_limit=60)
    assert copied[8:24] == upstream and copied[24:40] == H2
    plan = plan_error(branch(copied), too_big_mtu=1280)
    assert plan is not None and plan.kind is ErrorKind.PACKET_TOO_BIG
    assert plan.quote[8:24] == SENDER and plan.quote[24:40] == H1
    assert plan.quote[:8] == copied[:8] and plan.quote[40:] == copied[40:]
    te = plan_error(branch(xc([H1, H2], bitmap=0b10, outer_src=upstream, hop_limit=1)))
    assert te is not None and te.kind is ErrorKind.TIME_EXCEEDED and te.quote[8:24] == upstream


def test_hop_limit_wins_over_too_big() -> None:
    plan = plan_error(branch(xc([H1], hop_limit=1)), too_big_mtu=1280)
    assert plan is not None and plan.kind is ErrorKind.TIME_EXCEEDED


def test_never_for_malformed_packets() -> None:
    pkt = bytearray(xc([H1, H2], hop_limit=1))
    pkt[DEST_OFF - 16] = 0xFF          # a bitmap bit beyond N
    r = branch(bytes(pkt))
    assert r.reject is not None and plan_error(r) is None and plan_error(r, too_big_mtu=1280) is None


def test_never_for_invalid_destinations_or_empty_bitmap() -> None:
    assert plan_error(branch(xc([H1, a("ff02::1")], hop_limit=1))) is None
    assert plan_error(branch(xc([H1, H2], hop_limit=1, bitmap=0, outer_dst=H1))) is None


def test_refused_for_bad_sources() -> None:
    for src in ("::", "ff02::1", "fe80::1", "::1"):
        pkt = build_xcast(a(src), [H1], b"x", hop_limit=1, outer_src=SENDER)
        plan = plan_error(branch(pkt))
        assert plan is not None and plan.refused and "original source" in plan.refused
    pkt = build_xcast(SENDER, [H1], b"x", hop_limit=1, outer_src=a("ff05::2"))
    plan = plan_error(branch(pkt))
    assert plan is not None and plan.refused and "outer source" in plan.refused


def test_refused_for_icmpv6_errors_not_for_echo() -> None:
    te = bytes([ICMP6_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0]) + b"q" * 40
    plan = plan_error(branch(build_xcast(SENDER, [H1], transport=NH_ICMPV6, transport_bytes=te, hop_limit=1)))
    assert plan is not None and plan.refused == "the packet is an ICMPv6 error"
    echo = bytes([128, 0, 0, 0, 0, 1, 0, 1])
    pkt = build_xcast(SENDER, [H1], transport=NH_ICMPV6, transport_bytes=echo, hop_limit=1)
    plan = plan_error(branch(pkt))
    assert plan is not None and plan.refused is None


def test_anonymous_quote_zeroes_destinations_not_live() -> None:
    pkt = xc([H1, H2, H3], hop_limit=1, flags=FLAG_ANONYMOUS, bitmap=0b101)
    plan = plan_error(branch(pkt))
    assert plan is not None and plan.refused is None
    q = parse_quote(plan.quote)
    assert q is not None and q.dests == (H1, bytes(16), H3)
    assert len(plan.quote) == len(pkt)
    plain = parsed(xc([H1, H2, H3], bitmap=0b101))
    assert quote_of(plain) == plain.data and refusal(plain) is None


def test_counter_names_are_unique_and_labelled() -> None:
    names = counter_names()
    assert len(set(names)) == len(names) == 14
    assert "icmp_sent.time_exceeded" in names and "icmp_suppressed.packet_too_big" in names


# ---------------------------------------------------------------------------- token bucket
@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.5, 1000), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_bucket_never_exceeds_burst_plus_rate(rate: float, burst: int, gaps: list[float]) -> None:
    b = TokenBucket(rate, burst, now=0.0)
    t = 0.0
    allowed = 0
    for g in gaps:
        t += g
        allowed += b.allow(t)
        assert 0.0 <= b.tokens <= burst
    assert allowed <= burst + rate * t + 1e-6


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(1, 1000), burst=st.integers(1, 20), n=st.integers(1, 200))
def test_bucket_spaced_requests_all_pass(rate: float, burst: int, n: int) -> None:
    b = TokenBucket(rate, burst)
    assert all(b.allow(k * (1.0 / rate) * 1.0001) for k in range(n))


@given(burst=st.integers(1, 30), back=st.floats(0.001, 100))
def test_bucket_clock_going_back_adds_nothing(burst: int, back: float) -> None:
    b = TokenBucket(10, burst, now=100.0)
    assert sum(b.allow(100.0) for _ in range(burst + 5)) == burst
    assert not b.allow(100.0 - back)


def test_bucket_rate_zero_is_off_and_refills() -> None:
    assert not TokenBucket(0, 10).allow(5.0)
    b = TokenBucket(2, 2)
    assert [b.allow(0.0) for _ in range(3)] == [True, True, False]
    assert b.allow(0.5) and not b.allow(0.5)


# ---------------------------------------------------------------------------- config
def test_workers_icmp_settings_validated() -> None:
    from engine.dataplane.config import parse_workers

    cfg, problems = parse_workers({})
    assert cfg is not None and (cfg.icmp_rate, cfg.icmp_burst) == (100.0, 50) and not problems
    cfg, _ = parse_workers({"icmp_rate": 0, "icmp_burst": 5})
    assert cfg is not None and cfg.icmp_rate == 0 and cfg.summary()["icmp_burst"] == 5
    _, problems = parse_workers({"icmp_rate": -1, "icmp_burst": 0, "icmp_rat": 3})
    text = "\n".join(problems)
    want = "workers.icmp_rate: -1 is not allowed: must be a number of errors per second (0 = none) >= 0"
    assert want in text
    assert "workers.icmp_burst: 0 is not allowed" in text
    assert "icmp_rat" in text and "did you mean" in text


# ---------------------------------------------------------------------------- properties
@settings(max_examples=300, deadline=None)
@given(t=st.integers(0, 127), code=st.integers(0, 255), param=st.integers(0, 2**32 - 1),
       invoking=st.binary(max_size=3000))
def test_any_error_round_trips_within_1280(t: int, code: int, param: int, invoking: bytes) -> None:
    err = build_error(t, code, param, ENGINE, SENDER, invoking)
    assert len(err) <= IPV6_MIN_MTU
    m = parse_icmp6(err)
    assert m is not None and m.checksum_ok and (m.icmp_type, m.code, m.param) == (t, code, param)
    assert m.body == invoking[:MAX_QUOTE]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1300))
def test_reading_any_quote_or_message_never_raises(data: bytes) -> None:
    parse_quote(data)
    parse_icmp6(data)
    q = parse_quote(xc([H1, H2, H3])[: len(data)] + data)
    assert q is None or q.kind in ("xcast", "udp", "other")
