"""The daemon with engine.dataplane.worker's WorkerPool: real workers, crash -> revive, counters.

In a build without the packet worker the same configuration must be refused with a clear
error naming workers.count (that is what this test checks there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.cpuidle import qos_path, state_file
from tests.api.conftest import (
    free_port,
    router_namespace,
    sh,
    start_daemon,
    wait_for,
    workers_summary,
    write_config,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]


def _ingress_skmem(pid: int) -> str:
    """``ss`` socket-memory line of the packet sockets a process holds (rb = receive buffer)."""
    out = sh("ss", "-0", "-m", "-p", "-n", "-H").stdout
    return "\n".join(line for line in out.splitlines() if f"pid={pid}," in line)


@contextlib.contextmanager
def _pool_daemon(workers_toml: str, state_dir: Path | None = None, expect_rc: int = 0) -> Iterator[Any]:
    """A daemon syncing a namespace router's kernel table, with ``[workers]`` extended."""
    tmp = Path(tempfile.mkdtemp(prefix="xapi-pool-"))
    state_dir = state_dir or tmp / "state"
    with router_namespace("xapi-q") as router:
        port = free_port()
        cfg = tmp / "engine.toml"
        write_config(cfg, state_dir, f"kernel://{router.ns}", port, link=router.host_link, change_detect=0)
        cfg.write_text(
            cfg.read_text().replace(
                "count = 0",
                f'restart_backoff = 0.5\ncounters_file = "{tmp}/stats.shm"\n'
                f'ingress = ["{router.host_link}"]\n{workers_toml}',
            )
        )
        d = start_daemon(cfg, tmp / "daemon.log", f"http://127.0.0.1:{port}")
        try:
            yield d
        finally:
            rc = d.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            assert rc == expect_rc, d.logs()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_daemon_supervises_the_worker_pool() -> None:
    cpus = sorted(os.sched_getaffinity(0))[::-1]      # worker i pinned to cpus[i % len]
    with _pool_daemon(f"count = 2\ncpus = {cpus}\nrx_buffer_kb = 256") as d, d.client() as c:
        st = c.get("/status").json()
        assert workers_summary(st) == {"configured": 2, "running": 2, "restarts": 0}, d.logs()
        assert st["workers"]["data_path"].startswith("data path: "), st["workers"]
        stats = c.get("/stats").json()
        assert "received" in stats["counters"] and "drop.no_route" in stats["counters"]
        assert len(stats["latency"]["buckets"]) > 10
        pid = stats["workers"][1]["pid"]
        for i, w in enumerate(stats["workers"]):
            assert os.sched_getaffinity(w["pid"]) == {cpus[i % len(cpus)]}
            assert w["cpus"] == [cpus[i % len(cpus)]]      # the API shows where each worker runs
            # workers.rx_buffer_kb reached the ingress socket (the kernel reports twice the value)
            assert f"rb{2 * 256 * 1024}," in _ingress_skmem(w["pid"]), _ingress_skmem(w["pid"])
        gen = st["sync"]["generation"]
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: c.get("/readyz").status_code == 503, 5)
        assert wait_for(lambda: c.get("/readyz").status_code == 200, 15), d.logs()
        st = c.get("/status").json()
        assert workers_summary(st) == {"configured": 2, "running": 2, "restarts": 1}
        assert st["sync"]["generation"] == gen and st["sync"]["route_count"] == 23
        w1 = c.get("/stats").json()["workers"][1]
        assert w1["pid"] != pid and w1["last_exit"] == "signal SIGKILL" and w1["rss_bytes"] > 0
        assert os.sched_getaffinity(w1["pid"]) == {cpus[1 % len(cpus)]}   # revived: pinned again
        assert "\nxcast6_received_packets_total " in c.get("/metrics").text


def test_daemon_threads_stay_off_the_worker_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs 2 CPUs: one for the worker, one for the rest of the daemon")
    with _pool_daemon(f"count = 1\ncpus = [{allowed[-1]}]") as d:
        with d.client() as c:
            worker = c.get("/stats").json()["workers"][0]["pid"]
        assert os.sched_getaffinity(worker) == {allowed[-1]}
        tasks = os.listdir(f"/proc/{d.proc.pid}/task")
        assert len(tasks) > 1      # sync, executor and API threads exist by now
        for tid in tasks:
            assert os.sched_getaffinity(int(tid)) == set(allowed[:-1]), (tid, d.logs())
        assert f"daemon threads on CPUs {allowed[:-1]}, packet workers on [{allowed[-1]}]" in d.logs()


def test_worker_cpu_idle_limit_is_set_while_running_and_restored_at_stop() -> None:
    """workers.cpu_resume_latency_us = 0: the worker CPU's PM QoS file reads 'n/a' (0 us: the
    idle loop polls) while the daemon runs, and its old value again after a clean stop."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs 2 CPUs: one for the worker, one for the rest of the daemon")
    cpu = allowed[-1]
    qos = qos_path(cpu)
    before = qos.read_text().strip()
    assert before != "n/a", f"{qos} is already 'n/a' (left by a killed daemon?): cannot tell a change"
    with _pool_daemon(f"count = 1\ncpus = [{cpu}]\ncpu_resume_latency_us = 0") as d:
        assert qos.read_text().strip() == "n/a", d.logs()
        assert f"CPU {cpu} idle states: resume latency limit 0 us (idle loop polls)" in d.logs()
    assert qos.read_text().strip() == before
    # A daemon killed with SIGKILL cannot write back; its next start does, even with the limit
    # no longer configured (the originals wait in the state directory).
    state = Path(tempfile.mkdtemp(prefix="xapi-pool-state-"))
    try:
        with _pool_daemon(f"count = 1\ncpus = [{cpu}]\ncpu_resume_latency_us = 0", state, -9) as d:
            with d.client() as c:
                worker = c.get("/stats").json()["workers"][0]["pid"]
            d.proc.kill()
            d.proc.wait()
            # The orphaned worker notices and stops: left running it would forward beside the
            # next daemon's workers (it used to, holding a copy of its own control pipe).
            assert wait_for(lambda: not _alive(worker), 5), f"worker {worker} outlived its daemon"
        assert qos.read_text().strip() == "n/a"
        with _pool_daemon(f"count = 1\ncpus = [{cpu}]", state) as d:
            assert qos.read_text().strip() == before, d.logs()
            assert "left set by a run that was killed" in d.logs()
            assert not state_file(state).exists()
    finally:
        qos.write_text(before)
        shutil.rmtree(state, ignore_errors=True)


def test_cpu_idle_cli_applies_and_restores_around_a_daemon(tmp_path: Path) -> None:
    """`cpu-idle apply` / `cpu-idle restore` (what the systemd unit runs as root around the daemon):
    the limit is set with the original recorded, then the original comes back and the record goes."""
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1]
    qos = qos_path(cpu)
    before = qos.read_text().strip()
    assert before != "n/a", f"{qos} is already 'n/a' (left by a killed daemon?): cannot tell a change"
    cfg = tmp_path / "engine.toml"
    write_config(cfg, tmp_path / "state", "kernel://xapi-none", free_port(), link="lo")
    workers = f"count = 1\ncpus = [{cpu}]\ncpu_resume_latency_us = 0"
    cfg.write_text(cfg.read_text().replace("count = 0", workers))
    record = state_file(tmp_path / "state")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.main", "cpu-idle", *args, "--config", str(cfg)],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                              timeout=60)

    try:
        res = cli("apply")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"CPU {cpu}: resume latency limit 0 us (idle loop polls)" in res.stdout
        assert qos.read_text().strip() == "n/a"
        assert record.exists()
        res = cli("restore")
        assert res.returncode == 0, res.stdout + res.stderr
        assert qos.read_text().strip() == before and not record.exists()
        assert cli("restore").returncode == 0        # nothing recorded: nothing to do
    finally:
        qos.write_text(before)
