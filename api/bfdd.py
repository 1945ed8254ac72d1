"""FRR's bfdd (RFC 5880/5881, single hop IPv6) run for the engine: start, admin state, watch.

How it runs, and why:

* The daemon starts its own ``bfdd`` (Debian's ``frr`` package) with a configuration it writes,
  its vty socket and its control socket in ``<state_dir>/bfd`` (``--vty_socket``, ``--bfdctl``),
  so it never touches a host FRR.  bfdd needs no zebra for single-hop sessions named by
  ``peer X local-address Y`` (checked with FRR 8.4; ``interface IFNAME`` would need zebra).
* bfdd must die with the engine: a BFD session that a surviving bfdd keeps up for a dead
  engine is exactly the black hole BFD is there to prevent.  PR_SET_PDEATHSIG does not survive
  bfdd dropping privileges to the ``frr`` user (the kernel clears it on a credential change), so
  bfdd is started under :mod:`api.bfdguard`, which watches the engine through a pidfd and
  SIGKILLs bfdd the moment the engine is gone -- kill -9 included.  The router then sees the
  session time out (detection time, e.g. 3 x 100 ms) and moves the traffic.
* Admin state: ``vtysh --vty_socket DIR`` ``bfd / peer ... / [no] shutdown`` (a planned change
  reaches the router at once as State AdminDown, RFC 5880 6.8.16).
* Session state: bfdd's control socket (``bfdctl.h``: a 8-byte header -- length, id, type,
  version -- and JSON), subscribed with BMT_NOTIFY / BCM_NOTIFY_PEER_STATE: one JSON object per
  state change, no polling.

``bfdd_mode = "external"`` (production under the hardened unit, which cannot grant what bfdd asks
for): systemd runs bfdd as root in ``xcast6-bfdd.service`` (it drops to ``frr`` itself), under
the same guard in lifeline mode, with its sockets in ``/run/xcast6-bfdd``; its ``bfdd.conf`` is
written from the engine's own ``engine.toml`` (``python -m api.bfdd write-config``), so the two
cannot disagree.  The daemon attaches: it connects to the guard's ``lifeline.sock`` (from then on
its death kills bfdd, as in spawn mode), subscribes to the control socket, forces the sessions
down, and drives them exactly as in spawn mode.  A bfdd that dies under a running engine closes
the control socket: the engine marks its sessions down in its own view and re-attaches to the
bfdd systemd restarts (sessions down until the hold-down has passed again).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import signal
import socket
import struct
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.bfdguard import peer_pid
from api.hastate import HaConfig, link_ends, parse_ha
from engine.settings import table_of
from vlan.config import MapEntry, parse_links

log = logging.getLogger("xcast6.bfd")

# bfdctl.h
_HDR = struct.Struct("!IHBB")        # bcm_length (payload), bcm_id, bcm_type, bcm_ver
BMT_RESPONSE = 1
BMT_NOTIFY = 4
BMV_VERSION_1 = 1
BCM_NOTIFY_PEER_STATE = 1
DIAGNOSTICS = {0: "ok", 1: "control detection time expired", 2: "echo function failed",
               3: "neighbor signaled session down", 4: "forwarding plane reset", 5: "path down",
               6: "concatenated path down", 7: "administratively down",
               8: "reverse concatenated path down"}


class BfddError(OSError):
    """bfdd could not be started or driven (an OSError: the daemon exits 1 with the message)."""


@dataclass(frozen=True)
class Peer:
    """One single-hop session: the router's address and the engine's on the divert link."""

    link: str
    peer: str        # the router's address on the link
    local: str       # the engine's address on the link

    def cli(self) -> str:
        return f"peer {self.peer} local-address {self.local}"


def peer_block(p: Peer, tx_ms: int, rx_ms: int, multiplier: int) -> list[str]:
    """One session's configuration, administratively down (bfdd.conf and vtysh alike)."""
    return [p.cli(), f"transmit-interval {tx_ms}", f"receive-interval {rx_ms}",
            f"detect-multiplier {multiplier}", "shutdown", "exit"]


def render_config(peers: list[Peer], tx_ms: int, rx_ms: int, multiplier: int) -> str:
    """bfdd.conf: every session starts administratively down (the engine is not ready yet)."""
    lines = ["! written by xcast6-engine: sessions follow the engine's health", "bfd"]
    for p in peers:
        first, *rest, last = peer_block(p, tx_ms, rx_ms, multiplier)
        lines += [f" {first}", *(f"  {x}" for x in rest), f" {last}", " !"]
    lines += ["exit", "!", ""]
    return "\n".join(lines)


def peers_for(ha: HaConfig, entries: Iterable[MapEntry]) -> list[Peer]:
    """The sessions of ``[ha]``: its ``links`` (ends from their ``[[links.map]]`` entries) and its
    explicit ``[[ha.session]]`` tables."""
    by_link = {m.link: m for m in entries if m.link}
    peers = [Peer(link, str(by_link[link].router_addr), str(by_link[link].engine_addr)) for link in ha.links]
    return peers + [Peer(link, peer, local) for link, local, peer in ha.sessions]


def unit_config(config_path: Path) -> str:
    """bfdd.conf for ``xcast6-bfdd.service`` from the engine's configuration file: only ``[links]``
    and ``[ha]`` are read (no secrets needed; the full check is the engine's own at its start)."""
    try:
        data = tomllib.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BfddError(f"{config_path}: {exc}") from None
    problems: list[str] = []
    links, link_problems = parse_links(table_of(data, "links", problems))
    ha, ha_problems = parse_ha(table_of(data, "ha", problems),
                               link_ends(links.entries) if links is not None else {})
    problems += link_problems + ha_problems
    if problems or links is None or ha is None:
        raise BfddError(f"{config_path}: " + "; ".join(problems))
    if not ha.enabled:
        raise BfddError(f"{config_path}: [ha] is not enabled: no BFD sessions to run")
    return render_config(peers_for(ha, links.entries), ha.tx_interval_ms, ha.rx_interval_ms, ha.multiplier)


def frame(payload: bytes, msg_type: int, msg_id: int = 1) -> bytes:
    """One control-socket message."""
    return _HDR.pack(len(payload), msg_id, msg_type, BMV_VERSION_1) + payload


def subscribe_message() -> bytes:
    """BMT_NOTIFY with BCM_NOTIFY_PEER_STATE: bfdd copies the 8 flag bytes as they are (host
    byte order), answers ``{"status":"ok"}`` and sends every session's state, then each change."""
    return frame(struct.pack("=Q", BCM_NOTIFY_PEER_STATE), BMT_NOTIFY)


def split_frames(buf: bytes) -> tuple[list[tuple[int, dict[str, Any]]], bytes]:
    """Complete messages in ``buf`` as (type, JSON object), and the incomplete rest."""
    out: list[tuple[int, dict[str, Any]]] = []
    while len(buf) >= _HDR.size:
        length, _mid, mtype, _ver = _HDR.unpack_from(buf)
        if len(buf) < _HDR.size + length:
            break
        body = buf[_HDR.size:_HDR.size + length]
        buf = buf[_HDR.size + length:]
        try:
            doc = json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            log.warning("bfdd control socket: unreadable message %r", body[:80])
            continue
        if isinstance(doc, dict):
            out.append((mtype, doc))
    return out, buf


# What FRR 8.4's bfdd asks for at start-up (privs_init: "Wanted caps: cap_net_bind_service,
# cap_net_raw,cap_sys_admin"); run by a non-root engine it can only keep what the engine has.
BFDD_CAPS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}


def missing_caps(status: str | None = None) -> list[str]:
    """The capabilities bfdd needs that this process cannot pass on (its effective set)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    return [name for name, bit in BFDD_CAPS.items() if not eff >> bit & 1]


def _frr_ids() -> tuple[int, int] | None:
    try:
        return pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
    except KeyError:
        return None


def _peer_pid(sock: socket.socket | None) -> int | None:
    """The PID at the other end of a unix stream connection, None if unknown."""
    try:
        return peer_pid(sock) if sock is not None else None
    except OSError:
        return None


class Bfdd:
    """One bfdd for the engine's sessions.  ``await start()``, ``set_admin()``, ``await stop()``."""

    def __init__(self, run_dir: Path, peers: list[Peer], *, bfdd: Path, vtysh: Path, tx_ms: int,
                 rx_ms: int, multiplier: int,
                 on_state: Callable[[Peer, str, dict[str, Any]], None], external: bool = False) -> None:
        self.run_dir = run_dir
        self.external = external
        self.peers = peers
        self.bfdd = bfdd
        self.vtysh = vtysh
        self.timers = (tx_ms, rx_ms, multiplier)
        self.on_state = on_state
        self.proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lifeline: socket.socket | None = None
        self._by_addr = {(p.peer, p.local): p for p in peers}

    @property
    def ctl_path(self) -> Path:
        return self.run_dir / "bfdd.sock"

    async def start(self, timeout: float = 10.0) -> None:
        """Write the config, start bfdd under the guard, wait for its sockets, subscribe
        (external: only wait for the sockets of the bfdd someone else runs, and subscribe)."""
        if self.external:
            await self._attach(timeout)
            return
        if not self.bfdd.exists():
            raise BfddError(f"ha.bfdd: {self.bfdd} not found (Debian: apt-get install frr)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("bfdd.sock", "bfdd.vty", "bfdd.pid"):
            (self.run_dir / stale).unlink(missing_ok=True)
        conf = self.run_dir / "bfdd.conf"
        conf.write_text(render_config(self.peers, *self.timers))
        cmd = [str(self.bfdd), "-P", "0", "-f", str(conf), "--vty_socket", str(self.run_dir),
               "--bfdctl", str(self.ctl_path), "-i", str(self.run_dir / "bfdd.pid"),
               "-z", str(self.run_dir / "zserv.api"), "--log", "stdout", "--log-level", "notifications"]
        if os.geteuid() == 0:
            # bfdd drops to the frr user: it must be able to create its sockets here
            ids = _frr_ids()
            if ids is not None:
                os.chown(self.run_dir, *ids)
                os.chown(conf, *ids)
        else:
            # run as ourselves (the unit's user must be in the frrvty group; see README)
            missing = missing_caps()
            if missing:
                raise BfddError(f"[ha]: bfdd run by a non-root engine needs {', '.join(missing)} as well "
                                "(FRR's bfdd asks for CAP_NET_BIND_SERVICE, CAP_NET_RAW and CAP_SYS_ADMIN "
                                "at start); the unit does not grant them: run bfdd as its own unit "
                                "(xcast6-bfdd.service, the engine_host role) with [ha] bfdd_mode = "
                                "\"external\" and bfd_dir = \"/run/xcast6-bfdd\"")
            cmd += ["-u", pwd.getpwuid(os.geteuid()).pw_name, "-g", grp.getgrgid(os.getegid()).gr_name]
        guard = [sys.executable, "-m", "api.bfdguard", "--watch", str(os.getpid()), "--", *cmd]
        self.proc = await asyncio.create_subprocess_exec(
            *guard, stdin=subprocess.DEVNULL, stdout=None, stderr=None)
        await self._attach(timeout)

    @property
    def lifeline_path(self) -> Path:
        return self.run_dir / "lifeline.sock"

    async def _attach(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise BfddError(f"bfdd exited at start (status {self.proc.returncode}); its log is "
                                "in the engine's")
            if self.ctl_path.exists() and (self.run_dir / "bfdd.vty").exists():
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.ctl_path))
                except (ConnectionRefusedError, FileNotFoundError):
                    pass            # the socket of a bfdd that died; systemd is starting the next
                except PermissionError as exc:
                    raise BfddError(f"ha.bfd_dir: cannot connect to {self.ctl_path}: {exc.strerror} "
                                    "(the engine's user must reach the bfdd unit's directory)") from None
                else:
                    first = await self._subscribe(reader, writer, deadline - loop.time())
                    if first:
                        break
                    # no answer: a bfdd on its way out.  A killed bfdd closes its sockets one by
                    # one; when ours goes first, its listener can still take a connection for a
                    # moment on a busy machine -- attaching there (and handing the lifeline to its
                    # exiting guard) left the engine on a dead bfdd (CI, booted pair test)
                    writer.close()
            if loop.time() > deadline:
                await self.stop()
                raise BfddError(f"bfdd did not open {self.ctl_path} within {timeout:.0f} s"
                                + (" (is xcast6-bfdd.service running?)" if self.external else ""))
            await asyncio.sleep(0.05)
        if self.external:
            self._hold_lifeline()       # this bfdd answered: its guard is the one listening now
        self._watch = loop.create_task(self._read(reader, writer, first))
        if self.external:
            # someone else's bfdd may hold the sessions up from an earlier run of the engine: down
            # until this run is healthy (its vty may come up a moment after its control socket).
            # Re-created, not just shut down: a bfdd started before the engine put its addresses on
            # the links could not bind a session's socket then, and FRR 8.4 without zebra never
            # retries (measured: 0 packets sent until the peer is configured again)
            while True:
                try:
                    await self._recreate_sessions()
                    break
                except BfddError:
                    if loop.time() > deadline:
                        await self.stop()
                        raise
                    await asyncio.sleep(0.1)
        # which processes we reached (SO_PEERCRED): after a bfdd restart the journal shows whether
        # the engine attached to the new bfdd and its guard
        who = f"bfdd pid {_peer_pid(writer.get_extra_info('socket'))}"
        if self.external:
            who += f", guard pid {_peer_pid(self._lifeline)}" if self._lifeline else ", no guard"
        log.info("bfdd %s (%s; %s): %s", "attached" if self.external else "started", self.run_dir, who,
                 ", ".join(f"{p.link}: {p.local} -> {p.peer}" for p in self.peers))

    def _hold_lifeline(self) -> None:
        """Connect to the bfdd unit's guard (api.bfdguard --lifeline): it reads our PID from the
        connection and kills bfdd the moment we are gone, so our sessions die with us."""
        self._drop_lifeline()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.lifeline_path))
        except OSError as exc:
            sock.close()
            log.error("bfdd at %s has no guard to tie it to this engine (%s: %s): if the engine dies, "
                      "nothing takes its BFD sessions down and the router keeps diverting to it; run "
                      "bfdd through xcast6-bfdd.service", self.run_dir, self.lifeline_path,
                      exc.strerror)
            return
        self._lifeline = sock

    def _drop_lifeline(self) -> None:
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None

    @staticmethod
    async def _subscribe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         timeout: float) -> bytes:
        """Subscribe to session state; the first bytes bfdd answers (b"": closed, reset or silent
        for ``timeout``: not a bfdd to attach to)."""
        try:
            writer.write(subscribe_message())
            await writer.drain()
            return await asyncio.wait_for(reader.read(65536), max(timeout, 0.5))
        except (OSError, TimeoutError):
            return b""

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    first: bytes = b"") -> None:
        buf = b""
        data = first
        try:
            while True:
                if not data:
                    try:
                        data = await reader.read(65536)
                    except OSError as exc:
                        # a bfdd that dies (or drops us) with our bytes unread, or before it
                        # accepted us, resets the connection instead of closing it: the same
                        # "bfdd gone", and it must end this task quietly, not leave an exception
                        # that every later stop() (the re-attach) would raise again
                        log.error("bfdd's control socket failed (bfdd gone?): %s", exc)
                        return
                    if not data:
                        log.error("bfdd closed its control socket (bfdd gone?)")
                        return
                msgs, buf = split_frames(buf + data)
                data = b""
                for mtype, doc in msgs:
                    if mtype == BMT_NOTIFY and doc.get("op") == "status":
                        key = (str(doc.get("peer-address")), str(doc.get("local-address")))
                        peer = self._by_addr.get(key)
                        if peer is not None:
                            self.on_state(peer, str(doc.get("state", "unknown")), doc)
                    elif mtype == BMT_RESPONSE and doc.get("status") != "ok":
                        log.error("bfdd refused the notification subscription: %s", doc)
        finally:
            writer.close()

    async def _recreate_sessions(self) -> None:
        """external: each session shut down (AdminDown to the router), deleted and configured again
        from this engine's ``[ha]``, down."""
        with contextlib.suppress(BfddError):
            await self.set_admin(False)
        await self._vtysh([f"no {p.cli()}" for p in self.peers], check=False)
        await self._vtysh([c for p in self.peers for c in peer_block(p, *self.timers)], check=True)

    async def _vtysh(self, lines: list[str], check: bool) -> None:
        args = [str(self.vtysh), "--vty_socket", str(self.run_dir)]
        if self.external and (self.run_dir / "vtysh.conf").exists():
            args += ["--config_dir", str(self.run_dir)]       # the bfdd unit's (see main())
        args += ["-c", "configure terminal", "-c", "bfd"]
        for line in lines:
            args += ["-c", line]
        proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if check and (proc.returncode != 0 or "%" in text):
            raise BfddError(f"vtysh ({'; '.join(lines)[:120]}) failed (status {proc.returncode}): "
                            f"{text[:300]}")

    async def set_admin(self, up: bool) -> None:
        """All sessions administratively up (``no shutdown``) or down (``shutdown``)."""
        verb = "no shutdown" if up else "shutdown"
        await self._vtysh([c for p in self.peers for c in (p.cli(), verb, "exit")], check=True)

    def alive(self) -> bool:
        if self.external:       # its control socket still answers
            return self._watch is not None and not self._watch.done()
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop bfdd (the guard forwards SIGTERM and reaps it)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            try:
                await watch
            except asyncio.CancelledError:
                pass
            except Exception:       # the watch of a dead bfdd: stopping must still go on
                log.exception("bfdd control socket watch failed")
        self._drop_lifeline()
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m api.bfdd write-config --config engine.toml --output bfdd.conf`` (the bfdd unit's
    ExecStartPre=: the sessions and timers of the engine's ``[ha]``, every session down)."""
    import argparse

    ap = argparse.ArgumentParser(prog="api.bfdd")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-config", help="bfdd.conf from the engine's [ha] and [links]")
    w.add_argument("--config", type=Path, required=True)
    w.add_argument("--output", type=Path, required=True)
    w.add_argument("--vtysh-user", help="also write vtysh.conf beside it, letting this user (the "
                   "engine's) drive bfdd without PAM")
    args = ap.parse_args(argv)
    try:
        text = unit_config(args.config)
    except BfddError as exc:
        print(f"xcast6-bfdd: {exc}", file=sys.stderr)
        return 2
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)            # bfdd reads it after dropping to the frr user; no secrets in it
    os.replace(tmp, args.output)
    if args.vtysh_user:
        # vtysh authenticates its caller: a user named "nopassword" in its vtysh.conf passes, any
        # other goes through PAM, whose account check cannot read /etc/shadow under the engine's
        # NoNewPrivileges (and /etc/frr is the frr group's only); the engine points vtysh here
        # (--config_dir) and reaches the vty socket through the frrvty group
        vconf = args.output.with_name("vtysh.conf")
        vconf.write_text("! written by xcast6-bfdd for the engine's vtysh\n"
                         f"username {args.vtysh_user} nopassword\n")
        os.chmod(vconf, 0o644)
    print(f"xcast6-bfdd: {args.output}: {text.count(' peer ')} session(s) from {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
