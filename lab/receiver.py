"""Lab receiver host agent: logs every datagram that reaches this host, one JSON line each.

Two doors, like an XCAST6 end host (the WIDE Linux end-host patch):

* plain UDP on ``--port`` — what an engine's X2U copy looks like;
* a raw IPv6 socket for next header 41 — a multi-destination XCAST6 copy whose live
  destinations include this host's addresses (e.g. the loopback addresses of the
  126-destination test); each live local destination counts as one delivery.

Each line: ``{"kind", "dst", "src", "sport", "dport", "payload" (hex), "hlim", "csum_ok", "t"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
ALL_XCAST_NODES = ipaddress.IPv6Address("ff0e::114").packed


def local_addresses() -> set[bytes]:
    cmd = ["ip", "-j", "-6", "addr", "show"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    addrs: set[bytes] = set()
    for link in json.loads(out):
        for a in link.get("addr_info", []):
            addrs.add(ipaddress.IPv6Address(a["local"]).packed)
    return addrs


def _csum(src: bytes, dst: bytes, udp: bytes) -> bool:
    data = src + dst + struct.pack("!IxxxB", len(udp), 17) + udp
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def xcast_deliveries(body: bytes, local: set[bytes]) -> list[dict[str, Any]]:
    """Deliveries in an XCAST6 packet received on a raw socket (``body`` starts at the inner header)."""
    if len(body) < 64 or body[24:40] != ALL_XCAST_NODES or body[6] != 43 or body[42] != 253:
        return []
    src = body[8:24]
    n = body[44]
    bitmap = body[48:64]
    doff = 64
    udp = body[doff + 16 * n:]
    if body[40] != 17 or len(udp) < 8:
        return []
    sport, dport = struct.unpack_from("!HH", udp)
    ok = _csum(src, ALL_XCAST_NODES, udp)
    out = []
    for i in range(n):
        if bitmap[i >> 3] & (1 << (i & 7)):
            d = body[doff + 16 * i:doff + 16 * i + 16]
            if d in local:
                out.append({"kind": "xcast", "dst": str(ipaddress.IPv6Address(d)),
                            "src": str(ipaddress.IPv6Address(src)), "sport": sport, "dport": dport,
                            "payload": udp[8:].hex(), "csum_ok": ok, "index": i})
    return out


def serve(port: int, log: Path, ready: Path | None) -> None:
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    udp.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp.bind(("::", port))
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_IPV6)
    raw.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    local = local_addresses()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if ready is not None:
        ready.write_text("ok")
    with open(log, "a", buffering=1) as out:
        while not stop:
            with contextlib.suppress(InterruptedError):
                rd, _, _ = select.select([udp, raw], [], [], 0.5)
            for s in rd:
                data, anc, _, addr = s.recvmsg(65536, 256)
                hlim = None
                dst = None
                for lvl, typ, val in anc:
                    if lvl == socket.IPPROTO_IPV6 and typ == IPV6_HOPLIMIT:
                        hlim = struct.unpack("i", val[:4])[0]
                    elif lvl == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO:
                        dst = str(ipaddress.IPv6Address(val[:16]))
                now = time.time()
                if s is udp:
                    recs = [{"kind": "udp", "dst": dst, "src": addr[0], "sport": addr[1], "dport": port,
                             "payload": data.hex(), "csum_ok": True}]
                else:
                    recs = xcast_deliveries(data, local)
                for r in recs:
                    r["hlim"] = hlim
                    r["t"] = now
                    out.write(json.dumps(r) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--ready", type=Path)
    a = ap.parse_args()
    serve(a.port, a.log, a.ready)


if __name__ == "__main__":
    main()
