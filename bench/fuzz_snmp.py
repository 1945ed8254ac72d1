"""Fuzz campaign: SNMP replies (BER, SNMPv2c, SNMPv3 USM) into the decoders and the walkers.

Every datagram an agent (or anyone on the path) sends reaches ``sync.snmp_ber.decode_response``
(v2c) or ``sync.snmp_usm.decode_v3`` (v3) inside the walkers' ``_on_datagram``.  The contract
(issue 15): the decoders raise only their own errors (BerError; AuthenticationError for a bad
MAC, both ValueErrors) and ``_on_datagram`` raises nothing -- a bad datagram is a counted,
logged drop.  Anything else is a *crash*, grouped by exception type and where it was raised,
with the first input that caused it kept as a hex reproducer.

Inputs (weighted mix): random bytes; random bytes behind a plausible SEQUENCE header;
mutations (flip/insert/delete/duplicate/splice) of valid replies built with our encoders AND
with pysnmp/pyasn1 (v2c Responses, v3 discovery Reports, v3 plaintext/authNoPriv/authPriv);
truncations; corrupted length fields (each TLV header found in a valid reply, set to 0, to
off-by-one, to long forms up to 0x84ffffffff, to indefinite 0x80); huge OIDs (many arcs, huge
and endless sub-identifiers, up to 64 KB); and replies from a key-holding hostile agent (the
plaintext PDU mutated, then encrypted and MAC'd correctly, so the decrypt and PDU paths are
reached past the MAC check).

Targets per input: decode_response; decode_v3 without and with keys; a v2c walker, a v3 walker
during discovery and a v3 walker with keys, each with requests pending for the replies' IDs.

Usage: python -m bench.fuzz_snmp [--inputs 1000000] [--seed 1] [--out bench/results/fuzz_snmp.json]
Prints progress (inputs/s, current and peak RSS), the crash classes, and writes JSON; exit 1 on
any crash.  ``tests/sync/test_fuzz_snmp_smoke.py`` runs 20,000 inputs of it in CI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.fuzzing import campaign_main, peak_rss_kib, rss_kib, where
from sync import snmp_ber, snmp_usm
from sync.snmp_ber import TAG_OCTETS, TAG_OID, TAG_SEQUENCE, _tlv, encode_integer, encode_oid
from sync.snmp_url import parse_snmp_url
from sync.snmp_walk import NativeV2cWalker, NativeV3Walker

ENGINE_ID = bytes.fromhex("80001f8880aabbccddeeff0011223344")
COMMUNITY = b"public"
V2C_URL = "snmp://public@[::1]:161"
V3_URL = ("snmpv3://ops@[::1]:161?auth_proto=sha256&priv_proto=aes128"
          "&auth_key=authpass256&priv_key=privpass128")
REQUEST_IDS = (4242, 4243, 77)
ROUTE_COLUMN = (1, 3, 6, 1, 2, 1, 4, 24, 7, 1, 7, 2, 16)
ROW = ROUTE_COLUMN + (0,) * 16 + (0, 2, 0, 0, 2, 16) + (32, 1, 13, 184) + (0,) * 11 + (1,)
USM_UNKNOWN_ENGINE_ID = snmp_usm.UNKNOWN_ENGINE_ID
DECODER_ERRORS = (snmp_ber.BerError, snmp_usm.AuthenticationError)




# ---------------------------------------------------------------- valid replies (seeds)


def _varbind(oid: tuple[int, ...], tag: int, body: bytes) -> bytes:
    return _tlv(TAG_SEQUENCE, encode_oid(oid) + _tlv(tag, body))


def _varbinds(rng: random.Random) -> bytes:
    """A varbind list with every value type the decoder knows."""
    row = (*ROW[:-1], rng.randrange(256))
    items = [
        _varbind(row, 0x02, rng.randbytes(rng.choice((1, 2, 4)))),
        _varbind((*ROUTE_COLUMN, 1, 2), 0x41, b"\x01\x00"),
        _varbind((*ROUTE_COLUMN, 3), 0x42, b"\x7f"),
        _varbind((*ROUTE_COLUMN, 4), 0x43, b"\x00\x01\x02"),
        _varbind((*ROUTE_COLUMN, 5), 0x46, b"\x01" * 8),
        _varbind((*ROUTE_COLUMN, 6), TAG_OCTETS, rng.randbytes(16)),
        _varbind((*ROUTE_COLUMN, 7), 0x40, b"\x0a\x00\x00\x01"),
        _varbind((*ROUTE_COLUMN, 8), TAG_OID, encode_oid((1, 3, 6, 1, 4, 1, 2636))[2:]),
        _varbind((*ROUTE_COLUMN, 9), 0x05, b""),
        _varbind((*ROUTE_COLUMN, 10), 0x80, b""),
        _varbind((*ROUTE_COLUMN, 11), 0x81, b""),
        _varbind((*ROUTE_COLUMN, 12), 0x82, b""),
    ]
    rng.shuffle(items)
    return _tlv(TAG_SEQUENCE, b"".join(items[: rng.randint(0, len(items))]))


def _pdu(rng: random.Random, tag: int, request_id: int, varbinds: bytes | None = None) -> bytes:
    return _tlv(tag, encode_integer(request_id) + encode_integer(rng.choice((0, 0, 1, 5)))
                + encode_integer(rng.choice((0, 1))) + (varbinds if varbinds is not None else _varbinds(rng)))


def ours_v2c(rng: random.Random) -> bytes:
    """A v2c Response built with our encoder."""
    pdu = _pdu(rng, snmp_ber.PDU_RESPONSE, rng.choice(REQUEST_IDS))
    return _tlv(TAG_SEQUENCE, encode_integer(1) + _tlv(TAG_OCTETS, COMMUNITY) + pdu)


def _usm(engine_id: bytes, boots: int, t: int, user: bytes, mac: bytes, salt: bytes) -> bytes:
    return _tlv(TAG_SEQUENCE, _tlv(TAG_OCTETS, engine_id) + encode_integer(boots) + encode_integer(t)
                + _tlv(TAG_OCTETS, user) + _tlv(TAG_OCTETS, mac) + _tlv(TAG_OCTETS, salt))


def ours_v3_report(rng: random.Random) -> bytes:
    """The unauthenticated discovery Report (usmStatsUnknownEngineIDs), our encoder."""
    varbinds = _tlv(TAG_SEQUENCE, _varbind(USM_UNKNOWN_ENGINE_ID, 0x41, b"\x01"))
    pdu = _pdu(rng, snmp_ber.PDU_REPORT, rng.choice(REQUEST_IDS), varbinds)
    scoped = _tlv(TAG_SEQUENCE, _tlv(TAG_OCTETS, ENGINE_ID) + _tlv(TAG_OCTETS, b"") + pdu)
    header = _tlv(TAG_SEQUENCE, encode_integer(rng.choice(REQUEST_IDS)) + encode_integer(65507)
                  + _tlv(TAG_OCTETS, b"\x00") + encode_integer(3))
    sec = _tlv(TAG_OCTETS, _usm(ENGINE_ID, 7, 1000, b"", b"", b""))
    return _tlv(TAG_SEQUENCE, encode_integer(3) + header + sec + scoped)


def ours_v3_authpriv(rng: random.Random, keys: snmp_usm.UsmKeys, pdu: bytes | None = None) -> bytes:
    """An authPriv Response (valid MAC, AES-encrypted scoped PDU) from our encoder."""
    msg_id = rng.choice(REQUEST_IDS)
    if pdu is None:
        pdu = _pdu(rng, snmp_ber.PDU_RESPONSE, msg_id)
    return snmp_usm.encode_authpriv(msg_id, pdu, engine_id=ENGINE_ID, boots=7, time=1000 + rng.randrange(100),
                                    user=b"ops", context=b"", keys=keys, salt=rng.randbytes(8))


class Pyasn1Seeds:
    """The same kinds of replies built by pysnmp/pyasn1 (an independent encoder)."""

    def __init__(self, keys: snmp_usm.UsmKeys) -> None:
        from pyasn1.codec.ber import encoder
        from pysnmp.proto import rfc1902, rfc1905
        from pysnmp.proto.api import v2c
        from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
        from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

        self.encoder, self.rfc1902, self.rfc1905, self.v2c = encoder, rfc1902, rfc1905, v2c
        self.SNMPv3Message, self.ScopedPDU, self.Usm = SNMPv3Message, ScopedPDU, UsmSecurityParameters
        self.keys = keys

    def _varbinds(self, rng: random.Random) -> list[tuple[Any, Any]]:
        r1902, r1905 = self.rfc1902, self.rfc1905
        row = ".".join(map(str, (*ROW[:-1], rng.randrange(256))))
        col = ".".join(map(str, ROUTE_COLUMN))
        items = [
            (row, r1902.Integer32(rng.randrange(-(1 << 31), 1 << 31))),
            (col + ".1", r1902.Counter32(rng.randrange(1 << 32))),
            (col + ".2", r1902.Gauge32(rng.randrange(1 << 32))),
            (col + ".3", r1902.TimeTicks(rng.randrange(1 << 32))),
            (col + ".4", r1902.Counter64(rng.randrange(1 << 64))),
            (col + ".5", r1902.OctetString(rng.randbytes(rng.randrange(20)))),
            (col + ".6", r1902.IpAddress("10.0.0.1")),
            (col + ".7", r1902.ObjectIdentifier("1.3.6.1.4.1.2636.1")),
            (col + ".8", r1905.endOfMibView),
            (col + ".9", r1905.noSuchInstance),
            (col + ".10", r1905.noSuchObject),
        ]
        rng.shuffle(items)
        return [(r1902.ObjectName(o), v) for o, v in items[: rng.randint(0, len(items))]]

    def _pdu(self, rng: random.Random, kind: str, request_id: int, varbinds: list[Any] | None = None) -> Any:
        pdu = {"response": self.rfc1905.ResponsePDU, "report": self.rfc1905.ReportPDU}[kind]()
        self.v2c.apiPDU.set_defaults(pdu)
        self.v2c.apiPDU.set_request_id(pdu, request_id)
        self.v2c.apiPDU.set_varbinds(pdu, varbinds if varbinds is not None else self._varbinds(rng))
        return pdu

    def v2c_response(self, rng: random.Random) -> bytes:
        """A v2c Response message (pysnmp's v2c API)."""
        msg = self.v2c.Message()
        self.v2c.apiMessage.set_defaults(msg)
        self.v2c.apiMessage.set_community(msg, COMMUNITY)
        self.v2c.apiMessage.set_pdu(msg, self._pdu(rng, "response", rng.choice(REQUEST_IDS)))
        return bytes(self.encoder.encode(msg))

    def _v3(self, rng: random.Random, flags: int, scoped_pdu: Any, mac: bool, salt: bytes = b"",
            encrypted: bytes | None = None, boots: int = 7, t: int = 1000) -> bytes:
        msg_id = rng.choice(REQUEST_IDS)
        msg = self.SNMPv3Message()
        msg["msgVersion"] = 3
        header = msg["msgGlobalData"]
        header["msgID"] = msg_id
        header["msgMaxSize"] = 65507
        header["msgFlags"] = bytes([flags])
        header["msgSecurityModel"] = 3
        marker = os.urandom(self.keys.mac_len) if mac else b""
        sec = self.Usm()
        sec["msgAuthoritativeEngineId"] = ENGINE_ID
        sec["msgAuthoritativeEngineBoots"] = boots
        sec["msgAuthoritativeEngineTime"] = t
        sec["msgUserName"] = b"ops" if mac else b""
        sec["msgAuthenticationParameters"] = marker
        sec["msgPrivacyParameters"] = salt
        msg["msgSecurityParameters"] = self.encoder.encode(sec)
        if encrypted is not None:
            msg["msgData"]["encryptedPDU"] = encrypted
        else:
            msg["msgData"]["plaintext"] = scoped_pdu
        wire = bytes(self.encoder.encode(msg))
        if not mac:
            return wire
        import hmac

        at = wire.index(marker)
        zeroed = wire[:at] + bytes(self.keys.mac_len) + wire[at + self.keys.mac_len :]
        digest = hmac.new(self.keys.auth_key, zeroed, self.keys.hash_factory).digest()[: self.keys.mac_len]
        return zeroed[:at] + digest + zeroed[at + self.keys.mac_len :]

    def _scoped(self, pdu: Any, kind: str) -> Any:
        scoped = self.ScopedPDU()
        scoped["contextEngineId"] = ENGINE_ID
        scoped["contextName"] = b""
        scoped["data"][kind] = pdu
        return scoped

    def v3_report(self, rng: random.Random) -> bytes:
        """Discovery Report, noAuthNoPriv."""
        vb = [(self.rfc1902.ObjectName(".".join(map(str, USM_UNKNOWN_ENGINE_ID))), self.rfc1902.Counter32(1))]
        pdu = self._pdu(rng, "report", rng.choice(REQUEST_IDS), vb)
        return self._v3(rng, 0, self._scoped(pdu, "report"), mac=False)

    def v3_plain(self, rng: random.Random) -> bytes:
        """A Response in plaintext, noAuthNoPriv or authNoPriv (valid MAC)."""
        pdu = self._pdu(rng, "response", rng.choice(REQUEST_IDS))
        mac = rng.random() < 0.5
        return self._v3(rng, 0x01 if mac else 0, self._scoped(pdu, "response"), mac=mac)

    def v3_authpriv(self, rng: random.Random) -> bytes:
        """An authPriv Response: pyasn1-encoded scoped PDU, AES-CFB, HMAC over the envelope."""
        pdu = self._pdu(rng, "response", rng.choice(REQUEST_IDS))
        plain = bytes(self.encoder.encode(self._scoped(pdu, "response")))
        salt = rng.randbytes(8)
        t = 1000 + rng.randrange(100)
        encrypted = snmp_usm._aes(self.keys.priv_key, 7, t, salt, plain, encrypt=True)
        return self._v3(rng, 0x03, None, mac=True, salt=salt, encrypted=encrypted, t=t)


# ---------------------------------------------------------------- input generators


def _tlv_headers(buf: bytes) -> list[tuple[int, int, int]]:
    """(header offset, header length, content length) of every TLV reachable in ``buf``."""
    out: list[tuple[int, int, int]] = []

    def walk(pos: int, end: int, depth: int) -> None:
        while pos < end and depth < 12:
            try:
                tag, start, stop = snmp_ber._header(buf, pos, end)
            except snmp_ber.BerError:
                return
            out.append((pos, start - pos, stop - start))
            if tag & 0x20:  # constructed: SEQUENCE, PDUs
                walk(start, stop, depth + 1)
            elif tag == TAG_OCTETS and stop - start > 2 and buf[start] == TAG_SEQUENCE:
                walk(start, stop, depth + 1)  # msgSecurityParameters holds a SEQUENCE
            pos = stop

    walk(0, len(buf), 0)
    return out


def corrupt_length(rng: random.Random, buf: bytes) -> bytes:
    """One TLV's length field replaced by a wrong one (short/long form, too big, indefinite)."""
    headers = _tlv_headers(buf)
    if not headers:
        return buf
    pos, hlen, clen = rng.choice(headers)
    new = rng.choice([
        bytes([0]), bytes([0x80]), bytes([0x7F]), bytes([max(0, min(clen - 1, 0x7F))]),
        bytes([min(clen + 1, 0x7F)]), b"\x81" + bytes([rng.randrange(256)]),
        b"\x82" + rng.randbytes(2), b"\x84\xff\xff\xff\xff", b"\x84" + rng.randbytes(4),
        b"\x85" + rng.randbytes(5), b"\x81\x00", b"\x82\x00" + bytes([min(clen, 255)]),
        bytes([0x80 | rng.randrange(1, 16)]),
    ])
    return buf[: pos + 1] + new + buf[pos + hlen :]


def huge_oid(rng: random.Random) -> bytes:
    """OID content octets SNMP does not allow, or only just allows."""
    kind = rng.randrange(6)
    if kind == 0:  # many arcs
        return b"\x2b" + bytes(rng.randrange(0x80) for _ in range(rng.choice((127, 128, 129, 200, 700))))
    if kind == 1:  # one endless sub-identifier (64 KB of continuation octets)
        n = rng.choice((6, 100, 5000, 65535))
        return b"\x2b" + b"\xff" * n + (b"\x01" if rng.random() < 0.5 else b"")
    if kind == 2:  # sub-identifiers at and beyond 2^32-1
        arc = rng.choice(((1 << 32) - 1, 1 << 32, (1 << 35) - 1, 1 << 70))
        enc = encode_oid((1, 3, arc % (1 << 128)))[2:] if arc < (1 << 32) else b"\x2b" + _base128(arc)
        return enc
    if kind == 3:  # arcs of 0x81 runs (the decoder's fast path for route OIDs)
        return b"\x2b" + b"".join(rng.choice((b"\x81", b"\x81\x00", b"\x01", b"\x81\x81\x01")) for _ in
                                  range(rng.randrange(1, 300)))
    if kind == 4:  # first octet forms
        return bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(3))
    return b""  # empty OID


def _base128(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def with_oid(rng: random.Random, content: bytes, v3_keys: snmp_usm.UsmKeys | None) -> bytes:
    """A v2c Response (or, with keys, an authPriv one) carrying OID content ``content``."""
    vb = _tlv(TAG_SEQUENCE, _tlv(TAG_OID, content) + _tlv(0x02, b"\x01"))
    if rng.random() < 0.5:  # as the value instead
        vb = _tlv(TAG_SEQUENCE, encode_oid(ROW) + _tlv(TAG_OID, content))
    pdu = _pdu(rng, snmp_ber.PDU_RESPONSE, rng.choice(REQUEST_IDS), _tlv(TAG_SEQUENCE, vb))
    if v3_keys is not None:
        return ours_v3_authpriv(rng, v3_keys, pdu)
    return _tlv(TAG_SEQUENCE, encode_integer(1) + _tlv(TAG_OCTETS, COMMUNITY) + pdu)


def mutate(rng: random.Random, buf: bytes, other: bytes) -> bytes:
    """A few random edits: flips, inserts, deletes, duplications, a splice with ``other``."""
    b = bytearray(buf)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        op = rng.randrange(7)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(at, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(at, len(b) - 1)] = rng.choice((0, 0x7F, 0x80, 0x81, 0xFF, 0x30, 0x02, 0x04, 0x06, 0xA2,
                                                 0xA8, rng.randrange(256)))
        elif op == 2:
            b[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3:
            del b[at : at + rng.randrange(1, 17)]
        elif op == 4:
            b[at:at] = b[at : at + rng.randrange(1, 64)]
        elif op == 5 and other:
            cut = rng.randrange(len(other))
            b[at:] = other[cut:]
        elif op == 6 and len(b) >= 4:  # swap two bytes
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            b[i], b[j] = b[j], b[i]
    return bytes(b)


def remac(buf: bytes, keys: snmp_usm.UsmKeys) -> bytes:
    """``buf`` with a correct MAC for ``keys`` where its envelope still locates the MAC field:
    what an agent that holds the keys can send (the MAC check is then passed)."""
    for pos, hlen, clen in _tlv_headers(buf):
        if clen == keys.mac_len and buf[pos] == TAG_OCTETS:
            import hmac

            start = pos + hlen
            zeroed = buf[:start] + bytes(clen) + buf[start + clen :]
            mac = hmac.new(keys.auth_key, zeroed, keys.hash_factory).digest()[:clen]
            return zeroed[:start] + mac + zeroed[start + clen :]
    return buf


def keyholder_mutation(rng: random.Random, keys: snmp_usm.UsmKeys, seed_pdu: bytes, other: bytes) -> bytes:
    """An authPriv reply whose *plaintext* PDU is mutated, then encrypted and MAC'd correctly."""
    pdu = mutate(rng, seed_pdu, other) if rng.random() < 0.8 else corrupt_length(rng, seed_pdu)
    return ours_v3_authpriv(rng, keys, pdu)


@dataclass
class Generator:
    """The weighted input mix; deterministic for a seed."""

    rng: random.Random
    keys: snmp_usm.UsmKeys
    seeds: list[bytes] = field(default_factory=list)
    pdus: list[bytes] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = self.rng
        ours: list[Callable[[random.Random], bytes]] = [ours_v2c, ours_v3_report,
                                                        lambda r: ours_v3_authpriv(r, self.keys)]
        pyasn1 = Pyasn1Seeds(self.keys)
        theirs: list[Callable[[random.Random], bytes]] = [pyasn1.v2c_response, pyasn1.v3_report,
                                                          pyasn1.v3_plain, pyasn1.v3_authpriv]
        for make in ours + theirs:
            for _ in range(40):
                self.seeds.append(make(rng))
        for _ in range(100):
            self.pdus.append(_pdu(rng, rng.choice((snmp_ber.PDU_RESPONSE, snmp_ber.PDU_REPORT)),
                                  rng.choice(REQUEST_IDS)))

    def __call__(self) -> bytes:
        rng = self.rng
        r = rng.random()
        seed = rng.choice(self.seeds)
        if r < 0.10:
            kind, data = "random", rng.randbytes(rng.randrange(0, 300))
        elif r < 0.18:
            body = rng.randbytes(rng.randrange(0, 200))
            kind, data = "random_in_sequence", b"\x30" + snmp_ber._length(len(body)) + body
        elif r < 0.50:
            kind, data = "mutation", mutate(rng, seed, rng.choice(self.seeds))
        elif r < 0.58:
            kind, data = "truncation", seed[: rng.randrange(len(seed) + 1)]
        elif r < 0.72:
            kind, data = "length_corruption", corrupt_length(rng, seed)
        elif r < 0.78:
            kind, data = "huge_oid", with_oid(rng, huge_oid(rng), self.keys if rng.random() < 0.3 else None)
        elif r < 0.90:
            kind, data = "keyholder_pdu", keyholder_mutation(rng, self.keys, rng.choice(self.pdus),
                                                             rng.choice(self.pdus))
        elif r < 0.97:
            kind, data = "keyholder_envelope", remac(mutate(rng, rng.choice(self.seeds[80:120]),
                                                            rng.choice(self.seeds)), self.keys)
        else:
            kind, data = "valid", seed
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return data


# ---------------------------------------------------------------- targets


class Targets:
    """The decoders and three walkers, with requests pending as a walk would have them."""

    def __init__(self, keys: snmp_usm.UsmKeys) -> None:
        self.loop = asyncio.new_event_loop()
        self.keys = keys
        self.v2c = NativeV2cWalker(parse_snmp_url(V2C_URL))
        self.v3 = NativeV3Walker(parse_snmp_url(V3_URL))
        self.v3._keys = keys
        self.v3._engine_id = ENGINE_ID
        self.v3._clock = snmp_usm.EngineClock(7, 1000, 1000, time.monotonic())
        self.discovery = NativeV3Walker(parse_snmp_url(V3_URL))
        self.discovery._discovering = True
        self.completed = 0
        for walker in (self.v2c, self.v3, self.discovery):
            self._pend(walker)

    def _pend(self, walker: NativeV2cWalker) -> None:
        for request_id in REQUEST_IDS:
            future = walker._pending.get(request_id)
            if future is None or future.done():
                if future is not None:
                    self.completed += 1
                    if not future.cancelled():
                        future.exception()  # retrieved: no "never retrieved" log at collection
                walker._pending[request_id] = self.loop.create_future()

    def calls(self) -> list[tuple[str, Callable[[bytes], object], tuple[type[BaseException], ...]]]:
        """(name, function, exceptions it may raise) per target."""
        return [
            ("decode_response", snmp_ber.decode_response, DECODER_ERRORS),
            ("decode_v3(no keys)", lambda b: snmp_usm.decode_v3(b, None), DECODER_ERRORS),
            ("decode_v3(keys)", lambda b: snmp_usm.decode_v3(b, self.keys), DECODER_ERRORS),
            ("v2c._on_datagram", self._walker(self.v2c), ()),
            ("v3._on_datagram", self._walker(self.v3), ()),
            ("v3(discovery)._on_datagram", self._walker(self.discovery), ()),
        ]

    def _walker(self, walker: NativeV2cWalker) -> Callable[[bytes], None]:
        def call(data: bytes) -> None:
            walker._on_datagram(data)
            self._pend(walker)
            if isinstance(walker, NativeV3Walker):
                walker._refusals.clear()
                # a long campaign moves the clock forward through forged-but-MAC'd times; keep
                # the walker where the valid seeds are, so they keep reaching the PDU decoder
                walker._clock.boots, walker._clock.latest, walker._clock.time = 7, 1000, 1000
                walker._clock.at = time.monotonic()

        return call


# ---------------------------------------------------------------- campaign


@dataclass
class Crash:
    """One crash class: exception type, where it was raised, first reproducer."""

    target: str
    exc_type: str
    where: str
    message: str
    reproducer_hex: str
    count: int = 0




def run(inputs: int, seed: int = 1, progress_every: int = 100_000,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the campaign; returns the result document (see module docstring)."""
    logging.getLogger("sync").setLevel(logging.CRITICAL)  # drops are logged once per reason anyway
    rng = random.Random(seed)
    keys = snmp_usm.make_keys("sha256", "authpass256", "aes128", "privpass128", ENGINE_ID)
    gen = Generator(rng, keys)
    targets = Targets(keys)
    calls = targets.calls()
    crashes: dict[tuple[str, str, str], Crash] = {}
    outcomes: dict[str, dict[str, int]] = {name: {} for name, _, _ in calls}
    slowest: tuple[float, str, str] = (0.0, "", "")
    rss_start, peak_start = rss_kib(), peak_rss_kib()
    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for n in range(1, inputs + 1):
        data = gen()
        for name, fn, allowed in calls:
            t = time.perf_counter()
            try:
                fn(data)
                outcome = "ok"
            except allowed as exc:
                outcome = type(exc).__name__
            except Exception as exc:
                outcome = "CRASH"
                key = (name, type(exc).__name__, where(exc, "/sync/"))
                crash = crashes.get(key)
                if crash is None:
                    crash = crashes[key] = Crash(name, key[1], key[2], str(exc)[:200], data.hex())
                crash.count += 1
            spent = time.perf_counter() - t
            if spent > slowest[0]:
                slowest = (spent, name, data.hex()[:400])
            counts = outcomes[name]
            counts[outcome] = counts.get(outcome, 0) + 1
        if n % progress_every == 0 or n == inputs:
            elapsed = time.perf_counter() - t0
            sample = {"inputs": n, "seconds": round(elapsed, 2), "inputs_per_s": round(n / elapsed),
                      "rss_kib": rss_kib(), "peak_rss_kib": peak_rss_kib(),
                      "crashes": sum(c.count for c in crashes.values())}
            samples.append(sample)
            out(f"{n:>10,} inputs  {sample['inputs_per_s']:>7,}/s  rss {sample['rss_kib'] / 1024:7.1f} MiB  "
                f"peak {sample['peak_rss_kib'] / 1024:7.1f} MiB  crashes {sample['crashes']}")
    elapsed = time.perf_counter() - t0
    targets.loop.close()
    result = {
        "inputs": inputs,
        "seed": seed,
        "seconds": round(elapsed, 2),
        "inputs_per_s": round(inputs / elapsed),
        "decoder_calls": inputs * len(calls),
        "crash_count": sum(c.count for c in crashes.values()),
        "crash_classes": [c.__dict__ for c in sorted(crashes.values(), key=lambda c: -c.count)],
        "input_kinds": dict(sorted(gen.kinds.items())),
        "outcomes": outcomes,
        "walker_requests_completed": targets.completed,
        "walker_drops": {"v3": dict(targets.v3.drops), "v3_discovery": dict(targets.discovery.drops)},
        "slowest_call": {"seconds": round(slowest[0], 4), "target": slowest[1],
                         "input_hex_prefix": slowest[2]},
        "rss_kib": {"start": rss_start, "end": rss_kib(), "peak_start": peak_start,
                    "peak_end": peak_rss_kib()},
        "samples": samples,
        "python": sys.version.split()[0],
    }
    return result


def report(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """Print the totals and the crash classes."""
    rss = result["rss_kib"]
    out(f"\n{result['inputs']:,} inputs ({result['decoder_calls']:,} target calls) in {result['seconds']} s: "
        f"{result['inputs_per_s']:,} inputs/s; RSS start {rss['start'] / 1024:.1f} MiB, end "
        f"{rss['end'] / 1024:.1f} MiB, peak {rss['peak_end'] / 1024:.1f} MiB")
    out(f"slowest single call: {result['slowest_call']['seconds'] * 1000:.1f} ms "
        f"({result['slowest_call']['target']})")
    out(f"walker requests completed by fuzzed datagrams: {result['walker_requests_completed']:,}")
    if not result["crash_classes"]:
        out("crashes: 0")
        return
    out(f"crashes: {result['crash_count']} in {len(result['crash_classes'])} classes")
    for c in result["crash_classes"]:
        out(f"  {c['count']:>8}  {c['target']}: {c['exc_type']} at {c['where']}: {c['message']}")
        more = "..." if len(c["reproducer_hex"]) > 300 else ""
        out(f"            reproducer: {c['reproducer_hex'][:300]}{more}")


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print, write JSON; exit 1 on any crash."""
    return campaign_main(argv, (__doc__ or "").split("\n")[0], "bench/results/fuzz_snmp.json", run, report,
                         lambda result: bool(result["crash_count"]))


if __name__ == "__main__":
    sys.exit(main())
