"""TLS of the API, both ends: the daemon's server context (uvicorn serves it) and the clients'.

Server (``[api] tls_cert``, ``tls_key``, optional ``tls_client_ca``): TLS 1.2 or newer only,
no renegotiation; with ``tls_client_ca`` every client must show a certificate that CA signed
(mTLS), before any HTTP is read.  The context is built and checked before the engine starts
anything (a wrong path or a key that does not match the certificate stops the start with the
file named), and the certificate and key are re-read on SIGHUP into the same context: new
connections get the new certificate, open ones keep theirs.  A change of ``tls_client_ca`` or
turning TLS on or off needs a restart.

Clients (the CLI, the lab): always verify the server, against a named CA file (or the system's
CAs), host name included; there is no switch to turn verification off.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import ssl
import stat
from pathlib import Path
from typing import Any

from api.config import ApiSection, ConfigError

log = logging.getLogger("xcast6.api")
MIN_VERSION = ssl.TLSVersion.TLSv1_2
EXPIRY_WARNING = datetime.timedelta(days=14)


def _problem(what: str, path: Path | None, detail: str) -> ConfigError:
    return ConfigError([f"{what}: {detail}"], None if path is None else str(path))


def _ssl_detail(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError):
        return "cannot be read by the engine's user (permission denied)"
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}".replace("_", " ").lower()
    return str(exc)


def _check_key_mode(key: Path) -> None:
    try:
        st = os.stat(key)
    except OSError:
        return                       # load_cert_chain names the problem
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise _problem("api.tls_key", key, f"has mode {mode:04o}: others may read or write the private "
                       "key: chmod o-rwx (0600, or 0640 with the engine's group)")


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    _check_key_mode(key)
    for what, path in (("api.tls_cert", cert), ("api.tls_key", key)):
        if not path.is_file():
            raise _problem(what, path, "does not exist or is not a file")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "KEY_VALUES_MISMATCH" in reason:
            raise _problem("api.tls_key", key, f"is not the private key of the certificate {cert}") from None
        if "PEM" in reason or "NO_START_LINE" in reason or "X509" in reason:
            raise _problem("api.tls_cert/api.tls_key", cert,
                           f"not a PEM certificate and key ({_ssl_detail(exc)})") from None
        raise _problem("api.tls_cert/api.tls_key", cert, _ssl_detail(exc)) from None
    except OSError as exc:
        raise _problem("api.tls_cert/api.tls_key", cert, _ssl_detail(exc)) from None


class HandshakeLog:
    """Refused TLS handshakes (no or a foreign client certificate, an old TLS version, a client
    that does not trust us), summarised by reason: the first of a quiet period logged at once,
    then at most one line per ``every`` seconds (asyncio's TLS closes such connections silently)."""

    def __init__(self, every: float = 60.0, clock: Any = None) -> None:
        import time

        self.every = every
        self.clock = clock or time.monotonic
        self._last: float | None = None
        self._reasons: dict[str, int] = {}

    def note(self, reason: str) -> str | None:
        """Count one refusal; the line to log now, if any."""
        self._reasons[reason] = self._reasons.get(reason, 0) + 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return None
        shown = ", ".join(f"{n} x {r}" for r, n in sorted(self._reasons.items()))
        line = f"refused TLS handshakes: {shown}"
        if self._last is not None:
            line += f" in the last {now - self._last:.0f} s"
        self._last, self._reasons = now, {}
        return line


HANDSHAKES = HandshakeLog()


class _LoggedSSLObject(ssl.SSLObject):
    """The server's TLS objects: a handshake the server refuses is counted in :data:`HANDSHAKES`."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = (exc.reason or type(exc).__name__).lower().replace("_", " ")
            line = HANDSHAKES.note(reason)
            if line is not None:
                log.warning("%s", line)
            raise


def server_context(api: ApiSection) -> ssl.SSLContext:
    """The API's server context for ``api`` (which has ``tls_cert``); :class:`ConfigError` names
    the key and file that cannot be used."""
    assert api.tls_cert is not None and api.tls_key is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.sslobject_class = _LoggedSSLObject
    _load_chain(ctx, api.tls_cert, api.tls_key)
    if api.tls_client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=api.tls_client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise _problem("api.tls_client_ca", api.tls_client_ca, _ssl_detail(exc)) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_summary(cert: Path, now: datetime.datetime | None = None) -> tuple[str, str | None]:
    """(a one-line description of the first certificate in ``cert``, a warning or None): the
    subject, the names a client may use, the expiry; the warning when it has expired or expires
    within :data:`EXPIRY_WARNING`."""
    from cryptography import x509

    now = now or datetime.datetime.now(datetime.UTC)
    try:
        first = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (OSError, ValueError, IndexError) as exc:
        return f"{cert}: unreadable ({exc})", None
    try:
        san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    until = first.not_valid_after_utc
    shown = ", ".join(names) or "(none: clients will refuse it)"
    line = f"{first.subject.rfc4514_string()}, names {shown}, valid until {until:%Y-%m-%d %H:%M} UTC"
    if until <= now:
        return line, f"the API certificate {cert} EXPIRED on {until:%Y-%m-%d}: clients will refuse it"
    if until - now <= EXPIRY_WARNING:
        return line, f"the API certificate {cert} expires on {until:%Y-%m-%d}, in {(until - now).days} days"
    return line, None


@dataclasses.dataclass
class ServerTls:
    """The daemon's TLS: one context for the life of the server, its certificate reloadable."""

    context: ssl.SSLContext
    api: ApiSection

    @classmethod
    def load(cls, api: ApiSection) -> ServerTls:
        """Build and check the context (ConfigError before anything starts), log what it serves."""
        tls = cls(server_context(api), api)
        tls._describe()
        return tls

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``: it serves this very context."""
        ctx = self.context
        return {"ssl_context_factory": lambda _config, _default: ctx}

    def reload(self, api: ApiSection) -> None:
        """Load ``api``'s certificate and key into the live context; they are tried on a fresh
        context first, so a bad pair (ConfigError) leaves the serving one untouched."""
        assert api.tls_cert is not None and api.tls_key is not None
        _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), api.tls_cert, api.tls_key)
        self.context.load_cert_chain(api.tls_cert, api.tls_key)
        self.api = dataclasses.replace(self.api, tls_cert=api.tls_cert, tls_key=api.tls_key)
        log.info("reloaded the API certificate")
        self._describe()

    def _describe(self) -> None:
        assert self.api.tls_cert is not None
        line, warning = certificate_summary(self.api.tls_cert)
        mtls = (f"client certificates required (CA {self.api.tls_client_ca})"
                if self.api.tls_client_ca is not None else "no client certificates")
        log.info("API TLS (1.2+): certificate %s; %s", line, mtls)
        if warning is not None:
            log.error("%s", warning) if "EXPIRED" in warning else log.warning("%s", warning)


def restart_fields(api: ApiSection) -> ApiSection:
    """``api`` without what a SIGHUP applies (tokens, certificate and key paths): what differs
    in the result needs a restart."""
    tls_on = Path("/") if api.tls_cert is not None else None
    return dataclasses.replace(api, token=None, tokens_file=None, tls_cert=tls_on, tls_key=tls_on)


# -- clients --------------------------------------------------------------------------------------


def client_context(ca_file: Path | None = None, client_cert: Path | None = None,
                   client_key: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the API's certificate and host name: against ``ca_file``
    (a CA, or the server's own certificate: what that file holds is trusted as an anchor) or,
    without one, the system's CAs; TLS 1.2+; ``client_cert``/``client_key`` for mTLS.  Raises
    ValueError naming the file that cannot be used."""
    try:
        ctx = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"CA file {ca_file}: {_ssl_detail(exc)}") from None
    ctx.minimum_version = MIN_VERSION
    if ca_file is not None:
        # an intermediate CA or the server's own certificate named by the operator is an anchor
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if client_cert is not None:
        try:
            ctx.load_cert_chain(client_cert, client_key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"client certificate {client_cert}: {_ssl_detail(exc)}") from None
    return ctx
