"""SyncService with the real SNMP source against net-snmp snmpd in a namespace (prefix xsa):
router table -> engine Fib + kernel mirror, change detection, link down, agent gone."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path

import pytest

from engine.forwarding.fib import Fib
from lab.snmpd import SnmpdLab
from sync.apply import Applier
from sync.config import SyncConfig
from sync.kernel import KernelMirror
from sync.registry import open_source
from sync.service import SyncService
from sync.store import SyncStore
from tests.sync._xsa_netns import add_veth, expected_view, ip_batch, kernel_view, netns, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

IFMAP = {"xsa-r0": "xsa-e0", "xsa-r1": "xsa-e1", "xsa-r2": "xsa-e2"}


def router_prefixes(ns: str) -> set[str]:
    """The router namespace's unicast IPv6 prefixes (what the SNMP source must deliver)."""
    out = set()
    for rt in json.loads(sh(f"ip -n {ns} -j -6 route show table main")):
        if rt.get("type", "unicast") != "unicast":
            continue
        dst = "::/0" if rt["dst"] == "default" else rt["dst"]
        net = ipaddress.IPv6Network(dst)
        if not net.is_link_local:
            out.add(str(net))
    return out


def test_snmp_router_to_engine(tmp_path: Path) -> None:
    async def scenario(router: SnmpdLab, engine_ns: str) -> None:
        lines = []
        for n in range(1000):
            link, other = n % 3, (n + 1) % 3
            prefix = f"2001:db8:{0x8000 + n:x}::/64"
            if n % 10 == 0:
                lines.append(f"route add {prefix} nexthop via 2001:db8:{link}::2 dev xsa-r{link} "
                             f"nexthop via 2001:db8:{other}::3 dev xsa-r{other}")
            else:
                lines.append(f"route add {prefix} via 2001:db8:{link}::2 dev xsa-r{link}")
        ip_batch(router.ns, lines)
        fib = Fib()
        km = KernelMirror(netns=engine_ns)
        svc = SyncService(open_source(router.url("marker=counts")), Applier(fib, km, IFMAP.get),
                          SyncStore(tmp_path),
                          SyncConfig(interval=3600, change_detect=0.5, timeout=60))
        await svc.start()
        job = await svc.jobs()[0].wait(120)
        assert job.status == "applied", job.error
        assert {str(r.prefix) for r in fib.routes()} == router_prefixes(router.ns)
        serving = svc.serving
        assert serving is not None
        assert kernel_view(engine_ns, 6464, "245") == expected_view(serving.routes, IFMAP)
        assert "public" not in svc.state()["source"]

        # a route added on the router arrives through change detection (not the hourly poll)
        ip_batch(router.ns, ["route add 2001:dbb::/48 via 2001:db8:1::7 dev xsa-r1"])
        router.expire_route_cache()
        t0 = time.monotonic()
        probe = ipaddress.IPv6Address("2001:dbb::1").packed
        while fib.lookup(probe) is None and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.05)
        hit = fib.lookup(probe)
        assert hit is not None and hit[1].ifname == "xsa-r1" and hit[1].gateway_text() == "2001:db8:1::7"
        change_job = [j for j in svc.jobs() if j.trigger == "change"][-1]
        assert (await change_job.wait(30)).status == "applied"     # the Fib is updated before the job ends
        mirror = sh(f"ip -n {engine_ns} -6 route show table 6464")
        assert "2001:dbb::/48 via 2001:db8:1::7 dev xsa-e1" in mirror

        # a router link goes down: its routes leave the router table, the engine follows
        sh(f"ip -n {router.ns} link set xsa-r2 down")
        router.expire_route_cache()
        job = await svc.request_resync().wait(60)
        assert job.status == "applied", job.error
        assert {str(r.prefix) for r in fib.routes()} == router_prefixes(router.ns)
        serving = svc.serving
        assert serving is not None
        assert kernel_view(engine_ns, 6464, "245") == expected_view(serving.routes, IFMAP)
        assert [i.oper_up for i in svc.router_interfaces() if i.name == "xsa-r2"] == [False]

        # the agent disappears: a specific error, the table keeps serving
        gen, count = fib.generation, len(fib)
        router.stop()
        svc.config.timeout = 30
        job = await svc.request_resync().wait(60)
        assert job.status == "failed" and job.error is not None and router.agent_ip in job.error
        assert (fib.generation, len(fib)) == (gen, count)
        assert svc.state()["last_error"] == job.error
        await svc.stop()
        km.close()

    router = SnmpdLab()
    try:
        router.setup(link_base="xsa-r")
        router.start()
        with netns() as engine_ns:
            for i in range(3):
                add_veth(engine_ns, f"xsa-e{i}", f"xsa-e{i}p")
            asyncio.run(scenario(router, engine_ns))
    finally:
        router.teardown()
