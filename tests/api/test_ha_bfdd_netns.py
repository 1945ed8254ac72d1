"""HaController against real FRR bfdd on both ends, in two network namespaces (no engine).

The engine's side is api/ha.py with a stand-in EngineView whose health the test switches; the
router's side is a plain bfdd whose view of the session the test reads (vtysh JSON).  Needs root
and FRR (scripts/bootstrap.sh installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from api.bfdd import Peer, render_config
from api.ha import HaController
from api.hastate import HaConfig
from lab import netns

BFDD = Path("/usr/lib/frr/bfdd")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
ENGINE_ADDR, ROUTER_ADDR = "2001:db8:ffb::2", "2001:db8:ffb::1"


@dataclass
class FakeSync:
    routes: int = 10

    def status(self) -> Any:
        return type("S", (), {"route_count": self.routes, "held_back": None})()


@dataclass
class FakeView:
    healthy: bool = False
    sync: FakeSync = field(default_factory=FakeSync)

    def ready(self) -> tuple[bool, list[str]]:
        return (True, []) if self.healthy else (False, ["0 of 1 workers running"])


@pytest.fixture
def bfd_dir() -> Iterator[Path]:
    """A directory the frr user can reach (pytest's tmp_path sits under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="xcast6-hb-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pair(bfd_dir: Path) -> Iterator[tuple[str, str, Path]]:
    if not BFDD.exists() or shutil.which("vtysh") is None:
        pytest.fail("FRR's bfdd/vtysh missing: run scripts/bootstrap.sh (apt-get install frr)")
    tag = f"hb{os.getpid() % 10000}"
    eng, rtr = f"{tag}-e", f"{tag}-r"
    for ns in (eng, rtr):
        netns.add_ns(ns)
    rdir = bfd_dir / "router"
    rdir.mkdir()
    proc = None
    try:
        netns.veth(eng, "div0", rtr, "eng0", 1500)
        netns.ip(eng, "addr", "add", f"{ENGINE_ADDR}/64", "dev", "div0", "nodad")
        netns.ip(rtr, "addr", "add", f"{ROUTER_ADDR}/64", "dev", "eng0", "nodad")
        conf = render_config([Peer("eng0", ENGINE_ADDR, ROUTER_ADDR)], 100, 100, 3)
        conf = conf.replace("  shutdown\n", "")       # the router's side is always on
        (rdir / "bfdd.conf").write_text(conf)
        subprocess.run(["chown", "-R", "frr:frr", str(rdir)], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", rtr, str(BFDD), "-f", str(rdir / "bfdd.conf"),
                                 "--vty_socket", str(rdir), "--bfdctl", str(rdir / "bfdd.sock"),
                                 "-i", str(rdir / "bfdd.pid"), "-z", str(rdir / "zserv.api")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield eng, rtr, rdir
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)
        for ns in (eng, rtr):
            netns.del_ns(ns)


def router_state(rdir: Path) -> str:
    out = subprocess.run(["vtysh", "--vty_socket", str(rdir), "-c", "show bfd peers json"],
                         capture_output=True, text=True).stdout
    try:
        peers = json.loads(out)
    except ValueError:
        return "none"
    return str(peers[0]["status"]) if peers else "none"


def wait_router(rdir: Path, state: str, timeout: float) -> float:
    t0 = time.monotonic()
    while router_state(rdir) != state:
        assert time.monotonic() - t0 < timeout, f"router sees {router_state(rdir)}, want {state}"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_session_follows_health_hold_down_and_drain(pair: tuple[str, str, Path], bfd_dir: Path) -> None:
    eng, _rtr, rdir = pair
    view = FakeView()
    cfg = HaConfig(enabled=True, hold_down=1.0, drain_time=0.5, check_interval=0.05)
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        # bfdd is forked from this thread, so it lives in the engine namespace
        with netns.in_netns(eng):
            ha = HaController(cfg, [Peer("div0", ROUTER_ADDR, ENGINE_ADDR)], view,  # type: ignore[arg-type]
                              ["div0"], bfd_dir / "engine")
            box["ha"] = ha
            loop.run_until_complete(ha.start())
            started.set()
            loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(15), "bfdd did not start"
    ha: HaController = box["ha"]

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

    try:
        # not ready: the session stays administratively down, the router never sees it up
        time.sleep(1.5)
        assert router_state(rdir) in ("down", "none", "init") and ha.applied == "down"
        # healthy: up after the 1 s hold-down (plus BFD's slow start)
        view.healthy = True
        t_up = wait_router(rdir, "up", timeout=10)
        assert t_up >= 0.9 and ha.status()["sessions"][0]["state"] == "up"
        # a worker dies: down at once (AdminDown reaches the router within a packet or two)
        view.healthy = False
        assert wait_router(rdir, "down", timeout=2) < 0.5
        assert ha.status()["problems"] == ["0 of 1 workers running"]
        # a flap shorter than the hold-down does not bring it back
        view.healthy = True
        time.sleep(0.5)
        view.healthy = False
        time.sleep(0.3)
        assert router_state(rdir) == "down"
        view.healthy = True
        wait_router(rdir, "up", timeout=10)
        # SIGTERM path: drain takes it down first, then waits drain_time
        t0 = time.monotonic()
        call(ha.drain())
        assert time.monotonic() - t0 >= 0.5 and router_state(rdir) == "down"
        kinds = [(x["kind"], x["state"]) for x in ha.status()["transitions"]]
        assert ("admin", "up") in kinds and ("admin", "down") in kinds
    finally:
        call(ha.stop())
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
    assert not ha.bfdd.alive()


def test_external_bfdd_is_driven_not_started(pair: tuple[str, str, Path], bfd_dir: Path) -> None:
    """bfdd_mode = "external": a bfdd someone else started (here: the test, as a root-started
    unit would) is attached to, forced admin down at attach, then driven by the engine's health."""
    eng, _rtr, rdir = pair
    edir = bfd_dir / "engine-ext"
    edir.mkdir()
    (edir / "bfdd.conf").write_text(render_config([Peer("div0", ROUTER_ADDR, ENGINE_ADDR)], 100, 100, 3)
                                    .replace("  shutdown\n", ""))   # left up by an "earlier run"
    subprocess.run(["chown", "-R", "frr:frr", str(edir)], check=True)
    ext = subprocess.Popen(["ip", "netns", "exec", eng, str(BFDD), "-f", str(edir / "bfdd.conf"),
                            "--vty_socket", str(edir), "--bfdctl", str(edir / "bfdd.sock"),
                            "-i", str(edir / "bfdd.pid"), "-z", str(edir / "zserv.api")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_router(rdir, "up", timeout=10)          # the stale "up" of an earlier run
        view = FakeView()
        cfg = HaConfig(enabled=True, hold_down=0.5, drain_time=0.2, check_interval=0.05,
                       bfdd_mode="external", bfd_dir=edir)
        loop = asyncio.new_event_loop()
        ha = HaController(cfg, [Peer("div0", ROUTER_ADDR, ENGINE_ADDR)], view,  # type: ignore[arg-type]
                          ["lo"], edir)
        t = threading.Thread(target=loop.run_forever, daemon=True)
        t.start()

        def call(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

        call(ha.start())
        assert wait_router(rdir, "down", timeout=2) < 1.0      # forced down at attach
        view.healthy = True
        wait_router(rdir, "up", timeout=10)
        call(ha.drain())
        assert router_state(rdir) == "down"
        call(ha.stop())
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        assert ext.poll() is None, "the engine stopped a bfdd it does not own"
    finally:
        ext.terminate()
        ext.wait(5)
