"""Send complete IPv6 packets (XCAST6 built by engine.wire.codec) from a lab namespace.

A raw ``IPPROTO_RAW`` IPv6 socket means "header included" on Linux: the kernel routes the
packet by its destination and sends our bytes as they are (traffic class, flow label, hop
limit and the XCAST headers untouched).
"""

from __future__ import annotations

import ipaddress
import socket

from lab import netns


class RawSender:
    """A header-included IPv6 socket opened inside a namespace (usable from this process)."""

    def __init__(self, ns: str) -> None:
        with netns.in_netns(ns):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def send(self, packet: bytes) -> None:
        """Send one IPv6 packet; the kernel routes it by its outer destination."""
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        self.sock.sendto(packet, (dst, 0))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
