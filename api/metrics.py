"""Prometheus text exposition (format 0.0.4), written directly: the engine's few metric
families do not justify a dependency and a second registry of state."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from api.state import EngineView

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
    counters = view.workers.counters()
    o.family(
        "xcast6_packets_total",
        "counter",
        "Packet counters by reason, summed over workers.",
        [({"reason": k}, v) for k, v in sorted(counters.items())],
    )
    h = view.workers.latency()
    o.lines.append("# HELP xcast6_latency_seconds Arrival-to-send latency of branched packets "
                   "(kernel arrival time on the engine link, queueing included, to the write of the copies).")
    o.lines.append("# TYPE xcast6_latency_seconds histogram")
    cum = 0
    for bound, c in zip(h.bounds_us, h.counts, strict=False):
        cum += c
        o.sample("xcast6_latency_seconds_bucket", {"le": _num(bound / 1e6)}, cum)
    o.sample("xcast6_latency_seconds_bucket", {"le": "+Inf"}, h.count)
    o.sample("xcast6_latency_seconds_sum", {}, h.sum_us / 1e6)
    o.sample("xcast6_latency_seconds_count", {}, h.count)
    ws = view.workers.workers()
    o.family(
        "xcast6_workers_configured", "gauge", "Configured packet workers.", [({}, view.workers.configured())]
    )
    o.family(
        "xcast6_worker_up",
        "gauge",
        "1 when the worker process runs.",
        [({"worker": str(w.index)}, int(w.state == "running")) for w in ws],
    )
    o.family(
        "xcast6_worker_restarts_total",
        "counter",
        "Worker restarts after a crash.",
        [({"worker": str(w.index)}, w.restarts) for w in ws],
    )
    o.family(
        "xcast6_worker_cpu_seconds_total",
        "counter",
        "Worker CPU time (user+system).",
        [({"worker": str(w.index)}, w.cpu_seconds) for w in ws if w.cpu_seconds is not None],
    )
    o.family(
        "xcast6_worker_resident_memory_bytes",
        "gauge",
        "Worker resident memory.",
        [({"worker": str(w.index)}, w.rss_bytes) for w in ws if w.rss_bytes is not None],
    )
    o.family(
        "xcast6_worker_context_switches_total",
        "counter",
        "Worker context switches.",
        [
            s
            for w in ws
            if w.ctx_switches_voluntary is not None
            for s in (
                ({"worker": str(w.index), "kind": "voluntary"}, w.ctx_switches_voluntary),
                ({"worker": str(w.index), "kind": "involuntary"}, w.ctx_switches_involuntary or 0),
            )
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
    if view.ha is not None:
        _ha(o, view.ha.status())
    return "\n".join(o.lines) + "\n"


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
