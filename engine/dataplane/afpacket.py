"""AF_PACKET sockets for the worker: filtered fanout ingress and batched (sendmmsg) egress.

Ingress: one ``SOCK_RAW`` socket per engine link per worker, created with protocol 0 (so it
receives nothing until bound), the BPF filter attached, then bound to ``ETH_P_IPV6`` on the link
and joined to a ``PACKET_FANOUT_HASH`` group (one group per link: the kernel only groups sockets
bound to the same device), so the kernel spreads flows over the workers.

Egress: one unbound socket; every frame names its link in a ``sockaddr_ll``, so frames for
different links still go out in one ``sendmmsg`` call.  Frames are copied into a preallocated
ctypes arena (no per-packet allocation, no Python-side concatenation).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct

from engine.dataplane import bpf
from engine.dataplane.mmsg import SO_TIMESTAMPNS
from engine.dataplane.mmsg import IoVec as _IoVec
from engine.dataplane.mmsg import MMsgHdr as _MMsgHdr
from engine.dataplane.mmsg import libc as _libc

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_QDISC_BYPASS = 20
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14


class _SockaddrLL(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_ushort), ("protocol", ctypes.c_ushort), ("ifindex", ctypes.c_int),
        ("hatype", ctypes.c_ushort), ("pkttype", ctypes.c_ubyte), ("halen", ctypes.c_ubyte),
        ("addr", ctypes.c_ubyte * 8),
    ]


SO_RCVBUFFORCE = 33
DEFAULT_RX_BUFFER = 4 << 20     # bytes; config workers.rx_buffer_kb = 4096 by default


def open_ingress(ifname: str, fanout_group: int | None, bufsize: int = DEFAULT_RX_BUFFER) -> socket.socket:
    """A non-blocking packet socket on ``ifname`` that sees only candidate XCAST6 frames."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        bpf.attach(s)
        # kernel < 4.20 lacks this option; the BPF pkttype test still drops our own frames
        with contextlib.suppress(OSError):
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        # The queue that rides out a worker stall (config workers.rx_buffer_kb; the kernel
        # charges each queued frame its skb truesize, ~850 bytes for a small frame, against twice
        # this value).  FORCE (root) applies it even when net.core.rmem_max is lower; otherwise
        # best effort.
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        # The kernel's arrival time of each frame (read by the worker for its latency histogram,
        # so the time a frame queued before the worker got to it is counted).
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((ifname, ETH_P_IPV6))
        if fanout_group is not None:
            arg = (fanout_group & 0xFFFF) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)
            s.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", arg))
        s.setblocking(False)
    except OSError as exc:
        s.close()
        raise OSError(exc.errno, f"ingress socket on {ifname}: {exc.strerror}") from exc
    return s


def queue_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped because this socket's receive queue was full, since last call.

    ``PACKET_STATISTICS`` (struct tpacket_stats: packets, drops) is reset by each read.
    """
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return int(struct.unpack("II", raw)[1])


def fanout_group_for(ifindex: int, base: int = 0x5800) -> int:
    """Fanout group id for one link (16 bits; per link because groups are per device)."""
    return (base + ifindex) & 0xFFFF


class BatchSender:
    """Collects frames and writes them with one ``sendmmsg`` per batch."""

    def __init__(self, capacity: int = 256, slot_size: int = 9216, qdisc_bypass: bool = False) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        if qdisc_bypass:
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.fd = self.sock.fileno()
        self.capacity = capacity
        self.slot_size = slot_size
        self._arena = ctypes.create_string_buffer(capacity * slot_size)
        self._base = ctypes.addressof(self._arena)
        self._iov = (_IoVec * capacity)()
        self._addr = (_SockaddrLL * capacity)()
        self._msgs = (_MMsgHdr * capacity)()
        for i in range(capacity):
            self._iov[i].base = self._base + i * slot_size
            a = self._addr[i]
            a.family = socket.AF_PACKET
            a.protocol = socket.htons(ETH_P_IPV6)
            h = self._msgs[i].hdr
            h.name = ctypes.addressof(a)
            h.namelen = ctypes.sizeof(_SockaddrLL)
            h.iov = ctypes.pointer(self._iov[i])
            h.iovlen = 1
        # Byte/integer views over the ctypes arrays: slice assignment and item stores on a
        # memoryview are several times cheaper than ctypes.memmove and field setters.
        self._arena_mv = memoryview(self._arena).cast("B")
        self._iov_q = memoryview(self._iov).cast("B").cast("Q")          # base, len pairs
        self._addr_i = memoryview(self._addr).cast("B").cast("i")        # 5 ints per sockaddr_ll
        # For callers that inline add() in a hot loop: (arena bytes, iovec u64 words,
        # sockaddr_ll i32 words, slot size, capacity).  Slot i: frame at arena[i * slot size],
        # its length in iovec word 2i+1, its ifindex in sockaddr word 5i+1; then count = i + 1.
        self.views = (self._arena_mv, self._iov_q, self._addr_i, slot_size, capacity)
        self.count = 0
        self.syscalls = 0
        self.failed_total = 0    # frames the kernel refused (also those flushed by add())
        self.last_errno = 0

    def add(self, ifindex: int, l2: bytes, packet: bytes) -> bool:
        """Queue one frame (``l2`` header + IPv6 packet); False if it does not fit a slot."""
        n = len(l2) + len(packet)
        if n > self.slot_size:
            return False
        if self.count == self.capacity:
            self.flush()
        i = self.count
        off = i * self.slot_size
        h = len(l2)
        mv = self._arena_mv
        mv[off:off + h] = l2
        mv[off + h:off + n] = packet
        self._iov_q[2 * i + 1] = n
        self._addr_i[5 * i + 1] = ifindex
        self.count = i + 1
        return True

    def flush(self) -> tuple[int, list[tuple[int, int]]]:
        """Send everything queued; returns (frames sent, [(message index, errno)] failures)."""
        sent = 0
        failures: list[tuple[int, int]] = []
        start = 0
        total = self.count
        base = ctypes.addressof(self._msgs)
        step = ctypes.sizeof(_MMsgHdr)
        while start < total:
            self.syscalls += 1
            r = _libc.sendmmsg(self.fd, base + start * step, total - start, 0)
            if r < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                # The message at ``start`` failed: count it and carry on with the rest.
                failures.append((start, err))
                self.failed_total += 1
                self.last_errno = err
                start += 1
                continue
            sent += r
            start += r
        self.count = 0
        return sent, failures

    def close(self) -> None:
        self.sock.close()


def ifindex_of(ifname: str) -> int:
    """Interface index in the calling thread's network namespace."""
    return socket.if_nametoindex(ifname)
