"""`send` puts a real XCAST6 packet on a veth in a namespace; tshark captures it; we decode it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.tools.pcapread import read_capture, to_ipv6_or_l2
from engine.wire.codec import XcastPacket, parse
from lab import netns as lab_netns
from lab.procs import stop_process

pytestmark = [pytest.mark.root, pytest.mark.netns]

PY = sys.executable
XCAST_TC_FILTER = "ip6 and ip6[0] & 0x0f == 5 and ip6[1] & 0xc0 == 0xc0"   # outer TC 010111xx
ROOT = Path(__file__).resolve().parents[2]


def sh(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` (its exit status is the caller's to check)."""
    return subprocess.run(["ip", "netns", "exec", ns, *args], check=check, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """Namespace with veth xcs0 (sender side, 2001:db8:5::1) <-> xcs1 (capture side)."""
    if shutil.which("tshark") is None:
        pytest.fail("tshark is not installed (apt-get install tshark)")
    with lab_netns.temporary("xcore-send") as (ns,):
        lab_netns.veth(ns, "xcs0", ns, "xcs1")
        lab_netns.addr(ns, "xcs0", "2001:db8:5::1/64")
        lab_netns.ip(ns, "-6", "route", "add", "2001:db8:77::/48", "via", "2001:db8:5::2", "dev", "xcs0")
        lab_netns.ip(ns, "-6", "neigh", "add", "2001:db8:5::2", "lladdr", "02:00:00:00:00:02", "dev", "xcs0")
        yield ns


def capture_while(ns: str, run: list[str], count: int) -> list[bytes]:
    """Start tshark on xcs1, run the sender, return the captured frames (Ethernet)."""
    tmp = Path(tempfile.mkdtemp(prefix="xcore-"))
    try:
        cap = tmp / "cap.pcapng"
        log = open(tmp / "tshark.log", "w")   # noqa: SIM115 - closed below
        ts = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tshark", "-i", "xcs1", "-f", XCAST_TC_FILTER,
             "-c", str(count), "-a", "duration:30", "-w", str(cap)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while "Capture started" not in (tmp / "tshark.log").read_text():
                assert time.monotonic() < deadline, (tmp / "tshark.log").read_text()
                assert ts.poll() is None, (tmp / "tshark.log").read_text()
                time.sleep(0.1)
            res = sh(ns, *run)
            assert res.returncode == 0, res.stderr
            ts.wait(timeout=40)
        finally:
            stop_process(ts, grace=10)
            log.close()
        frames = [to_ipv6_or_l2(lt, fr)[0] for _, lt, fr in read_capture(cap.read_bytes())]
        # independent dissection by tshark itself
        fields = subprocess.run(
            ["tshark", "-r", str(cap), "-T", "fields",
             "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ipv6.tclass"],
            capture_output=True, text=True, timeout=60,
        ).stdout
        frames_text = fields.strip().splitlines()
        assert len(frames_text) == len(frames)
        capture_while.last_fields = frames_text  # type: ignore[attr-defined]
        return frames
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_send_puts_xcast6_on_the_wire(netns: str) -> None:
    frames = capture_while(
        netns,
        [PY, "-m", "api.main", "send", "--port", "7000", "--sport", "6000", "--hop-limit", "9",
         "--payload", "hello wire", "--count", "3", "--rate", "50",
         "{2001:db8:77::1,2001:db8:77::2}", "2001:db8:77::3"],
        count=3,
    )
    assert len(frames) == 3
    for fr in frames:
        p = parse(fr, l2=True)
        assert isinstance(p, XcastPacket), p
        assert p.src == bytes.fromhex("20010db8000500000000000000000001")     # kernel-chosen source
        assert p.hop_limit == 9 and p.n == 3 and p.bitmap == 0b111
        assert p.udp_ports == (6000, 7000) and p.payload == b"hello wire"
    # tshark sees outer src/dst and the XCAST traffic class (0x5c) for the outer header
    src, dst, tclass = capture_while.last_fields[0].split("\t")  # type: ignore[attr-defined]
    assert src.split(",")[0] == "2001:db8:5::1"
    assert dst.split(",")[0] == "2001:db8:77::1" and dst.split(",")[1] == "ff0e::114"
    assert int(tclass.split(",")[0], 16) == 0x5C


def test_send_xou_on_the_wire(netns: str) -> None:
    frames = capture_while(netns, [PY, "-m", "api.main", "send", "--xou", "-i", "xcs0", "--port", "7001",
                            "--payload", "xou",
                            "2001:db8:77::5,2001:db8:77::6"], count=1)
    p = parse(frames[0], l2=True)
    assert isinstance(p, XcastPacket) and p.encoding == "xou" and p.payload == b"xou"


def test_send_unreachable_is_one_line(netns: str) -> None:
    res = sh(netns, PY, "-m", "api.main", "send", "2001:db8:99::1", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("xcast6-engine: ") and "2001:db8:99::1" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_decode_cli_reads_the_capture(netns: str, tmp_path: Path) -> None:
    frames = capture_while(netns, [PY, "-m", "api.main", "send", "--port", "1", "2001:db8:77::9"], count=1)
    raw = tmp_path / "frame.bin"
    raw.write_bytes(frames[0])
    out = subprocess.run([PY, "-m", "api.main", "decode", "--json", str(raw)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["valid"] and doc["packet"]["destinations"][0]["address"] == "2001:db8:77::9"


def test_send_bad_interface_is_one_line(netns: str) -> None:
    res = sh(netns, PY, "-m", "api.main", "send", "-i", "xcore-nope0", "2001:db8:77::1", check=False)
    assert res.returncode == 1 and "interface xcore-nope0" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
