"""Open a route source from its URL, and show URLs without their secrets.

The one registry of source schemes (the daemon, the CLI and the configuration check use it):
``snmp://`` and ``snmpv3://`` go to :class:`sync.snmp.SnmpSource`, ``netconf://`` to
:class:`sync.netconf.NetconfSource`, ``kernel://`` (a Linux router's kernel table) to
:class:`sync.kernelsource.KernelSource`; each parses and validates its own URL fields.
"""

from __future__ import annotations

import importlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sync.source import Credentials, RouteSource, SourceError

# scheme -> (module, class)
SCHEMES: dict[str, tuple[str, str]] = {
    "snmp": ("sync.snmp", "SnmpSource"),
    "snmpv3": ("sync.snmp", "SnmpSource"),
    "netconf": ("sync.netconf", "NetconfSource"),
    "kernel": ("sync.kernelsource", "KernelSource"),
}

# A query parameter whose name contains one of these words holds a secret (authkey, priv_key,
# password, passphrase, token, ...): better one hidden too many than one shown.
_SECRET_PARAM = re.compile(r"key|pass|secret|token|community", re.IGNORECASE)


class SourceUrlError(ValueError):
    """The source string cannot be used; the message names the bad part."""


def scheme_of(url: str) -> str:
    """Lower-case scheme of a source URL, with a clear error when there is none."""
    if "://" not in url:
        raise SourceUrlError(f"source {strip_secrets(url)!r} has no scheme; expected one of "
                             f"{', '.join(s + '://' for s in SCHEMES)}")
    return url.split("://", 1)[0].lower()


def open_source(url: str, credentials: Credentials | None = None) -> RouteSource:
    """Build the RouteSource for ``url`` (raises SourceUrlError for a bad URL or unknown scheme).

    ``credentials``: the secrets the URL does not carry; without them the source reads the
    operator's ``XCAST6_*`` environment variables (command-line use).
    """
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise SourceUrlError(f"unknown source scheme {scheme!r} in {strip_secrets(url)!r}; expected one of "
                             f"{', '.join(s + '://' for s in SCHEMES)}")
    module_name, class_name = SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"{scheme}:// sources are not available in this build ({exc})") from exc
    cls = getattr(module, class_name)
    source: RouteSource = cls.from_url(url, credentials=credentials)
    return source


def strip_secrets(url: str) -> str:
    """The URL with community strings, passwords and key parameters replaced by ``***``.

    The one redaction rule for source URLs: logs, the API, ``config check`` and errors use it.

    SNMPv1/v2c put the community in the user part (``snmp://public@host``): that *is* the
    secret, so the whole user part is hidden; for user@host schemes only a password is.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable source URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        if parts.scheme.lower() == "snmp":
            userinfo = "***"
        elif ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*:/[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
