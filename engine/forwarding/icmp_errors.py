"""When the engine answers a packet with an ICMPv6 error, what it quotes, and how often.

The engine is a router on the packet's path (RFC 5058 branch point), so it reports what a
router reports (RFC 4443), one error per input packet at most:

* **Time Exceeded** (type 3, code 0) when the outer hop limit does not allow forwarding
  (the brancher's ``hop_limit_exceeded``);
* **Packet Too Big** (type 2) carrying the egress link's MTU when a copy does not fit its link
  (decided by the worker, which knows the links: ``too_big_mtu``, the smallest such MTU),
  quoting the packet as the *sender* sent it (:func:`as_sender_sent`: a packet that came from
  another branch point has that engine's outer source and destination, which the sender's
  kernel would not match to anything it sent);
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

**Relaying errors about the engine's own copies** (:func:`plan_relay`).  A router between two
branch points answers the copy's outer source -- this engine -- not the sender, so without a
relay the sender's traceroute shows those routers as ``*`` and its path-MTU discovery never
hears of a small link between two engines.  The engine does what a tunnel entry point does
(RFC 2473 §8): an error addressed to one of its link addresses, of type Time Exceeded, Packet
Too Big or Destination Unreachable, whose quote parses with the engine's codec
(:func:`engine.wire.codec.parse_quoted`: a quote cut short is fine, from the bitmap on) as an
XCAST6 packet whose outer source is one of the engine's addresses, is answered by an error of
the same type and code to the quoted copy's original sender, quoting the *inner* packet (the
original datagram: the outer header is the engine's) as far as the router quoted it -- except
Packet Too Big, which quotes the sender's packet with its own outer header (below).
Differences from RFC 2473 §8.1, and why:

* **Time Exceeded stays Time Exceeded** (RFC 2473 turns it into Destination Unreachable
  "address unreachable"): a tunnel's hop limit is its own, but an XCAST6 copy's outer hop limit
  *is* the sender's, carried on and decremented by every engine, so the router's error reports
  exactly that the sender's hop limit ran out -- what traceroute needs.
* **Destination Unreachable keeps the router's code**: the copy's destinations are destinations
  of the sender's datagram, not a tunnel end point.
* **Packet Too Big quotes the sender's packet, outer header included, and keeps the router's
  MTU** (:func:`as_sender_sent`).  Here XCAST6 is not a tunnel the engine enters: the *sender*
  wrote the outer header (RFC 5058's semi-permeable tunnel starts at the sender), and a branch
  point only rewrites its source and destination in place, so a copy is exactly as long as the
  sender's datagram and the MTU the router names is the MTU the sender's whole datagram must
  fit (RFC 2473 §7.1's "minus the tunnel header" would be 40 bytes too low).  A sender's kernel
  applies a Packet Too Big only when the quote is a packet it sent: Linux (``icmpv6_notify``)
  hands the error to the handler of the quote's first next header -- 41 reaches the sender's
  raw socket of protocol 41 -- and ``ip6_update_pmtu`` caches the MTU for the quoted
  *destination*.  So the quote starts with the outer header the sender wrote: source = the
  original sender, destination = the address the sender sent to, which for a sender that sends
  to its whole list (every bit set, as RFC 5058 senders and ``xcast6-engine send`` do) is
  destination 0, then the copy as quoted (its hop limit and bitmap: the bitmap still says which
  destinations were on the too-small branch).  An ANONYMOUS copy that does not hold destination
  0 has it zeroed, so the copy's own outer destination is named instead: the sender's kernel
  then caches the MTU for an address its next datagram is not sent to and does not shrink it; an
  XCAST6 application still reads the error itself.  Never below 1,280 (RFC 8200 §5).

**Naming the router: an RFC 5837 Interface Information Object**, in an RFC 4884 extension
structure (Time Exceeded and Destination Unreachable; Packet Too Big has no RFC 4884 length
field): interface role "incoming IP interface" with an IP Address Sub-Object holding the
source address of the router's error (a Linux or Junos router answers from the interface the
packet came in on, the interface RFC 5837's "incoming" role means).  The error itself is from
the engine's address on the link towards the sender (RFC 4443 §2.2: a node sends from one of
its own addresses).  Why not spoof the router's address as the source: the engine would send
packets with an address that is not its own out of a link the router's uRPF / BCP 38 filters
rightly drop them on (the router's own address arriving from outside); anybody receiving the
error would believe the router saw the inner packet, which it never did (it saw the engine's
copy); and the engine would become a box that emits arbitrary sources on request.  With the
object, a traceroute that reads RFC 4884/5837 (``xcast6-engine traceroute``; Linux
``traceroute -e`` prints it as ``<INC:address>``) shows the router and that the engine relayed
it; one that does not shows the engine, truthfully.

Same rules as the engine's own errors: never about an error (the quoted copy carries an ICMPv6
error) nor to a source that is not global unicast; one relayed error per error received; the
same token bucket.  Counted as ``icmp_relayed.<type>``, ``icmp_relay_suppressed.<type>`` (rate
limit) and ``icmp_relay_refused`` (not about a copy of ours, not eligible, bad checksum).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum

from engine.forwarding.branch import BranchResult, is_valid_unicast
from engine.wire.codec import parse_quoted
from engine.wire.icmp6 import IcmpMessage, build_error, interface_extension, is_error_type
from engine.wire.layout import (
    DEST_LEN,
    FLAG_ANONYMOUS,
    ICMP6_CODE_HOP_LIMIT,
    ICMP6_CODE_NO_ROUTE,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    IP6_HLEN,
    IPV6_MIN_MTU,
    NH_ICMPV6,
    OUTER_DST_END,
    OUTER_DST_OFF,
    OUTER_SRC_END,
    OUTER_SRC_OFF,
)
from engine.wire.packet import Reject, XcastPacket
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


#: Errors addressed to the engine that it did not relay (module doc: "Relaying").
RELAY_REFUSED = "icmp_relay_refused"


def relayed_counter(kind: ErrorKind) -> str:
    """Counter of the routers' errors of ``kind`` relayed to the original sender."""
    return f"icmp_relayed.{kind.value}"


def relay_suppressed_counter(kind: ErrorKind) -> str:
    """Counter of the relays of ``kind`` the rate limit held back."""
    return f"icmp_relay_suppressed.{kind.value}"


def counter_names() -> tuple[str, ...]:
    """Every ICMP counter a worker keeps (engine/dataplane/counters.py lists them)."""
    return (*(sent_counter(k) for k in ErrorKind), *(suppressed_counter(k) for k in ErrorKind), NOT_ELIGIBLE,
            *(relayed_counter(k) for k in ErrorKind), *(relay_suppressed_counter(k) for k in ErrorKind),
            RELAY_REFUSED)


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


def senders_destination(pkt: XcastPacket) -> bytes:
    """The outer destination the original sender wrote, as far as a copy tells: destination 0
    (a sender sends to its whole list; the outer destination is its lowest-index live one),
    or the copy's own outer destination when destination 0 is not in it (zeroed in an
    ANONYMOUS copy, or past the end of a quote cut short)."""
    end = pkt.dest_off + DEST_LEN
    hidden = pkt.flags & FLAG_ANONYMOUS and not pkt.bitmap & 1     # quote_of zeroes it: never name it
    if not hidden and len(pkt.data) >= end and pkt.data[pkt.dest_off : end] != _ZERO:
        return pkt.data[pkt.dest_off : end]
    return pkt.dst


def as_sender_sent(pkt: XcastPacket, quote: bytes) -> bytes:
    """``quote`` (``pkt``'s bytes from its outer header, possibly cut short) with the outer
    source and destination the original sender wrote (module doc: what a sender's kernel
    matches a Packet Too Big to).  A packet straight from its sender is returned unchanged."""
    if pkt.src == pkt.orig_src:
        return bytes(quote)
    buf = bytearray(quote)
    buf[OUTER_SRC_OFF:OUTER_SRC_END] = pkt.orig_src
    buf[OUTER_DST_OFF:OUTER_DST_END] = senders_destination(pkt)
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
    quote = quote_of(pkt)
    if kind is ErrorKind.PACKET_TOO_BIG:
        quote = as_sender_sent(pkt, quote)
    return ErrorPlan(kind, pkt.orig_src, param, quote)


_RELAYED = {
    ICMP6_TIME_EXCEEDED: ErrorKind.TIME_EXCEEDED,
    ICMP6_PACKET_TOO_BIG: ErrorKind.PACKET_TOO_BIG,
    ICMP6_DEST_UNREACH: ErrorKind.DEST_UNREACHABLE,
}


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """A router's error about one of this engine's copies, to be passed on to the original
    sender (module doc).  ``refused`` names why it must not be (then nothing else matters)."""

    kind: ErrorKind
    dst: bytes                # the original sender (the quoted copy's inner source)
    code: int
    param: int                # Packet Too Big: the MTU left for the original packet
    quote: bytes              # the original packet (the copy without its outer header), as quoted
    reporter: bytes | None    # the router that reported (RFC 5837 object), None: not named
    refused: str | None = None

    def build(self, src: bytes) -> bytes:
        """The IPv6 packet of the relayed error from the engine address ``src``."""
        icmp_type = _TYPES[self.kind][0]
        ext = b""
        if self.reporter is not None and self.kind is not ErrorKind.PACKET_TOO_BIG:
            ext = interface_extension(self.reporter)
        return build_error(icmp_type, self.code, self.param, src, self.dst, self.quote, extension=ext)


def _refuse(kind: ErrorKind, why: str) -> RelayPlan:
    return RelayPlan(kind, b"", 0, 0, b"", None, why)


def plan_relay(msg: IcmpMessage, own: Container[bytes]) -> RelayPlan | None:
    """What to do with an ICMPv6 message that reached the engine (``own``: its link addresses).

    None: not a message the engine relays at all (not an error of a relayed type, not
    addressed to the engine).  Otherwise a plan, possibly ``refused``.
    """
    kind = _RELAYED.get(msg.icmp_type)
    if kind is None or msg.dst not in own:
        return None
    if not msg.checksum_ok:
        return _refuse(kind, "bad ICMPv6 checksum")
    quote = msg.quote                      # the router's own RFC 4884 extension left out
    pkt = parse_quoted(quote)
    if isinstance(pkt, Reject):
        return _refuse(kind, f"the quoted packet is not XCAST6 ({pkt})")
    if pkt.src not in own:
        return _refuse(kind, "the quoted packet is not a copy this engine sent")
    why = refusal(pkt)
    if why is not None:
        return _refuse(kind, why)
    reporter = msg.src if is_valid_unicast(msg.src) else None
    if kind is ErrorKind.PACKET_TOO_BIG:     # module doc: the sender's kernel must match the quote
        return RelayPlan(kind, pkt.orig_src, msg.code, max(IPV6_MIN_MTU, msg.param),
                         as_sender_sent(pkt, quote), reporter)
    return RelayPlan(kind, pkt.orig_src, msg.code, 0, bytes(quote[IP6_HLEN:]), reporter)


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
