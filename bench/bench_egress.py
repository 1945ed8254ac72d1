#!/usr/bin/env python3
"""Egress syscall strategy: one ``sendto`` per frame vs ``sendmmsg`` batches (engine/dataplane/afpacket.py).

Writes N frames of a realistic copy size onto a veth inside a private namespace pair (the
peer drops them) and reports frames/s, syscalls and CPU per strategy.  Prints, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dataplane import afpacket
from lab import netns


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(frames: int, size: int, batch: int) -> dict[str, Any]:
    with netns.temporary("xleg-a", "xleg-b") as (a, b):
        netns.veth(a, "xeg0", b, "xeg1")
        # What the worker has per copy: the link's Ethernet header and the IPv6 packet, apart.
        l2 = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd"
        packet = b"\x60" + bytes(size - 15)
        with netns.in_netns(a):
            ifindex = socket.if_nametoindex("xeg0")
            plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            bs = afpacket.BatchSender(capacity=batch)
        out: dict[str, Any] = {"frames": frames, "frame_bytes": size, "batch": batch}
        t, c = time.perf_counter(), cpu()
        addr = ("xeg0", 0x86DD)       # copies go to different links: each send names its link
        for _ in range(frames):
            plain.sendto(l2 + packet, addr)
        dt, dc = time.perf_counter() - t, cpu() - c
        out["send_per_frame"] = {"frames_per_s": round(frames / dt), "syscalls": frames,
                                 "cpu_us_per_frame": round(1e6 * dc / frames, 2)}
        t, c = time.perf_counter(), cpu()
        sent = 0
        for _ in range(frames):
            bs.add(ifindex, l2, packet)
        s, _ = bs.flush()
        sent += s
        dt, dc = time.perf_counter() - t, cpu() - c
        out["sendmmsg"] = {"frames_per_s": round(frames / dt), "syscalls": bs.syscalls,
                           "cpu_us_per_frame": round(1e6 * dc / frames, 2), "failed": bs.failed_total}
        plain.close()
        bs.close()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=200, help="frame bytes (an X2U copy of a small datagram)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_egress.json"))
    a = ap.parse_args()
    res = run(a.frames, a.size, a.batch)
    res["loadavg"] = os.getloadavg()
    print(f"{'strategy':<16} {'frames/s':>10} {'syscalls':>9} {'cpu us/frame':>13}")
    for k in ("send_per_frame", "sendmmsg"):
        r = res[k]
        print(f"{k:<16} {r['frames_per_s']:>10} {r['syscalls']:>9} {r['cpu_us_per_frame']:>13}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
