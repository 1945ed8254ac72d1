"""AF_PACKET sockets for the worker: filtered fanout ingress and batched (sendmmsg) egress.

Ingress: one ``SOCK_RAW`` socket per engine link per worker, created with protocol 0 (so it
receives nothing until bound), the BPF filter attached, then bound to ``ETH_P_IPV6`` on the link
and joined to a ``PACKET_FANOUT_HASH`` group (one group per link: the kernel only groups sockets
bound to the same device), so the kernel spreads flows over the workers.

Egress: one unbound socket; every frame names its link in a ``sockaddr_ll``, so frames for
different links still go out in one ``sendmmsg`` call.  Frames are copied into a preallocated
ctypes arena (no per-packet allocation, no Python-side concatenation) whose layout only
:class:`TxRing` knows: writers get offsets from its one :meth:`TxRing.put`.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import socket
import struct
from collections.abc import Sequence

from engine.dataplane import bpf
from engine.dataplane.mmsg import SO_TIMESTAMPNS
from engine.dataplane.mmsg import IoVec as _IoVec
from engine.dataplane.mmsg import MMsgHdr as _MMsgHdr
from engine.dataplane.mmsg import libc as _libc
from engine.wire.layout import ETH_HLEN as ETH_HLEN  # re-exported: the worker strips this many bytes
from engine.wire.layout import ETH_P_IPV6

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_QDISC_BYPASS = 20
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000


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


# What TxRing.prepare returns: (ifindexes, sizes) in the ring's word types, relative offsets.
Prepared = tuple[array.array, array.array, tuple[int, ...]]


class TxRing:
    """The ``sendmmsg`` buffer: ``capacity`` frame slots and their message headers, built once.

    The one owner of the buffer layout (which slot, where its bytes go, where its length and its
    link are written for the kernel).  Writers ask :meth:`put` for slots and write each frame's
    bytes into :attr:`arena` where it says; nobody else indexes the ``iovec`` or
    ``sockaddr_ll`` arrays.  Without a socket (``fd`` -1, for tests and offline rendering)
    :meth:`frames` reads back what was queued and :meth:`flush` fails every frame with EBADF.
    """

    def __init__(self, capacity: int = 256, slot_size: int = 9216) -> None:
        self.fd = -1
        self.capacity = capacity
        self.slot_size = slot_size      # the largest frame one slot holds
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
        self.arena = memoryview(self._arena).cast("B")                    # frame bytes (write here)
        self._iov_q = memoryview(self._iov).cast("B").cast("Q")          # base, len pairs
        self._addr_i = memoryview(self._addr).cast("B").cast("i")        # 5 ints per sockaddr_ll
        # offsets[k]: the places of k frames put together, relative to what put() returns
        self.offsets = tuple(tuple(range(0, k * slot_size, slot_size)) for k in range(capacity + 1))
        self.count = 0           # frames queued (slots 0 .. count-1)
        self.syscalls = 0
        self.failed_total = 0    # frames the kernel refused (also those flushed by put())
        self.last_errno = 0

    def prepare(self, ifindexes: Sequence[int], sizes: Sequence[int]) -> Prepared:
        """A set of frames that is put again and again (a flow template's), in the ring's form.

        Returns ``(ifindexes, sizes, offsets)``: the first two in the ring's own word types, for
        :meth:`put` to store with one slice assignment each instead of two stores per frame;
        ``offsets`` are the frames' places relative to what :meth:`put` returns.
        """
        return array.array("i", ifindexes), array.array("Q", sizes), self.offsets[len(sizes)]

    def put(self, frames: list[tuple[int, bytes, bytes]] | Prepared) -> int:
        """Queue frames; returns the arena offset of the first one (``base``).

        ``frames`` is either one packet's copies, a list of ``(ifindex, l2 header, packet)``
        that put() copies into the arena itself, or what :meth:`prepare` made (a flow
        template's frames): then put() records their links and lengths and the caller writes
        frame k's bytes at ``arena[base + offsets[k]:...]``.  The caller checked every length
        against :attr:`slot_size`.  One call per packet, not per frame (a call per copy was a
        third of the worker's per-copy cost).  A packet's frames never straddle a flush: when
        they do not fit, what is queued is written first.
        """
        i = self.count
        # struct iovec k is two u64 words (base, len); struct sockaddr_ll k is five i32 words
        # (family|protocol, ifindex, ...).
        if isinstance(frames, list):    # one packet's copies: arrays would cost more than they save
            j = i + len(frames)
            if j > self.capacity:
                i, j = self._make_room(j - i)
            iov_q = self._iov_q
            addr_i = self._addr_i
            arena = self.arena
            step = self.slot_size
            off = i * step
            a = 2 * i + 1
            b = 5 * i + 1
            for ifindex, l2, packet in frames:
                h = off + len(l2)
                end = h + len(packet)
                arena[off:h] = l2
                arena[h:end] = packet
                iov_q[a] = end - off
                addr_i[b] = ifindex
                off += step
                a += 2
                b += 5
        else:                           # prepare()d
            ifindexes, sizes, _ = frames
            j = i + len(sizes)
            if j > self.capacity:
                i, j = self._make_room(j - i)
            self._iov_q[2 * i + 1:2 * j:2] = sizes
            self._addr_i[5 * i + 1:5 * j:5] = ifindexes
        self.count = j
        return i * self.slot_size

    def _make_room(self, k: int) -> tuple[int, int]:
        """Write what is queued so ``k`` frames fit from slot 0; returns their slots (0, k)."""
        if k > self.capacity:
            raise ValueError(f"{k} frames do not fit a ring of {self.capacity}")
        self.flush()
        return 0, k

    def add(self, ifindex: int, l2: bytes, packet: bytes) -> bool:
        """Queue one frame (``l2`` header + IPv6 packet); False if it does not fit a slot."""
        if len(l2) + len(packet) > self.slot_size:
            return False
        self.put([(ifindex, l2, packet)])
        return True

    def frames(self) -> list[tuple[int, bytes]]:
        """The queued frames as ``(ifindex, frame bytes)`` (tests and tools; not hot path)."""
        s = self.slot_size
        return [(self._addr_i[5 * i + 1], bytes(self.arena[i * s:i * s + self._iov_q[2 * i + 1]]))
                for i in range(self.count)]

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


class BatchSender(TxRing):
    """A :class:`TxRing` with its AF_PACKET socket: frames written with one ``sendmmsg`` per batch."""

    def __init__(self, capacity: int = 256, slot_size: int = 9216, qdisc_bypass: bool = False) -> None:
        super().__init__(capacity, slot_size)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        if qdisc_bypass:
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.fd = self.sock.fileno()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def ifindex_of(ifname: str) -> int:
    """Interface index in the calling thread's network namespace."""
    return socket.if_nametoindex(ifname)
