"""The lab's wiring plan (``Topology.wiring``), pure: names, VLANs, addresses and MTUs of every
engine link in both link modes, with one engine per router or engine pairs (no root needed).

In vlan mode each engine has a trunk of its own to its router, carrying the same VLAN plan as
its pair's; BFD runs on each engine's divert link (interface 0's VLAN on its own trunk)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import build
from lab.topology import Topology

IFNAMSIZ = 16      # Linux: names of at most 15 bytes


def topo(mode: str, engines: int, vlan_base: int = 100, tmp: Path | None = None) -> Topology:
    return Topology(prefix="xw-", state_dir=tmp or Path("/tmp/xw-lab-unused"), mode=mode,
                    engines_per_router=engines, vlan_base=vlan_base)


def interfaces_by_namespace(t: Topology) -> dict[str, list[str]]:
    """Every interface name ``lab up`` creates, per namespace (duplicates kept, to be found)."""
    out: dict[str, list[str]] = {ns: [] for ns in t.all_namespaces()}
    for h in (t.sender, *t.receivers, t.mtu_host):
        out[t.ns(h.name)].append("eth0")
        out[t.router_ns(h.router)].append(h.router_if)
    out[t.router_ns("a")].append("ra-rb")
    out[t.router_ns("b")] += ["rb-ra", "rb-h5b"]
    out[t.ns("h5")].append("eth1")
    for w in t.wiring_plan():
        if w.router_trunk is not None and w.engine_trunk is not None:
            out[w.router_ns].append(w.router_trunk)
            out[w.engine_ns].append(w.engine_trunk)
        for lk in w.links:
            out[w.router_ns].append(lk.router_name)
            out[w.engine_ns].append(lk.engine_name)
    return out


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(["direct", "vlan"]), engines=st.integers(1, 4),
       vlan_base=st.integers(1, 4094 - 16))
def test_plan_names_addresses_and_vlans_never_collide(mode: str, engines: int, vlan_base: int) -> None:
    t = topo(mode, engines, vlan_base)
    plan = t.wiring_plan()
    assert [w.engine for w in plan] == t.engines
    for ns, names in interfaces_by_namespace(t).items():
        assert len(names) == len(set(names)), f"{ns}: an interface name twice: {sorted(names)}"
        assert all(0 < len(n.encode()) < IFNAMSIZ for n in names), names
    for r, router in t.routers.items():
        wirings = [w for w in plan if w.router == r]
        assert [w.engine for w in wirings] == t.router_engines(r)
        # every engine has a full set of links, one per router interface, in interface order
        for w in wirings:
            assert [lk.router_if for lk in w.links] == list(router.interfaces)
            assert w.divert == w.links[0] and w.divert.router_if == router.interfaces[0]
            assert [lk.mtu for lk in w.links] == [t.link_mtu(i) for i in router.interfaces]
            assert all(lk.mtu <= w.trunk_mtu for lk in w.links)
        # addresses: each link's ends are in its own /64, and no two links (nor host links) overlap
        nets = [ipaddress.ip_network(f"{h.net}/64") for h in (t.sender, *t.receivers, t.mtu_host)
                if h.router == r]
        for w in wirings:
            for lk in w.links:
                net = ipaddress.ip_network(lk.subnet)
                ends = {ipaddress.ip_address(lk.router_addr), ipaddress.ip_address(lk.engine_addr)}
                assert ends == {net[1], net[2]}, (lk, net)
                assert lk.router_addr != lk.engine_addr
                assert not any(net.overlaps(n) for n in nets), f"{lk.subnet} overlaps another link"
                nets.append(net)
        if mode == "direct":
            assert all(w.router_trunk is None and w.engine_trunk is None for w in wirings)
            assert all(lk.vlan is None for w in wirings for lk in w.links)
            continue
        # vlan mode: a trunk of its own per engine, the same VLAN plan on each, unique per trunk
        trunks = [w.router_trunk for w in wirings]
        assert len(set(trunks)) == len(trunks) and all(w.engine_trunk == "trunk" for w in wirings)
        for w in wirings:
            vids = [lk.vlan for lk in w.links]
            assert vids == [t.vlan_id(k) for k in range(len(router.interfaces))]
            assert len(set(vids)) == len(vids) and all(v is not None and 1 <= v <= 4094 for v in vids)


@pytest.mark.parametrize("mode", ["direct", "vlan"])
def test_plan_is_what_the_divert_bfd_and_snmp_use(mode: str) -> None:
    """The divert next hops (lab.bfdroute, wait_bfd), the router's nftables exclusions and the SNMP
    source all name the plan's links: engine e's link k is ``Router.engine_link(k, e)``."""
    t = topo(mode, 2)
    ruleset = t.divert_ruleset("a")
    for w in t.wiring_plan():
        idx = t.engine_index(w.engine)
        for lk in w.links:
            assert (lk.router_name, lk.engine_name, lk.router_addr, lk.engine_addr) == \
                t.routers[w.router].engine_link(lk.k, idx)
            assert lk.subnet == t.routers[w.router].engine_subnet(lk.k, idx)
            # a packet coming back from any engine, on any link, is never diverted again
            if w.router == "a":
                assert f'"{lk.router_name}"' in ruleset
        assert build.source_url(t, w.engine).startswith(f"snmp://public@[{w.divert.router_addr}]:161")


def test_vlan_pair_gives_router_a_two_trunks_with_the_same_vlans() -> None:
    t = topo("vlan", 2)
    a, a2, b = t.wiring_plan()
    assert (a.router_trunk, a2.router_trunk, b.router_trunk) == ("trunk", "trunkb", "trunk")
    assert (a.router_ns, a2.router_ns, a2.engine_ns) == ("xw-ra", "xw-ra", "xw-ea2")
    assert [(lk.router_name, lk.vlan) for lk in a2.links[:3]] == [("eng0b", 100), ("eng1b", 101),
                                                                   ("eng2b", 102)]
    assert (a2.divert.engine_name, a2.divert.router_addr, a2.divert.engine_addr) == \
        ("to-ra-snd", "2001:db8:ea0:1::1", "2001:db8:ea0:1::2")


def test_a_vlan_base_that_leaves_1_to_4094_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"vlan_base 4091: VLAN 4095 of ra-hm is outside 1-4094"):
        topo("vlan", 1, vlan_base=4091).wiring_plan()
    topo("direct", 1, vlan_base=4091).wiring_plan()     # no VLANs in direct mode


class Recorder:
    """Stands in for lab.netns: records the commands ``_links`` would run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str, mtu: int = 1500) -> None:
        self.calls.append(("veth", ns_a, name_a, ns_b, name_b, mtu))

    def ip(self, ns: str, *args: str, check: bool = True) -> None:
        self.calls.append(("ip", ns, *args))

    def batch(self, ns: str, lines: list[str]) -> None:
        self.calls.append(("batch", ns, *lines))

    def run(self, cmd: list[str], ns: str | None = None, **_kw: Any) -> None:
        self.calls.append(("run", ns, *cmd))


def test_lab_up_builds_each_engines_trunk_and_vlans_as_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(build, "netns", rec)
    t = topo("vlan", 2)
    build._links(t)
    trunks = [c for c in rec.calls if c[0] == "veth" and c[2].startswith("trunk")]
    assert trunks == [("veth", "xw-ra", "trunk", "xw-ea", "trunk", 9000),
                      ("veth", "xw-ra", "trunkb", "xw-ea2", "trunk", 9000),
                      ("veth", "xw-rb", "trunk", "xw-eb", "trunk", 9000)]
    batches = {(c[1], c[2].split()[3]): c[2:] for c in rec.calls if c[0] == "batch"}
    # engine a2: on its own trunk both ends, VLAN 100 + k, the router interface's MTU, addresses
    router_a2 = batches[("xw-ra", "trunkb")]
    assert "link add link trunkb name eng0b type vlan id 100" in router_a2
    assert "addr add 2001:db8:ea0:1::1/64 dev eng0b nodad" in router_a2
    hm = t.routers["a"].interfaces.index("ra-hm")
    assert f"link set eng{hm}b mtu 1280 up" in router_a2
    engine_a2 = batches[("xw-ea2", "trunk")]
    assert "link add link trunk name to-ra-snd type vlan id 100" in engine_a2
    assert "addr add 2001:db8:ea0:1::2/64 dev to-ra-snd nodad" in engine_a2
    # no engine link is a veth of its own in vlan mode
    assert not [c for c in rec.calls if c[0] == "veth" and (c[2].startswith("eng") or c[4].startswith("to-"))]


def test_direct_mode_builds_a_veth_per_engine_link(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(build, "netns", rec)
    t = topo("direct", 2)
    build._links(t)
    veths = {(c[1], c[2], c[3], c[4]) for c in rec.calls if c[0] == "veth"}
    for w in t.wiring_plan():
        for lk in w.links:
            assert (w.router_ns, lk.router_name, w.engine_ns, lk.engine_name) in veths
    assert not [c for c in rec.calls if c[0] == "batch" or (c[0] == "veth" and c[2].startswith("trunk"))]


def test_engine_pair_config_runs_bfd_on_the_divert_link_of_its_own_trunk(tmp_path: Path) -> None:
    from api.config import load_config

    t = topo("vlan", 2, tmp=tmp_path)
    t.state_dir.mkdir(exist_ok=True)
    for e in ("a", "a2"):
        path = tmp_path / f"{e}.toml"
        path.write_text(build.engine_toml(t, e))
        doc = tomllib.loads(path.read_text())
        divert = t.wiring(e).divert
        assert doc["ha"]["links"] == [divert.engine_name] == ["to-ra-snd"]
        entry = next(m for m in doc["links"]["map"] if m["link"] == divert.engine_name)
        assert (entry["engine_addr"], entry["router_addr"]) == (divert.engine_addr, divert.router_addr)
        load_config(path)      # the daemon takes it
