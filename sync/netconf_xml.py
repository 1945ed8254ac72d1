"""Incremental reading of NETCONF ``<rpc-reply>`` messages (shared by the Junos and ietf parsers).

A 10k-route reply is several megabytes.  We never build its DOM: the raw reply is fed to an
lxml pull parser in slices, each record element (a Junos ``<rt>``, an ietf ``<route>``) is
handed to the flavour parser when it closes and is then cleared, so memory stays flat and
the reply is parsed exactly once.  ``<rpc-error>`` anywhere in the reply becomes
:class:`NetconfReplyError`; a reply that is cut short or is not XML becomes
:class:`NetconfReplyError` too -- the caller turns both into ``SourceError`` and keeps its
last good snapshot.

The reply comes from a router over SSH, but is parsed as untrusted input: every parser here is
made by :func:`safe_parser_options` (no entity substitution, no network, no external DTD; a
``<!DOCTYPE>`` is refused, NETCONF has none), libxml2's size guards stay on (no ``huge_tree``:
it also lifts the guard against entity amplification), and a reply above
:data:`MAX_REPLY_BYTES` is refused before it is parsed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from engine.model import NextHop

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
_RPC_REPLY = f"{{{NC_NS}}}rpc-reply"
_RPC_ERROR = f"{{{NC_NS}}}rpc-error"
FEED_SLICE = 1 << 16
# The largest reply parsed.  Junos sends ~1.1 KB per route (README: 11.3 MB for 10k), so 512 MiB
# is ~450k IPv6 routes, well above a full table today; a bigger reply is taken for a runaway or
# hostile one (it costs several times its size in memory on the way in), refused with an error
# that names its size instead of ending in a MemoryError or the unit's MemoryMax.
MAX_REPLY_BYTES = 512 << 20


def safe_parser_options() -> dict[str, bool]:
    """lxml parser options for untrusted NETCONF XML, spelled out rather than left to defaults.

    No entity is substituted (lxml's default expands internal entities: a reply could define
    its own route text, or a billion-laughs tree), nothing is fetched from the network and no
    external DTD is loaded (no XXE).  ``huge_tree`` stays off: libxml2 then refuses text nodes
    over 10 MB and entity amplification, which no genuine reply needs.
    """
    return {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False}


def reply_too_big(size: int, context: str, limit: int | None = None) -> NetconfReplyError | None:
    """The error for a reply of ``size`` bytes, or None when it is within the limit."""
    limit = MAX_REPLY_BYTES if limit is None else limit
    if size <= limit:
        return None
    return NetconfReplyError(
        f"{context}: reply is {size} bytes, more than the {limit} bytes (MAX_REPLY_BYTES) parsed: refused"
    )


class NetconfReplyError(Exception):
    """The reply is an ``<rpc-error>``, is not well-formed, or is cut short."""


@dataclass(frozen=True, slots=True)
class RpcErrorInfo:
    """The fields of one ``<rpc-error>`` an operator needs to see."""

    tag: str
    severity: str
    message: str
    path: str

    def __str__(self) -> str:
        parts = [f"error-tag={self.tag or '?'}", f"severity={self.severity or '?'}"]
        if self.path:
            parts.append(f"path={self.path}")
        if self.message:
            parts.append(f"message={self.message!r}")
        return " ".join(parts)


def localname(tag: object) -> str:
    """Element tag without its ``{namespace}`` (comments/PIs give '')."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def text_of(elem: etree._Element | None) -> str:
    """Stripped text of an element ('' if absent).

    Junos pads many values with newlines (``<name>\\nge-0/0/0\\n</name>``), so every value
    is stripped before use.
    """
    if elem is None or elem.text is None:
        return ""
    return elem.text.strip()


def child(elem: etree._Element, name: str) -> etree._Element | None:
    """First child whose local name is ``name`` (any namespace: Junos versions its namespaces)."""
    return elem.find("{*}" + name)


def child_text(elem: etree._Element, name: str) -> str:
    """Stripped text of the first child named ``name`` ('' if absent)."""
    text = elem.findtext("{*}" + name)
    return text.strip() if text else ""


def children(elem: etree._Element, name: str) -> Iterator[etree._Element]:
    """All children whose local name is ``name``."""
    return elem.iterfind("{*}" + name)


def _error_info(elem: etree._Element) -> RpcErrorInfo:
    return RpcErrorInfo(
        tag=text_of(child(elem, "error-tag")),
        severity=text_of(child(elem, "error-severity")),
        message=text_of(child(elem, "error-message")),
        path=text_of(child(elem, "error-path")),
    )


def _slices(raw: str | bytes | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(raw, str):
        # Encode slice by slice: a full-table reply is hundreds of MB; no second full copy.
        for start in range(0, len(raw), FEED_SLICE):
            yield raw[start : start + FEED_SLICE].encode("utf-8")
        return
    if isinstance(raw, bytes):
        view = memoryview(raw)
        for start in range(0, len(view), FEED_SLICE):
            yield bytes(view[start : start + FEED_SLICE])
        return
    yield from raw


def stream_records(
    raw: str | bytes | Iterable[bytes],
    record: str | frozenset[str],
    handle: Callable[[etree._Element], None],
    *,
    context: str,
    max_bytes: int | None = None,
) -> int:
    """Feed ``raw`` (a whole ``<rpc-reply>``) through a pull parser, calling ``handle`` per record.

    ``record`` is the local name (or a set of names, any namespace) of the element handled as
    one unit; ``handle`` gets it when it closes, with its ancestors reachable through
    ``getparent()`` (e.g. the enclosing ``<route-table>`` or ``<rib>``, whose leading leaves
    such as ``<table-name>`` are kept).  Records are cleared after ``handle``.  Returns the
    number of records.  ``context`` names the RPC in error messages.  Raises
    :class:`NetconfReplyError` for ``<rpc-error>`` (warnings are ignored), for malformed XML,
    for a reply that ends before ``</rpc-reply>``, that carries a ``<!DOCTYPE>``, or that is
    larger than ``max_bytes`` (default :data:`MAX_REPLY_BYTES`).
    """
    names = frozenset([record]) if isinstance(record, str) else record
    limit = MAX_REPLY_BYTES if max_bytes is None else max_bytes
    if isinstance(raw, str | bytes):
        # Whole replies are refused before any parse (a str has at most as many characters
        # as its UTF-8 bytes); streamed ones are counted below, slice by slice.
        too_big = reply_too_big(len(raw), context, limit)
        if too_big is not None:
            raise too_big
    # Only end events of the records and of <rpc-error> reach Python (lxml filters in C).
    parser = etree.XMLPullParser(
        events=("end",), tag=[_RPC_ERROR, *(f"{{*}}{n}" for n in names)],
        remove_comments=True, remove_pis=True, **safe_parser_options(),
    )
    count = 0
    fed = 0
    errors: list[RpcErrorInfo] = []

    def drain() -> None:
        nonlocal count
        for _event, elem in parser.read_events():
            if elem.tag == _RPC_ERROR:
                info = _error_info(elem)
                if info.severity != "warning":
                    errors.append(info)
                continue
            handle(elem)
            count += 1
            # Free this record and the handled record before it; headers that precede
            # the records (e.g. <table-name>) stay readable for the next records.
            elem.clear(keep_tail=True)
            parent = elem.getparent()
            prev = elem.getprevious()
            while parent is not None and prev is not None and localname(prev.tag) in names:
                parent.remove(prev)
                prev = elem.getprevious()

    try:
        for piece in _slices(raw):
            fed += len(piece)
            too_big = reply_too_big(fed, context, limit)
            if too_big is not None:
                raise too_big
            parser.feed(piece)
            drain()
        root = parser.close()
        drain()
    except etree.XMLSyntaxError as exc:
        if errors:
            raise NetconfReplyError(f"{context}: rpc-error: {errors[0]}") from exc
        raise NetconfReplyError(f"{context}: reply is not well-formed XML ({exc}); reply cut short?") from exc
    if errors:
        extra = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NetconfReplyError(f"{context}: rpc-error: {errors[0]}{extra}")
    if root is not None and root.getroottree().docinfo.doctype:
        # RFC 6241 messages carry no DTD; one here only serves entity tricks.  (Its entities
        # were not substituted, so the records already handled saw no entity text.)
        raise NetconfReplyError(f"{context}: reply carries a <!DOCTYPE> declaration: refused")
    if root is None or root.tag != _RPC_REPLY:
        tag = "nothing" if root is None else f"<{root.tag}>"
        raise NetconfReplyError(f"{context}: reply root is {tag}, expected <rpc-reply>")
    return count


def fields(elem: etree._Element) -> dict[str, etree._Element]:
    """Children by local name (first wins), in one pass.

    Much cheaper than one ``find("{*}name")`` per leaf on 10k-route replies (the parser drops
    comments and processing instructions, so every child tag is a string).
    """
    return {c.tag.rpartition("}")[2]: c for c in reversed(elem)}


def leaf(found: dict[str, etree._Element], name: str) -> str:
    """Stripped text of ``found[name]`` ('' if absent or empty)."""
    elem = found.get(name)
    if elem is None or elem.text is None:
        return ""
    return elem.text.strip()


def parse_prefix(text: str) -> ipaddress.IPv6Network:
    """``2001:db8::/32`` -> IPv6Network (host bits allowed and masked); ValueError if not IPv6."""
    addr, slash, plen = text.partition("/")
    if not slash or not plen.isdigit() or int(plen) > 128:
        raise ValueError("not ADDRESS/LENGTH with LENGTH 0..128")
    try:
        packed = socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        raise ValueError("not an IPv6 address") from None
    return ipaddress.IPv6Network((int.from_bytes(packed, "big"), int(plen)), strict=False)


def hop_order(hop: NextHop) -> tuple[str, bytes]:
    """Sort key for next hops: NextHop's own ordering cannot compare a connected hop
    (gateway None) with a gateway hop on the same interface."""
    return hop.ifname, hop.gateway or b""


def parse_address(text: str) -> bytes:
    """IPv6 address text -> 16 packed bytes; ValueError if not IPv6."""
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError("not an IPv6 address") from None
