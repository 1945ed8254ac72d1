"""The engine's one configuration file (TOML): its sections gathered, every problem at once.

Each package owns and validates its own section (sync/config.py ``[sync]``, vlan/config.py
``[links]``, engine/dataplane/config.py ``[workers]``, with the rule vocabulary of
engine/settings.py); this module owns ``[engine]`` and ``[api]``, the environment secrets of the
API, and gathers all sections' problems into one :class:`ConfigError`, each naming the key, the
value and what is allowed (``sync.interval: -5 is not allowed: must be a positive number of
seconds``).  Unknown keys get a "did you mean".  Secrets are :class:`engine.settings.Secret`,
which never prints its value; source URLs are shown through ``sync.registry.strip_secrets``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.hastate import HaConfig, link_ends, parse_ha
from engine.dataplane.config import DataplaneConfig, WorkersConfig, parse_dataplane, parse_workers
from engine.settings import (
    Field,
    Secret,
    Spec,
    absolute_path,
    boolean,
    check_table,
    choice,
    hidden,
    integer,
    ip_address,
    number,
    secret,
    table_of,
    unknown_key,
)
from sync.config import SyncConfig, parse_sync
from vlan.config import LinksConfig, parse_links

DEFAULT_PORT = 8406
API_TOKEN_ENV = "XCAST6_API_TOKEN"


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


# A token is the only thing between the network and the API, which does not slow down wrong
# guesses: 32 characters of the URL-safe alphabet are >= 192 bits, far beyond an online guess (the
# generated ones have 43).  A shorter one is more likely a placeholder ("changeme", a test value).
TOKEN_MIN_LENGTH = 32


def token_problem(token: str) -> str | None:
    """Why ``token`` may not be used as the API token (None: it may); never repeats the value."""
    if not token:
        return "is empty"
    if len(token) < TOKEN_MIN_LENGTH:
        return (f"is {len(token)} characters long: must be at least {TOKEN_MIN_LENGTH} (the API does "
                "not slow down guesses; a short token is also most likely a placeholder)")
    return None


def read_or_create_token(path: Path, nbytes: int = 32) -> str:
    """The token kept in ``path``, or a new random one written there once (mode 0600, never replaced).

    Refuses (:class:`ConfigError` naming the file and the problem, never the value) a file that is
    a symbolic link or not a regular file, is not owned by this process's effective user, that the
    group or others may read or write (mode & 0o077), or whose token is empty or shorter than
    :data:`TOKEN_MIN_LENGTH`: each would otherwise leak the token or lock every client out with
    an unexplained 401.
    """
    try:
        token = read_private_file(path, "API token file").strip()
    except FileNotFoundError:
        return _create_token(path, nbytes)
    problem = token_problem(token)
    if problem is not None:
        hint = "; remove the file and the engine generates a new token" if not token else ""
        raise ConfigError([f"API token in this file {problem}{hint}"], str(path))
    return token


def read_private_file(path: Path, what: str, limit: int = 64 * 1024) -> str:
    """The UTF-8 text of a file that holds secrets, after checking that only this process's user
    can read it (see :func:`read_or_create_token`); :class:`ConfigError` names ``what``, the file
    and the problem, never the content.  ``FileNotFoundError`` is left to the caller."""
    try:
        # O_NOFOLLOW and fstat of the opened file: the checks are of the file actually read.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError([f"{what} is a symbolic link: not followed"], str(path)) from None
        raise ConfigError([f"cannot read the {what}: {exc.strerror or exc}"], str(path)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        problem = _token_file_problem(st)
        if problem is not None:
            raise ConfigError([f"{what} {problem}"], str(path))
        raw = f.read(limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{what} is not UTF-8 text"], str(path)) from None


def _token_file_problem(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return (f"is owned by uid {st.st_uid}, not by the engine's user (uid {os.geteuid()}): "
                "chown it to the engine's user")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (f"has mode {mode:04o}: the group or others may read or write it "
                "(the token grants the whole API): chmod 600")
    return None


def _create_token(path: Path, nbytes: int) -> str:
    token = secrets.token_urlsafe(nbytes)
    if token_problem(token) is not None:
        raise ValueError(f"nbytes={nbytes} gives a token shorter than {TOKEN_MIN_LENGTH} characters")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # created meanwhile (another process): use that one, checked
        return read_or_create_token(path, nbytes)
    except OSError as exc:
        raise ConfigError([f"cannot create the API token file: {exc.strerror or exc}"], str(path)) from None
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class EngineSection:
    state_dir: Path = Path("/var/lib/xcast6-engine")
    log_format: str = "text"
    log_level: str = "info"


@dataclass(frozen=True)
class ApiSection:
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: Secret | None = None
    enabled: bool = True
    diff_min_interval: float = 5.0   # /routes/diff: a verification this young is served again
    tokens_file: Path | None = None  # "<role> <name> <token>" lines (api/auth.py), re-read on SIGHUP
    tls_cert: Path | None = None     # PEM certificate (chain) of the API; with tls_key: HTTPS only
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must show a certificate this CA signed (mTLS)
    allow_plaintext: bool = False    # a non-loopback listen without TLS only when set on purpose

    @property
    def tls(self) -> bool:
        """The API speaks HTTPS (and only HTTPS)."""
        return self.tls_cert is not None


@dataclass(frozen=True)
class Config:
    engine: EngineSection = field(default_factory=EngineSection)
    sync: SyncConfig = field(default_factory=SyncConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    dataplane: DataplaneConfig = field(default_factory=DataplaneConfig)
    api: ApiSection = field(default_factory=ApiSection)
    ha: HaConfig = field(default_factory=HaConfig)
    path: str | None = None

    def api_url(self) -> str:
        host = self.api.listen
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.api.tls else "http"
        return f"{scheme}://{host}:{self.api.port}"

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
            "sync": self.sync.summary(),
            "links": self.links.summary(),
            "workers": self.workers.summary(),
            "dataplane": self.dataplane.summary(),
            "ha": self.ha.summary(),
            "api": {
                "listen": self.api.listen,
                "port": self.api.port,
                "token": sec(self.api.token),
                "enabled": self.api.enabled,
                "diff_min_interval": self.api.diff_min_interval,
                "tokens_file": _opt_str(self.api.tokens_file),
                "tls_cert": _opt_str(self.api.tls_cert),
                "tls_key": _opt_str(self.api.tls_key),
                "tls_client_ca": _opt_str(self.api.tls_client_ca),
                "allow_plaintext": self.api.allow_plaintext,
            },
        }


def _opt_str(p: Path | None) -> str | None:
    return None if p is None else str(p)


_OWN_KEYS: dict[str, Spec] = {
    "engine": {
        "state_dir": Field(absolute_path, "state_dir"),
        "log_format": Field(choice("text", "json"), "log_format"),
        "log_level": Field(choice("debug", "info", "warning", "error"), "log_level"),
    },
    "api": {
        "listen": Field(ip_address, "listen"),
        "port": Field(integer(1, 65535, "integer TCP port"), "port"),
        "token": Field(secret, "token", hidden),
        "enabled": Field(boolean, "enabled"),
        "diff_min_interval": Field(number(minimum=0, maximum=3600), "diff_min_interval"),
        "tokens_file": Field(absolute_path, "tokens_file"),
        "tls_cert": Field(absolute_path, "tls_cert"),
        "tls_key": Field(absolute_path, "tls_key"),
        "tls_client_ca": Field(absolute_path, "tls_client_ca"),
        "allow_plaintext": Field(boolean, "allow_plaintext"),
    },
}
SECTIONS = ("engine", "sync", "links", "workers", "dataplane", "api", "ha")


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, path: str | None = None
) -> Config:
    """Validate a decoded TOML document (plus env secrets) into a :class:`Config`.

    Raises :class:`ConfigError` listing every problem found, in every section.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    for section in data:
        if section not in SECTIONS:
            problems.append(unknown_key(section, "", list(SECTIONS)))
    engine = check_table(table_of(data, "engine", problems), _OWN_KEYS["engine"], "engine.", problems)
    sync, sync_problems = parse_sync(table_of(data, "sync", problems), env)
    links, link_problems = parse_links(table_of(data, "links", problems))
    workers, worker_problems = parse_workers(table_of(data, "workers", problems))
    dataplane, dataplane_problems = parse_dataplane(table_of(data, "dataplane", problems))
    api = check_table(table_of(data, "api", problems), _OWN_KEYS["api"], "api.", problems)
    if env.get(API_TOKEN_ENV):
        api["token"] = Secret(env[API_TOKEN_ENV])
        token_from = f"api.token (from ${API_TOKEN_ENV})"
    else:
        token_from = "api.token"
    if api.get("token") is not None:
        # Named by key and length only: a secret's value never appears in a problem line.
        problem = token_problem(api["token"].reveal())
        if problem is not None:
            problems.append(f"{token_from}: this value {problem}")
    problems += api_transport_problems(api)
    link_addrs = {} if links is None else link_ends(links.entries)
    ha, ha_problems = parse_ha(table_of(data, "ha", problems), link_addrs)
    problems += sync_problems + link_problems + worker_problems + dataplane_problems + ha_problems
    if (problems or sync is None or links is None or workers is None or dataplane is None
            or ha is None):
        raise ConfigError(problems, path)
    return Config(
        engine=EngineSection(**engine),
        sync=sync,
        links=links,
        workers=workers,
        dataplane=dataplane,
        api=ApiSection(**api),
        ha=ha,
        path=path,
    )


def api_transport_problems(api: Mapping[str, Any]) -> list[str]:
    """The rules between the ``[api]`` keys of TLS and the listen address (checked values only).

    A bearer token that can force a resync must not cross a network in clear text: a listen
    address beyond loopback needs TLS, unless ``allow_plaintext = true`` says it is on purpose
    (a management VRF, an IPsec tunnel; the daemon then warns at every start)."""
    problems = []
    cert, key, ca = api.get("tls_cert"), api.get("tls_key"), api.get("tls_client_ca")
    if (cert is None) != (key is None):
        have, need = ("tls_cert", "tls_key") if cert is not None else ("tls_key", "tls_cert")
        problems.append(f"api.{need}: missing: api.{have} is set, TLS needs both the certificate "
                        "and its private key")
    if ca is not None and cert is None:
        problems.append("api.tls_client_ca: client certificates are checked only over TLS: "
                        "set api.tls_cert and api.tls_key too")
    listen = api.get("listen", ApiSection.listen)
    if (api.get("enabled", True) and cert is None and key is None
            and not ipaddress.ip_address(listen).is_loopback and not api.get("allow_plaintext", False)):
        problems.append(
            f"api.listen: {listen!r} is beyond this host and the API has no TLS: bearer tokens would "
            "cross the network in clear text; set api.tls_cert and api.tls_key, or "
            "api.allow_plaintext = true if that path is protected otherwise")
    return problems


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
