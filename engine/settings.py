"""The configuration rule vocabulary every package validates its own section with.

Each package owns its section of the one TOML file (sync/config.py ``[sync]``, vlan/config.py
``[links]``, engine/dataplane/config.py ``[workers]``, api/config.py ``[engine]``/``[api]``) and
checks it with these helpers; api/config.py gathers every problem of every section at once.
A problem names the key, the value and what is allowed
(``sync.interval: -5 is not allowed: must be a positive number of seconds``); unknown keys get a
"did you mean"; a secret's value is never repeated back.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Invalid(Exception):
    """Raised by a validator: the value is not allowed; the message says what is."""


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


@dataclass(frozen=True)
class Field:
    """One key of a section: its validator, the attribute it fills, and how a bad value is shown."""

    check: Callable[[object], Any]
    name: str
    shown: Callable[[object], str] | None = None  # None: show(value); secrets never show theirs


Spec = dict[str, Field]


def show(value: object) -> str:
    """A value as the operator wrote it in TOML."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unknown_key(key: str, where: str, known: list[str]) -> str:
    """The problem line for a key the section does not have, with the closest known one."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(known))})"
    return f"{where}{key}: unknown key{hint}"


def check_table(raw: Mapping[str, Any], spec: Spec, where: str, problems: list[str]) -> dict[str, Any]:
    """Validate each key of ``raw`` against ``spec``; bad keys and values become problem lines.

    Returns the converted values by attribute name (only the valid ones).
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        entry = spec.get(key)
        if entry is None:
            problems.append(unknown_key(key, where, list(spec)))
            continue
        try:
            out[entry.name] = entry.check(value)
        except Invalid as exc:
            shown = entry.shown(value) if entry.shown is not None else show(value)
            problems.append(f"{where}{key}: {shown} is not allowed: {exc}")
    return out


def table_of(data: Mapping[str, Any], section: str, problems: list[str]) -> dict[str, Any]:
    """The section's table from a decoded document ({} when absent; a problem when not a table)."""
    body = data.get(section, {})
    if not isinstance(body, dict):
        problems.append(f"{section}: {show(body)} is not allowed: must be a table [{section}]")
        return {}
    return body


# -- validators: each returns the converted value or raises Invalid(what is allowed) --


def number(positive: bool = False, minimum: float | None = None, maximum: float | None = None,
           what: str = "number of seconds") -> Callable[[object], float]:
    """A float (ints accepted), optionally positive or bounded."""

    def check(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Invalid(f"must be a {'positive ' if positive else ''}{what}")
        f = float(v)
        if positive and f <= 0:
            raise Invalid(f"must be a positive {what}")
        if minimum is not None and f < minimum:
            raise Invalid(f"must be a {what} >= {minimum:g}")
        if maximum is not None and f > maximum:
            raise Invalid(f"must be a {what} <= {maximum:g}")
        return f

    return check


def integer(lo: int, hi: int, what: str = "integer") -> Callable[[object], int]:
    """An integer from lo to hi (booleans are not integers here)."""

    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise Invalid(f"must be an {what} from {lo} to {hi}")
        return v

    return check


def share(v: object) -> float:
    """A share of the table, 0 < share <= 1."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise Invalid(
            "must be a share of the table, 0 < share <= 1 (0.5 = hold back syncs removing over half)"
        )
    return float(v)


def choice(*allowed: str) -> Callable[[object], str]:
    """One of the allowed words (case-insensitive; returned in lower case)."""

    def check(v: object) -> str:
        if not isinstance(v, str) or v.lower() not in allowed:
            raise Invalid("must be one of " + ", ".join(repr(a) for a in allowed))
        return v.lower()

    return check


def string(v: object) -> str:
    """A non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise Invalid("must be a non-empty string")
    return v


def secret(v: object) -> Secret:
    """A non-empty secret string (its value never appears in a problem line)."""
    if not isinstance(v, str) or not v:
        raise Invalid("must be a non-empty string")
    return Secret(v)


def hidden(_value: object) -> str:
    """How a secret's bad value is shown: not at all."""
    return "this value"


def boolean(v: object) -> bool:
    """true or false."""
    if not isinstance(v, bool):
        raise Invalid("must be true or false")
    return v


def absolute_path(v: object) -> Path:
    """An absolute filesystem path."""
    if not isinstance(v, str) or not v:
        raise Invalid("must be a non-empty path")
    p = Path(v)
    if not p.is_absolute():
        raise Invalid("must be an absolute path")
    return p


def ifname(v: object) -> str:
    """A Linux interface name."""
    if not isinstance(v, str) or not re.fullmatch(r"[^\s/:]{1,15}", v):
        raise Invalid("must be a Linux interface name (1-15 characters, no spaces, '/' or ':')")
    return v


def ifname_list(v: object) -> tuple[str, ...]:
    """A list of Linux interface names."""
    if not isinstance(v, list):
        raise Invalid("must be a list of interface names")
    out = []
    for item in v:
        try:
            out.append(ifname(item))
        except Invalid as exc:
            raise Invalid(f"entry {show(item)} {exc}") from None
    return tuple(out)


def name_list(v: object) -> tuple[str, ...]:
    """A list of interface names or glob patterns."""
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise Invalid("must be a list of interface names or glob patterns")
    return tuple(v)


def ip_address(v: object) -> str:
    """An IPv4 or IPv6 address literal (not a host name)."""
    if not isinstance(v, str):
        raise Invalid("must be an IP address string such as '127.0.0.1' or '::1'")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise Invalid("must be an IP address such as '127.0.0.1' or '::1' (not a host name)") from None
    return v


def prefix6(v: object) -> ipaddress.IPv6Network:
    """An IPv6 prefix without host bits."""
    if not isinstance(v, str):
        raise Invalid("must be an IPv6 prefix such as '2001:db8:ff::/48'")
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        raise Invalid(f"must be an IPv6 prefix such as '2001:db8:ff::/48' ({exc})") from None
    if not isinstance(net, ipaddress.IPv6Network):
        raise Invalid(f"must be an IPv6 prefix such as '2001:db8:ff::/48' ({net} is not an IPv6 subnet)")
    return net


def unicast6(v: object) -> ipaddress.IPv6Address:
    """A unicast IPv6 address (not multicast, unspecified or loopback)."""
    if not isinstance(v, str):
        raise Invalid("must be an IPv6 address such as '2001:db8:ff:101::1'")
    try:
        addr = ipaddress.IPv6Address(v)
    except ValueError:
        raise Invalid("must be an IPv6 address such as '2001:db8:ff:101::1'") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise Invalid("must be a unicast IPv6 address")
    return addr
