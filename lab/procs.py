"""The one way tests, the lab's helpers and bench stop a process they started."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, grace: float = 5,
                 sig: int = signal.SIGTERM) -> int | None:
    """``sig`` (SIGTERM), SIGKILL if still running after ``grace`` seconds, and reap it.

    Returns the exit status (negative: the signal that ended it), None if there was no
    process; a process that already exited is only reaped.  ``sig`` is for programs that
    finish their work on another signal (tcpdump flushes its capture on SIGINT).
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    return proc.returncode
