"""Reconcile on a real 802.1Q kernel (runs inside the QEMU guest).

A router namespace and an engine namespace are joined by one veth trunk (xtrunk <-> rtrunk).
The "router" side gets plain kernel VLAN subinterfaces (as a Juniper/Cisco would have units
with vlan-id); the engine side is programmed only by vlan.reconcile.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import main as cli
from engine.model import Interface
from lab import netns
from tests.vlan.nettraffic import capture, socket_in_netns
from tests.vlan.nsutil import addrs, links, sh
from vlan.config import LinksConfig
from vlan.reconcile import ReconcileError, reconcile

pytestmark = [pytest.mark.vm, pytest.mark.root, pytest.mark.netns]

CONFIG = {
    "mode": "vlan",
    "trunk": "xtrunk",
    "name_prefix": "xc-v",
    "vlan_range": [100, 199],
    "pool": "2001:db8:ff::/56",
}
PORT = 7777


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    with netns.temporary("xvl-eng", "xvl-rtr") as (eng, rtr):
        sh(
            "link",
            "add",
            "xtrunk",
            "mtu",
            "4000",
            "type",
            "veth",
            "peer",
            "name",
            "rtrunk",
            "netns",
            rtr,
            ns=eng,
        )
        sh("link", "set", "xtrunk", "up", ns=eng)
        sh("link", "set", "rtrunk", "mtu", "4000", "up", ns=rtr)
        yield eng, rtr


def router_vlan(rtr: str, vid: int, addr: str) -> None:
    """What the router has: a unit with ``vlan-id vid`` and ``addr`` on it."""
    sh("link", "add", "link", "rtrunk", "name", f"rtrunk.{vid}", "type", "vlan", "id", str(vid), ns=rtr)
    sh("link", "set", f"rtrunk.{vid}", "up", ns=rtr)
    sh("addr", "add", addr, "dev", f"rtrunk.{vid}", "nodad", ns=rtr)


def owned(eng: str) -> dict[str, tuple[int, str, int, str]]:
    """Engine links with our marker: name -> (vlan, alias, mtu, operstate)."""
    result = {}
    for name in links(eng):
        info = netns.link_info(eng, name)
        alias = str(info.get("ifalias", ""))
        if alias.startswith("xcast6-engine:"):
            vid = int(info["linkinfo"]["info_data"]["id"])  # type: ignore[index]
            result[name] = (vid, alias, int(info["mtu"]), str(info["operstate"]))  # type: ignore[call-overload]
    return result


def test_creates_subinterfaces_learns_router_macs_and_carries_tagged_traffic(
    lab: tuple[str, str], tmp_path: Path
) -> None:
    eng, rtr = lab
    cfg = LinksConfig.from_dict(CONFIG)
    ifs = [Interface("ge-0/0/0.0", 1), Interface("ge-0/0/1.0", 2)]
    # The router side as the plan says (engine ::1, router ::2 in consecutive /64s of the pool).
    router_vlan(rtr, 100, "2001:db8:ff::2/64")
    router_vlan(rtr, 101, "2001:db8:ff:1::2/64")

    result = reconcile(cfg, ifs, netns=eng, neighbor_wait_s=10.0)

    assert [a.op for a in result.actions] == ["create", "addr-add", "create", "addr-add"]
    want = {
        "xc-v100": (100, "xcast6-engine:ge-0/0/0.0", 4000, "UP"),
        "xc-v101": (101, "xcast6-engine:ge-0/0/1.0", 4000, "UP"),
    }
    # The kernel's linkwatch reports a new VLAN's operstate UP up to ~1 s after it is set up
    # (UNKNOWN before): wait for the state to settle instead of reading it in that window.
    deadline = time.monotonic() + 5
    while owned(eng) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert owned(eng) == want
    assert addrs(eng, "xc-v100") == {"2001:db8:ff::1/64"}
    assert addrs(eng, "xc-v101") == {"2001:db8:ff:1::1/64"}
    router_mac = bytes.fromhex(str(netns.link_info(rtr, "rtrunk")["address"]).replace(":", ""))
    for router_if, vid in (("ge-0/0/0.0", 100), ("ge-0/0/1.0", 101)):
        lk = result.linkmap.for_router_if(router_if)
        assert lk is not None
        assert lk.vlan_id == vid and lk.engine_ifname == f"xc-v{vid}" and lk.mtu == 4000 and lk.oper_up
        assert lk.engine_ifindex == netns.link_info(eng, f"xc-v{vid}")["ifindex"]
        assert lk.router_mac == router_mac, f"router MAC on VLAN {vid} not learned"

    # Traffic: one UDP datagram per VLAN from the engine address to the router address.
    rx = socket_in_netns(rtr, socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket_in_netns(eng, socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::", PORT))
    rx.settimeout(10)
    with capture(rtr, "rtrunk", tmp_path / "trunk.pcap") as frames:
        for vid, dst in ((100, "2001:db8:ff::2"), (101, "2001:db8:ff:1::2")):
            tx.sendto(f"vlan {vid}".encode(), (dst, PORT))
            data, (src, *_rest) = rx.recvfrom(100)
            assert data == f"vlan {vid}".encode()
            assert src == ("2001:db8:ff::1" if vid == 100 else "2001:db8:ff:1::1")
    rx.close()
    tx.close()
    udp = [f for f in frames if f.next_header == 17]
    seen = {(f.vlan_id, str(f.ipv6_src), str(f.ipv6_dst)) for f in udp}
    assert seen == {(100, "2001:db8:ff::1", "2001:db8:ff::2"), (101, "2001:db8:ff:1::1", "2001:db8:ff:1::2")}
    assert all(f.dst_mac == router_mac for f in udp)


def test_follows_the_router_interface_list_and_is_idempotent(lab: tuple[str, str]) -> None:
    eng, _rtr = lab
    cfg = LinksConfig.from_dict(CONFIG)
    reconcile(cfg, [Interface("a", 1), Interface("b", 2), Interface("c", 3)], netns=eng)
    assert {n: v[0] for n, v in owned(eng).items()} == {"xc-v100": 100, "xc-v101": 101, "xc-v102": 102}
    assert reconcile(cfg, [Interface("a", 1), Interface("b", 2), Interface("c", 3)], netns=eng).actions == []

    # "a" leaves, "d" arrives, "b" goes oper down, the trunk MTU grows (the kernel lowers VLAN
    # MTUs with their trunk by itself, but never raises them).
    sh("link", "set", "xtrunk", "mtu", "9000", ns=eng)
    result = reconcile(
        cfg, [Interface("b", 2, oper_up=False), Interface("c", 3), Interface("d", 4)], netns=eng
    )
    lines = [a.describe() for a in result.actions]
    assert "- xc-v100         vlan 100 (router interface a not wanted)" in lines
    assert "+ xc-v100         vlan 100 on xtrunk for d mtu 9000 up" in lines
    assert "~ xc-v101         down (router b is oper down)" in lines
    assert "~ xc-v102         mtu 4000 -> 9000 (follows xtrunk)" in lines
    state = owned(eng)
    assert state["xc-v100"][:3] == (100, "xcast6-engine:d", 9000)
    assert state["xc-v101"][:3] == (101, "xcast6-engine:b", 9000) and state["xc-v101"][3] == "DOWN"
    assert state["xc-v102"][:3] == (102, "xcast6-engine:c", 9000)
    # b and c keep their VLAN and subnet; b keeps its address while down (keep_addr_on_down).
    assert addrs(eng, "xc-v101") == {"2001:db8:ff:1::1/64"}
    assert addrs(eng, "xc-v102") == {"2001:db8:ff:2::1/64"}
    assert (
        reconcile(
            cfg, [Interface("b", 2, oper_up=False), Interface("c", 3), Interface("d", 4)], netns=eng
        ).actions
        == []
    )

    # Everything gone on the router: every owned link goes, nothing else.
    reconcile(cfg, [], netns=eng)
    assert owned(eng) == {}
    assert "xtrunk" in links(eng)


def test_never_touches_links_it_does_not_own(lab: tuple[str, str]) -> None:
    eng, _ = lab
    # An operator's VLAN on the trunk and a look-alike name without our marker.
    sh("link", "add", "link", "xtrunk", "name", "xtrunk.100", "type", "vlan", "id", "100", ns=eng)
    sh("link", "add", "link", "xtrunk", "name", "xc-v150", "type", "vlan", "id", "150", ns=eng)
    sh("link", "set", "xc-v150", "alias", "operator test link", ns=eng)
    cfg = LinksConfig.from_dict(CONFIG)
    result = reconcile(cfg, [Interface("a", 1)], netns=eng)
    # Auto allocation skipped the operator's VLAN 100.
    assert [(a.op, a.ifname) for a in result.actions] == [("create", "xc-v101"), ("addr-add", "xc-v101")]
    reconcile(cfg, [], netns=eng)
    assert {"xtrunk.100", "xc-v150"} <= links(eng)
    assert netns.link_info(eng, "xc-v150").get("ifalias") == "operator test link"

    explicit = LinksConfig.from_dict({**CONFIG, "map": [{"router_if": "a", "vlan": 150}]})
    with pytest.raises(ReconcileError, match="xc-v150 exists but is not owned by xcast6-engine"):
        reconcile(explicit, [Interface("a", 1)], netns=eng)
    clash = LinksConfig.from_dict({**CONFIG, "map": [{"router_if": "a", "vlan": 100}]})
    with pytest.raises(ReconcileError, match=r"VLAN 100 on xtrunk is already used by xtrunk\.100"):
        reconcile(clash, [Interface("a", 1)], netns=eng)
    assert {"xtrunk.100", "xc-v150"} <= links(eng)


def test_cli_dry_run_then_apply(lab: tuple[str, str], tmp_path: Path) -> None:
    eng, _ = lab
    cfg = tmp_path / "engine.toml"
    cfg.write_text(
        '[links]\nmode = "vlan"\ntrunk = "xtrunk"\n'
        '[[links.map]]\nrouter_if = "ge-1/0/0.0"\nvlan = 42\nsubnet = "2001:db8:42::/64"\n'
    )
    ifs = tmp_path / "ifs.txt"
    ifs.write_text("ge-1/0/0.0 up\n")
    # In-process (CliRunner): a python start per command costs ~10 s under TCG.
    cli._register()
    runner = CliRunner()
    base = [
        "interfaces",
        "apply",
        "-c",
        str(cfg),
        "--router-interfaces",
        str(ifs),
        "--netns",
        eng,
        "--wait-neighbors",
        "0",
    ]
    dry = runner.invoke(cli.app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "+ xc-v42          vlan 42 on xtrunk for ge-1/0/0.0 mtu 4000 up" in dry.stdout
    assert "xc-v42" not in links(eng)
    done = runner.invoke(cli.app, base)
    assert done.exit_code == 0, done.output
    assert owned(eng) == {"xc-v42": (42, "xcast6-engine:ge-1/0/0.0", 4000, "UP")}
    assert addrs(eng, "xc-v42") == {"2001:db8:42::1/64"}
    shown = runner.invoke(cli.app, ["interfaces", "show", "-c", str(cfg), "--netns", eng])
    assert shown.exit_code == 0
    assert "xc-v42" in shown.stdout and "ge-1/0/0.0" in shown.stdout and "2001:db8:42::1/64" in shown.stdout


def test_link_service_over_vlans(lab: tuple[str, str]) -> None:
    """The daemon path: LinkService reconciles on router lists, learns MACs, keeps the last good map."""
    from engine.model import LinkMap
    from vlan.service import LinkService

    eng, rtr = lab
    router_vlan(rtr, 100, "2001:db8:ff::2/64")
    router_vlan(rtr, 101, "2001:db8:ff:1::2/64")
    cfg = LinksConfig.from_dict({**CONFIG, "map": [{"router_if": "ge-*"}]})
    maps: list[LinkMap] = []
    service = LinkService(cfg, netns=eng, neighbor_wait_s=10.0, on_linkmap=maps.append)
    service.update(
        [Interface("ge-0/0/0.0", 1), Interface("ge-0/0/1.0", 2), Interface("lo0.0", 3)]
    )
    assert service.engine_ifname("ge-0/0/0.0") == "xc-v100"
    assert service.engine_ifname("ge-0/0/1.0") == "xc-v101"
    assert service.engine_ifname("lo0.0") is None
    router_mac = bytes.fromhex(str(netns.link_info(rtr, "rtrunk")["address"]).replace(":", ""))
    assert all(lk.router_mac == router_mac for lk in service.linkmap.links())
    assert service.state()["links_unresolved_mac"] == 0
    good = service.linkmap

    # Someone creates a foreign link on the name the next VLAN would take: refused, map kept.
    sh("link", "add", "link", "xtrunk", "name", "xc-v102", "type", "vlan", "id", "999", ns=eng)
    ifs = [Interface("ge-0/0/0.0", 1), Interface("ge-0/0/1.0", 2), Interface("ge-0/0/2.0", 4)]
    assert service.update(ifs) is None
    assert service.linkmap is good and len(maps) == 1
    assert "xc-v102 exists but is not owned" in str(service.state()["last_error"])
    assert set(owned(eng)) == {"xc-v100", "xc-v101"}
