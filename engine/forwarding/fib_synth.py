"""Synthetic but realistic IPv6 Internet route tables for benchmarks and scale tests.

The prefix-length mix follows the public IPv6 DFZ (about half /48, then /32, /44, /40, /36,
/29, a tail of /33-/47, a few /64 and /128) and more-specifics are nested inside shorter
allocations the way real tables are, so longest-prefix match has to walk past covering
routes.  Everything is deterministic for a given seed.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

from engine.model import NextHop, Route

# Share of the table per prefix length (normalised below).  Rounded from public DFZ
# statistics; the exact numbers matter less than "mostly /48, nested in /29-/32".
LENGTH_MIX: dict[int, float] = {
    16: 0.0001, 19: 0.0002, 20: 0.0005, 22: 0.0005, 24: 0.001, 26: 0.001, 28: 0.004,
    29: 0.030, 30: 0.004, 31: 0.003, 32: 0.130, 33: 0.008, 34: 0.008, 35: 0.005,
    36: 0.035, 37: 0.004, 38: 0.008, 39: 0.004, 40: 0.060, 41: 0.004, 42: 0.012,
    43: 0.004, 44: 0.070, 45: 0.008, 46: 0.018, 47: 0.016, 48: 0.500, 56: 0.003,
    60: 0.001, 64: 0.004, 127: 0.0003, 128: 0.0010,
}

# Where the RIRs hand out address space (the top 12-16 bits of real prefixes).
_RIR_BLOCKS = [
    ipaddress.IPv6Network(p)
    for p in ("2001::/16", "2400::/12", "2600::/12", "2800::/12", "2a00::/12", "2c00::/12", "2a10::/15")
]


def router_nexthops(count: int) -> list[NextHop]:
    """``count`` distinct next hops: gateway ``2001:db8:ffff:<i>::1`` on ``ge-0/0/<i>.0``."""
    return [
        NextHop(ifname=f"ge-0/0/{i}.0", gateway=ipaddress.IPv6Address(f"2001:db8:ffff:{i:x}::1").packed)
        for i in range(count)
    ]


def _random_inside(rng: random.Random, parent: ipaddress.IPv6Network, length: int) -> ipaddress.IPv6Network:
    free_bits = length - parent.prefixlen
    sub = rng.getrandbits(free_bits) if free_bits > 0 else 0
    net = int(parent.network_address) | (sub << (128 - length))
    return ipaddress.IPv6Network((net, length))


def internet_table(
    count: int = 250_000,
    *,
    seed: int = 1,
    nexthops: Sequence[NextHop] | None = None,
    ecmp_share: float = 0.05,
    nested_share: float = 0.6,
) -> list[Route]:
    """A deterministic Internet-like IPv6 table of exactly ``count`` unique prefixes.

    Each route gets one of ``nexthops`` (default: 8 from :func:`router_nexthops`), or, for
    ``ecmp_share`` of them, an ECMP group of 2-4 members.  Routes are grouped by next-hop
    tuple so equal tuples are the same object (as a well-behaved source produces them).
    ``nested_share`` of the prefixes longer than /32 sit inside a shorter generated prefix.
    """
    rng = random.Random(seed)
    hops = list(nexthops) if nexthops is not None else router_nexthops(8)
    single = [(h,) for h in hops]
    multi: list[tuple[NextHop, ...]] = []
    if len(hops) > 1:
        for k in range(16):
            size = 2 + k % min(3, len(hops) - 1)
            start = k % len(hops)
            multi.append(tuple(hops[(start + j) % len(hops)] for j in range(size)))
    total = sum(LENGTH_MIX.values())
    lengths = sorted(LENGTH_MIX)
    wanted = {n: int(count * LENGTH_MIX[n] / total) for n in lengths}
    wanted[48] += count - sum(wanted.values())

    seen: set[ipaddress.IPv6Network] = set()
    parents: list[ipaddress.IPv6Network] = []
    routes: list[Route] = []
    for length in lengths:  # shortest first, so longer ones can nest inside
        made = 0
        while made < wanted[length]:
            if length > 32 and parents and rng.random() < nested_share:
                parent = parents[rng.randrange(len(parents))]
                if parent.prefixlen >= length:
                    continue
            else:
                parent = _RIR_BLOCKS[rng.randrange(len(_RIR_BLOCKS))]
                if parent.prefixlen >= length:
                    parent = ipaddress.IPv6Network("2000::/3")
            prefix = _random_inside(rng, parent, length)
            if prefix in seen:
                continue
            seen.add(prefix)
            made += 1
            if length <= 32:
                parents.append(prefix)
            group = multi[rng.randrange(len(multi))] if multi and rng.random() < ecmp_share else single[
                rng.randrange(len(single))
            ]
            routes.append(Route(prefix, group, protocol="bgp"))
    rng.shuffle(routes)
    return routes


def address_in(prefix: ipaddress.IPv6Network, rng: random.Random) -> bytes:
    """A random address inside ``prefix`` as 16 packed bytes."""
    host_bits = 128 - prefix.prefixlen
    host = rng.getrandbits(host_bits) if host_bits else 0
    return (int(prefix.network_address) | host).to_bytes(16, "big")
