"""When the engine answers a packet with an ICMPv6 error, what it quotes, and how often.

The engine is a router on the packet's path (RFC 5058 branch point), so it reports what a
router reports (RFC 4443), one error per input packet at most:

* **Time Exceeded** (type 3, code 0) when the outer hop limit does not allow forwarding
  (the brancher's ``hop_limit_exceeded``);
* **Packet Too Big** (type 2) carrying the egress link's MTU when a copy does not fit its link
  (decided by the worker, which knows the links: ``too_big_mtu``, the smallest such MTU);
* **Destination Unreachable** (type 1, code 0 "no route") when *no* live destination is
  routable.  Unroutable destinations among routable ones only have their bit cleared (and are
  counted as ``no_route``): the others are delivered, and an error would tell the sender that
  its datagram was lost.

Never (RFC 4443 §2.4(e)): in answer to an ICMPv6 error, to a packet whose outer or original
source is not a global unicast address (multicast, unspecified, loopback, link-local), or for a
packet dropped as malformed (the codec's ``Reject``: no error plan at all).  Those are counted
as ``icmp_not_eligible``.  §2.4(e.2) (no error for a packet sent to a multicast address) is about
the destination the packet is routed on, the outer one, which is always a listed unicast
destination; the inner ``ff0e::114`` only marks the packet as XCAST6.

**Where the error goes: the original sender** (the inner source; XOU: the XOU header's), not
the outer source.  The outer source is the previous branch point (engines rewrite it), which
cannot do anything with an error about a datagram it only relayed; the FreeBSD reference router
(ptkhoa1984/Xcast6_Treemap, ``xcast6_forward``) likewise calls ``icmp6_error`` on the packet
after it stripped the outer header, i.e. towards the inner source.  That re-opens what the
outer-source rewrite closes — errors aimed at whoever the inner source names — so the damage is
bounded: one error per input packet (never one per branch as the reference did), a token
bucket per engine (:class:`TokenBucket`), and no error to a source that is not global unicast.

**What is quoted: the packet as received**, from its outer IPv6 header, as much as fits in
1,280 bytes (:func:`engine.wire.icmp6.build_error`); its bitmap tells the sender which
destinations this branch point held.  **ANONYMOUS** (RFC 5058 §9.2.2, the A bit: destinations whose bit is
zero must be overwritten by zero): errors are sent, but the quote has every destination whose
bit is clear zeroed, so an error never shows more of the list than a copy leaving this engine
would; a packet that arrives as an ANONYMOUS copy already carries only its live addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.forwarding.branch import BranchResult, is_valid_unicast
from engine.wire.icmp6 import build_error, is_error_type
from engine.wire.layout import (
    DEST_LEN,
    FLAG_ANONYMOUS,
    ICMP6_CODE_HOP_LIMIT,
    ICMP6_CODE_NO_ROUTE,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    NH_ICMPV6,
)
from engine.wire.packet import XcastPacket
from engine.wire.reasons import DropReason

_ZERO = bytes(DEST_LEN)


class ErrorKind(StrEnum):
    """The errors the engine sends; the values are counter labels (never rename one)."""

    TIME_EXCEEDED = "time_exceeded"
    PACKET_TOO_BIG = "packet_too_big"
    DEST_UNREACHABLE = "dest_unreachable"


#: Why an error was due but not sent (counted as ``icmp_not_eligible``).
NOT_ELIGIBLE = "icmp_not_eligible"


def sent_counter(kind: ErrorKind) -> str:
    """Counter of the errors of ``kind`` sent."""
    return f"icmp_sent.{kind.value}"


def suppressed_counter(kind: ErrorKind) -> str:
    """Counter of the errors of ``kind`` the rate limit held back."""
    return f"icmp_suppressed.{kind.value}"


def counter_names() -> tuple[str, ...]:
    """Every ICMP counter a worker keeps (engine/dataplane/counters.py lists them)."""
    return (*(sent_counter(k) for k in ErrorKind), *(suppressed_counter(k) for k in ErrorKind), NOT_ELIGIBLE)


_TYPES = {
    ErrorKind.TIME_EXCEEDED: (ICMP6_TIME_EXCEEDED, ICMP6_CODE_HOP_LIMIT),
    ErrorKind.PACKET_TOO_BIG: (ICMP6_PACKET_TOO_BIG, 0),
    ErrorKind.DEST_UNREACHABLE: (ICMP6_DEST_UNREACH, ICMP6_CODE_NO_ROUTE),
}


@dataclass(frozen=True, slots=True)
class ErrorPlan:
    """An error due for one input packet.  ``refused`` names why it must not be sent (then
    nothing else matters); otherwise :meth:`build` gives the bytes, sent to ``dst``."""

    kind: ErrorKind
    dst: bytes               # the original sender
    param: int               # Packet Too Big: the MTU
    quote: bytes
    refused: str | None = None

    def build(self, src: bytes) -> bytes:
        """The IPv6 packet of this error from the engine address ``src``."""
        icmp_type, code = _TYPES[self.kind]
        return build_error(icmp_type, code, self.param, src, self.dst, self.quote)


def refusal(pkt: XcastPacket) -> str | None:
    """Why ``pkt`` must not be answered with an error (RFC 4443 §2.4(e)), or None."""
    if not is_valid_unicast(pkt.orig_src):
        return "original source is not a global unicast address"
    if not is_valid_unicast(pkt.src):
        return "outer source is not a global unicast address"
    if pkt.transport == NH_ICMPV6:
        t = pkt.transport_off
        # an ICMPv6 error, or too short to tell: never answered
        if t >= len(pkt.data) or is_error_type(pkt.data[t]):
            return "the packet is an ICMPv6 error"
    return None


def quote_of(pkt: XcastPacket) -> bytes:
    """The packet as received; ANONYMOUS: destinations whose bit is clear zeroed (module doc)."""
    if not pkt.flags & FLAG_ANONYMOUS:
        return pkt.data
    buf = bytearray(pkt.data)
    for i in range(pkt.n):
        if not pkt.bitmap >> i & 1:
            o = pkt.dest_off + DEST_LEN * i
            buf[o : o + DEST_LEN] = _ZERO
    return bytes(buf)


def plan_error(result: BranchResult, too_big_mtu: int | None = None) -> ErrorPlan | None:
    """The error one branched packet calls for, or None.

    ``too_big_mtu``: the smallest MTU among the links whose copy did not fit (the worker's
    egress check).  Time Exceeded comes first (no copy was made then), then Packet Too Big,
    then Destination Unreachable.
    """
    pkt = result.packet
    if pkt is None or result.reject is not None:
        return None                  # malformed or not XCAST: never answered
    drops = result.drops
    if DropReason.HOP_LIMIT_EXCEEDED in drops:
        kind, param = ErrorKind.TIME_EXCEEDED, 0
    elif too_big_mtu is not None:
        kind, param = ErrorKind.PACKET_TOO_BIG, too_big_mtu
    elif (not result.copies and not result.local
          and drops.get(DropReason.NO_ROUTE, 0) == pkt.bitmap.bit_count() > 0):
        kind, param = ErrorKind.DEST_UNREACHABLE, 0
    else:
        return None
    why = refusal(pkt)
    if why is not None:
        return ErrorPlan(kind, pkt.orig_src, param, b"", why)
    return ErrorPlan(kind, pkt.orig_src, param, quote_of(pkt))


class TokenBucket:
    """RFC 4443 §2.4(f) rate limit: ``rate`` errors per second on average, bursts of ``burst``.

    Pure: the caller passes the time (monotonic seconds).  A clock that goes back adds nothing.
    ``rate <= 0`` allows nothing (errors off).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1.0))
        self.tokens = self.burst
        self.stamp = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one (True: send the error)."""
        if self.rate <= 0:
            return False
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
