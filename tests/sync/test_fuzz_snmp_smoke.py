"""CI smoke of the SNMP reply fuzz campaign (bench/fuzz_snmp.py; the full run is >= 10^6 inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fuzz_snmp
from sync import snmp_ber


def test_fuzz_smoke_20000_inputs_no_crash_flat_memory() -> None:
    result = fuzz_snmp.run(20_000, seed=15, progress_every=10_000, out=lambda _line: None)
    assert result["crash_count"] == 0, result["crash_classes"]
    # every input kind ran, and the walkers' requests were completed by valid replies
    assert set(result["input_kinds"]) >= {"random", "mutation", "truncation", "length_corruption",
                                          "huge_oid", "keyholder_pdu", "keyholder_envelope", "valid"}
    assert result["outcomes"]["decode_v3(keys)"].get("ok", 0) > 0
    assert result["rss_kib"]["end"] - result["rss_kib"]["start"] < 32 * 1024


def test_the_harness_reports_a_crash_class_with_a_reproducer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = snmp_ber.decode_response

    def broken(buf: bytes) -> object:
        if len(buf) % 7 == 3:
            raise KeyError("injected")
        return real(buf)

    monkeypatch.setattr(snmp_ber, "decode_response", broken)
    out = tmp_path / "fuzz.json"
    assert fuzz_snmp.main(["--inputs", "2000", "--progress", "1000", "--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    classes = {(c["target"], c["exc_type"]) for c in doc["crash_classes"]}
    assert ("decode_response", "KeyError") in classes and ("v2c._on_datagram", "KeyError") in classes
    crash = next(c for c in doc["crash_classes"] if c["target"] == "decode_response")
    assert len(bytes.fromhex(crash["reproducer_hex"])) % 7 == 3
    assert "test_fuzz_snmp_smoke.py" in crash["where"]
