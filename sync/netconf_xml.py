"""Incremental reading of NETCONF ``<rpc-reply>`` messages (shared by the Junos and ietf parsers).

A 10k-route reply is several megabytes.  We never build its DOM: the raw reply is fed to an
lxml pull parser in slices, each record element (a Junos ``<rt>``, an ietf ``<route>``) is
handed to the flavour parser when it closes and is then cleared, so memory stays flat and
the reply is parsed exactly once.  ``<rpc-error>`` anywhere in the reply becomes
:class:`NetconfReplyError`; a reply that is cut short or is not XML becomes
:class:`NetconfReplyError` too -- the caller turns both into ``SourceError`` and keeps its
last good snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
_RPC_REPLY = f"{{{NC_NS}}}rpc-reply"
_RPC_ERROR = f"{{{NC_NS}}}rpc-error"
FEED_SLICE = 1 << 16


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
    """First child whose local name is ``name`` (namespace-agnostic: Junos versions its namespaces)."""
    for c in elem:
        if localname(c.tag) == name:
            return c
    return None


def children(elem: etree._Element, name: str) -> Iterator[etree._Element]:
    """All children whose local name is ``name``."""
    for c in elem:
        if localname(c.tag) == name:
            yield c


def _error_info(elem: etree._Element) -> RpcErrorInfo:
    return RpcErrorInfo(
        tag=text_of(child(elem, "error-tag")),
        severity=text_of(child(elem, "error-severity")),
        message=text_of(child(elem, "error-message")),
        path=text_of(child(elem, "error-path")),
    )


def _slices(raw: str | bytes | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if isinstance(raw, bytes):
        view = memoryview(raw)
        for start in range(0, len(view), FEED_SLICE):
            yield bytes(view[start : start + FEED_SLICE])
        return
    yield from raw


def stream_records(
    raw: str | bytes | Iterable[bytes],
    record: str | frozenset[str],
    handle: Callable[[etree._Element, list[etree._Element]], None],
    *,
    context: str,
) -> int:
    """Feed ``raw`` (a whole ``<rpc-reply>``) through a pull parser, calling ``handle`` per record.

    ``record`` is the local name (or a set of names) of the element handled as one unit; ``handle`` gets it
    plus the stack of its open ancestors (outermost first) so it can see e.g. the
    enclosing ``<route-table>`` or ``<rib>``.  Records are cleared after ``handle``.
    Returns the number of records.  ``context`` names the RPC in error messages.
    Raises :class:`NetconfReplyError` for ``<rpc-error>`` (warnings are ignored), for
    malformed XML and for a reply that ends before ``</rpc-reply>``.
    """
    # huge_tree: one Junos reply can exceed libxml2's default 10 MB text-node guard.
    names = frozenset([record]) if isinstance(record, str) else record
    parser = etree.XMLPullParser(events=("start", "end"), huge_tree=True, remove_comments=True)
    stack: list[etree._Element] = []
    count = 0
    errors: list[RpcErrorInfo] = []
    saw_root = False
    root_closed = False
    depth_of_record = -1

    def drain() -> None:
        nonlocal count, saw_root, root_closed, depth_of_record
        for event, elem in parser.read_events():
            if event == "start":
                if not stack:
                    saw_root = True
                    if elem.tag != _RPC_REPLY:
                        raise NetconfReplyError(
                            f"{context}: reply root is <{elem.tag}>, expected <rpc-reply>"
                        )
                stack.append(elem)
                if depth_of_record < 0 and localname(elem.tag) in names:
                    depth_of_record = len(stack)
                continue
            # end event
            stack.pop()
            if elem.tag == _RPC_ERROR:
                info = _error_info(elem)
                if info.severity != "warning":
                    errors.append(info)
                elem.clear()
            elif depth_of_record == len(stack) + 1 and localname(elem.tag) in names:
                depth_of_record = -1
                handle(elem, stack)
                count += 1
                # Free this record and the handled record before it; headers that precede
                # the records (e.g. <table-name>) stay readable for the next records.
                elem.clear()
                parent = elem.getparent()
                prev = elem.getprevious()
                while parent is not None and prev is not None and localname(prev.tag) in names:
                    parent.remove(prev)
                    prev = elem.getprevious()
            if not stack:
                root_closed = True

    try:
        for piece in _slices(raw):
            parser.feed(piece)
            drain()
        parser.close()
        drain()
    except etree.XMLSyntaxError as exc:
        if errors:
            raise NetconfReplyError(f"{context}: rpc-error: {errors[0]}") from exc
        raise NetconfReplyError(f"{context}: reply is not well-formed XML ({exc}); reply cut short?") from exc
    if errors:
        extra = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NetconfReplyError(f"{context}: rpc-error: {errors[0]}{extra}")
    if not saw_root or not root_closed:
        raise NetconfReplyError(f"{context}: reply ended before </rpc-reply> (cut short)")
    return count
