"""Batched receive: many frames per system call with ``recvmmsg`` (via ctypes).

Python's socket module has no ``recvmmsg``; one ``recv_into`` per frame made the receive side
cost one system call (and one Python-level call with exception handling at the end) per
packet.  :class:`BatchReceiver` owns a preallocated arena of ``capacity`` slots and the
``mmsghdr``/``iovec`` arrays pointing into it, built once; each :meth:`receive` is one
``recvmmsg(MSG_DONTWAIT)`` that returns how many frames landed, and :meth:`frame` copies one of
them out (optionally skipping a header) as ``bytes`` — the one copy the parser needs anyway.

The arena is an anonymous ``mmap`` so a 64 KiB slot (no frame can be truncated: the largest
possible IPv6 packet on a link fits) only costs resident memory for the pages actually written.

With ``timestamps=True`` each message also gets room for one control message, so a socket with
``SO_TIMESTAMPNS`` set hands over the kernel's arrival time of every frame (:meth:`stamp_ns`):
the worker's latency then starts when the frame reached the engine's link, queueing included.
"""

from __future__ import annotations

import ctypes
import errno
import mmap

from engine.dataplane.mmsg import SO_TIMESTAMPNS
from engine.dataplane.mmsg import IoVec as _IoVec
from engine.dataplane.mmsg import MMsgHdr as _MMsgHdr
from engine.dataplane.mmsg import MsgHdr as _MsgHdr
from engine.dataplane.mmsg import libc as _libc

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SOL_SOCKET = 1
SCM_TIMESTAMPNS = SO_TIMESTAMPNS     # the control message's type: struct timespec, CLOCK_REALTIME
CMSG_SLOT = 32              # CMSG_SPACE(sizeof(struct timespec)) on LP64


# struct mmsghdr is 64 bytes on LP64: msg_len is the 15th u32 word, msg_flags the 12th.
_MMSG_WORDS = ctypes.sizeof(_MMsgHdr) // 4
_LEN_WORD = _MMsgHdr.len.offset // 4
_FLAGS_WORD = (_MMsgHdr.hdr.offset + _MsgHdr.flags.offset) // 4
_CONTROLLEN_WORD = (_MMsgHdr.hdr.offset + _MsgHdr.controllen.offset) // 4    # low half of a size_t


class BatchReceiver:
    """Up to ``capacity`` frames per ``recvmmsg`` into a preallocated arena (one per worker)."""

    def __init__(self, capacity: int = 64, slot_size: int = 65536, timestamps: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.slot_size = slot_size
        self._arena = mmap.mmap(-1, capacity * slot_size)
        self._arena_mv = memoryview(self._arena)
        self._arena_c = (ctypes.c_char * (capacity * slot_size)).from_buffer(self._arena)
        base = ctypes.addressof(self._arena_c)
        self._iov = (_IoVec * capacity)()
        self._msgs = (_MMsgHdr * capacity)()
        for i in range(capacity):
            self._iov[i].base = base + i * slot_size
            self._iov[i].len = slot_size
            h = self._msgs[i].hdr
            h.iov = ctypes.pointer(self._iov[i])
            h.iovlen = 1
        self._control = (ctypes.c_char * (capacity * CMSG_SLOT))()
        self._cmsg_q = memoryview(self._control).cast("B").cast("q")   # 4 int64 words per slot
        self.timestamps = timestamps
        if timestamps:
            cbase = ctypes.addressof(self._control)
            for i in range(capacity):
                self._msgs[i].hdr.control = cbase + i * CMSG_SLOT
                self._msgs[i].hdr.controllen = CMSG_SLOT
        self._msgs_addr = ctypes.addressof(self._msgs)
        self._msgs_b = memoryview(self._msgs).cast("B")
        # The kernel rewrites msg_controllen (and msg_len, msg_flags) of every message it fills:
        # each receive starts from this pristine copy (one 4 KiB memmove, not a loop of stores).
        self._pristine = bytes(self._msgs_b)
        # u32 view of the mmsghdr array: msg_len and msg_flags without ctypes field access
        self._words = self._msgs_b.cast("I")
        self.syscalls = 0

    def receive(self, fd: int, limit: int | None = None) -> int:
        """Frames now in the arena (0 when the socket is empty); raises OSError on a real error."""
        n = self.capacity if limit is None else min(limit, self.capacity)
        self.syscalls += 1
        if self.timestamps:
            self._msgs_b[:] = self._pristine
        while True:
            r: int = _libc.recvmmsg(fd, self._msgs_addr, n, MSG_DONTWAIT, None)
            if r >= 0:
                return r
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            if err != errno.EINTR:
                raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")

    def length(self, i: int) -> int:
        """Size of frame ``i`` of the last :meth:`receive`."""
        return int(self._words[i * _MMSG_WORDS + _LEN_WORD])

    def truncated(self, i: int) -> bool:
        return bool(self._words[i * _MMSG_WORDS + _FLAGS_WORD] & MSG_TRUNC)

    def stamp_ns(self, i: int) -> int:
        """Kernel arrival time of frame ``i`` (CLOCK_REALTIME ns), 0 when the kernel gave none."""
        if self._words[i * _MMSG_WORDS + _CONTROLLEN_WORD] < CMSG_SLOT:
            return 0
        q = self._cmsg_q
        k = 4 * i
        if q[k + 1] != SOL_SOCKET | SCM_TIMESTAMPNS << 32:    # cmsg_level, cmsg_type (two int32)
            return 0
        return int(q[k + 2] * 1_000_000_000 + q[k + 3])

    def frame(self, i: int, skip: int = 0) -> bytes:
        """Frame ``i`` as bytes, without its first ``skip`` bytes (e.g. the Ethernet header)."""
        off = i * self.slot_size
        return bytes(self._arena_mv[off + skip:off + self.length(i)])

    def frames(self, count: int, skip: int = 0) -> list[bytes]:
        """The first ``count`` frames of the last :meth:`receive` (see :meth:`frame`)."""
        mv, words, size = self._arena_mv, self._words, self.slot_size
        out = []
        off = 0
        w = _LEN_WORD
        for _ in range(count):
            out.append(bytes(mv[off + skip:off + words[w]]))
            off += size
            w += _MMSG_WORDS
        return out

    def close(self) -> None:
        self._words.release()
        self._msgs_b.release()
        self._cmsg_q.release()
        del self._arena_c
        self._arena_mv.release()
        self._arena.close()

