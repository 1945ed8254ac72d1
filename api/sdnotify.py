"""systemd service integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and journald priorities.

No libsystemd binding: the notify protocol is one datagram on the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (sd_notify(3)); outside systemd the variable is unset and every call is a
no-op.  The watchdog interval is ``$WATCHDOG_USEC`` (for this process: ``$WATCHDOG_PID``, when
set, must be ours).  Log lines get the kernel-style ``<N>`` priority prefix that journald reads on
a stream it owns (``$JOURNAL_STREAM`` names it: sd-daemon(3)), so ``journalctl -p warning``
filters the engine's own lines; on a terminal no prefix is added.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

# syslog priorities (sd-daemon(3) SD_ERR ... SD_DEBUG)
PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels in between round to the more severe)."""
    for level in sorted(PRIORITY, reverse=True):
        if levelno >= level:
            return PRIORITY[level]
    return 7


class Notifier:
    """Sends sd_notify messages when the service manager asked for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """``send(READY=1, STATUS="...")``; False when not under systemd or the socket refused."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        addr = self.address
        if addr.startswith("@"):          # abstract namespace socket
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(msg, addr)
        except OSError:
            return False
        return True

    def status(self, text: str) -> bool:
        """One STATUS= line (``systemctl status`` shows it)."""
        return self.send(STATUS=text.replace("\n", " "))


def journal_stream(env: Mapping[str, str] | None = None, fd: int | None = None) -> bool:
    """Whether ``fd`` (default stderr) is the journal stream systemd connected ($JOURNAL_STREAM)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


class PriorityPrefix(logging.Formatter):
    """Wraps a formatter: ``<N>`` before every line of a record, N its syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).splitlines() or [""])
