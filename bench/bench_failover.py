"""Engine-pair failover in the namespace lab: loss and duplicates when an engine dies or stops.

Router A with two engines (``lab up --engines-per-router 2``), BFD 100 ms x 3 (FRR bfdd on both
sides, lab.bfdroute selecting the divert next hops), a steady XCAST6 load from the sender to N
destinations (flow labels spread it over both engines).  Per trial:

* ``kill``: kill -9 of one whole engine (daemon, workers, bfdd: a crash of the host or of the
  unit's cgroup); loss = the longest stretch of missing sequence
  numbers (send time), duplicates, time until the router stopped diverting to it, and the time
  until traffic is shared again after the engine is started again (hold-down included);
* ``kill_daemon``: kill -9 of the daemon only (its workers stop within 0.5 s, bfdd at once);
* ``graceful``: SIGTERM; lost packets and duplicates (target 0 and 0).

Prints a table, writes ``bench/results/bench_failover.json`` and a plot of delivered packets
over time (``bench_failover.png``).  Needs root; run under the shared lock on a shared box:
``flock -o /tmp/xcast6-heavy.lock .venv/bin/python -m bench.bench_failover``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lab import build, engine_api, failover
from lab.topology import Topology

RESULTS = Path(__file__).resolve().parent / "results"


def received(topo: Topology, e: str) -> int:
    return int(engine_api.get_json(topo, e, "/stats")["counters"]["received"])


def trial(topo: Topology, kind: str, rate: float, n: int, before: float, after: float) -> dict[str, Any]:
    """One kill -9 or SIGTERM of engine a2 under load; then a2 is started again."""
    victim = "a2"
    victim_addr = topo.routers["a"].engine_link(0, topo.engine_index(victim))[3]
    load = failover.Load(topo, failover.destinations(topo, n), rate=rate).start()
    time.sleep(before)
    share = {e: received(topo, e) for e in ("a", "a2")}
    t_sig = time.time()
    if kind == "kill":          # the whole engine at once: daemon, workers, bfdd (worst case)
        failover.kill_engine(topo, victim, signal.SIGKILL, whole=True)
    elif kind == "kill_daemon":  # the daemon only: its workers and bfdd follow it
        failover.kill_engine(topo, victim, signal.SIGKILL)
    else:
        failover.kill_engine(topo, victim, signal.SIGTERM)
    while victim_addr in build.router_divert_live(topo, "a"):
        time.sleep(0.005)
    t_moved = time.time()
    failover.wait_engine_gone(topo, victim)
    time.sleep(after)
    load.stop()
    res = failover.analyze(load)
    back_s = failover.restart_engine(topo, victim)
    out = {
        "sent": res["sent"], "rate": rate, "destinations": n,
        "received_before_by_engine": share,
        "router_moved_ms": round((t_moved - t_sig) * 1000),
        "loss_ms": res["loss_ms"], "lost_packets": res["lost_packets"], "duplicates": res["duplicates"],
        "shared_again_s": round(back_s, 2),
        "timeline": timeline(res["arrivals"], load.t0, t_sig),
    }
    return out


def timeline(arrivals: list[float], t0: float, t_sig: float, bin_s: float = 0.05) -> dict[str, Any]:
    """Delivered datagrams per 50 ms bin, time relative to the signal."""
    if not arrivals:
        return {"bin_s": bin_s, "t": [], "delivered": []}
    start, end = t0, max(arrivals)
    bins = [0] * (int((end - start) / bin_s) + 1)
    for a in arrivals:
        bins[int((a - start) / bin_s)] += 1
    return {"bin_s": bin_s, "t": [round(start - t_sig + i * bin_s, 3) for i in range(len(bins))],
            "delivered": bins}


def plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), sharey=True)
    titles = {"kill": "kill -9 of one whole engine", "kill_daemon": "kill -9 of one engine's daemon",
              "graceful": "SIGTERM (drain) of one engine"}
    for ax, kind in zip(axes, titles, strict=True):
        for i, tr in enumerate(result["trials"][kind]):
            tl = tr["timeline"]
            ax.plot(tl["t"], [d / tl["bin_s"] for d in tl["delivered"]], label=f"trial {i + 1}", lw=1)
        ax.axvline(0, color="red", ls="--", lw=1)
        ax.set(xlabel="s from the signal", title=titles[kind])
        ax.legend(fontsize=8)
    axes[0].set_ylabel("deliveries/s (all destinations)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="XCAST6 datagrams/s")
    ap.add_argument("-n", type=int, default=5, help="destinations per datagram (1..5)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--before", type=float, default=2.0, help="seconds of load before the signal")
    ap.add_argument("--after", type=float, default=2.0, help="seconds of load after the engine is gone")
    ap.add_argument("--prefix", default="xbf-")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_failover.json")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_failover: needs root (network namespaces)", file=sys.stderr)
        return 2
    topo = Topology(prefix=args.prefix, state_dir=Path(f"/tmp/{args.prefix}lab"), poll_interval=0.5,
                    engines_per_router=2, ha_hold_down=1.0, ha_drain_time=1.0)
    build.down(topo)
    build.up(topo)
    trials: dict[str, list[dict[str, Any]]] = {"kill": [], "kill_daemon": [], "graceful": []}
    try:
        for _ in range(args.trials):
            for kind in trials:
                tr = trial(topo, kind, args.rate, args.n, args.before, args.after)
                trials[kind].append(tr)
                print(f"{kind:11s} sent={tr['sent']:6d} loss_ms={tr['loss_ms']:5d} "
                      f"lost={tr['lost_packets']:5d} dups={tr['duplicates']} "
                      f"router_moved_ms={tr['router_moved_ms']:4d} "
                      f"shared_again_s={tr['shared_again_s']} before(a,a2)={tr['received_before_by_engine']}",
                      flush=True)
    finally:
        build.down(topo)
    kills, graces = trials["kill"], trials["graceful"]
    result = {
        "bench": "failover",
        "setup": {"rate_pps": args.rate, "destinations": args.n,
                  "bfd": "100 ms x 3 (FRR 8.4 bfdd both sides)",
                  "hold_down_s": topo.ha_hold_down, "drain_time_s": topo.ha_drain_time,
                  "trials": args.trials, "cpus": os.cpu_count()},
        "kill": {"loss_ms": max(t["loss_ms"] for t in kills),
                 "duplicates": sum(t["duplicates"] for t in kills),
                 "router_moved_ms": max(t["router_moved_ms"] for t in kills),
                 "shared_again_s": max(t["shared_again_s"] for t in kills)},
        "kill_daemon": {"loss_ms": max(t["loss_ms"] for t in trials["kill_daemon"]),
                        "duplicates": sum(t["duplicates"] for t in trials["kill_daemon"]),
                        "router_moved_ms": max(t["router_moved_ms"] for t in trials["kill_daemon"])},
        "graceful": {"lost_packets": sum(t["lost_packets"] for t in graces),
                     "duplicates": sum(t["duplicates"] for t in graces),
                     "router_moved_ms": max(t["router_moved_ms"] for t in graces),
                     "shared_again_s": max(t["shared_again_s"] for t in graces)},
        "trials": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("setup", "kill", "kill_daemon", "graceful")}, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
