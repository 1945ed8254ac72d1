"""router_divert provisions the engine's NETCONF user, read-only where the platform allows it:
Junos login class with the view permission only, IOS-XR task group with read tasks only, IOS-XE
privilege 15 narrowed by NACM (validated here against the real ietf-netconf-acm YANG module)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from sync import netconf_ietf
from tests.ansible.test_ansible_offline import ANSIBLE_DIR, GOLDEN, _edited_example, _render_one

BIN = Path(sys.executable).parent
NACM_YANG = Path("/usr/share/yuma/modules/ietf/ietf-netconf-acm@2018-02-14.yang")  # Debian libyuma-base
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"


def test_junos_user_is_in_a_view_only_class() -> None:
    lines = (GOLDEN / "mx1" / "router-junos.conf").read_text().splitlines()
    login = [x for x in lines if x.startswith("set system login")]
    assert login == [
        "set system login class XCAST6-NETCONF permissions view",
        "set system login user xcast6 class XCAST6-NETCONF",
        'set system login user xcast6 authentication encrypted-password '
        '"<vaulted:xcast6_netconf_password sha512-crypt>"',
    ]


def test_junos_absent_removes_the_user_and_its_class(tmp_path: Path) -> None:
    inv = _edited_example(tmp_path, [("mx1", "xcast6_fail_mode: open",
                                      "xcast6_fail_mode: open\nxcast6_divert_state: absent")])
    res = _render_one(inv, "mx1", tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = (tmp_path / "out" / "mx1" / "router-junos.conf").read_text().splitlines()
    assert "delete system login user xcast6" in lines and "delete system login class XCAST6-NETCONF" in lines


def test_junos_password_is_a_stable_sha512_crypt_of_the_secret(tmp_path: Path) -> None:
    """Rendered with a real secret: a $6$ hash that verifies, the same on every run (no diff)."""
    from passlib.hash import sha512_crypt

    play = tmp_path / "play.yml"
    (tmp_path / "vars.json").write_text(json.dumps({
        "xcast6_sync": {"netconf": {"enabled": True, "user": "xcast6"}},
        "xcast6_netconf_password": "Netconf-Pw-0001", "router_divert_state": "present",
        "router_divert_netconf_class": "XCAST6-NETCONF"}))
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  connection: local\n  vars_files: [vars.json]\n"
        "  tasks:\n    - ansible.builtin.template:\n"
        f"        src: {ANSIBLE_DIR}/roles/router_divert/templates/netconf_user_junos.j2\n"
        "        dest: '{{ out }}'\n        mode: '0644'\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
           "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "at"), "HOME": str(tmp_path)}
    hashes = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        args = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"out={out}"]
        res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        m = re.search(r'authentication encrypted-password "(\$6\$[^"]+)"', out.read_text())
        assert m, out.read_text()
        hashes.append(m.group(1))
    assert hashes[0] == hashes[1]
    assert sha512_crypt.verify("Netconf-Pw-0001", hashes[0])
    assert "Netconf-Pw-0001" not in (tmp_path / "out1").read_text()


def test_iosxr_user_has_read_tasks_only() -> None:
    text = (GOLDEN / "xr1" / "router-iosxr.conf").read_text()
    group = re.search(r"^taskgroup XCAST6-NETCONF\n(.*?)^!", text, re.M | re.S)
    assert group
    tasks = [x.strip() for x in group.group(1).splitlines() if x.strip().startswith("task")]
    assert tasks and all(t.startswith("task read ") for t in tasks), tasks
    assert "usergroup XCAST6-NETCONF\n taskgroup XCAST6-NETCONF\n!" in text
    assert "username xcast6\n group XCAST6-NETCONF\n secret 0 <vaulted:xcast6_netconf_password>\n!" in text


def _nacm() -> etree._Element:
    return etree.fromstring((GOLDEN / "xe1" / "iosxe-nacm.xml").read_bytes())


def test_iosxe_nacm_is_valid_ietf_netconf_acm_data(tmp_path: Path) -> None:
    """yanglint (libyang) accepts the edit-config content, insert attribute included."""
    assert NACM_YANG.exists(), "libyuma-base is installed by scripts/bootstrap.sh"
    data = tmp_path / "nacm.xml"
    data.write_bytes(etree.tostring(_nacm()[0]))  # the <nacm> inside <config>
    res = subprocess.run(["yanglint", "-p", str(NACM_YANG.parent), "-t", "edit", str(NACM_YANG), str(data)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_iosxe_nacm_reads_exactly_what_the_sync_reads_and_denies_the_rest() -> None:
    ns = {"n": NACM_NS}
    root = _nacm()
    assert root.findtext("n:nacm/n:groups/n:group/n:user-name", namespaces=ns) == "xcast6"
    rule_list = root.find("n:nacm/n:rule-list", ns)
    assert rule_list is not None
    assert rule_list.get("{urn:ietf:params:xml:ns:yang:1}insert") == "first"
    rules = [{etree.QName(c).localname: c.text for c in r} for r in rule_list.findall("n:rule", ns)]
    reads = {r["module-name"] for r in rules
             if r.get("access-operations") == "read" and r["action"] == "permit"}
    used = {n.rsplit(":", 1)[1] for n in (netconf_ietf.RT_NS, netconf_ietf.V6UR_NS, netconf_ietf.IF_NS)}
    assert reads == used
    assert [r for r in rules if r.get("rpc-name")] == [
        {"name": "rpc-get", "module-name": "ietf-netconf", "rpc-name": "get", "access-operations": "exec",
         "action": "permit"}]
    assert rules[-1] == {"name": "deny-everything-else", "module-name": "*", "access-operations": "*",
                         "action": "deny"}
    assert not [r for r in rules[:-1] if r["action"] != "permit" or r["module-name"] == "*"]
    assert not [r for r in rules if "Cisco-IOS-XE-native" in (r.get("module-name") or "")]


@pytest.mark.parametrize("host", ["xe1"])
def test_iosxe_user_is_privilege_15_with_a_hashed_secret(host: str) -> None:
    text = (GOLDEN / host / "router-iosxe.conf").read_text()
    user = "username xcast6 privilege 15 algorithm-type scrypt secret <vaulted:xcast6_netconf_password>"
    assert user in text
