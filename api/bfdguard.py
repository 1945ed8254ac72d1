"""``python -m api.bfdguard --watch PID -- bfdd ...``: run bfdd, kill it when PID dies.

bfdd drops privileges to the ``frr`` user, which clears PR_SET_PDEATHSIG, so the kernel alone
cannot tie its life to the engine's.  This guard (same credentials as the engine) holds a pidfd
of the engine and one of bfdd: the engine gone (kill -9 included) -> SIGKILL bfdd at once, so
the router's BFD session times out instead of being kept up for a dead engine.  SIGTERM to the
guard (a normal engine stop) is passed on to bfdd.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command until it exits or the watched process dies; returns its status."""
    ap = argparse.ArgumentParser(prog="api.bfdguard")
    ap.add_argument("--watch", type=int, required=True, help="the engine daemon's PID")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")
    try:
        engine = os.pidfd_open(args.watch)
    except ProcessLookupError:
        return 1                                    # the engine is already gone: start nothing
    child = subprocess.Popen(cmd)
    mine = os.pidfd_open(child.pid)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the engine, which stops us
    poller = select.poll()
    poller.register(engine, select.POLLIN)
    poller.register(mine, select.POLLIN)
    while True:
        try:
            ready = {fd for fd, _ in poller.poll()}
        except InterruptedError:
            continue
        if mine in ready:
            return child.wait()
        if engine in ready:
            child.kill()
            child.wait()
            print(f"bfdguard: engine pid {args.watch} gone, bfdd killed", file=sys.stderr, flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
