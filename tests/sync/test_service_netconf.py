"""SyncService with the real NETCONF source (both flavours) against the project's NETCONF/SSH
test server serving a namespace's kernel routes; engine mirror in a second namespace (xsa)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from engine.forwarding.fib import Fib
from lab.procs import stop_process
from sync.apply import Applier
from sync.config import SyncConfig
from sync.kernel import KernelMirror
from sync.registry import open_source
from sync.service import SyncService
from tests.sync._xsa_netns import add_veth, expected_view, ip_batch, kernel_view, netns

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

WORKTREE = Path(__file__).resolve().parents[2]
PASSWORD = "xsa-netconf-pw"


@pytest.mark.parametrize("flavor", ["ietf", "junos"])
def test_netconf_router_to_engine(flavor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.netconf import PASSWORD_ENV

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    key = paramiko.RSAKey.generate(2048)
    key.write_private_key_file(str(tmp_path / "host_rsa"))
    with netns() as router_ns, netns() as engine_ns:
        lines = []
        for i in range(2):
            add_veth(router_ns, f"xsa-r{i}", f"xsa-r{i}p")
            add_veth(engine_ns, f"xsa-e{i}", f"xsa-e{i}p")
            lines.append(f"addr add 2001:db8:{i}::1/64 dev xsa-r{i} nodad")
        lines += [f"route add 2001:db8:{0x8000 + n:x}::/64 via 2001:db8:{n % 2}::2 dev xsa-r{n % 2}"
                  for n in range(200)]
        lines.append("route add 2001:db9::/32 nexthop via 2001:db8:0::2 dev xsa-r0 "
                     "nexthop via 2001:db8:1::2 dev xsa-r1")
        ip_batch(router_ns, lines)
        env = dict(os.environ, XNC_SERVER_PASSWORD=PASSWORD, PYTHONPATH=str(WORKTREE))
        cmd = [sys.executable, "-m", "lab.netconf_server", "--netns", router_ns,
               "--host-key", str(tmp_path / "host_rsa"), "--user", "xcast", "--chunk", "16384"]
        proc = subprocess.Popen(cmd, cwd=WORKTREE, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("READY port="), line
            port = int(line.split("=")[1])
            known = tmp_path / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
            url = f"netconf://xcast@127.0.0.1:{port}?flavor={flavor}&known_hosts={known}&timeout=20"
            suffix = ".0" if flavor == "junos" else ""     # Junos names carry the unit
            ifmap = {f"xsa-r{i}{suffix}": f"xsa-e{i}" for i in range(2)}
            asyncio.run(_scenario(url, router_ns, engine_ns, ifmap))
        finally:
            stop_process(proc)


async def _scenario(url: str, router_ns: str, engine_ns: str, ifmap: dict[str, str]) -> None:
    fib = Fib()
    km = KernelMirror(netns=engine_ns)
    source = open_source(url)
    svc = SyncService(source, Applier(fib, km, ifmap.get), None,
                      SyncConfig(interval=3600, change_detect=0.5, link_watch_s=0))
    try:
        await svc.start()
        job = await svc.jobs()[0].wait(60)
        assert job.status == "applied", job.error
        prefixes = {str(r.prefix) for r in fib.routes()}
        assert {str(ipaddress.IPv6Network(f"2001:db8:{0x8000 + n:x}::/64")) for n in range(200)} <= prefixes
        ecmp = fib.get(ipaddress.IPv6Network("2001:db9::/32"))
        assert ecmp is not None and len(ecmp.nexthops) == 2
        serving = svc.serving
        assert serving is not None
        assert kernel_view(engine_ns, 6464, "245") == expected_view(serving.routes, ifmap)
        assert len(kernel_view(engine_ns, 6464, "245")) >= 201

        # a new route on the router arrives through the NETCONF change marker
        ip_batch(router_ns, ["route add 2001:dbb::/48 via 2001:db8:1::7 dev xsa-r1"])
        probe = ipaddress.IPv6Address("2001:dbb::1").packed
        t0 = time.monotonic()
        while fib.lookup(probe) is None and time.monotonic() - t0 < 20:
            await asyncio.sleep(0.05)
        hit = fib.lookup(probe)
        assert hit is not None and hit[1].gateway_text() == "2001:db8:1::7"
        change_job = [j for j in svc.jobs() if j.trigger == "change"][-1]
        assert (await change_job.wait(30)).status == "applied"
        assert "2001:dbb::/48" in {str(p) for p, _ in kernel_view(engine_ns, 6464, "245")}
    finally:
        await svc.stop()
        km.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
