"""Idle-state limit for the packet workers' CPUs (the kernel's per-CPU resume-latency PM QoS).

Why: a worker that sleeps in epoll between bursts lets its CPU go idle, and the next frame
then waits for the CPU to come back (the idle state's exit latency; on a VM a halt that exits to
the hypervisor, plus an IPI from the CPU that queued the frame) before the worker runs again.
Measured in the namespace lab (one worker pinned to its own vCPU, half of its capacity): worker
CPU 82-89 % -> 72-77 % and engine-added latency p50 52-62 -> 21-26 us, p99 0.5-3 ms -> 0.24-0.5 ms,
with only the worker's CPU limited to 0 us, i.e. polling when idle.

``/sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us`` tells the cpuidle governor
which idle states it may use on CPU N: only those that resume within the limit.  A limit of 0
leaves the polling idle loop (the CPU never halts: a core given to a worker, as DPDK or VPP
operators give cores to poll-mode drivers, but the worker still sleeps and its CPU time stays
meaningful).  The file's own spelling is odd, hence :func:`sysfs_value`: it reads and takes
``"0"`` for *no limit* and ``"n/a"`` for *0 us*.

The daemon applies the limit at start and writes the saved values back at stop; a killed
daemon leaves the limit in place (harmless for forwarding, costs idle power) until the next
start or a write of ``0`` to the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SYSFS_CPU = Path("/sys/devices/system/cpu")


def sysfs_value(limit_us: int) -> str:
    """What to write to ``pm_qos_resume_latency_us`` for a limit of ``limit_us`` microseconds."""
    if limit_us < 0:
        raise ValueError(f"resume latency limit {limit_us} us is negative")
    return "n/a" if limit_us == 0 else str(limit_us)


def describe(raw: str) -> str:
    """A file value in words: ``n/a`` -> ``0 us (idle loop polls)``, ``0`` -> ``no limit``."""
    raw = raw.strip()
    if raw == "n/a":
        return "0 us (idle loop polls)"
    if raw == "0":
        return "no limit"
    return f"{raw} us"


def qos_path(cpu: int, root: Path = SYSFS_CPU) -> Path:
    """The resume-latency QoS file of one CPU."""
    return root / f"cpu{cpu}" / "power" / "pm_qos_resume_latency_us"


@dataclass
class CpuIdleLimit:
    """Limit the idle states of ``cpus`` to those resuming within ``limit_us``; undo with restore()."""

    cpus: tuple[int, ...]
    limit_us: int
    root: Path = SYSFS_CPU
    saved: dict[int, str] = field(default_factory=dict)    # CPU -> the file's value before apply()

    def apply(self) -> list[str]:
        """Set the limit on every CPU; returns one problem per CPU where it could not be set.

        A CPU that fails keeps its setting (and is not restored later); the others are set.
        Forwarding does not depend on this, so problems are for the log, not fatal.
        """
        want = sysfs_value(self.limit_us)
        problems = []
        for cpu in self.cpus:
            path = qos_path(cpu, self.root)
            try:
                before = path.read_text().strip()
                path.write_text(want)
            except OSError as exc:
                problems.append(f"CPU {cpu}: cannot set {path}: {exc.strerror or exc}")
                continue
            self.saved[cpu] = before
            log.info("CPU %d idle states: resume latency limit %s (was %s)", cpu, describe(want),
                     describe(before))
        return problems

    def restore(self) -> list[str]:
        """Write back what apply() found; returns the CPUs that could not be restored."""
        problems = []
        for cpu, before in sorted(self.saved.items()):
            path = qos_path(cpu, self.root)
            try:
                path.write_text(before)
            except OSError as exc:
                problems.append(f"CPU {cpu}: cannot restore {path} to {before!r}: {exc.strerror or exc}")
        self.saved.clear()
        return problems

