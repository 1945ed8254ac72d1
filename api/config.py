"""The engine's one configuration file (TOML): schema, validation, env overrides, secrets.

Every problem found is reported at once, each naming the key, the value and what is
allowed (``sync.interval: -5 is not allowed: must be a positive number of seconds``).
Unknown keys are rejected with a "did you mean".  Secrets (SNMP keys, NETCONF password,
API token) may come from the environment and are wrapped in :class:`Secret`, which never
prints its value; :func:`redact_url` hides credentials inside source URLs.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sync.sources import SCHEMES as SOURCE_SCHEMES

DEFAULT_PORT = 8406
# Environment variables that override secrets (and the key each one sets).
ENV_SECRETS: dict[str, tuple[str, str]] = {
    "XCAST6_API_TOKEN": ("api", "token"),
    "XCAST6_SNMP_COMMUNITY": ("sync", "snmp_community"),
    "XCAST6_SNMP_AUTH_KEY": ("sync", "snmp_auth_key"),
    "XCAST6_SNMP_PRIV_KEY": ("sync", "snmp_priv_key"),
    "XCAST6_NETCONF_PASSWORD": ("sync", "netconf_password"),
}
_SECRET_QUERY = re.compile(r"(key|pass|secret|token|community)", re.IGNORECASE)


class ConfigError(ValueError):
    """The file is not a valid configuration; ``problems`` lists every finding, one line each."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(
            where
            + (
                "; ".join(problems)
                if len(problems) == 1
                else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
            )
        )


class Secret:
    """A secret string: ``str()``/``repr()`` show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_or_create_token(path: Path, nbytes: int = 32) -> str:
    """The token kept in ``path``, or a new random one written there once (mode 0600, never replaced)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def redact_url(url: str) -> str:
    """Hide credentials in a source URL: passwords, SNMP communities, key-like query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if parts.scheme == "snmp":  # v2c: the "user" is the community, a shared secret
            user = "***"
        elif ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if _SECRET_QUERY.search(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class EngineSection:
    state_dir: Path = Path("/var/lib/xcast6-engine")
    log_format: str = "text"
    log_level: str = "info"


@dataclass(frozen=True)
class SyncSection:
    source: str = ""
    interval: float = 300.0
    change_detect: float = 1.0
    safety_valve: float = 0.5
    kernel_table: int = 0
    kernel_proto: int = 245
    timeout: float = 30.0
    snmp_community: Secret | None = None
    snmp_auth_key: Secret | None = None
    snmp_priv_key: Secret | None = None
    netconf_password: Secret | None = None

    def source_redacted(self) -> str:
        return redact_url(self.source)


@dataclass(frozen=True)
class LinkMapping:
    """One operator mapping entry: router interface (name or glob) -> engine link settings.

    Same keys as vlan/'s plan input (``vlan.plan.InterfacesConfig``): ``link`` is the existing
    engine interface in direct mode; ``engine_addr`` requires ``subnet``."""

    router_if: str
    vlan: int | None = None
    subnet: str | None = None
    engine_addr: str | None = None
    router_addr: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class LinksSection:
    """The engine links; validated here and handed as ``raw`` to vlan/ (its plan input)."""

    mode: str = "vlan"
    trunk: str | None = None
    name_prefix: str = "xc-v"
    vlan_range: tuple[int, int] | None = None
    pool: str | None = None
    subnet_prefixlen: int = 64
    engine_host: int = 1
    router_host: int = 2
    exclude: tuple[str, ...] = ()
    map: tuple[LinkMapping, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class WorkersSection:
    count: int = 1
    ingress: tuple[str, ...] = ()
    restart_backoff: float = 1.0
    counters_file: Path = Path("/run/xcast6-engine/stats.shm")
    cpus: tuple[int, ...] = ()      # worker i runs on cpus[i % len(cpus)]; () = scheduler decides
    busy_poll_us: int = 0           # poll this long after traffic before sleeping (0 = always sleep)
    rx_buffer_kb: int = 4096        # each ingress socket's receive queue (SO_RCVBUF), KiB
    cpu_resume_latency_us: int | None = None   # idle-state limit of the workers' CPUs; None = untouched

    @property
    def idle_limit_us(self) -> int | None:
        """``cpu_resume_latency_us`` when it applies (pinned workers exist), else None."""
        return self.cpu_resume_latency_us if self.count and self.cpus else None


@dataclass(frozen=True)
class ApiSection:
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: Secret | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Config:
    engine: EngineSection = field(default_factory=EngineSection)
    sync: SyncSection = field(default_factory=SyncSection)
    links: LinksSection = field(default_factory=LinksSection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    api: ApiSection = field(default_factory=ApiSection)
    path: str | None = None

    def api_url(self) -> str:
        host = self.api.listen
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api.port}"

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for logs and ``config check`` with every secret shown as ``***``."""

        def sec(s: Secret | None) -> str | None:
            return None if s is None else "***"

        return {
            "engine": {
                "state_dir": str(self.engine.state_dir),
                "log_format": self.engine.log_format,
                "log_level": self.engine.log_level,
            },
            "sync": {
                "source": self.sync.source_redacted(),
                "interval": self.sync.interval,
                "change_detect": self.sync.change_detect,
                "safety_valve": self.sync.safety_valve,
                "kernel_table": self.sync.kernel_table,
                "kernel_proto": self.sync.kernel_proto,
                "timeout": self.sync.timeout,
                "snmp_community": sec(self.sync.snmp_community),
                "snmp_auth_key": sec(self.sync.snmp_auth_key),
                "snmp_priv_key": sec(self.sync.snmp_priv_key),
                "netconf_password": sec(self.sync.netconf_password),
            },
            "links": {
                "mode": self.links.mode,
                "trunk": self.links.trunk,
                "name_prefix": self.links.name_prefix,
                "vlan_range": None if self.links.vlan_range is None else list(self.links.vlan_range),
                "pool": self.links.pool,
                "subnet_prefixlen": self.links.subnet_prefixlen,
                "engine_host": self.links.engine_host,
                "router_host": self.links.router_host,
                "exclude": list(self.links.exclude),
                "map": [vars_of(m) for m in self.links.map],
            },
            "workers": {
                "count": self.workers.count,
                "ingress": list(self.workers.ingress),
                "restart_backoff": self.workers.restart_backoff,
                "counters_file": str(self.workers.counters_file),
                "cpus": list(self.workers.cpus),
                "busy_poll_us": self.workers.busy_poll_us,
                "rx_buffer_kb": self.workers.rx_buffer_kb,
                "cpu_resume_latency_us": self.workers.cpu_resume_latency_us,
            },
            "api": {
                "listen": self.api.listen,
                "port": self.api.port,
                "token": sec(self.api.token),
                "enabled": self.api.enabled,
            },
        }


def vars_of(m: LinkMapping) -> dict[str, Any]:
    return {k: getattr(m, k) for k in ("router_if", "vlan", "subnet", "engine_addr", "router_addr", "link")}


# ---------------------------------------------------------------------------------------------
# Validation helpers: each returns the converted value or raises _Bad(reason)


class _Bad(Exception):
    pass


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    what: str = "number of seconds",
) -> Callable[[object], float]:
    def check(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad(f"must be a {'positive ' if positive else ''}{what}")
        f = float(v)
        if positive and f <= 0:
            raise _Bad(f"must be a positive {what}")
        if minimum is not None and f < minimum:
            raise _Bad(f"must be a {what} >= {minimum:g}")
        if maximum is not None and f > maximum:
            raise _Bad(f"must be a {what} <= {maximum:g}")
        return f

    return check


def _integer(lo: int, hi: int, what: str = "integer") -> Callable[[object], int]:
    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(f"must be an {what} from {lo} to {hi}")
        return v

    return check


def _kernel_table(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32 or v in (253, 254, 255):
        raise _Bad(
            "must be a dedicated table id from 1 to 4294967295 other than 253/254/255 "
            "(local/main/default), or 0 for no kernel mirror"
        )
    return v


def _share(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise _Bad("must be a share of the table, 0 < share <= 1 (0.5 = hold back syncs removing over half)")
    return float(v)


def _choice(*allowed: str) -> Callable[[object], str]:
    def check(v: object) -> str:
        if not isinstance(v, str) or v.lower() not in allowed:
            raise _Bad("must be one of " + ", ".join(repr(a) for a in allowed))
        return v.lower()

    return check


def _string(nonempty: bool = True) -> Callable[[object], str]:
    def check(v: object) -> str:
        if not isinstance(v, str) or (nonempty and not v.strip()):
            raise _Bad("must be a non-empty string")
        return v

    return check


def _secret(v: object) -> Secret:
    if not isinstance(v, str) or not v:
        raise _Bad("must be a non-empty string")
    return Secret(v)


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise _Bad("must be true or false")
    return v


def _path(v: object) -> Path:
    if not isinstance(v, str) or not v:
        raise _Bad("must be a non-empty path")
    p = Path(v)
    if not p.is_absolute():
        raise _Bad("must be an absolute path")
    return p


def _ifname(v: object) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[^\s/:]{1,15}", v):
        raise _Bad("must be a Linux interface name (1-15 characters, no spaces, '/' or ':')")
    return v


def _ifname_list(v: object) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise _Bad("must be a list of interface names")
    out = []
    for item in v:
        try:
            out.append(_ifname(item))
        except _Bad as exc:
            raise _Bad(f"entry {_show(item)} {exc}") from None
    return tuple(out)


def _cpu_list(v: object) -> tuple[int, ...]:
    # Checked against the CPUs this process may run on: a pin to a missing or isolated-away CPU
    # would otherwise only fail when the worker starts.
    usable = sorted(os.sched_getaffinity(0))
    here = cpu_ranges(usable)
    if not isinstance(v, list) or not v:
        raise _Bad(f"must be a non-empty list of CPU numbers (this host: {here})")
    seen: set[int] = set()
    for item in v:
        if isinstance(item, bool) or not isinstance(item, int):
            raise _Bad(f"entry {_show(item)} is not a CPU number (this host: {here})")
        if item not in usable:
            raise _Bad(f"CPU {item} is not available to the engine (this host: {here})")
        if item in seen:
            raise _Bad(f"CPU {item} is listed twice")
        seen.add(item)
    return tuple(v)


def cpu_ranges(cpus: list[int]) -> str:
    """0,1,2,5 -> '0-2,5' (how taskset and /proc/cpuinfo users read CPU sets)."""
    runs: list[list[int]] = []
    for c in cpus:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _listen(v: object) -> str:
    if not isinstance(v, str):
        raise _Bad("must be an IP address string such as '127.0.0.1' or '::1'")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise _Bad("must be an IP address such as '127.0.0.1' or '::1' (not a host name)") from None
    return v


def _source(v: object) -> str:
    if not isinstance(v, str) or not v:
        raise _Bad(
            "must be a source URL such as 'snmp://public@[2001:db8::1]' or "
            "'netconf://user@router:830?flavor=junos'"
        )
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        raise _Bad(f"is not a valid URL ({exc})") from None
    if parts.scheme not in SOURCE_SCHEMES:
        raise _Bad("scheme must be one of " + ", ".join(f"{s}://" for s in SOURCE_SCHEMES))
    if not parts.hostname:
        raise _Bad("has no host (expected e.g. 'snmp://public@[2001:db8::1]')")
    if port is not None and not 1 <= port <= 65535:
        raise _Bad("port must be from 1 to 65535")
    return v


def _prefix6(v: object) -> str:
    if not isinstance(v, str):
        raise _Bad("must be an IPv6 prefix such as '2001:db8:ff::/48'")
    try:
        ipaddress.IPv6Network(v, strict=True)
    except ValueError as exc:
        raise _Bad(f"must be an IPv6 prefix such as '2001:db8:ff::/48' ({exc})") from None
    return v


def _addr6(v: object) -> str:
    if not isinstance(v, str):
        raise _Bad("must be an IPv6 address such as '2001:db8:ff:101::1'")
    try:
        ipaddress.IPv6Address(v)
    except ValueError:
        raise _Bad("must be an IPv6 address such as '2001:db8:ff:101::1'") from None
    return v


def _name_prefix(v: object) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[^\s/:]{1,11}", v):
        raise _Bad("must be 1-11 characters of an interface name (the VLAN id is appended)")
    return v


def _str_list(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _Bad("must be a list of interface names or glob patterns")
    return tuple(v)


def _vlan_range(v: object) -> tuple[int, int]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise _Bad("must be a list of two VLAN ids [first, last]")
    lo, hi = v
    if not (1 <= lo <= hi <= 4094):
        raise _Bad("must satisfy 1 <= first <= last <= 4094")
    return (lo, hi)


_Spec = dict[str, tuple[Callable[[object], Any], str]]  # key -> (validator, field name)

_SECTIONS: dict[str, _Spec] = {
    "engine": {
        "state_dir": (_path, "state_dir"),
        "log_format": (_choice("text", "json"), "log_format"),
        "log_level": (_choice("debug", "info", "warning", "error"), "log_level"),
    },
    "sync": {
        "source": (_source, "source"),
        "interval": (_number(positive=True), "interval"),
        "change_detect": (_number(minimum=0, what="number of seconds (0 disables)"), "change_detect"),
        "safety_valve": (_share, "safety_valve"),
        "kernel_table": (_kernel_table, "kernel_table"),
        "kernel_proto": (
            _integer(5, 255, "integer protocol number (1-4 are the kernel's own)"),
            "kernel_proto",
        ),
        "timeout": (_number(positive=True), "timeout"),
        "snmp_community": (_secret, "snmp_community"),
        "snmp_auth_key": (_secret, "snmp_auth_key"),
        "snmp_priv_key": (_secret, "snmp_priv_key"),
        "netconf_password": (_secret, "netconf_password"),
    },
    "links": {
        "mode": (_choice("vlan", "direct"), "mode"),
        "trunk": (_ifname, "trunk"),
        "name_prefix": (_name_prefix, "name_prefix"),
        "vlan_range": (_vlan_range, "vlan_range"),
        "pool": (_prefix6, "pool"),
        "subnet_prefixlen": (_integer(1, 127, "integer prefix length"), "subnet_prefixlen"),
        "engine_host": (_integer(1, 2**64, "integer host number inside a subnet"), "engine_host"),
        "router_host": (_integer(1, 2**64, "integer host number inside a subnet"), "router_host"),
        "exclude": (_str_list, "exclude"),
    },
    "workers": {
        "count": (_integer(0, 64, "integer (0 = no packet workers)"), "count"),
        "ingress": (_ifname_list, "ingress"),
        "restart_backoff": (_number(positive=True), "restart_backoff"),
        "counters_file": (_path, "counters_file"),
        "cpus": (_cpu_list, "cpus"),
        "busy_poll_us": (_integer(0, 1_000_000, "integer number of microseconds (0 = off)"), "busy_poll_us"),
        "rx_buffer_kb": (_integer(64, 1_048_576, "integer number of KiB"), "rx_buffer_kb"),
        "cpu_resume_latency_us": (
            _integer(0, 10_000_000, "integer number of microseconds (0 = the idle loop polls)"),
            "cpu_resume_latency_us",
        ),
    },
    "api": {
        "listen": (_listen, "listen"),
        "port": (_integer(1, 65535, "integer TCP port"), "port"),
        "token": (_secret, "token"),
        "enabled": (_bool, "enabled"),
    },
}
_MAP_KEYS: _Spec = {
    "router_if": (_string(), "router_if"),
    "vlan": (_integer(1, 4094, "integer VLAN id"), "vlan"),
    "subnet": (_prefix6, "subnet"),
    "engine_addr": (_addr6, "engine_addr"),
    "router_addr": (_addr6, "router_addr"),
    "link": (_ifname, "link"),
}


def _unknown(key: str, where: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(known))})"
    return f"{where}{key}: unknown key{hint}"


def _check_table(raw: Mapping[str, Any], spec: _Spec, where: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in spec:
            problems.append(_unknown(key, where, list(spec)))
            continue
        check, name = spec[key]
        try:
            out[name] = check(value)
        except _Bad as exc:
            # never echo a secret: URLs lose their credentials, secret values are not shown at all
            if check is _secret:
                shown = "this value"
            elif check is _source and isinstance(value, str):
                shown = repr(redact_url(value))
            else:
                shown = _show(value)
            problems.append(f"{where}{key}: {shown} is not allowed: {exc}")
    return out


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, path: str | None = None
) -> Config:
    """Validate a decoded TOML document (plus env secrets) into a :class:`Config`.

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    map_entries: list[LinkMapping] = []
    map_index: list[int] = []  # position in the file of each valid entry (errors name it)
    for section, body in data.items():
        if section not in _SECTIONS:
            problems.append(_unknown(section, "", list(_SECTIONS)))
            continue
        if not isinstance(body, dict):
            problems.append(f"{section}: {_show(body)} is not allowed: must be a table [{section}]")
            continue
        body = dict(body)
        if section == "links" and "map" in body:
            entries = body.pop("map")
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                problems.append("links.map: must be an array of tables [[links.map]]")
            else:
                for i, entry in enumerate(entries):
                    where = f"links.map[{i}]."
                    got = _check_table(entry, _MAP_KEYS, where, problems)
                    if "router_if" not in got:
                        if "router_if" not in entry:
                            problems.append(f"{where}router_if: missing (the router interface name or glob)")
                        continue
                    map_entries.append(LinkMapping(**got))
                    map_index.append(i)
        values[section] = _check_table(body, _SECTIONS[section], f"{section}.", problems)

    for var, (section, key) in ENV_SECRETS.items():
        if env.get(var):
            values.setdefault(section, {})[key] = Secret(env[var])

    sync = values.get("sync", {})
    raw_sync = data.get("sync")
    if "source" not in sync and not (isinstance(raw_sync, dict) and "source" in raw_sync):
        problems.append("sync.source: missing (the router to mirror, e.g. 'snmp://public@[2001:db8::1]')")
    links = values.get("links", {})
    problems += _link_rules(links, list(zip(map_index, map_entries, strict=True)))
    workers = values.get("workers", {})
    raw_workers = data.get("workers")
    cpus_given = isinstance(raw_workers, dict) and "cpus" in raw_workers and "cpus" not in workers
    if "cpu_resume_latency_us" in workers and not workers.get("cpus") and not cpus_given:
        problems.append("workers.cpu_resume_latency_us: needs workers.cpus (the limit applies to the CPUs "
                        "the workers are pinned to)")
    if problems:
        raise ConfigError(problems, path)

    return Config(
        engine=EngineSection(**values.get("engine", {})),
        sync=SyncSection(**sync),
        links=LinksSection(**links, map=tuple(map_entries), raw=dict(data.get("links", {}))),
        workers=WorkersSection(**workers),
        api=ApiSection(**values.get("api", {})),
        path=path,
    )


def _link_rules(links: dict[str, Any], entries: list[tuple[int, LinkMapping]]) -> list[str]:
    """Rules across keys, as vlan/ applies them (same wording of the field at fault)."""
    out = []
    mode = links.get("mode", "vlan")
    if mode == "vlan" and "trunk" not in links:
        out.append("links.trunk: missing (mode 'vlan' needs the 802.1Q trunk towards the router)")
    if mode == "vlan" and not entries and "vlan_range" not in links:
        out.append("links.map: missing (give [[links.map]] entries or a links.vlan_range to allocate from)")
    if mode == "direct" and not entries:
        out.append("links.map: missing (mode 'direct' needs one [[links.map]] entry per router interface)")
    if links.get("engine_host", 1) == links.get("router_host", 2):
        out.append("links.router_host: must differ from links.engine_host")
    seen_vlan: dict[int, int] = {}
    seen_link: dict[str, int] = {}
    for i, m in entries:
        where = f"links.map[{i}]"
        if mode == "direct":
            if m.link is None:
                out.append(f"{where}.link: missing (mode 'direct' needs the existing engine interface)")
            if m.vlan is not None:
                out.append(f"{where}.vlan: only meaningful in mode 'vlan'")
        elif m.link is not None:
            out.append(f"{where}.link: only meaningful in mode 'direct'")
        if m.engine_addr is not None and m.subnet is None:
            out.append(f"{where}.subnet: missing (required when engine_addr is given)")
        if m.subnet is not None:
            net = ipaddress.IPv6Network(m.subnet)
            for name in ("engine_addr", "router_addr"):
                addr = getattr(m, name)
                if addr is not None and ipaddress.IPv6Address(addr) not in net:
                    out.append(f"{where}.{name}: {addr!r} is not inside subnet {m.subnet}")
        if m.engine_addr is not None and m.engine_addr == m.router_addr:
            out.append(f"{where}.router_addr: {m.router_addr!r} is the same as engine_addr")
        if m.vlan is not None:
            if m.vlan in seen_vlan:
                out.append(f"{where}.vlan: VLAN {m.vlan} already used by links.map[{seen_vlan[m.vlan]}]")
            seen_vlan.setdefault(m.vlan, i)
        if m.link is not None:
            if m.link in seen_link:
                out.append(f"{where}.link: {m.link} already used by links.map[{seen_link[m.link]}]")
            seen_link.setdefault(m.link, i)
    return out


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file (raises ConfigError with a precise message)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(p)) from None
    return parse_config(data, env, str(p))


def example_path() -> Path:
    """The example configuration shipped with the package (templated by the Ansible role)."""
    return Path(__file__).with_name("engine.example.toml")
