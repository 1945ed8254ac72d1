"""NETCONF route source: the router's IPv6 table over NETCONF/SSH (ncclient), Junos or ietf-routing.

``NetconfSource.from_url("netconf://USER@HOST[:830]?flavor=junos|ietf&timeout=30"
"&hostkey_verify=true&known_hosts=/path&key=/path")``; the password comes from
``$XCAST6_NETCONF_PASSWORD`` (never from the URL, never in repr or errors).

* ``flavor=junos``: ``<get-route-information><table>inet6.0</table><active-path/>`` +
  ``<get-interface-information><terse/>`` (see sync/netconf_junos.py); extra option
  ``table=`` (default ``inet6.0``).
* ``flavor=ietf``: one ``<get>`` with a subtree filter on the ietf-routing RIB and
  ietf-interfaces (see sync/netconf_ietf.py); options ``tree=routing-state|routing``,
  ``rib=NAME``.
* ``marker=on|off`` (default on): whether :meth:`NetconfSource.change_marker` polls the
  router (off: periodic full fetches only).

Replies are parsed once, incrementally, straight from the raw reply text (ncclient's own DOM
parse is bypassed).  SSH sessions are kept open between calls (re-opened after any failure),
one for fetches and one for change-marker polls, so a poll costs one small RPC and never
delays a fetch.  Every failure is a :class:`sync.source.SourceError` naming host, RPC and
field; a fetch either returns a whole snapshot or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from lxml import etree

from engine.model import Interface, Snapshot
from sync import netconf_ietf, netconf_junos
from sync.netconf_junos import RouteParse
from sync.netconf_xml import NetconfReplyError, reply_too_big, safe_parser_options
from sync.source import Credentials, Progress, SourceError

log = logging.getLogger(__name__)
# paramiko's transport thread logs (through ncclient's logger) a traceback for every failed
# handshake; we report those failures as SourceError, so keep them off stderr unless the
# application configures logging.
logging.getLogger("ncclient").addHandler(logging.NullHandler())
PASSWORD_ENV = "XCAST6_NETCONF_PASSWORD"
FLAVORS = ("junos", "ietf")
DEFAULT_PORT = 830
RECV_SIZE = 1 << 16
_OPTIONS = ("flavor", "timeout", "hostkey_verify", "known_hosts", "key", "table", "rib", "tree", "marker")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True, slots=True)
class NetconfParams:
    """Everything needed to reach one router; ``password`` never shows in repr."""

    host: str
    user: str
    flavor: str
    port: int = DEFAULT_PORT
    timeout: float = 30.0
    hostkey_verify: bool = True
    known_hosts: str | None = None
    key: str | None = None
    table: str = netconf_junos.DEFAULT_TABLE
    rib: str | None = None
    tree: str = "routing-state"
    marker: bool = True
    password: str | None = field(default=None, repr=False, compare=False)
    # Without credentials from the caller (the operator's CLI), $XCAST6_NETCONF_PASSWORD is read
    # when the session opens; the daemon hands its configured password over instead.
    password_from_env: bool = field(default=True, repr=False, compare=False)

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for errors and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "<unparsable URL>"


def _bad(url: str, what: str) -> SourceError:
    return SourceError(f"bad NETCONF source {_redact(url)!r}: {what}")


def parse_url(url: str) -> NetconfParams:
    """Parse and validate a ``netconf://`` source string (raises SourceError naming the bad field)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(url, str(exc)) from exc
    if parts.scheme != "netconf":
        raise _bad(url, f"scheme must be 'netconf', got {parts.scheme!r}")
    if parts.password is not None:
        raise _bad(url, f"do not put the password in the URL; set ${PASSWORD_ENV} instead")
    if not parts.username:
        raise _bad(url, "user missing (netconf://USER@HOST)")
    if not parts.hostname:
        raise _bad(url, "host missing (netconf://USER@HOST)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise _bad(url, f"port: {exc}") from exc
    if parts.path not in ("", "/"):
        raise _bad(url, f"unexpected path {parts.path!r}; options go in the query (?flavor=junos)")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise _bad(url, f"query: {exc}") from exc
    opts: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            raise _bad(url, f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        if key in opts:
            raise _bad(url, f"option {key!r} given twice")
        opts[key] = value
    flavor = opts.get("flavor")
    if flavor is None:
        raise _bad(url, "flavor missing: add ?flavor=junos or ?flavor=ietf")
    if flavor not in FLAVORS:
        raise _bad(url, f"flavor must be junos or ietf, got {flavor!r}")
    try:
        timeout = float(opts.get("timeout", "30"))
    except ValueError as exc:
        raise _bad(url, f"timeout must be seconds, got {opts['timeout']!r}") from exc
    if not 0 < timeout <= 3600:
        raise _bad(url, f"timeout must be in (0, 3600] seconds, got {timeout:g}")
    verify_text = opts.get("hostkey_verify", "true").lower()
    if verify_text not in _TRUE | _FALSE:
        raise _bad(url, f"hostkey_verify must be true or false, got {opts['hostkey_verify']!r}")
    known_hosts: str | None = opts.get("known_hosts") or None
    if known_hosts is not None and not Path(known_hosts).is_file():
        raise _bad(url, f"known_hosts file {known_hosts!r} does not exist")
    key_file: str | None = opts.get("key") or None
    if key_file is not None and not Path(key_file).is_file():
        raise _bad(url, f"key file {key_file!r} does not exist")
    tree = opts.get("tree", "routing-state")
    if tree not in netconf_ietf.TREES:
        raise _bad(url, f"tree must be one of {', '.join(netconf_ietf.TREES)}, got {tree!r}")
    if flavor == "junos" and ("rib" in opts or "tree" in opts):
        raise _bad(url, "rib/tree are ietf options; junos uses table=")
    if flavor == "ietf" and "table" in opts:
        raise _bad(url, "table is a junos option; ietf uses rib= and tree=")
    marker_text = opts.get("marker", "on").lower()
    if marker_text not in ("on", "off"):
        raise _bad(url, f"marker must be on or off, got {opts['marker']!r}")
    table = opts.get("table", netconf_junos.DEFAULT_TABLE)
    if not table:
        raise _bad(url, "table must not be empty")
    return NetconfParams(
        host=parts.hostname, user=parts.username, flavor=flavor, port=port, timeout=timeout,
        hostkey_verify=verify_text in _TRUE, known_hosts=known_hosts, key=key_file, table=table,
        rib=opts.get("rib") or None, tree=tree, marker=marker_text == "on",
    )


def harden_ncclient() -> None:
    """Make ncclient parse with :func:`sync.netconf_xml.safe_parser_options` too.

    Our replies bypass ncclient's DOM, but it still parses the server's ``<hello>`` (and, in
    error paths, replies) with module-level lxml parsers that substitute internal entities;
    its ``huge_parser`` also lifts libxml2's size guards.  Both are replaced (idempotent).
    """
    from ncclient import xml_ as ncxml

    if getattr(ncxml, "_xcast6_hardened", False):
        return
    safe = etree.XMLParser(recover=False, **safe_parser_options())
    ncxml.parser = safe
    ncxml.huge_parser = safe
    ncxml._xcast6_hardened = True


class _RawReplies:
    """ncclient plumbing: an RPC whose reply is kept as raw text (no DOM), built lazily."""

    cls: Any = None

    @classmethod
    def rpc_class(cls) -> Any:
        if cls.cls is None:
            from ncclient.operations.rpc import RPC, RPCReply

            class RawReply(RPCReply):
                def parse(self) -> None:
                    # Parsed by our incremental parser instead of ncclient's full DOM.
                    self._parsed = True

            class RawRPC(RPC):
                REPLY_CLS = RawReply

                def request(self, op: etree._Element) -> Any:
                    return self._request(op)

            cls.cls = RawRPC
        return cls.cls


_RSA_HOSTKEY_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


class _PinnedTypes:
    """ncclient plumbing: a paramiko Transport whose host-key algorithms read ``ssh-rsa`` as RSA.

    For a host in known_hosts, ncclient offers only the pinned key types, taking them from the
    known_hosts type field -- ``ssh-rsa`` for an RSA key, which as an algorithm is the SHA-1
    signature that OpenSSH >= 8.8 servers (and routers built on it) no longer offer: a correctly
    pinned RSA key then fails with "no acceptable host key".  The restriction is kept (the server
    must show a pinned kind of key) but RSA also takes the SHA-2 signatures, as paramiko's own
    ``Transport.connect`` does for an RSA host key.  Found with a real sshd
    (tests/sync/test_netconf_hostkey_openssh.py).
    """

    cls: Any = None

    @classmethod
    def transport_class(cls) -> Any:
        if cls.cls is None:
            import paramiko

            class PinnedTypesTransport(paramiko.Transport):
                @property
                def _preferred_keys(self) -> tuple[str, ...]:
                    return self.__dict__.get("_xcast6_keys", paramiko.Transport._preferred_keys)

                @_preferred_keys.setter
                def _preferred_keys(self, names: Any) -> None:
                    keys: list[str] = []
                    for name in names:
                        for algo in _RSA_HOSTKEY_ALGORITHMS if name == "ssh-rsa" else (name,):
                            if algo not in keys:
                                keys.append(algo)
                    self.__dict__["_xcast6_keys"] = tuple(keys)

            cls.cls = PinnedTypesTransport
        return cls.cls


def _pinned_key_types(params: NetconfParams, path: str) -> list[str]:
    """Key types ``path`` pins for the host (empty: the host is not in the file, or no file)."""
    import paramiko

    keys = paramiko.HostKeys()
    try:
        keys.load(path)
    except OSError:
        return []
    types: list[str] = []
    for name in (params.host, f"[{params.host}]:{params.port}"):
        types += [t for t in (keys.lookup(name) or {}) if t not in types]
    return types


def _known_host_state(params: NetconfParams, path: str) -> str:
    """'mismatch' if ``path`` holds a different key for the host, else 'unknown'."""
    return "mismatch" if _pinned_key_types(params, path) else "unknown"


# paramiko's words when the client (ncclient offers only the pinned key types of a known host) and
# the server have no host-key algorithm in common: a pinned host now showing another kind of key.
_NO_COMMON_HOSTKEY = "no acceptable host key"


class _Session:
    """One ncclient session, opened on demand and dropped after any failure (runs in a thread)."""

    def __init__(self, params: NetconfParams) -> None:
        self.params = params
        self.manager: Any = None
        self.lock = threading.Lock()

    def _password(self) -> str | None:
        if self.params.password:
            return self.params.password
        return (os.environ.get(PASSWORD_ENV) or None) if self.params.password_from_env else None

    def _open(self) -> Any:
        import ncclient.transport.ssh as ncssh
        from ncclient import manager as ncmanager
        from ncclient.transport import SSHSession
        from ncclient.transport import errors as terr

        harden_ncclient()

        # ncclient re-scans its whole receive buffer after every recv(); with its default
        # 4 KiB reads a multi-MB reply sent as one 1.1 chunk costs seconds of CPU (measured:
        # 6.7 s CPU for an 11 MB Junos reply vs 0.18 s with 64 KiB reads).
        ncssh.BUF_SIZE = max(ncssh.BUF_SIZE, RECV_SIZE)
        p = self.params
        password = self._password()
        if password is None and p.key is None:
            raise SourceError(f"netconf {p.where}: no credentials: set ${PASSWORD_ENV} or key=/path",
                              SourceError.AUTH)
        known_hosts = p.known_hosts or os.path.expanduser("~/.ssh/known_hosts")

        transport_class = _PinnedTypes.transport_class()

        class _Ssh(SSHSession):
            def load_known_hosts(self, filename: str | None = None) -> None:
                # Only the configured file (OpenSSH semantics for UserKnownHostsFile).
                super().load_known_hosts(filename or known_hosts)

            # ncclient creates a plain paramiko.Transport in connect(); it becomes the subclass
            # above (no state of its own) before ncclient restricts its host-key algorithms.
            @property
            def _transport(self) -> Any:
                return self.__dict__.get("_xcast6_transport")

            @_transport.setter
            def _transport(self, value: Any) -> None:
                if value is not None and type(value) is transport_class.__bases__[0]:
                    value.__class__ = transport_class
                self.__dict__["_xcast6_transport"] = value

        handler = ncmanager.make_device_handler({"name": "default"})
        session = _Ssh(handler)
        try:
            sock = socket.create_connection((p.host, p.port), timeout=p.timeout)
        except OSError as exc:
            raise SourceError(f"netconf {p.where}: cannot connect: {exc.strerror or exc}",
                              SourceError.UNREACHABLE) from None
        # paramiko waits 15 s for an SSH banner whatever the socket timeout: bound the whole
        # handshake (banner, keys, auth, <hello>) by our timeout by shutting the socket down.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(p.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            session.connect(
                host=p.host, port=p.port, sock=sock, username=p.user, password=password,
                key_filename=p.key, allow_agent=False, look_for_keys=False,
                hostkey_verify=p.hostkey_verify, unknown_host_cb=lambda host, fp: False,
            )
        except terr.SSHUnknownHostError as exc:
            sock.close()
            if _known_host_state(p, known_hosts) == "mismatch":
                raise SourceError(
                    f"netconf {p.where}: host key MISMATCH (fingerprint {exc.fingerprint}) "
                    f"against {known_hosts}: possible man-in-the-middle; refusing to log in"
                ) from None
            raise SourceError(
                f"netconf {p.where}: host key {exc.fingerprint} not in {known_hosts} "
                "(add it, or set hostkey_verify=false)"
            ) from None
        except terr.AuthenticationError:
            sock.close()
            how = "key " + p.key if p.key else "password"
            raise SourceError(
                f"netconf {p.where}: authentication failed for user {p.user!r} ({how})", SourceError.AUTH
            ) from None
        except FileNotFoundError as exc:
            sock.close()
            raise SourceError(f"netconf {p.where}: known_hosts {known_hosts!r} unreadable: {exc}") from None
        except Exception as exc:  # ncclient SSHError/TransportError, paramiko SSHException, OSError
            sock.close()
            if expired.is_set():
                raise SourceError(
                    f"netconf {p.where}: no SSH/NETCONF handshake within {p.timeout:g} s "
                    "(host hangs, or is not a NETCONF server)", SourceError.UNREACHABLE
                ) from None
            pinned = _pinned_key_types(p, known_hosts) if p.hostkey_verify else []
            if pinned and _NO_COMMON_HOSTKEY in str(exc):
                raise SourceError(
                    f"netconf {p.where}: host key MISMATCH: the router shows no key of the type(s) "
                    f"pinned in {known_hosts} ({', '.join(pinned)}): its key was replaced by another "
                    "kind, or possible man-in-the-middle; refusing to log in"
                ) from None
            raise SourceError(
                f"netconf {p.where}: SSH/NETCONF handshake failed: {_clean(exc, password)}"
            ) from None
        finally:
            timer.cancel()
        return ncmanager.Manager(session, handler, timeout=p.timeout)

    def rpc(self, op: etree._Element, what: str) -> str:
        """Send ``op``, return the raw ``<rpc-reply>`` text (SourceError on any failure)."""
        from ncclient.operations import errors as oerr
        from ncclient.transport import errors as terr

        p = self.params
        with self.lock:
            if self.manager is None or not self.manager.connected:
                self.manager = self._open()
            mgr = self.manager
            try:
                rpc = _RawReplies.rpc_class()(mgr._session, mgr._device_handler, timeout=p.timeout)
                reply = rpc.request(op)
                text = str(reply.xml)
            except oerr.TimeoutExpiredError:
                self._drop()
                raise SourceError(f"netconf {p.where}: {what}: no reply within {p.timeout:g} s",
                                  SourceError.UNREACHABLE) from None
            except (terr.TransportError, terr.SessionError, OSError, EOFError) as exc:
                self._drop()
                raise SourceError(
                    f"netconf {p.where}: {what}: session lost mid-reply "
                    f"({_clean(exc, self._password()) or type(exc).__name__}); no data used"
                ) from None
        # Also the marker's reply, which is hashed without a parse: too big is refused alike.
        too_big = reply_too_big(len(text), what)
        if too_big is not None:
            raise SourceError(f"netconf {p.where}: {too_big}")
        return text

    def _drop(self) -> None:
        mgr, self.manager = self.manager, None
        if mgr is not None:
            # Closing a broken transport may fail; it is gone either way.
            with contextlib.suppress(Exception):
                mgr._session.close()

    def close(self) -> None:
        with self.lock:
            self._drop()


def _clean(exc: BaseException, secret: str | None) -> str:
    text = str(exc).strip()
    if secret:
        text = text.replace(secret, "***")
    return text


class NetconfSource:
    """A router reached over NETCONF; implements :class:`sync.source.RouteSource`."""

    def __init__(self, params: NetconfParams, url: str | None = None) -> None:
        self.params = params
        self.url = url or self._url_of(params)
        self._session = _Session(params)
        # Markers get their own SSH session: a change poll must never make a fetch wait for
        # its RPC (nor the reverse) -- measured: a fetch queued behind marker RPCs on one
        # session added up to a marker's duration to every change-triggered sync.
        self._marker_session = _Session(params)
        # Why routes were left out / notes on the last fetch, e.g. {"discard": 3, "local": 12}.
        self.last_skipped: Counter[str] = Counter()
        self.last_notes: Counter[str] = Counter()

    @staticmethod
    def _url_of(p: NetconfParams) -> str:
        return f"netconf://{p.user}@{p.where}?flavor={p.flavor}"

    @classmethod
    def from_url(cls, url: str, credentials: Credentials | None = None) -> NetconfSource:
        """Build from ``netconf://USER@HOST[:PORT]?flavor=junos|ietf&...`` (SourceError if bad).

        ``credentials`` (the daemon's) replace the ``$XCAST6_NETCONF_PASSWORD`` fallback.
        """
        params = parse_url(url)
        if credentials is not None:
            params = dataclasses.replace(
                params, password=credentials.netconf_password, password_from_env=False
            )
        return cls(params, url)

    def __repr__(self) -> str:
        return f"NetconfSource({self.url!r})"

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """Read the whole IPv6 table and interface list, or raise SourceError."""
        return await asyncio.to_thread(self.fetch_sync, progress)

    async def change_marker(self) -> str | None:
        """Cheap change indicator (see :meth:`change_marker_sync`)."""
        return await asyncio.to_thread(self.change_marker_sync)

    async def aclose(self) -> None:
        """Close the kept-open SSH session."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close both SSH sessions (they re-open on the next call)."""
        self._session.close()
        self._marker_session.close()

    # -- blocking implementation (runs in a worker thread) --

    def _parse(self, what: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except (NetconfReplyError, netconf_junos.JunosParseError, netconf_ietf.IetfParseError) as exc:
            raise SourceError(f"netconf {self.params.where}: {exc}") from None
        except ValueError as exc:  # e.g. a Route/NextHop invariant broken by a strange row
            raise SourceError(f"netconf {self.params.where}: {what}: {exc}") from None

    def fetch_sync(self, progress: Progress | None = None) -> Snapshot:
        """Blocking :meth:`fetch`."""
        started = time.time()
        t0 = time.perf_counter()
        parsed: RouteParse
        interfaces: list[Interface]
        if self.params.flavor == "junos":
            raw = self._session.rpc(netconf_junos.route_rpc(self.params.table), "get-route-information")
            parsed = self._parse("get-route-information",
                                 lambda: netconf_junos.parse_routes(raw, self.params.table, progress))
            del raw
            raw_if = self._session.rpc(netconf_junos.interface_rpc(), "get-interface-information")
            interfaces = self._parse("get-interface-information",
                                     lambda: netconf_junos.parse_interfaces(raw_if))
        else:
            op = etree.Element("get")
            op.append(netconf_ietf.get_filter(self.params.tree, self.params.rib))
            raw = self._session.rpc(op, "get ietf-routing")
            parsed, interfaces = self._parse(
                "get ietf-routing",
                lambda: netconf_ietf.parse_reply(raw, self.params.rib, progress, self.params.tree))
            del raw
        if progress is not None:
            progress(len(interfaces), "interfaces")
        self.last_skipped = parsed.skipped
        self.last_notes = parsed.notes
        log.info("netconf %s: %d routes, %d interfaces in %.2f s; skipped %s; notes %s",
                 self.params.where, len(parsed.routes), len(interfaces), time.perf_counter() - t0,
                 dict(parsed.skipped) or "none", dict(parsed.notes) or "none")
        return Snapshot(routes=parsed.routes, interfaces=interfaces, source=self.url,
                        fetched_at=started, duration_s=time.perf_counter() - t0)

    def change_marker_sync(self) -> str | None:
        """Blocking :meth:`change_marker`.

        junos: the inet6.0 line of ``<get-route-summary-information>`` (destination/route/active
        counts per protocol) -- one small RPC; it misses a next-hop change that keeps all
        counts, which the periodic full fetch catches.  ietf: a digest of a slim ``<get>`` that
        asks only for each route's destination, next hop and ``last-updated`` (ietf-routing has
        no table version number; still O(table) but a fraction of a full fetch).  ``marker=off``
        in the URL returns None: the service then relies on periodic full fetches only.
        """
        if not self.params.marker:
            return None
        if self.params.flavor == "junos":
            raw = self._marker_session.rpc(netconf_junos.summary_rpc(), "get-route-summary-information")
            summary = self._parse("get-route-summary-information",
                                  lambda: netconf_junos.parse_summary(raw, self.params.table))
            return "junos-summary:" + hashlib.sha256(summary.encode()).hexdigest()[:32]
        op = etree.Element("get")
        op.append(netconf_ietf.marker_filter(self.params.tree, self.params.rib))
        raw = self._marker_session.rpc(op, "get ietf-routing (marker)")
        digest = self._parse("get ietf-routing (marker)", lambda: netconf_ietf.marker_digest(raw))
        return "ietf-routes:" + digest


__all__ = ["PASSWORD_ENV", "NetconfParams", "NetconfSource", "parse_url"]
