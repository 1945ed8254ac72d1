"""The benchmark harness and the synthetic table produce what they claim (no timing asserted)."""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

from typer.testing import CliRunner

from api import main as cli
from bench import engine as bench
from engine.forwarding.fib import Fib
from engine.forwarding.fib_synth import LENGTH_MIX, internet_table


def test_synthetic_table_is_unique_deterministic_and_mostly_48() -> None:
    a = internet_table(20_000, seed=7)
    b = internet_table(20_000, seed=7)
    assert [r.prefix for r in a] == [r.prefix for r in b]
    assert len({r.prefix for r in a}) == 20_000
    lengths = [r.prefix.prefixlen for r in a]
    assert lengths.count(48) / len(lengths) > 0.45
    assert set(lengths) <= set(LENGTH_MIX)
    assert all(r.prefix.subnet_of(ipaddress.IPv6Network("2000::/3")) for r in a)
    # Next-hop tuples are shared objects, as interning expects from a good source.
    assert len({id(r.nexthops) for r in a}) == len({r.nexthops for r in a})


def test_pick_destinations_spreads_over_exactly_k_nexthops() -> None:
    routes = internet_table(5_000, seed=2)
    fib = Fib(routes)
    rng = random.Random(1)
    for n, k in ((2, 1), (8, 3), (32, 8), (126, 8), (2, 8)):
        dests, hops = bench.pick_destinations(fib, routes, n, k, rng)
        assert len(dests) == n == len(set(dests))
        used = {fib.lookup(d)[1] for d in dests}  # type: ignore[index]
        assert used == set(hops[: min(n, k)])


def test_bench_command_writes_json_and_plot(tmp_path: Path) -> None:
    cli._register()
    out = tmp_path / "res"
    result = CliRunner().invoke(
        cli.app,
        ["bench", "engine", "--routes", "3000", "--rounds", "1", "--packets", "2", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "engine.json").read_text())
    assert data["fib"]["routes"] == 3000
    assert {(r["n"], r["nexthops"]) for r in data["branch"]} == {
        (n, k) for n in bench.DEST_COUNTS for k in bench.NEXTHOP_COUNTS
    }
    for r in data["branch"]:
        assert r["copies_per_packet"] == min(r["n"], r["nexthops"])
        assert r["pps"] > 0 and r["copies_per_s"] >= r["pps"]
    assert set(data["codec"]["parse"]) == {str(n) for n in bench.DEST_COUNTS}
    assert "target" in data and data["target"]["case"] == "N=8 over 3 next hops"
    assert (out / "engine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Branching" in result.output
