"""``python -m api.bfdguard``: run bfdd, kill it when the engine it serves dies.

A BFD session that a surviving bfdd keeps up for a dead engine is the black hole BFD is there to
prevent, so bfdd must not outlive its engine -- kill -9 included.  Two ways to name the engine:

* ``--watch PID -- bfdd ...`` (``[ha] bfdd_mode = "spawn"``: the daemon starts the guard itself).
  bfdd drops privileges to the ``frr`` user, which clears PR_SET_PDEATHSIG, so the kernel alone
  cannot tie its life to the engine's; the guard (same credentials as the engine) holds a pidfd of
  the engine and SIGKILLs bfdd the moment it is gone.
* ``--lifeline SOCK -- bfdd ...`` (``bfdd_mode = "external"``: the ``xcast6-bfdd.service`` unit,
  started by systemd as root before the engine, so the engine's unit needs none of bfdd's
  capabilities).  The guard listens on ``SOCK``; the engine connects when it attaches, the guard
  reads its PID from the connection (SO_PEERCRED), opens a pidfd and from then on SIGKILLs bfdd the
  moment that process is gone.  Exit status 0 then: systemd's ``Restart=always`` brings bfdd back
  (every session configured down) for the engine's next run, and a planned stop leaves the unit
  inactive, not failed.  With ``--ready DIR`` the guard tells systemd READY=1 only once bfdd's
  control and vty sockets exist, so an engine ordered after the unit finds them.

In both, the router then sees the session time out (detection time, e.g. 3 x 100 ms) and moves the
traffic.  SIGTERM to the guard (a normal stop) is passed on to bfdd.
"""

from __future__ import annotations

import argparse
import grp
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from api.sdnotify import Notifier

READY_FILES = ("bfdd.sock", "bfdd.vty")


def _say(msg: str) -> None:
    print(f"bfdguard: {msg}", file=sys.stderr, flush=True)


def peer_pid(conn: socket.socket) -> int:
    """The PID of the process at the other end of a unix stream connection (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def listen_lifeline(path: Path, group: str | None) -> socket.socket:
    """The lifeline socket: 0660, in ``group`` when given (the engine's), stale file replaced."""
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    os.chmod(path, 0o660)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    srv.listen(4)
    srv.setblocking(False)
    return srv


def wait_ready(child: subprocess.Popen[bytes], run_dir: Path, timeout: float) -> bool:
    """Until bfdd's control and vty sockets exist (False: bfdd exited or the time ran out)."""
    deadline = time.monotonic() + timeout
    while not all((run_dir / f).exists() for f in READY_FILES):
        if child.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the command until it exits or the engine dies; returns its status (0 after a kill)."""
    ap = argparse.ArgumentParser(prog="api.bfdguard")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--watch", type=int, help="the engine daemon's PID (spawn mode)")
    who.add_argument("--lifeline", type=Path,
                     help="listen here; the engine that connects is watched (the xcast6-bfdd unit)")
    ap.add_argument("--group", help="group of the lifeline socket (the engine's)")
    ap.add_argument("--ready", type=Path, help="READY=1 to systemd once bfdd's sockets are in this directory")
    ap.add_argument("--ready-timeout", type=float, default=10.0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")
    poller = select.poll()
    watched: dict[int, int] = {}                     # pidfd -> the engine PID it watches
    conns: dict[int, socket.socket] = {}             # lifeline connections, by fd
    srv = None
    if args.watch is not None:
        try:
            engine = os.pidfd_open(args.watch)
        except ProcessLookupError:
            return 1                                # the engine is already gone: start nothing
        watched[engine] = args.watch
        poller.register(engine, select.POLLIN)
    else:
        srv = listen_lifeline(args.lifeline, args.group)
        poller.register(srv, select.POLLIN)
    child = subprocess.Popen(cmd)
    mine = os.pidfd_open(child.pid)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the engine, which stops us
    if args.ready is not None:
        if not wait_ready(child, args.ready, args.ready_timeout):
            _say(f"bfdd exited at start (status {child.returncode}), see its log above"
                 if child.poll() is not None else
                 f"bfdd did not open {', '.join(READY_FILES)} in {args.ready} within "
                 f"{args.ready_timeout:g} s")
            child.kill()
            return child.wait() or 1
        Notifier().send(READY=1, STATUS=f"bfdd pid {child.pid} ready; no engine attached yet")
    poller.register(mine, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ev in events:
            if fd == mine:
                return child.wait()
            if srv is not None and fd == srv.fileno():
                with_engine(srv, poller, watched, conns)
            elif fd in conns:
                # the engine closed its lifeline (it re-attaches, or is stopping): its pidfd
                # stays watched, its death is what counts
                poller.unregister(fd)
                conns.pop(fd).close()
            elif fd in watched:
                child.kill()
                child.wait()
                _say(f"engine pid {watched[fd]} gone, bfdd killed")
                return 0


def with_engine(srv: socket.socket, poller: select.poll, watched: dict[int, int],
                conns: dict[int, socket.socket]) -> None:
    """Accept one lifeline connection and watch the process behind it."""
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return
    pid = peer_pid(conn)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        conn.close()
        return
    if pid in watched.values():
        os.close(fd)
    else:
        watched[fd] = pid
        poller.register(fd, select.POLLIN)
        _say(f"engine pid {pid} attached: bfdd dies with it")
        Notifier().send(STATUS=f"serving engine pid {pid}")
    conns[conn.fileno()] = conn
    poller.register(conn, select.POLLIN)


if __name__ == "__main__":
    sys.exit(main())
