"""A keyless (or key-holding) fake SNMPv3 agent for the USM security tests.

Messages are built and parsed with pysnmp's pyasn1 types and hashlib/hmac only, never with
``sync.snmp_ber`` / ``sync.snmp_usm``: a shared encoding mistake must not hide a bug.
The agent answers engine discovery like a real one (an unauthenticated Report
usmStatsUnknownEngineIDs carrying engine ID, boots and time, RFC 3414 4) and every other
request through ``on_request(msg_id) -> [datagrams]``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

ENGINE_ID = bytes.fromhex("80001f8880aabbccddeeff0011223344")
USM_UNKNOWN_ENGINE_IDS = "1.3.6.1.6.3.15.1.1.4.0"
USM_NOT_IN_TIME_WINDOWS = "1.3.6.1.6.3.15.1.1.2.0"
# inetCidrRouteIfIndex, IPv6 part; the row ::/0 via 2001:db8::666 (policy 0.0), ifIndex 1.
ROUTE_COLUMN = "1.3.6.1.2.1.4.24.7.1.7.2.16"
NEXT_HOP = bytes.fromhex("20010db8000000000000000000000666")
DEFAULT_ROUTE_ROW = ROUTE_COLUMN + "." + ".".join(
    map(str, [0] * 16 + [0, 2, 0, 0, 2, 16] + list(NEXT_HOP))
)
AFTER_ROUTE_COLUMN = "1.3.6.1.2.1.4.24.7.1.8.2.16.0"


def _pdu(kind: str, request_id: int, varbinds: list[tuple[str, Any]]) -> Any:
    pdu = {"response": rfc1905.ResponsePDU, "report": rfc1905.ReportPDU}[kind]()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_varbinds(pdu, [(rfc1902.ObjectName(oid), value) for oid, value in varbinds])
    return pdu


def build_message(
    msg_id: int, flags: int, pdu_kind: str, varbinds: list[tuple[str, Any]], *,
    engine_id: bytes = ENGINE_ID, boots: int = 7, time: int = 1000, user: bytes = b"",
    request_id: int | None = None, auth: tuple[bytes, Callable[..., Any], int] | None = None,
) -> bytes:
    """A plaintext-scoped-PDU SNMPv3 message; with ``auth`` (key, hash, MAC length) it carries
    a valid HMAC (authNoPriv), otherwise an empty msgAuthenticationParameters."""
    msg = SNMPv3Message()
    msg["msgVersion"] = 3
    header = msg["msgGlobalData"]
    header["msgID"] = msg_id
    header["msgMaxSize"] = 65507
    header["msgFlags"] = bytes([flags])
    header["msgSecurityModel"] = 3
    marker = os.urandom(auth[2]) if auth else b""
    sec = UsmSecurityParameters()
    sec["msgAuthoritativeEngineId"] = engine_id
    sec["msgAuthoritativeEngineBoots"] = boots
    sec["msgAuthoritativeEngineTime"] = time
    sec["msgUserName"] = user
    sec["msgAuthenticationParameters"] = marker
    sec["msgPrivacyParameters"] = b""
    msg["msgSecurityParameters"] = encoder.encode(sec)
    scoped = msg["msgData"]["plaintext"]
    scoped["contextEngineId"] = engine_id
    scoped["contextName"] = b""
    scoped["data"][pdu_kind] = _pdu(pdu_kind, msg_id if request_id is None else request_id, varbinds)
    wire = encoder.encode(msg)
    if auth is None:
        return bytes(wire)
    key, hash_factory, mac_len = auth
    at = wire.index(marker)
    zeroed = wire[:at] + bytes(mac_len) + wire[at + mac_len :]
    mac = hmac.new(key, zeroed, hash_factory).digest()[:mac_len]
    return bytes(zeroed[:at] + mac + zeroed[at + mac_len :])


def localized_auth_key(
    password: str, hash_factory: Callable[..., Any], engine_id: bytes = ENGINE_ID
) -> bytes:
    """RFC 3414 A.2 password-to-key and key localization, written out again for the tests."""
    data = (password.encode() * (1048576 // len(password) + 1))[:1048576]
    ku = hash_factory(data).digest()
    return bytes(hash_factory(ku + engine_id + ku).digest())


def forged_routes(msg_id: int, flags: int = 0, **kw: Any) -> bytes:
    """What a keyless attacker answers to any GETBULK: ``::/0`` and then the column's end."""
    return build_message(msg_id, flags, "response", [
        (DEFAULT_ROUTE_ROW, rfc1902.Integer32(1)), (AFTER_ROUTE_COLUMN, rfc1905.endOfMibView),
    ], **kw)


def parse_request(data: bytes) -> tuple[int, int, bytes, int | None]:
    """(msgID, msgFlags, engine ID, request-id or None when the scoped PDU is encrypted)."""
    msg, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
    sec, _ = decoder.decode(bytes(msg["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
    msg_id = int(msg["msgGlobalData"]["msgID"])
    flags = bytes(msg["msgGlobalData"]["msgFlags"])[0]
    data_choice = msg["msgData"]
    request_id = None
    if data_choice.getName() == "plaintext":
        request_id = int(v2c.apiPDU.get_request_id(data_choice["plaintext"]["data"].getComponent()))
    return msg_id, flags, bytes(sec["msgAuthoritativeEngineId"]), request_id


class FakeV3Agent:
    """A UDP agent on [::1] (an ephemeral port), run in the test's event loop."""

    def __init__(self, on_request: Callable[[int], list[bytes]], *, boots: int = 7, time: int = 1000) -> None:
        self.on_request = on_request
        self.boots, self.time = boots, time
        self.port = 0
        self.discoveries = 0
        self.requests: list[int] = []  # msgIDs of the non-discovery requests
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        agent = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                agent._received(data, addr)

        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("::1", 0))
        self.port = self._transport.get_extra_info("sockname")[1]

    def _received(self, data: bytes, addr: Any) -> None:
        assert self._transport is not None
        msg_id, flags, engine_id, request_id = parse_request(data)
        if not engine_id and not flags & 0x01:  # discovery (RFC 3414 4)
            self.discoveries += 1
            reply = build_message(msg_id, 0, "report", [(USM_UNKNOWN_ENGINE_IDS, rfc1902.Counter32(1))],
                                  boots=self.boots, time=self.time, request_id=request_id)
            self._transport.sendto(reply, addr)
            return
        self.requests.append(msg_id)
        for reply in self.on_request(msg_id):
            self._transport.sendto(reply, addr)

    def url(self, query: str = "") -> str:
        base = (f"snmpv3://ops@[::1]:{self.port}?auth_proto=sha256&priv_proto=aes128"
                "&auth_key=authpass256&priv_key=privpass128&timeout=0.3&retries=1")
        return base + (f"&{query}" if query else "")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
