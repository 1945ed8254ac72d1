"""The ``[sync]`` section: which router to mirror and how (owned by sync/).

One model (:class:`SyncConfig`) for the configuration file and the sync service, so a key has
one name and one default.  api/config.py gathers this section's problems with the others'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.settings import (
    Field,
    Invalid,
    Secret,
    Spec,
    check_table,
    hidden,
    integer,
    number,
    secret,
    share,
)
from sync.registry import SCHEMES, strip_secrets
from sync.source import Credentials

SOURCE_SCHEMES: tuple[str, ...] = tuple(SCHEMES)  # the one registry (sync.registry), kernel:// included


@dataclass(slots=True)
class SyncConfig:
    """The sync loop's settings (the ``[sync]`` section plus tunables the file does not expose)."""

    source: str = ""
    interval: float = 300.0          # seconds between full table walks
    change_detect: float = 1.0       # seconds between cheap change-marker polls (0 disables)
    safety_valve: float = 0.5        # hold back a sync that removes more than this share
    safety_valve_additions: float = 1.0   # ... or adds/changes more than this share (1.0 = doubles)
    kernel_table: int = 0            # Linux table holding the mirror (0 = no kernel mirror)
    kernel_proto: int = 245          # rtnetlink protocol marking the engine's kernel routes
    # One fetch: a full Internet table over NETCONF takes ~45 s (1.8 s per 10k routes measured),
    # so the default leaves room for it while a hung walk still cannot block syncs for long.
    timeout: float = 120.0
    snmp_community: Secret | None = None
    snmp_auth_key: Secret | None = None
    snmp_priv_key: Secret | None = None
    netconf_password: Secret | None = None
    # Saving 250k routes costs ~0.5 s of CPU; under constant churn save at most this often
    # (the newest table is saved when the interval is up, and on stop).  0 = every apply.
    store_min_interval_s: float = 10.0
    # How often to look at the engine links for the kernel mirror (a link that comes back
    # gets its routes again without waiting for a router change).  0 disables.
    link_watch_s: float = 5.0
    # On the periodic poll, re-read the kernel mirror and repair drift (someone deleted one
    # of our routes, or added one with our protocol): one table dump (~4 s at 250k).
    verify_kernel_on_poll: bool = True

    def __post_init__(self) -> None:
        # The file is checked by SYNC_KEYS with better words; this guards programmatic use.
        if not self.interval > 0:
            raise ValueError(f"sync.interval must be > 0, got {self.interval}")
        if not self.change_detect >= 0:
            raise ValueError(f"sync.change_detect must be >= 0 (0 disables), got {self.change_detect}")
        if not 0.0 < self.safety_valve <= 1.0:
            raise ValueError(f"sync.safety_valve must be in (0, 1], got {self.safety_valve}")
        if not self.safety_valve_additions > 0:
            raise ValueError(f"sync.safety_valve_additions must be > 0, got {self.safety_valve_additions}")
        if not self.timeout > 0:
            raise ValueError(f"sync.timeout must be > 0, got {self.timeout}")
        if not self.link_watch_s >= 0:
            raise ValueError(f"sync link_watch_s must be >= 0 (0 disables), got {self.link_watch_s}")
        if not self.store_min_interval_s >= 0:
            raise ValueError(f"sync store_min_interval_s must be >= 0, got {self.store_min_interval_s}")

    def credentials(self) -> Credentials:
        """The section's secrets, for the source's constructor."""

        def value(s: Secret | None) -> str | None:
            return None if s is None else s.reveal()

        return Credentials(value(self.snmp_community), value(self.snmp_auth_key), value(self.snmp_priv_key),
                           value(self.netconf_password))

    def source_redacted(self) -> str:
        """The source URL without its secrets (for logs and the API)."""
        return strip_secrets(self.source)

    def summary(self) -> dict[str, Any]:
        """A JSON-able view with every secret shown as ``***``."""

        def sec(s: Secret | None) -> str | None:
            return None if s is None else "***"

        return {
            "source": self.source_redacted(),
            "interval": self.interval,
            "change_detect": self.change_detect,
            "safety_valve": self.safety_valve,
            "safety_valve_additions": self.safety_valve_additions,
            "kernel_table": self.kernel_table,
            "kernel_proto": self.kernel_proto,
            "timeout": self.timeout,
            "snmp_community": sec(self.snmp_community),
            "snmp_auth_key": sec(self.snmp_auth_key),
            "snmp_priv_key": sec(self.snmp_priv_key),
            "netconf_password": sec(self.netconf_password),
        }


def _kernel_table(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32 or v in (253, 254, 255):
        raise Invalid(
            "must be a dedicated table id from 1 to 4294967295 other than 253/254/255 "
            "(local/main/default), or 0 for no kernel mirror"
        )
    return v


def _source(v: object) -> str:
    if not isinstance(v, str) or not v:
        raise Invalid(
            "must be a source URL such as 'snmp://public@[2001:db8::1]' or "
            "'netconf://user@router:830?flavor=junos'"
        )
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"is not a valid URL ({exc})") from None
    if parts.scheme not in SOURCE_SCHEMES:
        raise Invalid("scheme must be one of " + ", ".join(f"{s}://" for s in SOURCE_SCHEMES))
    if not parts.hostname:
        raise Invalid("has no host (expected e.g. 'snmp://public@[2001:db8::1]')")
    if port is not None and not 1 <= port <= 65535:
        raise Invalid("port must be from 1 to 65535")
    return v


def _source_shown(v: object) -> str:
    return repr(strip_secrets(v)) if isinstance(v, str) else repr(v)


SYNC_KEYS: Spec = {
    "source": Field(_source, "source", _source_shown),
    "interval": Field(number(positive=True), "interval"),
    "change_detect": Field(number(minimum=0, what="number of seconds (0 disables)"), "change_detect"),
    "safety_valve": Field(share, "safety_valve"),
    "safety_valve_additions": Field(
        number(positive=True, what="share of the table (1.0 = hold a sync that adds as many routes as "
               "the table has)"), "safety_valve_additions"
    ),
    "kernel_table": Field(_kernel_table, "kernel_table"),
    "kernel_proto": Field(
        integer(5, 255, "integer protocol number (1-4 are the kernel's own)"), "kernel_proto"
    ),
    "timeout": Field(number(positive=True), "timeout"),
    "snmp_community": Field(secret, "snmp_community", hidden),
    "snmp_auth_key": Field(secret, "snmp_auth_key", hidden),
    "snmp_priv_key": Field(secret, "snmp_priv_key", hidden),
    "netconf_password": Field(secret, "netconf_password", hidden),
}


def parse_sync(raw: Mapping[str, Any], env: Mapping[str, str], where: str = "sync"
               ) -> tuple[SyncConfig | None, list[str]]:
    """Validate a ``[sync]`` table plus its environment secrets: (config, []) or (None, problems)."""
    problems: list[str] = []
    values = check_table(raw, SYNC_KEYS, f"{where}.", problems)
    # the environment wins over the file (systemd EnvironmentFile= keeps secrets out of it)
    for key, var in Credentials.ENV.items():
        if env.get(var):
            values[key] = Secret(env[var])
    if "source" not in raw:
        problems.append(f"{where}.source: missing (the router to mirror, e.g. 'snmp://public@[2001:db8::1]')")
    if problems:
        return None, problems
    return SyncConfig(**values), []
