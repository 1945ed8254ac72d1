"""Benchmark of engine-link programming: plan+diff (pure) and reconcile on a real kernel.

``xcast6-engine bench links`` measures

* ``plan``: build_plan + diff for N router interfaces (auto VLAN + subnet allocation) against an
  empty and an already-matching kernel view, in CPU time (best and median of several rounds);
* ``kernel`` (root; in a private network namespace it creates and deletes): a full reconcile of
  N links from nothing, the idempotent second pass, a pass where every 10th router interface
  went oper-down, and the tear-down.  In ``vlan`` mode this needs 802.1Q (run it in the QEMU
  guest: ``python -m tests.vm.harness --cmd python -m api.main bench links --mode vlan``);
  in ``direct`` mode it uses N veth pairs and works on any kernel.

Prints a table and writes ``<out>/vlan-bench.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import typer

from engine.model import Interface
from engine.tools import clikit
from lab import netns
from vlan.config import LinksConfig
from vlan.kernel import KernelLink, KernelView
from vlan.plan import build_plan
from vlan.reconcile import diff, reconcile

NS_PREFIX = "xvl-bench"


def _cpu(fn: Callable[[], object], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return {"best_s": min(samples), "median_s": statistics.median(samples), "rounds": rounds}


def bench_plan(counts: list[int], rounds: int = 5) -> list[dict[str, Any]]:
    """Pure planning cost: N interfaces, auto allocation, diff against empty and matching kernels."""
    rows = []
    for n in counts:
        cfg = LinksConfig.from_dict({"trunk": "eth1", "vlan_range": [1, 4094], "pool": "2001:db8::/32"})
        ifs = [Interface(f"ge-0/0/{i}.0", i + 1, oper_up=i % 10 != 0) for i in range(n)]
        trunk = KernelLink(2, "eth1", None, None, None, None, 1500, True, "UP", b"\x02" * 6, frozenset())
        empty = KernelView({"eth1": trunk})
        plan = build_plan(cfg, ifs)
        matching = KernelView(
            {
                "eth1": trunk,
                **{
                    lk.engine_ifname: KernelLink(
                        100 + i,
                        lk.engine_ifname,
                        "vlan",
                        lk.vlan_id,
                        2,
                        lk.alias,
                        1500,
                        lk.oper_up,
                        "UP" if lk.oper_up else "DOWN",
                        b"\x02" * 6,
                        frozenset({lk.engine_addr}),
                    )
                    for i, lk in enumerate(plan.links)
                },
            }
        )
        rows.append(
            {
                "interfaces": n,
                "plan": _cpu(partial(build_plan, cfg, ifs), rounds),
                "diff_empty": _cpu(partial(diff, cfg, plan, empty), rounds),
                "diff_matching": _cpu(partial(diff, cfg, plan, matching), rounds),
                "actions_from_empty": len(diff(cfg, plan, empty)),
                "actions_when_matching": len(diff(cfg, plan, matching)),
            }
        )
    return rows


def bench_kernel(counts: list[int], mode: str) -> list[dict[str, Any]]:
    """Wall time of real reconciles of N links in a private namespace (deleted afterwards)."""
    rows = []
    for n in counts:
        with netns.temporary(f"{NS_PREFIX}-{n}") as (ns,):
            if mode == "vlan":
                netns.veth(ns, "trunk0", ns, "trunk1")
                cfg = LinksConfig.from_dict(
                    {"trunk": "trunk0", "vlan_range": [1, 4094], "pool": "2001:db8::/32"}
                )
            else:
                netns.batch(ns, [f"link add e{i} type veth peer name r{i}" for i in range(n)])
                cfg = LinksConfig.from_dict(
                    {
                        "mode": "direct",
                        "pool": "2001:db8::/32",
                        "map": [{"router_if": f"ge-0/0/{i}.0", "link": f"e{i}"} for i in range(n)],
                    }
                )
            ifs = [Interface(f"ge-0/0/{i}.0", i + 1) for i in range(n)]
            some_down = [Interface(f"ge-0/0/{i}.0", i + 1, oper_up=i % 10 != 0) for i in range(n)]
            row: dict[str, Any] = {"links": n, "mode": mode}
            for label, wanted in (("create_s", ifs), ("idempotent_s", ifs), ("tenth_down_s", some_down)):
                start = time.perf_counter()
                result = reconcile(cfg, wanted, netns=ns)
                row[label] = time.perf_counter() - start
                row[label.replace("_s", "_actions")] = len(result.actions)
            if mode == "vlan":
                start = time.perf_counter()
                result = reconcile(cfg, [], netns=ns)
                row["teardown_s"] = time.perf_counter() - start
                row["teardown_actions"] = len(result.actions)
            rows.append(row)
    return rows


def run(out: Path, plan_counts: list[int], kernel_counts: list[int], mode: str | None) -> dict[str, Any]:
    """Run the selected parts, print a table, write ``out/vlan-bench.json``; return the document."""
    doc: dict[str, Any] = {
        "host": {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "in_vm": os.environ.get("XCAST6_IN_VM") == "1",
        },
        "plan": bench_plan(plan_counts) if plan_counts else [],
        "kernel": bench_kernel(kernel_counts, mode) if mode and kernel_counts else [],
    }
    for row in doc["plan"]:
        print(
            f"plan  {row['interfaces']:>5} ifs: build {row['plan']['best_s'] * 1e3:8.2f} ms  "
            f"diff(empty) {row['diff_empty']['best_s'] * 1e3:8.2f} ms  "
            f"diff(matching) {row['diff_matching']['best_s'] * 1e3:8.2f} ms  "
            f"({row['actions_from_empty']} actions from empty, {row['actions_when_matching']} when matching)"
        )
    for row in doc["kernel"]:
        extra = f"  teardown {row['teardown_s']:6.2f} s" if "teardown_s" in row else ""
        print(
            f"kernel {row['mode']:<6} {row['links']:>5} links: create {row['create_s']:6.2f} s "
            f"({row['create_actions']} actions)  idempotent {row['idempotent_s']:6.2f} s "
            f"({row['idempotent_actions']})  10% down {row['tenth_down_s']:6.2f} s{extra}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "vlan-bench.json").write_text(json.dumps(doc, indent=2))
    print(f"wrote {out / 'vlan-bench.json'}")
    return doc


OutOpt = typer.Option(Path("bench-results"), "--out", help="Directory for vlan-bench.json.")
PlanOpt = typer.Option("100,1000,4094", "--plan", help="Interface counts for the pure plan+diff.")
KernelOpt = typer.Option("", "--kernel", help="Link counts for real reconciles (root).")
ModeOpt = typer.Option("direct", "--mode", help="Kernel part: direct (veths) or vlan (needs 802.1Q).")


def register(bench_app: typer.Typer) -> None:
    """Add ``links`` to the ``bench`` group."""

    @bench_app.command("links")
    def links_cmd(out: Path = OutOpt, plan_counts: str = PlanOpt, kernel_counts: str = KernelOpt,
                  mode: str = ModeOpt) -> None:
        """Benchmark planning (pure) and reconciling engine links on the kernel; prints a table and
        writes JSON."""

        def counts(text: str) -> list[int]:
            return [int(x) for x in text.split(",") if x.strip()]

        if mode not in ("vlan", "direct"):
            raise clikit.fail(f"--mode: {mode!r} is not one of vlan, direct", clikit.EXIT_USAGE)
        run(out, counts(plan_counts), counts(kernel_counts), mode)
