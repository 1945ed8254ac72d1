"""Minimal BER codec for SNMPv2c GET / GETBULK messages (RFC 3416), pure and fast.

Why our own: pysnmp decodes every varbind through pyasn1 objects, which dominated a 10k-route
walk (~60 % of 13.7 s).  A route walk needs only OIDs, integers and octet strings, so a
flat decoder that returns ``(oid_tuple, value)`` pairs is enough.  SNMPv3 still goes through
pysnmp (USM auth/priv).

Values decode to: ``int`` (INTEGER, Counter32, Gauge32, TimeTicks, Counter64), ``bytes``
(OCTET STRING, IpAddress, Opaque), ``tuple`` (OBJECT IDENTIFIER), ``None`` (NULL) and the
:data:`END_OF_MIB` / :data:`NO_SUCH_OBJECT` / :data:`NO_SUCH_INSTANCE` markers.
"""

from __future__ import annotations

from dataclasses import dataclass

Oid = tuple[int, ...]
Value = int | bytes | tuple[int, ...] | None | str

NO_SUCH_OBJECT = "noSuchObject"
NO_SUCH_INSTANCE = "noSuchInstance"
END_OF_MIB = "endOfMibView"
EXCEPTIONS = (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB)

TAG_INTEGER = 0x02
TAG_OCTETS = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
PDU_GET = 0xA0
PDU_RESPONSE = 0xA2
PDU_GETBULK = 0xA5
PDU_REPORT = 0xA8
_UNSIGNED = {0x41, 0x42, 0x43, 0x46}  # Counter32, Gauge32, TimeTicks, Counter64
_BYTES = {TAG_OCTETS, 0x40, 0x44}  # OCTET STRING, IpAddress, Opaque
_EXCEPTION_TAGS = {0x80: NO_SUCH_OBJECT, 0x81: NO_SUCH_INSTANCE, 0x82: END_OF_MIB}

ERROR_STATUS = {
    0: "noError", 1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr",
    6: "noAccess", 7: "wrongType", 8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue",
    11: "noCreation", 12: "inconsistentValue", 13: "resourceUnavailable", 14: "commitFailed",
    15: "undoFailed", 16: "authorizationError", 17: "notWritable", 18: "inconsistentName",
}


class BerError(ValueError):
    """A message that is not valid BER/SNMP; the text says where it broke."""


@dataclass(frozen=True, slots=True)
class Response:
    """A decoded SNMPv2c Response-PDU."""

    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, Value]]
    pdu_tag: int = PDU_RESPONSE  # PDU_REPORT for SNMPv3 USM reports


# ---------------------------------------------------------------- encoding


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def encode_integer(value: int) -> bytes:
    """BER INTEGER (two's complement, minimal length)."""
    size = max(1, (value.bit_length() + 8) // 8)
    return _tlv(TAG_INTEGER, value.to_bytes(size, "big", signed=True))


def encode_oid(oid: Oid) -> bytes:
    """BER OBJECT IDENTIFIER."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise BerError(f"cannot encode OID {oid!r}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0x80:
            out.append(arc)
            continue
        chunk = bytearray()
        while arc:
            chunk.append((arc & 0x7F) | 0x80)
            arc >>= 7
        chunk[0] &= 0x7F
        out += chunk[::-1]
    return _tlv(TAG_OID, bytes(out))


def encode_pdu(request_id: int, oids: list[Oid], *, bulk: bool = False, max_repetitions: int = 0) -> bytes:
    """A GetRequest (or GetBulkRequest with non-repeaters 0) PDU for ``oids``."""
    varbinds = b"".join(_tlv(TAG_SEQUENCE, encode_oid(oid) + b"\x05\x00") for oid in oids)
    pdu = (
        encode_integer(request_id)
        + encode_integer(0)
        + encode_integer(max_repetitions if bulk else 0)
        + _tlv(TAG_SEQUENCE, varbinds)
    )
    return _tlv(PDU_GETBULK if bulk else PDU_GET, pdu)


def encode_request(
    community: bytes, request_id: int, oids: list[Oid], *, bulk: bool = False, max_repetitions: int = 0
) -> bytes:
    """An SNMPv2c GetRequest (or GetBulkRequest with non-repeaters 0) for ``oids``."""
    pdu = encode_pdu(request_id, oids, bulk=bulk, max_repetitions=max_repetitions)
    return _tlv(TAG_SEQUENCE, encode_integer(1) + _tlv(TAG_OCTETS, community) + pdu)


# ---------------------------------------------------------------- decoding


def _header(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Return (tag, content_start, content_end) of the TLV at ``pos``; checks it fits in ``end``."""
    if pos + 2 > end:
        raise BerError(f"truncated TLV header at byte {pos}")
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise BerError(f"bad BER length at byte {pos - 1}")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise BerError(f"value at byte {pos} claims {length} bytes, only {end - pos} left (reply cut short?)")
    return tag, pos, pos + length


MAX_OID_ARCS = 128  # RFC 2578 3.5: at most 128 sub-identifiers ...
MAX_ARC = 0xFFFFFFFF  # ... each at most 2^32-1, i.e. at most 5 base-128 octets


def decode_oid(content: bytes) -> Oid:
    """Decode OBJECT IDENTIFIER content octets to a tuple of arcs.

    Raises BerError for an OID SNMP does not allow (RFC 2578 3.5: a sub-identifier above
    2^32-1, more than 128 sub-identifiers); the caps also keep decoding linear in the input.
    """
    if not content:
        raise BerError("empty OID")
    if len(content) >= MAX_OID_ARCS * 5:
        raise BerError(f"OID of {len(content)} octets: more than {MAX_OID_ARCS} sub-identifiers")
    first = content[0]
    if first < 0x80 and content[-1] < 0x80:
        head = (first // 40, first % 40) if first < 80 else (2, first - 80)
        if content.isascii():  # every arc < 128
            return _capped(head + tuple(content[1:]))
        if content.translate(None, b"\x81").isascii():
            # Route-table OIDs carry address octets and prefix lengths: arcs up to 255, whose
            # BER form is 0x81 + (arc - 128).  Split on 0x81 so the work per arc stays in C.
            parts = content[1:].split(b"\x81")
            fast = list(parts[0])
            try:
                for part in parts[1:]:
                    fast.append(part[0] + 128)
                    fast += part[1:]
            except IndexError:
                pass  # 0x81 0x81: an arc >= 16384, use the generic loop
            else:
                return _capped(head + tuple(fast))
    arcs: list[int] = []
    value = 0
    octets = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if byte & 0x80:
            octets += 1
            if octets >= 5:  # a sixth octet would follow: more than 2^35, never a valid arc
                raise BerError("OID sub-identifier above 2^32-1")
            continue
        if value > MAX_ARC:
            raise BerError("OID sub-identifier above 2^32-1")
        arcs.append(value)
        value = octets = 0
    if content[-1] & 0x80:
        raise BerError("OID ends inside a sub-identifier")
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return _capped(head + tuple(arcs[1:]))


def _capped(oid: Oid) -> Oid:
    if len(oid) > MAX_OID_ARCS:
        raise BerError(f"OID of {len(oid)} sub-identifiers (at most {MAX_OID_ARCS})")
    return oid


def _integer(buf: bytes, start: int, end: int) -> int:
    if start == end:
        raise BerError(f"empty INTEGER at byte {start}")
    return int.from_bytes(buf[start:end], "big", signed=True)


def decode_response(buf: bytes) -> tuple[bytes, Response]:
    """Decode an SNMPv2c Response message; returns (community, response). Raises BerError."""
    end = len(buf)
    tag, pos, msg_end = _header(buf, 0, end)
    if tag != TAG_SEQUENCE:
        raise BerError(f"message is not a SEQUENCE (tag 0x{tag:02x})")
    if msg_end != end:
        raise BerError(f"message length {msg_end} differs from datagram length {end}")
    tag, start, stop = _header(buf, pos, msg_end)
    if tag != TAG_INTEGER:
        raise BerError("missing version")
    version = _integer(buf, start, stop)
    if version != 1:
        raise BerError(f"not an SNMPv2c message (version field {version})")
    tag, start, stop = _header(buf, stop, msg_end)
    if tag != TAG_OCTETS:
        raise BerError("missing community")
    community = buf[start:stop]
    return community, decode_pdu(buf, stop, msg_end)


def decode_pdu(buf: bytes, pos: int, end: int, allowed: tuple[int, ...] = (PDU_RESPONSE,)) -> Response:
    """Decode the PDU TLV at ``pos`` (a Response, or whatever ``allowed`` tags say)."""
    tag, pos, pdu_end = _header(buf, pos, end)
    pdu_tag = tag
    if tag not in allowed:
        raise BerError(f"not a Response-PDU (tag 0x{tag:02x})")
    fields = []
    for _ in range(3):
        tag, start, pos = _header(buf, pos, pdu_end)
        if tag != TAG_INTEGER:
            raise BerError("bad request-id/error-status/error-index")
        fields.append(_integer(buf, start, pos))
    tag, pos, list_end = _header(buf, pos, pdu_end)
    if tag != TAG_SEQUENCE:
        raise BerError("missing varbind list")
    varbinds: list[tuple[Oid, Value]] = []
    append = varbinds.append
    while pos < list_end:
        # Fast path for the common shape (short lengths, OID then INTEGER); anything else goes
        # through the checked generic path below.
        if (
            pos + 4 <= list_end
            and buf[pos] == TAG_SEQUENCE
            and buf[pos + 1] < 0x80
            and buf[pos + 2] == TAG_OID
            and buf[pos + 3] < 0x80
        ):
            vb_end = pos + 2 + buf[pos + 1]
            oid_end = pos + 4 + buf[pos + 3]
            if vb_end <= list_end and oid_end + 2 <= vb_end and buf[oid_end] == TAG_INTEGER:
                int_end = oid_end + 2 + buf[oid_end + 1]
                if int_end == vb_end and int_end > oid_end + 2:
                    append((decode_oid(buf[pos + 4 : oid_end]),
                            int.from_bytes(buf[oid_end + 2 : int_end], "big", signed=True)))
                    pos = vb_end
                    continue
        tag, vb_pos, vb_end = _header(buf, pos, list_end)
        if tag != TAG_SEQUENCE:
            raise BerError(f"varbind at byte {pos} is not a SEQUENCE")
        tag, start, stop = _header(buf, vb_pos, vb_end)
        if tag != TAG_OID:
            raise BerError(f"varbind at byte {pos} has no OID")
        oid = decode_oid(buf[start:stop])
        tag, start, stop = _header(buf, stop, vb_end)
        value: Value
        if tag == TAG_INTEGER:
            value = _integer(buf, start, stop)
        elif tag in _UNSIGNED:
            value = int.from_bytes(buf[start:stop], "big")
        elif tag in _BYTES:
            value = buf[start:stop]
        elif tag == TAG_OID:
            value = decode_oid(buf[start:stop])
        elif tag == TAG_NULL:
            value = None
        elif tag in _EXCEPTION_TAGS:
            value = _EXCEPTION_TAGS[tag]
        else:
            raise BerError(f"unsupported value tag 0x{tag:02x} for OID {'.'.join(map(str, oid))}")
        append((oid, value))
        pos = vb_end
    return Response(fields[0], fields[1], fields[2], varbinds, pdu_tag)
