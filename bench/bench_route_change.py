#!/usr/bin/env python3
"""Throughput right after a 1,000-route change, under load (issue 17's "within 10 % of steady").

For each ``--dataplane`` a namespace lab is built (prefix ``xrc-``) as bench/bench_lab.py builds
it, trafgen offers a steady XCAST6 load (N destinations on router A's receivers, a fixed rate
below capacity), and the change goes through the **real control plane**: 1,000 routes are added
to router A's kernel table (``ip -batch``; a /128 for each load destination among them, so the
load's own routes change), engine A's sync reads them from router A's snmpd, and its diff
reaches the workers and the TC program's maps; later the same 1,000 are deleted.  Router A first
gets a base table (``--base-routes``, forced past sync's safety valve once at set-up, as an
operator does for a first big table), so the change is a tenth of the table, which the valve
lets through as a routine change.

The copies delivered per second (router A's transmitted packets towards the receivers, so the
number does not depend on how often the engine publishes its counters) are sampled in short
windows the whole time.  The result per dataplane: steady copies/s (median of the windows
before the first change), the lowest window from the moment each change was made on the router
until ``--after`` seconds after engine A applied it (``/status`` shows the new route count), and
that minimum as a fraction of steady (target >= 0.9).  Because trafgen shares the 2 CPUs with
everything else, its own rate dips too when the control plane works; so the sender's transmitted
packets are sampled alongside, and the lowest "delivered copies per offered packet and
destination" window (1.0 = nothing lost) is reported too.  Prints a table, writes JSON and a plot
under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_lab as bl
from lab import build, engine_api
from lab.topology import Topology

CHANGE_NET = "2001:db8:f"      # the 1,000 routes: 2001:db8:f<i>::/64 (nothing else uses them)
BASE_NET = "2001:db8:e"        # the base table: 2001:db8:e<i>::/64
SAMPLE_S = 0.1                 # between readings of the delivered-copies counter


def change_routes(topo: Topology, n_dests: int, count: int) -> list[str]:
    """``ip -6 route`` arguments of the change: a /128 per load destination, the rest /64s."""
    out = []
    for i, d in enumerate(bl.bench_dests(topo, n_dests)):
        h = topo.host(("h1", "h2")[i % 2])
        out.append(f"{d}/128 via {h.addr} dev {h.router_if}")
    return out + net_routes(topo, CHANGE_NET, count - len(out))


def net_routes(topo: Topology, net: str, count: int) -> list[str]:
    h1 = topo.host("h1")
    return [f"{net}{i // 0x1000:x}:{i % 0x1000:x}::/64 via {h1.addr} dev {h1.router_if}"
            for i in range(count)]


def wait_routes(topo: Topology, want: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if route_count(topo) == want:
            return True
        time.sleep(0.2)
    return False


def route_batch(topo: Topology, verb: str, routes: list[str]) -> None:
    script = "".join(f"route {verb} {r}\n" for r in routes)
    cmd = ["ip", "-6", "-n", topo.router_ns("a"), "-batch", "-"]
    subprocess.run(cmd, input=script, text=True, check=True)


def route_count(topo: Topology) -> int:
    st = engine_api.status(topo, "a", timeout=2.0) or {}
    return int(st.get("sync", {}).get("route_count", -1))


def copies(topo: Topology) -> int:
    """Packets router A transmitted towards h1 and h2 (the engine's copies, delivered)."""
    return sum(bl.tx_packets(topo.router_ns("a"), topo.host(h).router_if) for h in ("h1", "h2"))


def offered(topo: Topology) -> int:
    """XCAST6 packets the sender host put on its link (trafgen's real rate, not its setting)."""
    return bl.tx_packets(topo.ns("snd"), "eth0")


def grid_rates(samples: list[tuple[float, int]], window: float) -> list[tuple[float, float]]:
    """Copies/s in back-to-back windows of ``window`` seconds, each labelled by its end.

    The counter is read at irregular moments (between the API calls that watch for the change),
    and trafgen paces in bursts, so the count at each window edge is interpolated between the
    readings around it rather than taking whatever two readings happen to be close.
    """
    if len(samples) < 2:
        return []
    out = []
    k = 0
    t_edge = samples[0][0]
    prev = float(samples[0][1])
    while t_edge + window <= samples[-1][0]:
        t_next = t_edge + window
        while samples[k + 1][0] < t_next:
            k += 1
        (ta, ca), (tb, cb) = samples[k], samples[k + 1]
        c_next = ca + (cb - ca) * (t_next - ta) / (tb - ta) if tb > ta else cb
        out.append((t_next, (c_next - prev) / window))
        t_edge, prev = t_next, c_next
    return out


def run(dataplane: str, n: int, rate: float, count: int, window: float, steady_s: float, after_s: float,
        prefix: str, base: int) -> dict[str, Any]:
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab-{os.getpid()}"), workers=1,
                    tuned_engines=("a",), dataplane=dataplane)
    build.down(topo)
    build.up(topo)
    try:
        bl.prepare(topo, n)
        frames = bl.load_frames(topo, bl.bench_dests(topo, n), xcast=True)
        bl.run_load(topo, frames, 500, 0.5)
        if base:
            before = route_count(topo)
            route_batch(topo, "add", net_routes(topo, BASE_NET, base))
            time.sleep(2.0)      # sync fetches it and holds it back (a first big table): apply it
            resp = engine_api.request(topo, "a", "POST", "/resync", json={"force": True})
            resp.raise_for_status()
            if not wait_routes(topo, before + base, 120.0):
                raise RuntimeError(f"engine A did not take the base table ({route_count(topo)} routes)")
        base_routes = route_count(topo)
        routes = change_routes(topo, n, count)
        # the load runs the whole time: steady, add, settle, delete, settle
        total = steady_s + 2 * (after_s + 6.0) + 2.0
        load = threading.Thread(target=bl.run_load, args=(topo, frames, rate, total), daemon=True)
        samples: list[tuple[float, int]] = []
        sent: list[tuple[float, int]] = []
        events: dict[str, float] = {}
        load.start()
        t0 = time.monotonic()

        def sample_until(t_end: float) -> None:
            while time.monotonic() < t_end:
                samples.append((time.monotonic() - t0, copies(topo)))
                sent.append((time.monotonic() - t0, offered(topo)))
                time.sleep(SAMPLE_S)

        def change(verb: str, want: int) -> None:
            events[f"{verb}_issued_s"] = time.monotonic() - t0
            route_batch(topo, verb, routes)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                samples.append((time.monotonic() - t0, copies(topo)))
                sent.append((time.monotonic() - t0, offered(topo)))
                if route_count(topo) == want:
                    events[f"{verb}_applied_s"] = time.monotonic() - t0
                    break
                time.sleep(SAMPLE_S)
            sample_until(events.get(f"{verb}_applied_s", time.monotonic() - t0) + t0 + after_s)

        time.sleep(1.0)                      # trafgen up to rate
        sample_until(t0 + 1.0 + steady_s)
        change("add", base_routes + count)
        sample_until(time.monotonic() + 2.0)
        change("del", base_routes)
        load.join()
    finally:
        build.down(topo)
    rates = grid_rates(samples, window)
    # delivered copies per offered packet and destination, per window: below 1 means copies lost
    offered_w = grid_rates(sent, window)
    ratio = [(t, r / (n * o) if o else 0.0) for (t, r), (_, o) in zip(rates, offered_w, strict=False)]
    steady_w = [r for t, r in rates if 1.0 + window <= t <= 1.0 + steady_s]
    steady = statistics.median(steady_w) if steady_w else 0.0
    out: dict[str, Any] = {"dataplane": dataplane, "n": n, "offered_pps": rate, "routes_changed": count,
                           "base_routes": base_routes, "window_s": window, "events": events,
                           "steady_copies_pps": round(steady),
                           "windows": [(round(t, 2), round(r)) for t, r in rates],
                           "delivered_per_offered": [(round(t, 2), round(x, 3)) for t, x in ratio],
                           "samples": [(round(t, 3), c) for t, c in samples]}
    for verb in ("add", "del"):
        t_app = events.get(f"{verb}_applied_s")
        t_iss = events[f"{verb}_issued_s"]
        if t_app is None:
            out[verb] = {"applied": False}
            continue
        # from the issue of the change (sync's read and the diff included) to after_s past its apply
        during = [r for t, r in rates if t_iss < t <= t_app + after_s]
        low = min(during) if during else 0.0
        low_ratio = min((x for t, x in ratio if t_iss < t <= t_app + after_s), default=0.0)
        out[verb] = {"applied": True, "seconds_to_apply": round(t_app - t_iss, 2),
                     "min_copies_pps": round(low),
                     "min_vs_steady": round(low / steady, 3) if steady else None,
                     "min_delivered_per_offered": round(low_ratio, 3)}
    return out


def plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 4), squeeze=False)
    for ax, r in zip(axes[0], runs, strict=True):
        ts, vs = zip(*r["windows"], strict=True) if r["windows"] else ((), ())
        ax.plot(ts, vs, "-", lw=1)
        ax.axhline(r["steady_copies_pps"], ls="--", color="gray")
        ax.axhline(0.9 * r["steady_copies_pps"], ls=":", color="red")
        for verb, color in (("add", "tab:green"), ("del", "tab:orange")):
            ev = r["events"]
            ax.axvline(ev[f"{verb}_issued_s"], color=color, ls="--", lw=1)
            if f"{verb}_applied_s" in ev:
                ax.axvline(ev[f"{verb}_applied_s"], color=color, lw=1)
        if r.get("delivered_per_offered"):
            ax2 = ax.twinx()
            t2, v2 = zip(*r["delivered_per_offered"], strict=True)
            ax2.plot(t2, v2, color="tab:purple", lw=1, alpha=.7)
            ax2.set(ylabel="delivered / (N x offered) (purple)", ylim=(0, 2.2))
        ax.set(xlabel="s", ylabel="copies/s", ylim=(0, None),
               title=f"{r['dataplane']}: N={r['n']}, {r['offered_pps']:.0f} pkt/s offered, "
                     f"{r['routes_changed']} routes added then deleted")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataplane", nargs="+", choices=["bpf", "python"], default=["bpf", "python"])
    ap.add_argument("--dests", type=int, default=2)
    ap.add_argument("--rate", nargs="+", default=["bpf=150000", "python=10000"],
                    help="offered XCAST6 pkt/s per dataplane (below its capacity: a dip is the change's)")
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--base-routes", type=int, default=10000, help="router A's table before the change")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per throughput window")
    ap.add_argument("--steady", type=float, default=4.0, help="seconds of steady load before the change")
    ap.add_argument("--after", type=float, default=3.0, help="seconds watched after each change applied")
    ap.add_argument("--prefix", default="xrc-")
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_route_change.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot of --out and exit")
    a = ap.parse_args()
    if a.plot_only:
        plot(json.loads(a.out.read_text()), a.out.with_suffix(".png"))
        return
    if os.geteuid() != 0:
        sys.exit("bench_route_change needs root (network namespaces)")
    bl.GENERATOR = "trafgen"
    rates = dict(r.split("=", 1) for r in a.rate)
    result: dict[str, Any] = {"started": time.time(), "cpus": os.cpu_count(), "kernel": os.uname().release,
                              "loadavg_start": os.getloadavg(), "runs": []}
    for dp in a.dataplane:
        result["runs"].append(run(dp, a.dests, float(rates.get(dp, 10000)), a.routes, a.window, a.steady,
                                  a.after, a.prefix, a.base_routes))
    result["loadavg_end"] = os.getloadavg()
    print(f"{'path':>6} {'N':>3} {'offered':>8} {'steady copies/s':>15} {'change':>6} {'apply s':>7} "
          f"{'min copies/s':>12} {'min/steady':>10} {'min deliv/offered':>17}")
    for r in result["runs"]:
        for verb in ("add", "del"):
            v = r[verb]
            print(f"{r['dataplane']:>6} {r['n']:>3} {r['offered_pps']:>8.0f} {r['steady_copies_pps']:>15} "
                  f"{verb:>6} {v.get('seconds_to_apply', '-')!s:>7} {v.get('min_copies_pps', '-')!s:>12} "
                  f"{v.get('min_vs_steady', '-')!s:>10} {v.get('min_delivered_per_offered', '-')!s:>17}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    plot(result, a.out.with_suffix(".png"))
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
