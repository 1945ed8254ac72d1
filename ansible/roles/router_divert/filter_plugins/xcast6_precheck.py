"""Pre-push checks of router_divert: is the route-map/ACL sequence or rib-group the divert would use
already taken by the operator's own configuration?  And, for ``xcast6_divert_state: absent`` on
IOS-XE/IOS-XR, which of the divert's statements the running configuration still has
(``cisco_removal``, tasks/removal_plan.yml).

Pure functions over the text a router prints (no device access here; the tasks in
tasks/precheck.yml and tasks/removal_plan.yml fetch it with the same read, precheck_read_*.yml).
Each ``*_conflicts`` function returns a list of messages, empty when
the push is safe; each message names what is taken and the role variable that moves the divert
elsewhere.  Unreadable output (a CLI error instead of configuration) raises ValueError, so a check
that could not run never passes silently.

Output formats (what the parsers accept):

* IOS-XE ``show running-config`` (what the role reads; ``| section ^route-map`` output parses
  the same): per route-map entry a header line ``route-map NAME {permit|deny} SEQ``, followed by
  its one-space-indented ``match``/``set``/``description`` lines.  Other sections (``interface ...``
  with an ``ipv6 policy route-map`` line, ``!``) are skipped.  IPv6 addresses are printed in upper
  case.  Track objects: ``track N ...`` at column 0, their ``delay`` lines indented.  SNMPv3 users
  are never shown (``show snmp user`` lists them); a view's subtree may be shown by its MIB name;
  ``username U privilege 15 secret 9 <hash>``.
  Source: Cisco IOS IP Routing: Protocol-Independent Command Reference, ``route-map``
  (https://www.cisco.com/c/en/us/td/docs/ios-xml/ios/iproute_pi/command/iri-cr-book/iri-cr-a1.html#wp3056280590)
  and IOS XE PBR for IPv6 (``set ipv6 next-hop``):
  https://www.cisco.com/c/en/us/td/docs/ios-xml/ios/iproute_pi/configuration/xe-16/iri-xe-16-book/iri-ipv6-pbr.html
* IOS-XR ``show running-config`` (or its ``ipv6 access-list`` part): an optional timestamp line
  (``Thu Dec  3 15:00:00.123 UTC``), then per ACL ``ipv6 access-list NAME`` and its ACEs
  `` SEQ {permit|deny|remark} ...``, closed by ``!``; ABF entries carry
  ``nexthop1 [vrf V] ipv6 ADDR``.  With no ACL configured: ``% No such configuration item(s)``.
  Source: Cisco IOS XR IP Addresses and Services Command Reference, ``ipv6 access-list`` and
  ACL-based forwarding (``nexthop1``):
  https://www.cisco.com/c/en/us/td/docs/routers/asr9000/software/asr9k-r7-1/addr-serv/configuration/guide/b-ip-addresses-cg-asr9000-71x/b-ip-addresses-cg-asr9000-71x_chapter_0100.html
  Users: ``username U`` with `` group G`` and `` secret 10 <hash>`` lines; a community may be shown
  ``snmp-server community encrypted <hash> view ...``.
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


# ---- Removal (xcast6_divert_state: absent) on IOS-XE / IOS-XR ----
#
# IOS refuses `no` of something that is not there, so the removal is planned against the running
# configuration: the template's absent branch lists every `no` the divert could need (in a safe order,
# references first), its present branch says what the divert adds, and `show running-config` says what
# is still there and whether it is still the divert's.  Only a statement that is there AND is the
# divert's gets its `no`; one the operator changed (or still uses) is kept and named.

@dataclass
class ConfigBlock:
    """A top-level statement of a Cisco configuration and its indented lines (stripped, in order).

    ``paths[k]``: the sub-block headers ``children[k]`` sits under, outermost first (``()`` directly
    under the header; ``("address-family ipv6 unicast",)`` for a route under ``router static``).
    """

    header: str
    children: list[str] = field(default_factory=list)
    paths: list[tuple[str, ...]] = field(default_factory=list)


def parse_cisco_blocks(text: str, what: str = "show running-config") -> list[ConfigBlock]:
    """IOS-XE/IOS-XR configuration text as top-level blocks, in order.

    A line at column 0 starts a block; indented lines belong to it, each with the sub-block headers it
    is nested in (by indentation; `` !`` closers dropped); ``!`` at column 0 ends it.  Headers IOS prints around the configuration
    (``Building configuration...``, ``Current configuration : N bytes``, the XR timestamp) come out as
    childless blocks nothing matches.  A CLI error raises ValueError.
    """
    _check_cli_output(text, what)
    blocks: list[ConfigBlock] = []
    current: ConfigBlock | None = None
    stack: list[tuple[int, str]] = []          # (indentation, line) of the enclosing sub-block headers
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = None
            stack = []
            if line.startswith("!") or line == "end":
                continue
            current = ConfigBlock(line.strip())
            blocks.append(current)
            continue
        child = line.strip()
        if current is None or child == "!" or child.startswith("! "):
            continue
        depth = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        current.children.append(child)
        current.paths.append(tuple(h for _, h in stack))
        stack.append((depth, child))
    return blocks


# Words after which a line carries a secret the router stores in another form (hash, `encrypted`):
# everything from them on is left out of the comparison (the IOS-XE `username ... secret 9 $9$...`,
# IOS-XR `secret 10 $6$...`, `snmp-server user ... auth sha encrypted ...`).
_SECRET_FROM = frozenset({"secret", "password", "algorithm-type", "auth"})


# IOS may print a view's subtree by its MIB name instead of the number it was given (the OIDs
# router_divert_snmp_oids lists): SNMPv2-MIB, IF-MIB, IP-FORWARD-MIB, IPV6-MIB.
_OID_NAMES = {"sysuptime": "1.3.6.1.2.1.1.3", "ifentry": "1.3.6.1.2.1.2.2.1",
              "ifxentry": "1.3.6.1.2.1.31.1.1.1", "ipforward": "1.3.6.1.2.1.4.24",
              "ipv6routetable": "1.3.6.1.2.1.55.1.11"}


def _cut_secret(words: list[str]) -> list[str]:
    """``words`` up to the first secret keyword (kept when it starts the line: XR ``secret ...``)."""
    for i, w in enumerate(words):
        if w.casefold() in _SECRET_FROM:
            return words[:max(i, 1)]
    return words


def _shown(line: str) -> str:
    """A running-configuration line for a message: no secret in it."""
    words = line.split()
    if words[:2] == ["snmp-server", "community"] and len(words) > 2:
        words = [*words[:2], "<community>", *words[3 + (words[2] in ("encrypted", "clear")):]]
    cut = _cut_secret(words)
    return " ".join(cut) + (" ..." if len(cut) < len(words) else "")


def _norm_word(word: str) -> str:
    if ":" in word:
        base, slash, plen = word.partition("/")
        try:
            return ipaddress.IPv6Address(base).compressed + slash + plen
        except ValueError:
            pass
    return word.casefold()


def normalize_config_line(line: str) -> tuple[str, ...]:
    """A configuration line as the words to compare: IPv6 addresses canonical (IOS-XE prints them
    upper case), case folded, secrets cut off (see _SECRET_FROM), an IOS ``... sequence N`` entry
    suffix moved to the front, a view's MIB name as its number (_OID_NAMES), and an IOS-XR
    ``snmp-server community encrypted <hash>`` community
    replaced by ``*`` (matches any community string)."""
    words = _cut_secret([_norm_word(w) for w in line.split()])
    if len(words) >= 3 and words[-2] == "sequence" and words[-1].isdigit() and words[0] != "sequence":
        words = ["sequence", words[-1], *words[:-2]]
    if words[:2] == ["snmp-server", "view"] and len(words) > 3:
        words[3] = _OID_NAMES.get(words[3], words[3])
    if words[:2] == ["snmp-server", "community"] and len(words) > 3 and words[2] in ("encrypted", "clear"):
        words = ["snmp-server", "community", "*" if words[2] == "encrypted" else words[3], *words[4:]]
    return tuple(words)


def _starts_with(words: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    """Word prefix; ``*`` in ``words`` (a community the router shows encrypted) matches any word."""
    return len(words) >= len(prefix) and all(w == p or w == "*" for w, p in zip(words, prefix))


def _next_hops(words: tuple[str, ...]) -> set[ipaddress.IPv6Address] | None:
    """The next hops of a PBR `set ipv6 next-hop ...` line or an ABF ACE (``nexthopN ... ipv6 A``)."""
    if words[:3] == ("set", "ipv6", "next-hop") or words[:4] == ("set", "ipv6", "default", "next-hop"):
        return _addrs([w for w in words if "/" not in w])
    if any(re.fullmatch(r"nexthop[123]", w) for w in words):
        hops: set[ipaddress.IPv6Address] = set()
        for i, w in enumerate(words):
            if re.fullmatch(r"nexthop[123]", w):
                hops |= _addrs(list(words[i + 1:i + 5]))
        return hops
    return None


def _same_ace_but_hops(child: tuple[str, ...], ours: set[tuple[str, ...]],
                       engines: set[ipaddress.IPv6Address]) -> bool:
    """A next-hop line whose hops are all engines and whose words before them are those of one of
    the divert's lines: ours from a run with another engine list (a pair that changed)."""
    hops = _next_hops(child)
    if not hops or not hops <= engines:
        return False
    def head(words: tuple[str, ...]) -> tuple[str, ...]:
        for i, w in enumerate(words):
            if re.fullmatch(r"nexthop[123]|next-hop", w):
                return words[:i]
        return words
    return any(head(child) == head(o) and _next_hops(o) is not None for o in ours)


def _reference_pattern(header: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[str, ...]] | None:
    """What refers to the object ``header`` defines (pattern over a normalized line), and the header
    prefix of the object's own statements (they are not references)."""
    def name(word: str) -> str:
        return re.escape(word) + r"(?=\s|$)"
    if header[:2] == ("ipv6", "access-list") and len(header) >= 3:
        return (re.compile(r"(?:^|\s)(?:address|access-group|ipv6|access|access-class|traffic-filter)\s+"
                           + name(header[2])), header[:3])
    if header[:4] == ("ipv6", "route", "static", "bfd") and len(header) >= 6:
        # the BFD session a static route with exactly this next hop depends on (associated mode)
        return (re.compile(r"^ipv6 route (?!static\s)\S+ " + re.escape(header[4]) + r"\s+" + name(header[5])),
                header[:6])
    if header[:2] == ("ipv6", "route") and len(header) >= 3:
        # the route a `track N ipv6 route P reachability` follows
        return re.compile(r"(?:^|\s)ipv6 route " + name(header[2])), header[:3]
    if header[:1] == ("track",) and len(header) >= 2:
        return re.compile(r"(?:^|\s)track\s+" + name(header[1])), header[:2]
    if header[:1] == ("interface",) and len(header) >= 2:
        return re.compile(r"(?:^|\s)" + name(header[1])), header[:2]
    if header[:2] == ("snmp-server", "view") and len(header) >= 3:
        return re.compile(r"(?:^|\s)(?:view|read|write|notify)\s+" + name(header[2])), header[:3]
    if header[:1] in (("usergroup",), ("taskgroup",)) and len(header) >= 2:
        word = "group" if header[0] == "usergroup" else "taskgroup"
        return re.compile(r"(?:^|\s)" + word + r"\s+" + name(header[1])), header[:2]
    return None


@dataclass
class _Running:
    """The running configuration while the plan removes from it."""

    blocks: list[ConfigBlock]
    removed: set[int] = field(default_factory=set)                 # block indexes
    removed_children: set[tuple[int, int]] = field(default_factory=set)

    def live(self) -> list[tuple[int, ConfigBlock]]:
        return [(i, b) for i, b in enumerate(self.blocks) if i not in self.removed]

    def users_of(self, header: tuple[str, ...], skip: set[int]) -> list[str]:
        """Lines still in the configuration that refer to what ``header`` defines."""
        ref = _reference_pattern(header)
        if ref is None:
            return []
        pattern, own = ref
        out = []
        for i, block in self.live():
            if i in skip:
                continue
            head = normalize_config_line(block.header)
            if _starts_with(head, own):
                continue  # another statement of the same object (e.g. another view line)
            lines = [(None, block.header)] + [(j, c) for j, c in enumerate(block.children)
                                              if (i, j) not in self.removed_children]
            for j, line in lines:
                if line.split()[:1] in (["description"], ["remark"]):
                    continue  # free text, not a reference
                if pattern.search(" ".join(normalize_config_line(line))):
                    shown = _shown(block.header)
                    out.append(shown if j is None else f"{shown} / {_shown(line)}")
        return out


def _present_index(blocks: list[ConfigBlock]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    index: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for block in blocks:
        index.setdefault(normalize_config_line(block.header), []).extend(
            normalize_config_line(c) for c in block.children)
    return index


def _npath(path: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(normalize_config_line(h) for h in path)


def _present_nested(blocks: list[ConfigBlock]) -> dict[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]],
                                                        list[tuple[str, ...]]]:
    """(header, sub-block path) -> the lines the present rendering writes there (normalized)."""
    index: dict[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]], list[tuple[str, ...]]] = {}
    for block in blocks:
        for child, path in zip(block.children, block.paths, strict=True):
            index.setdefault((normalize_config_line(block.header), _npath(path)), []).append(
                normalize_config_line(child))
    return index


def _emit(header: str, nos: list[tuple[tuple[str, ...], str]]) -> list[str]:
    """A block header and its `no` lines, each under its sub-block headers, closed with ``!``."""
    out = [header]
    open_path: tuple[str, ...] = ()
    for path, line in nos:
        keep = 0
        while keep < min(len(path), len(open_path)) and path[keep] == open_path[keep]:
            keep += 1
        out.extend(" " * (d + 1) + "!" for d in range(len(open_path) - 1, keep - 1, -1))
        out.extend(" " * (d + 1) + path[d] for d in range(keep, len(path)))
        out.append(" " * (len(path) + 1) + line)
        open_path = path
    out.extend(" " * (d + 1) + "!" for d in range(len(open_path) - 1, -1, -1))
    out.append("!")
    return out


def cisco_removal(running: str, present: str, absent: str, engines: Any, platform: str) -> dict[str, Any]:
    """Plan ``xcast6_divert_state: absent`` on IOS-XE/IOS-XR against the running configuration.

    ``running``: ``show running-config``; ``present``/``absent``: the role's template rendered with
    state present / absent for this router (the absent rendering is the full list of `no` lines in a
    safe order: top-level ``no X``, or a block header with indented ``no Y`` for a line inside the
    operator's block); ``engines``: the engine addresses; ``platform``: ``iosxe`` or ``iosxr``.

    Returns ``{"lines": [...], "kept": [...], "gone": n}``: the configuration lines to push (empty:
    nothing left to remove), why a statement the divert would remove is kept, and how many of the
    absent rendering's removals are already done.  A `no` line is emitted only when what it removes
    is in the running configuration, is the divert's (same statement, no line of the operator's in its
    block; next hops: engines only) and nothing that stays refers to it.
    """
    if platform not in ("iosxe", "iosxr"):
        raise ValueError(f"cisco_removal: platform must be iosxe or iosxr, got {platform!r}")
    ours_hops = _engines(engines)
    run = _Running(parse_cisco_blocks(running))
    present_blocks = parse_cisco_blocks(present, "the present rendering")
    ours = _present_index(present_blocks)
    ours_nested = _present_nested(present_blocks)
    plan: list[tuple[str, list[tuple[tuple[str, ...], str]]]] = []   # (top line or header, (path, `no`))
    kept: list[str] = []
    gone = 0

    def child_is_ours(child: str, present_children: list[tuple[str, ...]]) -> bool:
        words = normalize_config_line(child)
        if words[:1] == ("no",):
            return True   # a state the router prints (`no ip address`), nothing the operator adds
        return words in present_children or _same_ace_but_hops(words, set(present_children), ours_hops)

    for block in parse_cisco_blocks(absent, "the absent rendering"):
        if block.header.startswith("no "):
            target = normalize_config_line(block.header[3:])
            present_keys = [k for k in ours if _starts_with(k, target)]
            matches = [(i, b) for i, b in run.live() if _starts_with(normalize_config_line(b.header), target)]
            if platform == "iosxe" and target[:2] == ("snmp-server", "user") and len(target) >= 4:
                # IOS-XE never shows SNMPv3 users in the running configuration: the user goes with
                # its group (removed right after it by the absent rendering)
                group = ("snmp-server", "group", target[3])
                if any(_starts_with(normalize_config_line(b.header), group) for _, b in run.live()):
                    plan.append((block.header, []))
                else:
                    gone += 1
                continue
            if not matches:
                gone += 1
                continue
            theirs = []
            for i, found in matches:
                head = normalize_config_line(found.header)
                want = next((k for k in present_keys if len(head) == len(k) and _starts_with(head, k)), None)
                foreign = [] if want is None else [c for c in found.children
                                                   if not child_is_ours(c, ours[want])]
                if want is None or foreign:
                    what = "; ".join(map(_shown, foreign or [found.header]))
                    theirs.append(f"{_shown(found.header)}: not the divert's as the role wrote it ({what})")
            if theirs:
                kept.extend(theirs)
                continue
            users = run.users_of(target, {i for i, _ in matches})
            if users:
                kept.append(f"{_shown(block.header[3:])}: still used by {'; '.join(users)}")
                continue
            run.removed |= {i for i, _ in matches}
            plan.append((block.header, []))
            continue
        # a block of the operator's: remove only our lines in it (possibly inside its sub-blocks)
        subheaders = {block.paths[k + 1] for k in range(len(block.children) - 1)
                      if block.paths[k + 1] == (*block.paths[k], block.children[k])}
        odd = [c for c, p in zip(block.children, block.paths, strict=True)
               if not c.startswith("no ") and (*p, c) not in subheaders]
        if not block.children:
            odd = [block.header]
        if odd:
            # the plan only knows `no` lines: anything else in the absent rendering would be dropped
            raise ValueError(f"the absent rendering has {odd[0]!r} (under {block.header!r}): only `no ...` "
                             f"lines, at the top or inside a block, can be planned against the router")
        header = normalize_config_line(block.header)
        parents = [(i, b) for i, b in run.live() if normalize_config_line(b.header) == header]
        nos = []
        for line, path in zip(block.children, block.paths, strict=True):
            if not line.startswith("no "):
                continue   # a sub-block header
            target, where = normalize_config_line(line[3:]), _npath(path)
            lines_found = [(i, j, c) for i, b in parents for j, c in enumerate(b.children)
                           if (i, j) not in run.removed_children and _npath(b.paths[j]) == where
                           and _starts_with(normalize_config_line(c), target)]
            if not lines_found:
                gone += 1
                continue
            present_children = ours_nested.get((header, where), [])
            foreign = [c for _, _, c in lines_found if not child_is_ours(c, present_children)]
            if foreign:
                kept.append(f"{' / '.join((block.header, *path))} / {'; '.join(map(_shown, foreign))}: "
                            f"not the divert's as the role wrote it")
                continue
            run.removed_children |= {(i, j) for i, j, _ in lines_found}
            nos.append((path, line))
        if nos:
            plan.append((block.header, nos))
    lines: list[str] = []
    for top, children in plan:
        lines.extend(_emit(top, children) if children else [top])
    return {"lines": lines, "kept": kept, "gone": gone}


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
            "xcast6_cisco_removal": wrap(cisco_removal),
        }
