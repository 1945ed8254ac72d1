"""SQLite state store: snapshot round trip, restart, corruption, history."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

import pytest

from engine.model import Interface, NextHop, Route, Snapshot, ip6
from sync.diff import index_routes
from sync.store import HistoryEntry, StoreError, SyncStore, pack_routes, unpack_routes


def sample_routes(n: int) -> list[Route]:
    hops = (NextHop("ge-0/0/1.0", ip6("fe80::1")),)
    out = [Route(ipaddress.IPv6Network((0x20010DB8 << 96 | i << 64, 64)), hops, "bgp", i % 7)
           for i in range(n)]
    out.append(Route(ipaddress.IPv6Network("::/0"), (NextHop("ge-0/0/2.0", ip6("2001:db8::1")),
                                                      NextHop("xe-1/0/0.100", ip6("fe80::2"))), "static", 5))
    out.append(Route(ipaddress.IPv6Network("2001:db8:ffff::/64"), (NextHop("ge-0/0/2.0"),), "direct", 0))
    out.append(Route(ipaddress.IPv6Network("2001:db8:fffe::1/128"), (NextHop("lo0.0"),), "local", 2**32 - 1))
    return out


def test_pack_round_trip_keeps_every_field() -> None:
    routes = sample_routes(100)
    back = unpack_routes(pack_routes(routes))
    assert index_routes(back) == index_routes(routes) and len(back) == len(routes)
    by_prefix = {r.prefix: r for r in back}
    assert [(by_prefix[x.prefix].protocol, by_prefix[x.prefix].metric) for x in routes] == \
        [(x.protocol, x.metric) for x in routes]


def test_restart_loads_last_good_snapshot(tmp_path: Path) -> None:
    snap = Snapshot(sample_routes(5000), [Interface("ge-0/0/1.0", 513, True, "uplink"),
                                          Interface("ge-0/0/2.0", 514, False)],
                    source="snmp://[2001:db8::1]", fetched_at=1700000000.5, duration_s=1.25)
    store = SyncStore(tmp_path / "xsa-state")
    store.save_snapshot(Snapshot(sample_routes(3), [], source="older"))
    store.save_snapshot(snap)
    store.close()
    again = SyncStore(tmp_path / "xsa-state")          # a "restart"
    loaded = again.load_snapshot()
    assert loaded is not None
    assert index_routes(loaded.routes) == index_routes(snap.routes)
    assert loaded.interfaces == snap.interfaces
    assert (loaded.source, loaded.fetched_at, loaded.duration_s) == (snap.source, snap.fetched_at, 1.25)
    assert loaded.digest() == snap.digest()
    info = again.snapshot_info()
    assert info is not None and info["route_count"] == len(snap.routes)
    # compact: well under 10 bytes per route for a table sharing next hops
    assert int(str(info["blob_bytes"])) < 10 * len(snap.routes)


def test_empty_store_and_corrupt_blob(tmp_path: Path) -> None:
    store = SyncStore(tmp_path)
    assert store.load_snapshot() is None
    store.save_snapshot(Snapshot(sample_routes(10), []))
    store.close()
    db = sqlite3.connect(tmp_path / "sync.sqlite3")
    db.execute("UPDATE snapshot SET routes = x'789c0300000001'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="corrupt"):
        SyncStore(tmp_path).load_snapshot()
    with pytest.raises(StoreError, match="magic"):
        unpack_routes(b"NOPE" + bytes(20))
    with pytest.raises(StoreError, match="corrupt"):
        unpack_routes(pack_routes(sample_routes(3))[:-5])


def test_history_newest_first(tmp_path: Path) -> None:
    store = SyncStore(tmp_path)
    store.add_history(HistoryEntry(1.0, 2.0, "snmp://r1", "poll", "applied", None, 1.0, 10, 0, 0, 10, 2,
                                   {"fib_mode": "replace"}))
    store.add_history(HistoryEntry(3.0, 3.5, "snmp://r1", "manual", "failed", "timeout from 2001:db8::1",
                                   0.5))
    hist = store.history()
    assert [h.outcome for h in hist] == ["failed", "applied"]
    assert hist[0].error == "timeout from 2001:db8::1"
    assert hist[1].detail == {"fib_mode": "replace"} and hist[1].added == 10 and hist[1].generation == 2


def test_gc_pause_is_reentrant_and_restores_state() -> None:
    import gc
    import threading

    from sync.gcpause import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        done = threading.Event()

        def other() -> None:
            with gc_paused():
                done.set()

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert done.is_set() and not gc.isenabled()     # the other thread's exit kept our pause
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()                        # was off before: stays off
    finally:
        gc.enable()
