"""SNMP transports for the route walk: a native SNMPv2c walker and a pysnmp (v3/USM) walker.

Both return plain Python values (see :mod:`sync.snmp_ber`) and raise :class:`SourceError`
with the host, the OID and what went wrong; a walk either completes or raises, it never
returns part of a column.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Callable
from typing import Any, Protocol

from sync import snmp_ber
from sync.mib import Oid, oid_text
from sync.snmp_ber import END_OF_MIB, EXCEPTIONS, BerError, Value
from sync.snmp_url import SnmpConfig
from sync.source import SourceError

RowCallback = Callable[[int], None]


class Walker(Protocol):
    """What the route source needs from an SNMP transport."""

    async def get(self, oids: list[Oid]) -> list[tuple[Oid, Value]]:
        """GET the given instances (exception markers are returned as values)."""
        ...

    async def walk(self, column: Oid, on_rows: RowCallback | None = None) -> list[tuple[Oid, Value]]:
        """All ``(index, value)`` under ``column`` (index = OID suffix), by GETBULK."""
        ...

    async def close(self) -> None:
        """Release sockets / engine."""
        ...


def _check_walk_step(
    host: str, column: Oid, last: Oid, varbinds: list[tuple[Oid, Value]], rows: list[tuple[Oid, Value]]
) -> Oid | None:
    """Append this reply's in-column varbinds to ``rows``; return the next OID or None when done."""
    if not varbinds:
        raise SourceError(
            f"{host}: empty GETBULK reply while walking {oid_text(column)} after {oid_text(last)}"
        )
    n = len(column)
    for oid, value in varbinds:
        if value == END_OF_MIB or oid[:n] != column:
            return None
        if value in EXCEPTIONS:
            return None
        if oid <= last:
            raise SourceError(
                f"{host}: agent returned non-increasing OID {oid_text(oid)} after {oid_text(last)} "
                f"walking {oid_text(column)}"
            )
        rows.append((oid[n:], value))
        last = oid
    return last


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, walker: NativeV2cWalker) -> None:
        self.walker = walker

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.walker._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: agent gone; fail everything waiting now rather than time out.
        text = getattr(exc, "strerror", None) or str(exc)
        self.walker._fail_all(SourceError(f"{self.walker.target}: {text} (agent unreachable)"))


class NativeV2cWalker:
    """SNMPv2c over asyncio UDP with the flat BER codec (the hot path for big tables)."""

    def __init__(self, config: SnmpConfig) -> None:
        self.config = config
        self.target = config.display_url()
        self._community = config.community.encode()
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[snmp_ber.Response]] = {}
        self._next_id = random.randint(1, 1 << 30)
        self.requests_sent = 0
        self.retransmits = 0

    async def _open(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            try:
                family = 10 if ipaddress.ip_address(self.config.host).version == 6 else 2
            except ValueError:
                family = 0  # a name: let the resolver pick
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self),
                    remote_addr=(self.config.host, self.config.port),
                    family=family,
                )
            except OSError as exc:
                raise SourceError(f"{self.target}: cannot open UDP socket: {exc}") from None
            self._transport = transport
        return self._transport

    def _on_datagram(self, data: bytes) -> None:
        try:
            community, response = snmp_ber.decode_response(data)
        except BerError as exc:
            self._fail_all(SourceError(f"{self.target}: malformed SNMP reply ({len(data)} bytes): {exc}"))
            return
        future = self._pending.get(response.request_id)
        if future is None or future.done() or community != self._community:
            return  # a late reply to a retransmitted request, or not for us
        future.set_result(response)

    def _fail_all(self, exc: SourceError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)

    async def _request(self, oids: list[Oid], *, bulk: bool) -> snmp_ber.Response:
        transport = await self._open()
        loop = asyncio.get_running_loop()
        self._next_id = (self._next_id % 0x7FFFFFFF) + 1
        request_id = self._next_id
        message = snmp_ber.encode_request(
            self._community, request_id, oids, bulk=bulk, max_repetitions=self.config.max_repetitions
        )
        future: asyncio.Future[snmp_ber.Response] = loop.create_future()
        self._pending[request_id] = future
        try:
            for attempt in range(self.config.retries + 1):
                if attempt:
                    self.retransmits += 1
                transport.sendto(message)
                self.requests_sent += 1
                try:
                    response = await asyncio.wait_for(asyncio.shield(future), self.config.timeout)
                except TimeoutError:
                    continue
                if response.error_status:
                    status = snmp_ber.ERROR_STATUS.get(response.error_status, str(response.error_status))
                    position = response.error_index
                    where = oids[position - 1] if 0 < position <= len(oids) else oids[0]
                    raise SourceError(f"{self.target}: agent error {status} for {oid_text(where)}")
                return response
            tries = self.config.retries + 1
            raise SourceError(
                f"{self.target}: no reply to {'GETBULK' if bulk else 'GET'} {oid_text(oids[0])} after "
                f"{tries} tries x {self.config.timeout:g}s (agent down, unreachable or wrong community)"
            )
        finally:
            self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()

    async def get(self, oids: list[Oid]) -> list[tuple[Oid, Value]]:
        response = await self._request(oids, bulk=False)
        return response.varbinds

    async def walk(self, column: Oid, on_rows: RowCallback | None = None) -> list[tuple[Oid, Value]]:
        rows: list[tuple[Oid, Value]] = []
        last: Oid | None = column
        while last is not None:
            response = await self._request([last], bulk=True)
            last = _check_walk_step(self.target, column, last, response.varbinds, rows)
            if on_rows is not None:
                on_rows(len(rows))
        return rows

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


_AUTH = {
    "md5": "USM_AUTH_HMAC96_MD5",
    "sha": "USM_AUTH_HMAC96_SHA",
    "sha224": "USM_AUTH_HMAC128_SHA224",
    "sha256": "USM_AUTH_HMAC192_SHA256",
    "sha384": "USM_AUTH_HMAC256_SHA384",
    "sha512": "USM_AUTH_HMAC384_SHA512",
}
_PRIV = {
    "des": "USM_PRIV_CBC56_DES",
    "aes128": "USM_PRIV_CFB128_AES",
    "aes192": "USM_PRIV_CFB192_AES_BLUMENTHAL",
    "aes256": "USM_PRIV_CFB256_AES_BLUMENTHAL",
    "aes192c": "USM_PRIV_CFB192_AES",
    "aes256c": "USM_PRIV_CFB256_AES",
}


def _plain(value: Any) -> Value:
    """pysnmp/pyasn1 value -> the plain values the native codec returns."""
    from pyasn1.type import univ
    from pysnmp.proto import rfc1905

    if isinstance(value, rfc1905.EndOfMibView):
        return snmp_ber.END_OF_MIB
    if isinstance(value, rfc1905.NoSuchObject):
        return snmp_ber.NO_SUCH_OBJECT
    if isinstance(value, rfc1905.NoSuchInstance):
        return snmp_ber.NO_SUCH_INSTANCE
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.OctetString):
        return value.asOctets()
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value.asTuple())
    return None


class PysnmpWalker:
    """SNMPv3 (USM authPriv) or v2c through pysnmp 7's asyncio API, lookupMib=False."""

    def __init__(self, config: SnmpConfig) -> None:
        self.config = config
        self.target = config.display_url()
        self._engine: Any = None
        self._auth: Any = None
        self._transport_target: Any = None
        self._context: Any = None
        self._setup_lock = asyncio.Lock()

    async def _setup(self) -> None:
        async with self._setup_lock:  # concurrent column walks share one engine
            if self._context is None:
                await self._setup_once()

    async def _setup_once(self) -> None:
        from pysnmp.hlapi.v3arch import asyncio as hl

        cfg = self.config
        self._engine = hl.SnmpEngine()
        if cfg.version == "3":
            self._auth = hl.UsmUserData(
                cfg.user,
                authKey=cfg.auth_key,
                privKey=cfg.priv_key,
                authProtocol=getattr(hl, _AUTH[cfg.auth_proto]),
                privProtocol=getattr(hl, _PRIV[cfg.priv_proto]),
            )
        else:
            self._auth = hl.CommunityData(cfg.community, mpModel=1)
        is_v6 = ":" in cfg.host
        target_cls = hl.Udp6TransportTarget if is_v6 else hl.UdpTransportTarget
        try:
            self._transport_target = await target_cls.create(
                (cfg.host, cfg.port), timeout=cfg.timeout, retries=cfg.retries
            )
        except Exception as exc:  # pysnmp wraps resolver errors in its own PySnmpError
            raise SourceError(f"{self.target}: cannot resolve/open transport: {exc}") from None
        self._context = hl.ContextData(contextName=cfg.context)

    def _raise(self, what: str, oid: Oid, indication: Any, status: Any, index: Any, oids: list[Oid]) -> None:
        if indication:
            text = str(indication)
            if "timed out" in text.lower() or "no snmp response" in text.lower():
                tries = self.config.retries + 1
                text = (
                    f"no reply after {tries} tries x {self.config.timeout:g}s "
                    "(agent down, unreachable, or wrong credentials: agents drop requests they "
                    "cannot decrypt without a word)"
                )
            raise SourceError(f"{self.target}: {what} {oid_text(oid)}: {text}")
        if status:
            position = int(index)
            where = oids[position - 1] if 0 < position <= len(oids) else oid
            raise SourceError(f"{self.target}: agent error {status.prettyPrint()} for {oid_text(where)}")

    async def get(self, oids: list[Oid]) -> list[tuple[Oid, Value]]:
        from pysnmp.hlapi.v3arch import asyncio as hl

        await self._setup()
        indication, status, index, varbinds = await hl.get_cmd(
            self._engine, self._auth, self._transport_target, self._context,
            *[hl.ObjectType(hl.ObjectIdentity(oid)) for oid in oids],
            lookupMib=False,
        )
        self._raise("GET", oids[0], indication, status, index, oids)
        return [(tuple(vb[0].asTuple()), _plain(vb[1])) for vb in varbinds]

    async def walk(self, column: Oid, on_rows: RowCallback | None = None) -> list[tuple[Oid, Value]]:
        from pysnmp.hlapi.v3arch import asyncio as hl

        await self._setup()
        rows: list[tuple[Oid, Value]] = []
        last: Oid | None = column
        while last is not None:
            indication, status, index, varbinds = await hl.bulk_cmd(
                self._engine, self._auth, self._transport_target, self._context,
                0, self.config.max_repetitions, hl.ObjectType(hl.ObjectIdentity(last)),
                lookupMib=False,
            )
            self._raise("GETBULK", last, indication, status, index, [last])
            plain = [(tuple(vb[0].asTuple()), _plain(vb[1])) for vb in varbinds]
            last = _check_walk_step(self.target, column, last, plain, rows)
            if on_rows is not None:
                on_rows(len(rows))
        return rows

    async def close(self) -> None:
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.close_dispatcher()
            self._engine = None
            self._context = None


def make_walker(config: SnmpConfig) -> Walker:
    """Native codec for v2c (fast), pysnmp for v3 or when asked with ``engine=pysnmp``."""
    if config.version == "2c" and config.engine == "native":
        return NativeV2cWalker(config)
    return PysnmpWalker(config)
