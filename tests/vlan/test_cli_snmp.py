"""``interfaces plan --router snmp://...``: the router interface list from a real net-snmp agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import main as cli
from lab import netns
from lab.snmpd import SnmpdLab
from tests.vlan.nsutil import sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


def test_plan_from_a_live_snmp_agent_follows_oper_status(snmpd_lab: SnmpdLab, tmp_path: Path) -> None:
    snmpd_lab.start()
    cfg = tmp_path / "engine.toml"
    cfg.write_text(
        '[links]\ntrunk = "xtrunk"\nvlan_range = [200, 299]\npool = "2001:db8:ff::/56"\n'
        '[[links.map]]\nrouter_if = "xsnmp-r?"\n'
    )
    cli._register()
    with netns.temporary("xvl-seng") as (eng,):
        sh("link", "add", "xtrunk", "type", "veth", "peer", "name", "xtrunk-p", ns=eng)
        args = ["links", "plan", "-c", str(cfg), "--router", snmpd_lab.url(), "--netns", eng]
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        # Router ifIndex order: r0, r1, r2 get 200, 201, 202; everything else is unmapped.
        for i in range(3):
            assert (
                f"+ xc-v{200 + i}         vlan {200 + i} on xtrunk for xsnmp-r{i} mtu 1500 up"
                in result.stdout
            )
        assert "not mapped (no mapping entry matches)" in result.stdout  # lo, the agent's own link
        snmpd_lab.ip_batch(["link set xsnmp-r1p down"])  # carrier lost on the router's r1
        snmpd_lab.expire_route_cache()
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        assert "+ xc-v201         vlan 201 on xtrunk for xsnmp-r1 mtu 1500 down" in result.stdout
