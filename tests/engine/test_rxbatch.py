"""BatchReceiver: many datagrams per recvmmsg, exact lengths and bytes, empty socket = 0,
the kernel's arrival time of each frame."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from engine.dataplane.mmsg import SO_TIMESTAMPNS
from engine.dataplane.rxbatch import BatchReceiver


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname()[:2])
    yield rx, tx
    rx.close()
    tx.close()


def test_empty_socket_returns_zero(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, _ = udp_pair
    r = BatchReceiver(capacity=8, slot_size=2048)
    try:
        assert r.receive(rx.fileno()) == 0
        assert r.syscalls == 1
    finally:
        r.close()


def test_one_call_returns_every_queued_datagram_in_order(
        udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = udp_pair
    sent = [bytes([i]) * (10 + 37 * i) for i in range(10)]
    for d in sent:
        tx.send(d)
    r = BatchReceiver(capacity=16, slot_size=2048)
    try:
        n = r.receive(rx.fileno())
        assert n == 10
        assert r.syscalls == 1
        assert [r.length(i) for i in range(n)] == [len(d) for d in sent]
        assert r.frames(n) == sent
        assert [r.frame(i, skip=3) for i in range(n)] == [d[3:] for d in sent]
        assert r.frames(n, 5) == [d[5:] for d in sent]
        assert not any(r.truncated(i) for i in range(n))
        assert r.receive(rx.fileno()) == 0
    finally:
        r.close()


def test_limit_and_capacity_bound_one_call(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = udp_pair
    for i in range(7):
        tx.send(b"x%d" % i)
    r = BatchReceiver(capacity=4, slot_size=64)
    try:
        assert r.receive(rx.fileno(), limit=2) == 2
        assert r.frames(2) == [b"x0", b"x1"]
        assert r.receive(rx.fileno()) == 4          # capacity
        assert r.frames(4) == [b"x2", b"x3", b"x4", b"x5"]
        assert r.receive(rx.fileno()) == 1
        assert r.frames(1) == [b"x6"]
    finally:
        r.close()


def test_oversized_datagram_is_flagged_truncated(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = udp_pair
    tx.send(b"y" * 100)
    r = BatchReceiver(capacity=2, slot_size=32)
    try:
        assert r.receive(rx.fileno()) == 1
        assert r.truncated(0)
        assert r.frame(0) == b"y" * 32
    finally:
        r.close()


def test_closed_descriptor_raises_named_error() -> None:
    r = BatchReceiver(capacity=1, slot_size=64)
    try:
        with pytest.raises(OSError, match="recvmmsg"):
            r.receive(10_000)
    finally:
        r.close()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BatchReceiver(capacity=0)


def test_arrival_timestamps_are_the_kernels(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = udp_pair
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    time.sleep(0.05)        # the kernel enables arrival stamping a moment after the first user asks
    sent_at = []
    for i in range(6):
        sent_at.append(time.time_ns())
        tx.send(b"t%d" % i)
    time.sleep(0.1)         # frames wait in the queue: their stamps must not be the read time
    r = BatchReceiver(capacity=4, slot_size=64, timestamps=True)
    plain = BatchReceiver(capacity=4, slot_size=64)
    try:
        stamps = []
        while n := r.receive(rx.fileno()):
            stamps += [r.stamp_ns(i) for i in range(n)]
        read_at = time.time_ns()
        assert len(stamps) == 6 and stamps == sorted(stamps)
        for sent, stamp in zip(sent_at, stamps, strict=True):
            assert sent <= stamp < sent + 50_000_000 < read_at
        tx.send(b"no room for a timestamp")
        assert plain.receive(rx.fileno()) == 1 and plain.stamp_ns(0) == 0
    finally:
        r.close()
        plain.close()
