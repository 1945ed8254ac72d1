"""Interface plan (pure): operator's mapping + router interface list -> desired engine links.

The draft (§4.3) clones each router interface as its own VLAN between router and engine, each
with its own subnet.  The operator either maps router interfaces (names or glob patterns) to a
VLAN, subnet and addresses, or lets the plan allocate them from a VLAN range and an IPv6 pool.
Allocations are stable: whatever a router interface already has (``previous``, read back from
the kernel's owned links) it keeps; only new interfaces get the lowest free VLAN / subnet.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from engine.model import Interface
from vlan.config import LinksConfig, MapEntry, PlanError

OWNER_ALIAS_PREFIX = "xcast6-engine:"  # IFLA_IFALIAS marker on links the engine created


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a router interface already has (read back from the kernel), kept across runs."""

    vlan_id: int | None
    subnet: IPv6Network | None


@dataclass(frozen=True, slots=True)
class DesiredLink:
    """One engine link the plan wants."""

    router_ifname: str
    engine_ifname: str
    vlan_id: int | None
    engine_addr: IPv6Interface
    router_addr: IPv6Address | None
    oper_up: bool
    source: str  # which config line produced it: "links.map[0]" or "auto"

    @property
    def alias(self) -> str:
        """IFLA_IFALIAS written on links the engine creates: ownership marker + router interface."""
        return f"{OWNER_ALIAS_PREFIX}{self.router_ifname}"


@dataclass(slots=True)
class Plan:
    """The desired links plus router interfaces the configuration leaves out (and why)."""

    links: list[DesiredLink]
    unmapped: dict[str, str] = field(default_factory=dict)

    def by_router_if(self) -> dict[str, DesiredLink]:
        return {link.router_ifname: link for link in self.links}


def vlan_ifname(prefix: str, vlan_id: int) -> str:
    """Name of the engine's 802.1Q subinterface for ``vlan_id``."""
    return f"{prefix}{vlan_id}"


def owner_router_if(alias: str | None) -> str | None:
    """The router interface an owned link stands for, from its alias; None if not ours."""
    if alias and alias.startswith(OWNER_ALIAS_PREFIX):
        return alias[len(OWNER_ALIAS_PREFIX) :]
    return None


def _subnet_at(pool: IPv6Network, plen: int, index: int) -> IPv6Network | None:
    count = 1 << (plen - pool.prefixlen)
    if index >= count:
        return None
    base = int(pool.network_address) + (index << (128 - plen))
    return IPv6Network((base, plen))


def build_plan(
    config: LinksConfig,
    router_interfaces: Iterable[Interface],
    previous: Mapping[str, Allocation] | None = None,
    reserved_vlans: Iterable[int] = (),
) -> Plan:
    """Compute the desired links.  Raises :class:`PlanError` naming the field when impossible.

    ``reserved_vlans`` (VLANs other, foreign subinterfaces already use on the trunk) are never
    picked by automatic allocation.
    """
    previous = previous or {}
    reserved = set(reserved_vlans)
    interfaces = list(router_interfaces)
    plan = Plan(links=[])
    wanted: list[tuple[Interface, MapEntry | None, str]] = []
    seen: set[str] = set()
    for iface in sorted(interfaces, key=lambda i: (i.index if i.index is not None else 1 << 31, i.name)):
        if iface.name in seen:
            raise PlanError("router interfaces", f"{iface.name!r} reported twice")
        seen.add(iface.name)
        if any(fnmatch.fnmatchcase(iface.name, pat) for pat in config.exclude):
            plan.unmapped[iface.name] = "excluded"
            continue
        match = None
        where = "auto"
        for i, candidate_entry in enumerate(config.entries):
            if fnmatch.fnmatchcase(iface.name, candidate_entry.router_if):
                match, where = candidate_entry, f"links.map[{i}]"
                break
        if match is None and (config.entries or config.vlan_range is None):
            plan.unmapped[iface.name] = "no mapping entry matches"
            continue
        fixed = match is not None and (
            match.vlan_id is not None or match.subnet is not None or match.engine_addr is not None
        )
        if match is not None and fixed and _is_glob(match.router_if):
            # A pattern with fixed values would give several interfaces the same VLAN/subnet.
            hits = [i.name for i in interfaces if fnmatch.fnmatchcase(i.name, match.router_if)]
            if len(hits) > 1:
                raise PlanError(
                    f"{where}.router_if",
                    f"pattern {match.router_if!r} with fixed vlan/subnet matches "
                    f"{len(hits)} interfaces ({', '.join(hits[:4])})",
                )
        wanted.append((iface, match, where))

    # Pass 1: reserve explicit values and what each interface already had.
    used_vlans: dict[int, str] = {}
    used_subnets = _SubnetSet(config.subnet_prefixlen)
    vlan_of: dict[str, int | None] = {}
    subnet_of: dict[str, IPv6Network | None] = {}

    def reserve_subnet(net: IPv6Network, owner: str, where: str) -> None:
        clash = used_subnets.overlapping(net)
        if clash is not None and clash[1] != owner:
            raise PlanError(where, f"subnet {net} for {owner} overlaps {clash[0]} of {clash[1]}")
        used_subnets.add(net, owner)

    for iface, entry, where in wanted:
        prev = previous.get(iface.name)
        vid: int | None = None
        if config.mode == "vlan":
            if entry is not None and entry.vlan_id is not None:
                vid = entry.vlan_id
            elif prev is not None and prev.vlan_id is not None and _auto_vlan_ok(config, prev.vlan_id):
                vid = prev.vlan_id
            if vid is not None:
                if vid in used_vlans:
                    raise PlanError(
                        f"{where}.vlan", f"VLAN {vid} for {iface.name} already used by {used_vlans[vid]}"
                    )
                used_vlans[vid] = iface.name
        vlan_of[iface.name] = vid
        subnet_of[iface.name] = None
        if entry is not None and entry.subnet is not None:
            reserve_subnet(entry.subnet, iface.name, f"{where}.subnet")
            subnet_of[iface.name] = entry.subnet
    # Previous pool subnets come after explicit ones, so an explicit subnet always wins.
    for iface, _, _ in wanted:
        prev = previous.get(iface.name)
        if subnet_of[iface.name] is not None or prev is None or prev.subnet is None or config.pool is None:
            continue
        old = prev.subnet
        if (
            old.subnet_of(config.pool)
            and old.prefixlen == config.subnet_prefixlen
            and used_subnets.overlapping(old) is None
        ):
            used_subnets.add(old, iface.name)
            subnet_of[iface.name] = old

    vlan_cursor = 0
    subnet_cursor = 0
    # Pass 2: allocate the rest, lowest free first, in router ifIndex order.
    for iface, _, where in wanted:
        if config.mode == "vlan" and vlan_of[iface.name] is None:
            if config.vlan_range is None:
                raise PlanError(
                    f"{where}.vlan", f"no VLAN for {iface.name}: give vlan or links.vlan_range"
                )
            lo, hi = config.vlan_range
            # Allocation only ever adds, so the lowest free VLAN never moves down: resume there.
            vlan_cursor = max(vlan_cursor, lo)
            while vlan_cursor <= hi and (vlan_cursor in used_vlans or vlan_cursor in reserved):
                vlan_cursor += 1
            free = vlan_cursor if vlan_cursor <= hi else None
            if free is None:
                raise PlanError(
                    "links.vlan_range", f"exhausted: no free VLAN in {lo}..{hi} for {iface.name}"
                )
            used_vlans[free] = iface.name
            vlan_of[iface.name] = free
        if subnet_of[iface.name] is None:
            if config.pool is None:
                raise PlanError(
                    f"{where}.subnet", f"no subnet for {iface.name}: give subnet or links.pool"
                )
            index = subnet_cursor
            while True:
                candidate = _subnet_at(config.pool, config.subnet_prefixlen, index)
                if candidate is None:
                    raise PlanError(
                        "links.pool",
                        f"exhausted: no free /{config.subnet_prefixlen} in {config.pool} for {iface.name}",
                    )
                if used_subnets.overlapping(candidate) is None:
                    break
                index += 1
            subnet_cursor = index + 1
            used_subnets.add(candidate, iface.name)
            subnet_of[iface.name] = candidate

    for iface, entry, where in wanted:
        net = subnet_of[iface.name]
        assert net is not None
        engine = entry.engine_addr if entry is not None and entry.engine_addr is not None else None
        router = entry.router_addr if entry is not None and entry.router_addr is not None else None
        if engine is None:
            engine = net.network_address + config.engine_host
        if router is None:
            router = net.network_address + config.router_host
        for name, addr in (("engine_addr", engine), ("router_addr", router)):
            if addr not in net:
                raise PlanError(f"{where}.{name}", f"{addr} is not inside subnet {net}")
        vid = vlan_of[iface.name]
        if config.mode == "vlan":
            assert vid is not None
            ifname = vlan_ifname(config.name_prefix, vid)
        else:
            assert entry is not None and entry.link is not None
            ifname = entry.link
        plan.links.append(
            DesiredLink(
                router_ifname=iface.name,
                engine_ifname=ifname,
                vlan_id=vid,
                engine_addr=IPv6Interface((engine, net.prefixlen)),
                router_addr=router,
                oper_up=iface.oper_up,
                source=where,
            )
        )
    return plan


class _SubnetSet:
    """Used subnets with owners; overlap checks in O(1) for the common same-size case.

    Almost every subnet has the plan's prefix length (pool allocations), so those live in a
    dict keyed by network; the few of other sizes (explicit subnets) are checked linearly.
    """

    def __init__(self, plen: int) -> None:
        self._plen = plen
        self._same: dict[IPv6Network, str] = {}
        self._other: dict[IPv6Network, str] = {}

    def add(self, net: IPv6Network, owner: str) -> None:
        (self._same if net.prefixlen == self._plen else self._other)[net] = owner

    def overlapping(self, net: IPv6Network) -> tuple[IPv6Network, str] | None:
        """A used subnet overlapping ``net`` and its owner, or None."""
        if net.prefixlen >= self._plen:
            container = net.supernet(new_prefix=self._plen) if net.prefixlen > self._plen else net
            if container in self._same:
                return container, self._same[container]
        else:
            for used, owner in self._same.items():
                if used.subnet_of(net):
                    return used, owner
        for used, owner in self._other.items():
            if used.overlaps(net):
                return used, owner
        return None


def _auto_vlan_ok(config: LinksConfig, vid: int) -> bool:
    """A previous automatic VLAN is kept only while it is still inside the configured range."""
    if config.vlan_range is None:
        return False
    lo, hi = config.vlan_range
    explicit = {e.vlan_id for e in config.entries if e.vlan_id is not None}
    return lo <= vid <= hi and vid not in explicit
