"""Helpers for the real servers tests start (snmpd, snmpsim, the NETCONF server)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, grace: float = 5) -> None:
    """SIGTERM, SIGKILL if still running after ``grace`` seconds, and reap it (no-op if gone)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
