"""NetconfSource against a REAL NETCONF/SSH server serving a namespace's REAL kernel routes.

Server: lab/netconf_server (the ``netconf`` package: real SSH + NETCONF framing; the ietf
data is real YANG data; the Junos replies are a reproduction of the documented format).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import paramiko
import pytest

from lab.netconf_server.lab import PASSWORD, USER, NetconfLab, ServerProc
from sync.config import SyncConfig
from sync.netconf import PASSWORD_ENV, NetconfSource
from sync.source import SourceError

pytestmark = [pytest.mark.root, pytest.mark.netns]
FLAVORS = ("junos", "ietf")


@pytest.fixture(scope="module")
def lab() -> Iterator[NetconfLab]:
    lab = NetconfLab("s").up()
    try:
        lab.fill_basic()
        lab.fill_many(1000)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def server(lab: NetconfLab) -> ServerProc:
    return lab.start_server()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def fetch(url: str) -> NetconfSource:
    src = NetconfSource.from_url(url)
    try:
        src.fetch_sync()
    finally:
        src.close()
    return src


@pytest.mark.parametrize("flavor", FLAVORS)
def test_fetch_equals_kernel_table(lab: NetconfLab, server: ServerProc, flavor: str) -> None:
    src = NetconfSource.from_url(lab.url(server, flavor))
    phases: list[str] = []
    try:
        snap = src.fetch_sync(progress=lambda n, phase: phases.append(phase))
    finally:
        src.close()
    got = {r.prefix: r for r in snap.routes}
    want = lab.expected_routes(flavor)
    assert len(want) > 1000
    assert got == want
    # The multipath route keeps all three next hops, the connected route has no gateway.
    multi = next(r for r in snap.routes if str(r.prefix) == "2001:db8:200::/48")
    assert len(multi.nexthops) == 3
    assert snap.source == lab.url(server, flavor) and snap.duration_s > 0
    assert "routes" in phases and phases[-1] == "interfaces"
    # Discard/unreachable kernel routes were seen and counted, not turned into next hops.
    assert src.last_skipped["discard"] == 1 and src.last_skipped["reject"] == 1
    if flavor == "junos":
        # Reproduced Junos extras: Local /128s, the inactive-only destination, ff02::2.
        assert src.last_skipped["local"] >= 3 and src.last_skipped["inactive"] == 1
        assert src.last_skipped["multicast"] == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_interfaces_and_oper_down(lab: NetconfLab, server: ServerProc, flavor: str) -> None:
    names = {"junos": ["ge-0/0/0.0", "ge-0/0/1.0", "ge-0/0/2.0"],
             "ietf": ["xnc-ge0", "xnc-ge1", "xnc-ge2"]}[flavor]
    src = NetconfSource.from_url(lab.url(server, flavor))
    try:
        up = {i.name: i for i in src.fetch_sync().interfaces}
        assert all(up[n].oper_up for n in names)
        if flavor == "ietf":
            assert up["xnc-ge1"].index is not None and up["xnc-ge1"].index > 1
        # Carrier loss on the far end of ge1 (veth peer down): oper down.  Linux keeps the
        # routes (flagged linkdown), so the snapshot must still equal the kernel table.
        subprocess_ip(["-n", lab.peer_ns, "link", "set", "xnc-pe1", "down"])
        try:
            snap = src.fetch_sync()
            down = {i.name: i for i in snap.interfaces}
            assert not down[names[1]].oper_up and down[names[0]].oper_up
            assert {r.prefix: r for r in snap.routes} == lab.expected_routes(flavor)
        finally:
            subprocess_ip(["-n", lab.peer_ns, "link", "set", "xnc-pe1", "up"])
    finally:
        src.close()


def subprocess_ip(args: list[str]) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_change_marker_follows_route_changes_on_one_session(lab: NetconfLab, server: ServerProc,
                                                            flavor: str) -> None:
    src = NetconfSource.from_url(lab.url(server, flavor))
    try:
        first = src.change_marker_sync()
        assert first is not None and src.change_marker_sync() == first
        session = src._marker_session.manager
        lab.batch([f"route add 2001:db8:7777::/48 via {lab.gateway(1)} dev xnc-ge1"])
        try:
            second = src.change_marker_sync()
            assert second != first
            assert "2001:db8:7777::/48" in {str(r.prefix) for r in src.fetch_sync().routes}
        finally:
            lab.batch(["route del 2001:db8:7777::/48"])
        assert src.change_marker_sync() == first
        assert src._marker_session.manager is session  # one kept-open session for all polls
    finally:
        src.close()


def test_cli_routes_fetch_json(lab: NetconfLab, server: ServerProc) -> None:
    """`xcast6-engine routes fetch netconf://...` (sync/cli.py) end to end against the server."""
    import json
    import os
    import subprocess
    import sys

    from lab.netconf_server.lab import WORKTREE

    env = dict(os.environ, **{PASSWORD_ENV: PASSWORD})
    done = subprocess.run([sys.executable, "-m", "api.main", "routes", "fetch", "--json", "-q",
                           lab.url(server, "junos")], cwd=WORKTREE, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["route_count"] == len(lab.expected_routes("junos"))
    assert {i["name"] for i in out["interfaces"]} >= {"ge-0/0/0.0", "ge-0/0/1.0", "ge-0/0/2.0"}
    env[PASSWORD_ENV] = "nope"
    done = subprocess.run([sys.executable, "-m", "api.main", "routes", "fetch", lab.url(server, "ietf")],
                          cwd=WORKTREE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and "authentication failed for user 'xcast'" in done.stderr   # auth
    assert "nope" not in done.stderr + done.stdout


def test_ietf_marker_sees_next_hop_change_with_same_counts(lab: NetconfLab, server: ServerProc) -> None:
    src = NetconfSource.from_url(lab.url(server, "ietf"))
    try:
        before = src.change_marker_sync()
        lab.batch([f"route replace 2001:db8:100::/48 via {lab.gateway(2)} dev xnc-ge2"])
        try:
            assert src.change_marker_sync() != before
        finally:
            lab.batch([f"route replace 2001:db8:100::/48 via {lab.gateway(0)} dev xnc-ge0"])
    finally:
        src.close()


def test_session_reopened_after_loss(lab: NetconfLab, server: ServerProc) -> None:
    src = NetconfSource.from_url(lab.url(server, "junos"))
    try:
        n = len(src.fetch_sync().routes)
        old = src._session.manager
        old._session.close()  # the TCP/SSH session dies between polls
        assert len(src.fetch_sync().routes) == n
        assert src._session.manager is not old and src._session.manager.connected
    finally:
        src.close()


def test_server_with_xml_declaration_and_single_chunk_framing(lab: NetconfLab) -> None:
    srv = lab.start_server(xml_header=True, chunk=0)
    for flavor in FLAVORS:
        src = NetconfSource.from_url(lab.url(srv, flavor))
        try:
            assert {r.prefix: r for r in src.fetch_sync().routes} == lab.expected_routes(flavor)
        finally:
            src.close()


def test_ietf_nmda_tree_and_named_rib(lab: NetconfLab, server: ServerProc) -> None:
    plain = server
    srv = lab.start_server(nmda=True)
    want = lab.expected_routes("ietf")
    for opts in ({"tree": "routing"}, {"tree": "routing", "rib": "ipv6-master"}, {"rib": "ipv6-master"}):
        src = NetconfSource.from_url(lab.url(srv, "ietf", **opts))
        try:
            snap = src.fetch_sync()
        finally:
            src.close()
        assert {r.prefix: r for r in snap.routes} == want, opts
        assert {i.name for i in snap.interfaces} >= {"xnc-ge0", "xnc-ge1", "xnc-ge2"}
    with pytest.raises(SourceError, match=r"no default IPv6 RIB under /routing in reply \(RIBs seen: none\); "
                       r"is ietf-routing served under /routing\?"):
        fetch(lab.url(plain, "ietf", tree="routing"))  # a server without the NMDA tree
    # A RIB name that does not exist is an error, not an empty table.
    with pytest.raises(SourceError,
                       match=r"no RIB 'vrf-blue' under /routing-state in reply \(RIBs seen: none\)"):
        fetch(lab.url(srv, "ietf", rib="vrf-blue"))


def test_netconf_1_0_framing(lab: NetconfLab) -> None:
    srv = lab.start_server(base10=True)
    for flavor in FLAVORS:
        src = NetconfSource.from_url(lab.url(srv, flavor))
        try:
            assert {r.prefix: r for r in src.fetch_sync().routes} == lab.expected_routes(flavor)
            from ncclient.transport.session import NetconfBase

            assert src._session.manager._session._base == NetconfBase.BASE_10
        finally:
            src.close()


def test_key_auth(lab: NetconfLab, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = lab.start_server(authorized_key=True)
    monkeypatch.delenv(PASSWORD_ENV)
    src = fetch(lab.url(srv, "junos", key=str(lab.client_key)))
    assert src.last_skipped["discard"] == 1
    other = lab.tmp / "other_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(other))
    with pytest.raises(SourceError, match=r"authentication failed for user 'xcast' \(key "):
        fetch(lab.url(srv, "junos", key=str(other)))


# -- faults: each a specific SourceError, never partial data --

def test_unreachable_port(lab: NetconfLab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"netconf://{USER}@127.0.0.1:{port}?flavor=junos&timeout=3&known_hosts={lab.known_hosts}"
    with pytest.raises(SourceError, match=f"netconf 127.0.0.1:{port}: cannot connect"):
        fetch(url)


def test_host_that_accepts_but_never_speaks(lab: NetconfLab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        url = f"netconf://{USER}@127.0.0.1:{port}?flavor=ietf&timeout=2&known_hosts={lab.known_hosts}"
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no SSH/NETCONF handshake within 2 s"):
            fetch(url)
        assert time.monotonic() - started < 6  # our timeout, not paramiko's 15 s banner wait


def test_wrong_password_never_echoed(lab: NetconfLab, server: ServerProc,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-pw-xyz")
    with pytest.raises(SourceError) as err:
        fetch(lab.url(server, "ietf"))
    assert "authentication failed for user 'xcast' (password)" in str(err.value)
    assert "wrong-pw-xyz" not in str(err.value)


def test_unknown_host_key_and_opt_out(lab: NetconfLab, server: ServerProc) -> None:
    empty = lab.tmp / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(SourceError, match=r"host key [0-9a-f:]+ not in .*empty_known_hosts"):
        fetch(lab.url(server, "junos", known_hosts=str(empty)))
    src = fetch(lab.url(server, "junos", known_hosts=str(empty), hostkey_verify="false"))
    assert src.last_skipped["discard"] == 1


def test_host_key_mismatch(lab: NetconfLab, server: ServerProc) -> None:
    impostor = paramiko.RSAKey.generate(2048)
    kh = lab.tmp / "mitm_known_hosts"
    kh.write_text(f"[127.0.0.1]:{server.port} {impostor.get_name()} {impostor.get_base64()}\n")
    with pytest.raises(SourceError, match=r"host key MISMATCH .*possible man-in-the-middle"):
        fetch(lab.url(server, "ietf", known_hosts=str(kh)))


@pytest.mark.parametrize(
    ("fault", "flavor", "needle"),
    [
        ("rpc-error", "junos", "get-route-information: rpc-error: error-tag=operation-failed severity=error"),
        ("rpc-error", "ietf", "message='routing table is being rebuilt'"),
        ("cut", "junos", "get-route-information: session lost mid-reply"),
        ("cut", "ietf", "get ietf-routing: session lost mid-reply"),
        ("garbage-xml", "junos", "reply is not well-formed XML"),
        ("garbage-row", "junos", "bad <rt-destination> '2001:db8:zz::/64'"),
    ],
)
def test_faults(lab: NetconfLab, fault: str, flavor: str, needle: str) -> None:
    srv = lab.start_server(fault=fault)
    src = NetconfSource.from_url(lab.url(srv, flavor))
    try:
        with pytest.raises(SourceError) as err:
            src.fetch_sync()
        assert needle in str(err.value)
        assert src.last_skipped == {}  # nothing from the failed fetch leaked into state
    finally:
        src.close()
        srv.stop()


def test_rpc_timeout(lab: NetconfLab) -> None:
    srv = lab.start_server(fault="slow")
    src = NetconfSource.from_url(lab.url(srv, "junos", timeout="2"))
    try:
        with pytest.raises(SourceError, match="get-route-information: no reply within 2 s"):
            src.fetch_sync()
    finally:
        src.close()
        srv.stop()


@pytest.mark.slow
def test_ten_thousand_routes_equal_kernel_table() -> None:
    big = NetconfLab("t").up()
    try:
        big.fill_many(10000)
        srv = big.start_server()
        for flavor in FLAVORS:
            src = NetconfSource.from_url(big.url(srv, flavor, timeout="120"))
            try:
                snap = src.fetch_sync()
            finally:
                src.close()
            want = big.expected_routes(flavor)
            assert len(want) == 10003  # 10k + three connected
            assert {r.prefix: r for r in snap.routes} == want
    finally:
        big.down()


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sync_service_follows_router_change_via_marker(lab: NetconfLab, server: ServerProc,
                                                        flavor: str) -> None:
    """SyncService (sync/service.py) + NetconfSource: a route added on the router reaches the
    engine FIB through the change trigger (the periodic poll is set far away)."""
    import asyncio

    from engine.forwarding.fib import Fib
    from sync.apply import Applier
    from sync.service import SyncService

    async def scenario() -> tuple[int, float]:
        fib = Fib()
        src = NetconfSource.from_url(lab.url(server, flavor))
        svc = SyncService(src, Applier(fib), config=SyncConfig(interval=3600, change_detect=0.2))
        await svc.start()
        try:
            probe = ipaddress_packed("2001:db8:5555::1")
            deadline = time.monotonic() + 60
            while len(fib) < 1000:
                assert time.monotonic() < deadline, "initial sync did not land"
                await asyncio.sleep(0.05)
            assert fib.lookup_route(probe) is None or str(fib.lookup_route(probe).prefix) == "::/0"
            await asyncio.sleep(0.5)  # let the marker loop record its baseline
            started = time.monotonic()
            lab.batch([f"route add 2001:db8:5555::/48 via {lab.gateway(2)} dev xnc-ge2"])
            try:
                while True:
                    route = fib.lookup_route(probe)
                    if route is not None and str(route.prefix) == "2001:db8:5555::/48":
                        break
                    assert time.monotonic() - started < 60, "change never reached the FIB"
                    await asyncio.sleep(0.02)
                return svc.counters["change_triggers"], time.monotonic() - started
            finally:
                lab.batch(["route del 2001:db8:5555::/48"])
        finally:
            await svc.stop()
            await src.aclose()

    triggers, latency = asyncio.run(scenario())
    assert triggers >= 1
    print(f"{flavor}: route change visible in the engine FIB after {latency:.2f} s")


def ipaddress_packed(text: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(text).packed
