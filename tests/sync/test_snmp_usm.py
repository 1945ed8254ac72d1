"""SNMPv3 USM pieces of the native walker: RFC test vectors and message round trips."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.snmp_ber import BerError, _tlv, decode_response, encode_integer, encode_oid
from sync.snmp_usm import decode_v3, encode_authpriv, localize, make_keys, password_to_key

ENGINE = bytes.fromhex("000000000000000000000002")


def test_rfc3414_a3_key_localization_vectors() -> None:
    ku = password_to_key(b"maplesyrup", hashlib.md5)
    assert ku.hex() == "9faf3283884e92834ebc9847d8edd963"
    assert localize(ku, ENGINE, hashlib.md5).hex() == "526f5eed9fcce26f8964c2930787d82b"
    ku = password_to_key(b"maplesyrup", hashlib.sha1)
    assert ku.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    assert localize(ku, ENGINE, hashlib.sha1).hex() == "6695febc9288e36282235fc7151f128497b38f3f"


@pytest.mark.parametrize(("auth", "priv", "mac_len", "key_len"), [
    ("sha", "aes256", 12, 32), ("sha", "aes256c", 12, 32), ("sha256", "aes128", 24, 16),
    ("sha512", "aes192", 48, 24),
])
def test_key_sizes_and_extensions(auth: str, priv: str, mac_len: int, key_len: int) -> None:
    keys = make_keys(auth, "authpassword", priv, "privpassword", ENGINE)
    assert keys.mac_len == mac_len and len(keys.priv_key) == key_len
    if priv in ("aes256", "aes256c"):
        # SHA-1 gives 20 bytes: both extensions agree on the first 20, differ after.
        other = make_keys(auth, "authpassword", "aes256c" if priv == "aes256" else "aes256", "privpassword",
                          ENGINE)
        assert other.priv_key[:20] == keys.priv_key[:20] and other.priv_key != keys.priv_key


def response_pdu(request_id: int) -> bytes:
    varbind = _tlv(0x30, encode_oid((1, 3, 6, 1, 2, 1, 4, 24, 6, 0)) + _tlv(0x42, b"\x2a"))
    body = encode_integer(request_id) + encode_integer(0) + encode_integer(0) + _tlv(0x30, varbind)
    return _tlv(0xA2, body)


def test_authpriv_round_trip_and_tamper_detection() -> None:
    keys = make_keys("sha256", "authpass256", "aes128", "privpass128", ENGINE)
    message = encode_authpriv(77, response_pdu(77), engine_id=ENGINE, boots=3, time=1234, user=b"ops",
                              context=b"", keys=keys, salt=bytes(range(8)))
    reply = decode_v3(message, keys)
    assert (reply.msg_id, reply.engine_id, reply.boots, reply.time) == (77, ENGINE, 3, 1234)
    assert reply.response.varbinds == [((1, 3, 6, 1, 2, 1, 4, 24, 6, 0), 42)]
    assert b"\x2b\x06\x01\x02\x01\x04\x18\x06" not in message  # the PDU travels encrypted
    tampered = bytearray(message)
    tampered[-1] ^= 1
    with pytest.raises(ValueError, match="authentication failed"):
        decode_v3(bytes(tampered), keys)
    wrong = make_keys("sha256", "otherpass256", "aes128", "privpass128", ENGINE)
    with pytest.raises(ValueError, match="wrong auth key"):
        decode_v3(message, wrong)


# ---------------------------------------------------------------- hostile input


def tlv(tag: int, body: bytes) -> bytes:
    """Hand-written BER TLV (independent of sync.snmp_ber), short or 2-octet lengths."""
    assert len(body) < 65536
    length = bytes([len(body)]) if len(body) < 0x80 else b"\x82" + len(body).to_bytes(2, "big")
    return bytes([tag]) + length + body


KEYS = make_keys("sha256", "authpass256", "aes128", "privpass128", ENGINE)


def test_priv_without_auth_and_negative_boots_is_a_ber_error() -> None:
    # msgFlags 0x02 (priv without auth: invalid, RFC 3412) and boots -1 reached struct.pack
    # for the AES IV and raised struct.error, which escaped the walker's datagram handler.
    def message(flags: int, boots: bytes) -> bytes:
        header = tlv(0x30, tlv(0x02, b"\x05") + tlv(0x02, b"\x00\xff\xe3") + tlv(0x04, bytes([flags]))
                     + tlv(0x02, b"\x03"))
        usm = tlv(0x30, tlv(0x04, ENGINE) + tlv(0x02, boots) + tlv(0x02, b"\x05") + tlv(0x04, b"ops")
                  + tlv(0x04, b"") + tlv(0x04, bytes(8)))
        return tlv(0x30, tlv(0x02, b"\x03") + header + tlv(0x04, usm) + tlv(0x04, bytes(32)))

    with pytest.raises(BerError, match="privacy without authentication"):
        decode_v3(message(0x02, b"\xff"), KEYS)
    with pytest.raises(BerError, match="out of range"):
        decode_v3(message(0x00, b"\xff"), KEYS)
    with pytest.raises(BerError, match="out of range"):
        decode_v3(message(0x00, b"\x00\x80\x00\x00\x00"), KEYS)  # 2^31


def v3_plaintext(flags: int, pdu: bytes) -> bytes:
    header = tlv(0x30, tlv(0x02, b"\x05") + tlv(0x02, b"\x00\xff\xe3") + tlv(0x04, bytes([flags]))
                 + tlv(0x02, b"\x03"))
    usm = tlv(0x30, tlv(0x04, ENGINE) + tlv(0x02, b"\x07") + tlv(0x02, b"\x05") + tlv(0x04, b"ops")
              + tlv(0x04, b"") + tlv(0x04, b""))
    scoped = tlv(0x30, tlv(0x04, ENGINE) + tlv(0x04, b"") + pdu)
    return tlv(0x30, tlv(0x02, b"\x03") + header + tlv(0x04, usm) + scoped)


VALID_V3 = [
    v3_plaintext(0x00, response_pdu(5)),
    v3_plaintext(0x00, tlv(0xA8, response_pdu(5)[2:])),  # Report
    encode_authpriv(5, response_pdu(5), engine_id=ENGINE, boots=7, time=5, user=b"ops", context=b"",
                    keys=KEYS, salt=bytes(8)),
]


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)  # (where, byte)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for at, byte in edits:
        out[at % len(out)] = byte
    return bytes(out[:cut] if cut is not None else out)


def assert_only_value_errors(data: bytes) -> None:
    """decode_v3 (keyless and keyed) raises nothing but ValueError (BerError and
    AuthenticationError: what the walker catches and counts), and the walker never raises."""
    for keys in (None, KEYS):
        with contextlib.suppress(ValueError):
            decode_v3(data, keys)
    WALKER._on_datagram(data)


def v3_walker() -> Any:
    from sync.snmp_url import parse_snmp_url
    from sync.snmp_walk import NativeV3Walker

    walker = NativeV3Walker(parse_snmp_url(
        "snmpv3://ops@[::1]:1?auth_proto=sha256&priv_proto=aes128&auth_key=authpass256&priv_key=privpass128"))
    walker._keys, walker._engine_id = KEYS, ENGINE
    return walker


WALKER = v3_walker()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_raise_only_value_errors(data: bytes) -> None:
    assert_only_value_errors(data)
    with contextlib.suppress(BerError):  # the v2c walker catches BerError only
        decode_response(data)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID_V3), EDITS, st.one_of(st.none(), st.integers(0, 400)))
def test_fuzz_mutated_v3_messages_raise_only_value_errors(
    message: bytes, edits: list[tuple[int, int]], cut: int | None
) -> None:
    assert_only_value_errors(mutate(message, edits, cut))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_garbage_inside_a_valid_authpriv_envelope(pdu: bytes) -> None:
    # Authenticated and decryptable, but the scoped PDU inside is garbage (the deepest path).
    message = encode_authpriv(5, pdu, engine_id=ENGINE, boots=7, time=5, user=b"ops", context=b"",
                              keys=KEYS, salt=bytes(8))
    assert_only_value_errors(message)


@settings(max_examples=400, deadline=None)
@given(EDITS, st.one_of(st.none(), st.integers(0, 200)))
def test_fuzz_mutated_v2c_responses_raise_only_ber_errors(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    valid = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x04, b"public") + response_pdu(5))
    with contextlib.suppress(BerError):  # the v2c walker catches BerError only
        decode_response(mutate(valid, edits, cut))


def ber_int(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


@settings(max_examples=500, deadline=None)
@given(flags=st.integers(0, 255), boots=st.integers(-(2**40), 2**40), time=st.integers(-(2**40), 2**40),
       mac=st.binary(max_size=30), salt=st.binary(max_size=10), body=st.binary(max_size=64),
       encrypted=st.booleans())
def test_fuzz_v3_header_fields(flags: int, boots: int, time: int, mac: bytes, salt: bytes, body: bytes,
                               encrypted: bool) -> None:
    # Well-formed BER with hostile field values: flag combinations, out-of-range boots/time,
    # MAC and salt of any length, plaintext or "encrypted" data.
    header = tlv(0x30, ber_int(5) + ber_int(65507) + tlv(0x04, bytes([flags])) + ber_int(3))
    usm = tlv(0x30, tlv(0x04, ENGINE) + ber_int(boots) + ber_int(time) + tlv(0x04, b"ops")
              + tlv(0x04, mac) + tlv(0x04, salt))
    data = tlv(0x04, body) if encrypted else tlv(0x30, tlv(0x04, ENGINE) + tlv(0x04, b"") + response_pdu(5))
    assert_only_value_errors(tlv(0x30, ber_int(3) + header + tlv(0x04, usm) + data))
