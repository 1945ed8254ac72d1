"""The Grafana dashboard (api/grafana/xcast6-engine.json) against a real Prometheus (Debian's
package) scraping the lab's engines: every panel query must be valid PromQL, name only metrics
the engines export, and return data (queries filtered with ``> 0`` may legitimately be empty).
The same checks without root, against the engine's own exposition: tests/api/test_grafana_dashboard.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import demo, netns
from lab.procs import stop_process
from lab.topology import API_PORT, Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]

DASHBOARD = Path(__file__).resolve().parents[2] / "api" / "grafana" / "xcast6-engine.json"
PROM_PORT = 9463       # inside each engine namespace, on its loopback


def _targets(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "instance"}
    # what the issue asks to see: traffic per link, drops by reason, latency, sync state
    exprs = " ".join(e for _, e in _targets(doc))
    for metric in ("xcast6_link_bytes_total", "xcast6_dropped_packets_total", "xcast6_latency_seconds_bucket",
                   "xcast6_sync_state", "xcast6_sync_failures_total", "xcast6_icmp_errors_sent_total",
                   "xcast6_icmp_errors_relayed_total"):
        assert metric in exprs


class Prometheus:
    """Debian's prometheus in one engine namespace, scraping that engine's API every second."""

    def __init__(self, topo: Topology, r: str, workdir: Path) -> None:
        self.ns = topo.engine_ns(r)
        workdir.mkdir(parents=True)
        cfg = workdir / "prometheus.yml"
        cfg.write_text(json.dumps({     # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "xcast6-engine",
                # the lab's engines serve their API over TLS (issue 20), signed by the lab CA
                "scheme": "https",
                "tls_config": {"ca_file": str(topo.api_ca_path), "min_version": "TLS12"},
                "authorization": {"type": "Bearer", "credentials_file": str(topo.api_token_path)},
                "static_configs": [{"targets": [f"127.0.0.1:{API_PORT}"], "labels": {"engine": r}}],
            }],
        }))
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "prometheus", f"--config.file={cfg}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> dict[str, Any]:
        with netns.in_netns(self.ns):
            r = httpx.get(f"http://127.0.0.1:{PROM_PORT}{path}", params=params, timeout=10, trust_env=False)
        return dict(r.json())

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                res = self.query("up")["data"]["result"]
                if res and res[0]["value"][1] == "1":
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-2000:]
            time.sleep(0.5)
        raise AssertionError(f"prometheus in {self.ns} never scraped its engine: "
                             + Path(self.log.name).read_text()[-2000:])

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(lab: Topology) -> Iterator[dict[str, Prometheus]]:
    assert shutil.which("prometheus"), "Debian's prometheus package (scripts/bootstrap.sh)"
    tmp = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}prom-"))
    proms: dict[str, Prometheus] = {}
    try:
        for r in ("a", "b"):
            proms[r] = Prometheus(lab, r, tmp / r)
        for p in proms.values():
            p.wait_up()
        yield proms
    finally:
        for p in proms.values():
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_panel_query_evaluates_on_real_prometheus(lab: Topology,
                                                        prometheus: dict[str, Prometheus]) -> None:
    # traffic through both engines while Prometheus scrapes, so rates and histograms have data
    dests = [h.addr for h in lab.receivers]
    for i in range(6):
        demo.send_xcast(lab, dests, [f"dash-{i}-{k}".encode() for k in range(5)])
        # and ICMPv6 errors for the ICMP panels: hop limit 2 runs out at engine A (its own Time
        # Exceeded), 3 at router A behind it (router A answers engine A, which relays it)
        demo.send_xcast(lab, dests, [b"dash-expiring"], hop_limit=2 + i % 2)
        time.sleep(0.5)
    time.sleep(3)
    doc = json.loads(DASHBOARD.read_text())
    for r, prom in prometheus.items():
        exported = set(prom.get("/api/v1/label/__name__/values")["data"])
        for title, expr in _targets(doc):
            for name in re.findall(r"\bxcast6_[a-z0-9_]+", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in exported or base in exported, (r, title, name)
            q = expr.replace("$__rate_interval", "20s").replace("$instance", ".*")
            res = prom.query(q)
            assert res["status"] == "success", (r, title, q, res)
            if "> 0" not in expr:
                assert res["data"]["result"], (r, title, q)
        # and the numbers mean something: engine A received and branched what was sent
        got = prom.query('sum(increase(xcast6_received_packets_total[30s]))')["data"]["result"]
        assert got and float(got[0]["value"][1]) > 0, (r, got)
        links = prom.query('sum by (router_if) (rate(xcast6_link_packets_total{dir="rx"}[30s])) > 0')
        assert links["data"]["result"], (r, links)
        if r == "a":            # engine A generated and relayed Time Exceeded: the ICMP panels' series
            for fam in ("xcast6_icmp_errors_sent_total", "xcast6_icmp_errors_relayed_total"):
                te = prom.query(f'sum(increase({fam}{{type="time_exceeded"}}[30s]))')["data"]["result"]
                assert te and float(te[0]["value"][1]) > 0, (fam, te)
