"""Who may call what on the API: bearer tokens with a role, the one place that decides.

Two roles.  ``read`` may call every protected endpoint with GET or HEAD (status, routes, diff,
stats, ``/metrics``, ``/openapi.json``): the credential a Prometheus scrape or a dashboard holds.
``admin`` may also call everything else (``POST /resync`` and whatever changes the engine's state
later).  The rule is by method, not by a list of endpoints, so an endpoint added with POST, PUT,
PATCH or DELETE needs ``admin`` without anyone remembering to say so.

Tokens come from ``api.token`` / ``XCAST6_API_TOKEN`` or the token generated in the state
directory (``admin``), and from ``api.tokens_file``: one ``<role> <name> <token>`` per line, so
each role can hold several tokens and one is rotated by adding its successor, moving the clients,
then removing it, with a SIGHUP after each edit (the daemon swaps the :class:`Keyring` whole).
A token's ``name`` is what logs and refusals show; its value never appears anywhere.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from api.config import ConfigError, read_private_file, token_problem
from engine.settings import Secret


class Role(enum.Enum):
    READ = "read"
    ADMIN = "admin"


# Methods that only read (RFC 9110 safe methods the API serves); anything else needs admin.
READ_METHODS = frozenset({"GET", "HEAD"})
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def required_role(method: str) -> Role:
    """The role a request with ``method`` needs on a protected path."""
    return Role.READ if method.upper() in READ_METHODS else Role.ADMIN


def allows(role: Role, method: str) -> bool:
    """Whether a token of ``role`` may make a ``method`` request."""
    return role is Role.ADMIN or required_role(method) is Role.READ


@dataclass(frozen=True)
class ApiToken:
    """One accepted token: who holds it (``name``, shown in logs), its role, its value (hidden)."""

    name: str
    role: Role
    secret: Secret


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the fields of its problem document."""

    status: int
    title: str
    detail: str
    field: str | None = None
    headers: dict[str, str] | None = None


class Keyring:
    """The tokens the API accepts now.  ``replace`` swaps the whole set in one assignment, so a
    request is checked against the old set or the new one, never a mix."""

    def __init__(self, tokens: Iterable[ApiToken] = ()) -> None:
        self._tokens: tuple[tuple[ApiToken, bytes], ...] = ()
        self.replace(tokens)

    @classmethod
    def admin(cls, token: str | None, name: str = "api.token") -> Keyring:
        """A keyring of one admin token (none when ``token`` is None)."""
        return cls([] if token is None else [ApiToken(name, Role.ADMIN, Secret(token))])

    def replace(self, tokens: Iterable[ApiToken]) -> None:
        """Accept exactly ``tokens`` from now on."""
        self._tokens = tuple((t, t.secret.reveal().encode()) for t in tokens)

    def tokens(self) -> tuple[ApiToken, ...]:
        return tuple(t for t, _ in self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def match(self, credentials: bytes) -> ApiToken | None:
        """The token ``credentials`` are, or None.  Every token is compared, each in constant
        time: neither how much of a guess was right nor which entry it was near shows in time."""
        found = None
        for token, value in self._tokens:
            if hmac.compare_digest(credentials, value) and found is None:
                found = token
        return found

    def describe(self) -> str:
        """The tokens by role and name, for the log: ``admin: api.token, ops; read: prometheus``."""
        parts = []
        for role in Role:
            names = [t.name for t, _ in self._tokens if t.role is role]
            parts.append(f"{role.value}: {', '.join(names) if names else '-'}")
        return "; ".join(parts)


def bearer_credentials(authorization: bytes | str | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header value, else None
    (the rule of FastAPI's HTTPBearer: scheme case-insensitive, credentials not empty)."""
    if authorization is None:
        return None
    raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    scheme, _, creds = raw.strip().partition(b" ")
    creds = creds.strip()
    if scheme.lower() != b"bearer" or not creds:
        return None
    return creds


def authenticate(authorization: bytes | str | None, keyring: Keyring) -> ApiToken | Refusal:
    """The token an ``Authorization`` header value carries, else the 401 to answer."""
    if not len(keyring):
        return Refusal(
            401,
            "Unauthorized",
            "the engine has no API token configured (api.token, XCAST6_API_TOKEN or "
            "api.tokens_file); protected endpoints are disabled",
            headers={"WWW-Authenticate": "Bearer"},
        )
    creds = bearer_credentials(authorization)
    if creds is None:
        return Refusal(
            401,
            "Unauthorized",
            "missing 'Authorization: Bearer <token>' header",
            field="header.Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = keyring.match(creds)
    if token is None:
        return Refusal(
            401,
            "Unauthorized",
            "wrong bearer token",
            field="header.Authorization",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return token


def authorize(authorization: bytes | str | None, method: str, path: str, keyring: Keyring
              ) -> ApiToken | Refusal:
    """The token of a request allowed to make ``method`` on protected ``path``, else the refusal
    (401 no or wrong token, 403 a read token on a method that changes state)."""
    token = authenticate(authorization, keyring)
    if isinstance(token, Refusal) or allows(token.role, method):
        return token
    return Refusal(
        403,
        "Forbidden",
        f"the token {token.name!r} has the {token.role.value} role: {method} {path} changes the "
        "engine's state and needs an admin token",
        field="header.Authorization",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )


class RefusalLog:
    """Wrong tokens, summarised for the log: the first refusal of a quiet period is logged at once,
    later ones at most once per ``every`` seconds as a count with the addresses seen, so a scan
    of the API shows in the log without flooding it (and without the guessed values)."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: float | None = None
        self._count = 0
        self._peers: set[str] = set()

    def note(self, peer: str, now: float) -> str | None:
        """Count one refusal from ``peer``; the line to log now, if any."""
        self._count += 1
        if len(self._peers) < 8:
            self._peers.add(peer)
        if self._last is not None and now - self._last < self.every:
            return None
        line = (f"refused {self._count} request(s) with a wrong bearer token (401) from "
                f"{', '.join(sorted(self._peers))}")
        if self._last is not None:
            line += f" in the last {now - self._last:.0f} s"
        self._last, self._count, self._peers = now, 0, set()
        return line


# -- the tokens file ------------------------------------------------------------------------------


def parse_tokens(text: str, path: str) -> list[ApiToken]:
    """The tokens of a tokens file's ``text``: ``<role> <name> <token>`` per line, ``#`` comments
    and blank lines skipped.  Raises :class:`ConfigError` listing every bad line by number (a
    token's value is never repeated)."""
    problems: list[str] = []
    tokens: list[ApiToken] = []
    names: set[str] = set()
    values: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"line {number}"
        if len(fields) != 3:
            problems.append(f"{where}: has {len(fields)} fields: expected '<role> <name> <token>' "
                            "(role read or admin)")
            continue
        role_s, name, value = fields
        try:
            role = Role(role_s.lower())
        except ValueError:
            problems.append(f"{where}: role {role_s!r} is not allowed: must be read or admin")
            continue
        if not NAME.fullmatch(name):
            problems.append(f"{where}: name {name!r} is not allowed: must be 1-64 letters, digits, "
                            "'.', '_', '@' or '-' (it is what the logs show instead of the token)")
            continue
        if name in names:
            problems.append(f"{where}: name {name!r} is used twice: each token needs its own name")
            continue
        problem = token_problem(value)
        if problem is not None:
            problems.append(f"{where} ({name}): the token {problem}")
            continue
        if value in values:
            problems.append(f"{where} ({name}): the same token is on an earlier line")
            continue
        names.add(name)
        values.add(value)
        tokens.append(ApiToken(name, role, Secret(value)))
    if problems:
        raise ConfigError(problems, path)
    return tokens


def read_tokens_file(path: Path) -> list[ApiToken]:
    """The tokens in ``path``, checked like the token file (owner, mode 0600, no symlink)."""
    try:
        text = read_private_file(path, "API tokens file")
    except FileNotFoundError:
        raise ConfigError(["API tokens file (api.tokens_file) does not exist"], str(path)) from None
    return parse_tokens(text, str(path))


def keyring_tokens(admin_token: str | None, admin_name: str, tokens_file: Path | None) -> list[ApiToken]:
    """Every token the API accepts: the admin token of ``api.token`` / the environment / the
    state directory (named ``admin_name``), then the tokens file's.  A value in both is refused:
    it would hold two roles."""
    tokens = [] if admin_token is None else [ApiToken(admin_name, Role.ADMIN, Secret(admin_token))]
    if tokens_file is not None:
        from_file = read_tokens_file(tokens_file)
        for t in from_file:
            if admin_token is not None and hmac.compare_digest(t.secret.reveal(), admin_token):
                raise ConfigError([f"token {t.name!r} is also the {admin_name} token: give each its own "
                                   "value"], str(tokens_file))
            if t.name == admin_name:
                raise ConfigError([f"name {t.name!r} is reserved for the {admin_name} token"],
                                  str(tokens_file))
        tokens += from_file
    return tokens
