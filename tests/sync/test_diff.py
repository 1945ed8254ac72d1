"""Snapshot diff: added/removed/changed routes and interface changes."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Interface, NextHop, Route, Snapshot, ip6
from sync.diff import diff, diff_routes, index_routes, prefix_key


def r(prefix: str, *hops: tuple[str, str | None], proto: str = "bgp", metric: int = 0) -> Route:
    return Route(ipaddress.IPv6Network(prefix),
                 tuple(NextHop(i, ip6(g) if g else None) for i, g in hops), proto, metric)


def test_added_removed_changed_and_counts() -> None:
    old = Snapshot([r("2001:db8:1::/48", ("ge-0/0/1.0", "fe80::1")),
                    r("2001:db8:2::/48", ("ge-0/0/1.0", "fe80::1")),
                    r("2001:db8:3::/48", ("ge-0/0/2.0", None), proto="direct")],
                   [Interface("ge-0/0/1.0", 1), Interface("ge-0/0/2.0", 2)])
    new = Snapshot([r("2001:db8:1::/48", ("ge-0/0/1.0", "fe80::1")),
                    r("2001:db8:2::/48", ("ge-0/0/2.0", "fe80::2")),
                    r("2001:db8:4::/48", ("ge-0/0/2.0", "fe80::2"))],
                   [Interface("ge-0/0/1.0", 1, oper_up=False), Interface("ge-0/0/3.0", 3)])
    d = diff(old, new)
    assert [str(x.prefix) for x in d.added] == ["2001:db8:4::/48"]
    assert [str(x.prefix) for x in d.removed] == ["2001:db8:3::/48"]
    assert [(str(c.old.nexthops[0].ifname), c.new.nexthops[0].ifname) for c in d.changed] == \
        [("ge-0/0/1.0", "ge-0/0/2.0")]
    assert d.counts() == {"added": 1, "removed": 1, "changed": 1, "old_count": 3, "new_count": 3,
                          "interfaces_added": 1, "interfaces_removed": 1, "interfaces_oper_changed": 1}
    assert [i.name for i in d.interfaces.added] == ["ge-0/0/3.0"]
    assert [i.name for i in d.interfaces.removed] == ["ge-0/0/2.0"]
    assert [(o.oper_up, n.oper_up) for o, n in d.interfaces.oper_changed] == [(True, False)]
    assert abs(d.removed_share - 1 / 3) < 1e-9
    assert not d.empty


def test_ecmp_order_metric_and_protocol() -> None:
    a = r("2001:db8::/32", ("ge-0/0/1.0", "fe80::1"), ("ge-0/0/2.0", "fe80::2"))
    b = r("2001:db8::/32", ("ge-0/0/2.0", "fe80::2"), ("ge-0/0/1.0", "fe80::1"))
    assert diff_routes([a], [b])[:3] == ([], [], [])          # same set of next hops, other order
    c = r("2001:db8::/32", ("ge-0/0/1.0", "fe80::1"))          # one ECMP member gone
    assert len(diff_routes([a], [c])[2]) == 1
    assert len(diff_routes([c], [r("2001:db8::/32", ("ge-0/0/1.0", "fe80::1"), metric=5)])[2]) == 1
    assert len(diff_routes([c], [r("2001:db8::/32", ("ge-0/0/1.0", "fe80::1"), proto="ospf")])[2]) == 1


def test_route_drift_counts() -> None:
    """The per-prefix drift /routes/diff shows (moved from api/state.py's own diff)."""
    from sync.verify import route_drift

    a, b = NextHop("a"), NextHop("b")
    old = [Route(ipaddress.IPv6Network(f"2001:db8:{i}::/48"), (a,)) for i in range(5)]
    new = [*old[1:4], Route(old[4].prefix, (b,)), Route(ipaddress.IPv6Network("2001:db8:99::/48"), (a,))]
    d = route_drift(old, new)
    assert d.counts() == {"added": 1, "removed": 1, "changed": 1}
    assert d.changed[0].old.nexthops == (a,) and d.changed[0].new.nexthops == (b,)
    assert route_drift(new, new).empty


def test_first_sync_and_identical() -> None:
    snap = Snapshot([r("::/0", ("ge-0/0/1.0", "fe80::1"))], [Interface("ge-0/0/1.0")])
    d = diff(None, snap)
    assert (len(d.added), d.old_count, d.removed_share) == (1, 0, 0.0)
    assert diff(snap, Snapshot(list(snap.routes), list(snap.interfaces))).empty


_prefixes = st.integers(0, 63).map(lambda i: f"2001:db8:{i:x}::/48")
_route = st.builds(lambda p, i, g: r(p, (f"ge-0/0/{i}.0", f"fe80::{g}")), _prefixes, st.integers(0, 2),
                   st.integers(1, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_route), st.lists(_route))
def test_diff_replayed_on_old_gives_new(old: list[Route], new: list[Route]) -> None:
    added, removed, changed, _, _ = diff_routes(old, new)
    table = index_routes(old)
    for x in removed:
        del table[prefix_key(x.prefix)]
    for x in added:
        assert prefix_key(x.prefix) not in table
        table[prefix_key(x.prefix)] = x
    for c in changed:
        table[prefix_key(c.new.prefix)] = c.new
    assert table == index_routes(new)
