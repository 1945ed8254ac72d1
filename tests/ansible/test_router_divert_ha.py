"""router_divert with engine pairs: BFD-checked next hops, fail open/closed, standby, removal."""

from __future__ import annotations

import re
from pathlib import Path

from tests.ansible.test_ansible_offline import ANSIBLE_DIR, _edited_example, _render_one

MX1 = ANSIBLE_DIR / "inventories/example/hosts.yml"


def _junos(tmp_path: Path, edits: list[tuple[str, str, str]] | None = None) -> list[str]:
    inv = _edited_example(tmp_path, edits) if edits else MX1
    out = tmp_path / "out"
    res = _render_one(inv, "mx1", out)
    assert res.returncode == 0, res.stdout + res.stderr
    return (out / "mx1" / "router-junos.conf").read_text().splitlines()


def test_every_engine_is_a_bfd_checked_next_hop_of_both_halves_and_fails_open(tmp_path: Path) -> None:
    lines = _junos(tmp_path)
    rib = "set routing-instances XCAST6-FBF routing-options rib XCAST6-FBF.inet6.0 static route"
    assert f"{rib} ::/0 next-table inet6.0" in lines
    for half in ("::/1", "8000::/1"):
        for engine in ("2001:db8:100:f100::2", "2001:db8:100:f100::3"):
            nh = f"{rib} {half} qualified-next-hop {engine} bfd-liveness-detection"
            assert f"{nh} minimum-interval 100" in lines and f"{nh} multiplier 3" in lines
    assert not [x for x in lines if " preference " in x]            # active-active: equal next hops
    assert not [x for x in lines if re.search(r"static route \S+ next-hop ", x)]   # no unchecked next hop
    # XCAST6 only (next header 41) with TC 010111xx, not every DSCP 23 packet
    term = "set firewall family inet6 filter XCAST6-DIVERT term xcast6 from"
    assert f"{term} next-header 41" in lines and f"{term} traffic-class 23" in lines


def test_fail_closed_and_active_standby(tmp_path: Path) -> None:
    lines = _junos(tmp_path, [("mx1", "xcast6_fail_mode: open", "xcast6_fail_mode: closed"),
                              ("mx1", "xcast6_ha_mode: active-active", "xcast6_ha_mode: active-standby")])
    rib = "set routing-instances XCAST6-FBF routing-options rib XCAST6-FBF.inet6.0 static route"
    assert f"{rib} ::/0 discard" in lines and not [x for x in lines if "next-table" in x]
    assert f"{rib} ::/1 qualified-next-hop 2001:db8:100:f100::2 preference 5" in lines
    assert f"{rib} ::/1 qualified-next-hop 2001:db8:100:f100::3 preference 6" in lines


def test_absent_removes_what_present_adds(tmp_path: Path) -> None:
    present = _junos(tmp_path / "p")
    absent = _junos(tmp_path / "a", [("mx1", "xcast6_fail_mode: open",
                                      "xcast6_fail_mode: open\nxcast6_divert_state: absent")])
    deletes = [x.removeprefix("delete ") for x in absent if x.startswith("delete ")]
    assert deletes and not [x for x in absent if x.startswith("set ") and "XCAST6" in x]
    # every statement the divert set is under something the removal deletes, except the trunk's
    # vlan-tagging (other units may use it) and the NETCONF service (the operator's too)
    kept = ("vlan-tagging", "system services netconf")
    for line in (x for x in present if x.startswith("set ")):
        stmt = line.removeprefix("set ")
        if any(k in stmt for k in kept):
            continue
        assert any(stmt.startswith(d) for d in deletes), f"not removed: {line}"
    # the operator's chained filters come back as they were
    assert "set interfaces ae0 unit 0 family inet6 filter input-list [ EDGE-PROTECT EDGE-COUNT ]" in absent


def test_cisco_engine_pairs_are_rendered_now(tmp_path: Path) -> None:
    """IOS-XE/IOS-XR pairs (tests/ansible/test_router_divert_cisco.py has the details)."""
    inv = _edited_example(tmp_path, [("xe1", "xcast6_sync:", "xcast6_divert_engines:\n"
                                      "  - address: 2001:db8:200:f100::2\n"
                                      "  - address: 2001:db8:200:f100::3\n"
                                      "xcast6_ha_mode: active-standby\nxcast6_sync:")])
    res = _render_one(inv, "xe1", tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr


def test_review_syntax_slips_fixed(tmp_path: Path) -> None:
    """IOS-XE v3 group restricts with `access ipv6 ACL`; IOS-XR v3 user has `clear` before each
    password and a non-default NETCONF port is configured."""
    v3 = "  snmp:\n    version: 3\n    user: xcast6\n    auth_protocol: sha\n    priv_protocol: aes128\n"
    inv = _edited_example(tmp_path, [
        ("xe1", "  snmp:\n    version: 2\n", v3),
        ("xr1", "  snmp:\n    version: 2\n", v3),
        ("xr1", "    port: 830\n", "    port: 8300\n"),
    ])
    out = tmp_path / "out"
    for host in ("xe1", "xr1"):
        res = _render_one(inv, host, out)
        assert res.returncode == 0, res.stdout + res.stderr
    xe = (out / "xe1" / "router-iosxe.conf").read_text()
    xr = (out / "xr1" / "router-iosxr.conf").read_text()
    assert "snmp-server group XCAST6 v3 priv read XCAST6-ROUTES access ipv6 XCAST6-SNMP" in xe
    assert re.search(r"snmp-server user xcast6 XCAST6 v3 auth sha clear \S+ priv aes 128 clear \S+", xr)
    assert "ssh server netconf port 8300" in xr
