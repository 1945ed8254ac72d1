"""A walk that fails half way raises a specific SourceError and never returns part of a table."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from lab.snmpd import SnmpdLab, UdpFaultProxy, route_batch
from sync.snmp import SnmpSource
from sync.source import SourceError

pytestmark = [pytest.mark.root, pytest.mark.netns]

FAST = "timeout=0.3&retries=1"


def test_wrong_community_times_out_with_a_specific_message(snmpd_lab: SnmpdLab) -> None:
    snmpd_lab.start()
    source = SnmpSource.from_url(snmpd_lab.url(FAST, community="wrong"))
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        asyncio.run(source.fetch())
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert re.search(r"no reply to GETBULK 1\.3\.6\.1\.[\d.]+ after 2 tries x 0\.3s", message)
    assert "wrong community" in message
    assert "wrong" not in message.split("(")[0]  # the community itself is never echoed


def test_agent_unreachable(snmpd_lab: SnmpdLab) -> None:
    # Nothing listens on this port: the namespace answers ICMPv6 port unreachable.
    snmpd_lab.start()
    url = f"snmp://public@[{snmpd_lab.agent_ip}]:{snmpd_lab.port + 1 if snmpd_lab.port < 65535 else 1}?{FAST}"
    with pytest.raises(SourceError, match=r"Connection refused \(agent unreachable\)"):
        asyncio.run(SnmpSource.from_url(url).fetch())


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("auth_key", "agent refused the request for 1.3.6.1.2.1.31.1.1.1.1: wrong digest (wrong auth key"),
        ("priv_key", "after 2 tries x 0.3s (agent down, unreachable, or wrong priv key/protocol"),
        ("user", "agent refused the request for 1.3.6.1.2.1.31.1.1.1.1: unknown user name"),
    ],
)
def test_v3_wrong_credentials(snmpd_lab: SnmpdLab, what: str, expected: str) -> None:
    snmpd_lab.start()
    url = snmpd_lab.v3_url("xs256", FAST)
    if what == "user":
        url = url.replace("snmpv3://xs256@", "snmpv3://nobody9@")
    else:
        url = url.replace(f"{what}=", f"{what}=WRONG")
    with pytest.raises(SourceError) as info:
        asyncio.run(SnmpSource.from_url(url).fetch())
    message = str(info.value)
    assert expected in message
    assert message.startswith("snmpv3://")
    # pysnmp's wording for the same faults (engine=pysnmp)
    pysnmp_expected = {"auth_key": "Wrong SNMP PDU digest", "priv_key": "no reply after 2 tries",
                       "user": "Unknown USM user"}[what]
    with pytest.raises(SourceError, match=re.escape(pysnmp_expected)):
        asyncio.run(SnmpSource.from_url(url + "&engine=pysnmp").fetch())
    assert "authpass" not in message and "privpass" not in message  # secrets never in errors
    assert "1.3.6.1.2.1" in message  # names what it was reading


def big_agent(lab: SnmpdLab) -> None:
    lab.ip_batch(route_batch(2000, 3))
    lab.start()


def test_timeout_mid_walk(snmpd_lab: SnmpdLab) -> None:
    big_agent(snmpd_lab)

    async def run() -> None:
        proxy = UdpFaultProxy((snmpd_lab.agent_ip, snmpd_lab.port), drop_after=30)
        await proxy.start()
        try:
            await SnmpSource.from_url(f"snmp://public@[::1]:{proxy.port}?{FAST}").fetch()
        finally:
            proxy.close()

    mid_table = r"no reply to GETBULK 1\.3\.6\.1\.2\.1\.4\.24\.7\.1\.\d+\.2\.16\.32\.1"
    with pytest.raises(SourceError, match=mid_table):
        asyncio.run(run())


def test_reply_cut_short(snmpd_lab: SnmpdLab) -> None:
    big_agent(snmpd_lab)

    async def run() -> None:
        proxy = UdpFaultProxy((snmpd_lab.agent_ip, snmpd_lab.port), truncate_at=25)
        await proxy.start()
        try:
            await SnmpSource.from_url(f"snmp://public@[::1]:{proxy.port}?{FAST}").fetch()
        finally:
            proxy.close()

    with pytest.raises(SourceError, match=r"malformed SNMP reply \(\d+ bytes\): .*cut short"):
        asyncio.run(run())


def test_agent_gone_mid_walk(snmpd_lab: SnmpdLab) -> None:
    big_agent(snmpd_lab)
    source = SnmpSource.from_url(snmpd_lab.url(FAST))

    def progress(rows: int, phase: str) -> None:
        if phase == "routes" and rows > 500:
            snmpd_lab.stop()  # the router's agent dies half way through the table

    # A dying snmpd either stops answering or, while shutting down, answers genErr: both must end
    # the walk with an error naming the column, never a partial table.
    with pytest.raises(
        SourceError,
        match=r"(unreachable|no reply to GETBULK 1\.3\.6\.1\.2\.1\.4\.24\.7"
        r"|agent error genErr for 1\.3\.6\.1\.2\.1\.4\.24\.7)",
    ):
        asyncio.run(source.fetch(progress))
