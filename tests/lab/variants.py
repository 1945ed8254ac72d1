"""The lab variants the end-to-end suite runs in, and the proof of which data path ran each test.

One rule, link mode x data path (``params``; conftest.py's ``lab_variant`` is parametrised with it):

* link mode ``direct`` (a veth per router interface) runs on the host; ``vlan`` (802.1Q
  subinterfaces on one trunk per router) only in the QEMU guest (tests/vm, marker ``vm``), the one
  kernel with 8021q here;
* data path ``auto``, the lab's default, is the TC eBPF program where it loads; ``python`` runs the
  Python workers alone (``[dataplane] mode = "python"``), the path ``auto`` falls back to.

A variant's test id is its link mode, plus ``-python`` for the Python data path: ``direct``,
``direct-python``, ``vlan``, ``vlan-python``.

Both data paths run the same tests with the same expectations, so a lab whose ``auto`` engines
fell back to the Python workers without a word, or whose ``python`` engines left a TC program
attached, would pass everything twice on one path.  So:

* when a lab is built, each daemon's ``/status`` must name the path the lab asked for
  (``workers.data_path``; a daemon settles it at start and keeps it: ``says``);
* after each test, for each engine (``check``), the counters must agree with it.  ``auto``/``bpf``:
  every XCAST6 frame the engine received went through the TC program first, which branched it
  (``kernel_received``) or punted it to the workers (``kernel_punted``, counted again by the
  workers' ``received``): Δreceived == Δkernel_received + Δkernel_punted (+ the routers' ICMPv6
  errors the workers relayed, held back or refused: not XCAST6, so the program passes them
  uncounted), which a fallback to the workers breaks at its first packet.  ``python``: the kernel
  path's counters did not move.  (The
  daemon reads them only when it runs the program; a program branching behind a python-mode
  daemon's back would show instead as workers that ``received``/``branched`` less than was sent,
  which the tests count.)
"""

from __future__ import annotations

import os
import time

import pytest
from _pytest.mark import ParameterSet

from lab import engine_api
from lab.demo import engine_counters
from lab.topology import Topology

LINK_MODES = ("direct", "vlan")
DATA_PATHS = ("auto", "python")
IN_VM = os.environ.get("XCAST6_IN_VM") == "1"
# The kernel path's per-CPU counters reach the counter file every 0.1 s; the guest is emulated.
SETTLE_S = 12.0 if IN_VM else 2.0
# How each [dataplane] mode's daemon words its data path (engine/dataplane/kernel_path.py start)
SAYS = {
    "auto": "data path: TC eBPF on ",
    "bpf": "data path: TC eBPF on ",
    "python": 'data path: Python workers ([dataplane] mode = "python")',
}
KEYS = ("received", "kernel_received", "kernel_punted", "relay")
# A router's ICMPv6 error about an engine's copy is not XCAST6: the TC program passes it uncounted
# and the workers read it (``received``) and relay, hold back or refuse it (issue 18).
RELAY_PREFIXES = ("icmp_relayed.", "icmp_relay_suppressed.", "icmp_relay_refused")
Snapshot = dict[str, dict[str, int]]


def variant_id(mode: str, dataplane: str) -> str:
    """A variant's test id: the link mode, plus ``-<data path>`` unless it is the default (auto)."""
    return mode if dataplane == "auto" else f"{mode}-{dataplane}"


def params(mode: str | None = None) -> list[ParameterSet]:
    """Every variant as a pytest param ((link mode, data path), its id, ``vm`` for vlan), or only
    those of link mode ``mode``."""
    return [pytest.param((m, dp), id=variant_id(m, dp), marks=[pytest.mark.vm] if m == "vlan" else [])
            for m in LINK_MODES for dp in DATA_PATHS if mode in (None, m)]


def snapshot(topo: Topology) -> Snapshot:
    """The counters the check compares, per engine."""
    out: Snapshot = {}
    for r in topo.engines:
        st = engine_counters(topo, r)
        assert st is not None, f"engine {r} has no counter file"
        totals = st["totals"]
        out[r] = {k: int(totals.get(k, 0)) for k in KEYS if k != "relay"}
        out[r]["relay"] = sum(int(v) for k, v in totals.items() if k.startswith(RELAY_PREFIXES))
    return out


def quiet_snapshot(topo: Topology) -> Snapshot:
    """``snapshot`` once the counters stopped moving (two readings 0.2 s apart agree, at most
    ``SETTLE_S``): the kernel path's per-CPU counters reach the counter file every 0.1 s, after
    the workers' own, so a reading taken right after the previous test could hold a worker's
    ``received`` whose ``kernel_punted`` is still on its way and charge it to this test."""
    deadline = time.monotonic() + SETTLE_S
    last = snapshot(topo)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = snapshot(topo)
        if now == last:
            break
        last = now
    return last


def _moved(before: Snapshot, after: Snapshot) -> dict[str, dict[str, int]]:
    return {r: {k: after[r][k] - before[r][k] for k in KEYS} for r in after}


def violations(dataplane: str, moved: dict[str, dict[str, int]]) -> list[str]:
    """What in the counters' movement contradicts ``dataplane`` (empty: consistent)."""
    out = []
    for r, d in moved.items():
        if dataplane == "python":
            if d["kernel_received"] or d["kernel_punted"]:
                out.append(f"engine {r}: the TC program saw packets in python mode: {d}")
        elif d["received"] != d["kernel_received"] + d["kernel_punted"] + d["relay"]:
            out.append(f"engine {r}: {d['received']} received but the TC program branched "
                       f"{d['kernel_received']} and punted {d['kernel_punted']} (and {d['relay']} "
                       f"routers' errors were relayed): some bypassed it")
    return out


def says(topo: Topology) -> None:
    """Assert that every daemon's ``/status`` names the data path ``topo.dataplane`` asks for."""
    want = SAYS[topo.dataplane]
    for r in topo.engines:
        said = str(engine_api.get_json(topo, r, "/status")["workers"].get("data_path", ""))
        assert said.startswith(want), f"engine {r} ({topo.dataplane}) says {said!r}, not {want!r}..."


def check(topo: Topology, before: Snapshot) -> None:
    """Assert that the engines' counters since ``before`` agree with ``topo.dataplane`` (module doc)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        wrong = violations(topo.dataplane, _moved(before, snapshot(topo)))
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not wrong, f"[dataplane] mode = {topo.dataplane!r}: " + "; ".join(wrong)
