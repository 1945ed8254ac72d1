"""The [sync] section (sync/config.py): one model for the file and the service; secrets by constructor."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sync.config import SyncConfig, parse_sync
from sync.registry import open_source

V3 = "snmpv3://ops@[2001:db8::1]?auth_proto=sha256&priv_proto=aes128"


def test_file_keys_are_the_service_fields_with_one_default() -> None:
    cfg, problems = parse_sync({"source": V3, "interval": 60, "safety_valve": 0.25}, env={})
    assert problems == [] and cfg is not None
    assert (cfg.interval, cfg.safety_valve, cfg.change_detect, cfg.timeout) == (60.0, 0.25, 1.0, 120.0)
    assert SyncConfig().timeout == cfg.timeout  # the service and the file agree on the default


def test_secrets_reach_the_source_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("XCAST6_SNMP_AUTH_KEY", "XCAST6_SNMP_PRIV_KEY"):
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)
    raw = {"source": V3, "snmp_auth_key": "authsecret1", "snmp_priv_key": "privsecret1"}
    cfg, _ = parse_sync(raw, env={})
    assert cfg is not None
    source: Any = open_source(cfg.source, cfg.credentials())
    assert source.config.auth_key == "authsecret1" and source.config.priv_key == "privsecret1"
    assert dict(os.environ) == before  # nothing was copied into the process environment
    assert "authsecret1" not in repr(cfg) and "authsecret1" not in str(cfg.summary())


def test_environment_wins_over_the_file() -> None:
    env = {"XCAST6_SNMP_AUTH_KEY": "fromenv11"}
    cfg, _ = parse_sync({"source": V3, "snmp_auth_key": "fromfile1"}, env=env)
    assert cfg is not None and cfg.credentials().snmp_auth_key == "fromenv11"


def test_every_problem_at_once_and_no_secret_echoed() -> None:
    cfg, problems = parse_sync({"interval": -5, "snmp_priv_key": 7, "intervall": 3}, env={})
    assert cfg is None
    assert "sync.interval: -5 is not allowed: must be a positive number of seconds" in problems
    assert "sync.snmp_priv_key: this value is not allowed: must be a non-empty string" in problems
    assert "sync.intervall: unknown key (did you mean 'interval'?)" in problems
    assert any(p.startswith("sync.source: missing") for p in problems)
