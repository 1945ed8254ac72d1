"""engine/wire/layout.py is the one place for wire offsets: plain constants, consistent with the codec."""

from __future__ import annotations

import ast
from pathlib import Path

from engine.wire import layout
from engine.wire.codec import XcastPacket, build_xcast, parse
from engine.wire.xou import build_xou
from tests.engine.helpers import SENDER, a

WIRE = Path(layout.__file__).parent


def _imports(module: str) -> set[str]:
    tree = ast.parse((WIRE / f"{module}.py").read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}


def test_layout_is_plain_constants() -> None:
    """The in-kernel path may generate a C header from it: ints and 16-byte addresses only."""
    names = [n for n in vars(layout) if n.isupper()]
    assert names
    for name in names:
        value = getattr(layout, name)
        assert isinstance(value, int) or (isinstance(value, bytes) and len(value) == 16), name
    assert _imports("layout") <= {"__future__"}


def test_codec_and_xou_do_not_import_each_other() -> None:
    assert "engine.wire.codec" not in _imports("xou")
    assert "engine.wire.xou" not in _imports("packet") and "engine.wire.codec" not in _imports("packet")


def test_offsets_match_a_built_packet() -> None:
    dests = [a("2001:db8:1::1"), a("2001:db8:2::2")]
    p = build_xcast(SENDER, dests, b"pay", sport=1, dport=2, bitmap=0b10)
    assert p[layout.RH_TYPE_OFF] == layout.RH_TYPE_XCAST and p[layout.RH_N_OFF] == 2
    assert p[layout.INNER_SRC_OFF:layout.INNER_SRC_END] == SENDER
    assert p[layout.INNER_DST_OFF:layout.INNER_DST_END] == layout.ALL_XCAST_NODES
    assert p[layout.BITMAP_OFF] == 0b10
    assert p[layout.DEST_OFF + layout.DEST_LEN:layout.DEST_OFF + 2 * layout.DEST_LEN] == dests[1]
    pkt = parse(p)
    assert isinstance(pkt, XcastPacket) and pkt.transport_off == layout.DEST_OFF + 2 * layout.DEST_LEN
    x = build_xou(SENDER, dests, b"pay", sport=1, dport=2)
    assert x[layout.XOU_N_OFF] == 2 and x[layout.XOU_ORIG_OFF:layout.XOU_ORIG_OFF + 16] == SENDER
    assert x[layout.XOU_DEST_OFF:layout.XOU_DEST_OFF + 16] == dests[0]
