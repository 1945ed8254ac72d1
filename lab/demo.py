"""``lab demo``: send XCAST6 datagrams to every receiver, print who got what, then the counters.

Also the helpers the end-to-end tests use: :func:`send_xcast` and :func:`deliveries`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.dataplane.counters import CounterFile
from lab import netns
from lab.rawsend import RawSender
from lab.topology import RECEIVER_PORT, Topology


def packed(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def build(src: str, dests: list[str], payload: bytes, *, sport: int = 40000, dport: int = RECEIVER_PORT,
          hop_limit: int = 64, flags: int = 0) -> bytes:
    """An XCAST6 packet as a sender emits it (engine.wire.codec's builder)."""
    from engine.wire.codec import build_xcast  # type: ignore[import-not-found,unused-ignore]

    pkt: bytes = build_xcast(packed(src), [packed(d) for d in dests], payload, sport=sport, dport=dport,
                             hop_limit=hop_limit, flags=flags)
    return pkt


def send_xcast(topo: Topology, dests: list[str], payloads: list[bytes], **kw: Any) -> None:
    """Send one XCAST6 datagram per payload from the sender host to ``dests``."""
    with RawSender(topo.ns("snd")) as s:
        for p in payloads:
            s.send(build(topo.sender.addr, dests, p, **kw))


def cli_sender_available() -> bool:
    """True when the core's ``xcast6-engine send`` (engine.tools.xcast_send) is installed."""
    try:
        import engine.tools.xcast_send  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def send_with_cli(topo: Topology, dests: list[str], payload: bytes, count: int, *, sport: int = 40000,
                  dport: int = RECEIVER_PORT, flags: int = 0, hop_limit: int = 64) -> str:
    """Run ``xcast6-engine send`` inside the sender namespace (what an operator would type)."""
    cmd = [sys.executable, "-m", "api.main", "send", *dests, "--port", str(dport), "--sport", str(sport),
           "--payload", payload.decode(), "--count", str(count), "--source", topo.sender.addr,
           "--hop-limit", str(hop_limit)]
    if flags & 0x40:
        cmd.append("--dont-x2u")
    if flags & 0x80:
        cmd.append("--anonymous")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run(["ip", "netns", "exec", topo.ns("snd"), *cmd], capture_output=True, text=True,
                       env=env, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"xcast6-engine send failed (exit {p.returncode}): {p.stderr.strip() or p.stdout}")
    return shlex.join(["xcast6-engine", *cmd[3:]])


def send_raw(topo: Topology, packets: list[bytes]) -> None:
    with RawSender(topo.ns("snd")) as s:
        for p in packets:
            s.send(p)


def reset_logs(topo: Topology) -> None:
    """Truncate the receivers' logs (the receivers append, so truncation is safe)."""
    for h in (*topo.receivers, topo.mtu_host):
        with open(topo.receiver_log(h.name), "r+") as f:
            f.truncate(0)


def read_logs(topo: Topology) -> list[dict[str, Any]]:
    """Every receiver's deliveries so far.  Only whole lines: a receiver may be writing one as
    this reads (a read is not atomic against a write), and the rest of it comes next time."""
    out: list[dict[str, Any]] = []
    for h in (*topo.receivers, topo.mtu_host):
        try:
            text = topo.receiver_log(h.name).read_text()
        except FileNotFoundError:
            continue
        for line in text[:text.rfind("\n") + 1].splitlines():
            if line.strip():
                rec = json.loads(line)
                rec["host"] = h.name
                out.append(rec)
    return out


def deliveries(topo: Topology, expect: int = 0, timeout: float = 3.0, settle: float = 0.5
               ) -> dict[str, list[dict[str, Any]]]:
    """Deliveries per destination address, waiting until ``expect`` arrived (then ``settle`` more)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = read_logs(topo)
        if (expect and len(recs) >= expect) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(settle)
    by_dst: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in read_logs(topo):
        by_dst[str(r["dst"])].append(r)
    return dict(by_dst)


def path_of(topo: Topology, dst: str) -> str:
    a = ipaddress.IPv6Address(dst)
    for h in topo.receivers:
        nets = [ipaddress.IPv6Network(f"{h.net}/64")]
        if h.loop_net:
            nets.append(ipaddress.IPv6Network(f"{h.loop_net}/64"))
        if any(a in n for n in nets):
            if h.router == "a":
                return f"snd>rA>eA(X2U)>rA>{h.name}"
            return f"snd>rA>eA(copy)>rA>rB>eB(X2U)>rB>{h.name}"
    return "?"


@dataclass
class MatrixRow:
    dst: str
    host: str
    received: int
    payload_ok: bool
    source_ok: bool
    port_ok: bool
    kind: str
    hlim: str
    path: str
    notes: list[str] = field(default_factory=list)


def matrix(topo: Topology, dests: list[str], payloads: list[bytes], got: dict[str, list[dict[str, Any]]]
           ) -> list[MatrixRow]:
    want = sorted(p.hex() for p in payloads)
    rows = []
    for d in dests:
        recs = got.get(d, [])
        rows.append(MatrixRow(
            dst=d, host=recs[0]["host"] if recs else "-", received=len(recs),
            payload_ok=sorted(r["payload"] for r in recs) == want and all(r["csum_ok"] for r in recs),
            source_ok=bool(recs) and all(r["src"] == topo.sender.addr for r in recs),
            port_ok=bool(recs) and all(r["dport"] == RECEIVER_PORT and r["sport"] == 40000 for r in recs),
            kind=",".join(sorted({r["kind"] for r in recs})) or "-",
            hlim=",".join(sorted({str(r.get("hlim")) for r in recs})) or "-",
            path=path_of(topo, d),
        ))
    return rows


def engine_counters(topo: Topology, r: str) -> dict[str, Any] | None:
    try:
        cf = CounterFile.open(topo.counters_path(r))
    except (FileNotFoundError, ValueError):
        return None
    try:
        return cf.snapshot().as_dict()
    finally:
        cf.close()


def format_counters(name: str, stats: dict[str, Any] | None) -> str:
    if stats is None:
        return f"engine {name}: no counters (engine not running?)"
    t = stats["totals"]
    keys = ["received", "rx_queue_drops", "not_xcast", "branched", "copies_out", "x2u_out", "egress_errors",
            "egress_no_link", "egress_no_mac", "table_updates"]
    line = "  ".join(f"{k}={t.get(k, 0)}" for k in keys)
    drops = " ".join(f"{k}={v}" for k, v in sorted(stats["drops"].items())) or "none"
    lat = stats["latency"]
    return (f"engine {name}: {line}\n  drops: {drops}\n"
            f"  latency arrival->send: p50={lat['p50_us']}us p90={lat['p90_us']}us "
            f"p99={lat['p99_us']}us max={lat['max_us']}us")


def api_stats(topo: Topology, r: str) -> tuple[str, dict[str, Any] | None, str]:
    """(command line, parsed output, error) of ``xcast6-engine show stats --json`` against engine ``r``'s
    daemon, run inside its namespace the way an operator on the appliance would."""
    cmd = [sys.executable, "-m", "api.main", "show", "stats", "--json", "--config", str(topo.config_path(r))]
    shown = (f"ip netns exec {topo.engine_ns(r)} xcast6-engine show stats --json "
             f"--config {topo.config_path(r)}")
    try:
        p = netns.run(cmd, ns=topo.engine_ns(r), check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return shown, None, "timed out"
    if p.returncode != 0:
        return shown, None, (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}")
    try:
        return shown, dict(json.loads(p.stdout)), ""
    except json.JSONDecodeError as exc:
        return shown, None, f"not JSON: {exc}"


def format_api_stats(name: str, stats: dict[str, Any], status: dict[str, Any] | None) -> str:
    """Engine counters as the API serves them (``/stats``) plus the table from ``/status``."""
    c = stats["counters"]
    keys = ["received", "not_xcast", "branched", "copies_out", "x2u_out", "egress_errors", "egress_no_link",
            "egress_no_mac", "table_updates"]
    line = "  ".join(f"{k}={c.get(k, 0)}" for k in keys)
    drops = " ".join(f"{k[5:]}={v}" for k, v in sorted(c.items()) if k.startswith("drop.") and v) or "none"
    lat = stats["latency"]
    sync = (status or {}).get("sync") or {}
    table = (f"routes={sync.get('route_count')} generation={sync.get('generation')} "
             f"sync={sync.get('state')} source={sync.get('source')}") if status else "status unavailable"
    workers = ", ".join(f"#{w['index']} pid {w['pid']} {w['state']}" for w in stats.get("workers", []))
    # the TC eBPF path's share ([dataplane]; its counters are merged into the ones above)
    if c.get("kernel_received") or c.get("kernel_punted"):
        path = (f"TC eBPF handled {c.get('kernel_received', 0)}, punted {c.get('kernel_punted', 0)} "
                "to the Python workers")
    else:
        path = "Python workers (the TC eBPF path handled nothing: not loaded, or [dataplane] mode = python)"
    return (f"engine {name}: {line}\n  drops: {drops}\n"
            f"  latency arrival->send: p50={lat['p50_us']}us p90={lat['p90_us']}us "
            f"p99={lat['p99_us']}us ({lat['count']} packets)\n  table: {table}\n"
            f"  workers: {workers or 'none'}\n  data path: {path}")


def print_engine_stats(topo: Topology) -> None:
    """Each engine's counters read through its daemon's API, and its table from ``/status``."""
    from lab import engine_api

    for eng in ("a", "b"):
        shown, stats, err = api_stats(topo, eng)
        print(f"$ {shown}")
        if stats is None:
            print(f"engine {eng.upper()}: API stats unavailable ({err}); shared-memory counters:")
            print(format_counters(eng.upper(), engine_counters(topo, eng)))
            continue
        print(format_api_stats(eng.upper(), stats, engine_api.status(topo, eng)))


def run_demo(topo: Topology, count: int = 3, report: dict[str, Any] | None = None) -> bool:
    """The demo: ``count`` datagrams to every receiver; True when every cell is right.

    ``report``, when given, receives the matrix rows and the verdict (``lab demo --json``)."""
    dests = [h.addr for h in topo.receivers]
    stamp = f"{os.getpid()}-{int(time.time())}"
    reset_logs(topo)
    print(f"sending {count} XCAST6 datagram(s) from {topo.sender.addr} (namespace {topo.ns('snd')}) "
          f"to {len(dests)} destinations:")
    if cli_sender_available():
        payloads = [f"xcast6 demo {stamp}".encode()] * count
        print("  $ " + send_with_cli(topo, dests, payloads[0], count))
    else:   # the core's sender is not installed: same packets, built in-process
        payloads = [f"xcast6 demo {stamp} #{i}".encode() for i in range(count)]
        print("  (engine.tools.xcast_send not installed: packets built with engine.wire.codec.build_xcast)")
        send_xcast(topo, dests, payloads)
    got = deliveries(topo, expect=count * len(dests))
    rows = matrix(topo, dests, payloads, got)
    print()
    print(f"{'destination':<20} {'host':<5} {'recv':>4} {'payload':<7} {'source':<6} {'ports':<5} "
          f"{'kind':<5} {'hlim':<4} path")
    ok = True
    for r in rows:
        good = r.received == count and r.payload_ok and r.source_ok and r.port_ok
        ok &= good
        print(f"{r.dst:<20} {r.host:<5} {r.received:>4} {'ok' if r.payload_ok else 'BAD':<7} "
              f"{'ok' if r.source_ok else 'BAD':<6} {'ok' if r.port_ok else 'BAD':<5} {r.kind:<5} "
              f"{r.hlim:<4} {r.path}")
    print()
    print_engine_stats(topo)
    print()
    print("RESULT:", "every destination received each datagram exactly once" if ok
          else "DELIVERY PROBLEM (see rows marked BAD or counts != sent)")
    if report is not None:
        report.update(count=count, ok=ok, rows=[dataclasses.asdict(r) for r in rows])
    return ok
