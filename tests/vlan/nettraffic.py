"""Traffic helpers for namespace tests: sockets inside a namespace, tcpdump capture, pcap parsing."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

from lab import netns
from lab.procs import stop_process


def socket_in_netns(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside ``ns`` (a socket keeps the namespace it was created in)."""
    with netns.in_netns(ns):
        return socket.socket(family, kind, proto)


@dataclass(frozen=True, slots=True)
class Frame:
    dst_mac: bytes
    src_mac: bytes
    vlan_id: int | None
    ethertype: int
    payload: bytes

    @property
    def ipv6_src(self) -> IPv6Address | None:
        return IPv6Address(self.payload[8:24]) if self.ethertype == 0x86DD else None

    @property
    def ipv6_dst(self) -> IPv6Address | None:
        return IPv6Address(self.payload[24:40]) if self.ethertype == 0x86DD else None

    @property
    def next_header(self) -> int | None:
        return self.payload[6] if self.ethertype == 0x86DD else None


def parse_pcap(data: bytes) -> list[Frame]:
    """Ethernet frames of a classic pcap file (tcpdump -w), with the 802.1Q tag decoded."""
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    frames = []
    off = 24
    while off + 16 <= len(data):
        _sec, _usec, caplen, _origlen = struct.unpack(endian + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if len(pkt) < 14:
            continue
        ethertype = struct.unpack("!H", pkt[12:14])[0]
        vlan_id = None
        body = pkt[14:]
        if ethertype == 0x8100 and len(pkt) >= 18:
            vlan_id = struct.unpack("!H", pkt[14:16])[0] & 0x0FFF
            ethertype = struct.unpack("!H", pkt[16:18])[0]
            body = pkt[18:]
        frames.append(Frame(pkt[0:6], pkt[6:12], vlan_id, ethertype, body))
    return frames


@contextmanager
def capture(ns: str, ifname: str, out: Path) -> Iterator[list[Frame]]:
    """tcpdump on ``ifname`` in ``ns`` for the duration of the block; frames filled in on exit.

    libpcap re-inserts the 802.1Q tag that veth hands over out of band, so the file shows
    the tag exactly as it was on the wire.
    """
    proc = subprocess.Popen(
        # nsenter execs tcpdump in place (``ip netns exec`` forks): the PID we signal is tcpdump's.
        # --immediate-mode: hand each packet over at once (else the ring block may still hold
        # the last packets when we stop the capture).
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            "tcpdump",
            "--immediate-mode",
            "-i",
            ifname,
            "-U",
            "-nn",
            "-Z",
            "root",
            "-w",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    frames: list[Frame] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        line = ""
        while "listening on" not in line:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"tcpdump on {ns}/{ifname} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("tcpdump did not start")
        yield frames
        time.sleep(0.3)
    finally:
        stop_process(proc, grace=10, sig=signal.SIGINT)   # SIGINT: tcpdump flushes the file
    frames.extend(parse_pcap(out.read_bytes()))
