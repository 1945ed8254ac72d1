"""SNMPv3 USM pieces of the native walker: RFC test vectors and message round trips."""

from __future__ import annotations

import hashlib

import pytest

from sync.snmp_ber import _tlv, encode_integer, encode_oid
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
