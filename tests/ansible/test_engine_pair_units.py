"""Engine pairs under systemd: the engine_host role with engine_host_ha: true, booted for real.

FRR 8.4's bfdd needs CAP_NET_BIND_SERVICE, CAP_NET_RAW and CAP_SYS_ADMIN, which the engine's
hardened unit does not grant, so the role ships xcast6-bfdd.service (root-started, bfdd drops to
frr; bound to the engine's unit) and the engine attaches to it ([ha] bfdd_mode = "external").

A Debian root with the role applied (lab inventory, engine ea, engine_host_ha: true) boots
systemd in systemd-nspawn inside engine A's namespace of the lab built with two engines per router,
so router A's FRR bfdd is the session's real peer and lab.bfdroute diverts to the engine only while
that session is up.  Shown: both units active, the engine's /status ``ha`` with bfdd attached and
the session up, router A diverting to it, XCAST6 delivered exactly once; bfdd killed under the
running engine (the engine stays, marks the session down, re-attaches to the bfdd systemd
restarts); the engine killed -9 (its bfdd dies with it: the router withdraws the engine within the
detection time); ``systemctl stop xcast6-engine`` stops bfdd too.  Also the man page and shell
completion the role installs (issue 19).

Then ansible/upgrade.yml runs for real against the booted container (community.docker.nsenter into
its init's namespaces: the play's systemctl must reach the container's systemd and its /readyz probe
the engine's namespace; a chroot connection would reach neither, and machinectl cannot see a
container booted with --register=no).  Pinned versions are local-label builds of this checkout in
the wheelhouse: first one that never becomes ready (/readyz 503, BFD admin down), which the gate
refuses and the play rolls back to the running version, reporting the host failed; then a good one,
which drains, installs, restarts, passes the gate and runs.  XCAST6 exactly once before and after each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_engine_host_apply import (  # noqa: F401  (wheelhouse: a fixture)
    ANSIBLE_DIR,
    BIN,
    REPO,
    _base_tarball,
    _container_pid1,
    _lab_inventory,
    _sh,
    wheelhouse,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]
TOKEN = "lab-token-not-secret-0123456789ab"
ENGINE_ADDR = "2001:db8:ea0::2"          # engine ea on its divert link (lab inventory, lab topology)


def _systemd_root(tmp: Path) -> Path:
    root = tmp / "root"
    root.mkdir()
    assert _sh("tar", "-C", str(root), "-xf", str(_base_tarball())).returncode == 0
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    res = _sh("chroot", str(root), "sh", "-c",
              "apt-get update -qq && "
              "apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus",
              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root


def _wait(what: str, pred: Callable[[], bool], timeout: float, why: Callable[[], str] = lambda: "") -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{why()}")
        time.sleep(0.05)
    return time.monotonic() - t0


def _prepare(tmp: Path, wheels: tuple[Path, Path]) -> Path:
    """A Debian root with systemd and the role applied (lab inventory, engine ea, engine pair)."""
    if shutil.which("systemd-nspawn") is None:
        res = _sh("apt-get", "install", "-y", "-qq", "systemd-container",
                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        assert res.returncode == 0, res.stderr
    root = _systemd_root(tmp)
    inventory = _lab_inventory(tmp, root, wheels)
    ea = inventory.parent / "host_vars" / "ea.yml"
    ea.write_text(ea.read_text() + "engine_host_ha: true\nengine_host_ha_hold_down: 1.0\n")
    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "engine.yml", "--limit", "ea"],
        cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-3000:]
    return root


def _engine_wheel(tmp: Path, version: str, never_ready: bool = False) -> Path:
    """This checkout's wheel under another version (a local label, e.g. 0.1.0+up1); never_ready: a
    build whose readiness never holds (/readyz 503, BFD admin down), the upgrade gate's failure."""
    from engine import __version__

    src = tmp / f"src-{version}"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache", ".hypothesis", "results"))
    for path, line in (("pyproject.toml", 'version = "{}"'), ("engine/__init__.py", '__version__ = "{}"')):
        text = (src / path).read_text()
        assert text.count(line.format(__version__)) == 1, path
        (src / path).write_text(text.replace(line.format(__version__), line.format(version)))
    if never_ready:
        state = src / "api/state.py"
        ready = "        return (not why, why)\n"
        assert state.read_text().count(ready) == 1
        state.write_text(state.read_text().replace(
            ready, '        why.append("this build never becomes ready (upgrade gate test)")\n' + ready))
    res = _sh(str(BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(src),
              timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.rmtree(src)
    (whl,) = tmp.glob(f"xcast6_engine-{version}-*.whl")
    return whl


def _upgrade(tmp: Path, root: Path, wheels: tuple[Path, Path], pid1: int,
             version: str, second: bool = False) -> subprocess.CompletedProcess[str]:
    """ansible/upgrade.yml for engine ea pinned to version, into the booted container (nsenter).
    second: engine eb is in the play too, after ea (serial: 1), behind a connection that cannot
    reach anything (a chroot that does not exist): if the play ever got to it, the recap would
    name it unreachable; nothing on this machine is touched either way."""
    inv = tmp / "lab-inventory"
    if not inv.exists():
        _lab_inventory(tmp, root, wheels)
    eb = inv / "host_vars" / "eb.yml"
    eb_vars = ["ansible_connection: community.general.chroot", f"ansible_host: {tmp / 'no-such-root'}"]
    eb_lines = [line for line in eb.read_text().splitlines() if line not in eb_vars]
    eb.write_text("\n".join([*eb_lines, *eb_vars, ""]))
    ea = inv / "host_vars" / "ea.yml"
    drop = ("ansible_connection:", "ansible_host:", "ansible_nsenter_pid:", "engine_host_runtime:",
            "engine_host_package", "engine_host_wheelhouse:", "engine_host_ha", "engine_host_ready_retries:")
    lines = [line for line in ea.read_text().splitlines() if not line.startswith(drop)]
    ea.write_text("\n".join([
        *lines,
        "ansible_connection: community.docker.nsenter",
        f"ansible_nsenter_pid: {pid1}",
        f"engine_host_wheelhouse: {wheels[0]}",     # with the builds the pins below name
        "engine_host_ha: true",
        "engine_host_ha_hold_down: 1.0",
        "engine_host_ready_retries: 10",        # x 2 s: a build that never gets ready fails sooner
        "engine_host_package_src: ''",
        f"engine_host_package: xcast6-engine=={version}",      # the pin, as an operator writes it
        "",
    ]))
    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv / "hosts.yml"), "upgrade.yml",
         "--limit", "ea,eb" if second else "ea",
         "-e", "upgrade_gate_retries=15"],
        cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    (tmp / f"upgrade-{version}.log").write_text(play.stdout + play.stderr)     # kept with the test's tmp
    return play


def _recap(out: str, host: str) -> dict[str, int]:
    m = re.search(rf"^{host}\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


# the boot, the role and two real upgrade.yml runs (~2.5 min of it) exceed the suite's 600 s
@pytest.mark.timeout(1500)
def test_engine_pair_units_bfdd_lives_and_dies_with_the_engine(
    wheelhouse: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> None:
    import httpx

    from lab import build, demo, netns
    from lab.topology import API_PORT, Topology

    # XCAST6_PAIR_ROOT: a root an earlier _prepare() left (to iterate on the boot part alone)
    kept = os.environ.get("XCAST6_PAIR_ROOT")
    tmp = tmp_path_factory.mktemp("xans-pair")
    root = Path(kept) if kept else _prepare(tmp, wheelhouse)
    toml = (root / "etc/xcast6-engine/engine.toml").read_text()
    assert 'bfdd_mode = "external"' in toml and 'bfd_dir = "/run/xcast6-bfdd"' in toml, toml
    assert (root / "etc/systemd/system/xcast6-bfdd.service").exists()

    prefix = f"xpu{os.getpid() % 10000}-"
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5,
                    engines_per_router=2)
    build.down(topo)
    build.up(topo)
    nspawn = None
    pid1 = 0
    try:
        build.stop_engine(topo, "a")       # the systemd-run engine takes engine A's place
        _wait("router A withdraws the lab's engine A",
              lambda: ENGINE_ADDR not in build.router_divert_live(topo, "a"), 10)
        with (tmp / "console.log").open("w") as out:
            nspawn = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit",
                 "--capability=CAP_NET_ADMIN",
                 f"--network-namespace-path=/run/netns/{topo.engine_ns('a')}", "--console=passive", "-b"],
                stdout=out, stderr=subprocess.STDOUT)
        pid1 = _container_pid1(nspawn.pid)

        def inside(*cmd: str) -> subprocess.CompletedProcess[str]:
            return _sh("nsenter", "-t", str(pid1), "-m", "-u", "-i", "-p", "-n", *cmd, timeout=60)

        def journal(unit: str) -> str:
            return inside("journalctl", "-b", "-u", unit, "--no-pager", "-o", "cat").stdout

        def prop(unit: str, name: str) -> str:
            return inside("systemctl", "show", unit, "-p", name, "--value").stdout.strip()

        def status() -> dict[str, Any]:
            try:
                with netns.in_netns(topo.engine_ns("a")):
                    r = httpx.get(f"http://127.0.0.1:{API_PORT}/status", timeout=2, trust_env=False,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
                return dict(r.json()) if r.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                return {}

        def session() -> dict[str, Any]:
            ha = status().get("ha") or {}
            return dict(ha["sessions"][0]) if ha.get("sessions") else {}

        def both_journals() -> str:
            """Both units' journals interleaved, with times: what the guard, bfdd and the engine
            did in which order (a failure here is usually a race between them)."""
            return inside("journalctl", "-b", "-u", "xcast6-bfdd", "-u", "xcast6-engine", "--no-pager",
                          "-o", "short-precise").stdout

        def why() -> str:
            return (inside("systemctl", "status", "xcast6-engine", "xcast6-bfdd", "--no-pager",
                           "-n", "0").stdout
                    + both_journals()[-12000:] + json.dumps(status().get("ha"), indent=1))

        def diverted() -> bool:
            return ENGINE_ADDR in build.router_divert_live(topo, "a")

        # -- both units up, the engine attached to bfdd, the session up with router A's bfdd ---------
        _wait("engine ea's BFD session up", lambda: session().get("state") == "up", 120, why)
        for unit in ("xcast6-bfdd", "xcast6-engine"):
            assert inside("systemctl", "is-active", unit).stdout.strip() == "active", why()
        ha = status()["ha"]
        assert ha["bfdd_running"] and ha["admin"] == "up" and ha["healthy"], ha
        _wait("router A diverts to engine ea", diverted, 10, why)
        engine_journal = journal("xcast6-engine")
        assert "bfdd attached (/run/xcast6-bfdd; bfdd pid" in engine_journal, engine_journal
        for word in ("needs CAP_", "Permission denied", "Operation not permitted", "Traceback", "no guard"):
            assert word not in engine_journal, engine_journal
        # bfdd runs as frr (it dropped privileges itself), its guard as root; the engine as xcast6
        bfdd_pid = inside("cat", "/run/xcast6-bfdd/bfdd.pid").stdout.strip()
        bfdd_uid = re.search(r"^Uid:\s+(\d+)", inside("cat", f"/proc/{bfdd_pid}/status").stdout, re.M)
        frr_uid = inside("id", "-u", "frr").stdout.strip()
        assert bfdd_uid is not None and bfdd_uid.group(1) == frr_uid, (bfdd_pid, frr_uid)
        assert "engine pid" in journal("xcast6-bfdd") and "attached" in journal("xcast6-bfdd")
        # the bfdd unit's sandbox (seccomp answers EPERM) refused nothing bfdd or its guard asked for
        bfdd_journal = journal("xcast6-bfdd")
        for word in ("Permission denied", "Operation not permitted", "cap_set_proc", "raise privileges",
                     "Traceback"):
            assert word not in bfdd_journal, bfdd_journal
        dests = [h.addr for h in topo.receivers]

        def deliver(tag: str) -> None:
            """XCAST6 through router A (diverted to engine ea) reaches every receiver exactly once."""
            payloads = [f"{tag}-{i}".encode() for i in range(3)]
            demo.reset_logs(topo)
            demo.send_xcast(topo, dests, payloads)
            got = demo.deliveries(topo, expect=len(dests) * len(payloads), timeout=10)
            for d in dests:
                assert sorted(r["payload"] for r in got.get(d, [])) == sorted(p.hex() for p in payloads), \
                    (tag, d, got)

        deliver("pair")

        # -- man page and completion (issue 19) ------------------------------------------------------
        man = inside("sh", "-c", "MANPAGER=cat MANWIDTH=100 man xcast6-engine 2>&1 | head -20")
        assert "xcast6-engine" in man.stdout and "SYNOPSIS" in man.stdout, man.stdout + man.stderr
        comp = inside("bash", "-c", ". /usr/share/bash-completion/bash_completion; "
                      "_completion_loader xcast6-engine; complete -p xcast6-engine; "
                      "COMP_WORDS='xcast6-engine sh' COMP_CWORD=1 _XCAST6_ENGINE_COMPLETE=complete_bash "
                      "xcast6-engine")
        assert "_xcast6_engine_completion" in comp.stdout and "show" in comp.stdout.split(), \
            comp.stdout + comp.stderr
        print(man.stdout.splitlines()[:6], comp.stdout.splitlines()[:3])

        # -- bfdd killed under the running engine -----------------------------------------------------
        engine_pid = prop("xcast6-engine", "MainPID")
        bfdd_pid = inside("cat", "/run/xcast6-bfdd/bfdd.pid").stdout.strip()     # the one running now
        assert inside("kill", "-9", bfdd_pid).returncode == 0, why()
        # the engine's own view leaves "up" at once (not after its detection time), it stays running
        gone = _wait("the engine marks its session down",
                     lambda: session().get("state", "up") != "up", 5, why)
        _wait("router A withdraws engine ea (bfdd dead)", lambda: not diverted(), 5, why)
        _wait("bfdd restarted by systemd, re-attached, session up again",
              lambda: session().get("state") == "up", 60, why)
        ha = status()["ha"]
        assert ha["bfdd_restarts"] == 1 and ha["bfdd_running"], ha
        assert any(t["kind"] == "bfd" and "bfdd not running" in t["why"] for t in ha["transitions"]), ha
        assert prop("xcast6-engine", "MainPID") == engine_pid and prop("xcast6-engine", "NRestarts") == "0"
        assert prop("xcast6-bfdd", "NRestarts") == "1", why()
        # attached to the new bfdd and its guard (the guard's pid is the unit's MainPID)
        new_bfdd = inside("cat", "/run/xcast6-bfdd/bfdd.pid").stdout.strip()
        assert (f"bfdd attached (/run/xcast6-bfdd; bfdd pid {new_bfdd}, guard pid "
                f"{prop('xcast6-bfdd', 'MainPID')})") in journal("xcast6-engine"), why()
        _wait("router A diverts to engine ea again", diverted, 10, why)
        print(f"bfdd kill -9: engine view down after {gone:.2f} s")

        # -- the engine killed -9: bfdd dies with it, the router moves away within detection time ----
        bfdd_pid = inside("cat", "/run/xcast6-bfdd/bfdd.pid").stdout.strip()
        engine_pid = prop("xcast6-engine", "MainPID")
        t0 = time.monotonic()
        inside("kill", "-9", engine_pid)
        _wait("bfdd killed by its guard",
              lambda: inside("test", "-e", f"/proc/{bfdd_pid}").returncode != 0, 5, why)
        killed = time.monotonic() - t0
        _wait("router A withdraws engine ea (engine dead)", lambda: not diverted(), 5, why)
        withdrawn = time.monotonic() - t0
        assert f"engine pid {engine_pid} gone, bfdd killed" in journal("xcast6-bfdd"), why()
        _wait("both units back, session up", lambda: session().get("state") == "up", 90, why)
        assert prop("xcast6-engine", "NRestarts") == "1", why()
        _wait("router A diverts to engine ea again", diverted, 10, why)
        print(f"engine kill -9: bfdd gone after {killed:.2f} s, router withdrew after {withdrawn:.2f} s")

        # -- a planned stop of the engine stops bfdd too (after the drain) ---------------------------
        res = inside("systemctl", "stop", "xcast6-engine")
        assert res.returncode == 0, res.stderr
        for unit in ("xcast6-engine", "xcast6-bfdd"):
            assert inside("systemctl", "is-active", unit).stdout.strip() == "inactive", why()
        assert not diverted()
        assert "draining" in journal("xcast6-engine")
        # and starting the engine starts bfdd first (Wants=, After=)
        res = inside("systemctl", "start", "xcast6-engine")
        assert res.returncode == 0, res.stderr + why()
        assert inside("systemctl", "is-active", "xcast6-bfdd").stdout.strip() == "active"
        _wait("session up after a start", lambda: session().get("state") == "up", 60, why)

        # -- rolling upgrade (ansible/upgrade.yml), run for real into the booted container ---------
        old = status()["version"]
        wheels = tmp / "upgrade-wheels"
        shutil.copytree(wheelhouse[0], wheels)
        bad = _engine_wheel(wheels, f"{old}+noready", never_ready=True).name.split("-")[1]
        good = _engine_wheel(wheels, f"{old}+up1").name.split("-")[1]
        drains = journal("xcast6-engine").count("draining")

        def running(version: str) -> None:
            """version runs (installed, /status), ready, its session up and router A diverting to it."""
            _wait(f"{version}: session up", lambda: session().get("state") == "up", 30, why)
            _wait("router A diverts to engine ea", diverted, 10, why)
            assert status()["version"] == version and status()["ready"], status()
            cli = inside("/usr/local/bin/xcast6-engine", "--version")
            assert cli.stdout.strip() == f"xcast6-engine {version}", cli.stdout + cli.stderr

        # a build that never becomes ready: the gate fails, the play puts `old` back and fails ea
        deliver("before-bad")
        t0 = time.monotonic()
        play = _upgrade(tmp, root, (wheels, wheelhouse[1]), pid1, bad, second=True)
        took_bad = time.monotonic() - t0
        log = play.stdout + play.stderr
        assert play.returncode != 0, log[-8000:]
        recap = _recap(play.stdout, "ea")
        assert recap["failed"] == 1 and recap["rescued"] == 1, log[-8000:]
        # serial: 1, max_fail_percentage: 0: the failed gate on ea ends the play; eb (next in the
        # inventory, in the play) is never reached: no task ran for it, not in the recap
        assert "PLAY RECAP" in play.stdout and "[eb]" not in play.stdout, log[-8000:]
        assert re.search(r"^eb\s*:", play.stdout, re.M) is None, log[-8000:]
        assert f"xcast6-engine=={bad} failed the gate" in log and f"version {old} is running again" in log, \
            log[-8000:]
        assert f"xcast6-engine {bad} running" in journal("xcast6-engine")   # it ran, it never got ready
        running(old)
        deliver("after-bad")
        assert journal("xcast6-engine").count("draining") > drains        # SIGTERM drained it first
        drains = journal("xcast6-engine").count("draining")

        # a good build: drained, installed, restarted, gated (/readyz and BFD up), running
        t0 = time.monotonic()
        play = _upgrade(tmp, root, (wheels, wheelhouse[1]), pid1, good)
        took_good = time.monotonic() - t0
        log = play.stdout + play.stderr
        assert play.returncode == 0, log[-8000:]
        recap = _recap(play.stdout, "ea")
        assert recap["failed"] == 0 and recap["rescued"] == 0 and recap["changed"] > 0, log[-8000:]
        running(good)
        assert journal("xcast6-engine").count(f"xcast6-engine {good} running") == 1    # started once
        deliver("after-upgrade")
        assert journal("xcast6-engine").count("draining") > drains
        print(f"upgrade.yml: failed gate + rollback {took_bad:.0f} s, upgrade {took_good:.0f} s")
        (tmp / "journal.txt").write_text(inside("journalctl", "-b", "--no-pager", "-o", "short-precise")
                                         .stdout)     # kept with the play logs, passed or not

        os.kill(pid1, signal.SIGRTMIN + 3)
        nspawn.wait(timeout=60)
        nspawn = None
    except BaseException:
        if pid1 and nspawn is not None and nspawn.poll() is None:
            # any failure: the container's whole journal beside the test's tmp dir, its end in the
            # report (the CI log is all the next person gets)
            jr = _sh("nsenter", "-t", str(pid1), "-m", "-u", "-i", "-p", "-n", "journalctl", "-b",
                     "--no-pager", "-o", "short-precise", timeout=60).stdout
            (tmp / "journal.txt").write_text(jr)
            print(f"--- container journal ({tmp / 'journal.txt'}), last 20000 characters ---\n"
                  + jr[-20000:])
        raise
    finally:
        if nspawn is not None:
            if pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
            try:
                nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
        build.down(topo)
        if not kept:
            shutil.rmtree(root, ignore_errors=True)     # ~0.6 GB per run
