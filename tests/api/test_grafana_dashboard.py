"""The Grafana dashboard (api/grafana/xcast6-engine.json) against what /metrics exports, without
root: every panel query must parse (Debian's ``promtool check rules``), and every metric, label
matcher and grouping label it names must exist in the engine's own exposition (``api.metrics.render``
of a view with a link and an engine pair, so every family has series).  A panel naming a metric,
label or label value that /metrics does not export would graph nothing, silently; here it fails.
tests/lab/test_dashboard.py evaluates the same queries on a real Prometheus scraping the lab."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from api.linkview import LinkView
from api.metrics import render
from api.state import EngineView, StaticSync
from engine.dataplane import families
from engine.dataplane.supervisor import WorkerSupervisor
from engine.forwarding.fib import Fib
from engine.model import EngineLink, LinkMap, Snapshot, ip6

DASHBOARD = Path(__file__).resolve().parents[2] / "api" / "grafana" / "xcast6-engine.json"
#: labels Prometheus adds to every scraped series (target labels), not the engine
TARGET_LABELS = frozenset({"instance", "job"})
#: what Grafana substitutes before the query reaches Prometheus
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "30s", "$instance": ".*"}
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                      "and", "or", "unless", "inf", "nan"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: aggregation operators: followed by ``by (...)`` as often as by ``(``
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile"})


class _Ha:
    """An engine pair's status as HaController reports it, so the [ha] families have series."""

    def status(self) -> dict[str, Any]:
        return {"admin": "up", "healthy": True, "draining": False, "hold_down_remaining_s": 0.0,
                "admin_changes": 1, "bfdd_restarts": 0,
                "sessions": [{"link": "xc-1", "peer": "2001:db8:e1::1", "state": "up",
                              "up_transitions": 1, "down_transitions": 0}]}


class _TwoWorkers(WorkerSupervisor):
    """Two configured workers, none started: their series exist (zeros), as in a real engine."""

    def configured(self) -> int:
        return 2


def exposition() -> str:
    """/metrics of an engine with two workers, one link and an engine pair (no root: nothing is
    started)."""
    fib = Fib()
    link = EngineLink("ge-0/0/1.0", "xc-1", 7, 101, ip6("2001:db8:e1::2"), ip6("2001:db8:e1::1"),
                      bytes(6), bytes(6))
    view = EngineView(fib=fib, sync=StaticSync(fib, Snapshot([], [], "static")), workers=_TwoWorkers(None),
                      links=LinkView("vlan", LinkMap([link])), version="t")
    view.ha = _Ha()     # type: ignore[assignment]
    return render(view)


@dataclass
class Exported:
    """Sample names with their label names and values, as /metrics writes them."""

    labels: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set)))

    @classmethod
    def parse(cls, text: str) -> Exported:
        out = cls()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+", line)
            assert m, line
            series = out.labels[m.group(1)]
            for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""):
                series[k].add(v)
        return out


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|=~|!~|!=|==|>=|<=|[A-Za-z_:][\w:]*|\d+(?:\.\d+)?[smhdwy]?|\S')


@dataclass
class Query:
    """What one PromQL expression names: metrics with their label matchers, grouping labels."""

    metrics: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, expr: str) -> Query:
        toks = _TOKEN.findall(expr)
        q = cls()
        i = 0
        while i < len(toks):
            t, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
            if t == "[":                                   # a range or subquery: no names inside
                i = toks.index("]", i) + 1
                continue
            if t in GROUPING and nxt == "(":
                end = toks.index(")", i)
                q.grouping |= {x for x in toks[i + 2 : end] if x != ","}
                i = end + 1
                continue
            name = re.fullmatch(r"[A-Za-z_:][\w:]*", t) and t.lower() not in KEYWORDS | AGGREGATIONS
            if name and nxt != "(":
                matchers: list[tuple[str, str, str]] = []
                i += 1
                if nxt == "{":
                    end = toks.index("}", i)
                    inner = [x for x in toks[i + 1 : end] if x != ","]
                    matchers = [(inner[k], inner[k + 1], inner[k + 2][1:-1]) for k in range(0, len(inner), 3)]
                    i = end + 1
                q.metrics.append((t, matchers))
                continue
            i += 1
        return q


def problems(doc: dict[str, Any], exported: Exported) -> list[str]:
    """Every way the dashboard's queries disagree with ``exported`` (empty: none)."""
    out: list[str] = []
    for p in doc["panels"]:
        for t in p.get("targets", []):
            where = f"panel {p['title']!r} {t['refId']}"
            q = Query.read(t["expr"])
            if not q.metrics:
                out.append(f"{where}: names no metric")
            seen: set[str] = set(TARGET_LABELS)
            for name, matchers in q.metrics:
                if name not in exported.labels:
                    out.append(f"{where}: {name} is not exported by /metrics")
                    continue
                have = exported.labels[name]
                seen |= set(have)
                for label, op, value in matchers:
                    if label in TARGET_LABELS:
                        continue
                    if label not in have:
                        out.append(f"{where}: {name} has no label {label!r} (it has {sorted(have)})")
                    elif op == "=" and value not in have[label]:
                        out.append(f"{where}: {name}{{{label}={value!r}}} is never exported "
                                   f"(values: {sorted(have[label])})")
            for label in sorted(q.grouping - seen):
                out.append(f"{where}: groups by {label!r}, which none of its metrics has")
    return out


def _doc() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_every_panel_names_only_what_metrics_exports() -> None:
    assert problems(_doc(), Exported.parse(exposition())) == []


def test_a_panel_naming_something_not_exported_fails() -> None:
    exported = Exported.parse(exposition())
    for bad, why in (
        ('sum(rate(xcast6_icmp_errors_send_total[5m]))', "xcast6_icmp_errors_send_total is not exported"),
        ('sum(rate(xcast6_icmp_errors_sent_total{type="packet_to_big"}[5m]))', "never exported"),
        ('sum(rate(xcast6_icmp_errors_relayed_total{reason="x"}[5m]))', "has no label 'reason'"),
        ('sum by (reason) (rate(xcast6_icmp_errors_relayed_total[5m]))', "groups by 'reason'"),
        ('vector(1)', "names no metric"),
    ):
        doc = {"panels": [{"title": "t", "targets": [{"refId": "A", "expr": bad}]}]}
        got = problems(doc, exported)
        assert len(got) == 1 and why in got[0], (bad, got)


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool comes with Debian's prometheus (scripts/bootstrap.sh)"
    rules = []
    for p in _doc()["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, (p["title"], expr)
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))   # JSON is YAML
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout + check.stderr


def test_icmp_errors_are_graphed_generated_and_relayed() -> None:
    """Issue 18's counters: every ICMPv6 family has a panel, and the types are graphed apart."""
    doc = _doc()
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in doc["panels"]}
    for fam in (families.ICMP_SENT, families.ICMP_RATE_LIMITED, families.ICMP_NOT_ELIGIBLE,
                families.ICMP_RELAYED, families.ICMP_RELAY_RATE_LIMITED, families.ICMP_RELAY_REFUSED):
        assert any(families.PREFIX + fam.name in e for e in exprs.values()), fam.name
    by_type = [t for t, e in exprs.items() if "by (instance, type)" in e]
    assert any("sent" in exprs[t] for t in by_type) and any("relayed" in exprs[t] for t in by_type)
    both = [t for t, e in exprs.items() if "icmp_errors_sent_total" in e and "icmp_errors_relayed_total" in e]
    assert both, "no panel sets generated beside relayed"


PANELS = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: str(p["id"]))
def test_panel_layout(panel: dict[str, Any]) -> None:
    g = panel["gridPos"]
    assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
    assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"] and panel.get("description")
    for other in _doc()["panels"]:         # no two panels (rows included) share a grid cell
        o = other["gridPos"]
        if other["id"] != panel["id"]:
            apart = (g["x"] + g["w"] <= o["x"] or o["x"] + o["w"] <= g["x"]
                     or g["y"] + g["h"] <= o["y"] or o["y"] + o["h"] <= g["y"])
            assert apart, (panel["title"], other["title"])
