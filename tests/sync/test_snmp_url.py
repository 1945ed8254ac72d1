"""snmp:// and snmpv3:// source strings: every bad field named, secrets never shown."""

from __future__ import annotations

import pytest

from sync.snmp import SnmpSource
from sync.snmp_url import SnmpUrlError, parse_snmp_url

ENV: dict[str, str] = {}


def test_v2c_defaults_and_ipv6_literal() -> None:
    cfg = parse_snmp_url("snmp://public@[2001:db8::1]", ENV)
    assert (cfg.host, cfg.port, cfg.version, cfg.community) == ("2001:db8::1", 161, "2c", "public")
    assert (cfg.timeout, cfg.retries, cfg.max_repetitions, cfg.columns) == (2.0, 3, 50, "index")
    assert cfg.display_url() == "snmp://[2001:db8::1]:161"


def test_v2c_tunables() -> None:
    cfg = parse_snmp_url("snmp://c0mm@router.example:1161?timeout=0.5&retries=0&max_repetitions=200", ENV)
    assert (cfg.host, cfg.port, cfg.timeout, cfg.retries, cfg.max_repetitions) == (
        "router.example", 1161, 0.5, 0, 200)


def test_v2c_community_from_env() -> None:
    cfg = parse_snmp_url("snmp://[::1]:1161", {"XCAST6_SNMP_COMMUNITY": "s3cret"})
    assert cfg.community == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.display_url()


def test_v3_keys_from_query_and_env() -> None:
    cfg = parse_snmp_url("snmpv3://ops@[2001:db8::1]?auth_proto=sha512&priv_proto=aes256",
                         {"XCAST6_SNMP_AUTH_KEY": "authsecret1", "XCAST6_SNMP_PRIV_KEY": "privsecret1"})
    assert (cfg.version, cfg.user, cfg.auth_proto, cfg.priv_proto) == ("3", "ops", "sha512", "aes256")
    assert (cfg.auth_key, cfg.priv_key) == ("authsecret1", "privsecret1")
    source = SnmpSource(cfg)
    for text in (repr(cfg), repr(source), source.url):
        assert "authsecret1" not in text and "privsecret1" not in text
    cfg = parse_snmp_url("snmpv3://ops@h?auth_key=queryauth1&priv_key=querypriv1",
                         {"XCAST6_SNMP_AUTH_KEY": "envauth11", "XCAST6_SNMP_PRIV_KEY": "envpriv11"})
    assert (cfg.auth_key, cfg.priv_key, cfg.auth_proto, cfg.priv_proto) == (
        "queryauth1", "querypriv1", "sha256", "aes128")


def problems(url: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SnmpUrlError) as info:
        parse_snmp_url(url, env or {})
    assert isinstance(info.value, ValueError)
    return info.value.problems


def test_every_bad_field_is_named_at_once() -> None:
    found = problems("snmpv3://@host?auth_proto=sha999&priv_proto=rot13&timeout=fast&retries=99"
                     "&max_repetitions=0&color=blue&columns=all")
    text = " | ".join(found)
    for field in ("user:", "auth_proto: 'sha999'", "priv_proto: 'rot13'", "timeout: 'fast'",
                  "retries: 99 out of range", "max_repetitions: 0 out of range", "color: unknown parameter",
                  "columns: 'all'", "auth_key: missing", "priv_key: missing"):
        assert field in text, field


def test_bad_scheme_host_port() -> None:
    assert problems("http://public@host")[0].startswith("scheme:")
    assert any(p.startswith("host: missing") for p in problems("snmp://public@"))
    assert problems("snmp://public@host:99999")[0].startswith("host/port:")
    assert problems("snmp://public@[nothex]")[0].startswith("host/port: 'nothex' does not appear")


def test_v2c_rejects_v3_fields_and_missing_community() -> None:
    found = problems("snmp://host?auth_proto=sha256")
    assert any(p.startswith("community: missing") for p in found)
    assert any(p.startswith("auth_proto: only for snmpv3") for p in found)


def test_secrets_not_echoed_in_errors() -> None:
    found = problems("snmpv3://ops:hunter2secret@host?auth_key=short&priv_key=tiny&timeout=x")
    text = " ".join(found)
    assert "hunter2secret" not in text and "short" not in text.replace("shorter", "") and "tiny" not in text
    assert any(p.startswith("userinfo:") for p in found)
