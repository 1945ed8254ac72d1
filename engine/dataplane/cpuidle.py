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

The record of the originals is written and read by whoever writes /sys: under the systemd unit
that is root (``cpu-idle apply/restore``, ``ExecStartPre=-+``/``ExecStopPost=-+``), in a state
directory the service user owns.  So the record lives in a directory of its own,
``<state_dir>/cpu-idle/`` (:func:`state_file`), created 0700 by the writer; it is used only when
it is a real directory (not a symbolic link) owned by this process's effective user with no
group/other access, and every file in it is opened through that directory's descriptor with
O_NOFOLLOW (the temporary file also O_EXCL), so a link planted by the service user is never
followed by root.  (A per-engine directory rather than one under /run: engines sharing a host,
as in the lab, keep separate records.  The service user owns the parent and could rename the
directory away: that only makes root refuse and log, never write elsewhere.)  A record's values
are checked before anything is written to /sys: CPUs that exist, values the file accepts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
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


# What pm_qos_resume_latency_us takes: "n/a" (0 us) or a number of us (0: no limit; the kernel
# keeps it an s32).  Anything else in a record was not written by us.
_SYSFS_VALUE = re.compile(r"n/a|0|[1-9][0-9]{0,9}")
_SYSFS_MAX = (1 << 31) - 1
_MAX_CPU = 1 << 16
_RECORD_MAX_BYTES = 1 << 16


class UnsafeRecord(OSError):
    """The record's directory or file is not private to this user (or is a link): not used."""


def state_file(state_dir: Path) -> Path:
    """Where the originals wait while a limit is set: a file in ``<state_dir>/cpu-idle/``, a
    directory private to the user that writes /sys (root under the systemd unit)."""
    return state_dir / "cpu-idle" / "saved.json"


def _open_record_dir(directory: Path, create: bool) -> int | None:
    """A descriptor of ``directory`` once it is known to be private to this user; None if absent.

    Raises :class:`UnsafeRecord` for a symbolic link, a non-directory, another owner, or group/
    other access: a directory someone else controls could swap files under the writer.
    """
    if create:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeRecord(exc.errno, "a symbolic link or not a directory", str(directory)) from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        raise UnsafeRecord(
            errno.EPERM,
            f"owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}, not private to "
            f"uid {os.geteuid()} (0700)", str(directory),
        )
    return fd


def _read_record(state_file: Path) -> str | None:
    """The record's text (None: there is none), read without following links."""
    dir_fd = _open_record_dir(state_file.parent, create=False)
    if dir_fd is None:
        return None
    try:
        try:
            fd = os.open(state_file.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeRecord(exc.errno, "a symbolic link", str(state_file)) from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise UnsafeRecord(errno.EPERM, "not a regular file of this user", str(state_file))
            return f.read(_RECORD_MAX_BYTES + 1).decode("utf-8")
    finally:
        os.close(dir_fd)


def _write_record(state_file: Path, text: str | None) -> None:
    """Replace the record by ``text`` (None: remove it), atomically and without following links."""
    dir_fd = _open_record_dir(state_file.parent, create=text is not None)
    if dir_fd is None:
        return
    try:
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(state_file.name, dir_fd=dir_fd)
            return
        tmp = state_file.name + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:     # left by a run that died mid-write (only we write here)
            os.unlink(tmp, dir_fd=dir_fd)
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, state_file.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _validated(data: object, root: Path) -> dict[int, str]:
    """CPU -> value from a decoded record, or ValueError naming the first entry not ours."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    out: dict[int, str] = {}
    for key, value in data.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < _MAX_CPU):
            raise ValueError(f"{key!r} is not a CPU number")
        cpu = int(key)
        if not (root / f"cpu{cpu}").is_dir():
            raise ValueError(f"CPU {cpu} does not exist (no {root / f'cpu{cpu}'})")
        if not (isinstance(value, str) and _SYSFS_VALUE.fullmatch(value)
                and (value == "n/a" or int(value) <= _SYSFS_MAX)):
            raise ValueError(f"CPU {cpu}: {str(value)[:40]!r} is not a resume latency value")
        out[cpu] = value
    return out


def qos_path(cpu: int, root: Path = SYSFS_CPU) -> Path:
    """The resume-latency QoS file of one CPU."""
    return root / f"cpu{cpu}" / "power" / "pm_qos_resume_latency_us"


def _load_saved(state_file: Path | None, quiet: bool = False, root: Path = SYSFS_CPU) -> dict[int, str]:
    """CPU -> value that an earlier run saved and did not write back (it was killed).

    A record that is not private to this user, is a link, or holds anything but existing CPUs
    and values the sysfs file takes is ignored (with a warning): it was not written by us.
    ``quiet``: raise PermissionError (a record root wrote) instead of ignoring it with a warning.
    """
    if state_file is None:
        return {}
    try:
        text = _read_record(state_file)
        if text is None:
            return {}
        if len(text) > _RECORD_MAX_BYTES:
            raise ValueError("larger than any record we write")
        return _validated(json.loads(text), root)
    except PermissionError:
        if quiet:
            raise
        log.warning("cannot read %s: the CPUs' current idle limits are taken as the originals", state_file)
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if quiet:
            return {}
        log.warning("ignoring %s (%s): the CPUs' current idle limits are taken as the originals",
                    state_file, exc)
        return {}


def recorded(state_file: Path, root: Path = SYSFS_CPU) -> dict[int, str]:
    """The originals a state file holds (CPU -> value), {} when there is none or it is refused."""
    return _load_saved(state_file, root=root)


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
        leftover = _load_saved(self.state_file, root=self.root)
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
            if not self._store():     # recorded before the CPU is touched, or not touched
                problems.append(f"CPU {cpu}: not limited: its original value cannot be recorded "
                                f"in {self.state_file}")
                del self.saved[cpu]
                continue
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

    def _store(self) -> bool:
        """Record the values still to be written back (no file when there are none); False when
        the record could not be written (logged)."""
        if self.state_file is None:
            return True
        pending = {**self._stuck, **self.saved}
        try:
            _write_record(self.state_file,
                          json.dumps({str(c): v for c, v in sorted(pending.items())}) if pending else None)
        except OSError as exc:
            log.warning("cannot record the CPUs' original idle limits in %s: %s", self.state_file, exc)
            return False
        return True

    def can_write(self) -> bool:
        """Whether this process may change every CPU it would touch (its CPUs and those a killed
        run left recorded): not so for a daemon started by systemd with ProtectKernelTunables or
        as a non-root user, where ``xcast6-engine cpu-idle apply`` runs as root instead."""
        try:
            recorded = set(_load_saved(self.state_file, quiet=True, root=self.root))
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
