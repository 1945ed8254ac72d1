"""router_divert's pre-push check: refuse when the operator's route-map/ACL sequence or Junos
interface-routes rib-group is taken (filter_plugins/xcast6_precheck.py, tasks/precheck*.yml).

No router runs here: the samples below are written in each platform's documented output format
(sources in the plugin's docstring and next to each sample).  The tasks' refusal path runs for real
through ansible-playbook on localhost, fed recorded output instead of the device command.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
PLUGIN = ANSIBLE_DIR / "roles" / "router_divert" / "filter_plugins" / "xcast6_precheck.py"
BIN = Path(sys.executable).parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("xcast6_precheck", PLUGIN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["xcast6_precheck"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


pc = _load()
ENGINES = [{"address": "2001:db8:200:f200::2"}, {"address": "2001:db8:200:f200::3"}]

# IOS-XE `show running-config | section ^route-map` (16.x/17.x): entries as the running config prints
# them, IPv6 addresses upper case. Format: route-map command reference and "IPv6 Policy-Based Routing"
# (https://www.cisco.com/c/en/us/td/docs/ios-xml/ios/iproute_pi/configuration/xe-16/iri-xe-16-book/iri-ipv6-pbr.html).
IOSXE = """\
route-map PBR-TRANSIT permit 1
 description operator's own first entry
 match ipv6 address TRANSIT-A
 set ipv6 next-hop 2001:DB8:FF::1
route-map PBR-TRANSIT permit 20
 match ipv6 address TRANSIT-B
 set ipv6 default next-hop 2001:DB8:FF::2
route-map PBR-TRANSIT deny 30
route-map XCAST6-DIVERT permit 10
 match ipv6 address XCAST6-DIVERT
 set ipv6 next-hop 2001:DB8:200:F200::2
route-map OTHER permit 10
 set ipv6 next-hop 2001:DB8:200:F200::2 2001:DB8:99::9
"""
# `| section route-map` (no anchor) also prints the interfaces that apply a policy.
IOSXE_WITH_INTERFACES = """\
interface GigabitEthernet0/0/1
 ipv6 address 2001:DB8:1::1/64
 ipv6 policy route-map PBR-TRANSIT
route-map PBR-TRANSIT permit 5
 match ipv6 address XCAST6-DIVERT
 set ipv6 next-hop 2001:DB8:200:F200::3
interface GigabitEthernet0/0/2
 ipv6 policy route-map XCAST6-DIVERT
"""

# IOS-XR `show running-config ipv6 access-list` (timestamp line, `!` separators, ABF `nexthop1`).
# Format: IOS XR "Implementing Access Lists and Prefix Lists" / ACL-based forwarding
# (https://www.cisco.com/c/en/us/td/docs/routers/asr9000/software/asr9k-r7-1/addr-serv/configuration/guide/b-ip-addresses-cg-asr9000-71x/b-ip-addresses-cg-asr9000-71x_chapter_0100.html).
IOSXR = """\
Thu Dec  3 15:02:11.417 UTC
ipv6 access-list EDGE-IN
 1 permit ipv6 any any dscp 23 nexthop1 ipv6 2001:db8:300:f300::2 nexthop2 ipv6 2001:db8:300:f300::3
 10 remark keep the operator's first rule
 20 deny ipv6 2001:db8:bad::/48 any
 30 permit ipv6 any any
!
ipv6 access-list TAKEN-IN
 1 permit tcp any any eq bgp
 2 permit ipv6 any any nexthop1 vrf OTHER ipv6 2001:db8:99::9
!
ipv6 access-list XCAST6-DIVERT
 10 permit ipv6 any any dscp 23 nexthop1 ipv6 2001:db8:300:f300::2
 20 permit ipv6 any any
!
"""
XR_ENGINES = ["2001:db8:300:f300::2", "2001:db8:300:f300::3"]

# Junos `show configuration routing-options | display set` (display set: one full-path statement per
# line; `deactivate` for inactive ones; `{master}` banner on dual-RE systems).
JUNOS_OTHER = """\
{master}
set routing-options interface-routes rib-group inet6 OPS-RIB
set routing-options rib-groups OPS-RIB import-rib [ inet6.0 MGMT.inet6.0 ]
set routing-options router-id 192.0.2.1
"""
JUNOS_OURS = """\
set routing-options rib-groups XCAST6-RIBGRP import-rib [ inet6.0 XCAST6-FBF.inet6.0 ]
set routing-options interface-routes rib-group inet6 XCAST6-RIBGRP
set routing-options interface-routes rib-group inet OPS-V4
"""


def _t(name: str, seq: int, var: str = "router_divert_policy_seq") -> dict[str, object]:
    return {"name": name, "seq": seq, "var": var}


# -- IOS-XE --

def test_iosxe_parse_keeps_entries_and_bodies() -> None:
    entries = pc.parse_iosxe_route_maps(IOSXE)
    assert sorted(entries) == [("OTHER", 10), ("PBR-TRANSIT", 1), ("PBR-TRANSIT", 20),
                               ("PBR-TRANSIT", 30), ("XCAST6-DIVERT", 10)]
    assert entries[("PBR-TRANSIT", 30)].action == "deny" and entries[("PBR-TRANSIT", 30)].body == []
    assert entries[("PBR-TRANSIT", 1)].body[1] == "match ipv6 address TRANSIT-A"


def test_iosxe_taken_sequence_is_refused_naming_it_and_the_variable() -> None:
    out = pc.iosxe_route_map_conflicts(IOSXE, [_t("PBR-TRANSIT", 1)], "XCAST6-DIVERT", ENGINES)
    assert len(out) == 1
    assert "route-map PBR-TRANSIT permit 1 already exists" in out[0]
    assert "match ipv6 address TRANSIT-A" in out[0] and "router_divert_policy_seq" in out[0]


@pytest.mark.parametrize("seq", [2, 19, 21, 65535])
def test_iosxe_free_sequence_passes(seq: int) -> None:
    assert pc.iosxe_route_map_conflicts(IOSXE, [_t("PBR-TRANSIT", seq)], "XCAST6-DIVERT", ENGINES) == []


def test_iosxe_deny_and_empty_entries_are_taken() -> None:
    out = pc.iosxe_route_map_conflicts(IOSXE, [_t("PBR-TRANSIT", 30)], "XCAST6-DIVERT", ENGINES)
    assert out and "deny 30" in out[0] and "matches everything" in out[0]


def test_iosxe_our_own_entries_pass_on_a_rerun() -> None:
    # ours by the ACL it matches (engine address in upper case), and ours by next hop alone
    targets = [_t("XCAST6-DIVERT", 10, "router_divert_filter_name")]
    assert pc.iosxe_route_map_conflicts(IOSXE, targets, "XCAST6-DIVERT", ENGINES) == []
    assert pc.iosxe_route_map_conflicts(IOSXE_WITH_INTERFACES, [_t("PBR-TRANSIT", 5)], "XCAST6-DIVERT",
                                        ENGINES) == []


def test_iosxe_next_hop_beyond_our_engines_is_not_ours() -> None:
    out = pc.iosxe_route_map_conflicts(IOSXE, [_t("OTHER", 10)], "XCAST6-DIVERT", ENGINES)
    assert out and "2001:DB8:99::9" in out[0]


def test_iosxe_our_route_map_name_taken_names_the_filter_variable() -> None:
    theirs = "route-map XCAST6-DIVERT permit 10\n match ipv6 address SOMETHING\n"
    out = pc.iosxe_route_map_conflicts(theirs, [_t("XCAST6-DIVERT", 10, "router_divert_filter_name")],
                                       "XCAST6-DIVERT", ENGINES)
    assert out and out[0].endswith("router_divert_filter_name")


def test_iosxe_interface_sections_are_not_route_map_bodies() -> None:
    entries = pc.parse_iosxe_route_maps(IOSXE_WITH_INTERFACES)
    assert list(entries) == [("PBR-TRANSIT", 5)]
    assert all("policy" not in line for line in entries[("PBR-TRANSIT", 5)].body)


def test_iosxe_empty_output_means_nothing_taken() -> None:
    assert pc.iosxe_route_map_conflicts("", [_t("PBR-TRANSIT", 1)], "XCAST6-DIVERT", ENGINES) == []


@pytest.mark.parametrize("err", ["% Invalid input detected at '^' marker.", "% Incomplete command."])
def test_iosxe_cli_error_is_not_a_pass(err: str) -> None:
    with pytest.raises(ValueError, match="refused the command"):
        pc.iosxe_route_map_conflicts(f"show running-config | section ^route-map\n{err}\n",
                                     [_t("X", 1)], "XCAST6-DIVERT", ENGINES)


# -- IOS-XR --

def test_iosxr_parse() -> None:
    acls = pc.parse_iosxr_acls(IOSXR)
    assert sorted(acls) == ["EDGE-IN", "TAKEN-IN", "XCAST6-DIVERT"]
    assert sorted(acls["EDGE-IN"]) == [1, 10, 20, 30]
    assert acls["EDGE-IN"][10] == "remark keep the operator's first rule"


def test_iosxr_taken_sequence_is_refused() -> None:
    out = pc.iosxr_acl_conflicts(IOSXR, [_t("TAKEN-IN", 1), _t("TAKEN-IN", 2), _t("EDGE-IN", 10)], XR_ENGINES)
    assert [o.split(" already")[0] for o in out] == [
        "ipv6 access-list TAKEN-IN sequence 1", "ipv6 access-list TAKEN-IN sequence 2",
        "ipv6 access-list EDGE-IN sequence 10"]
    assert all(o.endswith("router_divert_policy_seq") for o in out)
    assert "permit tcp any any eq bgp" in out[0]


def test_iosxr_our_abf_entry_and_free_sequences_pass() -> None:
    targets = [_t("EDGE-IN", 1), _t("EDGE-IN", 2), _t("NEW-ACL", 1), _t("XCAST6-DIVERT", 10)]
    assert pc.iosxr_acl_conflicts(IOSXR, targets, XR_ENGINES) == []


def test_iosxr_no_acl_configured() -> None:
    text = "Thu Dec  3 15:02:11.417 UTC\n% No such configuration item(s)\n"
    assert pc.parse_iosxr_acls(text) == {}
    assert pc.iosxr_acl_conflicts(text, [_t("EDGE-IN", 1)], XR_ENGINES) == []


def test_iosxr_cli_error_is_not_a_pass() -> None:
    with pytest.raises(ValueError, match="refused"):
        pc.iosxr_acl_conflicts("% Invalid input detected at '^' marker.\n", [_t("A", 1)], XR_ENGINES)


def test_bad_engine_and_target_are_named() -> None:
    with pytest.raises(ValueError, match="'nope' is not an IPv6 address"):
        pc.iosxr_acl_conflicts(IOSXR, [_t("EDGE-IN", 1)], ["nope"])
    with pytest.raises(ValueError, match="needs name, seq"):
        pc.iosxr_acl_conflicts(IOSXR, [{"name": "EDGE-IN"}], XR_ENGINES)


# -- Junos --

def test_junos_other_rib_group_is_refused() -> None:
    out = pc.junos_rib_group_conflicts(JUNOS_OTHER, "XCAST6-RIBGRP")
    assert len(out) == 1
    assert "interface-routes rib-group inet6 already names OPS-RIB" in out[0]
    assert "router_divert_rib_group" in out[0]


def test_junos_our_group_inet4_groups_and_none_pass() -> None:
    assert pc.junos_rib_group_conflicts(JUNOS_OURS, "XCAST6-RIBGRP") == []
    assert pc.junos_rib_group_conflicts("set routing-options router-id 192.0.2.1\n", "XCAST6-RIBGRP") == []
    assert pc.junos_rib_group_conflicts("", "XCAST6-RIBGRP") == []


def test_junos_inactive_group_is_still_taken() -> None:
    text = JUNOS_OTHER + "deactivate routing-options interface-routes rib-group inet6 OPS-RIB\n"
    text = text.replace("set routing-options interface-routes rib-group inet6 OPS-RIB\n", "")
    out = pc.junos_rib_group_conflicts(text, "XCAST6-RIBGRP")
    assert out and "OPS-RIB (inactive)" in out[0]


def test_junos_error_is_not_a_pass() -> None:
    with pytest.raises(ValueError, match="refused"):
        pc.junos_rib_group_conflicts("error: syntax error, expecting <command>: routing-optons\n", "G")


# -- properties --

_name = st.from_regex(r"[A-Z][A-Z0-9_-]{0,12}", fullmatch=True)
_seq = st.integers(min_value=1, max_value=65535)


@given(st.dictionaries(st.tuples(_name, _seq), st.sampled_from(["permit", "deny"]), max_size=12),
       _name, _seq)
def test_iosxe_a_target_is_refused_iff_a_foreign_entry_holds_it(
        entries: dict[tuple[str, int], str], name: str, seq: int) -> None:
    text = "".join(f"route-map {n} {a} {s}\n match ipv6 address OPS-{n}\n" for (n, s), a in entries.items())
    out = pc.iosxe_route_map_conflicts(text, [_t(name, seq)], "XCAST6-DIVERT", ENGINES)
    assert bool(out) == ((name, seq) in entries)
    assert pc.parse_iosxe_route_maps(text).keys() == entries.keys()


_ACES = ["permit ipv6 any any", "deny ipv6 any any", "remark x",
         "permit ipv6 any any nexthop1 ipv6 2001:db8::9"]


@given(st.dictionaries(_name, st.dictionaries(_seq, st.sampled_from(_ACES), max_size=6), max_size=5),
       _name, _seq, st.booleans())
def test_iosxr_a_target_is_refused_iff_a_foreign_ace_holds_it(
        acls: dict[str, dict[int, str]], name: str, seq: int, ours: bool) -> None:
    if ours:
        acls.setdefault(name, {})[seq] = f"permit ipv6 any any dscp 23 nexthop1 ipv6 {XR_ENGINES[0].upper()}"
    text = "Thu Dec  3 15:02:11.417 UTC\n" + "".join(
        f"ipv6 access-list {n}\n" + "".join(f" {s} {ace}\n" for s, ace in aces.items()) + "!\n"
        for n, aces in acls.items())
    out = pc.iosxr_acl_conflicts(text, [_t(name, seq)], XR_ENGINES)
    assert bool(out) == (not ours and seq in acls.get(name, {}))


@given(st.lists(_name, max_size=3), st.booleans())
def test_junos_refused_iff_another_group_is_named(groups: list[str], with_ours: bool) -> None:
    lines = [f"set routing-options interface-routes rib-group inet6 {g}" for g in groups]
    if with_ours:
        lines.append("set routing-options interface-routes rib-group inet6 XCAST6-RIBGRP")
    out = pc.junos_rib_group_conflicts("\n".join(lines), "XCAST6-RIBGRP")
    assert len(out) == len([g for g in groups if g != "XCAST6-RIBGRP"])


# -- the role's tasks, on recorded output --

def role_with_recorded_read(tmp_path: Path, platform: str) -> Path:
    """A copy of the role under ``tmp_path``/roles whose device read (precheck_read_<platform>.yml,
    also the removal's read) returns the text of the variable router_divert_recorded, as the
    *_command module would: ``stdout`` is a list with the command's text. Returns the roles dir."""
    roles = tmp_path / "roles"
    if not roles.exists():
        shutil.copytree(ANSIBLE_DIR / "roles" / "router_divert", roles / "router_divert")
    read = roles / "router_divert" / "tasks" / f"precheck_read_{platform}.yml"
    assert read.exists()
    read.write_text("---\n- name: Recorded output instead of the router\n  ansible.builtin.set_fact:\n"
                    "    router_divert_precheck_raw: \"{{ {'stdout': [router_divert_recorded]} }}\"\n")
    return roles


def ansible_env(tmp_path: Path, roles: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(roles), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": "/tmp/xcast6-ansible-tmp", "HOME": str(tmp_path)}


def _evaluate(tmp_path: Path, platform: str, output: str, links: list[dict[str, Any]],
              extra: dict[str, Any] | None = None,
              tracks: str | None = None) -> subprocess.CompletedProcess[str]:
    """tasks/precheck.yml of a copy of the role whose device read returns ``output`` (``tracks``:
    IOS-XE track lines, part of the same running configuration)."""
    roles = role_with_recorded_read(tmp_path, platform)
    play = tmp_path / "play.yml"
    hostvars = {"xcast6_platform": platform, "xcast6_links": links,
                "xcast6_ingress": {"engine_address": "2001:db8:200:f200::2"},
                "router_divert_recorded": output + (tracks or ""),
                **(extra or {})}
    (tmp_path / "vars.json").write_text(json.dumps(hostvars))
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  connection: local\n  vars_files: [vars.json]\n"
        "  tasks:\n    - ansible.builtin.include_role:\n        name: router_divert\n"
        "        tasks_from: precheck.yml\n")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(play)], cwd=tmp_path,
                          env=ansible_env(tmp_path, roles), capture_output=True, text=True, timeout=300)


def test_each_platform_reads_with_its_own_command_module() -> None:
    tasks = ANSIBLE_DIR / "roles" / "router_divert" / "tasks"
    want = {"junos": ("junipernetworks.junos.junos_command",
                      "show configuration routing-options | display set"),
            # the whole running configuration: route-maps, tracks, ACLs, and all the removal needs
            "iosxe": ("cisco.ios.ios_command", "show running-config"),
            "iosxr": ("cisco.iosxr.iosxr_command", "show running-config")}
    for platform, (module, command) in want.items():
        text = (tasks / f"precheck_read_{platform}.yml").read_text()
        assert f"  {module}:" in text and f"- {command}\n" in text and text.count("      - ") == 1
        assert "register: router_divert_precheck_raw" in text


def test_tasks_refuse_a_taken_iosxe_sequence(tmp_path: Path) -> None:
    links = [{"router_interface": "Gi0/0/1", "existing_input": "PBR-TRANSIT"}]
    res = _evaluate(tmp_path, "iosxe", IOSXE, links)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "not pushed: route-map PBR-TRANSIT permit 1 already exists" in res.stdout
    assert "router_divert_policy_seq" in res.stdout


def test_tasks_pass_a_free_sequence_and_refuse_a_taken_own_route_map(tmp_path: Path) -> None:
    links = [{"router_interface": "Gi0/0/1", "existing_input": "PBR-TRANSIT"}]
    res = _evaluate(tmp_path, "iosxe", IOSXE, links, {"router_divert_policy_seq": 2})
    assert res.returncode == 0, res.stdout + res.stderr
    theirs = "route-map XCAST6-DIVERT permit 10\n match ipv6 address OPS\n"
    res = _evaluate(tmp_path, "iosxe", theirs, [{"router_interface": "Gi0/0/0"}])
    assert res.returncode == 2 and "choose a free sequence with router_divert_filter_name" in res.stdout


def test_tasks_refuse_a_taken_iosxr_ace(tmp_path: Path) -> None:
    taken = [{"router_interface": "Hu0/0/0/1", "existing_input": "TAKEN-IN"}]
    res = _evaluate(tmp_path, "iosxr", IOSXR, taken, {"xcast6_ingress": {"engine_address": XR_ENGINES[0]}})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ipv6 access-list TAKEN-IN sequence 1 already exists" in res.stdout
    # ABF to both engines of a pair: ours only when both are engines of this router
    edge = [{"router_interface": "Hu0/0/0/1", "existing_input": "EDGE-IN"}]
    res = _evaluate(tmp_path, "iosxr", IOSXR, edge, {"xcast6_ingress": {"engine_address": XR_ENGINES[0]}})
    assert res.returncode == 2 and "EDGE-IN sequence 1" in res.stdout, res.stdout + res.stderr
    pair = {"xcast6_divert_engines": [{"address": a} for a in XR_ENGINES]}
    res = _evaluate(tmp_path, "iosxr", IOSXR, edge, pair)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tasks_refuse_another_junos_rib_group(tmp_path: Path) -> None:
    res = _evaluate(tmp_path, "junos", JUNOS_OTHER, [{"router_interface": "ge-0/0/0.0"}])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "rib-group inet6 already names OPS-RIB" in res.stdout
    res = _evaluate(tmp_path, "junos", JUNOS_OURS, [{"router_interface": "ge-0/0/0.0"}])
    assert res.returncode == 0, res.stdout + res.stderr


def test_tasks_fail_when_the_output_is_a_cli_error(tmp_path: Path) -> None:
    res = _evaluate(tmp_path, "iosxe", "% Invalid input detected at '^' marker.\n",
                    [{"router_interface": "Gi0/0/0"}])
    assert res.returncode == 2 and "refused the command" in res.stdout


# -- IOS-XE track objects (BFD-checked next hops number their tracks from router_divert_iosxe_track_base) --

IOSXE_TRACKS = (
    # `show running-config | include ^track`: the header lines only (IOS-XE Object Tracking,
    # https://cisco.com/en/US/docs/ios-xml/ios/ipapp/configuration/15-s/iap-ipv6-route-track.html)
    "track 1 interface GigabitEthernet0/0/0 line-protocol\n"
    "track 161 ipv6 route 2001:DB8:200:F200::2/128 reachability\n"
    "track 162 ip sla 7 reachability\n"
)


def test_iosxe_tracks_parse_headers_only() -> None:
    assert pc.parse_iosxe_tracks(IOSXE_TRACKS + " delay up 5\n") == {
        1: "track 1 interface GigabitEthernet0/0/0 line-protocol",
        161: "track 161 ipv6 route 2001:DB8:200:F200::2/128 reachability",
        162: "track 162 ip sla 7 reachability"}


def test_iosxe_our_track_passes_and_a_foreign_one_is_refused_naming_the_base() -> None:
    engines = ["2001:db8:200:f200::2", "2001:db8:200:f200::3"]
    out = pc.iosxe_track_conflicts(IOSXE_TRACKS, 160, engines)
    assert out == ["track 162 already exists and is not the XCAST6 divert's (track 162 ip sla 7 "
                   "reachability): choose free track numbers with router_divert_iosxe_track_base"]
    assert pc.iosxe_track_conflicts(IOSXE_TRACKS, 170, engines) == []
    # our address under the other engine's number is not ours
    assert len(pc.iosxe_track_conflicts(IOSXE_TRACKS, 160, engines[::-1])) == 2


def test_iosxe_track_base_and_cli_errors_are_named() -> None:
    with pytest.raises(ValueError, match="router_divert_iosxe_track_base 'x'"):
        pc.iosxe_track_conflicts("", "x", [])
    with pytest.raises(ValueError, match="refused the command"):
        pc.iosxe_track_conflicts("% Invalid input detected at '^' marker.\n", 160, ["2001:db8::2"])


def test_tasks_refuse_a_taken_track_number_only_with_checked_next_hops(tmp_path: Path) -> None:
    links = [{"router_interface": "Gi0/0/0"}]
    taken = "track 161 interface GigabitEthernet0/0/0 line-protocol\n"
    res = _evaluate(tmp_path, "iosxe", "", links, {"xcast6_divert_bfd": True}, tracks=taken)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "not pushed: track 161 already exists" in res.stdout
    res = _evaluate(tmp_path, "iosxe", "", links, {"xcast6_divert_bfd": False}, tracks=taken)
    assert res.returncode == 0, res.stdout + res.stderr
