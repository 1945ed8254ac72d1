"""Worker counters and latency histograms in one shared-memory file.

Each worker owns one *slot* (a row of unsigned 64-bit integers) and is its only writer, so no
locks are needed; readers (``xcast6-engine stats``, the API) map the same file read-only and
sum the slots.  The file is self-describing: a JSON header lists the counter names, the
number of slots and the histogram bounds, so a reader never needs the writer's code version.

Layout: ``b"XC6STAT1"`` | u32 header length | u32 0 | JSON header | pad to 64 |
``slots`` x (``len(names)`` counters + ``NBUCKETS`` histogram buckets) little-endian u64.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.dataplane import histogram
from engine.forwarding.icmp_errors import counter_names as icmp_counter_names

MAGIC = b"XC6STAT1"
DEFAULT_PATH = Path("/run/xcast6-engine/stats.shm")

# Fixed counters every worker keeps.  Drop reasons are added after these as ``drop.<reason>``.
BASE_COUNTERS: tuple[str, ...] = (
    "received",          # frames the BPF filter let through
    "received_bytes",
    "rx_queue_drops",    # dropped by the kernel: the worker's socket queue was full (overload)
    "not_xcast",         # passed the kernel filter but the codec says not XCAST6
    "branched",          # packets that produced at least one copy
    "flow_cache_hits",   # of those, rendered from a learned flow template (engine/forwarding/flowcache.py)
    "flow_cache_evictions",   # flow templates dropped for room (workers.flow_cache_mb or 4,096 entries)
    "plan_cache_evictions",   # branch plans dropped for room (workers.plan_cache_mb or 8,192 entries)
    "copies_out",        # multi-destination XCAST copies written
    "x2u_out",           # X2U plain unicast copies written
    "bytes_out",
    "egress_errors",     # copies that could not leave: sendmmsg, or the TC path's (clone_)redirect
    "egress_no_link",    # copy's router interface has no engine link
    "egress_no_mac",     # engine link whose router MAC is not learned yet
    "egress_mtu",        # copy larger than the link MTU
    "table_updates",     # route diffs applied by this worker
    "syscalls_rx",       # recv calls (including the one that finds the socket empty)
    "syscalls_tx",       # sendmmsg calls
    "syscalls_poll",     # epoll_wait calls
    "kernel_received",   # frames the TC eBPF path branched or dropped itself (also in received)
    "kernel_punted",     # frames it passed to the Python workers unchanged (counted again there)
    # ... and why (engine/dataplane/kernel_path.py PUNT_REASONS, a test checks they agree)
    "kernel_punt_parse", "kernel_punt_no_live", "kernel_punt_hop_limit", "kernel_punt_ecmp",
    "kernel_punt_local", "kernel_punt_egress", "kernel_punt_mtu", "kernel_punt_groups",
    "kernel_punt_csum0", "kernel_punt_vlan", "kernel_punt_no_route",
    "latency_count",
    "latency_sum_ns",
    "latency_max_ns",
)

# Known drop reasons (engine.wire.reasons.DropReason values when that module is present).
FALLBACK_REASONS: tuple[str, ...] = (
    "malformed", "hop_limit", "no_route", "invalid_destination", "other",
)


def drop_reasons() -> tuple[str, ...]:
    """The drop-reason names: the core's ``DropReason`` values plus ``other``."""
    try:
        from engine.wire.reasons import DropReason  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return FALLBACK_REASONS
    names = [str(getattr(r, "value", r.name)) for r in DropReason]
    if "other" not in names:
        names.append("other")
    return tuple(names)


def counter_names(reasons: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Every counter of a slot: the fixed ones, the ICMPv6 errors', then ``drop.<reason>``."""
    return BASE_COUNTERS + icmp_counter_names() + tuple(f"drop.{r}" for r in (reasons or drop_reasons()))


def _header_bytes(names: tuple[str, ...], slots: int) -> bytes:
    hdr = json.dumps({
        "names": list(names), "slots": slots, "bounds_ns": list(histogram.BOUNDS_NS),
        "created": time.time(), "pid": os.getpid(),
    }).encode()
    return hdr


def _data_offset(hlen: int) -> int:
    return (16 + hlen + 63) // 64 * 64


class CounterFile:
    """The shared file; ``create`` once in the supervisor, ``slot(i)`` in worker *i*."""

    def __init__(self, path: Path, mm: mmap.mmap, header: dict[str, Any], offset: int) -> None:
        self.path = path
        self._mm = mm
        self.header = header
        self.names: tuple[str, ...] = tuple(header["names"])
        self.slots: int = int(header["slots"])
        self.row = len(self.names) + histogram.NBUCKETS
        self._offset = offset
        self._words = memoryview(mm)[offset:offset + self.slots * self.row * 8].cast("Q")

    @classmethod
    def create(cls, path: Path, slots: int, names: tuple[str, ...] | None = None) -> CounterFile:
        """Create (or truncate) the file with ``slots`` zeroed rows."""
        names = names or counter_names()
        hdr = _header_bytes(names, slots)
        off = _data_offset(len(hdr))
        size = off + slots * (len(names) + histogram.NBUCKETS) * 8
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<II", len(hdr), 0) + hdr)
            f.truncate(size)
        os.replace(tmp, path)   # readers never see a half-written header
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> CounterFile:
        """Map an existing file (raises ValueError naming the file if it is not ours)."""
        with open(path, "r+b" if writable else "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise ValueError(f"{path}: not an xcast6-engine counter file (bad magic)")
            (hlen, _) = struct.unpack("<II", head[8:16])
            header = json.loads(f.read(hlen))
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        return cls(path, mm, header, _data_offset(hlen))

    def slot(self, index: int) -> Slot:
        if not 0 <= index < self.slots:
            raise IndexError(f"counter slot {index} out of range 0..{self.slots - 1}")
        return Slot(self, index)

    def row_values(self, index: int) -> list[int]:
        base = index * self.row
        return list(self._words[base:base + self.row])

    def snapshot(self) -> Stats:
        """Per-slot and summed counters plus the merged histogram."""
        n = len(self.names)
        per_slot: list[dict[str, int]] = []
        buckets = [0] * histogram.NBUCKETS
        totals = dict.fromkeys(self.names, 0)
        for s in range(self.slots):
            vals = self.row_values(s)
            row = dict(zip(self.names, vals[:n], strict=True))
            per_slot.append(row)
            for k, v in row.items():
                totals[k] = max(totals[k], v) if k == "latency_max_ns" else totals[k] + v
            for i, v in enumerate(vals[n:]):
                buckets[i] += v
        return Stats(totals=totals, per_worker=per_slot, buckets=buckets)

    def close(self) -> None:
        self._words.release()
        self._mm.close()


class Slot:
    """One worker's row: plain index arithmetic on a shared ``memoryview('Q')``."""

    __slots__ = ("_hist_base", "_i_lat_count", "_i_lat_max", "_i_lat_sum", "_w", "base", "index_of",
                 "words")

    def __init__(self, cf: CounterFile, index: int) -> None:
        self._w = self.words = cf._words    # hot paths index ``words`` with ``index_of`` directly
        self.base = index * cf.row
        self._hist_base = self.base + len(cf.names)
        # No zeroing here: a worker restarted into its old slot keeps counting from where the
        # dead one stopped (the file is created zeroed).
        self.index_of = {name: self.base + i for i, name in enumerate(cf.names)}
        self._i_lat_count = self.index_of["latency_count"]
        self._i_lat_sum = self.index_of["latency_sum_ns"]
        self._i_lat_max = self.index_of["latency_max_ns"]

    def add(self, name: str, n: int = 1) -> None:
        idx = self.index_of.get(name)
        if idx is None:
            idx = self.index_of["drop.other"]
        self._w[idx] += n

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` drops for a reason name (unknown names count as ``drop.other``)."""
        self.add(f"drop.{reason}", n)

    def set_histogram(self, buckets: list[int]) -> None:
        """Overwrite this row's histogram (a writer that keeps its own, e.g. the TC program's)."""
        w, base = self._w, self._hist_base
        for i, n in enumerate(buckets[: histogram.NBUCKETS]):
            w[base + i] = n

    def latency(self, ns: int, count: int = 1) -> None:
        """Record ``count`` samples of ``ns`` nanoseconds (a batch shares one measurement)."""
        w = self._w
        w[self._hist_base + histogram.bucket_of(ns)] += count
        w[self._i_lat_count] += count
        w[self._i_lat_sum] += ns * count
        mx = self._i_lat_max
        if ns > w[mx]:
            w[mx] = ns


@dataclass(slots=True)
class Stats:
    """A read of the counter file."""

    totals: dict[str, int]
    per_worker: list[dict[str, int]]
    buckets: list[int]

    def drops(self) -> dict[str, int]:
        return {k[5:]: v for k, v in self.totals.items() if k.startswith("drop.") and v}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``stats --json`` and the API."""
        lat = histogram.summary(self.buckets)
        cnt = self.totals.get("latency_count", 0)
        lat["mean_us"] = round(self.totals["latency_sum_ns"] / cnt / 1000, 1) if cnt else None
        lat["max_us"] = round(self.totals["latency_max_ns"] / 1000, 1) if cnt else None
        if cnt:     # bucket interpolation can overshoot the true maximum
            for k in ("p50_us", "p90_us", "p99_us", "p999_us"):
                v = lat[k]
                if v is not None and lat["max_us"] is not None:
                    lat[k] = min(v, lat["max_us"])
        return {
            "totals": {k: v for k, v in self.totals.items() if not k.startswith("drop.")},
            "drops": self.drops(),
            "latency": lat,
            "histogram": {"bounds_ns": list(histogram.BOUNDS_NS), "buckets": self.buckets},
            "per_worker": self.per_worker,
        }
