"""router_divert on IOS-XE and IOS-XR: engine pairs with checked next hops, what the role refuses,
removal of exactly what it adds, the safe-change task list, and the Junos SNMPv3 keyword defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.ansible.test_ansible_offline import ANSIBLE_DIR, _edited_example, _render_one

ROLE = ANSIBLE_DIR / "roles/router_divert"
XE_PAIR = ("xe1", "xcast6_sync:", "xcast6_divert_engines:\n  - address: 2001:db8:200:f200::2\n"
           "  - address: 2001:db8:200:f200::3\nxcast6_ha_mode: active-standby\nxcast6_sync:")
XR_PAIR = ("xr1", "xcast6_sync:", "xcast6_divert_engines:\n"
           "  - address: 2001:db8:300:f300::2\n    track: XCAST6-E1\n"
           "  - address: 2001:db8:300:f300::3\n    track: XCAST6-E2\n"
           "xcast6_ha_mode: active-standby\nxcast6_sync:")
ABSENT = "xcast6_divert_state: absent\nxcast6_sync:"


def _render(tmp_path: Path, host: str, edits: list[tuple[str, str, str]]) -> list[str]:
    res = _render_one(_edited_example(tmp_path, edits), host, tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    conf = next((tmp_path / "out" / host).glob("router-*.conf"))
    return conf.read_text().splitlines()


def _refused(tmp_path: Path, host: str, edits: list[tuple[str, str, str]]) -> str:
    res = _render_one(_edited_example(tmp_path, edits), host, tmp_path / "out")
    assert res.returncode != 0
    return res.stdout


def test_iosxe_pair_every_engine_is_a_bfd_tracked_pbr_next_hop(tmp_path: Path) -> None:
    lines = _render(tmp_path, "xe1", [XE_PAIR])
    divert_if = "TenGigabitEthernet0/1/0.200"
    block = lines[lines.index(f"interface {divert_if}"):]
    assert " bfd interval 100 min_rx 100 multiplier 3" in block[:block.index("!")]
    sets = []
    for n, engine in enumerate(("2001:db8:200:f200::2", "2001:db8:200:f200::3"), start=1):
        # BFD session -> static /128 in the RIB only while it is up -> track -> PBR next hop
        assert f"ipv6 route static bfd {divert_if} {engine}" in lines
        assert f"ipv6 route {engine}/128 {divert_if} {engine}" in lines
        assert f"track {160 + n} ipv6 route {engine}/128 reachability" in lines
        sets.append(f" set ipv6 next-hop verify-availability {engine} {n * 10} track {160 + n}")
    for route_map in ("route-map XCAST6-DIVERT permit 10", "route-map PBR-TRANSIT permit 1"):
        i = lines.index(route_map)
        # standby order = the order of xcast6_divert_engines
        assert lines[i + 1:i + 4] == [" match ipv6 address XCAST6-DIVERT", *sets]
    assert not [x for x in lines if re.match(r" set ipv6 next-hop [0-9a-f:]+$", x)]   # nothing unchecked
    assert not [x for x in lines if "Null0" in x or "default" in x]                 # fail open: falls through
    # XCAST6 only: next header 41 with DSCP 23 (XOU is next header 41 too)
    assert " sequence 10 permit 41 any any dscp 23" in lines
    # the second engine polls SNMP too
    assert " sequence 40 permit ipv6 host 2001:db8:200:f200::3 any" in lines


PAIR_GOLDEN = ANSIBLE_DIR / "golden/pairs"
PAIR_CASES = {
    "xe1": ("xe1", [XE_PAIR]),
    "xe1-absent": ("xe1", [XE_PAIR, ("xe1", "xcast6_sync:", ABSENT)]),
    "xe1-closed": ("xe1", [XE_PAIR, ("xe1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:")]),
    "xr1": ("xr1", [XR_PAIR]),
    "xr1-absent": ("xr1", [XR_PAIR, ("xr1", "xcast6_sync:", ABSENT)]),
    "xr1-closed": ("xr1", [XR_PAIR, ("xr1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:")]),
    "xr1-closed-absent": ("xr1", [XR_PAIR, ("xr1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:"),
                                  ("xr1", "xcast6_sync:", ABSENT)]),
}


@pytest.mark.parametrize("case", sorted(PAIR_CASES))
def test_engine_pair_renders_match_golden(tmp_path: Path, case: str) -> None:
    """ansible/golden/pairs/<case>/: the example inventory's xe1/xr1 with an engine pair (and its
    removal), for review. XCAST6_UPDATE_GOLDEN=1 rewrites them."""
    host, edits = PAIR_CASES[case]
    text = "\n".join(_render(tmp_path, host, edits)) + "\n"
    golden = PAIR_GOLDEN / case / ("router-iosxe.conf" if host == "xe1" else "router-iosxr.conf")
    if os.environ.get("XCAST6_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_iosxe_single_engine_without_ha_keeps_an_unchecked_next_hop() -> None:
    golden = (ANSIBLE_DIR / "golden/example/xe1/router-iosxe.conf").read_text().splitlines()
    assert " set ipv6 next-hop 2001:db8:200:f200::2" in golden
    assert not [x for x in golden if "track" in x or "bfd" in x]
    assert " sequence 10 permit 41 any any dscp 23" in golden


def test_iosxe_single_engine_with_ha_is_checked(tmp_path: Path) -> None:
    lines = _render(tmp_path, "xe1", [("xe1", "xcast6_sync:", "xcast6_divert_bfd: true\nxcast6_sync:")])
    assert " set ipv6 next-hop verify-availability 2001:db8:200:f200::2 10 track 161" in lines


def test_iosxr_pair_abf_next_hops_carry_the_operators_tracks(tmp_path: Path) -> None:
    lines = _render(tmp_path, "xr1", [XR_PAIR])
    hops = ("nexthop1 track XCAST6-E1 ipv6 2001:db8:300:f300::2 "
            "nexthop2 track XCAST6-E2 ipv6 2001:db8:300:f300::3")
    assert f" 10 permit 41 any any dscp 23 {hops}" in lines
    assert f" 1 permit 41 any any dscp 23 {hops}" in lines          # the operator's BE1-IN
    assert " 20 permit ipv6 any any" in lines
    assert not [x for x in lines if x.startswith("track ")]         # the role defines no track on XR


def test_what_the_role_refuses_on_cisco(tmp_path: Path) -> None:
    active_active = (XE_PAIR[0], XE_PAIR[1], XE_PAIR[2].replace("active-standby", "active-active"))
    out = _refused(tmp_path / "aa", "xe1", [active_active])
    # the message says why (what was looked for) and what to do instead
    assert "xcast6_ha_mode: active-standby" in out and "does not support load" in out
    closed = ("xe1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:")
    out = _refused(tmp_path / "fc", "xe1", [closed])        # a lone engine without [ha]: nothing is checked
    assert "xcast6_fail_mode: closed needs checked next hops" in out
    no_track = (XR_PAIR[0], XR_PAIR[1], XR_PAIR[2].replace("    track: XCAST6-E2\n", ""))
    out = _refused(tmp_path / "nt", "xr1", [no_track])
    assert "track: <name>" in out and "bfdrtr" in out
    four = (XR_PAIR[0], XR_PAIR[1], XR_PAIR[2].replace(
        "xcast6_ha_mode", "  - {address: '2001:db8:300:f300::4', track: E3}\n"
        "  - {address: '2001:db8:300:f300::5', track: E4}\nxcast6_ha_mode"))
    out = _refused(tmp_path / "4", "xr1", [four])
    assert "at most 3 engines" in out
    three_closed = (XR_PAIR[0], XR_PAIR[1], XR_PAIR[2].replace(
        "xcast6_ha_mode", "  - {address: '2001:db8:300:f300::4', track: E3}\nxcast6_fail_mode: closed\n"
        "xcast6_ha_mode"))
    out = _refused(tmp_path / "3c", "xr1", [three_closed])   # the discard next hop takes the third place
    assert "at most 2 with fail closed" in out
    engine_discard = (XR_PAIR[0], XR_PAIR[1], XR_PAIR[2].replace(
        "xcast6_ha_mode", "xcast6_fail_mode: closed\nrouter_divert_iosxr_discard_address: "
        "'2001:db8:300:f300::3'\nxcast6_ha_mode"))
    out = _refused(tmp_path / "ed", "xr1", [engine_discard])
    assert "router_divert_iosxr_discard_address" in out


XE_CLOSED = ("xe1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:")
XR_CLOSED = ("xr1", "xcast6_sync:", "xcast6_fail_mode: closed\nxcast6_sync:")


def test_iosxe_fail_closed_drops_after_the_checked_next_hops(tmp_path: Path) -> None:
    """`set interface` is tried only when no next hop is usable (Cisco's PBR configuration sequence:
    next-hop, recursive, interface, default next-hop, default interface): Null0 after the engines."""
    lines = _render(tmp_path, "xe1", [XE_PAIR, XE_CLOSED])
    for route_map in ("route-map XCAST6-DIVERT permit 10", "route-map PBR-TRANSIT permit 1"):
        i = lines.index(route_map)
        assert lines[i + 1:i + 5] == [
            " match ipv6 address XCAST6-DIVERT",
            " set ipv6 next-hop verify-availability 2001:db8:200:f200::2 10 track 161",
            " set ipv6 next-hop verify-availability 2001:db8:200:f200::3 20 track 162",
            " set interface Null0"]
    assert lines.count(" set interface Null0") == 2
    # a lone engine running [ha] may fail closed too
    lone = _render(tmp_path / "l", "xe1", [XE_CLOSED, ("xe1", "xcast6_sync:",
                                                       "xcast6_divert_bfd: true\nxcast6_sync:")])
    i = lone.index("route-map XCAST6-DIVERT permit 10")
    assert lone[i + 2:i + 4] == [" set ipv6 next-hop verify-availability 2001:db8:200:f200::2 10 track 161",
                                 " set interface Null0"]


def test_iosxr_fail_closed_last_next_hop_resolves_to_null0(tmp_path: Path) -> None:
    lines = _render(tmp_path, "xr1", [XR_PAIR, XR_CLOSED])
    hops = ("nexthop1 track XCAST6-E1 ipv6 2001:db8:300:f300::2 "
            "nexthop2 track XCAST6-E2 ipv6 2001:db8:300:f300::3 nexthop3 ipv6 100::1")
    assert f" 10 permit 41 any any dscp 23 {hops}" in lines
    assert f" 1 permit 41 any any dscp 23 {hops}" in lines          # the operator's BE1-IN too
    i = lines.index("router static")
    assert lines[i:i + 3] == ["router static", " address-family ipv6 unicast", "  100::1/128 Null0"]
    # the discard route exists before the ACEs that name it are pushed
    assert i < lines.index("ipv6 access-list XCAST6-DIVERT")
    absent = _render(tmp_path / "a", "xr1", [XR_PAIR, XR_CLOSED, ("xr1", "xcast6_sync:", ABSENT)])
    j = absent.index("router static")
    assert absent[j:j + 3] == ["router static", " address-family ipv6 unicast", "  no 100::1/128 Null0"]
    assert absent.index("no ipv6 access-list XCAST6-DIVERT") < j     # the ACEs naming it go first
    assert absent.index(" no 1") < j
    # fail open renders none of it
    open_lines = _render(tmp_path / "o", "xr1", [XR_PAIR])
    assert "router static" not in open_lines and not [x for x in open_lines if "100::1" in x]


# ---- removal: every statement the present branch adds has its `no` ----

KEPT = ("ipv6 unicast-routing", "netconf-yang", "ssh server")   # the operator's too


def _statements(lines: list[str]) -> list[tuple[tuple[str, ...], str, bool]]:
    """Each statement with the block headers above it (by indentation) and whether it opens a block:
    `router static` / ` address-family ipv6 unicast` / `  100::1/128 Null0` is one statement three deep."""
    rows = [(len(line) - len(line.lstrip()), line.strip()) for line in lines
            if line.strip() and line.strip() != "!"]
    out: list[tuple[tuple[str, ...], str, bool]] = []
    stack: list[tuple[int, str]] = []
    for n, (depth, text) in enumerate(rows):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        opens = n + 1 < len(rows) and rows[n + 1][0] > depth
        out.append((tuple(t for _, t in stack), text, opens))
        stack.append((depth, text))
    return out


def _covered(stmt: str, removals: list[str]) -> bool:
    return any(stmt == r or stmt.startswith(r + " ") for r in removals)


def _assert_absent_removes_present(present: list[str], absent: list[str]) -> None:
    gone = _statements(absent)
    # at the top: removals, or the header of a block of the operator's we remove single lines from
    assert [t for path, t, _ in gone if not path and t.startswith("no ")]
    assert not [t for path, t, _ in gone if not path and not t.startswith(
        ("no ", "interface ", "ipv6 access-list ", "router static"))]
    removals: dict[tuple[str, ...], list[str]] = {}
    for path, text, _ in gone:
        if text.startswith("no "):
            removals.setdefault(path, []).append(text.removeprefix("no "))
    for path, text, opens in _statements(present):
        full = (*path, text)
        if opens or full[0].startswith(KEPT) or text.startswith("no "):
            continue   # headers are covered through their lines; `no shutdown` is a state, not an addition
        # removed by a `no` of itself or of a block above it, at that block's place
        assert any(_covered(full[d], removals.get(full[:d], [])) for d in range(len(full))), \
            f"not removed: {' / '.join(full)}"


def test_iosxe_absent_removes_what_present_adds(tmp_path: Path) -> None:
    present = _render(tmp_path / "p", "xe1", [XE_PAIR])
    absent = _render(tmp_path / "a", "xe1", [XE_PAIR, ("xe1", "xcast6_sync:", ABSENT)])
    _assert_absent_removes_present(present, absent)
    # references go before what they reference
    route_map = absent.index("no route-map XCAST6-DIVERT permit 10")
    assert route_map < absent.index("no ipv6 access-list XCAST6-DIVERT")
    assert route_map < absent.index("no track 161")
    assert absent.index("no track 161") < absent.index("no interface TenGigabitEthernet0/1/0.200")
    assert "no route-map PBR-TRANSIT permit 1" in absent            # only our sequence of the operator's


def test_iosxr_absent_removes_what_present_adds(tmp_path: Path) -> None:
    v3 = ("xr1", "  snmp:\n    version: 2\n",
          "  snmp:\n    version: 3\n    user: xcast6\n    auth_protocol: sha\n    priv_protocol: aes128\n")
    present = _render(tmp_path / "p", "xr1", [XR_PAIR, v3])
    absent = _render(tmp_path / "a", "xr1", [XR_PAIR, v3, ("xr1", "xcast6_sync:", ABSENT)])
    _assert_absent_removes_present(present, absent)
    i = absent.index("ipv6 access-list BE1-IN")
    assert absent[i + 1] == " no 1"                                  # the operator's ACL stays
    unbind = absent.index(" no ipv6 access-group XCAST6-DIVERT ingress")
    assert unbind < absent.index("no ipv6 access-list XCAST6-DIVERT")


def test_the_absent_checker_catches_a_missing_removal() -> None:
    present = ["track 161 ipv6 route 2001:db8::2/128 reachability", "interface Gi1",
               " ipv6 policy route-map X"]
    try:
        _assert_absent_removes_present(present, ["no track 16", "interface Gi1",
                                                 " no ipv6 policy route-map X"])
    except AssertionError as exc:
        assert "track 161" in str(exc)
    else:
        raise AssertionError("a missing removal went through")


# ---- safe change: the task list ----

def _tasks(name: str) -> list[dict]:
    return yaml.safe_load((ROLE / "tasks" / name).read_text())


def _handlers() -> list[dict]:
    return yaml.safe_load((ROLE / "handlers/main.yml").read_text())


def test_iosxe_push_runs_under_a_revert_timer_confirmed_after_the_post_check() -> None:
    tasks = _tasks("push_iosxe.yml")
    names = [t["name"] for t in tasks]
    push = next(t for t in tasks if "cisco.ios.ios_config" in t and t["cisco.ios.ios_config"].get("src"))
    # an archive exists before the timer is set (`configure terminal revert timer` needs one)
    archive = names.index("Create a configuration archive for the rollback when the router has none")
    assert archive < names.index(push["name"])
    timeout = push["vars"]["ansible_ios_commit_confirm_timeout"]
    assert timeout == "{{ router_divert_commit_confirm_minutes | int }}"
    assert "save_when" not in push["cisco.ios.ios_config"]           # nothing saved before the confirmation
    assert push["notify"] == ["Post-check the IOS-XE divert", "Confirm the IOS-XE change",
                              "Save the confirmed IOS-XE configuration"]
    assert tasks[-1]["ansible.builtin.meta"] == "flush_handlers"
    handlers = {h["name"]: (i, h) for i, h in enumerate(_handlers())}
    order = [handlers[n][0] for n in push["notify"]]
    assert order == sorted(order)                                    # handlers run in file order
    confirm = handlers["Confirm the IOS-XE change"][1]
    assert confirm["cisco.ios.ios_command"]["commands"] == ["configure confirm"]
    assert "failed_when" in handlers["Post-check the IOS-XE divert"][1]


def test_iosxr_push_is_commit_confirmed_then_committed_after_the_post_check() -> None:
    tasks = _tasks("push_iosxr.yml")
    push = next(t for t in tasks if "cisco.iosxr.iosxr_config" in t)
    assert push["vars"]["ansible_iosxr_commit_confirmed"] is True
    timeout = push["vars"]["ansible_iosxr_commit_confirmed_timeout"]
    assert timeout == "{{ router_divert_iosxr_commit_confirm_seconds | int }}"
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    seconds = defaults["router_divert_iosxr_commit_confirm_seconds"]
    assert seconds == "{{ (router_divert_commit_confirm_minutes | int) * 60 }}"
    assert push["notify"] == ["Post-check the IOS-XR divert", "Confirm the IOS-XR commit"]
    assert tasks[-1]["ansible.builtin.meta"] == "flush_handlers"
    handlers = {h["name"]: (i, h) for i, h in enumerate(_handlers())}
    assert handlers["Post-check the IOS-XR divert"][0] < handlers["Confirm the IOS-XR commit"][0]
    assert handlers["Confirm the IOS-XR commit"][1]["cisco.iosxr.iosxr_command"]["commands"] == ["commit"]


# ---- Junos SNMPv3: what every release takes by default, SHA-2 only on request, no AES-256 ----

V3 = ("  snmp:\n    version: 3\n    user: xcast6\n    auth_protocol: sha256            "
      "# SHA-2: Junos 21.1 and later, see router_divert_junos_snmp_sha2\n    priv_protocol: aes128\n")


def test_junos_snmpv3_defaults_to_sha_and_aes128(tmp_path: Path) -> None:
    lines = _render(tmp_path, "mx1", [("mx1", V3, V3.replace("sha256 ", "sha    ")),
                                      ("mx1", "router_divert_junos_snmp_sha2: true", "")])
    user = "set snmp v3 usm local-engine user xcast6"
    assert [x for x in lines if x.startswith(f"{user} authentication-sha authentication-password ")]
    assert [x for x in lines if x.startswith(f"{user} privacy-aes128 privacy-password ")]


def test_junos_sha2_needs_the_explicit_option_and_aes256_is_refused(tmp_path: Path) -> None:
    out = _refused(tmp_path / "n", "mx1", [("mx1", "router_divert_junos_snmp_sha2: true", "")])
    assert "Junos 21.1" in out and "auth_protocol sha256" in out
    lines = _render(tmp_path / "y", "mx1", [("mx1", V3, V3.replace("sha256 ", "sha512 "))])
    assert [x for x in lines if " authentication-sha512 authentication-password " in x]
    out = _refused(tmp_path / "a", "mx1", [("mx1", "priv_protocol: aes128", "priv_protocol: aes256")])
    assert "no AES-256 privacy statement" in out


def test_cisco_aes256_is_the_cisco_key_extension(tmp_path: Path) -> None:
    """IOS `aes 256` is the Reeder key extension: the engine's aes256c; its aes256 (Blumenthal)
    would never authenticate against a Cisco router, so the role refuses it there."""
    v3 = ("xe1", "  snmp:\n    version: 2\n",
          "  snmp:\n    version: 3\n    user: xcast6\n    auth_protocol: sha\n    priv_protocol: aes256c\n")
    lines = _render(tmp_path / "c", "xe1", [v3])
    user = re.compile(r"snmp-server user xcast6 XCAST6 v3 auth sha \S+ priv aes 256 \S+$")
    assert [x for x in lines if user.match(x)]
    out = _refused(tmp_path / "b", "xe1", [(v3[0], v3[1], v3[2].replace("aes256c", "aes256"))])
    assert "aes256c" in out


def test_iosxe_absent_removes_the_netconf_user_and_its_nacm_rules(tmp_path: Path) -> None:
    absent = _render(tmp_path, "xe1", [XE_PAIR, ("xe1", "xcast6_sync:", ABSENT)])
    assert "no username xcast6" in absent
    nacm = (tmp_path / "out" / "xe1" / "iosxe-nacm.xml").read_text()
    assert nacm.count('nc:operation="remove"') == 2 and "<rule>" not in nacm
    assert "XCAST6-NETCONF" in nacm


def test_iosxr_absent_removes_the_netconf_user_before_its_groups(tmp_path: Path) -> None:
    absent = _render(tmp_path, "xr1", [XR_PAIR, ("xr1", "xcast6_sync:", ABSENT)])
    order = [absent.index(f"no {what}") for what in
             ("username xcast6", "usergroup XCAST6-NETCONF", "taskgroup XCAST6-NETCONF")]
    assert order == sorted(order)


@pytest.mark.parametrize("host,pair,closed", [("xe1", XE_PAIR, XE_CLOSED), ("xr1", XR_PAIR, XR_CLOSED)])
def test_fail_closed_absent_removes_what_present_adds(
        tmp_path: Path, host: str, pair: tuple[str, str, str], closed: tuple[str, str, str]) -> None:
    present = _render(tmp_path / "p", host, [pair, closed])
    absent = _render(tmp_path / "a", host, [pair, closed, (host, "xcast6_sync:", ABSENT)])
    _assert_absent_removes_present(present, absent)


def test_the_absent_checker_reads_nested_blocks() -> None:
    present = ["router static", " address-family ipv6 unicast", "  100::1/128 Null0", " !", "!"]
    _assert_absent_removes_present(present, ["no track 1", "router static", " address-family ipv6 unicast",
                                             "  no 100::1/128 Null0"])
    with pytest.raises(AssertionError, match="100::1/128 Null0"):
        # the same `no` one level up is another command (and would not parse): not a removal
        _assert_absent_removes_present(present, ["no track 1", "router static", " no 100::1/128 Null0"])
