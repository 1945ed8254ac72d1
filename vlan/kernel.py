"""Read the kernel's links and IPv6 addresses through pyroute2 into plain, comparable records."""

from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Interface
from typing import Any

IFF_UP = 0x1
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True, slots=True)
class KernelLink:
    """One kernel interface as the reconcile logic needs to see it."""

    index: int
    name: str
    kind: str | None  # "vlan", "veth", ... (None for plain devices)
    vlan_id: int | None
    parent_index: int | None  # IFLA_LINK: the trunk of a VLAN subinterface
    alias: str | None  # IFLA_IFALIAS: our ownership marker lives here
    mtu: int
    admin_up: bool
    oper_state: str  # IFLA_OPERSTATE: UP, DOWN, LOWERLAYERDOWN, UNKNOWN...
    mac: bytes
    addrs: frozenset[IPv6Interface]  # global-scope IPv6 addresses only

    @property
    def oper_up(self) -> bool:
        return self.oper_state in ("UP", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class KernelView:
    """All links of one network namespace, by name."""

    links: dict[str, KernelLink]

    def by_index(self, index: int) -> KernelLink | None:
        return next((lk for lk in self.links.values() if lk.index == index), None)


def _linkinfo(msg: Any) -> tuple[str | None, int | None]:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None:
        return None, None
    kind = info.get_attr("IFLA_INFO_KIND")
    vlan_id = None
    if kind == "vlan":
        data = info.get_attr("IFLA_INFO_DATA")
        if data is not None:
            vlan_id = data.get_attr("IFLA_VLAN_ID")
    return kind, vlan_id


def _mac(text: str | None) -> bytes:
    if not text:
        return b""
    return bytes(int(part, 16) for part in text.split(":"))


def read_kernel(ipr: Any) -> KernelView:
    """Snapshot links (name, kind, VLAN id, parent, alias, MTU, state, MAC) and global IPv6 addresses."""
    addrs: dict[int, set[IPv6Interface]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET6):
        if msg["scope"] != RT_SCOPE_UNIVERSE:
            continue
        address = msg.get_attr("IFA_ADDRESS")
        if address:
            addrs.setdefault(msg["index"], set()).add(IPv6Interface(f"{address}/{msg['prefixlen']}"))
    links: dict[str, KernelLink] = {}
    for msg in ipr.get_links():
        kind, vlan_id = _linkinfo(msg)
        name = msg.get_attr("IFLA_IFNAME")
        links[name] = KernelLink(
            index=msg["index"],
            name=name,
            kind=kind,
            vlan_id=vlan_id,
            parent_index=msg.get_attr("IFLA_LINK"),
            alias=msg.get_attr("IFLA_IFALIAS") or None,
            mtu=msg.get_attr("IFLA_MTU") or 0,
            admin_up=bool(msg["flags"] & IFF_UP),
            oper_state=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
            mac=_mac(msg.get_attr("IFLA_ADDRESS")),
            addrs=frozenset(addrs.get(msg["index"], ())),
        )
    return KernelView(links)


def mac_text(mac: bytes | None) -> str:
    """``aa:bb:cc:dd:ee:ff`` (or ``-`` when unknown)."""
    return ":".join(f"{b:02x}" for b in mac) if mac else "-"


def addr_bytes(addr: IPv6Address | IPv6Interface) -> bytes:
    return addr.packed if isinstance(addr, IPv6Address) else addr.ip.packed


def set_ipv6_sysctl(netns: str | None, ifname: str, key: str, value: str) -> None:
    """Write ``net.ipv6.conf.<ifname>.<key>`` in ``netns`` (None: the current namespace).

    There is no netlink call for these, and /proc/sys/net follows the *thread's* namespace, so
    the write happens in a short-lived thread that joins ``netns`` (the process stays put).
    A value that is already right is not written: a daemon under systemd's
    ``ProtectKernelTunables=yes`` sees /proc/sys read-only, and the Ansible role sets the
    ``default`` of such keys at boot, which new interfaces inherit.
    """
    path = f"/proc/sys/net/ipv6/conf/{ifname}/{key}"
    errors: list[BaseException] = []

    def write() -> None:
        try:
            if netns is not None:
                from pyroute2 import netns as pr_netns

                pr_netns.setns(netns, flags=0)
            with open(path) as fh:
                if fh.read().strip() == value:
                    return
            with open(path, "w") as fh:
                fh.write(value)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                hint = (f"set net.ipv6.conf.default.{key} = {value} at boot, as the Ansible role's "
                        "sysctl file does, or let the engine write /proc/sys/net/ipv6/conf")
                exc = OSError(exc.errno, f"{exc.strerror} ({hint})")
            errors.append(exc)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    if netns is None:
        write()
    else:
        worker = threading.Thread(target=write, name=f"xcast6-sysctl-{ifname}")
        worker.start()
        worker.join()
    if errors:
        raise OSError(f"cannot set {path} in netns {netns or '(current)'}: {errors[0]}")
