"""The pieces of the root-started bfdd unit (``xcast6-bfdd.service``), without root or FRR.

* api.bfdguard in lifeline mode: the process that connects is watched; its death (kill -9) kills
  the guarded command and the guard exits 0; closing the lifeline alone does not; READY=1 to
  systemd only once the command's sockets exist.
* api.bfdd write-config: bfdd.conf from an engine.toml (only [links] and [ha] read, no secrets).
* HoldDown.restart: a bfdd restarted under a healthy engine waits the hold-down again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from api.bfdd import BfddError, Peer, render_config, unit_config
from api.hastate import ADMIN_DOWN, ADMIN_UP, HoldDown

CHILD = "echo $$ > {d}/child.pid; {pre} exec sleep 600"


def _guard(d: Path, *extra: str, pre: str = "", env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.bfdguard", "--lifeline", str(d / "lifeline.sock"), *extra, "--",
         "sh", "-c", CHILD.format(d=d, pre=pre)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


def _engine(d: Path) -> subprocess.Popen[str]:
    """A stand-in engine: connects to the lifeline, says so, then waits (or closes it on input)."""
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "print('on', flush=True); sys.stdin.readline(); s.close(); print('closed', flush=True); "
            "sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code, str(d / "lifeline.sock")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "on"
    return p


def test_engine_death_kills_the_guarded_command(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    try:
        _wait_for(tmp_path / "lifeline.sock")
        _wait_for(tmp_path / "child.pid")
        child = int((tmp_path / "child.pid").read_text())
        assert oct((tmp_path / "lifeline.sock").stat().st_mode & 0o777) == "0o660"
        engine = _engine(tmp_path)
        time.sleep(0.2)
        assert guard.poll() is None and _alive(child)
        t0 = time.monotonic()
        engine.kill()                                   # kill -9 of the engine
        engine.wait()
        assert guard.wait(timeout=5) == 0               # Restart=always brings bfdd back
        assert time.monotonic() - t0 < 1.0
        assert not _alive(child)
        assert guard.stderr is not None
        assert f"engine pid {engine.pid} gone, bfdd killed" in guard.stderr.read()
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait()


def test_closing_the_lifeline_alone_keeps_the_command(tmp_path: Path) -> None:
    """The engine re-attaching (it closes and reopens its lifeline) must not kill bfdd."""
    guard = _guard(tmp_path)
    try:
        _wait_for(tmp_path / "child.pid")
        child = int((tmp_path / "child.pid").read_text())
        engine = _engine(tmp_path)
        assert engine.stdin is not None and engine.stdout is not None
        engine.stdin.write("\n")
        engine.stdin.flush()
        assert engine.stdout.readline().strip() == "closed"
        time.sleep(0.3)
        assert guard.poll() is None and _alive(child)
        engine.kill()                                   # still watched: its death counts
        engine.wait()
        assert guard.wait(timeout=5) == 0 and not _alive(child)
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait()


def test_sigterm_is_passed_on_and_the_commands_status_returned(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    _wait_for(tmp_path / "child.pid")
    child = int((tmp_path / "child.pid").read_text())
    guard.send_signal(signal.SIGTERM)
    # the command (here sleep) died of the SIGTERM: its status is the guard's (bfdd exits 0)
    assert guard.wait(timeout=5) == -signal.SIGTERM & 0xFF and not _alive(child)


def test_ready_only_once_the_sockets_exist(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    guard = _guard(tmp_path, "--ready", str(tmp_path), env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
                   pre=f"sleep 0.5; : > {tmp_path}/bfdd.sock; : > {tmp_path}/bfdd.vty;")
    try:
        t0 = time.monotonic()
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg and time.monotonic() - t0 >= 0.4
        assert (tmp_path / "bfdd.sock").exists() and (tmp_path / "bfdd.vty").exists()
    finally:
        guard.kill()
        guard.wait()
        notify.close()


def test_ready_timeout_fails_the_start(tmp_path: Path) -> None:
    guard = _guard(tmp_path, "--ready", str(tmp_path), "--ready-timeout", "0.5")
    assert guard.wait(timeout=10) != 0
    assert guard.stderr is not None and "did not open" in guard.stderr.read()


ENGINE_TOML = """
[links]
mode = "vlan"
trunk = "eth1"
[[links.map]]
router_if = "ae0.100"
vlan = 100
subnet = "2001:db8:f100::/64"
engine_addr = "2001:db8:f100::2"
router_addr = "2001:db8:f100::1"
[sync]
source = "snmpv3://engine@[2001:db8:f100::1]?auth_proto=SHA&priv_proto=AES"
[ha]
enabled = true
bfdd_mode = "external"
bfd_dir = "/run/xcast6-bfdd"
tx_interval_ms = 150
rx_interval_ms = 200
multiplier = 4
[[ha.session]]
link = "xc-v100"
local = "2001:db8:f100::2"
peer = "2001:db8:f100::1"
"""


def test_write_config_renders_the_engines_sessions(tmp_path: Path) -> None:
    """The secrets of [sync] are not needed (the unit has none); the sessions and timers are the
    engine's, every session down."""
    conf = tmp_path / "engine.toml"
    conf.write_text(ENGINE_TOML)
    assert unit_config(conf) == render_config([Peer("xc-v100", "2001:db8:f100::1", "2001:db8:f100::2")],
                                              150, 200, 4)
    out = tmp_path / "bfdd.conf"
    res = subprocess.run([sys.executable, "-m", "api.bfdd", "write-config", "--config", str(conf),
                          "--output", str(out), "--vtysh-user", "xcast6"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    assert "  shutdown" in out.read_text() and oct(out.stat().st_mode & 0o777) == "0o644"
    assert "username xcast6 nopassword" in (tmp_path / "vtysh.conf").read_text()


@pytest.mark.parametrize(("edit", "message"), [
    (("enabled = true", "enabled = false"), "[ha] is not enabled"),
    (("multiplier = 4", "multiplier = 1"), "ha.multiplier"),
    (('peer = "2001:db8:f100::1"', 'peer = "nowhere"'), "ha.session[0].peer"),
])
def test_write_config_refuses_what_the_engine_would(tmp_path: Path, edit: tuple[str, str],
                                                    message: str) -> None:
    conf = tmp_path / "engine.toml"
    conf.write_text(ENGINE_TOML.replace(*edit))
    with pytest.raises(BfddError, match=message.replace("[", r"\[").replace("]", r"\]")):
        unit_config(conf)


def test_hold_down_restarts_after_a_bfdd_restart() -> None:
    hd = HoldDown(hold_down=5.0)
    assert hd.feed(True, 0.0) == ADMIN_DOWN
    assert hd.feed(True, 5.0) == ADMIN_UP
    assert hd.restart(100.0) == ADMIN_DOWN              # bfdd came back under a healthy engine
    assert hd.feed(True, 101.0) == ADMIN_DOWN
    assert hd.hold_remaining(101.0) == pytest.approx(4.0)
    assert hd.feed(True, 105.0) == ADMIN_UP
    hd.feed(False, 106.0)
    assert hd.restart(107.0) == ADMIN_DOWN and hd.hold_remaining(107.0) == 0.0   # unhealthy: not counting



def _external_bfdd(d: Path) -> Any:
    """api.bfdd.Bfdd in external mode on ``d``, with a vtysh that always succeeds."""
    from api.bfdd import Bfdd

    (d / "bfdd.vty").touch()
    vtysh = d / "vtysh"
    vtysh.write_text("#!/bin/sh\nexit 0\n")
    vtysh.chmod(0o755)
    return Bfdd(d, [Peer("div0", "2001:db8::1", "2001:db8::2")], bfdd=Path("/nonexistent"),
                vtysh=vtysh, tx_ms=100, rx_ms=100, multiplier=3, on_state=lambda *_: None, external=True)


async def _fake_bfdd(d: Path) -> tuple[Any, list[Any]]:
    """A control socket that answers the subscription like bfdd ({"status":"ok"}); returns the
    server and its connections' writers."""
    import asyncio

    from api.bfdd import BMT_RESPONSE, frame

    conns: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(16)
        writer.write(frame(b'{"status":"ok"}', BMT_RESPONSE))
        await writer.drain()
        conns.append(writer)

    (d / "bfdd.sock").unlink(missing_ok=True)
    return await asyncio.start_unix_server(serve, str(d / "bfdd.sock")), conns


def test_a_reset_control_socket_counts_as_bfdd_gone_and_the_engine_reattaches(tmp_path: Path) -> None:
    """external mode: a bfdd that goes away with bytes of ours unread resets the control
    connection (ECONNRESET, not EOF).  That is "bfdd gone" like a close: not alive, stop() works,
    the next start() attaches to the next bfdd.  (CI, booted pair test: the reset ended the watch
    with an exception that every later stop() raised again, so the engine never re-attached.)"""
    import asyncio

    b = _external_bfdd(tmp_path)

    async def scenario() -> None:
        import threading

        from api.bfdd import BMT_RESPONSE, frame

        # a raw socket (an asyncio server would read all 16 bytes into its buffer): 8 bytes of
        # the subscription read, 8 left in the kernel's queue when it closes
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(tmp_path / "bfdd.sock"))
        srv.listen(1)
        die = threading.Event()

        def bfdd() -> None:
            conn, _ = srv.accept()
            conn.recv(8)
            conn.sendall(frame(b'{"status":"ok"}', BMT_RESPONSE))
            die.wait(10)
            conn.close()                # bfdd gone, 8 bytes of ours unread: ECONNRESET here
            srv.close()

        t = threading.Thread(target=bfdd)
        t.start()
        await b.start(timeout=5)
        assert b.alive()
        die.set()
        t.join(5)
        for _ in range(100):
            if not b.alive():
                break
            await asyncio.sleep(0.02)
        assert not b.alive()
        await b.stop()                  # does not raise the watch's error
        await b.stop()                  # nor later (the re-attach loop calls it each time)
        (tmp_path / "bfdd.sock").unlink()
        srv2, conns = await _fake_bfdd(tmp_path)             # the bfdd systemd restarts
        await b.start(timeout=5)
        assert b.alive() and len(conns) == 1
        await b.stop()
        srv2.close()

    asyncio.run(scenario())


def test_attach_skips_a_dying_bfdd_whose_listener_still_takes_connections(tmp_path: Path) -> None:
    """A killed bfdd closes its sockets one by one: when its control connection to the engine goes
    first, the engine re-attaches at once, and its listener can still take that connection for a
    moment (more so on a busy machine) -- then closes with it unanswered.  The engine must not
    count that as attached (it did: the watch died at once, the lifeline went to the exiting guard,
    the engine stayed on a dead bfdd); it waits for the bfdd that answers."""
    import asyncio

    b = _external_bfdd(tmp_path)

    async def scenario() -> None:
        dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dying.bind(str(tmp_path / "bfdd.sock"))
        dying.listen(4)                 # takes connections, never accepts or answers
        attach = asyncio.get_running_loop().create_task(b.start(timeout=10))
        await asyncio.sleep(0.3)
        assert not attach.done()        # not attached to a bfdd that does not answer
        dying.close()                   # the dying bfdd's listener goes, with our connection
        await asyncio.sleep(0.3)
        srv, conns = await _fake_bfdd(tmp_path)              # the bfdd systemd restarts
        await asyncio.wait_for(attach, 5)
        assert len(conns) == 1
        await asyncio.sleep(0.3)
        assert b.alive()                # attached to the live one, for good
        await b.stop()
        srv.close()

    asyncio.run(scenario())
