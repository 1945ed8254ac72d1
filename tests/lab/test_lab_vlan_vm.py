"""The lab in ``vlan`` mode: router<->engine links are 802.1Q subinterfaces on one veth trunk
per router, as on a real deployment.  This host's kernel has no 802.1Q, so these tests carry
the ``vm`` marker and run inside the QEMU real-kernel harness (tests/vm)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lab import build, netns
from engine.lab.demo import deliveries, engine_counters, reset_logs, send_xcast
from engine.lab.topology import Topology
from tests.lab.test_lab_e2e import assert_exactly_once, payloads

pytestmark = [pytest.mark.vm, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def vlab() -> Iterator[Topology]:
    # the guest does not autoload modules: load what the lab uses up front
    for mod in ("8021q", "veth", "nfnetlink", "nf_tables", "nft_chain_nat"):
        subprocess.run(["modprobe", mod], check=False, capture_output=True)
    if not Path("/proc/net/vlan").exists():
        pytest.fail("this kernel has no 802.1Q (8021q): vlan-mode lab tests run in the QEMU harness "
                    "(tests/vm, XCAST6_IN_VM=1 inside the guest)")
    topo = Topology(prefix="xlv-", state_dir=Path(f"/tmp/xlv-lab-{os.getpid()}"), mode="vlan",
                    poll_interval=0.5, start_timeout=180)
    build.down(topo)
    build.up(topo)
    try:
        yield topo
    finally:
        build.down(topo)


def test_links_are_8021q_subinterfaces(vlab: Topology) -> None:
    info = netns.link_info(vlab.engine_ns("a"), "to-ra-h1")
    assert info["link"] == "trunk"
    details = netns.ip(vlab.engine_ns("a"), "-d", "-j", "link", "show", "dev", "to-ra-h1").stdout
    assert '"protocol":"802.1Q"' in details.replace(" ", "") and '"id":101' in details.replace(" ", "")


def _diagnostics(topo: Topology) -> str:
    """Engines' status, counters and log tails: what a failed delivery inside the guest needs."""
    out = []
    for r in ("a", "b"):
        st = build.read_status(topo, r)
        out.append(f"engine {r}: status {st}")
        out.append(f"engine {r}: counters {engine_counters(topo, r)}")
        log = topo.state_dir / f"engine-{r}.log"
        if log.exists():
            out.append(f"engine {r} log tail: " + " | ".join(log.read_text().splitlines()[-8:]))
    return "\n".join(out)


def test_exactly_once_all_receivers_vlan_mode(vlab: Topology) -> None:
    dests = [h.addr for h in vlab.receivers]
    sent = payloads("vlan", 2)
    reset_logs(vlab)
    send_xcast(vlab, dests, sent)
    got = deliveries(vlab, expect=len(dests) * len(sent), timeout=10)
    try:
        assert_exactly_once(vlab, got, dests, sent, kind="udp")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnostics(vlab)}") from None
    st = engine_counters(vlab, "a")
    assert st is not None and st["totals"]["copies_out"] >= len(sent)


def test_126_destinations_vlan_mode(vlab: Topology) -> None:
    dests = [a for h in vlab.receivers for a in h.loopbacks()][:126]
    sent = payloads("vlan126", 1)
    reset_logs(vlab)
    send_xcast(vlab, dests, sent)
    got = deliveries(vlab, expect=126, timeout=10)
    assert_exactly_once(vlab, got, dests, sent, kind="xcast")
