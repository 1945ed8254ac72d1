"""Counter families (units, labels) and the histogram's ``le`` = at-or-below bucket rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.dataplane import families as fam
from engine.dataplane import histogram
from engine.dataplane.counters import counter_names
from engine.wire.reasons import DropReason


def test_every_counter_has_a_family_of_its_unit() -> None:
    for name in counter_names():
        hit = fam.classify(name)
        if name.startswith("latency_") or name == "kernel_punted":
            assert hit is None          # the histogram's own; the sum of kernel_punt_<reason>
            continue
        assert hit is not None and hit[0] is not fam.OTHER, name
    assert fam.classify("drop.no_route") == (fam.DROPPED_DESTINATIONS, "no_route")
    assert fam.classify("drop.no_source_address") == (fam.DROPPED_COPIES, "no_source_address")
    assert fam.classify("drop.truncated") == (fam.DROPPED_PACKETS, "truncated")
    assert fam.classify("rx_queue_drops") == (fam.DROPPED_PACKETS, "rx_queue_full")
    assert fam.classify("received_bytes") == (fam.BYTES, "in")
    assert fam.classify("syscalls_tx") == (fam.SYSCALLS, "sendmmsg")
    # a counter nobody mapped yet (another path's, a new one) still reaches the metrics
    assert fam.classify("tc.redirected") == (fam.OTHER, "tc.redirected")
    # issue 18's ICMP errors and issue 17's kernel path have families of their own
    assert fam.classify("icmp_sent.time_exceeded") == (fam.ICMP_SENT, "time_exceeded")
    assert fam.classify("icmp_suppressed.packet_too_big") == (fam.ICMP_RATE_LIMITED, "packet_too_big")
    assert fam.classify("icmp_not_eligible") == (fam.ICMP_NOT_ELIGIBLE, None)
    assert fam.classify("kernel_received") == (fam.KERNEL_HANDLED, None)
    assert fam.classify("kernel_punt_no_route") == (fam.KERNEL_PUNTED, "no_route")
    assert fam.classify("kernel_punted") is None


def test_drops_total_is_whole_packets_only() -> None:
    c = {"drop.truncated": 2, "not_xcast": 3, "rx_queue_drops": 1, "drop.no_route": 50, "egress_mtu": 7}
    assert fam.drops_total(c) == 6
    assert set(fam.group(c)[fam.DROPPED_PACKETS]) == {"truncated", "not_xcast", "rx_queue_full"}
    for r in DropReason:                 # every reason keeps its own label value
        hit = fam.classify(f"drop.{r.value}")
        assert hit is not None and hit[1] == r.value


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_histogram_bucket_is_le(ns: int) -> None:
    """Bucket i holds bounds[i-1] < ns <= bounds[i]: Prometheus le, at or below."""
    i = histogram.bucket_of(ns)
    b = histogram.BOUNDS_NS
    if i < len(b):
        assert ns <= b[i]
    if i > 0:
        assert ns > b[i - 1]


def test_a_sample_on_a_bound_counts_in_that_bucket() -> None:
    for i, bound in enumerate(histogram.BOUNDS_NS):
        assert histogram.bucket_of(bound) == i
