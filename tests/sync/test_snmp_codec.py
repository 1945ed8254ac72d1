"""Pure parts of the SNMP source: BER codec and table decoding (no agent needed)."""

from __future__ import annotations

import ipaddress
import subprocess
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.model import Interface, NextHop
from sync import mib
from sync.snmp_ber import (
    END_OF_MIB,
    BerError,
    _tlv,
    decode_oid,
    decode_response,
    encode_integer,
    encode_oid,
    encode_request,
)
from sync.snmp_table import TableStats, build_routes, cidr_rows, decode_cidr_index
from sync.source import SourceError

oids = st.tuples(st.integers(0, 1), st.integers(0, 39)).flatmap(
    lambda head: st.lists(st.one_of(st.integers(0, 255), st.integers(0, 2**32 - 1)), max_size=60).map(
        lambda tail: head + tuple(tail)
    )
)


@given(oids)
def test_oid_roundtrip(oid: tuple[int, ...]) -> None:
    encoded = encode_oid(oid)
    body = encoded[2:] if encoded[1] < 0x80 else encoded[2 + (encoded[1] & 0x7F):]
    assert decode_oid(body) == oid


def test_oid_encoding_known_values() -> None:
    # 1.3 -> 0x2b; 24 fits one byte; 8072 = 0xbf 0x08 (two bytes, high bit on the first).
    assert encode_oid((1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7, 2, 16)).hex() == "060c2b0601020104180701070210"
    assert encode_oid((1, 3, 6, 1, 4, 1, 8072)).hex() == "06072b06010401bf08"
    assert decode_oid(bytes.fromhex("2b06010401bf08")) == (1, 3, 6, 1, 4, 1, 8072)
    assert decode_oid(bytes.fromhex("2b8100817f8101")) == (1, 3, 128, 255, 129)


def response(varbinds: list[bytes], request_id: int = 7) -> bytes:
    pdu = encode_integer(request_id) + encode_integer(0) + encode_integer(0) + _tlv(0x30, b"".join(varbinds))
    return _tlv(0x30, encode_integer(1) + _tlv(0x04, b"public") + _tlv(0xA2, pdu))


def test_decode_values_and_end_of_mib() -> None:
    data = response([
        _tlv(0x30, encode_oid((1, 3, 6, 1, 2)) + encode_integer(-1)),
        _tlv(0x30, encode_oid((1, 3, 6, 1, 3)) + _tlv(0x42, b"\xff\xff\xff\xff")),
        _tlv(0x30, encode_oid((1, 3, 6, 1, 4)) + _tlv(0x04, b"ge-0/0/1.0")),
        _tlv(0x30, encode_oid((1, 3, 6, 1, 5)) + b"\x82\x00"),
    ])
    community, decoded = decode_response(data)
    assert community == b"public" and decoded.request_id == 7
    assert [v for _, v in decoded.varbinds] == [-1, 0xFFFFFFFF, b"ge-0/0/1.0", END_OF_MIB]


@pytest.mark.parametrize("cut", [1, 10, 30, -1])
def test_truncated_reply_is_a_ber_error(cut: int) -> None:
    data = response([_tlv(0x30, encode_oid((1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7)) + encode_integer(5))] * 3)
    with pytest.raises(BerError):
        decode_response(data[:cut])


def test_net_snmp_tools_accept_our_encoding(tmp_path) -> None:
    # snmpbulkget would need an agent; instead decode our request with tshark, the reference.
    message = encode_request(b"public", 4242, [mib.INET_CIDR_ROUTE_IFINDEX], bulk=True, max_repetitions=50)
    pcap = tmp_path / "req.txt"
    # text2pcap input: offset + hex bytes, wrapped as UDP/IPv6 to port 161
    pcap.write_text("0000 " + " ".join(f"{b:02x}" for b in message) + "\n")
    out = tmp_path / "req.pcap"
    subprocess.run(["text2pcap", "-q", "-6", "::1,::1", "-u", "40000,161", str(pcap), str(out)], check=True)
    shown = subprocess.run(["tshark", "-r", str(out), "-V", "-O", "snmp"], capture_output=True, text=True,
                           check=True).stdout
    assert "getBulkRequest" in shown and "request-id: 4242" in shown and "max-repetitions: 50" in shown
    assert "1.3.6.1.2.1.4.24.7.1.7" in shown


def v6(text: str) -> tuple[int, ...]:
    return tuple(ipaddress.IPv6Address(text).packed)


def test_cidr_index_policy_is_skipped_whatever_its_length() -> None:
    for policy in ((0, 0), (0, 0, 7), (), (1, 3, 6, 1, 4, 1, 9)):
        index = (*v6("2001:db8::"), 48, len(policy), *policy, 2, 16, *v6("fe80::1"))
        dest, plen, gateway = decode_cidr_index(index, mib.INET_CIDR_ROUTE_IFINDEX)
        assert (dest, plen, gateway) == (bytes(v6("2001:db8::")), 48, bytes(v6("fe80::1")))
    # no next hop (Junos) and :: (net-snmp) both mean connected
    assert decode_cidr_index((*v6("2001:db8::"), 64, 2, 0, 0, 0, 0), mib.INET_CIDR_ROUTE_IFINDEX)[2] is None
    assert decode_cidr_index((*v6("2001:db8::"), 64, 3, 0, 0, 9, 2, 16, *v6("::")),
                             mib.INET_CIDR_ROUTE_IFINDEX)[2] is None


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ((*v6("2001:db8::"), 129, 0, 0, 0), "prefix length 129"),
        ((*v6("2001:db8::"), 64, 9, 0, 0), "policy length 9 runs past"),
        ((*v6("2001:db8::"), 64, 0, 2, 16, 1, 2), "next-hop length 16 but 2"),
        ((*v6("2001:db8::")[:15], 300, 64, 0, 0, 0), "arc out of 0..255"),
        ((1, 2, 3), "too short"),
    ],
)
def test_cidr_index_garbage(index: tuple[int, ...], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        decode_cidr_index(index, mib.INET_CIDR_ROUTE_IFINDEX)


def row(dest: str, plen: int, nexthop: str | None, policy: int) -> tuple[int, ...]:
    nh = (0, 0) if nexthop is None else (2, 16, *v6(nexthop))
    return (*v6(dest), plen, 3, 0, 0, policy, *nh)


def test_ecmp_merge_metric_preference_and_filters() -> None:
    ifs = [Interface("xe-0", 1), Interface("xe-1", 2)]
    idx_rows = [
        (row("2001:db8:1::", 48, "fe80::1", 1), 1),
        (row("2001:db8:1::", 48, "fe80::2", 2), 2),  # same prefix, next row: ECMP
        (row("2001:db8:2::", 48, "fe80::1", 3), 1),
        (row("2001:db8:2::", 48, "fe80::9", 4), 2),  # higher metric: standby, not ECMP
        (row("2001:db8:3::1", 128, None, 5), 1),  # own address
        (row("ff00::", 8, None, 6), 1),
        (row("fe80::", 64, None, 7), 1),
        (row("::1", 128, None, 8), 1),
    ]
    metric_rows = [(idx, 10) for idx, _ in idx_rows]
    metric_rows[3] = (idx_rows[3][0], 20)
    stats = TableStats()
    routes = build_routes(cidr_rows(idx_rows, None, None, metric_rows), ifs, {bytes(v6("2001:db8:3::1"))},
                          stats=stats)
    by_prefix = {str(r.prefix): r for r in routes}
    assert set(by_prefix) == {"2001:db8:1::/48", "2001:db8:2::/48"}
    assert by_prefix["2001:db8:1::/48"].nexthops == (NextHop("xe-0", bytes(v6("fe80::1"))),
                                                     NextHop("xe-1", bytes(v6("fe80::2"))))
    assert by_prefix["2001:db8:2::/48"].nexthops == (NextHop("xe-0", bytes(v6("fe80::1"))),)
    assert stats.dropped == {"own_address": 2, "multicast": 1, "link_local": 1}


def test_unknown_ifindex_error_names_it_or_placeholder() -> None:
    rows = cidr_rows([(row("2001:db8:1::", 48, "fe80::1", 1), 42)])
    expected = r"ifIndex not in IF-MIB ifName/ifDescr: 42 \(row 1\.3\.6\.1\.2\.1\.4\.24"
    with pytest.raises(SourceError, match=expected):
        build_routes(rows, [], set(), host="snmp://r1:161")
    routes = build_routes(rows, [], set(), unknown_ifindex="placeholder")
    assert routes[0].nexthops[0].ifname == "ifindex-42"


def test_garbage_value_in_a_row() -> None:
    expected = r"garbage value in row .*inetCidrRouteIfIndex should be an integer"
    with pytest.raises(SourceError, match=expected):
        cidr_rows([(row("2001:db8:1::", 48, None, 1), b"eth0")])


def test_walk_step_stops_at_column_end_and_refuses_non_increasing_oids() -> None:
    from sync.snmp_walk import _check_walk_step

    column = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7)
    rows: list = []
    nxt = _check_walk_step("r1", column, column, [((*column, 1), 5), ((*column, 2), 6)], rows)
    assert nxt == (*column, 2) and rows == [((1,), 5), ((2,), 6)]
    next_column = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 8, 1)
    assert _check_walk_step("r1", column, (*column, 2), [(next_column, 1)], rows) is None
    assert _check_walk_step("r1", column, (*column, 2), [((*column, 3), END_OF_MIB)], rows) is None
    with pytest.raises(SourceError, match=r"r1: agent returned non-increasing OID .*\.7\.1 after .*\.7\.2"):
        _check_walk_step("r1", column, (*column, 2), [((*column, 1), 5)], rows)
    with pytest.raises(SourceError, match="empty GETBULK reply"):
        _check_walk_step("r1", column, (*column, 2), [], rows)


def test_walk_step_refuses_an_oid_before_the_column_instead_of_ending_it() -> None:
    # A garbled or hostile reply jumping backwards out of the column used to end it silently
    # (a truncated table); only an OID past the column's end may end it.
    from sync.snmp_walk import _check_walk_step

    column = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7, 2, 16)
    if_descr_1 = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 1)  # lexicographically before the column
    rows: list = []
    expected = r"r1: agent returned non-increasing OID 1\.3\.6\.1\.2\.1\.2\.2\.1\.2\.1 after 1\.3\.6"
    with pytest.raises(SourceError, match=expected):
        _check_walk_step("r1", column, column, [(if_descr_1, b"eth0")], rows)
    row = (*column, 0, 5)
    with pytest.raises(SourceError, match="non-increasing OID"):
        _check_walk_step("r1", column, column, [(row, 1), ((1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 6, 9), 1)], rows)
    with pytest.raises(SourceError, match="non-increasing OID"):  # the column's own OID is not a row
        _check_walk_step("r1", column, row, [(column, 1)], [])
    rows = []
    past_end = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7, 3)
    assert _check_walk_step("r1", column, column, [(row, 1), (past_end, 1)], rows) is None
    assert rows == [((0, 5), 1)]
    assert _check_walk_step("r1", column, row, [(row, END_OF_MIB)], rows) is None  # name = request


def oid_content(oid: tuple[int, ...]) -> bytes:
    encoded = encode_oid(oid)
    return encoded[2 + (encoded[1] & 0x7F if encoded[1] & 0x80 else 0) :]


def test_oid_sub_identifier_and_length_caps() -> None:
    # RFC 2578 3.5: sub-identifiers up to 2^32-1, at most 128 of them.  A 64 KB sub-identifier
    # used to take ~0.6 s (quadratic) and then break oid_text() with a ValueError.
    assert decode_oid(oid_content((1, 3, 2**32 - 1))) == (1, 3, 2**32 - 1)
    for bad in ((1, 3, 2**32), (1, 3, 2**40), (2, 2**32)):
        with pytest.raises(BerError, match="above 2"):
            decode_oid(oid_content(bad))
    started = time.monotonic()
    with pytest.raises(BerError):
        decode_oid(b"\x2b" + b"\xff" * 65535 + b"\x7f")
    with pytest.raises(BerError):
        decode_oid(b"\x2b" + b"\x8f\xff\xff\xff\x7f" * 20000)
    assert time.monotonic() - started < 0.1
    longest = (1, 3) + (1,) * 126
    assert decode_oid(oid_content(longest)) == longest
    for too_long in ((1, 3) + (1,) * 127, (1, 3) + (200,) * 127, (1, 3) + (20000,) * 127):
        with pytest.raises(BerError, match="129 sub-identifiers"):
            decode_oid(oid_content(too_long))
    # In a whole reply it is a BerError too (the walker's "malformed reply"), not a ValueError.
    varbind = _tlv(0x30, _tlv(0x06, b"\x2b" + b"\xff" * 300 + b"\x7f") + b"\x05\x00")
    pdu = _tlv(0xA2, encode_integer(1) + encode_integer(0) + encode_integer(0) + _tlv(0x30, varbind))
    with pytest.raises(BerError):
        decode_response(_tlv(0x30, encode_integer(1) + _tlv(0x04, b"public") + pdu))
