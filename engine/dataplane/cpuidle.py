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

The daemon applies the limit at start and writes the saved values back at stop.  A killed
daemon leaves the limit in place (harmless for forwarding, costs idle power) until its next start,
which finds the originals in the state directory and writes them back where no longer wanted.
"""

from __future__ import annotations

import json
import logging
import os
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


def state_file(state_dir: Path) -> Path:
    """Where the originals wait while a limit is set (in the engine's state directory)."""
    return state_dir / "cpu-idle-saved.json"


def qos_path(cpu: int, root: Path = SYSFS_CPU) -> Path:
    """The resume-latency QoS file of one CPU."""
    return root / f"cpu{cpu}" / "power" / "pm_qos_resume_latency_us"


def _load_saved(state_file: Path | None, quiet: bool = False) -> dict[int, str]:
    """CPU -> value that an earlier run saved and did not write back (it was killed).

    ``quiet``: raise PermissionError (a file root wrote) instead of ignoring it with a warning.
    """
    if state_file is None:
        return {}
    try:
        data = json.loads(state_file.read_text())
        return {int(cpu): str(value) for cpu, value in data.items()}
    except FileNotFoundError:
        return {}
    except PermissionError:
        if quiet:
            raise
        log.warning("cannot read %s: the CPUs' current idle limits are taken as the originals", state_file)
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        if quiet:
            return {}
        log.warning("ignoring %s (%s): the CPUs' current idle limits are taken as the originals",
                    state_file, exc)
        return {}


def recorded(state_file: Path) -> dict[int, str]:
    """The originals a state file holds (CPU -> value), {} when there is none."""
    return _load_saved(state_file)


@dataclass
class CpuIdleLimit:
    """Limit the idle states of ``cpus`` to those resuming within ``limit_us``; undo with restore().

    With a ``state_file`` the original values survive a killed daemon: apply() records them there
    before touching a CPU, and the next apply() (even one with no CPUs, i.e. the limit no longer
    configured) writes back what a killed run left set, instead of taking the limit for the
    machine's own setting.  restore() removes the file.
    """

    cpus: tuple[int, ...]
    limit_us: int
    root: Path = SYSFS_CPU
    state_file: Path | None = None
    saved: dict[int, str] = field(default_factory=dict)    # CPU -> the file's value before apply()
    _stuck: dict[int, str] = field(default_factory=dict, repr=False)   # not written back (yet)
    _recorded: set[int] = field(default_factory=set, repr=False)      # CPUs found in the state file

    def apply(self) -> list[str]:
        """Set the limit on every CPU; returns one problem per CPU where it could not be set.

        A CPU that fails keeps its setting (and is not restored later); the others are set.
        Forwarding does not depend on this, so problems are for the log, not fatal.
        """
        want = sysfs_value(self.limit_us)
        problems = []
        leftover = _load_saved(self.state_file)
        self._stuck = dict(leftover)
        self._recorded = set(leftover)
        for cpu in self.cpus:
            path = qos_path(cpu, self.root)
            try:
                before = leftover.pop(cpu, None) or path.read_text().strip()
            except OSError as exc:
                problems.append(f"CPU {cpu}: cannot read {path}: {exc.strerror or exc}")
                continue
            self._stuck.pop(cpu, None)
            self.saved[cpu] = before
            self._store()     # recorded before the CPU is touched
            try:
                path.write_text(want)
            except OSError as exc:
                problems.append(f"CPU {cpu}: cannot set {path}: {exc.strerror or exc}")
                del self.saved[cpu]
                if cpu in self._recorded:     # a killed run's original: still owed to the CPU
                    self._stuck[cpu] = before
                continue
            log.info("CPU %d idle states: resume latency limit %s (was %s)", cpu, describe(want),
                     describe(before))
        # CPUs that a killed run limited and this one does not: back to what that run found
        for cpu, before in sorted(leftover.items()):
            if self._write_back(cpu, before, problems):
                log.info("CPU %d idle states: resume latency limit %s again (left set by a run that "
                         "was killed)", cpu, describe(before))
        self._store()
        return problems

    def restore(self) -> list[str]:
        """Write back what apply() found; returns the CPUs that could not be restored."""
        problems: list[str] = []
        for cpu, before in sorted(self.saved.items()):
            self._write_back(cpu, before, problems)
        self.saved.clear()
        self._store()
        return problems

    def _write_back(self, cpu: int, before: str, problems: list[str]) -> bool:
        path = qos_path(cpu, self.root)
        try:
            path.write_text(before)
        except OSError as exc:
            problems.append(f"CPU {cpu}: cannot restore {path} to {before!r}: {exc.strerror or exc}")
            self._stuck[cpu] = before      # kept in the state file for the next run
            return False
        self._stuck.pop(cpu, None)
        return True

    def _store(self) -> None:
        """Record the values still to be written back; no file when there are none."""
        if self.state_file is None:
            return
        pending = {**self._stuck, **self.saved}
        try:
            if pending:
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({str(c): v for c, v in sorted(pending.items())}))
                tmp.replace(self.state_file)
            else:
                self.state_file.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot record the CPUs' original idle limits in %s: %s", self.state_file, exc)

    def can_write(self) -> bool:
        """Whether this process may change every CPU it would touch (its CPUs and those a killed
        run left recorded): not so for a daemon started by systemd with ProtectKernelTunables or
        as a non-root user, where ``xcast6-engine cpu-idle apply`` runs as root instead."""
        try:
            recorded = set(_load_saved(self.state_file, quiet=True))
        except PermissionError:
            return False
        return all(os.access(qos_path(cpu, self.root), os.W_OK) for cpu in set(self.cpus) | recorded)


def for_daemon(cpus: tuple[int, ...], limit_us: int | None, state_file: Path,
               root: Path = SYSFS_CPU) -> CpuIdleLimit:
    """The daemon's part: apply ``limit_us`` to ``cpus`` (None: not configured, only undo what a
    killed run left) if this process may write the CPUs' files; otherwise leave it to the service
    manager (``cpu-idle apply/restore`` as root around the run) and return a limit that does nothing.
    """
    limit = CpuIdleLimit(cpus if limit_us is not None else (), limit_us or 0, root=root,
                         state_file=state_file)
    if not limit.can_write():
        if limit_us is None:
            return CpuIdleLimit((), 0, root=root)
        want = sysfs_value(limit_us)
        if all(_read(cpu, root) == want for cpu in cpus):
            log.info("CPUs %s idle states: resume latency limit %s, set by the service manager",
                     list(cpus), describe(want))
        else:
            log.error("workers.cpu_resume_latency_us: this process may not write %s; run "
                      "'xcast6-engine cpu-idle apply --config FILE' as root before the daemon (the "
                      "Ansible unit does: ExecStartPre=+) and 'cpu-idle restore' after it",
                      qos_path(cpus[0], root) if cpus else root)
        return CpuIdleLimit((), 0, root=root)
    for problem in limit.apply():
        # forwarding works without it (only wake-up latency suffers): say so, keep running
        log.error("workers.cpu_resume_latency_us: %s", problem)
    return limit


def _read(cpu: int, root: Path) -> str | None:
    try:
        return qos_path(cpu, root).read_text().strip()
    except OSError:
        return None
