"""The hand-written BPF ingress filter: by interpretation and in the real kernel."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from engine.dataplane import afpacket, bpf
from lab import netns
from tests.lab.scapy_xcast import ethernet, xcast_packet

MAC_A = bytes.fromhex("020000000a01")
MAC_B = bytes.fromhex("020000000b01")
S, D1, D2 = "2001:db8:a::1", "2001:db8:1::10", "2001:db8:2::10"


def _xou(tc: int = 0x5C) -> bytes:
    # XOU per the note: outer IPv6 (nh 41) / IPv6 to ff35::ffff:ffff / UDP / XOU header.
    inner = bytes(IPv6(src="2001:db8::dead", dst="ff35::ffff:ffff") / UDP(sport=1, dport=2) / (b"x" * 40))
    outer = IPv6(tc=tc, fl=0x78580, nh=41, src=S, dst=D1, plen=len(inner))
    return bytes(outer) + inner


def _icmp(icmp_type: int, quoted: bytes) -> bytes:
    # an ICMPv6 message (checksum not needed by the filter) quoting ``quoted``
    body = bytes([icmp_type, 0, 0, 0, 0, 0, 0, 0]) + quoted
    return bytes(IPv6(nh=58, src="2001:db8:ff::1", dst=S, plen=len(body))) + body


CASES: list[tuple[str, bytes, bool]] = [
    ("xcast rh253", xcast_packet(S, [D1, D2], b"hello"), True),
    ("xcast with ECN bits set", bytes([0x65, 0xF0]) + xcast_packet(S, [D1], b"x")[2:], True),
    ("xou", _xou(), True),
    ("plain udp", bytes(IPv6(src=S, dst=D1) / UDP(dport=5000) / b"hi"), False),
    ("udp with dscp 23 but not tunnelled", bytes(IPv6(tc=0x5C, src=S, dst=D1) / UDP() / (b"x" * 60)), False),
    ("xcast inner but wrong tc (dscp 22)", bytes([0x65, 0x80]) + xcast_packet(S, [D1], b"x")[2:], False),
    ("ipv6-in-ipv6 to unicast inner",
     bytes(IPv6(tc=0x5C, nh=41, src=S, dst=D1) / IPv6(src=S, dst=D2) / UDP()), False),
    ("xou mark with tc 0", _xou(tc=0), False),
    # A router's error about one of our copies (the relay) passes; other ICMPv6 does not.
    ("time exceeded quoting an xcast copy", _icmp(3, xcast_packet(S, [D1], b"x")), True),
    ("packet too big quoting an xcast copy", _icmp(2, xcast_packet(S, [D1], b"x")), True),
    ("dest unreachable quoting an xcast copy", _icmp(1, xcast_packet(S, [D1], b"x")), True),
    ("parameter problem quoting an xcast copy", _icmp(4, xcast_packet(S, [D1], b"x")), False),
    ("time exceeded quoting plain udp", _icmp(3, bytes(IPv6(src=S, dst=D1) / UDP(dport=5000))), False),
    ("echo request", _icmp(128, bytes(IPv6(src=S, dst=D1) / UDP(dport=5000))), False),
]


@pytest.mark.parametrize(("name", "pkt", "expect"), CASES, ids=[c[0] for c in CASES])
def test_program_classifies(name: str, pkt: bytes, expect: bool) -> None:
    frame = ethernet(MAC_B, MAC_A, pkt)
    assert (bpf.run(bpf.PROGRAM, frame) > 0) is expect, name


def test_own_copies_and_non_ipv6_are_dropped() -> None:
    frame = ethernet(MAC_B, MAC_A, xcast_packet(S, [D1], b"x"))
    assert bpf.run(bpf.PROGRAM, frame, pkttype=4) == 0           # PACKET_OUTGOING
    assert bpf.run(bpf.PROGRAM, MAC_B + MAC_A + b"\x08\x00" + frame[14:]) == 0
    assert bpf.run(bpf.PROGRAM, frame[:40]) == 0                  # truncated: out-of-bounds load


def test_listing_documents_every_instruction() -> None:
    text = bpf.explain()
    assert len(text.splitlines()) == len(bpf.PROGRAM) == 22
    assert all(i.why for i in bpf.PROGRAM)
    # every jump lands inside the program, where its comment says ("-> N")
    for pc, ins in enumerate(bpf.PROGRAM):
        assert ins.why.startswith(f"{pc}: ")
        if ins.code & 0x07 == bpf.BPF_JMP:
            assert pc + 1 + max(ins.jt, ins.jf) < len(bpf.PROGRAM)
            named = {int(t.split()[0].rstrip(",")) for t in ins.why.split("-> ")[1:]}
            targets = {pc + 1 + ins.jt, pc + 1 + ins.jf} - {pc + 1}
            assert targets <= named, (pc, ins.why)


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str]]:
    with netns.temporary("xlb-a", "xlb-b") as (a, b):
        netns.veth(a, "xlbpf0", b, "xlbpf1")
        yield a, b


@pytest.mark.root
@pytest.mark.netns
def test_kernel_passes_only_xcast(veth_pair: tuple[str, str]) -> None:
    a, b = veth_pair
    mac_b = netns.mac(b, "xlbpf1")
    with netns.in_netns(b):
        rx = afpacket.open_ingress("xlbpf1", fanout_group=None)
    with netns.in_netns(a):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("xlbpf0", 0))
    try:
        for i, (_, pkt, _) in enumerate(CASES):
            # tag each frame by its hop limit so we can tell which ones came through
            tagged = pkt[:7] + bytes([100 + i]) + pkt[8:]
            tx.send(ethernet(mac_b, MAC_A, tagged))
        time.sleep(0.3)
        got: set[int] = set()
        while True:
            try:
                frame = rx.recv(65536)
            except BlockingIOError:
                break
            got.add(frame[14 + 7] - 100)
        expected = {i for i, c in enumerate(CASES) if c[2]}
        assert afpacket.queue_drops(rx) == 0
        assert got == expected, [CASES[i][0] for i in got ^ expected]
    finally:
        rx.close()
        tx.close()
