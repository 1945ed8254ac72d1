"""Relaying routers' ICMPv6 errors about the engine's copies to the original sender: the RFC
4884/5837 format (checked with scapy's independent dissector), every relay rule, what is quoted,
when nothing is relayed, the codec's quote reading, and hypothesis over quote lengths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMPExtension_Header, ICMPExtension_InterfaceInformation
from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6
from scapy.utils import checksum

from engine.forwarding.icmp_errors import ErrorKind, RelayPlan, as_sender_sent, plan_relay
from engine.wire.codec import FLAG_ANONYMOUS, build_xcast, parse_checked, parse_quoted
from engine.wire.icmp6 import (
    MAX_QUOTE,
    build_error,
    interface_extension,
    parse_icmp6,
    parse_quote,
    split_extensions,
)
from engine.wire.layout import (
    DEST_OFF,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAM_PROB,
    ICMP6_TIME_EXCEEDED,
    IP6_HLEN,
    IPV6_MIN_MTU,
    NH_ICMPV6,
)
from engine.wire.packet import Reject, XcastPacket
from engine.wire.reasons import DropReason
from tests.engine.helpers import SENDER, a

EA = a("2001:db8:ea3::2")        # engine A's address on the link towards router B: the copy's source
EA_SND = a("2001:db8:ea0::2")    # engine A's address on the link towards the sender
RB = a("2001:db8:ab::2")         # router B, between the engines, answering engine A
OWN = frozenset({EA, EA_SND})
H3, H4, H5 = a("2001:db8:b3::2"), a("2001:db8:b4::2"), a("2001:db8:b5::2")


def copy(dests: list[bytes] | None = None, payload: bytes = b"probe", **kw: object) -> bytes:
    """A multi-destination copy engine A sent towards router B (outer source: engine A)."""
    kw.setdefault("outer_src", EA)
    kw.setdefault("hop_limit", 1)
    return build_xcast(SENDER, dests or [H3, H4, H5], payload, sport=34434, dport=33434,  # type: ignore[arg-type]
                       inner_flow=0x12345, **kw)


def router_error(quoted: bytes, icmp_type: int = ICMP6_TIME_EXCEEDED, code: int = 0, param: int = 0,
                 src: bytes = RB, dst: bytes = EA) -> bytes:
    return build_error(icmp_type, code, param, src, dst, quoted)


def relay(err: bytes, own: frozenset[bytes] = OWN) -> RelayPlan | None:
    msg = parse_icmp6(err)
    assert msg is not None
    return plan_relay(msg, own)


# ---------------------------------------------------------------------------- the format
def test_extension_is_rfc4884_with_an_rfc5837_ip_address_object() -> None:
    ext = interface_extension(RB)
    assert checksum(ext) == 0                      # the extension header's checksum covers it all
    hdr = ICMPExtension_Header(ext)
    assert hdr.version == 2
    iio = hdr[ICMPExtension_InterfaceInformation]
    assert iio.len == 24 and iio.has_ipaddr == 1 and iio.has_ifindex == 0 and iio.has_ifname == 0
    assert iio.afi == 2 and iio.ip6 == "2001:db8:ab::2"
    assert ext[8] >> 6 == 0                        # role bits (c-type 7-6): incoming IP interface


def test_error_with_extension_pads_the_quote_and_sets_the_length() -> None:
    inner = copy(payload=b"")[IP6_HLEN:]           # 120 bytes: padded to 128
    err = build_error(ICMP6_TIME_EXCEEDED, 0, 0, EA_SND, SENDER, inner, extension=interface_extension(RB))
    s = IPv6(err)
    icmp = bytes(s.payload)
    assert s[ICMPv6TimeExceeded].code == 0 and len(inner) == 120
    assert icmp[4] == 128 // 8                     # RFC 4884 length, in 64-bit words, first byte
    assert icmp[8 : 8 + len(inner)] == inner and icmp[8 + len(inner) : 8 + 128] == bytes(128 - len(inner))
    m = parse_icmp6(err)
    assert m is not None and m.checksum_ok and m.quote == inner + bytes(128 - len(inner))
    assert m.interface == (0, RB)


def test_long_quote_leaves_room_for_the_extension() -> None:
    inner = copy(payload=b"z" * 1400)[IP6_HLEN:]
    ext = interface_extension(RB)
    err = build_error(ICMP6_TIME_EXCEEDED, 0, 0, EA_SND, SENDER, inner, extension=ext)
    assert len(err) <= IPV6_MIN_MTU
    m = parse_icmp6(err)
    assert m is not None and m.checksum_ok and len(m.quote) % 8 == 0
    assert m.quote == inner[: len(m.quote)] and len(m.quote) == (MAX_QUOTE - len(ext)) // 8 * 8
    assert m.interface == (0, RB)


def test_packet_too_big_takes_no_extension() -> None:
    with pytest.raises(ValueError, match="length field"):
        build_error(ICMP6_PACKET_TOO_BIG, 0, 1280, EA_SND, SENDER, b"x" * 200,
                    extension=interface_extension(RB))


def test_a_body_whose_extension_does_not_check_out_is_all_quote() -> None:
    body = bytes(128) + interface_extension(RB)
    assert split_extensions(ICMP6_TIME_EXCEEDED, 16 << 24, body)[1]
    broken = bytearray(body)
    broken[-1] ^= 1                                 # checksum wrong
    assert split_extensions(ICMP6_TIME_EXCEEDED, 16 << 24, bytes(broken)) == (bytes(broken), ())
    assert split_extensions(ICMP6_TIME_EXCEEDED, 0, body) == (body, ())      # no RFC 4884 length
    assert split_extensions(ICMP6_PACKET_TOO_BIG, 16 << 24, body) == (body, ())  # the MTU, not a length
    assert split_extensions(ICMP6_TIME_EXCEEDED, 200 << 24, body) == (body, ())  # length past the end


# ---------------------------------------------------------------------------- the codec's quote reading
def test_parse_quoted_whole_packet_is_parse_checked() -> None:
    pkt = copy()
    assert parse_quoted(pkt) == parse_checked(pkt)
    assert parse_quoted(pkt + bytes(24)) == parse_checked(pkt)        # an RFC 4884 zero pad


def test_parse_quoted_accepts_a_cut_packet_from_the_bitmap_on() -> None:
    dests = [a(f"2001:db8:b{i // 256:x}:{i % 256:x}::2") for i in range(90)]   # 1,544-byte header
    pkt = copy(dests, bitmap=0b110)
    cut = parse_quoted(pkt[:MAX_QUOTE])
    assert isinstance(cut, XcastPacket) and cut.src == EA and cut.orig_src == SENDER
    assert cut.n == 90 and cut.bitmap == 0b110
    assert isinstance(parse_checked(pkt[:MAX_QUOTE]), Reject)             # as a packet: truncated
    short = parse_quoted(pkt[: DEST_OFF - 1])
    assert isinstance(short, Reject) and short.reason is DropReason.TRUNCATED
    bad = bytearray(pkt[:MAX_QUOTE])
    bad[DEST_OFF - 1] = 0xFF                                             # bitmap bit beyond N
    assert isinstance(parse_quoted(bytes(bad)), Reject)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 126), payload=st.integers(0, 1400), cut=st.integers(0, 3000),
       flip=st.tuples(st.integers(0, 3000), st.integers(0, 255)))
def test_parse_quoted_never_raises_and_agrees_on_whole_packets(n: int, payload: int, cut: int,
                                                               flip: tuple[int, int]) -> None:
    pkt = bytearray(copy([a(f"2001:db8:b{i:x}::2") for i in range(n)], b"p" * payload))
    if flip[0] < len(pkt):
        pkt[flip[0]] = flip[1]
    q = bytes(pkt[:cut])
    r = parse_quoted(q)
    assert isinstance(r, XcastPacket | Reject)
    if len(q) >= IP6_HLEN and len(q) == IP6_HLEN + (q[4] << 8 | q[5]):
        assert r == parse_checked(q)


# ---------------------------------------------------------------------------- the relay rules
def test_time_exceeded_is_relayed_to_the_sender_quoting_the_inner_packet() -> None:
    c = copy()
    plan = relay(router_error(c))
    assert plan is not None and plan.refused is None and plan.kind is ErrorKind.TIME_EXCEEDED
    assert plan.dst == SENDER and plan.quote == c[IP6_HLEN:] and plan.reporter == RB
    out = plan.build(EA_SND)
    s = IPv6(out)
    assert s.src == "2001:db8:ea0::2" and s.dst == "2001:db8:ff::1" and s[ICMPv6TimeExceeded].code == 0
    m = parse_icmp6(out)
    assert m is not None and m.checksum_ok and m.interface == (0, RB)
    assert m.quote[: len(plan.quote)] == plan.quote
    q = parse_quote(m.quote)        # what the sender's traceroute reads
    assert q is not None and q.kind == "xcast" and q.inner_only and q.source == SENDER
    assert q.flow == 0x12345 and q.live == (H3, H4, H5) and q.destination == H3 and q.dport == 33434


def test_packet_too_big_quotes_the_senders_packet_and_keeps_the_routers_mtu() -> None:
    """The sender's kernel applies a Packet Too Big to the destination its quote names, and
    only when the quote is a packet it sent (outer next header 41, its own source): so the
    quote is the sender's packet as sent, and the MTU is the router's (a copy is as long as the
    sender's datagram: the engine rewrote the outer header in place, it added nothing)."""
    c = copy(payload=b"b" * 1300, bitmap=0b110)       # engine A's copy for h4, h5: sent to h4
    assert c[24:40] == H4
    plan = relay(router_error(c, ICMP6_PACKET_TOO_BIG, param=1400))
    assert plan is not None and plan.refused is None and plan.param == 1400 and plan.dst == SENDER
    sent = build_xcast(SENDER, [H3, H4, H5], b"b" * 1300, sport=34434, dport=33434, inner_flow=0x12345)
    q = plan.quote
    assert q[8:24] == SENDER and q[24:40] == H3       # the outer header the sender wrote
    assert q[:7] == sent[:7] and q[40:] == c[40 : len(q)] and len(q) == MAX_QUOTE
    s = IPv6(plan.build(EA_SND))
    assert s[ICMPv6PacketTooBig].mtu == 1400 and len(bytes(s)) <= IPV6_MIN_MTU
    assert s.src == "2001:db8:ea0::2" and s.dst == "2001:db8:ff::1"
    quoted = parse_quote(bytes(s[ICMPv6PacketTooBig].payload))    # what an XCAST6 application reads
    assert quoted is not None and quoted.kind == "xcast" and not quoted.inner_only
    assert quoted.source == SENDER and quoted.destination == H3 and quoted.live == (H4, H5)
    for router_mtu, relayed in ((1300, 1300), (1280, 1280), (1200, IPV6_MIN_MTU)):
        low = relay(router_error(c, ICMP6_PACKET_TOO_BIG, param=router_mtu))
        assert low is not None and low.param == relayed


def test_packet_too_big_about_an_anonymous_copy_never_names_a_hidden_destination() -> None:
    c = copy([bytes(16), H4, H5], flags=FLAG_ANONYMOUS, bitmap=0b110)  # destination 0 zeroed by engine A
    plan = relay(router_error(c, ICMP6_PACKET_TOO_BIG, param=1400))
    assert plan is not None and plan.refused is None
    assert plan.quote[8:24] == SENDER and plan.quote[24:40] == H4          # the copy's own destination
    shown = copy([H3, H4, H5], flags=FLAG_ANONYMOUS, bitmap=0b011)         # destination 0 live: named
    plan = relay(router_error(shown, ICMP6_PACKET_TOO_BIG, param=1400))
    assert plan is not None and plan.quote[24:40] == H3


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 126), data=st.data(), anonymous=st.booleans(), payload=st.integers(0, 1400),
       cut=st.integers(104, 1232), mtu=st.integers(0, 9000))
def test_relayed_packet_too_big_is_the_copy_with_the_senders_addresses(
        n: int, data: st.DataObject, anonymous: bool, payload: int, cut: int, mtu: int) -> None:
    bitmap = data.draw(st.integers(1, (1 << n) - 1))
    dests = [a(f"2001:db8:b{i:x}::2") if not anonymous or bitmap >> i & 1 else bytes(16) for i in range(n)]
    c = copy(dests, b"p" * payload, bitmap=bitmap, flags=FLAG_ANONYMOUS if anonymous else 0)
    quoted = c[:cut]
    plan = relay(router_error(quoted, ICMP6_PACKET_TOO_BIG, param=mtu))
    assert plan is not None and plan.refused is None and plan.param == max(IPV6_MIN_MTU, mtu)
    q = plan.quote
    assert len(q) == len(quoted) and q[:8] == quoted[:8] and q[40:] == quoted[40:]
    assert q[8:24] == SENDER
    first = next(i for i in range(n) if bitmap >> i & 1)
    dest0_known = (bitmap & 1 or not anonymous) and cut >= DEST_OFF + 16
    assert q[24:40] == (dests[0] if dest0_known else dests[first])      # else the copy's own
    assert q[24:40] != bytes(16)
    pkt = parse_quoted(quoted)
    assert isinstance(pkt, XcastPacket) and as_sender_sent(pkt, quoted) == q


def test_destination_unreachable_keeps_the_routers_code() -> None:
    plan = relay(router_error(copy(), ICMP6_DEST_UNREACH, code=3))
    assert plan is not None and plan.refused is None and plan.code == 3
    m = parse_icmp6(plan.build(EA_SND))
    assert m is not None and (m.icmp_type, m.code) == (ICMP6_DEST_UNREACH, 3) and m.interface == (0, RB)


def test_the_routers_own_extension_is_not_quoted_on() -> None:
    c = copy()
    err = build_error(ICMP6_TIME_EXCEEDED, 0, 0, RB, EA, c, extension=interface_extension(a("2001:db8::77")))
    plan = relay(err)
    assert plan is not None and plan.refused is None
    assert plan.quote.rstrip(b"\0") == c[IP6_HLEN:].rstrip(b"\0")


def test_cut_quote_is_relayed_as_far_as_present() -> None:
    dests = [a(f"2001:db8:b{i // 256:x}:{i % 256:x}::2") for i in range(90)]
    c = copy(dests, bitmap=0b1)
    plan = relay(router_error(c))            # the router quotes 1,232 bytes of 1,600
    assert plan is not None and plan.refused is None and plan.quote == c[IP6_HLEN:MAX_QUOTE]


def test_nothing_for_messages_the_engine_does_not_relay() -> None:
    assert relay(router_error(copy(), dst=a("2001:db8:99::1"))) is None          # not to us
    assert relay(router_error(copy(), ICMP6_PARAM_PROB)) is None                 # not a relayed type
    echo = IPv6(src="2001:db8:ab::2", dst="2001:db8:ea3::2", nh=58) / bytes([128, 0, 0, 0, 0, 1, 0, 1])
    assert relay(bytes(echo)) is None


def test_refused_when_not_a_copy_of_ours() -> None:
    other = relay(router_error(copy(outer_src=a("2001:db8:eb1::2"))))
    assert other is not None and other.refused == "the quoted packet is not a copy this engine sent"
    plain = IPv6(src="2001:db8:ff::1", dst="2001:db8:b3::2", nh=17) / bytes(16)
    notx = relay(router_error(bytes(plain)))
    assert notx is not None and notx.refused and notx.refused.startswith("the quoted packet is not XCAST6")


def test_refused_for_errors_about_errors_bad_sources_and_bad_checksums() -> None:
    te = bytes([ICMP6_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0]) + b"q" * 40
    about_error = build_xcast(SENDER, [H3, H4], transport=NH_ICMPV6, transport_bytes=te, outer_src=EA,
                              hop_limit=1)
    p = relay(router_error(about_error))
    assert p is not None and p.refused == "the packet is an ICMPv6 error"
    for src in ("::", "ff02::1", "fe80::1"):
        bad = build_xcast(a(src), [H3], b"x", outer_src=EA, hop_limit=1)
        p = relay(router_error(bad))
        assert p is not None and p.refused and "original source" in p.refused
    err = bytearray(router_error(copy()))
    err[-1] ^= 0xFF
    p = relay(bytes(err))
    assert p is not None and p.refused == "bad ICMPv6 checksum"


def test_link_local_reporter_is_relayed_without_naming_it() -> None:
    plan = relay(router_error(copy(), src=a("fe80::1")))
    assert plan is not None and plan.refused is None and plan.reporter is None
    m = parse_icmp6(plan.build(EA_SND))
    assert m is not None and m.interface is None and m.icmp_type == ICMP6_TIME_EXCEEDED


def test_anonymous_copy_quote_shows_no_more_than_the_copy() -> None:
    c = copy([H3, bytes(16), H5], flags=FLAG_ANONYMOUS, bitmap=0b101)   # as engine A sent it
    plan = relay(router_error(c))
    assert plan is not None and plan.refused is None
    q = parse_quote(plan.quote)
    assert q is not None and q.dests == (H3, bytes(16), H5)
