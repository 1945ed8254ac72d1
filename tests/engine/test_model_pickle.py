"""Routes cross process boundaries (sync diffs are pickled to the packet workers)."""

from __future__ import annotations

import ipaddress
import multiprocessing
import pickle

from engine.model import NO_EXTRA, NextHop, Route, ip6


def test_route_with_default_extra_pickles_and_keeps_the_shared_empty_mapping() -> None:
    r = Route(ipaddress.IPv6Network("2001:db8:1::/48"), (NextHop("ge-0/0/1", ip6("fe80::1")),), "bgp", 20)
    back = pickle.loads(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == r and back.protocol == "bgp" and back.metric == 20
    assert back.extra is NO_EXTRA


def test_route_extra_survives_pickling() -> None:
    r = Route(ipaddress.IPv6Network("2001:db8:2::/48"), (NextHop("ge-0/0/2"),), extra={"tag": "7"})
    back = pickle.loads(pickle.dumps(r))
    assert back == r and dict(back.extra) == {"tag": "7"}


def test_route_diff_goes_through_a_pipe() -> None:
    """What WorkerPool._broadcast does with a sync diff."""
    a, b = multiprocessing.Pipe()
    routes = [Route(ipaddress.IPv6Network(f"2001:db8:{i:x}::/48"), (NextHop("ge-0/0/1"),)) for i in range(3)]
    a.send(("diff", routes, [ipaddress.IPv6Network("2001:db8:ff::/48")]))
    kind, adds, removes = b.recv()
    assert kind == "diff" and adds == routes and removes == [ipaddress.IPv6Network("2001:db8:ff::/48")]
    a.close()
    b.close()
