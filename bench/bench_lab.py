#!/usr/bin/env python3
"""Engine under load in the namespace lab (draft §4.4 metrics), with the kernel as the ceiling.

For each worker count (1, 2) a lab is built (prefix ``xlb-``, or ``--prefix``); engine A is the device under
test.  For N destinations (2, 8, 32, all on router A's directly connected receivers, so every
destination is its own next hop and engine A writes N X2U copies per packet):

* **ladder**: offered XCAST6 packets/s doubles until the loss exceeds 20 %; at each step the
  packets in / copies out / delivered per second, loss, CPU, RSS, context switches, system
  calls (worker counters) and the load average are recorded;
* **latency**: at half the measured capacity, 1-destination probe packets are sent along the
  load (send time right before ``sendto``, arrival time = the receiver kernel's timestamp, both
  CLOCK_REALTIME, which all namespaces share), and the same probe as plain UDP (not diverted:
  the same path without the engine) is the baseline;
* **kernel ceiling**: plain unicast UDP forwarded by router A's kernel, offered as fast as the
  (same) sender can, counted on the router's egress.

Delivery is counted by nftables counters on the receivers (load goes to a dropped port), so the
receivers cost nothing.  Prints a table, writes JSON and PNG plots.  The machine is shared:
numbers are noisy, the load average is in the JSON for that reason.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from engine.dataplane import afpacket, histogram
from engine.dataplane.counters import CounterFile
from engine.dataplane.mmsg import SO_TIMESTAMPNS
from engine.wire.codec import build_xcast
from lab import build, netns
from lab.topology import Topology

LOAD_PORT = 9
PROBE_PORT = 7000
LOAD_FLOWS = 256
PAYLOAD = 64


def ip6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes, tc: int = 0, hl: int = 64) -> bytes:
    """Plain IPv6/UDP packet with a correct checksum."""
    s, d = ip6(src), ip6(dst)
    ulen = 8 + len(payload)
    ph = s + d + struct.pack("!I3xB", ulen, 17)
    data = ph + struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    if len(data) % 2:
        data += b"\0"
    c = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while c >> 16:
        c = (c & 0xFFFF) + (c >> 16)
    ck = (~c & 0xFFFF) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, ck) + payload
    return struct.pack("!IHBB", 0x60000000 | tc << 20, ulen, 17, hl) + s + d + udp


# ------------------------------------------------------------------ lab additions for the bench
def bench_dests(topo: Topology, n: int) -> list[str]:
    """N addresses on h1/h2's link (connected on router A: each its own next hop)."""
    hosts = [topo.host("h1"), topo.host("h2")]
    return [f"{hosts[i % 2].net}{0x1000 + i // 2:x}" for i in range(n)]


def prepare(topo: Topology, max_n: int) -> None:
    for i, d in enumerate(bench_dests(topo, max_n)):
        h = ("h1", "h2")[i % 2]
        netns.ip(topo.ns(h), "addr", "add", f"{d}/64", "dev", "eth0", "nodad")
    for h in ("h1", "h2"):
        netns.nft(topo.ns(h), "table inet xlbench {\n chain input {\n  type filter hook input priority 0;\n"
                  f"  udp dport {LOAD_PORT} counter drop\n }}\n}}\n")
    # router A must know every receiver's MAC before the first burst (no ND drops in the ladder)
    for d in bench_dests(topo, max_n):
        netns.run(["ping", "-6", "-c1", "-W1", d], ns=topo.router_ns("a"), check=False)


def delivered(topo: Topology) -> int:
    total = 0
    for h in ("h1", "h2"):
        data = json.loads(netns.run(["nft", "-j", "list", "table", "inet", "xlbench"], ns=topo.ns(h)).stdout)
        for item in data["nftables"]:
            rule = item.get("rule")
            if rule:
                for e in rule["expr"]:
                    if "counter" in e:
                        total += int(e["counter"]["packets"])
    return total


def tx_packets(ns: str, ifname: str) -> int:
    data = json.loads(netns.ip(ns, "-s", "-j", "link", "show", "dev", ifname).stdout)
    return int(data[0]["stats64"]["tx"]["packets"])


# ------------------------------------------------------------------ load generator (child process)
PACE_S = 50e-6     # load generator tick: how long it sleeps between sends when nothing is due


def _set_timer_slack_ns(ns: int) -> None:
    """Ask for precise short sleeps (the default 50 µs timer slack would double a 50 µs tick)."""
    import ctypes

    pr_set_timerslack = 29
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_timerslack, ns, 0, 0, 0)


def _loadgen(ns: str, ifname: str, frames: list[bytes], rate: float, duration: float,
             conn: multiprocessing.connection.Connection, pace_s: float) -> None:
    """Offer ``rate`` frames/s (0: as fast as possible) for ``duration`` seconds.

    Paced at ``pace_s`` ticks: each tick sends what is due since the start (constant bit rate,
    never more than 256 frames per sendmmsg), so at 40k pkt/s and 50 µs ticks the engine sees
    bursts of ~2-4 frames, as from a router merging many senders, instead of the 0.5 ms bursts
    of ~20-40 frames that a coarse sleep produces (which queue behind each other and show up
    as latency of the load generator, not of the engine).
    """
    _set_timer_slack_ns(1000)
    _pin_traffic()
    with netns.in_netns(ns):
        s = afpacket.BatchSender(capacity=256, slot_size=4096)
        ifindex = socket.if_nametoindex(ifname)
    conn.send("ready")
    conn.recv()
    sent = 0
    flushes = 0
    i = 0
    nf = len(frames)
    t0 = time.monotonic()
    end = t0 + duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int(rate * (now - t0)) - sent if rate > 0 else 256
        if due <= 0:
            time.sleep(pace_s)
            continue
        for _ in range(min(due, 256)):
            s.add(ifindex, b"", frames[i % nf])
            i += 1
        n, _ = s.flush()
        sent += n
        flushes += 1
    conn.send((sent, time.monotonic() - t0, flushes))


START_RATE = 500.0       # --start-rate: the ladder's first offered rate
GENERATOR = "python"     # --generator: python (this file's sender) or trafgen (netsniff-ng)
TRAFGEN_CPUS = 1


def _trafgen_load(topo: Topology, frames: list[bytes], rate: float,
                  duration: float) -> tuple[int, float, float]:
    """trafgen (Debian netsniff-ng, a TX_RING sender in C) offering ``rate`` pkt/s (0: its maximum).

    Counted on the sender's link (its tx packets), since trafgen's own summary is per CPU.
    """
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="xlb-trafgen-", delete=False) as f:
        for fr in frames:
            f.write("{ " + ", ".join(f"0x{b:02x}" for b in fr) + " }\n")
        conf = f.name
    ns = topo.ns("snd")
    cmd = ["ip", "netns", "exec", ns, "timeout", "-s", "INT", f"{duration}", "trafgen", "--dev", "eth0",
           "--conf", conf, "--cpus", str(TRAFGEN_CPUS), "-q"]
    if rate > 0:
        cmd += ["--rate", f"{int(rate)}pps"]
    tx0 = tx_packets(ns, "eth0")
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=False)
    took = time.monotonic() - t0
    sent = tx_packets(ns, "eth0") - tx0
    os.unlink(conf)
    return sent, took, 0.0


def run_load(topo: Topology, frames: list[bytes], rate: float, duration: float,
             pace_s: float = PACE_S) -> tuple[int, float, float]:
    """Run the load generator; returns (frames sent, seconds, mean frames per burst)."""
    if GENERATOR == "trafgen":
        return _trafgen_load(topo, frames, rate, duration)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_loadgen, args=(topo.ns("snd"), "eth0", frames, rate, duration, child, pace_s))
    p.start()
    parent.recv()
    parent.send("go")
    sent, took, flushes = parent.recv()
    p.join()
    return int(sent), float(took), round(sent / flushes, 1) if flushes else 0.0


def load_frames(topo: Topology, dests: list[str], xcast: bool) -> list[bytes]:
    rmac = netns.mac(topo.router_ns("a"), "ra-snd")
    smac = netns.mac(topo.ns("snd"), "eth0")
    out = []
    for f in range(LOAD_FLOWS):
        if xcast:
            pkt = build_xcast(ip6(topo.sender.addr), [ip6(d) for d in dests], b"L" * PAYLOAD,
                              sport=20000 + f, dport=LOAD_PORT)
        else:
            pkt = udp6(topo.sender.addr, dests[f % len(dests)], 20000 + f, LOAD_PORT, b"L" * PAYLOAD)
        out.append(rmac + smac + b"\x86\xdd" + pkt)
    return out


# ------------------------------------------------------------------ latency probes (child processes)
def _probe_rx(ns: str, port: int, seconds: float, conn: multiprocessing.connection.Connection) -> None:
    """Collect probe arrivals with the KERNEL's receive timestamp (``SO_TIMESTAMPNS``).

    The time a packet reached the receiver's socket, not the time this process got around to
    reading it: on a loaded 2-vCPU box the receiver's own wake-up takes up to tens of ms, which
    is the measuring process's latency, not the path's (a NIC timestamp in a hardware lab).
    """
    _pin_traffic()
    with netns.in_netns(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("::", port))
    s.settimeout(0.2)
    conn.send("ready")
    arrivals: list[tuple[bytes, int, int]] = []     # (kind, sequence, CLOCK_REALTIME ns)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, anc, _flags, _addr = s.recvmsg(2048, socket.CMSG_SPACE(16))
        except TimeoutError:
            continue
        now = time.time_ns()
        for level, cmsg_type, cdata in anc:
            if level == socket.SOL_SOCKET and cmsg_type == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("qq", cdata[:16])
                now = sec * 1_000_000_000 + nsec
        arrivals.append((data[:1], struct.unpack("!I", data[1:5])[0], now))
    conn.send(arrivals)


def probe_latency(topo: Topology, dst: str, seconds: float, pps: float = 500) -> dict[str, list[int]]:
    """Sender-to-receiver latency of 1-destination XCAST6 probes and of the same probe as plain UDP.

    Each pair (same sequence number) is built, then sent back to back; the send time is taken
    right before ``sendto`` and the arrival time is the kernel's receive timestamp on the
    receiver's socket (CLOCK_REALTIME, shared by all namespaces).  Returns ``xcast`` and
    ``plain`` latencies and ``added``: per pair, XCAST6 minus plain (what the engine's detour
    adds to that packet).
    """
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    rx = ctx.Process(target=_probe_rx, args=(topo.ns("h1"), PROBE_PORT, seconds + 1.0, child))
    rx.start()
    parent.recv()
    with netns.in_netns(topo.ns("snd")):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent: dict[tuple[bytes, int], int] = {}
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        seq = struct.pack("!I", k) + b"p" * 27
        xcast = build_xcast(ip6(topo.sender.addr), [ip6(dst)], b"X" + seq, sport=30000 + k % 64,
                            dport=PROBE_PORT)
        plain = udp6(topo.sender.addr, dst, 30000 + k % 64, PROBE_PORT, b"P" + seq)
        for kind, pkt in ((b"X", xcast), (b"P", plain)):
            sent[(kind, k)] = time.time_ns()
            tx.sendto(pkt, (dst, 0))
        k += 1
        time.sleep(1 / pps)
    tx.close()
    arrivals: list[tuple[bytes, int, int]] = parent.recv()
    rx.join()
    lat: dict[bytes, dict[int, int]] = {b"X": {}, b"P": {}}
    for probe_kind, probe_seq, t in arrivals:
        if (probe_kind, probe_seq) in sent:
            lat[probe_kind][probe_seq] = t - sent[(probe_kind, probe_seq)]
    added = [lat[b"X"][q] - lat[b"P"][q] for q in lat[b"X"] if q in lat[b"P"]]
    return {"xcast": list(lat[b"X"].values()), "plain": list(lat[b"P"].values()), "added": added}


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))] / 1000, 1)


def lat_summary(values: list[int]) -> dict[str, Any]:
    return {"n": len(values), "p50_us": pct(values, 0.5), "p90_us": pct(values, 0.9),
            "p99_us": pct(values, 0.99), "max_us": round(max(values) / 1000, 1) if values else None}


# ------------------------------------------------------------------ measurement of one step
def engine_procs(topo: Topology) -> list[psutil.Process]:
    """Engine A's worker processes, from its daemon's ``/stats`` (pid per worker)."""
    from lab import engine_api

    stats = engine_api.get_json(topo, "a", "/stats")
    return [psutil.Process(int(w["pid"])) for w in stats.get("workers", []) if w.get("pid")]


def proc_sample(procs: list[psutil.Process]) -> dict[str, float]:
    cpu = ctx = rss = 0.0
    for p in procs:
        t = p.cpu_times()
        cpu += t.user + t.system
        c = p.num_ctx_switches()
        ctx += c.voluntary + c.involuntary
        rss += p.memory_info().rss
    return {"cpu_s": cpu, "ctx": ctx, "rss": rss}


def steal_ms() -> list[int]:
    """Per-CPU steal time so far (ms): time this VM's vCPU wanted to run and the host ran
    something else.  A vCPU that is not running stalls whatever runs on it, the worker included,
    so this is the part of a latency tail no software in the guest can remove."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    out = []
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0].startswith("cpu") and fields[0] != "cpu":
                out.append(round(int(fields[8]) * tick_ms))
    return out


def counters(topo: Topology) -> dict[str, int]:
    cf = CounterFile.open(topo.counters_path("a"))
    try:
        st = cf.snapshot()
        return {**st.totals, **{f"drop.{k}": v for k, v in st.drops().items()}}
    finally:
        cf.close()


def buckets(topo: Topology) -> list[int]:
    cf = CounterFile.open(topo.counters_path("a"))
    try:
        return cf.snapshot().buckets
    finally:
        cf.close()


def step(topo: Topology, frames: list[bytes], n: int, rate: float, duration: float) -> dict[str, Any]:
    procs = engine_procs(topo)
    # Workers fetch the kernel's queue-drop count every 0.5 s: let the previous step's arrive
    # before the "before" sample so they are not charged to this step.
    time.sleep(0.7)
    c0, d0, p0 = counters(topo), delivered(topo), proc_sample(procs)
    sent, took, burst = run_load(topo, frames, rate, duration)
    # let queues drain, and let the workers fetch the kernel's queue-drop count (every 0.5 s,
    # after an epoll wait of up to 0.5 s) before reading the counters
    time.sleep(1.1)
    c1, d1, p1 = counters(topo), delivered(topo), proc_sample(procs)
    got_in = c1["received"] - c0["received"]
    copies = (c1["x2u_out"] - c0["x2u_out"]) + (c1["copies_out"] - c0["copies_out"])
    dl = d1 - d0
    syscalls = sum(c1[k] - c0[k] for k in ("syscalls_rx", "syscalls_tx", "syscalls_poll"))
    expected = sent * n
    return {
        "offered_pps": round(rate), "sent": sent, "sent_pps": round(sent / took), "mean_burst": burst,
        "engine_in_pps": round(got_in / took), "copies_out_pps": round(copies / took),
        "delivered_pps": round(dl / took), "loss": round(1 - dl / expected, 4) if expected else None,
        "engine_in_loss": round(1 - got_in / sent, 4) if sent else None,
        "cpu_pct": round(100 * (p1["cpu_s"] - p0["cpu_s"]) / took, 1),
        "ctx_switches_per_s": round((p1["ctx"] - p0["ctx"]) / took),
        "syscalls_per_s": round(syscalls / took),
        "syscalls_per_packet": round(syscalls / got_in, 2) if got_in else None,
        "rss_mb": round(p1["rss"] / 2**20, 1), "loadavg_1m": os.getloadavg()[0],
        "egress_errors": c1["egress_errors"] - c0["egress_errors"],
        "rx_queue_drops": c1["rx_queue_drops"] - c0["rx_queue_drops"],
    }


def kernel_ceiling(topo: Topology, duration: float) -> dict[str, Any]:
    dests = bench_dests(topo, 2)
    frames = load_frames(topo, dests, xcast=False)
    tx0 = tx_packets(topo.router_ns("a"), "ra-h1") + tx_packets(topo.router_ns("a"), "ra-h2")
    d0 = delivered(topo)
    sent, took, _ = run_load(topo, frames, 0, duration)     # rate 0 = as fast as the sender can
    time.sleep(0.3)
    tx1 = tx_packets(topo.router_ns("a"), "ra-h1") + tx_packets(topo.router_ns("a"), "ra-h2")
    return {"offered_pps": round(sent / took), "forwarded_pps": round((tx1 - tx0) / took),
            "delivered_pps": round((delivered(topo) - d0) / took)}


def placement_plan(workers: int, placement: str) -> tuple[tuple[int, ...], int | None]:
    """(worker CPUs, CPU for router A's handling of the copies) for a placement.

    Whenever the workers are pinned, the rest of the lab (snmpd, engine B, receivers: other boxes
    in a deployment) is moved to the other CPUs too (``keep_lab_off``), and engine A's daemon keeps
    its own threads off the worker CPUs.

    ``shared``: nothing pinned; router A's forwarding of the engine's copies runs in the softirq of
    the worker's own ``sendmmsg`` (veth delivers on the sending CPU), so the worker's core pays for
    the router too.  ``pinned``: the workers get the last CPUs (``[workers] cpus``) and the
    load generator and probes CPU 0, as an operator keeps a worker core for the engine alone.
    ``polled``: pinned, and the workers busy-poll (``[workers] busy_poll_us``) instead of sleeping
    between frames.  ``idle``: pinned, and the workers' CPUs may only idle in the polling loop
    (``[workers] cpu_resume_latency_us = 0``): the workers sleep, their CPUs do not halt.
    ``split``: pinned, and router A's handling of the copies runs in
    threaded-NAPI kernel threads on CPU 0 (``steer_router_rx``: the router is another box in a
    deployment; on 2 cores CPU 0 then carries the sender, both routers and the receivers).
    Pinning needs more CPUs than workers.
    """
    ncpu = len(os.sched_getaffinity(0))
    if placement == "shared" or workers >= ncpu:
        return (), None
    return tuple(range(ncpu - workers, ncpu)), (0 if placement == "split" else None)


# CPUs of the load generator and probe processes (None: not pinned); set per run.
_TRAFFIC_CPUS: set[int] | None = None


def _pin_traffic() -> None:
    if _TRAFFIC_CPUS:
        os.sched_setaffinity(0, _TRAFFIC_CPUS)


def _napi_threads() -> set[int]:
    """PIDs of the kernel's threaded-NAPI pollers (comm ``napi/<dev>-<id>``)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().startswith("napi/"):
                    out.add(int(d.name))
            except OSError:
                continue
    return out


def keep_lab_off(topo: Topology, cpus: set[int]) -> int:
    """Move every lab process but engine A (snmpd, engine B and its workers, receivers) to ``cpus``.

    They are other boxes in a deployment; here they would otherwise be scheduled on the CPU of
    the worker under test (engine A's daemon moves its own threads: ``[workers] cpus``).  Each
    lab process leads its own session, so its session id finds its children.  Returns the
    number of threads moved.
    """
    leaders = {int(pf.read_text().strip()) for pf in topo.state_dir.glob("*.pid") if pf.stem != "engine-a"}
    moved = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            sid = int(stat[stat.rindex(")") + 2:].split()[3])
            if sid not in leaders:
                continue
            for tid in os.listdir(d / "task"):
                os.sched_setaffinity(int(tid), cpus)
                moved += 1
        except (OSError, ValueError):
            continue
    return moved


def steer_router_rx(topo: Topology, cpu: int) -> None:
    """Router A's handling of the engine's copies runs on ``cpu``, not in the worker's ``sendmmsg``.

    veth delivers a frame in the softirq of the sending CPU, so in this lab router A's forwarding
    of every copy (and the receivers' input) is billed to the worker's ``sendmmsg``; on a real
    deployment the router is another box.  Threaded NAPI on router A's engine-facing veths (needs
    GRO on, which does not merge these UDP datagrams: no UDP GRO forwarding, and TSO off on the
    engine's end) queues the frames to a
    ``napi/...`` kernel thread, pinned here to ``cpu``; the worker pays one wake-up per poll
    instead of the router's work (RPS did the same with an IPI per frame, a VM exit each).
    """
    router = topo.routers["a"]
    before = _napi_threads()
    for k in range(len(router.interfaces)):
        router_if, engine_if = router.engine_link(k)[:2]
        netns.run(["ethtool", "-K", router_if, "gro", "on"], ns=topo.router_ns("a"))
        netns.run(["sh", "-c", f"echo 1 > /sys/class/net/{router_if}/threaded"], ns=topo.router_ns("a"))
        # veth only takes the NAPI path for a sender without TSO (veth_skb_is_eligible_for_gro);
        # otherwise frames go to the sending CPU's backlog, i.e. still into the worker's sendmmsg
        netns.run(["ethtool", "-K", engine_if, "tso", "off"], ns=topo.engine_ns("a"))
    for pid in _napi_threads() - before:
        os.sched_setaffinity(pid, {cpu})


def run_workers(workers: int, ns_list: list[int], duration: float, max_rate: float,
                prefix: str = "xlb-", placement: str = "shared", busy_poll_us: int = 200,
                rx_buffer_kb: int = 0, dataplane: str = "python") -> dict[str, Any]:
    global _TRAFFIC_CPUS
    cpus, router_cpu = placement_plan(workers, placement)
    _TRAFFIC_CPUS = set(range(min(cpus))) if cpus else None
    poll = busy_poll_us if placement == "polled" and cpus else 0
    resume_us = 0 if placement == "idle" and cpus else None
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab-{os.getpid()}"), workers=workers,
                    worker_cpus=cpus, worker_busy_poll_us=poll, worker_rx_buffer_kb=rx_buffer_kb,
                    worker_cpu_resume_latency_us=resume_us,
                    # only engine A is measured: engine B (idle here) must not share its worker's CPU
                    tuned_engines=("a",), dataplane=dataplane)
    build.down(topo)
    build.up(topo)
    own_cpus = os.sched_getaffinity(0)
    if _TRAFFIC_CPUS:
        os.sched_setaffinity(0, _TRAFFIC_CPUS)     # the probe sender runs in this process
    try:
        prepare(topo, max(ns_list))
        if router_cpu is not None:
            steer_router_rx(topo, router_cpu)
        moved = keep_lab_off(topo, _TRAFFIC_CPUS) if _TRAFFIC_CPUS else 0
        out: dict[str, Any] = {"dataplane": dataplane, "generator": GENERATOR,
                               "workers": workers, "placement": placement if cpus else "shared",
                               "worker_cpus": list(cpus), "router_rx_cpu": router_cpu, "busy_poll_us": poll,
                               "cpu_resume_latency_us": resume_us,
                               "rx_buffer_kb": rx_buffer_kb or None, "lab_threads_moved_off": moved,
                               "kernel": kernel_ceiling(topo, duration), "by_n": {}}
        print(f"\n== dataplane={dataplane} generator={GENERATOR} "
              f"workers={workers} placement={out['placement']} busy_poll_us={poll} "
              f"cpu_resume_latency_us={resume_us} "
              f"(worker CPUs {list(cpus) or 'any'}, "
              f"router rx CPU {router_cpu if router_cpu is not None else 'sender'})  "
              f"kernel forwarding ceiling: {out['kernel']}")
        for n in ns_list:
            dests = bench_dests(topo, n)
            frames = load_frames(topo, dests, xcast=True)
            run_load(topo, frames, 500, 0.5)      # warm caches (Fib, branch plans, ND)
            ladder = []
            rate = START_RATE
            print(f"-- N={n}")
            print(f"{'offered':>8} {'in/s':>8} {'copies/s':>9} {'deliv/s':>9} {'loss':>7} {'cpu%':>6} "
                  f"{'sysc/pkt':>8} {'ctx/s':>7} {'load':>5} {'burst':>5}")
            while rate <= max_rate:
                r = step(topo, frames, n, rate, duration)
                ladder.append(r)
                print(f"{r['offered_pps']:>8} {r['engine_in_pps']:>8} {r['copies_out_pps']:>9} "
                      f"{r['delivered_pps']:>9} {r['loss']:>7} {r['cpu_pct']:>6} "
                      f"{r['syscalls_per_packet']!s:>8} "
                      f"{r['ctx_switches_per_s']:>7} {r['loadavg_1m']:>5.2f} {r['mean_burst']:>5}")
                if r["loss"] is not None and r["loss"] > 0.2:
                    break
                rate *= 2
            capacity_in = max(r["engine_in_pps"] for r in ladder)
            capacity_copies = max(r["copies_out_pps"] for r in ladder)
            # the doubling ladder is coarse: check the "no loss below 80 % of capacity" target directly
            at80 = step(topo, frames, n, 0.8 * capacity_in, duration)
            print(f"   at 80 % of capacity ({at80['offered_pps']} pkt/s): loss {at80['loss']}, "
                  f"kernel queue drops {at80['rx_queue_drops']}")
            lossless = [r for r in ladder if r["loss"] is not None and r["loss"] <= 0.001]
            # half of the highest load carried without loss (the capacity a user can rely on)
            lossless_in = max((r["engine_in_pps"] for r in lossless), default=capacity_in)
            half = max(lossless_in / 2, 100)
            # latency at half load: background load + probes in parallel
            ctx = multiprocessing.get_context("fork")
            bg = ctx.Process(target=run_load, args=(topo, frames, half, 6.0))
            bg.start()
            time.sleep(0.5)
            h0, st0 = buckets(topo), steal_ms()
            lat = probe_latency(topo, bench_dests(topo, 1)[0], 4.0)
            internal = [b - a for a, b in zip(h0, buckets(topo), strict=True)]
            stolen = [b - a for a, b in zip(st0, steal_ms(), strict=True)]
            bg.join()
            idle = probe_latency(topo, bench_dests(topo, 1)[0], 2.0)
            res = {
                "ladder": ladder, "capacity_in_pps": capacity_in, "capacity_copies_pps": capacity_copies,
                "max_lossless_offered_pps": max((r["offered_pps"] for r in lossless), default=0),
                "half_load_pps": round(half),
                "at_80pct_capacity": at80,
                "latency_half_load": {"engine": lat_summary(lat["xcast"]),
                                      "no_engine": lat_summary(lat["plain"]),
                                      "added_per_pair": lat_summary(lat["added"])},
                "latency_idle": {"engine": lat_summary(idle["xcast"]),
                                 "no_engine": lat_summary(idle["plain"]),
                                 "added_per_pair": lat_summary(idle["added"])},
                # the workers' own arrival->send histogram over the half-load window (kernel arrival
                # time on the engine link, queueing included, to the write of the copies)
                "worker_latency_half_load": histogram.summary(internal),
                # per CPU, ms the hypervisor ran something else during the 4 s half-load probe window
                "steal_ms_half_load": stolen,
                "copies_vs_kernel": round(capacity_copies / out["kernel"]["forwarded_pps"], 3)
                if out["kernel"]["forwarded_pps"] else None,
            }
            e, b = res["latency_half_load"]["engine"], res["latency_half_load"]["no_engine"]
            if e["p99_us"] is not None and b["p99_us"] is not None:
                res["engine_added_p99_us_half_load"] = round(e["p99_us"] - b["p99_us"], 1)
            print(f"   capacity: {capacity_in} pkt/s in, {capacity_copies} copies/s "
                  f"({res['copies_vs_kernel']} of kernel); latency @half load engine {e} | no engine {b} "
                  f"| added per pair {res['latency_half_load']['added_per_pair']} "
                  f"| worker arrival->send {res['worker_latency_half_load']} "
                  f"| steal ms per CPU {stolen}")
            out["by_n"][str(n)] = res
        return out
    finally:
        os.sched_setaffinity(0, own_cpus)
        build.down(topo)


def plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for w in result["runs"]:
        for n, res in w["by_n"].items():
            lad = res["ladder"]
            lbl = f"N={n}, {w.get('dataplane', 'python')} {w['workers']}w {w.get('placement', 'shared')}"
            offered = [r["offered_pps"] for r in lad]
            axes[0].plot(offered, [r["copies_out_pps"] for r in lad], "o-", label=lbl)
            axes[1].plot(offered, [100 * (r["loss"] or 0) for r in lad], "o-", label=lbl)
            lat = res["latency_half_load"]
            tag = (f"{n}/{w.get('dataplane', 'python')[0]}{w['workers']}w"
                   f"{'' if w.get('placement', 'shared') == 'shared' else 's'}")
            axes[2].bar(tag, (lat["engine"]["p99_us"] or 0), color="tab:red", alpha=.7)
            axes[2].bar(tag, (lat["no_engine"]["p99_us"] or 0), color="tab:blue", alpha=.7)
        axes[0].axhline(w["kernel"]["forwarded_pps"], ls="--", color="gray")
    axes[0].set(xscale="log", yscale="log", xlabel="offered XCAST6 packets/s", ylabel="copies out/s",
                title="throughput (dashed: kernel plain forwarding)")
    axes[1].set(xscale="log", xlabel="offered XCAST6 packets/s", ylabel="loss %",
                title="loss vs offered load")
    axes[2].set(ylabel="p99 µs", title="p99 @ half load: red engine, blue no engine")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def summarize(result: dict[str, Any]) -> str:
    """One line per run and N: throughput against the best kernel ceiling of the whole invocation
    (each run measures its own; on a shared VM they swing by 2x, so the highest one is the fair,
    conservative yardstick), loss at 80 % of capacity, latency the engine adds at half load, and the
    time the hypervisor took from this VM's CPUs during that latency window (steal)."""
    best = max(r["kernel"]["forwarded_pps"] for r in result["runs"])
    lines = [f"kernel plain-UDP forwarding ceiling (best of {len(result['runs'])} runs): {best} pkt/s",
             f"{'path':>6} {'workers':>7} {'placement':>9} {'N':>3} {'in pkt/s':>9} {'copies/s':>9} "
             f"{'/kernel':>7} "
             f"{'loss@80%':>8} {'added p50':>9} {'added p99':>9} {'worker p99':>10} {'worker p99.9':>12} "
             f"{'steal ms':>8}"]
    for run in result["runs"]:
        for n, res in run["by_n"].items():
            res["copies_vs_best_kernel"] = round(res["capacity_copies_pps"] / best, 3)
            added = res["latency_half_load"].get("added_per_pair", {})
            wl = res["worker_latency_half_load"]
            lines.append(
                f"{run.get('dataplane', 'python'):>6} {run['workers']:>7} "
                f"{run.get('placement', 'shared'):>9} {n:>3} {res['capacity_in_pps']:>9} "
                f"{res['capacity_copies_pps']:>9} {res['copies_vs_best_kernel']:>7} "
                f"{res['at_80pct_capacity']['loss']!s:>8} {added.get('p50_us')!s:>9} "
                f"{added.get('p99_us')!s:>9} "
                f"{wl.get('p99_us')!s:>10} {wl.get('p999_us')!s:>12} "
                f"{sum(res['steal_ms_half_load']) if 'steal_ms_half_load' in res else '-':>8}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dests", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per ladder step")
    ap.add_argument("--max-rate", type=float, default=512000,
                    help="highest offered rate of the doubling ladder (it stops earlier at > 20 %% loss)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_lab.json"))
    ap.add_argument("--prefix", default="xlb-", help="name prefix of the lab's namespaces and links")
    ap.add_argument("--busy-poll-us", type=int, default=200, help="workers' busy_poll_us in 'polled' runs")
    ap.add_argument("--rx-buffer-kb", type=int, default=0,
                    help="engine A's [workers] rx_buffer_kb (0: the engine's default)")
    ap.add_argument("--placement", nargs="+", choices=["shared", "pinned", "polled", "idle", "split"],
                    default=["shared", "pinned"],
                    help="shared: the scheduler decides; pinned: workers on the last CPUs, load "
                         "generator and probes on the others; polled: pinned + busy polling; idle: "
                         "pinned + the worker CPUs idle by polling (cpu_resume_latency_us = 0); split: "
                         "pinned + router A's handling of the copies in threaded NAPI on CPU 0 (see "
                         "placement_plan); all but shared only run when there are more CPUs than workers")
    ap.add_argument("--dataplane", nargs="+", choices=["bpf", "python", "auto"], default=["python"],
                    help="engine A's [dataplane] mode; several run side by side in one invocation")
    ap.add_argument("--generator", choices=["python", "trafgen"], default="python",
                    help="load generator: this file's Python sender (~200k pkt/s at most) or trafgen "
                         "(netsniff-ng, C, TX ring; --trafgen-cpus of them)")
    ap.add_argument("--trafgen-cpus", type=int, default=1)
    ap.add_argument("--start-rate", type=float, default=500, help="the ladder's first offered pkt/s")
    ap.add_argument("--summary", type=Path, help="print the summary table of an earlier result file and exit")
    a = ap.parse_args()
    global GENERATOR, TRAFGEN_CPUS, START_RATE
    GENERATOR, TRAFGEN_CPUS, START_RATE = a.generator, a.trafgen_cpus, a.start_rate
    if a.summary:
        print(summarize(json.loads(a.summary.read_text())))
        return
    if os.geteuid() != 0:
        sys.exit("bench_lab needs root (network namespaces)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"started": time.time(), "cpus": os.cpu_count(),
                              "loadavg_start": os.getloadavg(), "kernel": os.uname().release, "runs": []}
    for w in a.workers:
        for placement in a.placement:
            if placement != "shared" and not placement_plan(w, placement)[0]:
                continue    # as many workers as CPUs: nothing to pin
            for dp in a.dataplane:
                result["runs"].append(run_workers(w, a.dests, a.duration, a.max_rate, a.prefix, placement,
                                                  a.busy_poll_us, a.rx_buffer_kb, dp))
    result["loadavg_end"] = os.getloadavg()
    print("\n" + summarize(result))
    a.out.write_text(json.dumps(result, indent=1))
    png = a.out.with_suffix(".png")
    plot(result, png)
    print(f"\nwrote {a.out} and {png}")


if __name__ == "__main__":
    main()
