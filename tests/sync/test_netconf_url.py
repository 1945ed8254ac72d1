"""netconf:// source strings: every field validated with an error that names it; secrets stay out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.netconf import PASSWORD_ENV, NetconfParams, NetconfSource, parse_url
from sync.source import SourceError


def test_defaults_and_ipv6_host() -> None:
    p = parse_url("netconf://ops@[2001:db8::1]?flavor=junos")
    assert p == NetconfParams(host="2001:db8::1", user="ops", flavor="junos")
    assert p.port == 830 and p.timeout == 30 and p.hostkey_verify and p.table == "inet6.0"
    assert p.where == "[2001:db8::1]:830"


def test_all_options(tmp_path: Path) -> None:
    kh, key = tmp_path / "kh", tmp_path / "id"
    kh.write_text("")
    key.write_text("")
    p = parse_url(f"netconf://u@r1:2830?flavor=ietf&timeout=2.5&hostkey_verify=false&known_hosts={kh}"
                  f"&key={key}&rib=default&tree=routing")
    assert (p.port, p.timeout, p.hostkey_verify, p.known_hosts, p.key, p.rib, p.tree) == (
        2830, 2.5, False, str(kh), str(key), "default", "routing")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("snmp://u@h?flavor=junos", "scheme"),
        ("netconf://h?flavor=junos", "user missing"),
        ("netconf://u@?flavor=junos", "host missing"),
        ("netconf://u@h:99999?flavor=junos", "port"),
        ("netconf://u@h:abc?flavor=junos", "port"),
        ("netconf://u@h", "flavor missing"),
        ("netconf://u@h?flavor=cisco", "flavor must be junos or ietf, got 'cisco'"),
        ("netconf://u@h?flavor=junos&timeout=soon", "timeout must be seconds, got 'soon'"),
        ("netconf://u@h?flavor=junos&timeout=0", "timeout must be in (0, 3600]"),
        ("netconf://u@h?flavor=junos&hostkey_verify=maybe",
         "hostkey_verify must be true or false, got 'maybe'"),
        ("netconf://u@h?flavor=junos&known_hosts=/nonexistent/kh", "known_hosts file '/nonexistent/kh'"),
        ("netconf://u@h?flavor=junos&key=/nonexistent/id", "key file '/nonexistent/id'"),
        ("netconf://u@h?flavor=ietf&tree=config", "tree must be one of"),
        ("netconf://u@h?flavor=junos&rib=x", "rib/tree are ietf options"),
        ("netconf://u@h?flavor=ietf&table=inet6.0", "table is a junos option"),
        ("netconf://u@h?flavor=junos&colour=red", "unknown option 'colour'"),
        ("netconf://u@h?flavor=junos&marker=sometimes", "marker must be on or off, got 'sometimes'"),
        ("netconf://u@h?flavor=junos&flavor=ietf", "option 'flavor' given twice"),
        ("netconf://u@h/path?flavor=junos", "unexpected path"),
    ],
)
def test_bad_field_named(url: str, needle: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_url(url)
    assert needle in str(err.value)


def test_password_never_in_url_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError) as err:
        parse_url("netconf://u:hunter2@h?flavor=junos")
    assert "hunter2" not in str(err.value) and PASSWORD_ENV in str(err.value)
    monkeypatch.setenv(PASSWORD_ENV, "hunter2")
    src = NetconfSource.from_url("netconf://u@h?flavor=junos")
    assert "hunter2" not in repr(src) and "hunter2" not in repr(src.params)
    params = NetconfParams(host="h", user="u", flavor="junos", password="hunter2")
    assert "hunter2" not in repr(params)


def test_marker_off_means_unsupported() -> None:
    import asyncio

    src = NetconfSource.from_url("netconf://u@127.0.0.1:1?flavor=ietf&marker=off")
    assert asyncio.run(src.change_marker()) is None  # no connection attempted


def test_no_credentials_is_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    src = NetconfSource.from_url("netconf://u@127.0.0.1:1?flavor=junos&hostkey_verify=false")
    with pytest.raises(SourceError, match=f"no credentials: set \\${PASSWORD_ENV} or key="):
        src.fetch_sync()
