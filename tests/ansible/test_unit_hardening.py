"""The rendered systemd unit's hardening beyond the exposure score (issue 15): no core dumps (the
environment holds secrets), no SecureBits=keep-caps (nothing changes uid), and memory/task limits
from the role's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[2] / "ansible" / "golden" / "example"
DEFAULTS = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "engine_host" / "defaults" / "main.yml"


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("engine", ["engine-mx1", "engine-xe1", "engine-xr1"])
def test_unit_limits_core_memory_and_tasks(engine: str) -> None:
    d = _directives((GOLDEN / engine / "xcast6-engine.service").read_text())
    assert d.get("LimitCORE") == ["0"]
    assert "SecureBits" not in d
    assert d.get("MemoryHigh") == ["1536M"] and d.get("MemoryMax") == ["2G"] and d.get("TasksMax") == ["256"]
    # engine_host_dataplane: auto (the default): the TC fast path's CAP_BPF/CAP_PERFMON, bpf()
    # and its pins; nothing more
    assert d["AmbientCapabilities"] == d["CapabilityBoundingSet"] == [
        "CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON"]
    assert "bpf" in d["SystemCallFilter"] and d["ReadWritePaths"] == ["-/sys/fs/bpf"]
    # SIGTERM to the daemon alone, so its drain's vtysh and its workers are not killed with it
    assert d["KillMode"] == ["mixed"]


def test_limits_are_role_variables() -> None:
    text = DEFAULTS.read_text()
    for key, value in (("memory_high", "1536M"), ("memory_max", "2G"), ("tasks_max", "256")):
        assert f"engine_host_{key}: {value}" in text


def test_engine_pair_bfdd_unit_is_bound_to_the_engine() -> None:
    """engine_host_ha (engine-mx1): bfdd is its own root-started unit, bound to the engine's (stops
    and restarts with it, ready before it), the engine attaches to it, and the engine's unit still
    grants none of bfdd's capabilities (CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN)."""
    bfdd = _directives((GOLDEN / "engine-mx1" / "xcast6-bfdd.service").read_text())
    engine_unit = _directives((GOLDEN / "engine-mx1" / "xcast6-engine.service").read_text())
    toml = (GOLDEN / "engine-mx1" / "engine.toml").read_text()
    assert bfdd["BindsTo"] == bfdd["PartOf"] == bfdd["Before"] == ["xcast6-engine.service"]
    assert bfdd["Type"] == ["notify"] and bfdd["Restart"] == ["always"] and "User" not in bfdd
    assert "--lifeline /run/xcast6-bfdd/lifeline.sock" in bfdd["ExecStart"][0]
    assert "-P 0" in bfdd["ExecStart"][0]            # no TCP vty: the sockets are the only way in
    # Wants=: a Requires= would restart the engine with every automatic restart of bfdd
    assert engine_unit["Wants"][1:] == engine_unit["After"][1:] == ["xcast6-bfdd.service"]
    assert "Requires" not in engine_unit
    assert "CAP_SYS_ADMIN" not in engine_unit["CapabilityBoundingSet"][0]
    assert 'bfdd_mode = "external"' in toml and 'bfd_dir = "/run/xcast6-bfdd"' in toml
    for engine in ("engine-xe1", "engine-xr1"):      # no engine pair there: no bfdd unit
        assert not (GOLDEN / engine / "xcast6-bfdd.service").exists()
        assert "xcast6-bfdd" not in (GOLDEN / engine / "xcast6-engine.service").read_text()
