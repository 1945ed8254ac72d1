"""The lab's deployment, as data: namespaces, links, addresses, routes, divert rules.

::

    snd ── ra ──────────── rb ── h3   (h3..h5 behind router B: engine A sends them ONE
           │  \\             │ \\── h4   multi-destination copy that engine B branches again)
           │   h1, h2       │  └─ h5
           │   hm (MTU 1280: the small-MTU receiver link, Packet Too Big tests)
           ea (engine A)    eb (engine B)

Every router interface ``X`` has its own engine link in ``direct`` mode: a veth ``eng<k>`` on
the router, ``to-<X>`` on the engine (the same shape ``vlan`` mode gives with one 802.1Q
subinterface per router interface, on a trunk of the engine's own: with engine pairs router A
has ``trunk`` to engine ``ea`` and ``trunkb`` to ``ea2``, each carrying the same VLANs; see
:meth:`Topology.wiring`, the plan ``lab up`` builds).  Routers divert traffic class
``010111xx`` arriving on any non-engine interface to their engine with nftables (mark) + a
policy-routing table, which is what a Junos filter with ``routing-instance`` / a Cisco PBR
``set ipv6 next-hop`` does.

Everything derives from ``prefix`` (default ``xl-``) so several labs never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DIVERT_MARK = 0x5C
DIVERT_TABLE = 92
RECEIVER_PORT = 5000
API_PORT = 8406              # each engine's API, on 127.0.0.1 inside its own namespace
KERNEL_TABLE = 6464          # the engines' kernel mirror table (in the engine namespaces)
LOOPBACKS_PER_HOST = 26      # 5 x 26 = 130 >= the 126 destinations one packet can carry


def engine_suffix(idx: int) -> str:
    """What tells engine ``idx``'s ends apart on a router with several engines: "" for engine 0,
    "b" for engine 1, ... (``eng0`` / ``eng0b``, ``trunk`` / ``trunkb``)."""
    return "" if idx == 0 else "abcdefgh"[idx]


@dataclass(frozen=True, slots=True)
class Host:
    name: str               # short name (h1, snd)
    router: str             # "a" or "b"
    net: str                # /64 of its link, e.g. 2001:db8:a1::
    router_if: str          # router interface facing it
    loop_net: str | None    # /64 whose addresses live on its loopback

    @property
    def addr(self) -> str:
        return f"{self.net}2"

    @property
    def gw(self) -> str:
        return f"{self.net}1"

    def loopbacks(self, count: int = LOOPBACKS_PER_HOST) -> list[str]:
        return [] if self.loop_net is None else [f"{self.loop_net}{i:x}" for i in range(1, count + 1)]


@dataclass(frozen=True, slots=True)
class Router:
    name: str                     # "a" / "b"
    interfaces: tuple[str, ...]   # its "real" interfaces (what SNMP reports and routes use)

    def engine_link(self, k: int, e: int = 0) -> tuple[str, str, str, str]:
        """(router ifname, engine ifname, router addr, engine addr) of engine ``e``'s link for
        interface k (engine 0: ``eng<k>`` in 2001:db8:e<r><k>::/64; engine 1: ``eng<k>b`` in
        2001:db8:e<r><k>:1::/64, ...)."""
        net = f"2001:db8:e{self.name}{k}::" if e == 0 else f"2001:db8:e{self.name}{k}:{e}::"
        return f"eng{k}{engine_suffix(e)}", f"to-{self.interfaces[k]}", f"{net}1", f"{net}2"

    def engine_subnet(self, k: int, e: int = 0) -> str:
        return f"2001:db8:e{self.name}{k}::/64" if e == 0 else f"2001:db8:e{self.name}{k}:{e}::/64"

    @property
    def snmp_addr(self) -> str:
        # The router answers SNMP on its end of engine link 0 (reachable from the engine ns).
        return self.engine_link(0)[2]


@dataclass(frozen=True, slots=True)
class EngineLink:
    """One router interface's link between a router and one of its engines (the plan's unit)."""

    k: int                  # index of the router interface (its VLAN is ``vlan_base + k``)
    router_if: str          # the router interface it stands for (ra-snd, ...)
    router_name: str        # its name on the router: eng<k> (engine 0), eng<k>b (engine 1), ...
    engine_name: str        # its name on the engine: to-<router_if>
    router_addr: str
    engine_addr: str
    subnet: str
    mtu: int                # the router interface's MTU (the engine's Packet Too Big value)
    vlan: int | None        # vlan mode: its 802.1Q id on the engine's trunk; None: a veth of its own


@dataclass(frozen=True, slots=True)
class EngineWiring:
    """How one engine is attached to its router: its own trunk (vlan mode) and its links.

    In vlan mode every engine has a trunk of its own to the router (as two engines of a pair sit
    on two router ports, ``ge-0/0/1`` and ``ge-0/0/2``), and every trunk carries the same VLAN
    plan: VLAN ``vlan_base + k`` stands for router interface k on each of them.
    """

    engine: str             # "a", "a2", ..., "b"
    router: str             # "a" / "b"
    router_ns: str
    engine_ns: str
    router_trunk: str | None    # vlan mode: the trunk's name on the router (trunk, trunkb, ...)
    engine_trunk: str | None    # ... and on the engine (trunk)
    trunk_mtu: int
    links: tuple[EngineLink, ...]

    @property
    def divert(self) -> EngineLink:
        """The link the router diverts to and runs BFD on with this engine (interface 0's)."""
        return self.links[0]


@dataclass
class Topology:
    """Names and addresses of one lab instance."""

    prefix: str = "xl-"
    state_dir: Path = field(default_factory=lambda: Path("/tmp/xl-lab"))
    workers: int = 1
    worker_cpus: tuple[int, ...] = ()   # engines' [workers] cpus (pinning); () = not pinned
    worker_busy_poll_us: int = 0        # engines' [workers] busy_poll_us
    worker_rx_buffer_kb: int = 0        # engines' [workers] rx_buffer_kb; 0 = the engine's default
    worker_cpu_resume_latency_us: int | None = None   # engines' [workers] cpu_resume_latency_us
    tuned_engines: tuple[str, ...] = ("a", "b")   # the engines the worker_* settings apply to
    poll_interval: float = 1.0
    # Jumbo links: a 126-destination XCAST6 header alone is 2,120 bytes (the draft assumes the
    # core runs a large MTU; so does the lab).
    mtu: int = 9000
    start_timeout: float = 30.0   # per daemon start (slow under QEMU TCG: raise it there)
    mode: str = "direct"          # "direct" (veth per link) or "vlan" (802.1Q on one trunk)
    dataplane: str = "auto"       # engines' [dataplane] mode: auto (the TC eBPF path), bpf, python
    # Engines of router A (router B keeps one).  More than one turns on engine pairs: every
    # engine runs BFD ([ha]) with its router, whose bfdd + lab.bfdroute pick the divert next hop.
    engines_per_router: int = 1
    bfd_tx_ms: int = 100
    bfd_multiplier: int = 3
    ha_hold_down: float = 1.0
    ha_drain_time: float = 1.0
    fail_mode: str = "open"       # all engines down: "open" (forward normally) or "closed" (drop)
    vlan_base: int = 100

    sender: Host = Host("snd", "a", "2001:db8:a0::", "ra-snd", None)
    receivers: tuple[Host, ...] = (
        Host("h1", "a", "2001:db8:a1::", "ra-h1", "2001:db8:c1::"),
        Host("h2", "a", "2001:db8:a2::", "ra-h2", "2001:db8:c2::"),
        Host("h3", "b", "2001:db8:b3::", "rb-h3", "2001:db8:c3::"),
        Host("h4", "b", "2001:db8:b4::", "rb-h4", "2001:db8:c4::"),
        Host("h5", "b", "2001:db8:b5::", "rb-h5", "2001:db8:c5::"),
    )
    # A receiver behind a small-MTU link (router A's ra-hm; its engine link has the same MTU, as
    # an operator configures it): the engine answers copies over it with Packet Too Big.  Not
    # one of ``receivers``, so the delivery matrix and the other tests keep their five.
    mtu_host: Host = Host("hm", "a", "2001:db8:a6::", "ra-hm", None)
    small_mtu: int = 1280
    inter_net: str = "2001:db8:ab::"       # router A ::1, router B ::2
    spare_net: str = "2001:db8:b9::"       # router B's spare link to h5 (route-change tests)

    def vlan_id(self, k: int) -> int:
        return self.vlan_base + k

    def ns(self, short: str) -> str:
        return f"{self.prefix}{short}"

    @property
    def routers(self) -> dict[str, Router]:
        # ra-hm last: the other interfaces keep their engine-link numbers (VLANs, subnets)
        a_ifs = ["ra-snd", *(h.router_if for h in self.receivers if h.router == "a"), "ra-rb",
                 self.mtu_host.router_if]
        b_ifs = ["rb-ra", *(h.router_if for h in self.receivers if h.router == "b"), "rb-h5b"]
        return {"a": Router("a", tuple(a_ifs)), "b": Router("b", tuple(b_ifs))}

    def router_ns(self, r: str) -> str:
        return self.ns(f"r{r}")

    def engine_ns(self, r: str) -> str:
        """Engine ``r``'s namespace (engine ids: "a", "a2", ... and "b")."""
        return self.ns(f"e{r}")

    def link_mtu(self, router_if: str) -> int:
        """The MTU of a router interface's links (host link and engine link alike)."""
        return self.small_mtu if router_if == self.mtu_host.router_if else self.mtu
    @property
    def ha(self) -> bool:
        return self.engines_per_router > 1

    @property
    def engines(self) -> list[str]:
        """Engine ids: router A's ("a", "a2", ...) then router B's ("b")."""
        return ["a", *(f"a{i}" for i in range(2, self.engines_per_router + 1)), "b"]

    def router_engines(self, r: str) -> list[str]:
        return [e for e in self.engines if e[0] == r]

    @staticmethod
    def engine_router(e: str) -> str:
        return e[0]

    @staticmethod
    def engine_index(e: str) -> int:
        """0 for "a"/"b", 1 for "a2", ..."""
        return 0 if len(e) == 1 else int(e[1:]) - 1

    def wiring(self, e: str) -> EngineWiring:
        """Engine ``e``'s attachment to its router: names, addresses, MTUs and VLANs (pure)."""
        name, idx = self.engine_router(e), self.engine_index(e)
        router = self.routers[name]
        vlan = self.mode == "vlan"
        links = []
        for k, rif in enumerate(router.interfaces):
            r_name, e_name, raddr, eaddr = router.engine_link(k, idx)
            vid = self.vlan_id(k) if vlan else None
            if vid is not None and not 1 <= vid <= 4094:
                raise ValueError(f"vlan_base {self.vlan_base}: VLAN {vid} of {rif} is outside 1-4094")
            links.append(EngineLink(k, rif, r_name, e_name, raddr, eaddr, router.engine_subnet(k, idx),
                                    self.link_mtu(rif), vid))
        return EngineWiring(e, name, self.router_ns(name), self.engine_ns(e),
                            f"trunk{engine_suffix(idx)}" if vlan else None, "trunk" if vlan else None,
                            self.mtu, tuple(links))

    def wiring_plan(self) -> list[EngineWiring]:
        """Every engine's :meth:`wiring`, router A's engines first (what ``lab up`` builds)."""
        return [self.wiring(e) for e in self.engines]

    def host(self, name: str) -> Host:
        for h in (self.sender, *self.receivers, self.mtu_host):
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in the lab (have snd, {', '.join(h.name for h in self.receivers)})")

    def all_namespaces(self) -> list[str]:
        return [self.ns("snd"), *(self.ns(h.name) for h in self.receivers), self.ns(self.mtu_host.name),
                self.router_ns("a"), self.router_ns("b"), *(self.engine_ns(e) for e in self.engines)]

    def receiver_log(self, host: str) -> Path:
        return self.state_dir / f"recv-{host}.jsonl"

    def engine_dir(self, r: str) -> Path:
        return self.state_dir / f"engine-{r}"

    def counters_path(self, r: str) -> Path:
        return self.engine_dir(r) / "stats.shm"

    def config_path(self, r: str) -> Path:
        """The daemon's generated TOML (``xcast6-engine run --config``)."""
        return self.engine_dir(r) / "engine.toml"

    @property
    def api_token_path(self) -> Path:
        return self.state_dir / "api-token"

    @property
    def api_ca_path(self) -> Path:
        """The lab CA that signed the engines' API certificates (what lab clients trust)."""
        return self.state_dir / "api-ca.pem"

    def api_cert_path(self, r: str) -> Path:
        return self.engine_dir(r) / "api.crt"

    def api_key_path(self, r: str) -> Path:
        return self.engine_dir(r) / "api.key"

    def router_statics(self, r: str) -> list[tuple[str, str, str]]:
        """The routers' own configuration: (prefix, gateway, device) static routes."""
        out: list[tuple[str, str, str]] = []
        if r == "a":
            b_gw = f"{self.inter_net}2"
            for h in self.receivers:
                if h.router == "a" and h.loop_net:
                    out.append((f"{h.loop_net}/64", h.addr, h.router_if))
                if h.router == "b":
                    out.append((f"{h.net}/64", b_gw, "ra-rb"))
                    if h.loop_net:
                        out.append((f"{h.loop_net}/64", b_gw, "ra-rb"))
            out.append((f"{self.spare_net}/64", b_gw, "ra-rb"))
        else:
            out.append(("::/0", f"{self.inter_net}1", "rb-ra"))
            for h in self.receivers:
                if h.router == "b" and h.loop_net:
                    out.append((f"{h.loop_net}/64", h.addr, h.router_if))
        return out

    def divert_ruleset(self, r: str) -> str:
        """nftables + policy routing that reproduce the router's XCAST divert."""
        engine_ifs = ", ".join(f'"{self.routers[r].engine_link(k, self.engine_index(e))[0]}"'
                               for e in self.router_engines(r)
                               for k in range(len(self.routers[r].interfaces)))
        return (
            f"table inet {self.divert_table_name} {{\n"
            "  counter failopen { }\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority mangle; policy accept;\n"
            f"    iifname != {{ {engine_ifs} }} ip6 dscp 23 ip6 nexthdr 41"
            f" counter meta mark set {DIVERT_MARK:#x}\n"
            "  }\n"
            # what the router forwards itself although it was to be diverted: no engine is up
            # and the divert failed open (counted, so the lab can see fail-open happen)
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f"    meta mark {DIVERT_MARK:#x} oifname != {{ {engine_ifs} }} counter name failopen\n"
            "  }\n"
            "}\n"
        )

    @property
    def divert_table_name(self) -> str:
        return f"{self.prefix.replace('-', '_')}divert"

    def engine_guard_ruleset(self) -> str:
        """In the engine ns: the kernel must not route/answer diverted packets (AF_PACKET has them)."""
        return (
            f"table inet {self.prefix.replace('-', '_')}engine {{\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            "    ip6 dscp 23 counter drop\n"
            "  }\n"
            "}\n"
        )
