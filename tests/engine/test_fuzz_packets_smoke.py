"""CI smoke of the packet fuzz campaign (bench/fuzz_packets.py; the full run is >= 10^6 inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fuzz_packets


def test_fuzz_smoke_20000_inputs_no_crash_no_mismatch() -> None:
    result = fuzz_packets.run(20_000, seed=15, progress_every=10_000, out=lambda _line: None)
    assert result["crash_count"] == 0, result["crash_classes"]
    assert result["mismatch_count"] == 0, result["mismatch_classes"]
    assert set(result["input_kinds"]) >= {"random", "random_l2", "mutation", "truncation", "framed",
                                          "session", "session_length", "valid", "corrupt_bitmap", "corrupt_n"}
    # the campaign reaches many rejection paths, parses many packets, and checks many cache hits
    assert len(result["parse_outcomes"]) >= 15 and result["parse_outcomes"]["parsed"] > 2_000
    assert result["flow_cache"]["hits_checked"] > 1_000
    # the ICMPv6 relay (routers' errors quoting the inputs): many relayed and checked, every refusal seen
    relay = result["relay_outcomes"]
    assert relay["relayed"] > 2_000, relay
    assert {"the quoted packet is not XCAST6", "the quoted packet is not a copy this engine sent",
            "the packet is an ICMPv6 error"} <= set(relay)
    assert result["rss_kib"]["end"] - result["rss_kib"]["start"] < 64 * 1024


def test_the_harness_reports_a_crash_class_with_a_reproducer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = fuzz_packets.parse

    def broken(buf: bytes, *, l2: bool = False) -> object:
        if len(buf) % 7 == 3:
            raise KeyError("injected")
        return real(buf, l2=l2)

    monkeypatch.setattr(fuzz_packets, "parse", broken)
    out = tmp_path / "fuzz.json"
    assert fuzz_packets.main(["--inputs", "2000", "--progress", "1000", "--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    classes = {(c["target"], c["exc_type"]) for c in doc["crash_classes"]}
    assert ("parse", "KeyError") in classes
    crash = next(c for c in doc["crash_classes"] if c["target"] == "parse")
    assert len(bytes.fromhex(crash["reproducer_hex"])) % 7 == 3
    assert "test_fuzz_packets_smoke" in crash["where"]


def test_the_harness_reports_a_template_that_renders_differently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = fuzz_packets.write_frames

    def corrupt(tpl: object, packet: bytes, arena: bytearray, put: object) -> bool:
        ok = real(tpl, packet, arena, put)      # type: ignore[arg-type]
        if ok and len(packet) % 3 == 0:
            arena[30] ^= 0xFF                   # inside the first frame's IPv6 header
        return ok

    monkeypatch.setattr(fuzz_packets, "write_frames", corrupt)
    out = tmp_path / "fuzz.json"
    assert fuzz_packets.main(["--inputs", "4000", "--progress", "2000", "--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["crash_count"] == 0
    m = doc["mismatch_classes"][0]
    assert m["target"] == "flowcache" and "write_frames" in m["message"] and m["extra_hex"]
