"""Operator integration of a running daemon: the /metrics families checked by Debian's
``promtool check metrics`` on a live scrape, sd_notify (READY, STATUS, WATCHDOG, STOPPING) on a
real notify socket, and ``<N>`` journald priority prefixes on the journal stream."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import (
    Daemon,
    Router,
    free_port,
    router_namespace,
    start_daemon,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket collecting messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except (TimeoutError, BlockingIOError):
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))

    def seen(self, key: str, value: str | None = None) -> bool:
        return any(key in m and (value is None or m[key] == value) for m in self.drain())


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Router, Daemon, NotifySocket, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="xapi-ops-"))
    with router_namespace("xapi-o") as router:
        port = free_port()
        cfg = tmp / "engine.toml"
        write_config(cfg, tmp / "state", f"kernel://{router.ns}", port, link=router.host_link)
        # one packet worker on the engine link, its counters in this run's own file
        cfg.write_text(cfg.read_text().replace(
            "count = 0", f'count = 1\ncounters_file = "{tmp / "stats.shm"}"'))
        notify = NotifySocket(tmp / "notify.sock")
        log = tmp / "daemon.log"
        log.touch()
        st = os.stat(log)
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "900000",   # ping every 0.3 s
               # the daemon's stderr is this file: tell it, as systemd does, that it is the journal
               "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        d = start_daemon(cfg, log, f"http://127.0.0.1:{port}", env=env)
        try:
            yield router, d, notify, log
        finally:
            rc = d.stop()
            stopping = notify.seen("STOPPING", "1")
            notify.sock.close()
            shutil.rmtree(tmp, ignore_errors=True)
            assert rc == 0
            assert stopping, notify.messages            # SIGTERM: STOPPING=1 before the drain


def test_sd_notify_ready_status_and_watchdog(engine: tuple[Router, Daemon, NotifySocket, Path]) -> None:
    _, _, notify, _ = engine
    assert wait_for(lambda: notify.seen("READY", "1"), 20), notify.messages
    assert notify.messages[0]["STATUS"].startswith("starting: "), notify.messages[0]
    ready = next(m for m in notify.messages if m.get("READY") == "1")
    # READY=1 comes once the table is loaded and the worker runs, with a STATUS line saying so
    assert re.fullmatch(r"23 routes \(generation \d+\), 1/1 workers, sync \w+", ready["STATUS"]), ready
    n0 = sum(1 for m in notify.messages if m.get("WATCHDOG") == "1")
    time.sleep(1.0)
    n1 = sum(1 for m in notify.drain() if m.get("WATCHDOG") == "1")
    assert n1 - n0 >= 2, notify.messages          # ~every WatchdogSec/3 while healthy
    assert any("STATUS" in m for m in notify.messages[-3:])


def test_journal_priority_prefixes(engine: tuple[Router, Daemon, NotifySocket, Path]) -> None:
    _, _, notify, log = engine
    assert wait_for(lambda: notify.seen("READY", "1"), 20)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines[:5]
    running = [line for line in lines if "running: source" in line]
    assert running and running[0].startswith("<6>")           # info


def test_promtool_checks_a_live_scrape(engine: tuple[Router, Daemon, NotifySocket, Path]) -> None:
    _, d, notify, _ = engine
    assert shutil.which("promtool"), "promtool comes with Debian's prometheus (scripts/bootstrap.sh)"
    assert wait_for(lambda: notify.seen("READY", "1"), 20)
    with d.client() as c:
        text = c.get("/metrics").text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout + check.stderr == "", check.stdout + check.stderr
    # families with units, whose sum() means something; the old mixed family is gone
    assert "xcast6_packets_total" not in text
    for fam, label in (("xcast6_dropped_packets_total", 'reason="truncated"'),
                       ("xcast6_dropped_packets_total", 'reason="rx_queue_full"'),
                       ("xcast6_dropped_destinations_total", 'reason="no_route"'),
                       ("xcast6_dropped_copies_total", 'reason="no_router_mac"'),
                       ("xcast6_bytes_total", 'dir="in"'), ("xcast6_bytes_total", 'dir="out"'),
                       ("xcast6_syscalls_total", 'call="sendmmsg"'),
                       ("xcast6_sent_packets_total", 'kind="x2u"'),
                       ("xcast6_worker_up", 'worker="0"'),
                       ("xcast6_sync_failures_total", 'reason="unreachable"'),
                       ("xcast6_sync_attempts_total", 'trigger="startup"')):
        assert re.search(rf"^{fam}{{[^}}]*{label}[^}}]*}} \d", text, re.M), (fam, label)
    assert re.search(r"^xcast6_received_packets_total \d+$", text, re.M)
    startup = r'^xcast6_sync_attempts_total\{source="kernel://[^"]+",trigger="startup"\} 1$'
    assert re.search(startup, text, re.M)
    # every histogram bucket exists from the start
    assert len(re.findall(r"^xcast6_latency_seconds_bucket\{", text, re.M)) > 20
