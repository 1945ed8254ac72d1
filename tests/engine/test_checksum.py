"""Checksum arithmetic against a naive RFC 1071 implementation and RFC 1624 incremental updates."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from engine.wire import checksum


def naive_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


@given(st.binary(max_size=300))
def test_ones_sum_matches_naive(data: bytes) -> None:
    assert (~checksum.fold(checksum.ones_sum(data))) & 0xFFFF in {naive_checksum(data), 0xFFFF, 0}
    if naive_checksum(data) not in (0, 0xFFFF):
        assert (~checksum.fold(checksum.ones_sum(data))) & 0xFFFF == naive_checksum(data)


@given(st.binary(min_size=2, max_size=200).filter(lambda b: len(b) % 2 == 0), st.data())
def test_incremental_equals_recompute(data: bytes, draw: st.DataObject) -> None:
    off = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new = draw.draw(st.binary(min_size=2, max_size=2))
    changed = data[:off] + new + data[off + 2 :]
    old_ck = naive_checksum(data) or 0xFFFF
    inc = checksum.incremental(old_ck, checksum.ones_sum(data[off : off + 2]), checksum.ones_sum(new))
    want = naive_checksum(changed)
    # 0x0000 and 0xFFFF are the same one's-complement value; IPv6 UDP transmits 0xFFFF
    assert inc == (want or 0xFFFF)
