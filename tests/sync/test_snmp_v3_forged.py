"""SNMPv3 replies below the configured security level never reach the walk (issue 15).

A keyless agent on the path answers discovery normally, then answers each encrypted GETBULK in
plaintext (msgFlags 0) with the request's msgID.  Those replies must be dropped and counted,
the request keeps waiting for the genuine reply, and with no genuine reply the fetch fails
with a timeout that names the drops.  The forged messages come from tests/sync/v3_fake_agent.py
(pyasn1 + hashlib, independent of sync.snmp_ber/snmp_usm).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import pytest
from pysnmp.proto import rfc1902

from lab.snmpd import SnmpdLab, UdpFaultProxy
from sync import mib, snmp_ber, snmp_usm
from sync.snmp import SnmpSource
from sync.snmp_url import SnmpConfig, parse_snmp_url
from sync.snmp_walk import NativeV3Walker, Walker, make_walker
from sync.source import SourceError
from tests.sync import v3_fake_agent as fake
from tests.sync.test_snmp_snmpd import assert_matches_kernel, small_table


def capturing_factory(walkers: list[Any]) -> Any:
    def factory(config: SnmpConfig) -> Walker:
        walker = make_walker(config)
        walkers.append(walker)
        return walker

    return factory


async def fetch_from(agent: fake.FakeV3Agent, walkers: list[Any]) -> Any:
    await agent.start()
    try:
        config = parse_snmp_url(agent.url("unknown_ifindex=placeholder"))
        return await SnmpSource(config, capturing_factory(walkers)).fetch()
    finally:
        agent.close()


def test_plaintext_replies_to_authpriv_requests_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sync.snmp_walk")
    agent = fake.FakeV3Agent(lambda msg_id: [fake.forged_routes(msg_id, flags=0)])
    walkers: list[Any] = []
    with pytest.raises(SourceError) as info:
        snapshot = asyncio.run(fetch_from(agent, walkers))
        pytest.fail(f"forged plaintext replies were believed: {snapshot.routes}")
    message = str(info.value)
    assert "no reply to GETBULK" in message and "after 2 tries x 0.3s" in message
    assert "unauthenticated (noAuthNoPriv) Response" in message
    walker = walkers[0]
    assert agent.discoveries == 1 and agent.requests
    assert walker.drops["unauthenticated"] >= 1
    assert walker.unauthenticated_drops == walker.drops["unauthenticated"]
    assert "authpass" not in message and "privpass" not in message
    # Logged once (per reason and walker) however many were dropped, naming the target only.
    warnings = [r.getMessage() for r in caplog.records if "dropped an SNMPv3 reply" in r.getMessage()]
    assert len(warnings) == 1 and walker.drops["unauthenticated"] > 1
    assert warnings[0].startswith(f"snmpv3://ops@[::1]:{agent.port}: dropped an SNMPv3 reply: unauth")
    assert "authpass" not in caplog.text and "privpass" not in caplog.text


def test_authenticated_but_unencrypted_response_is_dropped() -> None:
    # Valid MAC (the agent knows the auth key) but msgFlags 0x01: authPriv was asked for.
    key = fake.localized_auth_key("authpass256", hashlib.sha256)
    auth = (key, hashlib.sha256, 24)
    agent = fake.FakeV3Agent(lambda msg_id: [fake.forged_routes(msg_id, flags=0x01, auth=auth)])
    walkers: list[Any] = []
    with pytest.raises(SourceError, match=r"authenticated but unencrypted \(authNoPriv\) Response"):
        snapshot = asyncio.run(fetch_from(agent, walkers))
        pytest.fail(f"authNoPriv replies were believed: {snapshot.routes}")
    assert walkers[0].drops["unencrypted"] >= 1
    assert "wrong_digest" not in walkers[0].drops  # the MAC itself was fine


def test_unauthenticated_time_window_report_does_not_move_the_clock() -> None:
    # RFC 3414 3.2 step 7b: boots/time only from authenticated messages.
    def report(msg_id: int) -> list[bytes]:
        varbinds = [(fake.USM_NOT_IN_TIME_WINDOWS, rfc1902.Counter32(1))]
        return [fake.build_message(msg_id, 0, "report", varbinds, boots=99, time=5)]

    async def run() -> NativeV3Walker:
        agent = fake.FakeV3Agent(report)
        await agent.start()
        walker = NativeV3Walker(parse_snmp_url(agent.url()))
        try:
            with pytest.raises(SourceError, match=r"not in time window \(said by an unauthenticated Report"):
                await walker.get([mib.SYS_UPTIME])
        finally:
            await walker.close()
            agent.close()
        return walker

    walker = asyncio.run(run())
    assert (walker._clock.boots, walker._clock.synced) == (7, False)
    assert walker.resyncs == 0 and walker.drops["unauthenticated_report"] == 2


def test_authenticated_replay_outside_the_time_window_loses_to_the_genuine_reply() -> None:
    # The "genuine" side needs the priv key, so it uses our encoder; the replay is the same
    # kind of message from an earlier boot, i.e. what an attacker could have recorded.
    keys = snmp_usm.make_keys("sha256", "authpass256", "aes128", "privpass128", fake.ENGINE_ID)

    def authpriv(msg_id: int, value: int, boots: int, time: int) -> bytes:
        varbind = snmp_ber._tlv(0x30, snmp_ber.encode_oid(mib.SYS_UPTIME) + snmp_ber.encode_integer(value))
        pdu = snmp_ber._tlv(0xA2, snmp_ber.encode_integer(msg_id) + snmp_ber.encode_integer(0)
                            + snmp_ber.encode_integer(0) + snmp_ber._tlv(0x30, varbind))
        return snmp_usm.encode_authpriv(msg_id, pdu, engine_id=fake.ENGINE_ID, boots=boots, time=time,
                                        user=b"ops", context=b"", keys=keys, salt=bytes(8))

    async def run() -> tuple[Any, NativeV3Walker]:
        agent = fake.FakeV3Agent(lambda msg_id: [
            authpriv(msg_id, 666, 6, 5000),  # from an earlier boot
            authpriv(msg_id, 667, 7, 1000 - 151),  # this boot, but older than the window
            fake.forged_routes(msg_id),  # and a plaintext one for good measure
            authpriv(msg_id, 42, 7, 1000),
        ], boots=7, time=1000)
        await agent.start()
        walker = NativeV3Walker(parse_snmp_url(agent.url()))
        try:
            # First request: the clock is only the discovery's (boots 7, time 1000), replays of
            # older messages are refused already.
            first = await walker.get([mib.SYS_UPTIME])
            second = await walker.get([mib.SYS_UPTIME])
        finally:
            await walker.close()
            agent.close()
        return (first, second), walker

    (first, second), walker = asyncio.run(run())
    assert first == second == [(mib.SYS_UPTIME, 42)]
    assert (walker._clock.boots, walker._clock.synced) == (7, True)
    assert walker.drops == {"not_in_time_window": 4, "unauthenticated": 2}


def test_engine_clock_rfc3414_step_7b() -> None:
    clock = snmp_usm.EngineClock(boots=3, time=100, latest=100, at=0.0)  # from discovery
    assert not clock.accept(2, 10_000, 0.0)  # an earlier boot: replay, even before syncing
    assert not clock.accept(3, 100 - 151, 0.0) and not clock.synced
    assert clock.accept(3, 50, 0.0) and clock.synced  # inside the window: confirms the clock
    assert (clock.boots, clock.time) == (3, 100)  # older than the latest: no update
    assert clock.now(10.0) == 110
    assert clock.accept(3, 110 - 150, 10.0)  # 150 s old is still inside the window
    assert not clock.accept(3, 110 - 151, 10.0)
    assert clock.accept(3, 500, 10.0) and clock.now(10.0) == 500  # newer moves the estimate
    assert clock.accept(3, 450, 10.0) and clock.time == 500  # older (in window) does not
    assert clock.accept(4, 1, 11.0) and (clock.boots, clock.now(11.0)) == (4, 1)  # agent rebooted
    assert not clock.accept(3, 10_000, 11.0)
    assert not clock.accept(snmp_usm.MAX_ENGINE_BOOTS, 1, 11.0)  # latched: never usable
    assert not clock.accept(3, 5, 11.0, time_report=True)  # once synced a report follows the rules too
    # A discovery that claimed a clock far ahead (tampered): the agent's authenticated
    # usmStatsNotInTimeWindows Report resets it (RFC 3414 4), a Response could not.
    tampered = snmp_usm.EngineClock(boots=1000, time=10**6, latest=10**6)
    assert not tampered.accept(5, 300, 0.0)
    assert tampered.accept(5, 300, 0.0, time_report=True) and (tampered.boots, tampered.time) == (5, 300)
    fresh = snmp_usm.EngineClock()
    assert not fresh.accept(snmp_usm.MAX_ENGINE_BOOTS, 1, 0.0, time_report=True) and not fresh.synced


class ForgingProxy(UdpFaultProxy):
    """A relay on [::1] in front of the real agent that answers every authPriv request itself
    first, keyless: a plaintext Response with ``::/0``, an unauthenticated wrongDigest Report and
    a garbage datagram, all with the request's msgID.  The agent's genuine reply follows."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(upstream)
        self.forged = 0

    def forged_replies(self, request: bytes) -> list[bytes]:
        msg_id, _, engine_id, _ = fake.parse_request(request)
        if not engine_id:
            return []
        self.forged += 1
        wrong_digest = fake.build_message(
            msg_id, 0, "report", [("1.3.6.1.6.3.15.1.1.5.0", rfc1902.Counter32(1))], engine_id=engine_id)
        return [fake.forged_routes(msg_id, engine_id=engine_id), wrong_digest, request[:20]]


@pytest.mark.root
@pytest.mark.netns
def test_genuine_reply_wins_over_forged_ones_sent_first(snmpd_lab: SnmpdLab) -> None:
    small_table(snmpd_lab)
    snmpd_lab.start()
    walkers: list[Any] = []

    async def run() -> Any:
        proxy = ForgingProxy((snmpd_lab.agent_ip, snmpd_lab.port))
        await proxy.start()
        try:
            url = snmpd_lab.v3_url("xs256", "timeout=1&retries=1&columns=full")
            url = url.replace(f"[{snmpd_lab.agent_ip}]:{snmpd_lab.port}", f"[::1]:{proxy.port}")
            return await SnmpSource(parse_snmp_url(url), capturing_factory(walkers)).fetch(), proxy.forged
        finally:
            proxy.close()

    snapshot, forged = asyncio.run(run())
    assert_matches_kernel(snmpd_lab, snapshot, metric=True)
    assert all(r.prefix.prefixlen or r.nexthops[0].gateway != fake.NEXT_HOP for r in snapshot.routes)
    walker = walkers[0]
    assert forged > 5
    assert walker.drops["unauthenticated"] == forged
    assert walker.drops["unauthenticated_report"] == forged
    assert walker.drops["malformed"] == forged
    assert walker.unauthenticated_drops == 2 * forged


@pytest.mark.root
@pytest.mark.netns
def test_real_agent_not_in_time_window_resync(snmpd_lab: SnmpdLab) -> None:
    snmpd_lab.start()

    async def run() -> tuple[list[tuple[Any, Any]], NativeV3Walker]:
        walker = NativeV3Walker(parse_snmp_url(snmpd_lab.v3_url("xs256", "timeout=1&retries=1")))
        try:
            await walker.get([mib.SYS_UPTIME])
            boots = walker._clock.boots
            assert walker._clock.synced
            # As if the agent had rebooted since we last heard from it (snmpEngineBoots is one
            # more than we think): it answers with an authenticated usmStatsNotInTimeWindows
            # Report carrying its clock, which we take (greater boots) and resend with.
            walker._clock.boots -= 1
            resyncs = walker.resyncs
            result = await walker.get([mib.SYS_UPTIME])
            assert walker.resyncs == resyncs + 1
            assert walker._clock.boots == boots
            return result, walker
        finally:
            await walker.close()

    result, walker = asyncio.run(run())
    assert result[0][0] == mib.SYS_UPTIME and isinstance(result[0][1], int)
    assert not walker.drops
    assert snmp_ber.END_OF_MIB not in (v for _, v in result)
