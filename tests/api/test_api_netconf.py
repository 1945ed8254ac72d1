"""The daemon syncing over real NETCONF (SSH) from the project's test server, Junos and
ietf-routing flavours: the table equals the router namespace's, a change shows in the diff and
goes after a resync, and the NETCONF password (from the config file) never leaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netconf_server.lab import PASSWORD, NetconfLab, ServerProc
from tests.api.conftest import Router, free_port, start_daemon, wait_for, write_config

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def nc() -> Iterator[tuple[NetconfLab, ServerProc]]:
    lab = NetconfLab("a", prefix="xapi-nc").up()   # this suite's name prefix
    try:
        lab.fill_basic()
        yield lab, lab.start_server()
    finally:
        lab.down()


@pytest.mark.parametrize("flavor", ["junos", "ietf"])
def test_daemon_over_netconf(
    nc: tuple[NetconfLab, ServerProc], flavor: str, router: Router, xtmp: Path
) -> None:
    lab, srv = nc
    port = free_port()
    cfg = xtmp / "engine.toml"
    write_config(cfg, xtmp / "state", lab.url(srv, flavor), port, link=router.host_link, change_detect=0)
    cfg.write_text(cfg.read_text().replace("timeout = 10", f'timeout = 30\nnetconf_password = "{PASSWORD}"'))
    d = start_daemon(cfg, xtmp / "daemon.log", f"http://127.0.0.1:{port}")
    try:
        with d.client() as c:
            want = lab.expected_routes(flavor)
            st = c.get("/status").json()
            assert st["ready"] and st["sync"]["route_count"] == len(want), (st, d.logs())
            got = {r["prefix"] for r in c.get("/routes", params={"limit": 10000}).json()["routes"]}
            assert got == {str(p) for p in want}
            extra = f"2001:db8:7{ord(flavor[0]):x}::/48"
            lab.batch([f"route add {extra} via {lab.gateway(1)} dev xnc-ge1"])
            try:
                diff = c.get("/routes/diff").json()
                assert [r["prefix"] for r in diff["router_vs_engine"]["added"]] == [extra]
                job = c.post("/resync", json={}).json()
                done = wait_for(lambda: c.get(job["href"]).json()["state"] not in ("queued", "running"), 60)
                assert done and c.get(job["href"]).json()["state"] == "done"
                assert c.get("/routes/diff").json()["in_sync"] is True
            finally:
                lab.batch([f"route del {extra}"])
            texts = [c.get(p).text for p in ("/status", "/routes/diff", "/metrics", "/interfaces")]
        assert all(PASSWORD not in t for t in texts)
        assert PASSWORD not in d.logs()
    finally:
        assert d.stop() == 0
