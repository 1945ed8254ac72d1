"""The daemon syncing over real SNMP (net-snmp snmpd in the router namespace): the API shows
the router's table, a route change shows in /routes/diff and disappears after a resync, the
safety valve holds a mass withdrawal until forced, and the community never leaks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import (
    SNMP_COMMUNITY,
    SNMP_V3_AUTH,
    SNMP_V3_PRIV,
    SNMP_V3_USER,
    Daemon,
    Router,
    SnmpRouter,
    free_port,
    start_daemon,
    start_snmpd,
    stop_snmpd,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def snmp_router(router: Router, xtmp: Path) -> Iterator[SnmpRouter]:
    lab = start_snmpd(router, xtmp)
    try:
        yield lab
    finally:
        stop_snmpd(lab)


def _job(c: httpx.Client, force: bool = False) -> dict:  # type: ignore[type-arg]
    job = c.post("/resync", json={"force": force}).json()
    done = wait_for(lambda: (j := c.get(job["href"]).json())["state"] not in ("queued", "running") and j, 30)
    assert done, f"job {job['id']} did not finish"
    return done  # type: ignore[no-any-return]


def test_daemon_over_snmp(snmp_router: SnmpRouter, router: Router, xtmp: Path) -> None:
    port = free_port()
    cfg = xtmp / "engine.toml"
    write_config(cfg, xtmp / "state", snmp_router.url(), port, link=router.host_link, change_detect=0)
    d: Daemon = start_daemon(cfg, xtmp / "daemon.log", f"http://127.0.0.1:{port}")
    try:
        with d.client() as c:
            st = c.get("/status").json()
            assert st["ready"] and st["sync"]["state"] == "idle", st
            assert SNMP_COMMUNITY not in st["sync"]["source"] and st["sync"]["source"].startswith("snmp://")
            # 20 gateway /48s + ECMP /48 + connected /64s of xapi-e0, xapi-e1 and the agent link
            assert st["sync"]["route_count"] == 24
            hit = c.get("/routes/lookup", params={"dst": "2001:db8:1007::1"}).json()
            assert hit["nexthop"] == {"ifname": "xapi-e0", "gateway": "2001:db8:a::2"}
            ecmp = c.get("/routes", params={"prefix": "2001:db8:ecb::/48"}).json()["routes"][0]
            assert sorted(h["ifname"] for h in ecmp["nexthops"]) == ["xapi-e0", "xapi-e1"]
            ifs = {i["router_if"]: i for i in c.get("/interfaces").json()}
            assert ifs["xapi-e1"]["router_oper_up"] is True and ifs["xapi-e1"]["router_index"]

            # a route change on the router: in the diff, then gone after a resync
            router.add_routes(400, 2, via="2001:db8:b::5", dev="xapi-e1")
            snmp_router.expire_cache()
            t0 = time.monotonic()
            diff = c.get("/routes/diff").json()
            took = time.monotonic() - t0
            assert diff["router_vs_engine"]["counts"] == {"added": 2, "removed": 0, "changed": 0}
            assert [r["prefix"] for r in diff["router_vs_engine"]["added"]] == [
                "2001:db8:1190::/48",
                "2001:db8:1191::/48",
            ]
            assert diff["in_sync"] is False and diff["kernel"] is None
            assert "fetched in" in diff["router"]["detail"] and took < 10
            job = _job(c)
            assert job["state"] == "done" and job["result"]["counts"]["added"] == 2
            assert c.get("/routes/diff").json()["in_sync"] is True

            # mass withdrawal: held back, still serving, then released by force
            router.del_routes(0, 20)
            snmp_router.expire_cache()
            job = _job(c)
            assert job["state"] == "held" and job["result"]["counts"]["removed"] == 20
            st = c.get("/status").json()["sync"]
            assert st["route_count"] == 26 and st["held_back"]["removed"] == 20
            assert c.get("/routes/lookup", params={"dst": "2001:db8:1007::1"}).status_code == 200
            job = _job(c, force=True)
            assert job["state"] == "done"
            assert c.get("/status").json()["sync"]["route_count"] == 6
            assert c.get("/routes/lookup", params={"dst": "2001:db8:1007::1"}).status_code == 404
        assert SNMP_COMMUNITY not in d.logs()
    finally:
        assert d.stop() == 0


def test_snmpv3_keys_from_the_config_file_never_leak(
    snmp_router: SnmpRouter, router: Router, xtmp: Path
) -> None:
    port = free_port()
    cfg = xtmp / "engine.toml"
    write_config(cfg, xtmp / "state", snmp_router.v3_url(), port, link=router.host_link, change_detect=0)
    cfg.write_text(
        cfg.read_text().replace(
            "timeout = 10",
            f'timeout = 10\nsnmp_auth_key = "{SNMP_V3_AUTH}"\nsnmp_priv_key = "{SNMP_V3_PRIV}"',
        )
    )
    d = start_daemon(cfg, xtmp / "daemon.log", f"http://127.0.0.1:{port}")
    try:
        with d.client() as c:
            st = c.get("/status").json()
            assert st["ready"] and st["sync"]["route_count"] == 24, st
            assert st["sync"]["source"].startswith(f"snmpv3://{SNMP_V3_USER}@")
            texts = [c.get(p).text for p in ("/status", "/routes/diff", "/metrics", "/stats", "/interfaces")]
        for secret in (SNMP_V3_AUTH, SNMP_V3_PRIV):
            assert all(secret not in t for t in texts)
            assert secret not in d.logs()
    finally:
        assert d.stop() == 0
