"""Parse ``snmp://`` / ``snmpv3://`` source strings into an :class:`SnmpConfig` (pure, no I/O).

    snmp://COMMUNITY@HOST[:PORT]?timeout=2&retries=3&max_repetitions=50
    snmpv3://USER@HOST[:PORT]?auth_proto=sha256&priv_proto=aes128[&auth_key=..&priv_key=..]

IPv6 literal hosts go in brackets (``snmp://public@[2001:db8::1]:161``).  v3 keys come from
the query or from XCAST6_SNMP_AUTH_KEY / XCAST6_SNMP_PRIV_KEY; a v2c community may come from
XCAST6_SNMP_COMMUNITY.  Every bad field is named in one error; secrets never appear in
``repr()``, errors or :meth:`SnmpConfig.display_url`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from sync.source import Credentials

AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
# aes256 is the net-snmp/Blumenthal key extension; aes256c/aes192c the Cisco ("Reeder") one.
PRIV_PROTOCOLS = ("des", "aes128", "aes192", "aes256", "aes192c", "aes256c")
TABLES = ("auto", "inetcidr", "ipv6")
UNKNOWN_IFINDEX = ("error", "placeholder")
COLUMNS = ("index", "type", "full")
ENGINES = ("native", "pysnmp")
MARKERS = ("counts", "column")

_QUERY_KEYS = {
    "timeout", "retries", "max_repetitions", "auth_proto", "priv_proto", "auth_key", "priv_key",
    "table", "unknown_ifindex", "columns", "engine", "context", "marker",
}


class SnmpUrlError(ValueError):
    """A source string with one or more bad fields; ``problems`` lists them, one per field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("bad SNMP source: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class SnmpConfig:
    """Everything needed to talk to one SNMP agent."""

    host: str
    port: int = 161
    version: str = "2c"  # "2c" or "3"
    community: str = field(default="public", repr=False)
    user: str = ""
    auth_proto: str = "sha256"
    auth_key: str = field(default="", repr=False)
    priv_proto: str = "aes128"
    priv_key: str = field(default="", repr=False)
    context: str = ""
    timeout: float = 2.0
    retries: int = 3
    max_repetitions: int = 50
    table: str = "auto"
    unknown_ifindex: str = "error"
    columns: str = "index"
    engine: str = "native"
    marker: str = "counts"

    def display_url(self) -> str:
        """The source as a URL without any secret (for logs, snapshots, errors)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.version == "3":
            return f"snmpv3://{self.user}@{host}:{self.port}"
        return f"snmp://{host}:{self.port}"


def _one(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def parse_snmp_url(url: str, env: Mapping[str, str] | None = None,
                   credentials: Credentials | None = None) -> SnmpConfig:
    """Parse a source string; raises :class:`SnmpUrlError` naming every bad field.

    Secrets not in the URL come from ``credentials`` (the daemon's configuration) or, when none
    are given, from the ``XCAST6_SNMP_*`` variables of ``env`` (default: this process's).
    """
    if credentials is None:
        credentials = Credentials.from_env(os.environ if env is None else env)
    creds = credentials
    problems: list[str] = []
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError as exc:
        # urlsplit says "Port out of range" / "Invalid IPv6 URL": keep its words, not the URL.
        raise SnmpUrlError([f"host/port: {exc}"]) from None
    scheme = parts.scheme.lower()
    if scheme not in ("snmp", "snmpv2c", "snmpv3"):
        raise SnmpUrlError([f"scheme: expected snmp:// or snmpv3://, got {parts.scheme or '(none)'!r}"])
    version = "3" if scheme == "snmpv3" else "2c"
    query = parse_qs(parts.query, keep_blank_values=True)
    for key in sorted(set(query) - _QUERY_KEYS):
        problems.append(f"{key}: unknown parameter (known: {', '.join(sorted(_QUERY_KEYS))})")

    host = parts.hostname or ""
    if not host:
        problems.append("host: missing")
    elif "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            problems.append(f"host: {host!r} is not an IPv6 literal")
    port = 161 if port_value is None else port_value
    if port == 0:
        problems.append("port: must be 1..65535, got 0")

    userinfo = unquote(parts.username) if parts.username is not None else ""
    if parts.password is not None:
        problems.append("userinfo: put keys in auth_key/priv_key or the environment, not after ':'")

    community = ""
    user = ""
    auth_key = ""
    priv_key = ""
    auth_proto = (_one(query, "auth_proto") or "sha256").lower()
    priv_proto = (_one(query, "priv_proto") or "aes128").lower()
    if version == "2c":
        community = userinfo or creds.snmp_community or ""
        if not community:
            problems.append("community: missing (snmp://COMMUNITY@host or XCAST6_SNMP_COMMUNITY)")
        for key in ("auth_proto", "priv_proto", "auth_key", "priv_key"):
            if key in query:
                problems.append(f"{key}: only for snmpv3://")
    else:
        user = userinfo
        if not user:
            problems.append("user: missing (snmpv3://USER@host)")
        if auth_proto not in AUTH_PROTOCOLS:
            problems.append(f"auth_proto: {auth_proto!r} not one of {', '.join(AUTH_PROTOCOLS)}")
        if priv_proto not in PRIV_PROTOCOLS:
            problems.append(f"priv_proto: {priv_proto!r} not one of {', '.join(PRIV_PROTOCOLS)}")
        auth_key = _one(query, "auth_key") or creds.snmp_auth_key or ""
        priv_key = _one(query, "priv_key") or creds.snmp_priv_key or ""
        # RFC 3414 2.6: passphrases shorter than 8 characters are refused by agents.
        if len(auth_key) < 8:
            problems.append(
                "auth_key: missing or shorter than 8 characters (query auth_key= or XCAST6_SNMP_AUTH_KEY)"
            )
        if len(priv_key) < 8:
            problems.append(
                "priv_key: missing or shorter than 8 characters (query priv_key= or XCAST6_SNMP_PRIV_KEY)"
            )

    def number(key: str, default: float, kind: type, low: float, high: float) -> float:
        text = _one(query, key)
        if text is None:
            return default
        try:
            value = kind(text)
        except ValueError:
            problems.append(f"{key}: {text!r} is not {'an integer' if kind is int else 'a number'}")
            return default
        if not low <= value <= high:
            problems.append(f"{key}: {value} out of range {low}..{high}")
            return default
        return value

    timeout = float(number("timeout", 2.0, float, 0.05, 120.0))
    retries = int(number("retries", 3, int, 0, 20))
    max_repetitions = int(number("max_repetitions", 50, int, 1, 1000))

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        text = (_one(query, key) or allowed[0]).lower()
        if text not in allowed:
            problems.append(f"{key}: {text!r} not one of {', '.join(allowed)}")
            return allowed[0]
        return text

    table = choice("table", TABLES)
    unknown_ifindex = choice("unknown_ifindex", UNKNOWN_IFINDEX)
    columns = choice("columns", COLUMNS)
    engine = choice("engine", ENGINES)
    marker = choice("marker", MARKERS)
    if problems:
        raise SnmpUrlError(problems)
    return SnmpConfig(
        host=host,
        port=port,
        version=version,
        community=community,
        user=user,
        auth_proto=auth_proto,
        auth_key=auth_key,
        priv_proto=priv_proto,
        priv_key=priv_key,
        context=_one(query, "context") or "",
        timeout=timeout,
        retries=retries,
        max_repetitions=max_repetitions,
        table=table,
        unknown_ifindex=unknown_ifindex,
        columns=columns,
        engine=engine,
        marker=marker,
    )
