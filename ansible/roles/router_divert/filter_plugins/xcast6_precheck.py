"""Pre-push checks of router_divert: is the route-map/ACL sequence or rib-group the divert would use
already taken by the operator's own configuration?

Pure functions over the text a router prints (no device access here; the tasks in
tasks/precheck.yml fetch it).  Each ``*_conflicts`` function returns a list of messages, empty when
the push is safe; each message names what is taken and the role variable that moves the divert
elsewhere.  Unreadable output (a CLI error instead of configuration) raises ValueError, so a check
that could not run never passes silently.

Output formats (what the parsers accept):

* IOS-XE ``show running-config | section ^route-map``: a header line per entry,
  ``route-map NAME {permit|deny} SEQ``, followed by its one-space-indented ``match``/``set``/
  ``description`` lines.  Other sections ``| section`` may print (``interface ...`` with an
  ``ipv6 policy route-map`` line, ``!``) are skipped.  IPv6 addresses are printed in upper case.
  Source: Cisco IOS IP Routing: Protocol-Independent Command Reference, ``route-map``
  (https://www.cisco.com/c/en/us/td/docs/ios-xml/ios/iproute_pi/command/iri-cr-book/iri-cr-a1.html#wp3056280590)
  and IOS XE PBR for IPv6 (``set ipv6 next-hop``):
  https://www.cisco.com/c/en/us/td/docs/ios-xml/ios/iproute_pi/configuration/xe-16/iri-xe-16-book/iri-ipv6-pbr.html
* IOS-XR ``show running-config ipv6 access-list``: an optional timestamp line
  (``Thu Dec  3 15:00:00.123 UTC``), then per ACL ``ipv6 access-list NAME`` and its ACEs
  `` SEQ {permit|deny|remark} ...``, closed by ``!``; ABF entries carry
  ``nexthop1 [vrf V] ipv6 ADDR``.  With no ACL configured: ``% No such configuration item(s)``.
  Source: Cisco IOS XR IP Addresses and Services Command Reference, ``ipv6 access-list`` and
  ACL-based forwarding (``nexthop1``):
  https://www.cisco.com/c/en/us/td/docs/routers/asr9000/software/asr9k-r7-1/addr-serv/configuration/guide/b-ip-addresses-cg-asr9000-71x/b-ip-addresses-cg-asr9000-71x_chapter_0100.html
* Junos ``show configuration routing-options | display set``: one ``set routing-options ...``
  line per statement (``deactivate ...`` for an inactive one).  The interface routes' rib-group is
  ``set routing-options interface-routes rib-group inet6 NAME``.  Source:
  https://www.juniper.net/documentation/us/en/software/junos/cli-reference/topics/ref/statement/interface-routes-edit-routing-options.html
  and ``display set``:
  https://www.juniper.net/documentation/us/en/software/junos/cli/topics/topic-map/junos-config-files-display-set.html
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

_CLI_ERROR = re.compile(r"^\s*%\s*(Invalid input|Incomplete command|Ambiguous command|Unknown command)",
                        re.MULTILINE)
_JUNOS_ERROR = re.compile(r"^\s*(error:|syntax error|unknown command)", re.MULTILINE | re.IGNORECASE)
_TRACK_HEADER = re.compile(r"^track\s+(\d+)\b")
_RM_HEADER = re.compile(r"^route-map\s+(\S+)(?:\s+(permit|deny))?(?:\s+(\d+))?\s*$")
_XR_ACL = re.compile(r"^ipv6 access-list\s+(\S+)\s*$")
_XR_ACE = re.compile(r"^\s+(\d+)\s+(\S.*?)\s*$")
_XR_NO_CONFIG = re.compile(r"^\s*%\s*No such configuration item", re.MULTILINE)


@dataclass
class RouteMapEntry:
    """One ``route-map NAME ACTION SEQ`` entry and its body lines (stripped)."""

    name: str
    action: str
    seq: int
    body: list[str] = field(default_factory=list)


def _check_cli_output(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected the command's text output, got {type(text).__name__}")
    if _CLI_ERROR.search(text):
        line = next(ln for ln in text.splitlines() if _CLI_ERROR.match(ln))
        raise ValueError(f"{what}: the router refused the command ({line.strip()!r})")


def parse_iosxe_route_maps(text: str) -> dict[tuple[str, int], RouteMapEntry]:
    """Route-map entries of IOS-XE ``show running-config | section ^route-map`` by (name, seq).

    IOS-XE stores ``route-map X`` without action/sequence as ``permit 10``; the running
    configuration always prints both, but a bare header is read the same way.
    """
    _check_cli_output(text, "show running-config | section ^route-map")
    entries: dict[tuple[str, int], RouteMapEntry] = {}
    current: RouteMapEntry | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = None
            m = _RM_HEADER.match(line)
            if m:
                name, action, seq = m.group(1), m.group(2) or "permit", int(m.group(3) or 10)
                current = RouteMapEntry(name, action, seq)
                entries[(name, seq)] = current
            # anything else at column 0 (interface ..., !, a prompt echo) ends the entry
            continue
        if current is not None:
            current.body.append(line.strip())
    return entries


def parse_iosxr_acls(text: str) -> dict[str, dict[int, str]]:
    """IPv6 ACLs of IOS-XR ``show running-config ipv6 access-list``: name -> {seq: ACE text}."""
    _check_cli_output(text, "show running-config ipv6 access-list")
    acls: dict[str, dict[int, str]] = {}
    if _XR_NO_CONFIG.search(text):
        return acls
    current: dict[int, str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _XR_ACL.match(line)
        if m:
            current = acls.setdefault(m.group(1), {})
            continue
        if not line[0].isspace():
            current = None  # "!", the timestamp line, another section
            continue
        if current is not None:
            ace = _XR_ACE.match(line)
            if ace:
                current[int(ace.group(1))] = ace.group(2)
    return acls


def parse_junos_set(text: str) -> list[tuple[bool, list[str]]]:
    """``display set`` output as (active, words) per statement; ``deactivate`` marks inactive."""
    if not isinstance(text, str):
        raise ValueError(f"show configuration | display set: expected text, got {type(text).__name__}")
    if _JUNOS_ERROR.search(text):
        line = next(ln for ln in text.splitlines() if _JUNOS_ERROR.match(ln))
        raise ValueError(f"show configuration | display set: the router refused the command "
                         f"({line.strip()!r})")
    statements: list[tuple[bool, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("{"):
            continue  # comments, "{master}" / "{primary:node0}" banners
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"show configuration | display set: cannot read line {line!r}: {exc}") from None
        if words and words[0] in ("set", "deactivate"):
            statements.append((words[0] == "set", words[1:]))
    return statements


def _addr(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text.split("/")[0])
    except ValueError:
        return None


def _addrs(words: list[str]) -> set[ipaddress.IPv6Address]:
    return {a for a in (_addr(w) for w in words) if a is not None}


def _engines(engines: Any) -> set[ipaddress.IPv6Address]:
    out: set[ipaddress.IPv6Address] = set()
    for engine in engines or []:
        text = engine.get("address") if isinstance(engine, dict) else engine
        addr = _addr(str(text))
        if addr is None:
            raise ValueError(f"engine address {text!r} is not an IPv6 address")
        out.add(addr)
    return out


def _targets(targets: Any) -> list[tuple[str, int, str]]:
    out = []
    for t in targets or []:
        try:
            out.append((str(t["name"]), int(t["seq"]), str(t["var"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"target {t!r} needs name, seq (integer) and var: {exc}") from None
    return out


def _is_our_route_map_entry(entry: RouteMapEntry, our_acl: str, engines: set[ipaddress.IPv6Address]) -> bool:
    """Ours: it matches the divert's ACL, or its only next hops are our engines (a re-run)."""
    for line in entry.body:
        words = line.split()
        if words[:3] == ["match", "ipv6", "address"] and our_acl in words[3:]:
            return True
    hops: set[ipaddress.IPv6Address] = set()
    for line in entry.body:
        words = line.split()
        if words[:3] == ["set", "ipv6", "next-hop"] or words[:4] == ["set", "ipv6", "default", "next-hop"]:
            hops |= _addrs(words)
    return bool(hops) and hops <= engines


def iosxe_route_map_conflicts(text: str, targets: Any, our_acl: str, engines: Any) -> list[str]:
    """Which of ``targets`` ([{name, seq, var}]) is an IOS-XE route-map entry that is not the divert's.

    ``our_acl``: the divert's IPv6 ACL name (router_divert_filter_name); ``engines``: the engine
    addresses (strings or {address: ...}).  An entry matching our ACL or sending only to our engines
    was put there by this role (a re-run) and is no conflict.
    """
    entries = parse_iosxe_route_maps(text)
    ours = _engines(engines)
    out = []
    for name, seq, var in _targets(targets):
        entry = entries.get((name, seq))
        if entry is None or _is_our_route_map_entry(entry, our_acl, ours):
            continue
        what = "; ".join(entry.body) or "no match/set lines: it matches everything"
        out.append(f"route-map {name} {entry.action} {seq} already exists and is not the XCAST6 divert "
                   f"({what}): choose a free sequence with {var}")
    return out


def parse_iosxe_tracks(text: str) -> dict[int, str]:
    """Track objects of IOS-XE ``show running-config | include ^track``: number -> its header line.

    Only the header says what a track follows (``track 161 ipv6 route 2001:db8::2/128
    reachability``); the ``delay``/``description`` lines under it are not printed by ``include``.
    """
    _check_cli_output(text, "show running-config | include ^track")
    tracks: dict[int, str] = {}
    for raw in text.splitlines():
        m = _TRACK_HEADER.match(raw.rstrip())
        if m:
            tracks[int(m.group(1))] = " ".join(raw.split())
    return tracks


def iosxe_track_conflicts(text: str, base: Any, engines: Any) -> list[str]:
    """Which of the divert's track numbers (``base`` + 1, + 2, ... per engine) the operator uses.

    Ours (a re-run): exactly ``track <n> ipv6 route <engine n>/128 reachability`` for the engine the
    template gives that number, addresses compared as IPv6 (the router prints upper case).
    """
    try:
        first = int(base)
    except (TypeError, ValueError):
        raise ValueError(f"router_divert_iosxe_track_base {base!r} is not an integer") from None
    tracks = parse_iosxe_tracks(text)
    addresses = [_engines([e]).pop() for e in (engines or [])]
    out = []
    for i, engine in enumerate(addresses, start=1):
        line = tracks.get(first + i)
        if line is None:
            continue
        words = line.split()
        if (len(words) == 6 and words[2:4] == ["ipv6", "route"] and words[5] == "reachability"
                and words[4].endswith("/128") and _addr(words[4][:-4]) == engine):
            continue
        out.append(f"track {first + i} already exists and is not the XCAST6 divert's ({line}): "
                   f"choose free track numbers with router_divert_iosxe_track_base")
    return out


def iosxr_acl_conflicts(text: str, targets: Any, engines: Any) -> list[str]:
    """Which of ``targets`` ([{name, seq, var}]) is an IOS-XR IPv6 ACE that is not the divert's.

    Ours: an ACE whose ``nexthop1/2/3`` addresses are all engine addresses (a re-run).
    """
    acls = parse_iosxr_acls(text)
    ours = _engines(engines)
    out = []
    for name, seq, var in _targets(targets):
        ace = acls.get(name, {}).get(seq)
        if ace is None:
            continue
        words = ace.split()
        hops: set[ipaddress.IPv6Address] = set()
        for i, word in enumerate(words):
            if re.fullmatch(r"nexthop[123]", word):
                hops |= _addrs(words[i + 1:i + 5])
        if hops and hops <= ours:
            continue
        out.append(f"ipv6 access-list {name} sequence {seq} already exists and is not the XCAST6 divert "
                   f"({ace}): choose a free sequence with {var}")
    return out


def junos_rib_group_conflicts(text: str, our_group: str,
                              var: str = "router_divert_rib_group") -> list[str]:
    """A conflict if ``interface-routes rib-group inet6`` names a group other than ``our_group``.

    Junos takes one rib-group there: setting ours would silently replace the operator's (whose
    interface routes would then stop reaching the ribs it imports them into).
    """
    out = []
    for active, words in parse_junos_set(text):
        if words[:4] != ["routing-options", "interface-routes", "rib-group", "inet6"] or len(words) < 5:
            continue
        group = words[4]
        if group == our_group:
            continue
        state = "" if active else " (inactive)"
        out.append(f"routing-options interface-routes rib-group inet6 already names {group}{state}: Junos "
                   f"takes one group there and the divert would replace it with {our_group} ({var}), "
                   f"cutting {group}'s interface routes off; the role does not merge rib-groups: move "
                   f"what {group} imports elsewhere and delete that statement first")
    return out


class FilterModule:
    """Ansible entry point: the checks as filters (errors become AnsibleFilterError)."""

    def filters(self) -> dict[str, Any]:
        def wrap(fn: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except ValueError as exc:
                    from ansible.errors import AnsibleFilterError

                    raise AnsibleFilterError(str(exc)) from None
            return run

        return {
            "xcast6_iosxe_route_map_conflicts": wrap(iosxe_route_map_conflicts),
            "xcast6_iosxr_acl_conflicts": wrap(iosxr_acl_conflicts),
            "xcast6_iosxe_track_conflicts": wrap(iosxe_track_conflicts),
            "xcast6_junos_rib_group_conflicts": wrap(junos_rib_group_conflicts),
        }
