"""XCAST6 sender (RFC 5058 §12 ``xcast_sendto``): destinations in, packets on the wire.

Destination syntax: plain addresses/names, comma lists, and the multi-address notation of the
socket-API paper (shared/seeds, Table 1), ``{host1,2001:db8::2,host3}``: braces may appear in
any argument, items are separated by ``,`` (the examples) or ``;`` (the paper's wording).  As
in the paper, a name stands for *all* its addresses: it resolves with ``getaddrinfo``
restricted to AF_INET6 (AAAA only) and every AAAA answer becomes a destination.  Repeated
addresses are listed once (in first-seen order).

Packets go out through a raw IPv6 socket with ``IPPROTO_RAW`` (the kernel then expects the full
IPv6 header: we build the outer header ourselves, like IPV6_HDRINCL).  The kernel checks such
packets against the device MTU only and learns nothing from a Packet Too Big, so ``--pmtu``
(:func:`open_pmtu_socket`) sends through a raw socket of protocol 41 instead: the kernel writes
the outer header (traffic class 010111xx, the hop limit, its own source selection and flow
label) and applies the path MTU it learnt from the engines' and routers' Packet Too Big
(``IPV6_PMTUDISC_DO``: a datagram over it is refused with EMSGSIZE, never fragmented).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.forwarding.branch import is_valid_unicast
from engine.wire.codec import FLAG_ANONYMOUS, FLAG_DONT_X2U, MAX_DESTS, build_xcast
from engine.wire.layout import IP6_HLEN, OUTER_DST_END, OUTER_DST_OFF, XCAST_TC
from engine.wire.xou import build_xou

SOL_SOCKET = socket.SOL_SOCKET
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IPV6_HDRINCL = 36
IPV6_MTU = 24                # getsockopt on a connected socket: the path MTU
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
IPV6_RECVERR = 25
IPV6_TCLASS = 67
IPPROTO_IPV6_IN_IPV6 = 41
PMTU_LINGER_S = 0.3


class SendError(Exception):
    """A send request cannot be carried out; the message is one line naming the cause."""


def split_destinations(args: Iterable[str]) -> list[str]:
    """Expand ``{a,b,c}`` multi-address notation and comma lists into single tokens."""
    out: list[str] = []
    for arg in args:
        text = arg.strip()
        if text.count("{") != text.count("}"):
            raise SendError(f"unbalanced braces in destination list {arg!r}")
        text = text.replace("{", ",").replace("}", ",").replace(";", ",")
        for tok in text.replace(" ", ",").split(","):
            if tok:
                out.append(tok)
    return out


def resolve(token: str, resolver: Callable[..., list] = socket.getaddrinfo) -> list[bytes]:
    """One destination token -> its addresses (16 bytes each): a literal, or every AAAA of a name."""
    try:
        return [ipaddress.IPv6Address(token).packed]
    except ValueError:
        pass
    if token.count(".") == 3 and all(p.isdigit() for p in token.split(".")):
        raise SendError(f"{token}: IPv4 addresses cannot be XCAST6 destinations")
    try:
        infos = resolver(token, None, socket.AF_INET6, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise SendError(f"{token}: cannot resolve to an IPv6 address ({exc.strerror})") from None
    out: list[bytes] = []
    for info in infos:
        addr = ipaddress.IPv6Address(info[4][0].split("%", 1)[0]).packed
        if addr not in out:
            out.append(addr)
    if not out:
        raise SendError(f"{token}: no AAAA record")
    return out


def resolve_all(args: Iterable[str], resolver: Callable[..., list] = socket.getaddrinfo) -> list[bytes]:
    """Resolve and validate the destination list (count, global unicast, no duplicates)."""
    tokens = split_destinations(args)
    if not tokens:
        raise SendError("no destination given")
    if len(tokens) > MAX_DESTS:
        raise SendError(f"{len(tokens)} destinations: one XCAST6 packet carries at most {MAX_DESTS}")
    dests: list[bytes] = []
    seen: set[bytes] = set()
    for tok in tokens:
        for d in resolve(tok, resolver):
            if not is_valid_unicast(d):
                raise SendError(f"{tok}: {ipaddress.IPv6Address(d)} is not a global unicast address")
            if d not in seen:
                seen.add(d)
                dests.append(d)
    if len(dests) > MAX_DESTS:
        raise SendError(f"{len(dests)} destinations after name resolution: one XCAST6 packet carries "
                        f"at most {MAX_DESTS}")
    return dests


def pick_source(first_dest: bytes) -> bytes:
    """Let the kernel's source-address selection choose (connect a UDP socket, no packet sent)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.connect((str(ipaddress.IPv6Address(first_dest)), 9))
        return ipaddress.IPv6Address(s.getsockname()[0].split("%", 1)[0]).packed
    except OSError as exc:
        raise SendError(f"no route to {ipaddress.IPv6Address(first_dest)} to pick a source address "
                        f"({exc.strerror}); give --source") from None
    finally:
        s.close()


@dataclass
class SendRequest:
    """Everything ``send`` needs (already validated by the CLI)."""

    dests: list[bytes]
    payload: bytes
    sport: int = 0
    dport: int = 0
    ports: list[int] | None = None
    hop_limit: int = 64
    anonymous: bool = False
    dont_x2u: bool = False
    xou: bool = False
    source: bytes | None = None
    count: int = 1
    rate: float = 0.0          # packets per second, 0 = as fast as possible
    interface: str | None = None
    pmtu: bool = False         # the kernel writes the outer header and applies the path MTU


def build_packet(req: SendRequest) -> bytes:
    """The sender's packet (XCAST6 RH253 or XOU)."""
    src = req.source or pick_source(req.dests[0])
    flags = (FLAG_ANONYMOUS if req.anonymous else 0) | (FLAG_DONT_X2U if req.dont_x2u else 0)
    try:
        if req.xou:
            if req.ports is not None:
                raise SendError("--ports (per-destination port list) is not defined for XOU")
            return build_xou(src, req.dests, req.payload, sport=req.sport, dport=req.dport,
                             hop_limit=req.hop_limit, flags=flags)
        return build_xcast(src, req.dests, req.payload, sport=req.sport, dport=req.dport, ports=req.ports,
                           hop_limit=req.hop_limit, flags=flags)
    except ValueError as exc:
        raise SendError(str(exc)) from None


def open_raw_socket(interface: str | None = None) -> socket.socket:
    """Raw IPv6 socket that takes our own IPv6 header."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise SendError("raw IPv6 socket needs CAP_NET_RAW (run as root)") from None
    with contextlib.suppress(OSError):   # IPPROTO_RAW implies it on Linux
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
    if interface:
        try:
            s.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        except OSError as exc:
            s.close()
            raise SendError(f"interface {interface}: {exc.strerror}") from None
    return s


def open_pmtu_socket(hop_limit: int = 64, interface: str | None = None, source: bytes | None = None,
                     tclass: int = XCAST_TC) -> socket.socket:
    """Raw socket of protocol 41 whose outer IPv6 header the kernel writes (module docstring).

    ``send`` on it takes the packet without its outer header (:func:`kernel_header_payload`).
    ``IPV6_RECVERR`` makes the kernel apply a Packet Too Big quoting our packets to its path-MTU
    cache while the socket is open (an unconnected raw socket ignores errors otherwise).
    """
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPV6_IN_IPV6)
    except PermissionError:
        raise SendError("raw IPv6 socket needs CAP_NET_RAW (run as root)") from None
    try:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tclass)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        if interface:
            s.setsockopt(SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        if source is not None:
            s.bind((str(ipaddress.IPv6Address(source)), 0))
    except OSError as exc:
        s.close()
        raise SendError(f"cannot set up the path-MTU socket: {exc.strerror}") from None
    return s


def kernel_header_payload(pkt: bytes) -> bytes:
    """What a :func:`open_pmtu_socket` socket sends: the packet after its outer IPv6 header."""
    return pkt[IP6_HLEN:]


def path_mtu(dst: str) -> int | None:
    """The kernel's path MTU towards ``dst`` (its route cache), None if it cannot tell."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return int(s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU))
    except OSError:
        return None
    finally:
        s.close()


def path_mtu_note(dst: str) -> str:
    """``" (path MTU N)"``, or "" when the kernel cannot tell."""
    mtu = path_mtu(dst)
    return "" if mtu is None else f" (path MTU {mtu})"


def send(req: SendRequest, sock: socket.socket | None = None) -> tuple[int, int]:
    """Send ``req.count`` packets at ``req.rate``; returns (packets sent, bytes sent)."""
    pkt = build_packet(req)
    own = sock is None
    if req.pmtu:
        s = sock or open_pmtu_socket(req.hop_limit, req.interface, req.source)
        wire = kernel_header_payload(pkt)
    else:
        s = sock or open_raw_socket(req.interface)
        wire = pkt
    dst = str(ipaddress.IPv6Address(pkt[OUTER_DST_OFF:OUTER_DST_END]))
    interval = 1.0 / req.rate if req.rate > 0 else 0.0
    sent = nbytes = 0
    t0 = time.monotonic()
    try:
        for k in range(req.count):
            if interval:
                delay = t0 + k * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                nbytes += s.sendto(wire, (dst, 0))
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise SendError(f"packet of {len(pkt)} bytes exceeds the path MTU to {dst}"
                                    f"{path_mtu_note(dst)}") from None
                if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                    raise SendError(f"no route to {dst}") from None
                if exc.errno == errno.EPERM:
                    raise SendError("sending was refused (EPERM: firewall or missing CAP_NET_RAW)") from None
                raise SendError(f"send to {dst} failed: {exc.strerror}") from None
            sent += 1
        if req.pmtu and own:
            # A Packet Too Big for the last packet reaches the kernel's path-MTU cache only
            # while a socket of ours is open: wait for one round trip's worth before closing.
            time.sleep(PMTU_LINGER_S)
    finally:
        if own:
            s.close()
    return sent, nbytes
