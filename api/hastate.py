"""Engine pairs: the pure part -- the ``[ha]`` section, the health rule, and the hold-down.

The router selects an engine as divert next hop only while the engine's BFD session is up
(Junos ``qualified-next-hop ... bfd-liveness-detection``, Cisco PBR/ABF tracking, the lab's
bfdd tracker).  The engine therefore holds its session *administratively down* whenever it
could not forward correctly, and up only when it can -- BFD follows the engine's health, not
just the host's.  This module decides; :mod:`api.ha` drives bfdd with the decision.

Decisions (:class:`HoldDown`):

* unhealthy -> admin down at once (a packet diverted to a sick engine is lost);
* healthy again -> admin up only after ``hold_down`` seconds of *uninterrupted* health, so an
  engine whose worker crashes every few seconds does not pull traffic back and forth;
* draining (SIGTERM) -> down for good, whatever the health.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.settings import (
    Field,
    Spec,
    absolute_path,
    boolean,
    check_table,
    choice,
    ifname,
    ifname_list,
    integer,
    number,
    unicast6,
)

ADMIN_UP = "up"
ADMIN_DOWN = "down"


@dataclass(frozen=True)
class HaConfig:
    """``[ha]``: BFD towards the router on the divert link(s), hold-down, drain."""

    enabled: bool = False
    links: tuple[str, ...] = ()          # [[links.map]] link names whose router_addr is a BFD peer
    # explicit sessions (link, local, peer): for a divert link that is no [[links.map]] entry,
    # e.g. the ingress VLAN in vlan mode
    sessions: tuple[tuple[str, str, str], ...] = ()
    # "spawn": the daemon runs its own bfdd (under api.bfdguard); "external": a bfdd started by
    # someone else (e.g. a root-started unit bound to the engine's) with its vty and control
    # sockets in bfd_dir, sessions configured administratively down; the daemon only drives it
    bfdd_mode: str = "spawn"
    bfd_dir: Path | None = None          # external: the directory of bfdd.vty and bfdd.sock
    bfdd: Path = Path("/usr/lib/frr/bfdd")
    vtysh: Path = Path("/usr/bin/vtysh")
    tx_interval_ms: int = 100            # RFC 5880 DesiredMinTxInterval
    rx_interval_ms: int = 100            # RFC 5880 RequiredMinRxInterval
    multiplier: int = 3                  # detection time = multiplier x the slower interval
    hold_down: float = 5.0               # seconds of uninterrupted health before admin up
    drain_time: float = 2.0              # SIGTERM: seconds between admin down and stopping
    check_interval: float = 0.1          # how often the health is sampled
    # how long the daemon waits for bfdd's sockets (its own bfdd at start or restart, or the
    # external unit's): a deadline, not a delay; a loaded or emulated host starts bfdd slowly
    start_timeout: float = 10.0

    def summary(self) -> dict[str, Any]:
        """A JSON-able view (for logs and ``config check``)."""
        return {
            "enabled": self.enabled,
            "links": list(self.links),
            "sessions": [{"link": a, "local": b, "peer": c} for a, b, c in self.sessions],
            "bfdd_mode": self.bfdd_mode,
            "bfd_dir": None if self.bfd_dir is None else str(self.bfd_dir),
            "bfdd": str(self.bfdd),
            "vtysh": str(self.vtysh),
            "tx_interval_ms": self.tx_interval_ms,
            "rx_interval_ms": self.rx_interval_ms,
            "multiplier": self.multiplier,
            "hold_down": self.hold_down,
            "drain_time": self.drain_time,
            "check_interval": self.check_interval,
            "start_timeout": self.start_timeout,
        }


HA_KEYS: Spec = {
    "enabled": Field(boolean, "enabled"),
    "links": Field(ifname_list, "links"),
    "bfdd_mode": Field(choice("spawn", "external"), "bfdd_mode"),
    "bfd_dir": Field(absolute_path, "bfd_dir"),
    "bfdd": Field(absolute_path, "bfdd"),
    "vtysh": Field(absolute_path, "vtysh"),
    # bfdd's own limits (10..60000 ms, multiplier 2..255: FRR's bfdd CLI ranges)
    "tx_interval_ms": Field(integer(10, 60000, "integer number of milliseconds"), "tx_interval_ms"),
    "rx_interval_ms": Field(integer(10, 60000, "integer number of milliseconds"), "rx_interval_ms"),
    "multiplier": Field(integer(2, 255, "integer"), "multiplier"),
    "hold_down": Field(number(minimum=0, maximum=3600), "hold_down"),
    "drain_time": Field(number(minimum=0, maximum=600), "drain_time"),
    "check_interval": Field(number(minimum=0.01, maximum=10), "check_interval"),
    "start_timeout": Field(number(minimum=1, maximum=600), "start_timeout"),
}


SESSION_KEYS: Spec = {
    "link": Field(ifname, "link"),
    "local": Field(unicast6, "local"),
    "peer": Field(unicast6, "peer"),
}


def _sessions(raw: object, where: str, problems: list[str]) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(raw, list):
        problems.append(f"{where}.session: must be a list of tables ([[{where}.session]])")
        return ()
    out = []
    for i, item in enumerate(raw):
        at = f"{where}.session[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a table with link, local, peer")
            continue
        v = check_table(item, SESSION_KEYS, f"{at}.", problems)
        missing = [k for k in SESSION_KEYS if k not in item]
        if missing:
            problems.append(f"{at}: missing {', '.join(missing)}")
        elif len(v) == 3:
            out.append((v["link"], str(v["local"]), str(v["peer"])))
    return tuple(out)


def link_ends(entries: Iterable[Any]) -> dict[str, tuple[str | None, str | None]]:
    """Each ``[[links.map]]`` entry's link -> (engine_addr, router_addr): the ends a BFD session on
    that link would have (``parse_ha``'s ``link_addrs``)."""
    return {m.link: (None if m.engine_addr is None else str(m.engine_addr),
                     None if m.router_addr is None else str(m.router_addr))
            for m in entries if m.link}


def parse_ha(raw: Mapping[str, Any], link_addrs: Mapping[str, tuple[str | None, str | None]],
             where: str = "ha") -> tuple[HaConfig | None, list[str]]:
    """Validate ``[ha]``; ``link_addrs`` maps each ``[[links.map]]`` link to (engine_addr,
    router_addr), which name the BFD session's two ends.  (config, []) or (None, problems)."""
    problems: list[str] = []
    raw = dict(raw)
    sessions = _sessions(raw.pop("session"), where, problems) if "session" in raw else ()
    values = check_table(raw, HA_KEYS, f"{where}.", problems)
    cfg = HaConfig(**values, sessions=sessions) if not problems else None
    if cfg is not None and cfg.enabled:
        if cfg.bfdd_mode == "external" and cfg.bfd_dir is None:
            problems.append(f"{where}.bfd_dir: missing (bfdd_mode = \"external\": the directory of "
                            "the bfdd's bfdd.vty and bfdd.sock)")
        if not cfg.links and not cfg.sessions:
            problems.append(f"{where}.links: missing (the divert link(s) BFD runs on, e.g. "
                            f"[\"{next(iter(link_addrs), 'to-router')}\"], or [[{where}.session]] tables)")
        for link in cfg.links:
            if link not in link_addrs:
                known = ", ".join(sorted(link_addrs)) or "none"
                problems.append(f"{where}.links: {link!r} is no [[links.map]] link (known: {known})")
            elif None in link_addrs[link]:
                problems.append(f"{where}.links: {link!r} needs engine_addr and router_addr in its "
                                "[[links.map]] entry (the two ends of the BFD session)")
    return (None, problems) if problems else (cfg, [])


@dataclass
class HoldDown:
    """Health samples in, the admin state the BFD session must have out (see module doc)."""

    hold_down: float
    state: str = ADMIN_DOWN
    draining: bool = False
    healthy_since: float | None = None
    transitions: int = 0
    _was_healthy: bool = field(default=False, repr=False)

    def feed(self, healthy: bool, now: float) -> str:
        """One health sample at monotonic time ``now``; returns the admin state wanted."""
        if healthy and not self._was_healthy:
            self.healthy_since = now
        if not healthy:
            self.healthy_since = None
        self._was_healthy = healthy
        want = ADMIN_DOWN
        if (healthy and not self.draining and self.healthy_since is not None
                and now - self.healthy_since >= self.hold_down):
            want = ADMIN_UP
        if want != self.state:
            self.state = want
            self.transitions += 1
        return self.state

    def drain(self) -> str:
        """SIGTERM: down now and for good."""
        self.draining = True
        if self.state != ADMIN_DOWN:
            self.state = ADMIN_DOWN
            self.transitions += 1
        return self.state

    def restart(self, now: float) -> str:
        """bfdd was restarted under the engine: down, and the hold-down counts from ``now`` again
        (a bfdd that crash-loops must not pull the traffic back at every start)."""
        if self.state != ADMIN_DOWN:
            self.state = ADMIN_DOWN
            self.transitions += 1
        self.healthy_since = now if self._was_healthy else None
        return self.state

    def hold_remaining(self, now: float) -> float:
        """Seconds until a healthy engine may go up (0 when up, or unhealthy: not counting)."""
        if self.state == ADMIN_UP or self.healthy_since is None or self.draining:
            return 0.0
        return max(0.0, self.hold_down - (now - self.healthy_since))


def health_problems(*, ready_reasons: list[str], route_count: int, held_back: Mapping[str, int] | None,
                    ingress_down: list[str]) -> list[str]:
    """Why the engine must not be a divert next hop now ([] = healthy).

    ``ready_reasons`` is the API's readiness (table loaded, every worker running); on top of it:
    an empty serving table, the safety valve holding back an empty table from the router (the
    router says it has no routes: whatever the engine serves is stale), an ingress link down.
    """
    why = list(ready_reasons)
    if route_count == 0 and not any("table" in r for r in why):
        why.append("the serving table is empty")
    if held_back is not None and route_count and held_back.get("removed", 0) >= route_count \
            and not held_back.get("added", 0):
        why.append("the safety valve holds back an empty table from the router")
    for link in ingress_down:
        why.append(f"ingress link {link} is down")
    return why
