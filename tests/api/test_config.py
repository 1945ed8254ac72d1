"""Configuration file: validation messages, unknown keys, env secrets, redaction."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from api.config import ConfigError, example_path, load_config, parse_config
from engine.settings import Secret
from sync.registry import strip_secrets

BASE = {
    "sync": {"source": "snmp://public@[2001:db8::1]"},
    "links": {"mode": "direct", "map": [{"router_if": "ge-0/0/0.0", "link": "eth1"}]},
}


def _with(section: str, **kv: object) -> dict:
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {}).update(kv)
    return data


def test_example_file_is_valid() -> None:
    cfg = load_config(example_path(), env={})
    assert cfg.sync.interval == 300
    assert cfg.links.mode == "vlan" and cfg.links.trunk == "eth1"
    assert [m.vlan_id for m in cfg.links.entries] == [101, None]
    assert cfg.links.entries[1].router_if == "ge-0/0/2.*"  # a glob, matched by the plan
    assert cfg.api.listen == "127.0.0.1"


def test_negative_interval_names_key_value_and_rule() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_with("sync", interval=-5), env={})
    assert str(ei.value) == "sync.interval: -5 is not allowed: must be a positive number of seconds"


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        (
            "sync",
            "safety_valve",
            1.5,
            "sync.safety_valve: 1.5 is not allowed: must be a share of the table, 0 < share <= 1",
        ),
        (
            "sync",
            "source",
            "http://x",
            "sync.source: 'http://x' is not allowed: scheme must be one of snmp://",
        ),
        ("sync", "source", "snmp://", "has no host"),
        ("api", "port", 70000, "api.port: 70000 is not allowed: must be an integer TCP port from 1 to 65535"),
        ("api", "listen", "localhost", "api.listen: 'localhost' is not allowed: must be an IP address"),
        (
            "engine",
            "log_format",
            "xml",
            "engine.log_format: 'xml' is not allowed: must be one of 'text', 'json'",
        ),
        ("engine", "state_dir", "relative/dir", "must be an absolute path"),
        ("workers", "count", "two", "workers.count: 'two' is not allowed: must be an integer"),
        ("workers", "busy_poll_us", -1, "workers.busy_poll_us: -1 is not allowed: must be an integer number "
         "of microseconds (0 = off) from 0 to 1000000"),
        ("workers", "rx_buffer_kb", 16, "workers.rx_buffer_kb: 16 is not allowed: must be an integer number "
         "of KiB from 64 to 1048576"),
        ("workers", "cpu_resume_latency_us", -1, "workers.cpu_resume_latency_us: -1 is not allowed: must "
         "be an integer number of microseconds (0 = the idle loop polls) from 0 to 10000000"),
        ("workers", "cpu_resume_latency_us", 0, "workers.cpu_resume_latency_us: needs workers.cpus"),
        ("links", "vlan_range", [10, 5], "links.vlan_range: [10, 5] is not allowed"),
        ("links", "mode", "bridge", "links.mode: 'bridge' is not allowed: must be one of 'vlan', 'direct'"),
    ],
)
def test_bad_values(section: str, key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_with(section, **{key: value}), env={})
    assert needle in str(ei.value)


def test_unknown_key_did_you_mean() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_with("sync", intervall=5), env={})
    assert "sync.intervall: unknown key (did you mean 'interval'?)" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        parse_config({**BASE, "worker": {"count": 1}}, env={})
    assert "worker: unknown key (did you mean 'workers'?)" in str(ei.value)


def test_all_problems_reported_together() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"sync": {"interval": 0}, "api": {"port": 0}}, env={})
    probs = ei.value.problems
    assert any(p.startswith("sync.interval: 0") for p in probs)
    assert any(p.startswith("api.port: 0") for p in probs)
    assert any(p.startswith("sync.source: missing") for p in probs)
    assert any(p.startswith("links.trunk: missing") for p in probs)


def test_link_map_rules() -> None:
    data = {
        "sync": BASE["sync"],
        "links": {
            "mode": "vlan",
            "trunk": "eth1",
            "map": [
                {"router_if": "ge-0/0/1.0", "vlan": 101, "engine_addr": "2001:db8::2"},
                {"router_if": "ge-0/0/2.0", "vlan": 101, "link": "eth3"},
                {"vlan": 5000},
                {"router_if": "ge-0/0/3.0", "subnet": "2001:db8:3::/64", "engine_addr": "2001:db8:4::2"},
                {"router_if": "ge-0/0/4.0", "mtu": 9000},
            ],
        },
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(data, env={})
    text = str(ei.value)
    assert "links.map[0].subnet: missing (required when engine_addr is given)" in text
    assert "links.map[1].vlan: VLAN 101 already used by links.map[0]" in text
    assert "links.map[1].link: only meaningful in mode 'direct'" in text
    assert "links.map[2].vlan: 5000 is not allowed: must be an integer VLAN id from 1 to 4094" in text
    assert "links.map[2].router_if: missing" in text
    assert "links.map[3].engine_addr: '2001:db8:4::2' is not inside subnet 2001:db8:3::/64" in text
    assert "links.map[4].mtu: unknown key" in text
    direct = {"sync": BASE["sync"], "links": {"mode": "direct", "map": [{"router_if": "eth0", "vlan": 7}]}}
    with pytest.raises(ConfigError) as ei:
        parse_config(direct, env={})
    assert "links.map[0].link: missing" in str(ei.value) and "links.map[0].vlan: only meaningful" in str(
        ei.value
    )
    with pytest.raises(ConfigError, match=r"links.map: missing \(give"):
        parse_config({"sync": BASE["sync"], "links": {"trunk": "eth1"}}, env={})


def test_env_overrides_secrets_and_never_prints_them(caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(
        _with("api", token="from-file"),
        env={"XCAST6_API_TOKEN": "from-env-s3cret-0123456789abcdefghij", "XCAST6_SNMP_AUTH_KEY": "authk3y"},
    )
    assert cfg.api.token == Secret("from-env-s3cret-0123456789abcdefghij")
    assert cfg.api.token is not None and cfg.api.token.reveal() == "from-env-s3cret-0123456789abcdefghij"
    assert cfg.sync.snmp_auth_key is not None and cfg.sync.snmp_auth_key.reveal() == "authk3y"
    logging.getLogger("t").warning("config %r %s %s", cfg, cfg.api.token, cfg.summary())
    assert "s3cret" not in caplog.text and "authk3y" not in caplog.text and "from-file" not in caplog.text
    assert "public" not in str(cfg.summary())  # the v2c community is a secret too


def test_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_with("api", token=12345678), env={})
    assert "api.token" in str(ei.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("snmp://public@[2001:db8::1]:161", "snmp://***@[2001:db8::1]:161"),
        ("netconf://admin:pw@r1:830?flavor=junos", "netconf://admin:***@r1:830?flavor=junos"),
        (
            "snmpv3://u@h?auth=sha256&authkey=abc&priv=aes128",
            "snmpv3://u@h?auth=sha256&authkey=***&priv=aes128",
        ),
    ],
)
def test_source_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert strip_secrets(url) == shown


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "engine.toml"
    bad.write_text("[sync\nsource=1")
    with pytest.raises(ConfigError, match=r"engine.toml: not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml", env={})


def test_example_is_real_toml() -> None:
    tomllib.loads(example_path().read_text())


def test_worker_cpus_are_checked_against_this_host() -> None:
    import os

    usable = sorted(os.sched_getaffinity(0))
    cfg = parse_config(_with("workers", cpus=[usable[-1]]), env={})
    assert cfg.workers.cpus == (usable[-1],)
    missing = max(usable) + 100
    with pytest.raises(ConfigError) as ei:
        parse_config(_with("workers", cpus=[usable[0], missing]), env={})
    want = f"workers.cpus: [{usable[0]}, {missing}] is not allowed: CPU {missing} is not available"
    assert want in str(ei.value)
    for bad, why in (([], "non-empty list"), (["1"], "entry '1' is not a CPU number"),
                     ([usable[0], usable[0]], f"CPU {usable[0]} is listed twice")):
        with pytest.raises(ConfigError, match=why):
            parse_config(_with("workers", cpus=bad), env={})


def test_cpu_resume_latency_with_pinned_workers_is_accepted() -> None:
    cfg = parse_config(_with("workers", count=1, cpus=[0], cpu_resume_latency_us=0), env={})
    assert cfg.workers.cpu_resume_latency_us == 0
    assert parse_config(BASE, env={}).workers.cpu_resume_latency_us is None     # default: untouched
    with pytest.raises(ConfigError) as ei:     # a bad cpus list is reported once, not twice
        parse_config(_with("workers", cpus="0", cpu_resume_latency_us=0), env={})
    assert "needs workers.cpus" not in str(ei.value) and "workers.cpus" in str(ei.value)
