"""The harness's own pieces that run on the host (no VM boot): kernel pick, initramfs contents."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.vm.harness import BOOT_MODULES, build_initramfs, find_kernel, module_load_order


def _cpio_names(blob: bytes) -> dict[str, tuple[int, bytes]]:
    """Names -> (mode, data) of a newc archive (what the kernel unpacks)."""
    out = {}
    off = 0
    while off < len(blob):
        hdr = blob[off : off + 110]
        assert hdr[:6] == b"070701", f"bad cpio magic at {off}"
        fields = [int(hdr[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = blob[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        data = blob[off : off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            break
        out[name] = (mode, data)
    return out


def test_kernel_is_the_debian_one_with_8021q() -> None:
    kernel = find_kernel()
    assert kernel.vmlinuz.name == f"vmlinuz-{kernel.version}"
    assert list(kernel.modules_dir.glob("kernel/net/8021q/8021q.ko*"))


def test_initramfs_has_init_busybox_console_and_modules_in_dependency_order(tmp_path: Path) -> None:
    kernel = find_kernel()
    image = build_initramfs(kernel, tmp_path)
    assert build_initramfs(kernel, tmp_path) == image  # cached: same inputs, same file
    entries = _cpio_names(gzip.decompress(image.read_bytes()))
    assert entries["init"][1].startswith(b"#!/bin/busybox sh")
    assert entries["dev/console"][0] & 0o170000 == 0o020000  # char device: init has a console
    order = entries["ko/order"][1].decode().split()
    names = [p.name for p in module_load_order(kernel)]
    assert order == names
    for wanted in BOOT_MODULES:
        assert f"{wanted}.ko" in order
    assert order.index("virtio.ko") < order.index("virtio_pci.ko") < order.index("9pnet_virtio.ko")
    assert order.index("9pnet.ko") < order.index("9p.ko")
    for name in order:
        assert f"ko/{name}" in entries
