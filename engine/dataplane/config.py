"""The ``[workers]`` section: the packet workers and their CPUs (owned by the data plane).

api/config.py gathers this section's problems with the others'.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.settings import (
    Field,
    Invalid,
    Spec,
    absolute_path,
    check_table,
    choice,
    ifname_list,
    integer,
    number,
    show,
)


@dataclass(frozen=True)
class WorkersConfig:
    """Packet workers: how many, where they read, how they are tuned."""

    count: int = 1
    ingress: tuple[str, ...] = ()
    restart_backoff: float = 1.0
    counters_file: Path = Path("/run/xcast6-engine/stats.shm")
    cpus: tuple[int, ...] = ()      # worker i runs on cpus[i % len(cpus)]; () = scheduler decides
    busy_poll_us: int = 0           # poll this long after traffic before sleeping (0 = always sleep)
    rx_buffer_kb: int = 4096        # each ingress socket's receive queue (SO_RCVBUF), KiB
    cpu_resume_latency_us: int | None = None   # idle-state limit of the workers' CPUs; None = untouched
    # Byte budgets of each worker's derived caches (see the README's worker paragraph): flow
    # templates (engine/forwarding/flowcache.py) and branch plans (engine/forwarding/branch.py).
    flow_cache_mb: int = 24
    plan_cache_mb: int = 8
    # ICMPv6 errors (Time Exceeded, Packet Too Big, Destination Unreachable; RFC 4443 §2.4(f)):
    # a token bucket for the whole engine, split between the workers; icmp_rate = 0 sends none.
    icmp_rate: float = 100.0        # errors per second, on average
    icmp_burst: int = 50            # errors in a burst

    @property
    def idle_limit_us(self) -> int | None:
        """``cpu_resume_latency_us`` when it applies (pinned workers exist), else None."""
        return self.cpu_resume_latency_us if self.count and self.cpus else None

    def summary(self) -> dict[str, Any]:
        """A JSON-able view (for logs and ``config check``)."""
        return {
            "count": self.count,
            "ingress": list(self.ingress),
            "restart_backoff": self.restart_backoff,
            "counters_file": str(self.counters_file),
            "cpus": list(self.cpus),
            "busy_poll_us": self.busy_poll_us,
            "rx_buffer_kb": self.rx_buffer_kb,
            "cpu_resume_latency_us": self.cpu_resume_latency_us,
            "flow_cache_mb": self.flow_cache_mb,
            "plan_cache_mb": self.plan_cache_mb,
            "icmp_rate": self.icmp_rate,
            "icmp_burst": self.icmp_burst,
        }


def cpu_ranges(cpus: list[int]) -> str:
    """0,1,2,5 -> '0-2,5' (how taskset and /proc/cpuinfo users read CPU sets)."""
    runs: list[list[int]] = []
    for c in cpus:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _cpu_list(v: object) -> tuple[int, ...]:
    # Checked against the CPUs this process may run on: a pin to a missing or isolated-away CPU
    # would otherwise only fail when the worker starts.
    usable = sorted(os.sched_getaffinity(0))
    here = cpu_ranges(usable)
    if not isinstance(v, list) or not v:
        raise Invalid(f"must be a non-empty list of CPU numbers (this host: {here})")
    seen: set[int] = set()
    for item in v:
        if isinstance(item, bool) or not isinstance(item, int):
            raise Invalid(f"entry {show(item)} is not a CPU number (this host: {here})")
        if item not in usable:
            raise Invalid(f"CPU {item} is not available to the engine (this host: {here})")
        if item in seen:
            raise Invalid(f"CPU {item} is listed twice")
        seen.add(item)
    return tuple(v)


WORKER_KEYS: Spec = {
    "count": Field(integer(0, 64, "integer (0 = no packet workers)"), "count"),
    "ingress": Field(ifname_list, "ingress"),
    "restart_backoff": Field(number(positive=True), "restart_backoff"),
    "counters_file": Field(absolute_path, "counters_file"),
    "cpus": Field(_cpu_list, "cpus"),
    "busy_poll_us": Field(integer(0, 1_000_000, "integer number of microseconds (0 = off)"), "busy_poll_us"),
    "rx_buffer_kb": Field(integer(64, 1_048_576, "integer number of KiB"), "rx_buffer_kb"),
    "cpu_resume_latency_us": Field(
        integer(0, 10_000_000, "integer number of microseconds (0 = the idle loop polls)"),
        "cpu_resume_latency_us",
    ),
    "flow_cache_mb": Field(integer(1, 4096, "integer number of MiB"), "flow_cache_mb"),
    "plan_cache_mb": Field(integer(1, 4096, "integer number of MiB"), "plan_cache_mb"),
    "icmp_rate": Field(number(minimum=0, maximum=1_000_000, what="number of errors per second (0 = none)"),
                       "icmp_rate"),
    "icmp_burst": Field(integer(1, 1_000_000, "integer number of errors"), "icmp_burst"),
}


def parse_workers(raw: Mapping[str, Any], where: str = "workers") -> tuple[WorkersConfig | None, list[str]]:
    """Validate a ``[workers]`` table: (config, []) or (None, every problem found)."""
    problems: list[str] = []
    values = check_table(raw, WORKER_KEYS, f"{where}.", problems)
    cpus_bad = "cpus" in raw and "cpus" not in values  # already reported once
    if "cpu_resume_latency_us" in values and not values.get("cpus") and not cpus_bad:
        problems.append(f"{where}.cpu_resume_latency_us: needs {where}.cpus (the limit applies to the CPUs "
                        "the workers are pinned to)")
    if problems:
        return None, problems
    return WorkersConfig(**values), []


# --- [dataplane]: which data path branches (owned by the data plane as well) -----------------
DATAPLANE_MODES = ("auto", "bpf", "python")


@dataclass(frozen=True)
class DataplaneConfig:
    """``mode``: ``bpf`` = the TC eBPF fast path (engine/dataplane/kernel_path.py) with the
    Python workers as slow path (the start fails if it cannot load); ``python`` = the workers
    alone; ``auto`` = ``bpf`` when it loads, else ``python``, logging why.  ``pin_dir``: where
    the program and its maps are pinned (bpffs) for bpftool."""

    mode: str = "auto"
    pin_dir: Path = Path("/sys/fs/bpf/xcast6-engine")

    def summary(self) -> dict[str, Any]:
        """A JSON-able view (for logs and ``config check``)."""
        return {"mode": self.mode, "pin_dir": str(self.pin_dir)}


def _bpffs_path(v: object) -> Path:
    p = absolute_path(v)
    if not str(p).startswith("/sys/fs/bpf/"):
        raise Invalid(f"{show(v)} is not under /sys/fs/bpf/ (pins live on the BPF filesystem)")
    return p


DATAPLANE_KEYS: Spec = {
    "mode": Field(choice(*DATAPLANE_MODES), "mode"),
    "pin_dir": Field(_bpffs_path, "pin_dir"),
}


def parse_dataplane(
    raw: Mapping[str, Any], where: str = "dataplane"
) -> tuple[DataplaneConfig | None, list[str]]:
    """Validate a ``[dataplane]`` table: (config, []) or (None, every problem found)."""
    problems: list[str] = []
    values = check_table(raw, DATAPLANE_KEYS, f"{where}.", problems)
    if problems:
        return None, problems
    return DataplaneConfig(**values), []
