"""Engine pairs: BFD sessions that follow the engine's health, hold-down, SIGTERM drain.

:class:`HaController` samples the engine's health every ``ha.check_interval`` (the API's
readiness plus the checks of :func:`api.hastate.health_problems`), feeds :class:`HoldDown`,
and puts bfdd's sessions administratively up or down (:mod:`api.bfdd`).  bfdd's session state
(what the router sees) comes back over its control socket.  Both, with every transition, are
in ``/status`` (``ha``), ``/metrics`` (``xcast6_ha_*``) and the log.

SIGTERM: :meth:`HaController.drain` puts the sessions down first (the router gets AdminDown
and moves the traffic to the other engine within one BFD packet), waits ``ha.drain_time`` while
the workers go on forwarding what is still in flight, and only then does the daemon stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.bfdd import DIAGNOSTICS, Bfdd, BfddError, Peer
from api.hastate import ADMIN_DOWN, ADMIN_UP, HaConfig, HoldDown, health_problems

if TYPE_CHECKING:
    from api.state import EngineView

log = logging.getLogger("xcast6.ha")
BFD_STATES = ("adm-down", "down", "init", "up")
TRANSITIONS_KEPT = 32


SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40          # set by the kernel while the operational state is up


def link_oper_down(links: list[str]) -> list[str]:
    """The links among ``links`` that are missing, down, or not operationally up.

    SIOCGIFFLAGS on a socket of this thread's network namespace: cheap enough for every health
    sample (vlan/kernel.py's netlink dump is the full picture, far more than needed 10 times a
    second), and right in the namespace the engine runs in, which /sys/class/net is not for a
    thread that entered it with setns (sysfs shows the namespace it was mounted in).
    """
    down = []
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for link in links:
            try:
                req = struct.pack("16sH14x", link.encode()[:15], 0)
                flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
            except OSError:
                down.append(link)
                continue
            if not (flags & IFF_UP and flags & IFF_RUNNING):
                down.append(link)
    return down


class HaController:
    """One engine's side of an engine pair (see module doc)."""

    def __init__(self, cfg: HaConfig, peers: list[Peer], view: EngineView, ingress: list[str],
                 run_dir: Path) -> None:
        self.cfg = cfg
        self.view = view
        self.ingress = ingress
        self.hold = HoldDown(cfg.hold_down)
        self.applied = ADMIN_DOWN                        # what bfdd has been told
        self.problems: list[str] = ["starting"]
        self.sessions: dict[str, dict[str, Any]] = {
            p.link: {"link": p.link, "peer": p.peer, "local": p.local, "state": "adm-down",
                     "diagnostic": "ok", "since": time.time(), "up_transitions": 0,
                     "down_transitions": 0} for p in peers}
        self.transitions: deque[dict[str, Any]] = deque(maxlen=TRANSITIONS_KEPT)
        self.admin_changes = 0
        self.bfdd_restarts = 0
        self.bfdd = Bfdd(run_dir, peers, bfdd=cfg.bfdd, vtysh=cfg.vtysh, tx_ms=cfg.tx_interval_ms,
                         rx_ms=cfg.rx_interval_ms, multiplier=cfg.multiplier, on_state=self._bfd_state,
                         external=cfg.bfdd_mode == "external")
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start bfdd (sessions admin down) and the health loop."""
        await self.bfdd.start(self.cfg.start_timeout)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    # -- health -> admin state ------------------------------------------------------------
    def health(self) -> list[str]:
        """Why the engine must not take diverted traffic now ([] = healthy)."""
        ok, why = self.view.ready()
        st = self.view.sync.status()
        return health_problems(ready_reasons=[] if ok else why, route_count=st.route_count,
                               held_back=st.held_back, ingress_down=link_oper_down(self.ingress))

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("ha: health step failed")
            await asyncio.sleep(self.cfg.check_interval)

    async def step(self) -> None:
        """One sample: health -> hold-down -> bfdd (when the wanted admin state changed)."""
        if not self.bfdd.alive() and not self.hold.draining:
            await self._restart_bfdd()
        problems = self.health()
        if problems != self.problems:
            if problems:
                log.warning("ha: engine not healthy: %s", "; ".join(problems))
            else:
                log.info("ha: engine healthy (BFD admin up after %.1f s hold-down)", self.cfg.hold_down)
        self.problems = problems
        want = self.hold.feed(not problems, time.monotonic())
        await self._apply(want, "; ".join(problems) or "healthy for the hold-down time")

    async def _apply(self, want: str, why: str) -> None:
        async with self._lock:
            if want == self.applied:
                return
            try:
                await self.bfdd.set_admin(want == ADMIN_UP)
            except (BfddError, OSError) as exc:
                log.error("ha: cannot set BFD admin %s: %s", want, exc)
                return
            self.applied = want
            self.admin_changes += 1
            self._record("admin", want, why)
            log.warning("ha: BFD sessions administratively %s: %s", want, why)

    async def _restart_bfdd(self) -> None:
        log.error("ha: bfdd is not running: %s (sessions admin down until healthy for the hold-down)",
                  "reattaching to the one systemd restarts" if self.cfg.bfdd_mode == "external"
                  else "restarting it")
        # what the router sees is no longer known, and no bfdd speaks for us: not "up" in our view
        for peer in self.bfdd.peers:
            self._bfd_state(peer, "down", {"diagnostics": "bfdd not running"})
        await self.bfdd.stop()
        self.bfdd_restarts += 1
        self.applied = ADMIN_DOWN
        self.hold.restart(time.monotonic())
        try:
            await self.bfdd.start(self.cfg.start_timeout)
        except BfddError as exc:
            log.error("ha: %s", exc)
            await asyncio.sleep(1.0)

    # -- bfdd -> session state ------------------------------------------------------------
    def _bfd_state(self, peer: Peer, state: str, doc: dict[str, Any]) -> None:
        s = self.sessions[peer.link]
        raw = str(doc.get("diagnostics", 0) or 0)
        diag = DIAGNOSTICS.get(int(raw), raw) if raw.isdigit() else raw
        if state == s["state"]:
            return
        if state == "up":
            s["up_transitions"] += 1
        elif s["state"] == "up":
            s["down_transitions"] += 1
        s.update(state=state, diagnostic=diag, since=time.time())
        self._record("bfd", state, f"{peer.link} {peer.local} -> {peer.peer}: {diag}")
        log.warning("ha: BFD session %s (%s -> %s) %s (%s)", peer.link, peer.local, peer.peer, state, diag)

    def _record(self, kind: str, state: str, why: str) -> None:
        self.transitions.append({"ts": round(time.time(), 3), "kind": kind, "state": state, "why": why})

    # -- stop ---------------------------------------------------------------------------------
    async def drain(self) -> None:
        """SIGTERM: sessions down now, then wait ``drain_time`` for the router to move away."""
        self.hold.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        was_up = self.applied == ADMIN_UP
        await self._apply(ADMIN_DOWN, "draining (SIGTERM)")
        if was_up and self.cfg.drain_time:
            log.info("ha: draining %.1f s before stopping", self.cfg.drain_time)
            await asyncio.sleep(self.cfg.drain_time)

    async def stop(self) -> None:
        """Stop the loop and bfdd (after :meth:`drain` for a graceful stop)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.bfdd.stop()

    # -- reporting ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``ha`` object of ``/status``."""
        return {
            "admin": self.applied,
            "draining": self.hold.draining,
            "healthy": not self.problems,
            "problems": list(self.problems),
            "hold_down_s": self.cfg.hold_down,
            "hold_down_remaining_s": round(self.hold.hold_remaining(time.monotonic()), 3),
            "drain_time_s": self.cfg.drain_time,
            "timers": {"tx_ms": self.cfg.tx_interval_ms, "rx_ms": self.cfg.rx_interval_ms,
                       "multiplier": self.cfg.multiplier},
            "bfdd_running": self.bfdd.alive(),
            "bfdd_restarts": self.bfdd_restarts,
            "admin_changes": self.admin_changes,
            "sessions": [dict(s) for s in self.sessions.values()],
            "transitions": list(self.transitions),
        }
