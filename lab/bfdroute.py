"""``python -m lab.bfdroute``: a lab router's divert next hops, selected by BFD state.

FRR 8.4's staticd cannot tie a static route to BFD (``ipv6 route ... bfd`` arrived with
FRR 9.0; 8.4's staticd binary has no BFD code at all), so the lab router does what Junos's
``qualified-next-hop ... bfd-liveness-detection`` and Cisco's tracked PBR/ABF next hops do,
in a few lines on top of the real thing: FRR's bfdd runs the sessions with the engines (RFC
5880/5881, 100 ms x 3), and this process subscribes to bfdd's control socket (event-driven,
one message per session state change) and rewrites the divert table:

* every engine whose session is up is a next hop (``active-active``: ECMP, the kernel hashes
  flows over them; ``active-standby``: the first one up in the configured order);
* no engine up: ``open`` removes the divert route, so the policy rule falls through to the main
  table and the packet is forwarded towards its outer destination like a non-XCAST router would
  (RFC 5058's semi-permeable behaviour); ``closed`` installs a blackhole (drop).

Like the vendor routers, a next hop leaves as soon as its session leaves Up (detection time,
or at once when the engine signals AdminDown) and comes back when it is Up again.  Each change
is appended to ``--state`` as a JSON line (time, live next hops) for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from api.bfdd import BMT_NOTIFY, split_frames, subscribe_message


def route_command(table: int, live: list[tuple[str, str]], fail: str) -> list[str]:
    """The ``ip -6 route`` command that installs ``live`` (addr, dev) next hops in ``table``."""
    if len(live) == 1:
        addr, dev = live[0]
        return ["ip", "-6", "route", "replace", "default", "via", addr, "dev", dev, "table", str(table)]
    if live:
        cmd = ["ip", "-6", "route", "replace", "default", "table", str(table)]
        for addr, dev in live:
            cmd += ["nexthop", "via", addr, "dev", dev, "weight", "1"]
        return cmd
    if fail == "closed":
        return ["ip", "-6", "route", "replace", "blackhole", "default", "table", str(table)]
    return ["ip", "-6", "route", "flush", "table", str(table)]


def select(up: dict[str, bool], order: list[tuple[str, str]], mode: str) -> list[tuple[str, str]]:
    """The next hops to install: every live one, or the first live one (active-standby)."""
    live = [nh for nh in order if up.get(nh[0])]
    return live[:1] if mode == "active-standby" else live


def main(argv: list[str] | None = None) -> int:
    """Follow bfdd's session states until killed."""
    ap = argparse.ArgumentParser(prog="lab.bfdroute")
    ap.add_argument("--ctl", required=True, help="bfdd control socket (--bfdctl)")
    ap.add_argument("--table", type=int, required=True)
    ap.add_argument("--nexthop", action="append", required=True, help="ENGINE_ADDR@DEV (in order)")
    ap.add_argument("--fail", choices=("open", "closed"), default="open")
    ap.add_argument("--mode", choices=("active-active", "active-standby"), default="active-active")
    ap.add_argument("--state", type=Path, required=True, help="JSON lines: each change of next hops")
    args = ap.parse_args(argv)
    order = [tuple(nh.split("@", 1)) for nh in args.nexthop]
    nexthops: list[tuple[str, str]] = [(a, d) for a, d in order]
    up = {a: False for a, _ in nexthops}
    installed: list[tuple[str, str]] | None = None

    def apply(why: str) -> None:
        nonlocal installed
        live = select(up, nexthops, args.mode)
        if live == installed:
            return
        subprocess.run(route_command(args.table, live, args.fail), check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        installed = live
        rec = {"ts": time.time(), "live": [a for a, _ in live], "why": why,
               "fallback": None if live else args.fail}
        with args.state.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"bfdroute: {json.dumps(rec)}", flush=True)

    apply("start: no session up yet")
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(args.ctl)
        except OSError as exc:
            print(f"bfdroute: cannot reach bfdd at {args.ctl}: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        sock.sendall(subscribe_message())
        buf = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            msgs, buf = split_frames(buf + data)
            for mtype, doc in msgs:
                addr = str(doc.get("peer-address"))
                if mtype == BMT_NOTIFY and doc.get("op") == "status" and addr in up:
                    up[addr] = doc.get("state") == "up"
                    apply(f"{addr} {doc.get('state')} (diag {doc.get('diagnostics')})")
        sock.close()
        for a in up:                    # bfdd gone: no session can be trusted
            up[a] = False
        apply("bfdd control socket closed")
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
