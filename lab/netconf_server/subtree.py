"""RFC 6241 section 6 subtree filtering, in one pass over the data.

The ``netconf`` package converts a subtree filter to XPath; that honours only the first
top-level filter node, yields an empty expression for a bare top-level selection node, and
takes seconds on 10k routes with leaf selection nodes.  The server uses this instead.
"""

from __future__ import annotations

import copy
import functools

from lxml import etree


@functools.lru_cache(maxsize=4096)
def _split(tag: str) -> tuple[str | None, str]:
    # Tags repeat (a few dozen distinct ones per reply): parse each once.
    q = etree.QName(tag)
    return q.namespace, q.localname


def _matches(fnode: etree._Element, elem: etree._Element) -> bool:
    fns, fname = _split(fnode.tag)
    ens, ename = _split(elem.tag)
    return fname == ename and (fns is None or fns == ens)


def _text(elem: etree._Element) -> str:
    return (elem.text or "").strip()


def filter_node(fnode: etree._Element, elem: etree._Element) -> etree._Element | None:
    """Apply filter node ``fnode`` to data node ``elem`` (same name): the kept copy, or None."""
    fchildren = [f for f in fnode if isinstance(f.tag, str)]
    if not fchildren:
        return copy.deepcopy(elem)  # selection node: the whole subtree
    content = [f for f in fchildren if len(f) == 0 and _text(f)]
    selection = [f for f in fchildren if len(f) == 0 and not _text(f)]
    containment = [f for f in fchildren if len(f) > 0]
    for f in content:
        if not any(_matches(f, c) and _text(c) == _text(f) for c in elem):
            return None
    if not selection and not containment:
        return copy.deepcopy(elem)  # only content-match nodes: the whole matching entry
    out = etree.Element(elem.tag, nsmap=elem.nsmap)
    for c in elem:
        if not isinstance(c.tag, str):
            continue
        if any(_matches(f, c) for f in content) or any(_matches(f, c) for f in selection):
            out.append(copy.deepcopy(c))
            continue
        for f in containment:
            if _matches(f, c):
                kept = filter_node(f, c)
                if kept is not None:
                    out.append(kept)
                break
    return out


def subtree_filter(data: etree._Element, flt: etree._Element) -> etree._Element:
    """``<data>`` pruned by ``<filter type="subtree">`` (every top-level filter node honoured)."""
    out = etree.Element(data.tag, nsmap=data.nsmap)
    for fnode in flt:
        if not isinstance(fnode.tag, str):
            continue
        for elem in data:
            if _matches(fnode, elem):
                kept = filter_node(fnode, elem)
                if kept is not None:
                    out.append(kept)
    return out
