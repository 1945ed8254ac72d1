"""Prometheus text exposition (format 0.0.4), written directly: the engine's few metric
families do not justify a dependency and a second registry of state."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from api.state import EngineView, SyncStatus
from engine.model import EngineLink

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
        suffix: str = "",
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name + suffix, labels, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")


def render(view: EngineView) -> str:
    """All engine metrics as Prometheus text."""
    o = _Out()
    st = view.sync.status()
    ready, _ = view.ready()
    o.family("xcast6_build_info", "gauge", "Engine version.", [({"version": view.version}, 1)])
    o.family("xcast6_uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, view.uptime())])
    o.family("xcast6_ready", "gauge", "1 when a table is loaded and all workers run.", [({}, int(ready))])
    o.family("xcast6_routes", "gauge", "Routes in the engine forwarding table.", [({}, st.route_count)])
    o.family("xcast6_fib_generation", "gauge", "Forwarding table generation.", [({}, st.generation)])
    states = ("starting", "idle", "fetching", "applying", "held", "error")
    o.family(
        "xcast6_sync_state",
        "gauge",
        "Current sync state (1 = in that state).",
        [({"state": s}, int(st.state == s)) for s in states],
    )
    o.family(
        "xcast6_sync_last_success_timestamp_seconds",
        "gauge",
        "UNIX time of the last applied sync.",
        [({}, st.last_success or 0)],
    )
    o.family(
        "xcast6_sync_last_duration_seconds",
        "gauge",
        "Duration of the last sync attempt.",
        [({}, st.last_duration_s or 0)],
    )
    o.family(
        "xcast6_sync_held_back_routes",
        "gauge",
        "Routes a held-back sync would remove/add/change (safety valve).",
        [({"change": k}, v) for k, v in (st.held_back or {"added": 0, "removed": 0, "changed": 0}).items()],
    )
    _sync_counters(o, st)
    _packet_families(o, view.workers.counters())
    h = view.workers.latency()
    o.lines.append("# HELP xcast6_latency_seconds Arrival-to-send latency of branched packets "
                   "(kernel arrival time on the engine link, queueing included, to the write of the copies).")
    o.lines.append("# TYPE xcast6_latency_seconds histogram")
    # every bucket is exported from the start (zeros included); le = at or below the bound
    cum = 0
    for bound, c in zip(h.bounds_us, h.counts, strict=False):
        cum += c
        o.sample("xcast6_latency_seconds_bucket", {"le": _num(bound / 1e6)}, cum)
    o.sample("xcast6_latency_seconds_bucket", {"le": "+Inf"}, h.count)
    o.sample("xcast6_latency_seconds_sum", {}, h.sum_us / 1e6)
    o.sample("xcast6_latency_seconds_count", {}, h.count)
    ws = view.workers.workers()
    configured = view.workers.configured()
    o.family("xcast6_workers_configured", "gauge", "Configured packet workers.", [({}, configured)])
    # One series per configured worker from the start: a worker that is down (or not forked yet)
    # reports 0, it does not vanish from graphs and alerts.
    by_index = {w.index: w for w in ws}
    rows = [(str(i), by_index.get(i)) for i in sorted(set(range(configured)) | set(by_index))]
    o.family("xcast6_worker_up", "gauge", "1 when the worker process runs.",
             [({"worker": i}, int(w is not None and w.state == "running")) for i, w in rows])
    o.family("xcast6_worker_restarts_total", "counter", "Worker restarts after a crash.",
             [({"worker": i}, w.restarts if w else 0) for i, w in rows])
    o.family("xcast6_worker_cpu_seconds_total", "counter", "Worker CPU time (user+system).",
             [({"worker": i}, (w.cpu_seconds if w else None) or 0) for i, w in rows])
    o.family("xcast6_worker_resident_memory_bytes", "gauge", "Worker resident memory (0 while down).",
             [({"worker": i}, (w.rss_bytes if w else None) or 0) for i, w in rows])
    o.family(
        "xcast6_worker_context_switches_total",
        "counter",
        "Worker context switches.",
        [
            ({"worker": i, "kind": kind}, (getattr(w, f"ctx_switches_{kind}") if w else None) or 0)
            for i, w in rows
            for kind in ("voluntary", "involuntary")
        ],
    )
    # Every state is always exported (0 included) so a graph or alert never sees a series vanish;
    # no_router_mac = the link is up but the router's MAC is not learned: its copies are dropped
    # (counted as egress_no_mac) until neighbour discovery resolves it.
    by_state = dict.fromkeys(("up", "no_router_mac", "down"), 0)
    for link in view.links.links():
        state = "down" if not link.oper_up else "no_router_mac" if link.router_mac is None else "up"
        by_state[state] += 1
    mode = view.links.mode()
    o.family(
        "xcast6_links",
        "gauge",
        "Engine links by state (up, no_router_mac, down).",
        [({"mode": mode, "state": state}, n) for state, n in by_state.items()],
    )
    _link_traffic(o, view.links.links())
    if view.ha is not None:
        _ha(o, view.ha.status())
    return "\n".join(o.lines) + "\n"


def _packet_families(o: _Out, counters: dict[str, int]) -> None:
    """The worker counters as families with units (engine/dataplane/families.py says which is
    which); every known counter is exported from the start, 0 while no worker has run."""
    from engine.dataplane import families as fam
    from engine.dataplane.counters import counter_names

    grouped = fam.group(dict.fromkeys(counter_names(), 0) | counters)
    for family in fam.FAMILIES:
        members = grouped[family]
        if not members:
            continue
        o.family(
            fam.PREFIX + family.name,
            "counter",
            family.help,
            [({family.label: str(lab)} if family.label else {}, v)
             for lab, v in sorted(members.items(), key=lambda m: str(m[0]))],
        )


#: the triggers a sync run can have (sync/service.py request_resync callers)
SYNC_TRIGGERS = ("startup", "poll", "change", "manual", "reload")


def _sync_counters(o: _Out, st: SyncStatus) -> None:
    """Sync runs by source and trigger, failures by source and reason, runs by outcome; the
    current source's series exist from the start (zeros)."""
    from sync.service import FAILURE_REASONS

    attempts = {(st.source, t): 0 for t in SYNC_TRIGGERS} | st.attempts
    failures = {(st.source, r): 0 for r in FAILURE_REASONS} | st.failures
    o.family("xcast6_sync_attempts_total", "counter",
             "Sync runs started (router fetches), by source and trigger.",
             [({"source": src, "trigger": t}, n) for (src, t), n in sorted(attempts.items())])
    o.family("xcast6_sync_failures_total", "counter", "Sync runs that failed, by source and reason "
             "(timeout, unreachable, auth, bad_reply, kernel_refused, internal).",
             [({"source": src, "reason": r}, n) for (src, r), n in sorted(failures.items())])
    outcomes = dict.fromkeys(("applied", "unchanged", "held", "failed"), 0) | st.outcomes
    o.family("xcast6_sync_runs_total", "counter", "Finished sync runs by outcome.",
             [({"outcome": k}, v) for k, v in outcomes.items()])


SYS_NET = Path("/sys/class/net")


def _link_traffic(o: _Out, links: list[EngineLink], sys_net: Path = SYS_NET) -> None:
    """Each engine link's kernel interface counters (traffic graphs per link): what arrived from
    the router (rx: diverted packets) and what the engine sent back (tx: copies, X2U).  Read at
    scrape time from sysfs; a link whose counters cannot be read reports 0 rather than vanish."""

    def read(ifname: str, name: str) -> int:
        try:
            return int((sys_net / ifname / "statistics" / name).read_text())
        except (OSError, ValueError):
            return 0

    rows = [(lk.engine_ifname, lk.router_ifname) for lk in links]
    for unit, title in (("bytes", "Bytes"), ("packets", "Packets")):
        o.family(
            f"xcast6_link_{unit}_total",
            "counter",
            f"{title} on each engine link's kernel interface, by direction (rx: from the router).",
            [({"link": link, "router_if": rif, "dir": d}, read(link, f"{d}_{unit}"))
             for link, rif in rows for d in ("rx", "tx")],
        )


def _ha(o: _Out, ha: dict[str, Any]) -> None:
    """Engine pairs ([ha]): every state exported (0 included), so no series vanishes."""
    o.family("xcast6_ha_admin_up", "gauge",
             "1 while the engine holds its BFD sessions administratively up (healthy, not draining).",
             [({}, int(ha["admin"] == "up"))])
    o.family("xcast6_ha_healthy", "gauge", "1 while the engine's health checks pass.",
             [({}, int(ha["healthy"]))])
    o.family("xcast6_ha_draining", "gauge", "1 while a SIGTERM drain is under way.",
             [({}, int(ha["draining"]))])
    o.family("xcast6_ha_hold_down_remaining_seconds", "gauge",
             "Seconds of health still needed before the sessions go up (hold-down).",
             [({}, ha["hold_down_remaining_s"])])
    o.family("xcast6_ha_admin_changes_total", "counter", "BFD admin state changes made by the engine.",
             [({}, ha["admin_changes"])])
    o.family("xcast6_ha_bfdd_restarts_total", "counter", "Times the engine restarted its bfdd.",
             [({}, ha["bfdd_restarts"])])
    o.family("xcast6_bfd_session_state", "gauge", "BFD session state as bfdd sees it (1 = in that state).",
             [({"link": s["link"], "peer": s["peer"], "state": st}, int(s["state"] == st))
              for s in ha["sessions"] for st in ("adm-down", "down", "init", "up")])
    o.family("xcast6_bfd_session_transitions_total", "counter",
             "BFD session transitions to up / from up to down.",
             [({"link": s["link"], "peer": s["peer"], "to": to}, s[f"{to}_transitions"])
              for s in ha["sessions"] for to in ("up", "down")])
