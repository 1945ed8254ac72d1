"""The API across a network (issue 20), against the real daemon: TLS handshakes (good
certificate, expired certificate, wrong CA, TLS 1.1, plain HTTP), client certificates required
and missing, token roles over TLS, SIGHUP rotation of tokens and certificate while a client keeps
polling, and the refusal of plain HTTP beyond loopback.  Certificates are made in the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.tls import client_context
from lab.pki import Ca, Issued, issue, make_ca
from tests.api.conftest import (
    PY,
    ROOT,
    TOKEN,
    Daemon,
    Router,
    free_port,
    sh,
    start_daemon,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]

READ_OLD = "read-old-" + "o" * 32
READ_NEW = "read-new-" + "n" * 32
ADMIN2 = "admin-two-" + "a" * 32


@dataclass
class Pki:
    ca: Ca
    other_ca: Ca
    server: Issued
    server2: Issued
    expired: Issued
    client: Issued
    stranger: Issued          # a client certificate from another CA


@pytest.fixture
def pki(xtmp: Path) -> Pki:
    d = xtmp / "pki"
    d.mkdir()
    ca, other = make_ca(d, "xapi-ca"), make_ca(d, "xapi-other-ca")
    return Pki(ca, other, issue(ca, d, "engine"), issue(ca, d, "engine-renewed"),
               issue(ca, d, "engine-old", expired=True), issue(ca, d, "prometheus", client=True),
               issue(other, d, "stranger", client=True))


def _private(path: Path, text: str) -> None:
    """Write ``text`` as the engine would want a secrets file: 0600, replaced atomically."""
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _tls_daemon(router: Router, xtmp: Path, server: Issued, *, client_ca: Path | None = None,
                wait_ctx: ssl.SSLContext | None = None, tokens: str = f"read prometheus {READ_OLD}\n",
                log: str = "daemon.log") -> Daemon:
    port = free_port()
    cfg = xtmp / "engine.toml"
    tokens_file = xtmp / "api-tokens"
    _private(tokens_file, tokens)
    extra = (f'tokens_file = "{tokens_file}"\ntls_cert = "{server.cert}"\ntls_key = "{server.key}"\n'
             + (f'tls_client_ca = "{client_ca}"\n' if client_ca else ""))
    write_config(cfg, xtmp / "state", f"kernel://{router.ns}", port, link=router.host_link, extra=extra)
    return start_daemon(cfg, xtmp / log, f"https://127.0.0.1:{port}", verify=wait_ctx or True)


def _get(d: Daemon, ctx: ssl.SSLContext | bool, path: str = "/status", token: str | None = READ_OLD,
         method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=d.url, verify=ctx, trust_env=False, timeout=10) as c:
        return c.request(method, path, headers=headers)


def _fails(d: Daemon, ctx: ssl.SSLContext, path: str = "/status") -> str:
    with pytest.raises(httpx.HTTPError) as err:
        _get(d, ctx, path)
    return str(err.value)


def _cli(d: Daemon, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("XCAST6_")}
    full.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([PY, "-m", "api.main", *args], cwd=ROOT, env=full, text=True,
                          capture_output=True, timeout=60)


def _speaks(client: ssl.SSLContext, server: Issued) -> str | None:
    """The TLS version ``client`` negotiates with a server willing to speak anything (a control:
    a refusal by the daemon then is the daemon's)."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    sctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    sctx.load_cert_chain(server.cert, server.key)
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)

        def serve() -> None:
            conn, _ = lsock.accept()
            with contextlib.suppress(OSError), sctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with socket.create_connection(lsock.getsockname()) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()
        t.join(5)
    return version


def _exchange(d: Daemon, ctx: ssl.SSLContext) -> str:
    """GET /healthz over a bare TLS socket: the answer's first line, or how it ended (with TLS 1.3
    the client's side of the handshake completes before the server checks the client's
    certificate; the server then closes: asyncio's TLS sends no alert)."""
    try:
        with socket.create_connection(("127.0.0.1", int(d.url.rsplit(":", 1)[1])), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = tls.recv(4096).decode("latin-1")
            return answer.splitlines()[0] if answer else "closed without an answer"
    except ssl.SSLError as exc:
        return f"{exc.reason}: {exc}"


def _secrets_not_logged(d: Daemon) -> None:
    logs = d.logs()
    for value in (TOKEN, READ_OLD, READ_NEW, ADMIN2):
        assert value not in logs


def test_tls_handshakes_roles_and_the_cli(router: Router, xtmp: Path, pki: Pki) -> None:
    good = client_context(pki.ca.cert)
    d = _tls_daemon(router, xtmp, pki.server, wait_ctx=good)
    try:
        # good certificate: read token reads, is refused a state change; admin may
        assert _get(d, good).json()["ready"] is True
        assert _get(d, good, "/metrics").text.startswith("#")
        r = _get(d, good, "/resync", method="POST")
        assert r.status_code == 403 and "'prometheus' has the read role" in r.json()["detail"]
        assert _get(d, good, "/resync", token=TOKEN, method="POST").status_code == 202
        with socket.create_connection(("127.0.0.1", int(d.url.rsplit(":", 1)[1]))) as raw, \
                good.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"
        # TLS 1.2 is accepted, TLS 1.1 refused by the server (the client is willing)
        v12 = client_context(pki.ca.cert)
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _get(d, v12).status_code == 200
        v11 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        v11.load_verify_locations(pki.ca.cert)
        v11.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():          # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            v11.minimum_version, v11.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
        assert _speaks(v11, pki.server) == "TLSv1.1"          # the client can, with a willing server
        msg = _fails(d, v11)
        assert "EOF" in msg or "PROTOCOL_VERSION" in msg.upper(), msg
        # wrong CA, and the system's CAs: the server is not trusted
        assert "CERTIFICATE_VERIFY_FAILED" in _fails(d, client_context(pki.other_ca.cert))
        assert "CERTIFICATE_VERIFY_FAILED" in _fails(d, client_context())
        # plain HTTP to the TLS port gets no answer
        with pytest.raises(httpx.HTTPError):
            httpx.get(d.url.replace("https:", "http:") + "/healthz", trust_env=False, timeout=5)
        # the CLI: the CA by environment; without it a one-line reason and exit 3
        ca_env = {"XCAST6_API_CA_FILE": str(pki.ca.cert)}
        ok = _cli(d, "status", "--url", d.url, "--token", READ_OLD, env=ca_env)
        assert ok.returncode == 0, ok.stderr
        bad = _cli(d, "status", "--url", d.url, "--token", READ_OLD)
        assert bad.returncode == 3 and "not trusted by the system's CAs" in bad.stderr, bad.stderr
        # on the engine host: URL, token and trust (its own certificate) from the config file
        own = _cli(d, "status", "--config", str(d.config))
        assert own.returncode == 0, own.stderr
        forbidden = _cli(d, "resync", "--url", d.url, "--token", READ_OLD,
                         env={"XCAST6_API_CA_FILE": str(pki.ca.cert)})
        assert forbidden.returncode == 4 and "forbidden" in forbidden.stderr, forbidden.stderr
        assert "API TLS (1.2+): certificate CN=engine, names localhost, 127.0.0.1, ::1" in d.logs()
        assert "API tokens by role: read: prometheus; admin: api.token" in d.logs()
        assert "POST /resync by token 'api.token' (admin)" in d.logs()
        assert "refused TLS handshakes: 1 x unsupported protocol" in d.logs()      # the TLS 1.1 client
        _secrets_not_logged(d)
    finally:
        assert d.stop() == 0


def test_expired_certificate_is_refused_and_logged(router: Router, xtmp: Path, pki: Pki) -> None:
    # waiting for readiness must not depend on the certificate under test
    unchecked = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unchecked.check_hostname, unchecked.verify_mode = False, ssl.CERT_NONE
    d = _tls_daemon(router, xtmp, pki.expired, wait_ctx=unchecked)
    try:
        assert "certificate has expired" in _fails(d, client_context(pki.ca.cert))
        assert "EXPIRED" in d.logs()
    finally:
        assert d.stop() == 0


def test_client_certificate_required(router: Router, xtmp: Path, pki: Pki) -> None:
    with_cert = client_context(pki.ca.cert, pki.client.cert, pki.client.key)
    d = _tls_daemon(router, xtmp, pki.server, client_ca=pki.ca.cert, wait_ctx=with_cert)
    try:
        assert _get(d, with_cert).status_code == 200
        # missing: refused in the handshake, /healthz too (nothing is served without it)
        _fails(d, client_context(pki.ca.cert), "/healthz")
        assert _exchange(d, client_context(pki.ca.cert)) == "closed without an answer"
        # from another CA: refused
        stranger = client_context(pki.ca.cert, pki.stranger.cert, pki.stranger.key)
        _fails(d, stranger, "/healthz")
        assert _exchange(d, stranger) == "closed without an answer"
        assert _exchange(d, with_cert).startswith("HTTP/1.1 200")
        # a client certificate is not a token: the API still wants one
        assert _get(d, with_cert, token=None).status_code == 401
        env = {"XCAST6_API_CA_FILE": str(pki.ca.cert)}
        bad = _cli(d, "status", "--url", d.url, "--token", READ_OLD, env=env)
        assert bad.returncode == 3, bad.stderr
        ok = _cli(d, "status", "--url", d.url, "--token", READ_OLD,
                  env={**env, "XCAST6_API_CLIENT_CERT": str(pki.client.cert),
                       "XCAST6_API_CLIENT_KEY": str(pki.client.key)})
        assert ok.returncode == 0, ok.stderr
        # the same as flags (before the command: they hold for every client command)
        ok = _cli(d, "--ca-file", str(pki.ca.cert), "--client-cert", str(pki.client.cert), "--client-key",
                  str(pki.client.key), "status", "--url", d.url, "--token", READ_OLD)
        assert ok.returncode == 0, ok.stderr
        assert "client certificates required" in d.logs()
        # the refusals show in the log, summarised by reason (the first at once)
        assert "refused TLS handshakes: 1 x peer did not return a certificate" in d.logs(), d.logs()[-3000:]
    finally:
        assert d.stop() == 0


class Poller(threading.Thread):
    """Polls /metrics with ``self.token`` (switched by the test), recording every outcome."""

    def __init__(self, d: Daemon, ctx: ssl.SSLContext) -> None:
        super().__init__(daemon=True)
        self.d, self.ctx = d, ctx
        self.token = READ_OLD
        self.outcomes: list[tuple[str, int | str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.d.url, verify=self.ctx, trust_env=False, timeout=10) as c:
            while not self.halt.is_set():
                token = self.token
                try:
                    auth = {"Authorization": f"Bearer {token}"}
                    status: int | str = c.get("/metrics", headers=auth).status_code
                except httpx.HTTPError as exc:
                    status = f"{type(exc).__name__}: {exc}"
                self.outcomes.append((token, status))
                time.sleep(0.02)


def _peer_der(d: Daemon, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", int(d.url.rsplit(":", 1)[1]))) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_sighup_rotates_tokens_and_certificate_while_a_client_polls(router: Router, xtmp: Path,
                                                                    pki: Pki) -> None:
    ctx = client_context(pki.ca.cert)
    d = _tls_daemon(router, xtmp, pki.server, wait_ctx=ctx)
    tokens_file = xtmp / "api-tokens"
    cert, key = pki.server.cert, pki.server.key
    poller = Poller(d, ctx)
    reloads = lambda: d.logs().count("reloaded API tokens")  # noqa: E731
    try:
        assert _peer_der(d, ctx) == _der(cert)
        poller.start()
        assert wait_for(lambda: len(poller.outcomes) > 10, 10)
        # step 1: the successor next to the old token, a renewed certificate in place
        _private(tokens_file, f"read prometheus {READ_OLD}\nread prometheus-2 {READ_NEW}\n"
                              f"admin ops {ADMIN2}\n")
        cert.write_bytes(pki.server2.cert.read_bytes())
        _private(key, pki.server2.key.read_text())
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloads() == 1, 10), d.logs()
        assert _get(d, ctx, token=READ_NEW).status_code == 200
        assert _get(d, ctx, token=READ_OLD).status_code == 200
        assert _get(d, ctx, "/resync", token=ADMIN2, method="POST").status_code == 202
        assert _peer_der(d, ctx) == _der(pki.server2.cert)      # new connections: the renewed one
        # step 2: the client moves, then the old token goes
        poller.token = READ_NEW
        n = len(poller.outcomes)
        assert wait_for(lambda: len(poller.outcomes) > n + 10, 10)
        _private(tokens_file, f"read prometheus-2 {READ_NEW}\nadmin ops {ADMIN2}\n")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloads() == 2, 10), d.logs()
        assert _get(d, ctx, token=READ_OLD).status_code == 401
        assert _get(d, ctx, token=READ_NEW).status_code == 200
        # a broken tokens file on SIGHUP: refused, the tokens in use stay
        tokens_file.chmod(0o644)
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "API tokens not reloaded, keeping the 3 in use" in d.logs(), 10), d.logs()
        assert _get(d, ctx, token=READ_NEW).status_code == 200
        n = len(poller.outcomes)
        assert wait_for(lambda: len(poller.outcomes) > n + 5, 10)
    finally:
        poller.halt.set()
        poller.join(15)
        rc = d.stop()
    assert rc == 0
    # the client never saw an error: every poll of its whole run was answered 200
    bad = [o for o in poller.outcomes if o[1] != 200]
    assert not bad and len(poller.outcomes) > 30, (bad[:5], len(poller.outcomes))
    assert "reloaded API tokens by role: read: prometheus, prometheus-2; admin: api.token, ops" in d.logs()
    _secrets_not_logged(d)


def test_plain_http_beyond_loopback_is_refused_unless_allowed(router: Router, xtmp: Path) -> None:
    tag = os.getpid() % 0xFFFF
    addr = f"fd58:6171:{tag:x}::1"
    sh("ip", "addr", "add", f"{addr}/64", "dev", router.host_link, "nodad")
    port = free_port()
    cfg = xtmp / "engine.toml"
    write_config(cfg, xtmp / "state", f"kernel://{router.ns}", port, link=router.host_link)
    cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1"', f'listen = "{addr}"'))
    p = subprocess.run([PY, "-m", "api.main", "run", "--config", str(cfg)], cwd=ROOT, text=True,
                       capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2, p.stderr
    assert f"api.listen: '{addr}' is beyond this host and the API has no TLS" in p.stderr
    chk = subprocess.run([PY, "-m", "api.main", "config", "check", str(cfg)], cwd=ROOT, text=True,
                         capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert chk.returncode == 2 and "api.allow_plaintext = true" in chk.stderr + chk.stdout
    # on purpose: it starts, and says so at every start
    cfg.write_text(cfg.read_text().replace(f'listen = "{addr}"',
                                           f'listen = "{addr}"\nallow_plaintext = true'))
    for n in (1, 2):
        d = start_daemon(cfg, xtmp / f"daemon{n}.log", f"http://[{addr}]:{port}")
        try:
            assert "WITHOUT TLS (api.allow_plaintext = true)" in d.logs()
            with d.client() as c:
                assert c.get("/status").status_code == 200
        finally:
            assert d.stop() == 0

