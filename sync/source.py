"""What every route source (SNMP, NETCONF/Junos, NETCONF/ietf-routing) provides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from engine.model import Snapshot

# progress(rows_so_far, phase) -- phase is a short word such as "routes" or "interfaces".
Progress = Callable[[int, str], None]


class SourceError(Exception):
    """A fetch failed; the message names what failed (host, OID/RPC, field). Never partial data.

    ``kind`` says which exit code an operator's command reports for it (engine/tools/clikit.py):
    ``unreachable`` (no answer, cannot connect), ``auth`` (credentials refused or missing) or
    ``failed`` (the router answered, but not with a usable table).
    """

    FAILED = "failed"
    UNREACHABLE = "unreachable"
    AUTH = "auth"

    def __init__(self, message: str, kind: str = FAILED) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Credentials:
    """The secrets a source may need, handed to its constructor (never through the environment).

    The daemon builds them from its configuration; the operator's command-line tools read the
    documented ``XCAST6_*`` variables once, at the edge (:meth:`from_env`).
    """

    snmp_community: str | None = field(default=None, repr=False)
    snmp_auth_key: str | None = field(default=None, repr=False)
    snmp_priv_key: str | None = field(default=None, repr=False)
    netconf_password: str | None = field(default=None, repr=False)

    ENV: ClassVar[dict[str, str]] = {
        "snmp_community": "XCAST6_SNMP_COMMUNITY",
        "snmp_auth_key": "XCAST6_SNMP_AUTH_KEY",
        "snmp_priv_key": "XCAST6_SNMP_PRIV_KEY",
        "netconf_password": "XCAST6_NETCONF_PASSWORD",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        """The ``XCAST6_*`` variables of ``env`` (empty ones count as unset)."""
        return cls(**{key: env.get(var) or None for key, var in cls.ENV.items()})


class RouteSource(Protocol):
    """A router the engine mirrors."""

    url: str

    async def fetch(self, progress: Progress | None = None) -> Snapshot:
        """Read the whole IPv6 table and interface list, or raise SourceError."""
        ...

    async def change_marker(self) -> str | None:
        """A cheap value that changes when the router's table changes (None if unsupported)."""
        ...
