"""Apply the engine_host role for real, twice, to a scratch Debian root (chroot connection).

A minimal Debian 12 root is made with debootstrap (cached as a tarball), the project is built as a
wheel, and engine.yml runs against the root through Ansible's chroot connection: packages, user,
virtualenv with the engine, engine.toml (validated by ``xcast6-engine config check`` inside the root),
secrets file, sysctls, modules-load, the hardened unit. The second run must change nothing.
Runtime-only steps (modprobe, sysctl -w, starting the unit, /readyz) need a booted system and are
switched off with engine_host_runtime=false; there is no systemd running in a chroot.

The unit itself is then run for real: a second root (lab inventory, engine ea) gets systemd and
boots in systemd-nspawn inside the namespace lab's engine-A namespace, where systemd starts the
hardened unit and the engine must sync, report ready and forward (it found the unit's read-only
/run, the hidden /proc/sys and the blocked sched_setaffinity).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("XCAST6_CACHE_DIR", "/var/cache/xcast6-engine-tests"))
MIRROR = os.environ.get("XCAST6_DEBIAN_MIRROR", "http://deb.debian.org/debian")

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _sh(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def _base_tarball() -> Path:
    tarball = CACHE / "debootstrap-bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        res = _sh(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "debootstrap",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        assert res.returncode == 0, res.stderr
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "debootstrap-work"
    shutil.rmtree(work, ignore_errors=True)
    res = _sh(
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-apt",
        "bookworm",
        str(work),
        MIRROR,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _sh("tar", "-C", str(work), "-cf", str(tarball) + ".part", ".")
    assert res.returncode == 0, res.stderr
    os.replace(str(tarball) + ".part", tarball)
    shutil.rmtree(work, ignore_errors=True)
    return tarball


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("xans-root")
    res = _sh("tar", "-C", str(root), "-xf", str(_base_tarball()))
    assert res.returncode == 0, res.stderr
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    (root / "proc").mkdir(exist_ok=True)
    assert _sh("mount", "-t", "proc", "proc", str(root / "proc")).returncode == 0
    try:
        yield root
    finally:
        _sh("umount", "-l", str(root / "proc"))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The engine's wheel plus wheels of all its dependencies (cached by pyproject digest)."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    deps = CACHE / f"wheelhouse-{digest}"
    if not deps.exists():
        part = CACHE / f"wheelhouse-{digest}.part"
        shutil.rmtree(part, ignore_errors=True)
        res = _sh(str(BIN / "python"), "-m", "pip", "wheel", "-q", "-w", str(part), str(REPO), timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        for old in part.glob("xcast6_engine-*.whl"):
            old.unlink()
        os.replace(part, deps)
    out = tmp_path_factory.mktemp("wheelhouse")
    for whl in deps.iterdir():
        shutil.copy(whl, out / whl.name)
    res = _sh(
        str(BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO), timeout=600
    )
    assert res.returncode == 0, res.stderr
    (engine_whl,) = out.glob("xcast6_engine-*.whl")
    return out, engine_whl


def _inventory(tmp: Path, root: Path, wheels: tuple[Path, Path]) -> Path:
    mx1 = (ANSIBLE_DIR / "inventories/example/host_vars/mx1.yml").read_text()
    inv = tmp / "inventory"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "host_vars" / "mx1.yml").write_text(mx1)
    (inv / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "xcast6_routers": {
                            "children": {"junos": {"hosts": {"mx1": {"xcast6_platform": "junos"}}}}
                        },
                        "xcast6_engines": {
                            "hosts": {
                                "scratch": {
                                    "ansible_connection": "community.general.chroot",
                                    "ansible_host": str(root),
                                    "ansible_become": False,
                                    "xcast6_router": "mx1",
                                    "xcast6_trunk_interface": "eth1",
                                    "engine_host_runtime": False,
                                    "engine_host_package_src": str(wheels[1]),
                                    "engine_host_wheelhouse": str(wheels[0]),
                                    "xcast6_api_token": "scratch-token-0123456789abcdef-0123",
                                    "xcast6_snmp_auth_key": "scratch-auth-key",
                                    "xcast6_snmp_priv_key": "scratch-priv-key",
                                }
                            }
                        },
                    }
                },
            }
        )
    )
    return inv / "hosts.yml"


def _play(inventory: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "engine.yml"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _recap(out: str) -> dict[str, int]:
    m = re.search(r"^scratch\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def test_engine_host_role_applies_and_is_idempotent(
    scratch_root: Path, wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    inventory = _inventory(tmp_path, scratch_root, wheelhouse)

    first = _play(inventory)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert _recap(first.stdout)["changed"] > 0

    second = _play(inventory)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    recap = _recap(second.stdout)
    assert recap["changed"] == 0 and recap["failed"] == 0, second.stdout[-6000:]

    # What the role wrote, as the service will see it.
    conf = scratch_root / "etc/xcast6-engine/engine.toml"
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    env_file = scratch_root / "etc/xcast6-engine/engine.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "scratch-token" not in conf.read_text()  # secrets only in the root-only env file
    assert "8021q" in (scratch_root / "etc/modules-load.d/xcast6-engine.conf").read_text()
    assert (scratch_root / "etc/systemd/system/multi-user.target.wants/xcast6-engine.service").is_symlink()
    assert "xcast6:" in (scratch_root / "etc/passwd").read_text()
    assert "245 xcast6" in (scratch_root / "etc/iproute2/rt_protos.d/xcast6-engine.conf").read_text()
    # the CLI on the PATH with its man page and completion (issue 19); no engine pair: no bfdd unit
    local = scratch_root / "usr/local"
    assert os.readlink(local / "bin/xcast6-engine") == "/opt/xcast6-engine/venv/bin/xcast6-engine"
    assert (local / "share/man/man1/xcast6-engine.1").read_text().startswith(".TH XCAST6-ENGINE 1")
    assert "complete -o default -F _xcast6_engine_completion xcast6-engine" in (
        local / "share/bash-completion/completions/xcast6-engine").read_text()
    assert "#compdef xcast6-engine" in (local / "share/zsh/site-functions/_xcast6-engine").read_text()
    assert not (scratch_root / "etc/systemd/system/xcast6-bfdd.service").exists()
    # engine_host_dataplane: auto (the default) built the TC program into the install, with the
    # compiler the role installed; the unit may load it
    objs = list((scratch_root / "opt/xcast6-engine/venv/lib").glob(
        "python3*/site-packages/engine/dataplane/kernel/build/xcast6_tc.o"))
    assert len(objs) == 1 and objs[0].stat().st_size > 1000, objs
    unit = (scratch_root / "etc/systemd/system/xcast6-engine.service").read_text()
    assert "CAP_BPF CAP_PERFMON" in unit and "SystemCallFilter=bpf" in unit
    assert 'mode = "auto"' in conf.read_text()

    check = _sh(
        "chroot",
        str(scratch_root),
        "/bin/sh",
        "-c",
        'set -a; . /etc/xcast6-engine/engine.env; exec "$0" config check /etc/xcast6-engine/engine.toml',
        "/opt/xcast6-engine/venv/bin/xcast6-engine",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid" in check.stdout


# ------------------------------------------------------------------ the unit, run by systemd
def _lab_inventory(tmp: Path, root: Path, wheels: tuple[Path, Path]) -> Path:
    """The lab inventory (engine ea beside router ra, direct links) with ea reached by chroot."""
    inv = tmp / "lab-inventory"
    shutil.copytree(ANSIBLE_DIR / "inventories/lab", inv)
    ea = inv / "host_vars" / "ea.yml"
    ea.write_text(ea.read_text() + "\n".join([
        "ansible_connection: community.general.chroot",
        f"ansible_host: {root}",
        "ansible_become: false",
        "engine_host_runtime: false",
        f"engine_host_package_src: {wheels[1]}",
        f"engine_host_wheelhouse: {wheels[0]}",
        # the worker tuning the unit must make room for: pinning (sched_setaffinity under the
        # syscall filter) and the idle limit (root ExecStartPre; /sys is read-only in the container)
        f"engine_host_worker_cpus: [{max(os.sched_getaffinity(0))}]",
        "engine_host_worker_cpu_resume_latency_us: 0",
        # the container boots the unit; the TC path (and its clang/libbpf install) is the first
        # test's, which applies the role with the default engine_host_dataplane: auto
        "engine_host_dataplane: python",
        "",
    ]))
    return inv / "hosts.yml"


def _container_pid1(nspawn_pid: int, timeout: float = 60) -> int:
    """The container's init: the process named systemd below systemd-nspawn (its inner helper
    forks it into the container's PID namespace)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = [nspawn_pid]
        while todo:
            pid = todo.pop()
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if pid != nspawn_pid and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
            except OSError:
                continue
            todo += [int(k) for k in kids]
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


def test_the_deployed_unit_runs_the_engine_under_systemd(
    wheelhouse: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """engine.yml's result booted for real: a Debian root with the role applied (lab inventory,
    engine ea) boots systemd in systemd-nspawn inside the lab's engine-A namespace; the hardened
    unit starts the engine as user xcast6, it syncs router A over SNMP, reports ready, and XCAST6
    datagrams sent into the lab reach every receiver exactly once through it. Then a clean
    shutdown stops the unit."""
    import time

    import httpx

    from lab import build, demo, netns
    from lab.topology import API_PORT, Topology

    if shutil.which("systemd-nspawn") is None:
        res = _sh("apt-get", "install", "-y", "-qq", "systemd-container",
                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        assert res.returncode == 0, res.stderr
    tmp = tmp_path_factory.mktemp("xans-unit")
    root = tmp / "root"
    root.mkdir()
    assert _sh("tar", "-C", str(root), "-xf", str(_base_tarball())).returncode == 0
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    res = _sh("chroot", str(root), "sh", "-c",
              "apt-get update -qq && "
              "apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus",
              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(_lab_inventory(tmp, root, wheelhouse)), "engine.yml",
         "--limit", "ea"],
        cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-3000:]

    prefix = f"xlu{os.getpid() % 10000}-"
    topo = Topology(prefix=prefix, state_dir=Path(f"/tmp/{prefix}lab"), poll_interval=0.5)
    build.down(topo)
    build.up(topo)
    nspawn = None
    pid1 = 0
    console = tmp / "console.log"
    try:
        build.stop_engine(topo, "a")       # the systemd-run engine takes engine A's place
        with console.open("w") as out:
            nspawn = subprocess.Popen(
                # nspawn keeps CAP_NET_ADMIN out of a container that joins a network namespace
                # it did not create: the unit's own bounding set is what is under test
                ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit",
                 "--capability=CAP_NET_ADMIN",
                 f"--network-namespace-path=/run/netns/{topo.engine_ns('a')}", "--console=passive", "-b"],
                stdout=out, stderr=subprocess.STDOUT)
        pid1 = _container_pid1(nspawn.pid)

        def inside(*cmd: str) -> subprocess.CompletedProcess[str]:
            return _sh("nsenter", "-t", str(pid1), "-m", "-u", "-i", "-p", "-n", *cmd, timeout=60)

        def readyz() -> int:
            try:
                with netns.in_netns(topo.engine_ns("a")):
                    url = f"http://127.0.0.1:{API_PORT}/readyz"
                    return httpx.get(url, timeout=2, trust_env=False).status_code
            except httpx.HTTPError:
                return 0

        deadline = time.monotonic() + 120
        while readyz() != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        journal = inside("journalctl", "-u", "xcast6-engine", "--no-pager", "-o", "cat").stdout
        assert readyz() == 200, inside("systemctl", "status", "xcast6-engine", "--no-pager").stdout + journal
        # Type=notify: "active" only once the engine said READY=1; its STATUS= line and the
        # watchdog are systemd's own view of it
        assert inside("systemctl", "is-active", "xcast6-engine").stdout.strip() == "active"
        props = dict(line.split("=", 1) for line in inside(
            "systemctl", "show", "xcast6-engine", "-p", "Type", "-p", "StatusText", "-p", "WatchdogUSec",
            "-p", "WatchdogTimestampMonotonic", "-p", "NRestarts").stdout.splitlines() if "=" in line)
        assert props["Type"] == "notify" and props["WatchdogUSec"] == "30s", props
        status_text = r"\d+ routes \(generation \d+\), 1/1 workers, sync \w+"
        assert re.fullmatch(status_text, props["StatusText"]), props
        ping = int(props["WatchdogTimestampMonotonic"])
        assert ping > 0, props                                # the daemon pinged the watchdog
        time.sleep(6)                                         # it pings every 5 s while healthy
        later = inside("systemctl", "show", "xcast6-engine", "-p", "WatchdogTimestampMonotonic", "--value")
        assert int(later.stdout.strip()) > ping and props["NRestarts"] == "0", later.stdout
        # journald read the <N> priority prefixes: -p warning hides the engine's info lines
        info = inside("journalctl", "-u", "xcast6-engine", "--no-pager", "-o", "cat", "-p", "info").stdout
        warn = inside("journalctl", "-u", "xcast6-engine", "--no-pager", "-o", "cat", "-p", "warning").stdout
        assert "running: source" in info and "running: source" not in warn, (info, warn)
        assert not re.search(r"^<\d>", info, re.M), info     # the prefix is consumed, not shown
        main_pid = inside("systemctl", "show", "-p", "MainPID", "--value", "xcast6-engine").stdout.strip()
        status = inside("cat", f"/proc/{main_pid}/status").stdout
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))        # type: ignore[union-attr]
        assert uid != 0                                                       # runs as user xcast6
        assert re.search(r"^Seccomp:\s+2", status, re.M)                      # under its syscall filter
        assert inside("test", "-e", "/run/xcast6-engine/stats.shm").returncode == 0

        # XCAST6 through the systemd-run engine A (and the lab's engine B) to every receiver
        dests = [h.addr for h in topo.receivers]
        payloads = [f"unit-{i}".encode() for i in range(3)]
        demo.reset_logs(topo)
        demo.send_xcast(topo, dests, payloads)
        got = demo.deliveries(topo, expect=len(dests) * len(payloads), timeout=10)
        for d in dests:
            assert sorted(r["payload"] for r in got.get(d, [])) == sorted(p.hex() for p in payloads), (d, got)
        # the daemon's own log (not the cpu-idle helper, which cannot write /sys in a container)
        helper = [line for line in journal.splitlines() if line.startswith("xcast6-engine: CPU")]
        assert helper or "resume latency limit 0 us" in journal, journal    # ExecStartPre ran
        daemon_log = "\n".join(line for line in journal.splitlines() if line not in helper)
        for word in ("Permission denied", "Operation not permitted", "Read-only file system", "Traceback"):
            assert word not in daemon_log, journal
        with netns.in_netns(topo.engine_ns("a")):
            stats = httpx.get(f"http://127.0.0.1:{API_PORT}/stats", timeout=5, trust_env=False,
                              headers={"Authorization": "Bearer lab-token-not-secret-0123456789ab"}).json()
        assert [w["cpus"] for w in stats["workers"]] == [[max(os.sched_getaffinity(0))]], stats["workers"]

        # a clean stop of the container stops the unit (SIGRTMIN+3 = halt for systemd as init)
        os.kill(pid1, signal.SIGRTMIN + 3)
        nspawn.wait(timeout=60)
        nspawn = None
    finally:
        if nspawn is not None:
            # killing the container's init ends its whole PID namespace (SIGKILL to nspawn alone
            # would leave the booted container running)
            if pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
            try:
                nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
        build.down(topo)
        shutil.rmtree(root, ignore_errors=True)     # ~0.5 GB per run
