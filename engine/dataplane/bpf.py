"""Hand-written classic BPF ingress filter for the worker's AF_PACKET sockets.

The kernel runs this program on every frame of an engine link before it is queued to the
socket, so only candidate XCAST6 packets ever cost Python time.  It passes a frame when:

* it was not sent by this host (our own copies go back out of the same links and would
  otherwise be seen by every worker socket on that link),
* the EtherType is IPv6 (``0x86dd``; in ``vlan`` mode the 802.1Q subinterface has already
  removed the tag, so the offsets are the same in both modes),
* IPv6 version 6 with traffic class ``010111xx`` (DSCP 23; the two ECN bits are free),
* the outer next header is 41 (both encodings are IPv6-in-IPv6: RFC 5058 RH253 and
  XCAST6-over-UDP) and
* the inner destination starts with ``ff0e::`` (ALL_XCAST_NODES ``ff0e::114``) or
  ``ff35::`` (the XOU mark ``ff35::ffff:ffff``);

or, for the relay of routers' errors about the engine's copies (engine/forwarding/icmp_errors.py),
when the outer next header is ICMPv6 (58), the type is Destination Unreachable, Packet Too Big or
Time Exceeded, and the quoted packet's next header is 41 (an XCAST6 copy).  Routers send their
errors with their own traffic class, so the TC program passes them to the stack (and to these
sockets) like any non-XCAST frame.

Everything finer (N, lengths, bitmap) is the codec's job and is counted there.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass

from engine.wire.layout import (
    ETH_HLEN,
    ETH_P_IPV6,
    ETH_TYPE_OFF,
    ICMP6_DEST_UNREACH,
    ICMP6_HLEN,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    ICMP6_TYPE_OFF,
    INNER_DST_OFF,
    IP6_HLEN,
    IP6_NH_OFF,
    NH_ICMPV6,
    OUTER_NH_OFF,
)

# Instruction classes / modes (linux/filter.h, linux/bpf_common.h).
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS = 0x20
BPF_AND = 0x50
BPF_JEQ = 0x10
BPF_K = 0x00

SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4

SO_ATTACH_FILTER = 26
SO_LOCK_FILTER = 44

XCAST_TC_MASK_HALF = 0xFFC0    # version (4 bits) + top 6 bits of the traffic class
XCAST_TC_VALUE_HALF = 0x65C0   # version 6, TC 010111xx -> 0x6 << 12 | 0x5C << 4
ALL_XCAST_NODES_HI = 0xFF0E0000
XOU_MARK_HI = 0xFF350000
ACCEPT_SNAPLEN = 0x40000       # "whole frame"

# Offsets in the Ethernet frame (the wire layout's, shifted by the Ethernet header).
OFF_ETHERTYPE = ETH_TYPE_OFF
OFF_IP6 = ETH_HLEN
OFF_OUTER_NH = OFF_IP6 + OUTER_NH_OFF
OFF_INNER_DST = OFF_IP6 + INNER_DST_OFF
OFF_ICMP6_TYPE = OFF_IP6 + IP6_HLEN + ICMP6_TYPE_OFF
OFF_QUOTED_NH = OFF_IP6 + IP6_HLEN + ICMP6_HLEN + IP6_NH_OFF   # the quoted packet's (outer) next header


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct sock_filter``: code, jump-if-true, jump-if-false, constant."""

    code: int
    jt: int
    jf: int
    k: int
    why: str

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def _jeq(k: int, jt: int, jf: int, why: str) -> Insn:
    return Insn(BPF_JMP | BPF_JEQ | BPF_K, jt, jf, k, why)


# Jump offsets are relative to the next instruction (0 = fall through).  ACCEPT is at 20 and
# DROP at 21; each comment names the target so the arithmetic can be checked by eye.
PROGRAM: list[Insn] = [
    Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE,
         "0: A = skb->pkt_type (ancillary load)"),
    _jeq(PACKET_OUTGOING, 19, 0, "1: sent by this host (our own copies) -> 21 drop"),
    Insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, OFF_ETHERTYPE, "2: A = EtherType"),
    _jeq(ETH_P_IPV6, 0, 17, "3: not IPv6 -> 21 drop"),
    Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, OFF_OUTER_NH, "4: A = outer next header"),
    _jeq(NH_ICMPV6, 8, 0, "5: ICMPv6 -> 14 (an error about one of our copies?)"),
    Insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, OFF_IP6, "6: A = version|TC|flow-hi (first 16 bits)"),
    Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, XCAST_TC_MASK_HALF, "7: A &= 0xffc0 (version + TC[7:2])"),
    _jeq(XCAST_TC_VALUE_HALF, 0, 12, "8: not version 6 with TC 010111xx -> 21 drop"),
    Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, OFF_OUTER_NH, "9: A = outer next header"),
    _jeq(socket.IPPROTO_IPV6, 0, 10, "10: not IPv6-in-IPv6 (41) -> 21 drop"),
    Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, OFF_INNER_DST, "11: A = inner destination[0:4]"),
    _jeq(ALL_XCAST_NODES_HI, 7, 0, "12: ff0e:: (ALL_XCAST_NODES) -> 20 accept"),
    _jeq(XOU_MARK_HI, 6, 7, "13: ff35:: (XOU mark) -> 20 accept, else -> 21 drop"),
    Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, OFF_ICMP6_TYPE, "14: A = ICMPv6 type"),
    _jeq(ICMP6_DEST_UNREACH, 2, 0, "15: Destination Unreachable -> 18"),
    _jeq(ICMP6_PACKET_TOO_BIG, 1, 0, "16: Packet Too Big -> 18"),
    _jeq(ICMP6_TIME_EXCEEDED, 0, 3, "17: Time Exceeded -> 18, any other type -> 21 drop"),
    Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, OFF_QUOTED_NH, "18: A = the quoted packet's next header"),
    _jeq(socket.IPPROTO_IPV6, 0, 1, "19: 41 (an XCAST6 copy) -> 20 accept, else -> 21 drop"),
    Insn(BPF_RET | BPF_K, 0, 0, ACCEPT_SNAPLEN, "20: accept the whole frame"),
    Insn(BPF_RET | BPF_K, 0, 0, 0, "21: drop"),
]

def explain() -> str:
    """Human-readable listing of the program (``code jt jf k  comment``)."""
    return "\n".join(f"{i.code:#06x} {i.jt:3d} {i.jf:3d} {i.k & 0xFFFFFFFF:#010x}  {i.why}" for i in PROGRAM)


def run(prog: list[Insn], frame: bytes, pkttype: int = 0) -> int:
    """Interpret the program on a frame (for tests and ``explain``); returns the snap length."""
    a = 0
    pc = 0
    while True:
        ins = prog[pc]
        cls = ins.code & 0x07
        if cls == BPF_LD:
            size = ins.code & 0x18
            k = ins.k
            if k == SKF_AD_OFF + SKF_AD_PKTTYPE:
                a = pkttype
            else:
                n = {BPF_W: 4, BPF_H: 2, BPF_B: 1}[size]
                if k + n > len(frame):
                    return 0    # out-of-bounds load aborts the program with "drop", as in the kernel
                a = int.from_bytes(frame[k:k + n], "big")
            pc += 1
        elif cls == BPF_ALU:
            a &= ins.k
            pc += 1
        elif cls == BPF_JMP:
            pc += 1 + (ins.jt if a == (ins.k & 0xFFFFFFFF) else ins.jf)
        elif cls == BPF_RET:
            return ins.k
        else:   # pragma: no cover - only the classes above are emitted
            raise ValueError(f"unsupported BPF class {cls:#x} at {pc}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, prog: list[Insn] | None = None, lock: bool = False) -> None:
    """Attach the program to a packet socket with SO_ATTACH_FILTER (optionally lock it)."""
    code = b"".join(i.pack() for i in (prog or PROGRAM))
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p).value)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    if lock:
        sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
