"""Make the kernel match the plan: 802.1Q subinterfaces (or direct links), addresses, MTU, up/down.

``diff`` is pure (plan + kernel view -> actions) so it is tested without root; ``apply_actions``
is the only part that writes to netlink.  Ownership: in ``vlan`` mode the engine creates, changes
and deletes only links whose name starts with ``name_prefix`` AND whose IFLA_IFALIAS carries
the ``xcast6-engine:`` marker; anything else, even a VLAN on the trunk, is left alone (and a
clash with it is an error naming the link).  In ``direct`` mode the links are the operator's:
the engine only sets their addresses (removing stale ones only inside its pool/subnets) and
their admin state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Interface, IPv6Network
from typing import Any

from engine.model import EngineLink, Interface, LinkMap
from vlan.config import LinksConfig
from vlan.kernel import KernelLink, KernelView, addr_bytes, read_kernel, set_ipv6_sysctl
from vlan.neighbors import NeighborTarget, learn_router_macs
from vlan.plan import Allocation, Plan, build_plan, owner_router_if

IFA_F_NODAD = 0x02  # point-to-point VLAN with a planned address: no DAD delay before first use


class ReconcileError(RuntimeError):
    """The kernel state does not allow the plan (missing trunk, name taken by a foreign link...)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One change to the kernel; ``op`` is create|delete|set|addr-add|addr-del."""

    op: str
    ifname: str
    detail: str
    vlan_id: int | None = None
    trunk: str | None = None
    alias: str | None = None
    mtu: int | None = None
    up: bool | None = None
    addr: IPv6Interface | None = None

    def describe(self) -> str:
        """One diff line for ``--dry-run`` / logs: ``+`` create/add, ``-`` delete, ``~`` change."""
        sign = {"create": "+", "addr-add": "+", "delete": "-", "addr-del": "-"}.get(self.op, "~")
        return f"{sign} {self.ifname:<15} {self.detail}"


def is_owned(link: KernelLink, config: LinksConfig) -> bool:
    """Created by the engine: our name prefix, our alias marker, and a VLAN subinterface."""
    return (
        link.kind == "vlan"
        and link.name.startswith(config.name_prefix)
        and owner_router_if(link.alias) is not None
    )


def _managed_subnets(config: LinksConfig) -> list[IPv6Network]:
    nets = [e.subnet for e in config.entries if e.subnet is not None]
    if config.pool is not None:
        nets.append(config.pool)
    return nets


def foreign_trunk_vlans(config: LinksConfig, view: KernelView) -> set[int]:
    """VLAN ids on the trunk held by subinterfaces the engine does not own (never auto-picked)."""
    trunk = view.links.get(config.trunk or "")
    if config.mode != "vlan" or trunk is None:
        return set()
    return {
        lk.vlan_id
        for lk in view.links.values()
        if lk.kind == "vlan"
        and lk.parent_index == trunk.index
        and lk.vlan_id is not None
        and not is_owned(lk, config)
    }


def previous_allocations(config: LinksConfig, view: KernelView) -> dict[str, Allocation]:
    """What each router interface already has in the kernel, so a re-plan keeps it stable."""
    prev: dict[str, Allocation] = {}
    if config.mode == "vlan":
        for link in view.links.values():
            router_if = owner_router_if(link.alias)
            if router_if is None or not is_owned(link, config):
                continue
            subnet = next(iter(sorted(a.network for a in link.addrs)), None)
            prev[router_if] = Allocation(link.vlan_id, subnet)
    else:
        managed = _managed_subnets(config)
        for entry in config.entries:
            direct = view.links.get(entry.link or "")
            if direct is None:
                continue
            nets = sorted(a.network for a in direct.addrs if any(a.network.subnet_of(m) for m in managed))
            if nets:
                prev[entry.router_if] = Allocation(None, nets[0])
    return prev


def diff(config: LinksConfig, plan: Plan, view: KernelView) -> list[Action]:
    """The actions that turn ``view`` into ``plan``.  Empty when the kernel already matches."""
    return _diff_vlan(config, plan, view) if config.mode == "vlan" else _diff_direct(config, plan, view)


def _diff_vlan(config: LinksConfig, plan: Plan, view: KernelView) -> list[Action]:
    assert config.trunk is not None
    trunk = view.links.get(config.trunk)
    if trunk is None:
        raise ReconcileError(f"links.trunk: {config.trunk} does not exist in this network namespace")
    actions: list[Action] = []
    desired = {link.engine_ifname: link for link in plan.links}
    owned = {lk.name: lk for lk in view.links.values() if is_owned(lk, config)}
    foreign_vlans = {
        lk.vlan_id: lk
        for lk in view.links.values()
        if lk.kind == "vlan" and lk.parent_index == trunk.index and lk.name not in owned
    }
    # Deletions first: a VLAN id freed by one router interface may be reused by another.
    recreate: set[str] = set()
    planned_router_ifs = {link.router_ifname for link in plan.links}
    for name, link in sorted(owned.items()):
        want = desired.get(name)
        gone = owner_router_if(link.alias)
        if want is None or want.alias != link.alias:
            # A link stands for one router interface: a VLAN handed to another interface gets a
            # fresh link (no stale neighbor entries or counters carried over).
            why = "not wanted" if gone not in planned_router_ifs else "moved to another VLAN"
            actions.append(Action("delete", name, f"vlan {link.vlan_id} (router interface {gone} {why})"))
            if want is not None:
                recreate.add(name)
        elif link.vlan_id != want.vlan_id or link.parent_index != trunk.index:
            actions.append(Action("delete", name, f"vlan {link.vlan_id} on wrong trunk/id: recreating"))
            recreate.add(name)
    for name, want in sorted(desired.items(), key=lambda kv: kv[1].vlan_id or 0):
        existing = view.links.get(name)
        state = "up" if want.oper_up else "down"
        if existing is not None and name not in owned:
            raise ReconcileError(
                f"{name} exists but is not owned by xcast6-engine (no '{want.alias}' alias); "
                "rename it or change links.name_prefix"
            )
        clash = foreign_vlans.get(want.vlan_id)
        if clash is not None:
            raise ReconcileError(
                f"VLAN {want.vlan_id} on {config.trunk} is already used by {clash.name}, which "
                "xcast6-engine does not own; remove it or map another VLAN"
            )
        if existing is None or name in recreate:
            actions.append(
                Action(
                    "create",
                    name,
                    f"vlan {want.vlan_id} on {config.trunk} for {want.router_ifname} mtu {trunk.mtu} {state}",
                    vlan_id=want.vlan_id,
                    trunk=config.trunk,
                    alias=want.alias,
                    mtu=trunk.mtu,
                    up=want.oper_up,
                )
            )
            actions.append(Action("addr-add", name, f"address {want.engine_addr}", addr=want.engine_addr))
            continue
        if existing.mtu != trunk.mtu:
            actions.append(
                Action(
                    "set", name, f"mtu {existing.mtu} -> {trunk.mtu} (follows {trunk.name})", mtu=trunk.mtu
                )
            )
        if existing.admin_up != want.oper_up:
            actions.append(
                Action("set", name, f"{state} (router {want.router_ifname} is oper {state})", up=want.oper_up)
            )
        actions.extend(_addr_actions(name, existing.addrs, want.engine_addr, managed=None))
    return actions


def _diff_direct(config: LinksConfig, plan: Plan, view: KernelView) -> list[Action]:
    actions: list[Action] = []
    managed = _managed_subnets(config)
    for want in plan.links:
        existing = view.links.get(want.engine_ifname)
        if existing is None:
            raise ReconcileError(
                f"links.map: link {want.engine_ifname} for router interface {want.router_ifname} "
                "does not exist (direct mode uses links that already exist)"
            )
        state = "up" if want.oper_up else "down"
        if existing.admin_up != want.oper_up:
            actions.append(
                Action(
                    "set",
                    want.engine_ifname,
                    f"{state} (router {want.router_ifname} is oper {state})",
                    up=want.oper_up,
                )
            )
        actions.extend(_addr_actions(want.engine_ifname, existing.addrs, want.engine_addr, managed))
    return actions


def _addr_actions(
    ifname: str, have: Iterable[IPv6Interface], want: IPv6Interface, managed: list[IPv6Network] | None
) -> list[Action]:
    """Add the wanted address; remove others we own (all, on owned links; pool ones, on direct links)."""
    actions = []
    have = set(have)
    for addr in sorted(have - {want}):
        if managed is None or any(addr.network.subnet_of(m) for m in managed):
            actions.append(Action("addr-del", ifname, f"address {addr}", addr=addr))
    if want not in have:
        actions.append(Action("addr-add", ifname, f"address {want}", addr=want))
    return actions


def apply_actions(ipr: Any, actions: list[Action], netns: str | None = None) -> None:
    """Carry out ``actions`` in order through an open pyroute2 IPRoute (in namespace ``netns``)."""
    kept: set[str] = set()
    for act in actions:
        try:
            # Linux flushes IPv6 addresses when a link goes admin-down; the plan reads its
            # allocations back from them, so keep them while the router interface is down.
            # Set before the first change to an existing link, right after creating a new one.
            if act.op not in ("create", "delete") and act.ifname not in kept:
                set_ipv6_sysctl(netns, act.ifname, "keep_addr_on_down", "1")
                kept.add(act.ifname)
            _apply_one(ipr, act)
            if act.op == "create":
                set_ipv6_sysctl(netns, act.ifname, "keep_addr_on_down", "1")
                kept.add(act.ifname)
        except ReconcileError:
            raise
        except Exception as exc:  # netlink errors: say which change failed
            raise ReconcileError(f"{act.op} {act.ifname} ({act.detail}): {exc}") from exc


def _index(ipr: Any, name: str) -> int:
    # RTM_GETLINK by name: one kernel lookup (link_lookup would dump every link per action).
    try:
        return int(ipr.link("get", ifname=name)[0]["index"])
    except Exception as exc:
        raise ReconcileError(f"{name} vanished during reconcile ({exc})") from exc


def _apply_one(ipr: Any, act: Action) -> None:
    if act.op == "create":
        assert act.trunk is not None
        try:
            ipr.link("add", ifname=act.ifname, kind="vlan", link=_index(ipr, act.trunk), vlan_id=act.vlan_id)
        except Exception as exc:
            if "Operation not supported" in str(exc) or getattr(exc, "code", None) == 95:
                raise ReconcileError(
                    f"cannot create {act.ifname}: this kernel has no 802.1Q support (modprobe 8021q)"
                ) from exc
            raise
        index = _index(ipr, act.ifname)
        ipr.link("set", index=index, ifalias=act.alias, mtu=act.mtu)
        ipr.link("set", index=index, state="up" if act.up else "down")
    elif act.op == "delete":
        ipr.link("del", index=_index(ipr, act.ifname))
    elif act.op == "set":
        index = _index(ipr, act.ifname)
        if act.alias is not None:
            ipr.link("set", index=index, ifalias=act.alias)
        if act.mtu is not None:
            ipr.link("set", index=index, mtu=act.mtu)
        if act.up is not None:
            ipr.link("set", index=index, state="up" if act.up else "down")
    elif act.op in ("addr-add", "addr-del"):
        assert act.addr is not None
        index = _index(ipr, act.ifname)
        if act.op == "addr-add":
            ipr.addr(
                "add",
                index=index,
                address=str(act.addr.ip),
                prefixlen=act.addr.network.prefixlen,
                flags=IFA_F_NODAD,
            )
        else:
            ipr.addr("del", index=index, address=str(act.addr.ip), prefixlen=act.addr.network.prefixlen)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown action {act.op}")


def build_linkmap(plan: Plan, view: KernelView, router_macs: dict[str, bytes] | None = None) -> LinkMap:
    """The LinkMap for the worker/API: planned links joined with what the kernel has now.

    Links the kernel does not have (dry run) get ifindex 0; ``router_macs`` is by router ifname.
    """
    router_macs = router_macs or {}
    links = []
    for want in plan.links:
        have = view.links.get(want.engine_ifname)
        links.append(
            EngineLink(
                router_ifname=want.router_ifname,
                engine_ifname=want.engine_ifname,
                engine_ifindex=have.index if have else 0,
                vlan_id=want.vlan_id,
                engine_addr=addr_bytes(want.engine_addr),
                router_addr=addr_bytes(want.router_addr) if want.router_addr is not None else None,
                engine_mac=have.mac if have else b"",
                router_mac=router_macs.get(want.router_ifname),
                mtu=have.mtu if have else 1500,
                oper_up=bool(have and have.admin_up and have.oper_up and want.oper_up),
            )
        )
    return LinkMap(links)


def open_ipr(netns: str | None = None) -> Any:
    """An IPRoute in ``netns`` (by name under /run/netns) or in the current namespace."""
    from pyroute2 import IPRoute

    if netns is None:
        return IPRoute()
    # flags=0: never create the namespace by accident when the operator mistypes its name.
    try:
        return IPRoute(netns=netns, flags=0)
    except OSError as exc:
        raise ReconcileError(f"network namespace {netns!r}: {exc.strerror or exc}") from exc


@dataclass(slots=True)
class ReconcileResult:
    """The plan, the actions it took (or would take) and the resulting LinkMap."""

    plan: Plan
    actions: list[Action]
    linkmap: LinkMap
    applied: bool


def reconcile(
    config: LinksConfig,
    router_interfaces: Iterable[Interface],
    *,
    netns: str | None = None,
    dry_run: bool = False,
    neighbor_wait_s: float = 0.0,
) -> ReconcileResult:
    """Plan against the kernel's current state, apply (unless ``dry_run``), learn router MACs.

    Idempotent: a second call with the same inputs finds nothing to do.  On a netlink error the
    exception names the failing change; links already reconciled stay as they are.
    """
    with open_ipr(netns) as ipr:
        view = read_kernel(ipr)
        plan = build_plan(
            config, router_interfaces, previous_allocations(config, view), foreign_trunk_vlans(config, view)
        )
        actions = diff(config, plan, view)
        if dry_run:
            return ReconcileResult(plan, actions, build_linkmap(plan, view), applied=False)
        if actions:
            apply_actions(ipr, actions, netns)
            view = read_kernel(ipr)
        targets = [
            NeighborTarget(lk.router_ifname, view.links[lk.engine_ifname].index, lk.router_addr)
            for lk in plan.links
            if lk.router_addr is not None and lk.engine_ifname in view.links and lk.oper_up
        ]
        macs = learn_router_macs(ipr, targets, wait_s=neighbor_wait_s)
        return ReconcileResult(plan, actions, build_linkmap(plan, view, macs), applied=True)
