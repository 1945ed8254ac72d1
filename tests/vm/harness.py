"""Boot the Debian kernel under QEMU (TCG) and run a pytest selection inside it.

This machine's own kernel has no 802.1Q, so tests that need a real ``8021q`` module run in a
throw-away guest: Debian's ``/boot/vmlinuz-<KVER>``, an initramfs built here on the fly
(busybox-static + the virtio/9p/overlay ``.ko`` files, cached under ``vm-cache/``), the host
root shared read-only over 9p with a tmpfs overlay on top (so the guest runs the very same
python, venv and worktree), and a second, read-write 9p export that brings back the guest's
per-test results and the exit status.  One boot runs the whole selection.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / "vm-cache"
# Prefix of the per-run results dir under $TMPDIR (shared machines: each user sets their own).
TMP_PREFIX = os.environ.get("XCAST6_VM_TMP_PREFIX", "xvl-vm-")
APT_PACKAGES = ("qemu-system-x86", "linux-image-amd64", "busybox-static")
# Modules the initramfs needs before it can reach the host root; the guest loads 8021q/veth
# itself from the host's /lib/modules once it has chrooted.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
RESULTS_TAG = "results"
GUEST_RESULTS = "/xc-results"


class VmError(RuntimeError):
    """The VM could not be built or booted, or it did not report back."""


@dataclass(frozen=True, slots=True)
class GuestKernel:
    """A kernel image and the module tree that belongs to it."""

    version: str
    vmlinuz: Path
    modules_dir: Path


@dataclass(slots=True)
class VmRun:
    """What came back from one guest run."""

    exit_status: int | None  # pytest's exit status inside the guest; None if it never finished
    reports: list[dict[str, object]]  # one per test phase, written by tests.vm.guest_reporter
    console: str  # the serial console log (kernel + pytest output)
    boot_s: float  # host wall time from qemu start to guest user space
    total_s: float
    results_dir: Path = field(default_factory=Path)

    def cleanup(self) -> None:
        """Remove the results dir (console log, reports) once the caller is done with it."""
        shutil.rmtree(self.results_dir, ignore_errors=True)


def find_kernel() -> GuestKernel:
    """Pick a Debian kernel that has both an image in /boot and a module tree with 8021q.

    ``uname -r`` is the host's (module-less) kernel, so look at /lib/modules instead.
    """
    candidates = []
    for mod_dir in sorted(Path("/lib/modules").iterdir()):
        image = Path("/boot") / f"vmlinuz-{mod_dir.name}"
        if image.is_file() and list(mod_dir.glob("kernel/net/8021q/8021q.ko*")):
            candidates.append(GuestKernel(mod_dir.name, image, mod_dir))
    if not candidates:
        raise VmError(
            "no bootable kernel: need /boot/vmlinuz-<KVER> with /lib/modules/<KVER>/kernel/net/8021q "
            "(apt-get install linux-image-amd64)"
        )
    return candidates[-1]


def ensure_packages() -> None:
    """Install qemu, the Debian kernel and busybox-static with apt when any is missing (CI)."""
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    have_busybox = Path("/bin/busybox").exists()
    try:
        find_kernel()
        have_kernel = True
    except (VmError, FileNotFoundError):
        have_kernel = False
    if have_qemu and have_busybox and have_kernel:
        return
    if os.geteuid() != 0:
        raise VmError(f"VM harness needs {' '.join(APT_PACKAGES)} installed (not root, cannot apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES], check=True, env=env
    )


def module_load_order(kernel: GuestKernel, names: tuple[str, ...] = BOOT_MODULES) -> list[Path]:
    """The .ko files to insmod, dependencies first, each once (from ``modprobe --show-depends``)."""
    order: list[Path] = []
    for name in names:
        out = subprocess.run(
            ["modprobe", "-S", kernel.version, "--show-depends", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in order:
                    order.append(path)
    return order


INIT_SCRIPT = r"""#!/bin/busybox sh
# xcast6 VM harness init: reach the host root over 9p, overlay it, run the job, power off.
/bin/busybox mkdir -p /proc /sys /dev /mnt/host /mnt/upper /mnt/root /mnt/results
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for ko in $(/bin/busybox cat /ko/order); do
  /bin/busybox insmod "/ko/$ko" || echo "xcvm: insmod $ko failed"
done
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/host \
  || { echo "xcvm: mount hostroot failed"; echo o > /proc/sysrq-trigger; }
/bin/busybox mount -t tmpfs -o size=70% tmpfs /mnt/upper
/bin/busybox mkdir -p /mnt/upper/u /mnt/upper/w
/bin/busybox mount -t overlay overlay \
  -o lowerdir=/mnt/host,upperdir=/mnt/upper/u,workdir=/mnt/upper/w /mnt/root \
  || { echo "xcvm: overlay failed"; echo o > /proc/sysrq-trigger; }
/bin/busybox mkdir -p /mnt/root/xc-results
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /mnt/root/xc-results \
  || { echo "xcvm: mount results failed"; echo o > /proc/sysrq-trigger; }
for d in proc sys dev; do /bin/busybox mount --move /$d /mnt/root/$d; done
# /run gets a fresh tmpfs (the host's netns bind-mount files must not show up); /tmp stays
# the overlay, so a checkout under the host's /tmp (CI) is still visible in the guest.
/bin/busybox mount -t tmpfs tmpfs /mnt/root/run
echo "xcvm: user space up"
/bin/busybox chroot /mnt/root /bin/sh /xc-results/job.sh
# /proc now lives under the new root; power off (never let init exit: that panics).
echo o > /mnt/root/proc/sysrq-trigger
/bin/busybox sleep 5
"""


def _cpio_entry(
    name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), ino: int = 0
) -> bytes:
    """One ``newc`` cpio record (what the kernel's initramfs unpacker reads)."""
    name_b = name.encode() + b"\0"
    header = b"070701" + b"".join(
        f"{v:08X}".encode()
        for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
    )
    out = header + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def build_initramfs(kernel: GuestKernel, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Build (or reuse from the cache) a gzip'ed initramfs for ``kernel``."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise VmError("/bin/busybox missing (apt-get install busybox-static)")
    modules = module_load_order(kernel)
    key = hashlib.sha256()
    key.update(INIT_SCRIPT.encode())
    key.update(kernel.version.encode())
    for path in [busybox, *modules]:
        st = path.stat()
        key.update(f"{path}|{st.st_size}|{st.st_mtime_ns};".encode())
    target = cache_dir / f"initramfs-{kernel.version}-{key.hexdigest()[:16]}.cpio.gz"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    entries: list[bytes] = []
    ino = 1

    def add(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nonlocal ino
        entries.append(_cpio_entry(name, mode, data, rdev, ino))
        ino += 1

    for d in ("bin", "dev", "ko", "proc", "sys", "mnt", "tmp"):
        add(d, stat.S_IFDIR | 0o755)
    add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    add("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
    add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
    add("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    add("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode())
    names = []
    for path in modules:
        add(f"ko/{path.name}", stat.S_IFREG | 0o644, path.read_bytes())
        names.append(path.name)
    add("ko/order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode())
    entries.append(_cpio_entry("TRAILER!!!", 0))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as gz:
        gz.write(b"".join(entries))
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)  # atomic: parallel sessions never see a half-written image
    return target


def _job_script(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"""#!/bin/sh
# Runs in the guest, chrooted into the overlaid host root.
{exports}
echo "xcvm: job start $(cut -d' ' -f1 /proc/uptime)"
modprobe 8021q && modprobe veth || echo "xcvm: modprobe failed"
# the TC eBPF fast path's qdisc and classifier ([dataplane] mode auto falls back without them)
modprobe sch_ingress && modprobe cls_bpf || echo "xcvm: no sch_ingress/cls_bpf: the kernel path falls back"
ip link set lo up
cd {shlex.quote(str(cwd))} || exit 1
{" ".join(shlex.quote(a) for a in command)}
echo $? > {GUEST_RESULTS}/exit_status.tmp
mv {GUEST_RESULTS}/exit_status.tmp {GUEST_RESULTS}/exit_status
sync
echo "xcvm: job done $(cut -d' ' -f1 /proc/uptime)"
echo o > /proc/sysrq-trigger
"""


def run_pytest_in_vm(
    pytest_args: list[str],
    *,
    cwd: Path = REPO_ROOT,
    python: str = sys.executable,
    cache_dir: Path = DEFAULT_CACHE,
    timeout_s: float = 420.0,
    memory_mb: int = 1024,
    extra_env: dict[str, str] | None = None,
    echo_console: bool = False,
) -> VmRun:
    """Boot one guest, run ``python -m pytest <pytest_args>`` in ``cwd`` inside it, return the results.

    The guest gets ``XCAST6_IN_VM=1`` so the host-side plugin knows not to recurse, and writes one
    JSON line per test phase (tests.vm.guest_reporter) into the read-write export.
    """
    plugins = ["-p", "pytest_timeout", "-p", "tests.vm.guest_reporter", "-p", "no:cacheprovider"]
    return run_in_vm(
        [python, "-m", "pytest", *plugins, "--color=no", *pytest_args],
        cwd=cwd,
        cache_dir=cache_dir,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        extra_env=extra_env,
        echo_console=echo_console,
    )


def run_in_vm(
    command: list[str],
    *,
    cwd: Path = REPO_ROOT,
    cache_dir: Path = DEFAULT_CACHE,
    timeout_s: float = 420.0,
    memory_mb: int = 1024,
    extra_env: dict[str, str] | None = None,
    echo_console: bool = False,
) -> VmRun:
    """Boot one guest and run ``command`` in ``cwd`` there (chrooted into the overlaid host root).

    The guest's ``/xc-results`` is ``VmRun.results_dir`` on the host: a command may leave files
    there for the caller.  ``exit_status`` is the command's.
    """
    ensure_packages()
    kernel = find_kernel()
    initrd = build_initramfs(kernel, cache_dir)
    results = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    os.chmod(results, 0o777)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "XCAST6_IN_VM": "1",
        "XCAST6_VM_REPORT": f"{GUEST_RESULTS}/reports.jsonl",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # Third-party plugins (schemathesis, hypothesis, anyio...) cost tens of seconds to import
        # under TCG; the guest loads only what VM tests use.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    env.update(extra_env or {})
    (results / "job.sh").write_text(_job_script(command, cwd, env))
    console_log = results / "console.log"
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-m",
        str(memory_mb),
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{console_log}",
        "-kernel",
        str(kernel.vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 quiet panic=-1 loglevel=3",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag={RESULTS_TAG},security_model=none,multidevs=remap",
        "-nic",
        "none",
    ]
    started = time.monotonic()
    boot_s = 0.0
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    printed = 0
    try:
        while proc.poll() is None:
            if time.monotonic() - started > timeout_s:
                proc.kill()
                proc.wait()
                raise VmError(
                    f"guest did not finish within {timeout_s:.0f}s; console tail:\n" + _tail(console_log)
                )
            text = console_log.read_text(errors="replace") if console_log.exists() else ""
            if not boot_s and "xcvm: user space up" in text:
                boot_s = time.monotonic() - started
            if echo_console and len(text) > printed:
                sys.stderr.write(text[printed:])
                printed = len(text)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    console = console_log.read_text(errors="replace") if console_log.exists() else ""
    if echo_console and len(console) > printed:
        sys.stderr.write(console[printed:])
    if proc.returncode != 0:
        raise VmError(f"qemu exited with {proc.returncode}: {qemu_out.strip()}\n{_tail(console_log)}")
    status_file = results / "exit_status"
    exit_status = int(status_file.read_text().strip()) if status_file.exists() else None
    reports = []
    report_file = results / "reports.jsonl"
    if report_file.exists():
        reports = [json.loads(line) for line in report_file.read_text().splitlines() if line.strip()]
    return VmRun(exit_status, reports, console, boot_s, time.monotonic() - started, results)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no console output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Run pytest args (default: the vm tests) or ``--cmd COMMAND...`` in one guest.

    ``python -m tests.vm.harness tests/vm -q`` or
    ``python -m tests.vm.harness --cmd python -m api.main bench links --mode vlan
    --kernel 100,500 --out /xc-results/bench`` (files the command writes under /xc-results are
    kept on the host; the path is printed).
    """
    args = list(sys.argv[1:] if argv is None else argv) or ["-m", "vm", "tests/vm", "-q"]
    keep = False
    if args[0] == "--cmd":
        command = args[1:]
        if command and command[0] == "python":
            command[0] = sys.executable  # the host's interpreter (and venv), seen through 9p
        run = run_in_vm(command, echo_console=True)
        keep = True
    else:
        run = run_pytest_in_vm(args, echo_console=True)
    print(
        f"\nxcvm: boot {run.boot_s:.1f}s, total {run.total_s:.1f}s, guest exit status {run.exit_status}",
        file=sys.stderr,
    )
    if keep:
        print(f"xcvm: guest /xc-results is {run.results_dir}", file=sys.stderr)
    else:
        shutil.rmtree(run.results_dir, ignore_errors=True)
    return 1 if run.exit_status is None else run.exit_status


if __name__ == "__main__":
    raise SystemExit(main())
