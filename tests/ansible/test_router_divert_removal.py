"""router_divert's removal on IOS-XE/IOS-XR (xcast6_divert_state: absent) planned against the running
configuration: filter xcast6_cisco_removal in filter_plugins/xcast6_precheck.py.

No router runs here. The running configurations under recorded/ are written in the format IOS-XE 17 /
IOS-XR 7 print ``show running-config`` (IOS-XE: IPv6 addresses upper case, ``secret 9`` hashes, SNMPv3
users never shown, a view's subtree possibly by MIB name; IOS-XR: timestamp line, ``secret 10``
hashes, community ``encrypted``; sources in the plugin's docstring). The role's present and absent
renderings are the pair golden files (ansible/golden/pairs/, themselves checked against the template).
A small model of the router applies a plan the way IOS does, refusing a ``no`` of something that is
not there; the properties below run it over partial and operator-modified configurations.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ansible.test_ansible_offline import _edited_example
from tests.ansible.test_router_divert_cisco import ABSENT, XE_PAIR, XR_PAIR
from tests.ansible.test_router_divert_precheck import (
    ANSIBLE_DIR,
    BIN,
    ansible_env,
    pc,
    role_with_recorded_read,
)

RECORDED = Path(__file__).parent / "recorded"
COMMUNITY = "t3st-ro-community"
CASES = {
    "iosxe": ("xe1", "router-iosxe.conf", ["2001:db8:200:f200::2", "2001:db8:200:f200::3"]),
    "iosxr": ("xr1", "router-iosxr.conf", ["2001:db8:300:f300::2", "2001:db8:300:f300::3"]),
}


def _golden(platform: str, absent: bool) -> str:
    host, name, _ = CASES[platform]
    text = (ANSIBLE_DIR / "golden/pairs" / (host + ("-absent" if absent else "")) / name).read_text()
    return text.replace("<vaulted:xcast6_snmp_community>", COMMUNITY)


def running(platform: str) -> str:
    host = CASES[platform][0]
    return (RECORDED / f"{platform}-{host}-pair-running-config.txt").read_text()


def plan(platform: str, text: str) -> dict:
    return pc.cisco_removal(text, _golden(platform, False), _golden(platform, True), CASES[platform][2],
                            platform)


# ---- a model of the router: applies pushed lines as IOS does ----

class RouterError(Exception):
    """What IOS prints for `no` of something that is not configured."""


def _key(line: str) -> tuple[str, ...]:
    return pc.normalize_config_line(line)


def apply(platform: str, text: str, lines: list[str]) -> str:
    """``text`` (a running configuration) after ``lines`` (top-level ``no X``, or a block header with
    indented ``no Y``, possibly inside sub-blocks); RouterError for a ``no`` that matches nothing."""
    blocks = pc.parse_cisco_blocks(text)
    for step in pc.parse_cisco_blocks("\n".join(lines) + "\n", "the pushed lines"):
        if step.header.startswith("no "):
            target = _key(step.header[3:])
            left = [b for b in blocks if not pc._starts_with(_key(b.header), target)]
            hidden = platform == "iosxe" and target[:2] == ("snmp-server", "user")
            if len(left) == len(blocks) and not hidden:
                raise RouterError(f"{step.header}: not configured")
            blocks = left
            continue
        found = [b for b in blocks if _key(b.header) == _key(step.header)]
        if not found:
            raise RouterError(f"{step.header}: the plan names a block the router does not have")
        parent = found[0]
        for child, path in zip(step.children, step.paths, strict=True):
            if not child.startswith("no "):
                continue   # entering a sub-block
            target, where = _key(child[3:]), tuple(map(_key, path))
            keep = [(c, p) for c, p in zip(parent.children, parent.paths, strict=True)
                    if not (tuple(map(_key, p)) == where and pc._starts_with(_key(c), target))]
            if len(keep) == len(parent.children):
                raise RouterError(f"{step.header} / {' / '.join(path)} / {child}: not configured")
            parent.children, parent.paths = [c for c, _ in keep], [p for _, p in keep]
    return "".join(b.header + "\n" + "".join(" " * (len(p) + 1) + c + "\n"
                                             for c, p in zip(b.children, b.paths, strict=True)) + "!\n"
                   for b in blocks)


def _pairs(text: str) -> set[tuple[tuple[str, ...], tuple[str, ...] | None]]:
    out: set[tuple[tuple[str, ...], tuple[str, ...] | None]] = set()
    for b in pc.parse_cisco_blocks(text):
        out.add((_key(b.header), None))
        out |= {(_key(b.header), _key(c)) for c in b.children}
    return out


# ---- the recorded configurations ----

@pytest.mark.parametrize("platform", sorted(CASES))
def test_full_removal_is_the_whole_absent_rendering_in_its_order(platform: str) -> None:
    """Everything the divert added is there: every `no` of the absent rendering is pushed, in its
    (safe) order; the router model takes each one."""
    result = plan(platform, running(platform))
    absent = [ln for ln in _golden(platform, True).splitlines()]
    assert result["lines"] == absent and result["kept"] == [] and result["gone"] == 0
    after = apply(platform, running(platform), result["lines"])
    # a second run: nothing to push, every removal already done
    assert plan(platform, after) == {"lines": [], "kept": [],
                                     "gone": len([x for x in absent if x.startswith(("no ", " no "))])}


@pytest.mark.parametrize("platform", sorted(CASES))
def test_after_removal_only_the_operators_configuration_is_left(platform: str) -> None:
    after = apply(platform, running(platform), plan(platform, running(platform))["lines"])
    text = after.casefold()
    for ours in ("xcast6-divert", "xcast6-snmp", "xcast6-routes", "xcast6 divert", "xcast6 return",
                 "trunk to"):
        assert ours not in text, ours
    if platform == "iosxe":
        assert "track 161" not in text and "track 1 interface" in text   # the operator's track stays
        assert "route-map pbr-transit permit 20" in text and "route-map pbr-transit permit 1\n" not in text
        assert "username xcast6-deploy" in text and "username xcast6 " not in text
        assert "snmp-server community ops-ro ro" in text                  # the operator's community
    else:
        assert "ipv6 access-list be1-in\n 10 deny" in text                # only sequence 1 left it
        assert "track xcast6-e1" in text                                   # the operator's tracks
        assert "usergroup" not in text and "taskgroup" not in text
    # kept on purpose: the operator's NETCONF / IPv6 routing may use them
    assert ("netconf-yang" in text) and (platform == "iosxr" or "ipv6 unicast-routing" in text)


def test_iosxe_second_run_and_empty_router_push_nothing() -> None:
    assert plan("iosxe", "")["lines"] == []
    empty = "Building configuration...\n\nCurrent configuration : 10 bytes\n!\nend\n"
    assert plan("iosxe", empty)["lines"] == []


def test_iosxe_partial_configuration_removes_only_what_remains() -> None:
    """A removal cut short (the first half of the `no` lines applied): the rest, nothing twice."""
    full = plan("iosxe", running("iosxe"))["lines"]
    cut = full.index("no track 162")
    partial = apply("iosxe", running("iosxe"), full[:cut])
    assert plan("iosxe", partial)["lines"] == full[cut:]


def test_iosxe_operator_changes_are_kept_and_named() -> None:
    text = running("iosxe")
    text = text.replace("route-map PBR-TRANSIT permit 1\n match ipv6 address XCAST6-DIVERT\n",
                        "route-map PBR-TRANSIT permit 1\n match ipv6 address TRANSIT-A\n", 1)
    text = text.replace(" description xcast6-engine trunk to engine-xe1\n", " description core trunk\n", 1)
    text = text.replace("track 162 ipv6 route 2001:DB8:200:F200::3/128 reachability",
                        "track 162 ip sla 7 reachability", 1)
    result = plan("iosxe", text)
    lines = result["lines"]
    assert "no route-map PBR-TRANSIT permit 1" not in lines
    assert " no description" not in lines and "no track 162" not in lines
    assert "no route-map XCAST6-DIVERT permit 10" in lines
    # the operator's entry still checks engine ::2 with track 161: the track, the route it follows and
    # that route's BFD session stay
    assert not [x for x in lines if "track 161" in x or "f200::2/128" in x
                or "bfd TenGigabitEthernet0/1/0.200 2001:db8:200:f200::2" in x]
    assert "no ipv6 route static bfd TenGigabitEthernet0/1/0.200 2001:db8:200:f200::3" in lines
    kept = " | ".join(result["kept"])
    assert ("track 161: still used by route-map PBR-TRANSIT permit 1 / "
            "set ipv6 next-hop verify-availability") in kept
    assert "route-map PBR-TRANSIT permit 1" in kept and "match ipv6 address TRANSIT-A" in kept
    assert "description core trunk" in kept and "track 162 ip sla 7 reachability" in kept
    after = apply("iosxe", text, lines)
    assert "route-map PBR-TRANSIT permit 1\n match ipv6 address TRANSIT-A" in after
    assert " description core trunk" in after and "track 162 ip sla 7" in after
    assert plan("iosxe", after)["lines"] == []                    # a re-run: nothing more


def test_iosxe_what_the_operator_still_uses_is_kept() -> None:
    """The operator's own route-map matches the divert's ACL, and their interface config sits in one
    of the divert's subinterfaces: both stay, with what they refer to."""
    text = running("iosxe").replace(
        "route-map XCAST6-DIVERT permit 10\n",
        "route-map OPS permit 10\n match ipv6 address XCAST6-DIVERT\n set ipv6 next-hop 2001:DB8:FF::1\n!\n"
        "route-map XCAST6-DIVERT permit 10\n", 1)
    text = text.replace(" encapsulation dot1Q 201\n", " encapsulation dot1Q 201\n ipv6 nd ra suppress all\n",
                        1)
    result = plan("iosxe", text)
    assert "no ipv6 access-list XCAST6-DIVERT" not in result["lines"]
    assert "no interface TenGigabitEthernet0/1/0.201" not in result["lines"]
    assert "no interface TenGigabitEthernet0/1/0.202" in result["lines"]
    kept = " | ".join(result["kept"])
    assert ("ipv6 access-list XCAST6-DIVERT: still used by route-map OPS permit 10 / "
            "match ipv6 address") in kept
    assert "ipv6 nd ra suppress all" in kept
    assert plan("iosxe", apply("iosxe", text, result["lines"]))["lines"] == []


def test_a_route_map_entry_from_another_engine_list_is_still_ours() -> None:
    """The pair changed since the push (engine ::3 replaced by ::4): next hops that are all engines."""
    text = running("iosxe").replace("2001:DB8:200:F200::3 20 track 162", "2001:DB8:200:F200::4 20 track 162")
    engines = [*CASES["iosxe"][2], "2001:db8:200:f200::4"]
    present, absent = _golden("iosxe", False), _golden("iosxe", True)
    result = pc.cisco_removal(text, present, absent, engines, "iosxe")
    assert "no route-map XCAST6-DIVERT permit 10" in result["lines"]
    result = pc.cisco_removal(text, present, absent, CASES["iosxe"][2], "iosxe")
    assert "no route-map XCAST6-DIVERT permit 10" not in result["lines"]   # ::4 is nobody's engine here


def test_iosxr_partial_and_modified() -> None:
    text = running("iosxr")
    full = plan("iosxr", text)["lines"]
    assert full[full.index("ipv6 access-list BE1-IN") + 1] == " no 1"
    # the operator replaced BE1-IN 1 with their own rule, and a user of theirs is in our usergroup
    mod = text.replace(" 1 permit 41 any any dscp 23 nexthop1", " 1 permit tcp any any eq 179 nexthop1", 1)
    mod = mod.replace("username xcast6-deploy\n", "username xcast6-deploy\n group XCAST6-NETCONF\n", 1)
    result = plan("iosxr", mod)
    assert "ipv6 access-list BE1-IN" not in result["lines"]
    assert "no usergroup XCAST6-NETCONF" not in result["lines"]
    assert "no taskgroup XCAST6-NETCONF" not in result["lines"]
    assert "no username xcast6" in result["lines"]
    kept = " | ".join(result["kept"])
    assert "usergroup XCAST6-NETCONF: still used by username xcast6-deploy / group XCAST6-NETCONF" in kept
    assert "$6$" not in kept                                          # no secret in a message
    after = apply("iosxr", mod, result["lines"])
    assert plan("iosxr", after)["lines"] == []


def test_iosxr_encrypted_community_is_ours_by_its_view_and_acl() -> None:
    result = plan("iosxr", running("iosxr"))
    assert f"no snmp-server community {COMMUNITY}" in result["lines"]
    other = running("iosxr").replace("view XCAST6-ROUTES RO IPv6 XCAST6-SNMP", "RO IPv6 OPS-SNMP")
    result = plan("iosxr", other)
    assert f"no snmp-server community {COMMUNITY}" not in result["lines"]
    assert "snmp-server community <community> RO IPv6 OPS-SNMP" in " | ".join(result["kept"])


def test_secrets_and_cli_errors() -> None:
    assert pc.normalize_config_line("username xcast6 privilege 15 secret 9 $9$x") == \
        pc.normalize_config_line("username xcast6 privilege 15 algorithm-type scrypt secret clear-text")
    assert pc.normalize_config_line(" secret 10 $6$abc") == ("secret",)
    assert pc.normalize_config_line("permit ipv6 any any sequence 20") == ("sequence", "20", "permit", "ipv6",
                                                                          "any", "any")
    with pytest.raises(ValueError, match="refused the command"):
        plan("iosxe", "% Invalid input detected at '^' marker.\n")
    with pytest.raises(ValueError, match="platform must be iosxe or iosxr"):
        pc.cisco_removal("", "", "", [], "junos")
    # a statement in the absent rendering the plan cannot handle fails, rather than being dropped
    for odd in ("default interface Gi0/0/0\n", "interface Gi0/0/0\n shutdown\n!\n"):
        with pytest.raises(ValueError, match=r"only `no \.\.\.` lines"):
            pc.cisco_removal("", "", odd, [], "iosxe")


# ---- properties: any partial state, any operator change ----

MODS = {
    "iosxe": [
        ("route-map PBR-TRANSIT permit 1\n match ipv6 address XCAST6-DIVERT\n",
         "route-map PBR-TRANSIT permit 1\n match ipv6 address TRANSIT-A\n"),
        (" description xcast6-engine trunk to engine-xe1\n", " description core trunk\n"),
        (" encapsulation dot1Q 201\n", " encapsulation dot1Q 201\n ipv6 nd ra suppress all\n"),
        ("track 162 ipv6 route 2001:DB8:200:F200::3/128 reachability", "track 162 ip sla 7 reachability"),
        (" sequence 40 permit ipv6 host 2001:DB8:200:F200::3 any\n",
         " sequence 40 permit ipv6 host 2001:DB8:200:F200::3 any\n"
         " sequence 50 permit ipv6 host 2001:DB8:99::1 any\n"),
        ("route-map XCAST6-DIVERT permit 10\n",
         "route-map OPS permit 10\n match ipv6 address XCAST6-DIVERT\n!\n"
         "route-map XCAST6-DIVERT permit 10\n"),
        ("ipv6 route ::/0 2001:DB8:FF::1\n", "ipv6 route ::/0 2001:DB8:FF::1\n"
         "ipv6 route 2001:DB8:77::/48 TenGigabitEthernet0/1/0.202 2001:DB8:200:F202::9\n"),
        ("snmp-server view XCAST6-ROUTES sysUpTime included\n",
         "snmp-server view XCAST6-ROUTES sysUpTime included\n"
         "snmp-server view XCAST6-ROUTES system included\n"),
    ],
    "iosxr": [
        (" 1 permit 41 any any dscp 23 nexthop1", " 1 permit tcp any any eq 179 nexthop1"),
        (" description xcast6-engine trunk to engine-xr1\n", " description core trunk\n"),
        ("username xcast6-deploy\n", "username xcast6-deploy\n group XCAST6-NETCONF\n"),
        (" 20 permit ipv6 any any\n!\nipv6 access-list XCAST6-SNMP",
         " 20 permit ipv6 any any\n 30 deny ipv6 any any\n!\nipv6 access-list XCAST6-SNMP"),
        (" encapsulation dot1q 302\n", " encapsulation dot1q 302\n mtu 9000\n"),
        (" description core bundle\n", " description core bundle\n ipv6 access-group XCAST6-DIVERT egress\n"),
    ],
}


@settings(max_examples=150, deadline=None)
@given(platform=st.sampled_from(sorted(CASES)), data=st.data())
def test_any_partial_and_modified_configuration(platform: str, data: st.DataObject) -> None:
    """From the recorded configuration, the operator's changes (any subset) and any subset of the
    full removal already done (an interrupted run, a hand removal; any order): the plan applies
    without a single `no` of something absent, never touches a line that is not the divert's, and a
    second run plans nothing."""
    base = running(platform)
    mods = data.draw(st.lists(st.sampled_from(MODS[platform]), unique=True), label="operator changes")
    text = base
    for old, new in mods:
        assert text.count(old) >= 1, old
        text = text.replace(old, new, 1)
    if data.draw(st.booleans(), label="view subtrees by number"):
        text = re.sub(r"^(snmp-server view \S+ )(\S+)",
                      lambda m: m[1] + pc._OID_NAMES.get(m[2].casefold(), m[2]), text, flags=re.MULTILINE)
    if data.draw(st.booleans(), label="addresses in lower case"):
        text = re.sub(r"2001:DB8[0-9A-F:/]*", lambda m: m[0].lower(), text)
    full = plan(platform, base)["lines"]
    items = _items(full)
    done = data.draw(st.lists(st.sampled_from(items), unique=True) if items else st.just([]),
                     label="already removed")
    for item in done:
        # RouterError: an operator change took that statement over, nothing to remove there
        with contextlib.suppress(RouterError):
            text = apply(platform, text, list(item))
    # the operator's lines: whatever the full removal leaves of the untouched config, and every
    # line an operator change brought in (those the steps above removed are not there to keep)
    theirs = _pairs(apply(platform, base, full)) | (_pairs(text) - _pairs(base))
    result = plan(platform, text)
    after = apply(platform, text, result["lines"])                      # RouterError = a failed push
    assert theirs & _pairs(text) <= _pairs(after)                       # nothing of the operator's removed
    assert plan(platform, after)["lines"] == []
    if not mods:
        assert result["kept"] == []
        assert _pairs(after) == _pairs(apply(platform, base, full))    # the same end state, always


def _items(lines: list[str]) -> list[tuple[str, ...]]:
    """A plan as its separate steps (a top-level `no`, or a block header with one `no` inside)."""
    items: list[tuple[str, ...]] = []
    header = None
    for line in lines:
        if line == "!":
            header = None
        elif line.startswith(" "):
            assert header is not None
            items.append((header, line, "!"))
        elif line.startswith("no "):
            items.append((line,))
        else:
            header = line
    return items


def test_the_pre_push_check_reads_the_same_recorded_configuration() -> None:
    """The pre-push check parses the whole running configuration too: over the divert's own entries
    (a re-run of present) it passes."""
    targets = [{"name": "PBR-TRANSIT", "seq": 1, "var": "v"},
               {"name": "XCAST6-DIVERT", "seq": 10, "var": "v"}]
    assert pc.iosxe_route_map_conflicts(running("iosxe"), targets, "XCAST6-DIVERT", CASES["iosxe"][2]) == []
    assert pc.iosxe_track_conflicts(running("iosxe"), 160, CASES["iosxe"][2]) == []
    assert pc.iosxe_track_conflicts(running("iosxe"), 0, CASES["iosxe"][2]) != []     # track 1 is theirs
    assert pc.iosxr_acl_conflicts(running("iosxr"), [{"name": "BE1-IN", "seq": 1, "var": "v"}],
                                  CASES["iosxr"][2]) == []


# ---- the role's tasks end to end, on recorded output (tasks/removal_plan.yml, main.yml, push_*.yml) ----

def _fake_router(tmp_path: Path, platform: str) -> Path:
    """A copy of the role whose read returns router_divert_recorded and whose push writes what it
    would send (the real push task's own ``src``) to router_divert_pushed; the IOS-XE NACM removal
    writes router_divert_pushed + '.nacm'. Returns the roles dir."""
    roles = role_with_recorded_read(tmp_path, platform)
    tasks = roles / "router_divert" / "tasks"
    module = "cisco.ios.ios_config" if platform == "iosxe" else "cisco.iosxr.iosxr_config"
    push = yaml.safe_load((tasks / f"push_{platform}.yml").read_text())
    src = next(t[module]["src"] for t in push if "src" in t.get(module, {}))
    (tasks / f"push_{platform}.yml").write_text(yaml.safe_dump([{
        "name": "Recorded router: write what the push would send",
        "ansible.builtin.template": {"src": src, "dest": "{{ router_divert_pushed }}", "mode": "0644"}}]))
    (tasks / "netconf_nacm_iosxe.yml").write_text(yaml.safe_dump([{
        "name": "Recorded router: note the NACM removal",
        "ansible.builtin.copy": {"content": "removed\n", "dest": "{{ router_divert_pushed }}.nacm",
                                 "mode": "0644"}}]))
    shutil.copy(ANSIBLE_DIR / "routers.yml", tmp_path / "routers.yml")
    return roles


class AbsentRun:
    def __init__(self, tmp_path: Path, platform: str) -> None:
        host = CASES[platform][0]
        pair = XE_PAIR if platform == "iosxe" else XR_PAIR
        self.tmp, self.platform, self.host = tmp_path, platform, host
        self.inventory = _edited_example(tmp_path, [pair, (host, "xcast6_sync:", ABSENT)])
        self.roles = _fake_router(tmp_path, platform)

    def __call__(self, text: str) -> tuple[subprocess.CompletedProcess[str], list[str] | None, bool]:
        """One ``routers.yml`` run over ``text``: the result, the lines pushed (None: no push) and
        whether the NACM rules were removed."""
        pushed = self.tmp / "pushed.conf"
        nacm = self.tmp / "pushed.conf.nacm"
        pushed.unlink(missing_ok=True)
        nacm.unlink(missing_ok=True)
        extra = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "router_divert_recorded": text, "router_divert_pushed": str(pushed),
                 "xcast6_snmp_community": COMMUNITY, "xcast6_netconf_password": "n3tconf-pass"}
        (self.tmp / "extra.json").write_text(json.dumps(extra))
        res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory), "routers.yml",
                              "--limit", self.host, "-e", f"@{self.tmp / 'extra.json'}"],
                             cwd=self.tmp, env=ansible_env(self.tmp, self.roles), capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = [ln for ln in pushed.read_text().splitlines() if ln.strip()] if pushed.exists() else None
        return res, lines, nacm.exists()


def _recap(res: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(host + " ") and "ok=" in ln)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


@pytest.mark.parametrize("platform", sorted(CASES))
def test_tasks_absent_twice_then_nothing(tmp_path: Path, platform: str) -> None:
    """First absent removes everything the divert added (the whole absent rendering, in order); the
    router model takes every line; a second absent pushes nothing and changes nothing."""
    run = AbsentRun(tmp_path, platform)
    res, pushed, nacm = run(running(platform))
    assert pushed == _golden(platform, True).splitlines(), res.stdout
    assert nacm == (platform == "iosxe")            # NACM rules first, while their user exists
    after = apply(platform, running(platform), pushed)
    res, pushed, nacm = run(after)
    assert pushed is None and not nacm, res.stdout
    recap = _recap(res, run.host)
    assert recap["changed"] == 0 and recap["failed"] == 0, res.stdout


def test_tasks_absent_over_a_partial_and_a_modified_configuration(tmp_path: Path) -> None:
    run = AbsentRun(tmp_path, "iosxe")
    full = plan("iosxe", running("iosxe"))["lines"]
    cut = full.index("no interface TenGigabitEthernet0/1/0.200")
    partial = apply("iosxe", running("iosxe"), full[:cut])
    _, pushed, _ = run(partial)
    assert pushed == full[cut:]                                  # only what remains
    modified = running("iosxe").replace(" description xcast6-engine trunk to engine-xe1\n",
                                        " description core trunk\n", 1)
    res, pushed, _ = run(modified)
    assert pushed is not None and " no description" not in pushed and "no username xcast6" in pushed
    assert ("kept, not the divert's to remove: interface TenGigabitEthernet0/1/0 / "
            "description core trunk") in res.stdout
    res, pushed, nacm = run(apply("iosxe", modified, pushed))
    assert pushed is None and not nacm and _recap(res, run.host)["changed"] == 0


def test_iosxe_snmpv3_user_goes_with_its_group() -> None:
    """IOS-XE does not show SNMPv3 users in the running configuration: the user's `no` is sent while
    the divert's group is there, and not once the group is gone (a second run)."""
    community = f"snmp-server community {COMMUNITY} view XCAST6-ROUTES RO ipv6 XCAST6-SNMP"
    group = "snmp-server group XCAST6 v3 priv read XCAST6-ROUTES access ipv6 XCAST6-SNMP"
    user = "snmp-server user xcast6 XCAST6 v3 auth sha k3y-auth priv aes 128 k3y-priv"
    present = _golden("iosxe", False).replace(community, f"{group}\n{user}")
    absent = _golden("iosxe", True).replace(
        f"no snmp-server community {COMMUNITY}",
        "no snmp-server user xcast6 XCAST6 v3\nno snmp-server group XCAST6 v3 priv")
    text = running("iosxe").replace(community, group)                 # the user is not printed
    lines = pc.cisco_removal(text, present, absent, CASES["iosxe"][2], "iosxe")["lines"]
    i = lines.index("no snmp-server user xcast6 XCAST6 v3")
    assert lines[i + 1] == "no snmp-server group XCAST6 v3 priv"
    after = apply("iosxe", text, lines)
    assert pc.cisco_removal(after, present, absent, CASES["iosxe"][2], "iosxe")["lines"] == []


def test_iosxr_a_removal_inside_a_sub_block() -> None:
    """A fail-closed XR divert adds a discard route under `router static` / `address-family ipv6
    unicast`, where the operator has routes too (and the same route in a VRF): only ours goes, the
    `no` sits under the same sub-block headers, and a second run plans nothing."""
    ours = "router static\n address-family ipv6 unicast\n  100::1/128 Null0\n !\n!\n"
    removal = "router static\n address-family ipv6 unicast\n  no 100::1/128 Null0\n !\n!\n"
    present = _golden("iosxr", False).replace("ipv6 access-list XCAST6-DIVERT\n",
                                              ours + "ipv6 access-list XCAST6-DIVERT\n")
    absent = _golden("iosxr", True).replace("no ipv6 access-list XCAST6-DIVERT\n",
                                            "no ipv6 access-list XCAST6-DIVERT\n" + removal)
    theirs = ("router static\n address-family ipv6 unicast\n  ::/0 2001:db8:30::fe\n  100::1/128 Null0\n !\n"
              " vrf MGMT\n  address-family ipv6 unicast\n   100::1/128 Null0\n  !\n !\n!\n")
    text = running("iosxr").replace("ipv6 access-list BE1-IN\n", theirs + "ipv6 access-list BE1-IN\n")
    engines = CASES["iosxr"][2]
    lines = pc.cisco_removal(text, present, absent, engines, "iosxr")["lines"]
    i = lines.index("router static")
    assert lines[i:i + 5] == removal.splitlines()
    after = apply("iosxr", text, lines)
    routes = next(b for b in pc.parse_cisco_blocks(after) if b.header == "router static")
    assert list(zip(routes.children, routes.paths, strict=True)) == [
        ("address-family ipv6 unicast", ()), ("::/0 2001:db8:30::fe", ("address-family ipv6 unicast",)),
        ("vrf MGMT", ()), ("address-family ipv6 unicast", ("vrf MGMT",)),
        ("100::1/128 Null0", ("vrf MGMT", "address-family ipv6 unicast"))]
    assert pc.cisco_removal(after, present, absent, engines, "iosxr")["lines"] == []
    # a route of the operator's to the same prefix (another next hop) is not what `no` would name
    other = text.replace("  100::1/128 Null0\n !\n vrf", "  100::1/128 2001:db8:30::fe\n !\n vrf", 1)
    result = pc.cisco_removal(other, present, absent, engines, "iosxr")
    assert "router static" not in result["lines"] and result["kept"] == []
    assert apply("iosxr", other, result["lines"]).count("100::1/128") == 2


_word = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9:/.-]{0,8}", fullmatch=True)
_line = st.lists(_word, min_size=1, max_size=4).map(" ".join).filter(lambda x: x not in ("end",))
_tree = st.recursive(st.builds(lambda line: (line, []), _line),
                     lambda kids: st.tuples(_line, st.lists(kids, max_size=3)), max_leaves=8)


@given(st.lists(st.tuples(_line, st.lists(_tree, max_size=3)), max_size=4), st.booleans(), st.booleans())
def test_parse_keeps_every_line_under_its_sub_block_headers(
        config: list[tuple[str, list]], closers: bool, xr_header: bool) -> None:
    """Any nesting as IOS-XE/IOS-XR print it (one space per level, with or without the `` !``
    closers XR writes after a sub-block, the banner lines before it): each line comes back with
    the headers it is under."""
    def render(node: tuple[str, list], depth: int) -> str:
        line, kids = node
        out = " " * depth + line + "\n" + "".join(render(k, depth + 1) for k in kids)
        return out + (" " * depth + "!\n" if closers and kids else "")

    def expect(node: tuple[str, list], path: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
        line, kids = node
        return [(line, path)] + [e for k in kids for e in expect(k, (*path, line))]

    text = ("Thu Dec  3 18:02:44.120 UTC\nBuilding configuration...\n" if xr_header else "") + "".join(
        header + "\n" + "".join(render(k, 1) for k in kids) + "!\n" for header, kids in config)
    blocks = [b for b in pc.parse_cisco_blocks(text) if b.header not in (
        "Thu Dec  3 18:02:44.120 UTC", "Building configuration...")]
    assert [b.header for b in blocks] == [h for h, _ in config]
    for block, (_, kids) in zip(blocks, config, strict=True):
        assert list(zip(block.children, block.paths, strict=True)) == [e for k in kids for e in expect(k, ())]


def test_iosxr_fail_closed_removal_is_the_whole_absent_rendering() -> None:
    """A router holding all of the fail-closed XR divert (discard route included) gets exactly the
    `xr1-closed-absent` golden list, and once that is applied a second plan is empty."""
    def golden(name: str) -> str:
        text = (ANSIBLE_DIR / "golden/pairs" / name / "router-iosxr.conf").read_text()
        return text.replace("<vaulted:xcast6_snmp_community>", COMMUNITY)

    present, absent = golden("xr1-closed"), golden("xr1-closed-absent")
    engines = CASES["iosxr"][2]
    lines = pc.cisco_removal(present, present, absent, engines, "iosxr")["lines"]
    assert lines == [ln for ln in absent.splitlines() if ln.strip() and not ln.startswith("#")]
    after = apply("iosxr", present, lines)
    assert pc.cisco_removal(after, present, absent, engines, "iosxr")["lines"] == []
