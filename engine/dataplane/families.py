"""The one place that says what each worker counter *means*: its metric family, unit and labels.

The counter file (counters.py) keeps flat names (``received``, ``drop.no_route``, ``syscalls_tx``);
Prometheus (api/metrics.py) and ``xcast6-engine show stats`` present them grouped by unit, so that
``sum()`` over a family means something: packets with packets, bytes with bytes, system calls
with system calls, and a drop counted per destination or per copy never added to whole packets.

A counter another part of the engine adds (a new drop reason, an in-kernel path's counters,
ICMP errors) slots in with one entry in :data:`BY_NAME` or one prefix rule in :func:`classify`;
a name nobody mapped still appears, as ``xcast6_worker_events_total{event=NAME}``, so a new
counter is never lost on the way to a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.wire.reasons import DropReason

PREFIX = "xcast6_"


@dataclass(frozen=True)
class Family:
    """One Prometheus counter family (name without the ``xcast6_`` prefix)."""

    name: str
    help: str
    label: str | None = None  # the label that tells its members apart, if any


RECEIVED = Family("received_packets_total", "Frames the engine link's BPF filter passed to a worker.")
BRANCHED = Family("branched_packets_total", "XCAST6 packets that produced at least one copy.")
SENT = Family("sent_packets_total", "Copies written, by kind (xcast6 = multi-destination, x2u = unicast).",
              "kind")
BYTES = Family("bytes_total", "Bytes received (in) and written (out) on engine links, Ethernet included.",
               "dir")
DROPPED_PACKETS = Family(
    "dropped_packets_total",
    "Whole packets dropped, by reason (rx_queue_full: the worker's socket queue overflowed).",
    "reason",
)
DROPPED_DESTINATIONS = Family(
    "dropped_destinations_total",
    "Destinations cleared from a packet that was otherwise forwarded, by reason.",
    "reason",
)
DROPPED_COPIES = Family("dropped_copies_total", "Copies that could not leave, by reason.", "reason")
SYSCALLS = Family("syscalls_total", "System calls made by the workers, by call.", "call")
FLOW_CACHE_HITS = Family("flow_cache_hits_total", "Packets rendered from a learned flow template.")
CACHE_EVICTIONS = Family("cache_evictions_total", "Cache entries dropped for room, by cache.", "cache")
TABLE_UPDATES = Family("worker_table_updates_total", "Route diffs applied by the workers (summed).")
ICMP_SENT = Family("icmp_errors_sent_total", "ICMPv6 errors the engine sent, by type.", "type")
ICMP_RATE_LIMITED = Family("icmp_errors_rate_limited_total",
                           "ICMPv6 errors not sent because of the rate limit (workers.icmp_rate), by type.",
                           "type")
ICMP_NOT_ELIGIBLE = Family("icmp_errors_not_eligible_total",
                           "Packets that earned an error but may not get one (RFC 4443 2.4(e): the source "
                           "is not global unicast, or the packet is an ICMPv6 error).")
ICMP_RELAYED = Family("icmp_errors_relayed_total",
                      "Routers' ICMPv6 errors about the engine's copies passed on to the original sender "
                      "(RFC 2473 section 8 style), by type.", "type")
ICMP_RELAY_RATE_LIMITED = Family("icmp_errors_relay_rate_limited_total",
                                 "Routers' errors not relayed because of the rate limit (workers.icmp_rate), "
                                 "by type.", "type")
ICMP_RELAY_REFUSED = Family("icmp_errors_relay_refused_total",
                            "ICMPv6 errors addressed to the engine that were not relayed (not about a copy "
                            "it sent, not eligible, or a bad checksum).")
KERNEL_HANDLED = Family("kernel_path_handled_packets_total",
                        "Frames the TC eBPF program branched or dropped itself (also in received).")
KERNEL_PUNTED = Family("kernel_path_punted_packets_total",
                       "Frames the TC eBPF program passed unchanged to the Python workers, by reason "
                       "(counted again there when they receive them).", "reason")
OTHER = Family("worker_events_total", "Worker counters without a family of their own, by name.", "event")

#: Every family, in the order ``show stats`` and /metrics present them.
FAMILIES: tuple[Family, ...] = (
    RECEIVED, BRANCHED, SENT, BYTES, DROPPED_PACKETS, DROPPED_DESTINATIONS, DROPPED_COPIES,
    SYSCALLS, FLOW_CACHE_HITS, CACHE_EVICTIONS, TABLE_UPDATES, ICMP_SENT, ICMP_RATE_LIMITED,
    ICMP_NOT_ELIGIBLE, ICMP_RELAYED, ICMP_RELAY_RATE_LIMITED, ICMP_RELAY_REFUSED, KERNEL_HANDLED,
    KERNEL_PUNTED, OTHER,
)

#: Flat counter name -> (family, label value).  The latency_* counters are the histogram's.
BY_NAME: dict[str, tuple[Family, str | None]] = {
    "received": (RECEIVED, None),
    "received_bytes": (BYTES, "in"),
    "bytes_out": (BYTES, "out"),
    "rx_queue_drops": (DROPPED_PACKETS, "rx_queue_full"),
    "not_xcast": (DROPPED_PACKETS, "not_xcast"),
    "branched": (BRANCHED, None),
    "flow_cache_hits": (FLOW_CACHE_HITS, None),
    "flow_cache_evictions": (CACHE_EVICTIONS, "flow"),
    "plan_cache_evictions": (CACHE_EVICTIONS, "plan"),
    "copies_out": (SENT, "xcast6"),
    "x2u_out": (SENT, "x2u"),
    "egress_errors": (DROPPED_COPIES, "send_error"),
    "egress_no_link": (DROPPED_COPIES, "no_link"),
    "egress_no_mac": (DROPPED_COPIES, "no_router_mac"),
    "egress_mtu": (DROPPED_COPIES, "mtu"),
    "table_updates": (TABLE_UPDATES, None),
    "syscalls_rx": (SYSCALLS, "recv"),
    "syscalls_tx": (SYSCALLS, "sendmmsg"),
    "syscalls_poll": (SYSCALLS, "epoll_wait"),
    "icmp_not_eligible": (ICMP_NOT_ELIGIBLE, None),
    "icmp_relay_refused": (ICMP_RELAY_REFUSED, None),
    "kernel_received": (KERNEL_HANDLED, None),
}
HISTOGRAM_COUNTERS = frozenset({"latency_count", "latency_sum_ns", "latency_max_ns"})

# Branching drops that are not about the whole packet (engine/forwarding/branch.py).
_PER_DESTINATION = frozenset({DropReason.NO_ROUTE.value})
_PER_COPY = frozenset({DropReason.NO_SOURCE_ADDRESS.value})


def classify(name: str) -> tuple[Family, str | None] | None:
    """The family and label value of a flat counter name (None: not a counter family member)."""
    if name in HISTOGRAM_COUNTERS:
        return None
    hit = BY_NAME.get(name)
    if hit is not None:
        return hit
    if name == "kernel_punted":     # the sum of the kernel_punt_<reason> members
        return None
    if name.startswith("kernel_punt_"):
        return KERNEL_PUNTED, name[len("kernel_punt_"):]
    if name.startswith("icmp_sent."):
        return ICMP_SENT, name[len("icmp_sent."):]
    if name.startswith("icmp_suppressed."):
        return ICMP_RATE_LIMITED, name[len("icmp_suppressed."):]
    if name.startswith("icmp_relayed."):
        return ICMP_RELAYED, name[len("icmp_relayed."):]
    if name.startswith("icmp_relay_suppressed."):
        return ICMP_RELAY_RATE_LIMITED, name[len("icmp_relay_suppressed."):]
    if name.startswith("drop."):
        reason = name[5:]
        if reason in _PER_DESTINATION:
            return DROPPED_DESTINATIONS, reason
        if reason in _PER_COPY:
            return DROPPED_COPIES, reason
        return DROPPED_PACKETS, reason
    return OTHER, name


def group(counters: dict[str, int]) -> dict[Family, dict[str | None, int]]:
    """Counters by family: ``{family: {label value: count}}``, every family present."""
    out: dict[Family, dict[str | None, int]] = {f: {} for f in FAMILIES}
    for name, value in counters.items():
        hit = classify(name)
        if hit is not None:
            fam, label = hit
            out[fam][label] = out[fam].get(label, 0) + value
    return out


def drops_total(counters: dict[str, int]) -> int:
    """Whole packets dropped (what an operator means by "drops"; per-destination and per-copy
    drops are reported beside it, not added to it)."""
    return sum(group(counters)[DROPPED_PACKETS].values())
