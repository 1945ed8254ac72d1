"""The API's TLS settings without a daemon (issue 20): the [api] rules, the server context's
checks naming the file at fault, the certificate summary, the client context."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest

from api.client import resolve_target
from api.config import ApiSection, ConfigError, parse_config
from api.tls import certificate_summary, client_context, restart_fields, server_context
from lab.pki import issue, make_ca

SRC = {"sync": {"source": "snmp://public@[2001:db8::1]"},
       "links": {"mode": "direct", "map": [{"router_if": "ge-0/0/0.0", "link": "eth1"}]}}
SRC_TOML = ('[sync]\nsource = "snmp://public@[2001:db8::1]"\n[links]\nmode = "direct"\n'
            '[[links.map]]\nrouter_if = "ge-0/0/0.0"\nlink = "eth1"\n')


def _api(**api: object) -> ApiSection:
    return parse_config({**SRC, "api": api}, env={}).api


def _problems(**api: object) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({**SRC, "api": api}, env={})
    return str(err.value)


def test_beyond_loopback_needs_tls_or_allow_plaintext() -> None:
    for listen in ("192.0.2.10", "2001:db8::10", "0.0.0.0", "::"):
        msg = _problems(listen=listen)
        assert f"api.listen: '{listen}' is beyond this host and the API has no TLS" in msg
        assert "api.allow_plaintext = true" in msg
        assert _api(listen=listen, allow_plaintext=True).allow_plaintext
        assert _api(listen=listen, tls_cert="/c.pem", tls_key="/k.pem").tls
    assert not _api(listen="::1").tls and not _api(listen="127.0.0.2").tls
    assert not _api(listen="192.0.2.10", enabled=False).enabled       # no API: nothing crosses


def test_tls_keys_go_together() -> None:
    assert "api.tls_key: missing: api.tls_cert is set" in _problems(tls_cert="/c.pem")
    assert "api.tls_cert: missing: api.tls_key is set" in _problems(tls_key="/k.pem")
    assert "api.tls_client_ca: client certificates are checked only over TLS" in _problems(
        tls_client_ca="/ca")
    assert "api.tls_cert: 'c.pem' is not allowed: must be an absolute path" in _problems(
        tls_cert="c.pem", tls_key="/k.pem")
    assert "api.allow_plaintext: 'yes' is not allowed" in _problems(allow_plaintext="yes")


def test_api_url_is_https_with_tls() -> None:
    api = {"listen": "::", "port": 9443, "tls_cert": "/c", "tls_key": "/k"}
    cfg = parse_config({**SRC, "api": api}, env={})
    assert cfg.api_url() == "https://[::1]:9443"
    assert cfg.summary()["api"]["tls_cert"] == "/c"


def test_server_context_names_the_file_at_fault(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    a, b = issue(ca, tmp_path, "a"), issue(ca, tmp_path, "b")
    ctx = server_context(ApiSection(tls_cert=a.cert, tls_key=a.key, tls_client_ca=ca.cert))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED
    assert server_context(ApiSection(tls_cert=a.cert, tls_key=a.key)).verify_mode == ssl.CERT_NONE
    cases = [
        (ApiSection(tls_cert=a.cert, tls_key=b.key),
         f"api.tls_key: is not the private key of the certificate {a.cert}"),
        (ApiSection(tls_cert=tmp_path / "no.crt", tls_key=a.key), "api.tls_cert: does not exist"),
        (ApiSection(tls_cert=a.cert, tls_key=a.key, tls_client_ca=tmp_path / "no-ca"), "api.tls_client_ca"),
        (ApiSection(tls_cert=a.key, tls_key=a.key), "api.tls_cert/api.tls_key"),
    ]
    for api, needle in cases:
        with pytest.raises(ConfigError) as err:
            server_context(api)
        assert needle in str(err.value), str(err.value)
    a.key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"api\.tls_key: has mode 0644: others may read"):
        server_context(ApiSection(tls_cert=a.cert, tls_key=a.key))


def test_certificate_summary_warns_before_and_after_expiry(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    good, old = issue(ca, tmp_path, "good"), issue(ca, tmp_path, "old", expired=True)
    line, warning = certificate_summary(good.cert)
    assert "CN=good" in line and "names localhost, 127.0.0.1, ::1" in line and warning is not None
    assert "expires on" in warning       # 5 days left: within the 14 days of warning
    later = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    assert certificate_summary(good.cert, now=later)[1] is None
    assert "EXPIRED" in str(certificate_summary(old.cert)[1])


def test_restart_fields_leave_out_what_sighup_applies() -> None:
    a = ApiSection(tls_cert=Path("/a"), tls_key=Path("/ak"), tokens_file=Path("/t1"))
    b = ApiSection(tls_cert=Path("/b"), tls_key=Path("/bk"), tokens_file=Path("/t2"))
    assert restart_fields(a) == restart_fields(b)
    assert restart_fields(a) != restart_fields(ApiSection())              # TLS on/off: restart
    assert restart_fields(a) != restart_fields(ApiSection(tls_cert=Path("/a"), tls_key=Path("/ak"),
                                                          tls_client_ca=Path("/ca")))


def test_client_context_always_verifies(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    ctx = client_context(ca.cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context().verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="CA file"):
        client_context(tmp_path / "missing.pem")


def test_cli_trusts_the_engines_own_certificate_from_its_config(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("XCAST6_API_URL", "XCAST6_API_TOKEN", "XCAST6_API_CA_FILE", "XCAST6_API_CLIENT_CERT",
                "XCAST6_API_CLIENT_KEY", "XCAST6_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "engine.toml"
    cfg.write_text(SRC_TOML + '[api]\nlisten = "127.0.0.1"\nport = 9443\n'
                   f'token = "{"t" * 40}"\ntls_cert = "/etc/x/api.crt"\ntls_key = "/etc/x/api.key"\n')
    t = resolve_target(None, None, str(cfg))
    assert (t.url, t.ca_file) == ("https://127.0.0.1:9443", Path("/etc/x/api.crt"))
    monkeypatch.setenv("XCAST6_API_CA_FILE", "/etc/x/ca.pem")
    monkeypatch.setenv("XCAST6_API_CLIENT_CERT", "/etc/x/me.crt")
    t = resolve_target(None, None, str(cfg))
    assert (t.ca_file, t.client_cert, t.client_key) == (Path("/etc/x/ca.pem"), Path("/etc/x/me.crt"), None)
    assert resolve_target(None, None, str(cfg), ca_file="/opt/ca.pem").ca_file == Path("/opt/ca.pem")
    monkeypatch.delenv("XCAST6_API_CA_FILE")
    # another engine's URL: this engine's certificate is not what to trust for it
    assert resolve_target("https://[2001:db8::7]:8406", None, str(cfg)).ca_file is None


def test_refused_handshakes_are_summarised() -> None:
    from api.tls import HandshakeLog

    now = [0.0]
    h = HandshakeLog(every=60, clock=lambda: now[0])
    assert h.note("unknown ca") == "refused TLS handshakes: 1 x unknown ca"
    for t, reason in ((1, "unknown ca"), (2, "peer did not return a certificate"), (30, "unknown ca")):
        now[0] = t
        assert h.note(reason) is None
    now[0] = 70
    assert h.note("unknown ca") == ("refused TLS handshakes: 1 x peer did not return a certificate, "
                                    "3 x unknown ca in the last 70 s")
