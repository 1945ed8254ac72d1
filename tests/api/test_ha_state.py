"""Engine pairs, the pure part: hold-down, health rule, [ha] config, bfdd control-socket frames."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.bfdd import BMT_NOTIFY, Peer, frame, render_config, split_frames, subscribe_message
from api.config import ConfigError, parse_config
from api.hastate import ADMIN_DOWN, ADMIN_UP, HoldDown, health_problems

samples = st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=5.0)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(samples, st.floats(min_value=0.0, max_value=3.0))
def test_up_only_after_uninterrupted_health_for_the_hold_down(seq: list[tuple[bool, float]],
                                                              hold: float) -> None:
    h = HoldDown(hold)
    now = 0.0
    healthy_since: float | None = None
    for healthy, dt in seq:
        now += dt
        if healthy and healthy_since is None:
            healthy_since = now
        if not healthy:
            healthy_since = None
        state = h.feed(healthy, now)
        if not healthy:
            assert state == ADMIN_DOWN                      # unhealthy: down at once
        else:
            assert healthy_since is not None
            expected = ADMIN_UP if now - healthy_since >= hold else ADMIN_DOWN
            assert state == expected


@given(samples)
def test_draining_is_down_for_good(seq: list[tuple[bool, float]]) -> None:
    h = HoldDown(0.0)
    h.feed(True, 0.0)
    assert h.state == ADMIN_UP
    assert h.drain() == ADMIN_DOWN
    now = 0.0
    for healthy, dt in seq:
        now += dt
        assert h.feed(healthy, now) == ADMIN_DOWN


def test_flapping_engine_stays_down() -> None:
    """A worker crashing every 2 s never brings traffic back with a 5 s hold-down."""
    h = HoldDown(5.0)
    t = 0.0
    ups = 0
    for _ in range(20):
        for _ in range(19):             # 1.9 s healthy, sampled every 0.1 s
            ups += h.feed(True, t) == ADMIN_UP
            t += 0.1
        h.feed(False, t)
        t += 0.1
    assert ups == 0
    assert h.hold_remaining(t) == 0.0   # not healthy at the end: nothing counting


def test_health_problems_name_every_cause() -> None:
    assert health_problems(ready_reasons=[], route_count=10, held_back=None, ingress_down=[]) == []
    why = health_problems(ready_reasons=["0 of 1 workers running"], route_count=0,
                          held_back=None, ingress_down=["to-ra-snd"])
    assert why == ["0 of 1 workers running", "the serving table is empty", "ingress link to-ra-snd is down"]
    held = health_problems(ready_reasons=[], route_count=26,
                           held_back={"added": 0, "removed": 26, "changed": 0}, ingress_down=[])
    assert held == ["the safety valve holds back an empty table from the router"]
    # a held-back big change that is not "empty" keeps serving the last good table: healthy
    assert health_problems(ready_reasons=[], route_count=26,
                           held_back={"added": 0, "removed": 20, "changed": 0}, ingress_down=[]) == []


BASE = {
    "sync": {"source": "snmp://public@[2001:db8::1]"},
    "links": {"mode": "direct", "map": [
        {"router_if": "ge-0/0/0.0", "link": "eth1", "subnet": "2001:db8:e::/64",
         "engine_addr": "2001:db8:e::2", "router_addr": "2001:db8:e::1"},
        {"router_if": "ge-0/0/1.0", "link": "eth2"}]},
}


def test_ha_section_defaults_and_values() -> None:
    cfg = parse_config(BASE, env={})
    assert not cfg.ha.enabled
    cfg = parse_config({**BASE, "ha": {"enabled": True, "links": ["eth1"], "hold_down": 2,
                                       "drain_time": 1.5, "tx_interval_ms": 50}}, env={})
    assert cfg.ha.links == ("eth1",) and cfg.ha.hold_down == 2 and cfg.ha.tx_interval_ms == 50
    assert cfg.summary()["ha"]["drain_time"] == 1.5
    assert cfg.ha.start_timeout == 10.0      # bfdd's sockets: a deadline, raised for slow hosts
    cfg = parse_config({**BASE, "ha": {"enabled": True, "links": ["eth1"], "start_timeout": 180}}, env={})
    assert cfg.summary()["ha"]["start_timeout"] == 180


@pytest.mark.parametrize(("ha", "message"), [
    ({"enabled": True}, "ha.links: missing"),
    ({"enabled": True, "links": ["eth9"]}, "ha.links: 'eth9' is no [[links.map]] link (known: eth1, eth2)"),
    ({"enabled": True, "links": ["eth2"]}, "ha.links: 'eth2' needs engine_addr and router_addr"),
    ({"multiplier": 1}, "ha.multiplier: 1 is not allowed"),
    ({"tx_interval_ms": 5}, "ha.tx_interval_ms: 5 is not allowed"),
    ({"drain": 3}, "ha.drain: unknown key"),
    ({"start_timeout": 0}, "ha.start_timeout: 0 is not allowed"),
])
def test_ha_section_problems_name_the_key(ha: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({**BASE, "ha": ha}, env={})
    assert message in str(ei.value)


def test_bfdd_config_starts_every_session_admin_down() -> None:
    text = render_config([Peer("eth1", "2001:db8:e::1", "2001:db8:e::2")], 100, 100, 3)
    assert " peer 2001:db8:e::1 local-address 2001:db8:e::2\n" in text
    assert "  shutdown\n" in text and "  detect-multiplier 3\n" in text
    assert "  transmit-interval 100\n" in text


def test_control_socket_frames() -> None:
    sub = subscribe_message()
    length, _id, mtype, ver = struct.unpack("!IHBB", sub[:8])
    assert (length, mtype, ver) == (8, BMT_NOTIFY, 1) and struct.unpack("=Q", sub[8:]) == (1,)
    note = {"op": "status", "peer-address": "2001:db8:e::1", "local-address": "2001:db8:e::2",
            "state": "up", "diagnostics": 0}
    data = frame(json.dumps({"status": "ok"}).encode(), 1) + frame(json.dumps(note).encode(), BMT_NOTIFY)
    for cut in range(len(data) + 1):     # any split point: whole messages out, the rest kept
        first, rest = split_frames(data[:cut])
        second, tail = split_frames(rest + data[cut:])
        assert [d for _, d in first + second] == [{"status": "ok"}, note] and tail == b""


def test_explicit_sessions_for_a_divert_link_outside_the_link_map() -> None:
    cfg = parse_config({**BASE, "ha": {"enabled": True, "session": [
        {"link": "xc100", "local": "2001:db8:f100::2", "peer": "2001:db8:f100::1"}]}}, env={})
    assert cfg.ha.sessions == (("xc100", "2001:db8:f100::2", "2001:db8:f100::1"),)
    with pytest.raises(ConfigError) as ei:
        parse_config({**BASE, "ha": {"enabled": True, "session": [{"link": "xc100", "local": "ff02::1"}]}},
                     env={})
    assert "ha.session[0].local" in str(ei.value) and "ha.session[0]: missing peer" in str(ei.value)


def test_missing_capabilities_for_a_non_root_bfdd_are_named() -> None:
    from api.bfdd import missing_caps

    # CAP_NET_ADMIN + CAP_NET_RAW only: what the hardened unit grants today
    assert missing_caps("CapEff:\t0000000000003000\n") == ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]
    assert missing_caps("CapEff:\t000001ffffffffff\n") == []
