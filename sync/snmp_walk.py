"""SNMP transports for the route walk: native SNMPv2c / SNMPv3-USM walkers and a pysnmp walker.

The native walkers use the flat codec of :mod:`sync.snmp_ber` (and :mod:`sync.snmp_usm` for
v3 authPriv with AES); pysnmp is kept for DES privacy and as ``engine=pysnmp`` (a second,
independent implementation the tests compare against).

Both return plain Python values (see :mod:`sync.snmp_ber`) and raise :class:`SourceError`
with the host, the OID and what went wrong; a walk either completes or raises, it never
returns part of a column.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from sync import snmp_ber, snmp_usm
from sync.mib import Oid, oid_text
from sync.snmp_ber import END_OF_MIB, EXCEPTIONS, BerError, Value
from sync.snmp_url import SnmpConfig
from sync.source import SourceError

log = logging.getLogger(__name__)

RowCallback = Callable[[int], None]
# Called with each reply's new (index, value) rows; the native walker calls it after the next
# request is on the wire, so the caller's per-row work overlaps the agent's.
BatchCallback = Callable[[list[tuple[Oid, Value]]], None]


class Walker(Protocol):
    """What the route source needs from an SNMP transport."""

    async def get(self, oids: list[Oid]) -> list[tuple[Oid, Value]]:
        """GET the given instances (exception markers are returned as values)."""
        ...

    async def walk(
        self, column: Oid, on_rows: RowCallback | None = None, on_batch: BatchCallback | None = None
    ) -> list[tuple[Oid, Value]]:
        """All ``(index, value)`` under ``column`` (index = OID suffix), by GETBULK."""
        ...

    async def close(self) -> None:
        """Release sockets / engine."""
        ...


def _check_walk_step(
    host: str, column: Oid, last: Oid, varbinds: list[tuple[Oid, Value]], rows: list[tuple[Oid, Value]]
) -> Oid | None:
    """Append this reply's in-column varbinds to ``rows``; return the next OID or None when done.

    The column ends at endOfMibView or at the first OID past the column's subtree.  Any other
    OID must be the lexicographic successor GETBULK promises: one that is not greater than the
    previous (outside the column or not) is a garbled or hostile reply, and an error rather
    than a silently shortened table.
    """
    if not varbinds:
        raise SourceError(
            f"{host}: empty GETBULK reply while walking {oid_text(column)} after {oid_text(last)}"
        )
    n = len(column)
    for oid, value in varbinds:
        if value == END_OF_MIB:
            return None
        if oid <= last:
            raise SourceError(
                f"{host}: agent returned non-increasing OID {oid_text(oid)} after {oid_text(last)} "
                f"walking {oid_text(column)}"
            )
        # Greater than ``last`` (which is in the column) and outside it: past the column's end.
        if oid[:n] != column or value in EXCEPTIONS:
            return None
        rows.append((oid[n:], value))
        last = oid
    return last


class _TooBig(Exception):
    """The agent could not fit the reply in a message (RFC 3416 tooBig): ask for fewer rows."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, walker: NativeV2cWalker) -> None:
        self.walker = walker

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.walker._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: agent gone; fail everything waiting now rather than time out.
        text = getattr(exc, "strerror", None) or str(exc)
        self.walker._fail_all(SourceError(f"{self.walker.target}: {text} (agent unreachable)",
                                                 SourceError.UNREACHABLE))


class NativeV2cWalker:
    """SNMPv2c over asyncio UDP with the flat BER codec (the hot path for big tables)."""

    def __init__(self, config: SnmpConfig) -> None:
        self.config = config
        self.target = config.display_url()
        self._community = config.community.encode()
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[snmp_ber.Response]] = {}
        self._next_id = random.randint(1, 1 << 30)
        self.max_repetitions = config.max_repetitions  # halved when the agent says tooBig
        self._silence_hint = "agent down, unreachable or wrong community"
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
        future: asyncio.Future[snmp_ber.Response] = loop.create_future()
        self._pending[request_id] = future
        try:
            for attempt in range(self.config.retries + 1):
                if attempt:
                    self.retransmits += 1
                transport.sendto(self._encode(request_id, oids, bulk))
                self.requests_sent += 1
                try:
                    response = await asyncio.wait_for(asyncio.shield(future), self.config.timeout)
                except TimeoutError:
                    continue
                self._check_reply(response, oids)
                if response.error_status == 1 and bulk:
                    raise _TooBig
                if response.error_status:
                    status = snmp_ber.ERROR_STATUS.get(response.error_status, str(response.error_status))
                    position = response.error_index
                    where = oids[position - 1] if 0 < position <= len(oids) else oids[0]
                    raise SourceError(f"{self.target}: agent error {status} for {oid_text(where)}")
                return response
            raise self._no_reply(request_id, oids, bulk)
        finally:
            self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()

    def _no_reply(self, request_id: int, oids: list[Oid], bulk: bool) -> SourceError:
        """The error for a request that got no usable reply in all its tries."""
        tries = self.config.retries + 1
        return SourceError(
            f"{self.target}: no reply to {'GETBULK' if bulk else 'GET'} {oid_text(oids[0])} after "
            f"{tries} tries x {self.config.timeout:g}s ({self._silence_hint})",
            SourceError.UNREACHABLE,
        )

    def _encode(self, request_id: int, oids: list[Oid], bulk: bool) -> bytes:
        return snmp_ber.encode_request(
            self._community, request_id, oids, bulk=bulk, max_repetitions=self.max_repetitions
        )

    def _check_reply(self, response: snmp_ber.Response, oids: list[Oid]) -> None:
        """Hook for SNMPv3 (Report-PDUs); v2c replies need no extra check."""

    async def get(self, oids: list[Oid]) -> list[tuple[Oid, Value]]:
        response = await self._request(oids, bulk=False)
        return response.varbinds

    async def walk(
        self, column: Oid, on_rows: RowCallback | None = None, on_batch: BatchCallback | None = None
    ) -> list[tuple[Oid, Value]]:
        rows: list[tuple[Oid, Value]] = []
        last: Oid | None = column
        pending: asyncio.Future[snmp_ber.Response] | None = None
        try:
            while last is not None:
                if pending is None:
                    pending = asyncio.ensure_future(self._request([last], bulk=True))
                try:
                    response = await pending
                except _TooBig:
                    pending = None
                    if self.max_repetitions == 1:
                        raise SourceError(f"{self.target}: agent says tooBig even for one row at "
                                          f"{oid_text(last)}") from None
                    self.max_repetitions = max(1, self.max_repetitions // 2)
                    continue
                pending = None
                done = len(rows)
                last = _check_walk_step(self.target, column, last, response.varbinds, rows)
                if last is not None:
                    # Next request out first (yield once so the task sends it), then the
                    # caller's work on this batch while the agent prepares the reply.
                    pending = asyncio.ensure_future(self._request([last], bulk=True))
                    await asyncio.sleep(0)
                if on_batch is not None:
                    on_batch(rows[done:])
                if on_rows is not None:
                    on_rows(len(rows))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        return rows

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


# Why a reply was dropped (NativeV3Walker.drops keys) -> what the operator is told.
DROP_REASONS: dict[str, str] = {
    "malformed": "undecodable",
    "wrong_digest": "MAC did not verify",
    "unauthenticated": "unauthenticated (noAuthNoPriv) Response",
    "unencrypted": "authenticated but unencrypted (authNoPriv) Response",
    "unauthenticated_report": "unauthenticated Report",
    "not_in_time_window": "authenticated but outside the time window (replay?)",
    "wrong_engine_id": "from another engine ID",
    "unexpected_discovery_reply": "not a usmStatsUnknownEngineIDs Report during discovery",
}
# The reasons that mean "not authenticated at the configured level (authPriv)".
UNAUTHENTICATED_REASONS = ("wrong_digest", "unauthenticated", "unencrypted", "unauthenticated_report")


class NativeV3Walker(NativeV2cWalker):
    """SNMPv3 authPriv with the flat codec and :mod:`sync.snmp_usm` (engine discovery first).

    Once the keys exist, only authenticated and encrypted Responses (and authenticated Reports)
    inside the RFC 3414 time window complete a request.  Anything else is dropped, counted in
    :attr:`drops` by reason and logged once per reason: the request keeps waiting for the
    agent's genuine reply, so a forged or garbled datagram can neither inject data nor end
    the walk by itself.
    """

    def __init__(self, config: SnmpConfig) -> None:
        super().__init__(config)
        self._keys: snmp_usm.UsmKeys | None = None
        self._engine_id = b""
        self._clock = snmp_usm.EngineClock()
        self._salt = random.getrandbits(64)
        self._discovery: asyncio.Lock | None = None
        self._discovering = False
        # msgID -> what an unauthenticated usmStats Report said about that request.
        self._refusals: dict[int, str] = {}
        self.drops: dict[str, int] = {}
        self.resyncs = 0  # authenticated usmStatsNotInTimeWindows Reports acted on
        self._silence_hint = (
            "agent down, unreachable, or wrong priv key/protocol: agents drop requests they "
            "cannot decrypt without a word"
        )

    @property
    def unauthenticated_drops(self) -> int:
        """Replies dropped because they were not authenticated and encrypted as configured."""
        return sum(self.drops.get(reason, 0) for reason in UNAUTHENTICATED_REASONS)

    def _drop(self, reason: str, detail: str = "") -> None:
        count = self.drops.get(reason, 0) + 1
        self.drops[reason] = count
        if count == 1:  # once per reason and walker: a flood must not flood the log too
            log.warning("%s: dropped an SNMPv3 reply: %s%s (further ones are only counted)",
                        self.target, DROP_REASONS[reason], f": {detail}" if detail else "")

    def _on_datagram(self, data: bytes) -> None:
        try:
            reply = snmp_usm.decode_v3(data, self._keys)
        except snmp_usm.AuthenticationError as exc:
            self._drop("wrong_digest", str(exc))
            return
        except ValueError as exc:  # BerError and anything else decode_v3 refuses
            self._drop("malformed", f"{len(data)} bytes: {exc}")
            return
        response = reply.response
        is_report = response.pdu_tag == snmp_ber.PDU_REPORT
        first_oid = response.varbinds[0][0] if response.varbinds else ()
        if self._keys is None:
            # Engine discovery is the one unauthenticated exchange (RFC 3414 4): only its
            # usmStatsUnknownEngineIDs Report, and its boots/time only to send the first request.
            if not (self._discovering and is_report and first_oid == snmp_usm.UNKNOWN_ENGINE_ID
                    and reply.engine_id):
                self._drop("unexpected_discovery_reply")
                return
            future = self._pending.get(reply.msg_id)
            if future is None or future.done():
                return
            self._engine_id = reply.engine_id
            self._clock = snmp_usm.EngineClock(reply.boots, reply.time, reply.time, time.monotonic())
            future.set_result(response)
            return
        if not reply.authenticated:
            if is_report:
                # Agents send usmStatsWrongDigests/UnknownUserNames/... unauthenticated (they
                # could not authenticate us).  Anyone can forge one, so it must not end the
                # request: it is only remembered, and named if the request then times out.
                if reply.msg_id in self._pending:
                    what = snmp_usm.USM_REPORTS.get(first_oid, f"report {oid_text(first_oid) or '(empty)'}")
                    # Forget finished requests' notes: at most one per pending request is kept.
                    for done in [k for k in self._refusals if k not in self._pending]:
                        del self._refusals[done]
                    self._refusals[reply.msg_id] = what
                self._drop("unauthenticated_report")
            else:
                self._drop("unauthenticated")
            return
        if not reply.encrypted and not is_report:
            # authPriv is configured: a plaintext Response is not what the agent would send.
            # (Reports may be authNoPriv: usmStatsNotInTimeWindows is, RFC 3414 3.2 step 7a.)
            self._drop("unencrypted")
            return
        if reply.engine_id != self._engine_id:
            self._drop("wrong_engine_id")
            return
        time_report = is_report and first_oid == snmp_usm.NOT_IN_TIME_WINDOW
        if not self._clock.accept(reply.boots, reply.time, time.monotonic(), time_report=time_report):
            self._drop("not_in_time_window", f"boots {reply.boots} time {reply.time}")
            return
        future = self._pending.get(reply.msg_id)
        if future is None or future.done():
            return  # a late reply to a retransmitted request
        future.set_result(response)

    def _encode(self, request_id: int, oids: list[Oid], bulk: bool) -> bytes:
        pdu = snmp_ber.encode_pdu(request_id, oids, bulk=bulk, max_repetitions=self.max_repetitions)
        if self._keys is None:
            return snmp_usm.encode_discovery(request_id, snmp_ber.encode_pdu(request_id, []))
        self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
        return snmp_usm.encode_authpriv(
            request_id, pdu, engine_id=self._engine_id, boots=self._clock.boots,
            time=self._clock.now(time.monotonic()), user=self.config.user.encode(),
            context=self.config.context.encode(), keys=self._keys, salt=self._salt.to_bytes(8, "big"),
        )

    def _check_reply(self, response: snmp_ber.Response, oids: list[Oid]) -> None:
        # Only authenticated Reports get here once the keys exist (see _on_datagram).
        if response.pdu_tag != snmp_ber.PDU_REPORT or self._discovering:
            return
        oid = response.varbinds[0][0] if response.varbinds else ()
        if oid == snmp_usm.NOT_IN_TIME_WINDOW:
            raise _Resync  # the authenticated Report carried the agent's clock; _on_datagram took it
        what = snmp_usm.USM_REPORTS.get(oid, f"report {oid_text(oid) if oid else '(empty)'}")
        raise SourceError(
            f"{self.target}: agent refused the request for {oid_text(oids[0])}: {what}", SourceError.AUTH
        )

    def _no_reply(self, request_id: int, oids: list[Oid], bulk: bool) -> SourceError:
        refusal = self._refusals.pop(request_id, None)
        if refusal is not None:
            return SourceError(
                f"{self.target}: agent refused the request for {oid_text(oids[0])}: {refusal} "
                "(said by an unauthenticated Report, so only believed once the request timed out)",
                SourceError.AUTH,
            )
        error = super()._no_reply(request_id, oids, bulk)
        if not self.drops:
            return error
        counts = ", ".join(f"{n} {DROP_REASONS[reason]}" for reason, n in sorted(self.drops.items()))
        return SourceError(f"{error}; replies dropped so far: {counts}", error.kind)

    async def _ensure_keys(self) -> None:
        if self._discovery is None:
            self._discovery = asyncio.Lock()
        async with self._discovery:
            if self._keys is not None:
                return
            self._discovering = True
            try:
                response = await super()._request([], bulk=False)
            finally:
                self._discovering = False
            if response.pdu_tag != snmp_ber.PDU_REPORT or not self._engine_id:
                raise SourceError(f"{self.target}: SNMPv3 engine discovery got no engine ID")
            cfg = self.config
            self._keys = snmp_usm.make_keys(cfg.auth_proto, cfg.auth_key, cfg.priv_proto, cfg.priv_key,
                                            self._engine_id)

    async def _request(self, oids: list[Oid], *, bulk: bool) -> snmp_ber.Response:
        await self._ensure_keys()
        for _ in range(3):
            try:
                return await super()._request(oids, bulk=bulk)
            except _Resync:
                self.resyncs += 1
                continue
        raise SourceError(f"{self.target}: agent keeps saying 'not in time window' for {oid_text(oids[0])}")


class _Resync(Exception):
    """usmStatsNotInTimeWindows: resend with the agent's clock (RFC 3414 3.2 step 7)."""


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

    async def walk(
        self, column: Oid, on_rows: RowCallback | None = None, on_batch: BatchCallback | None = None
    ) -> list[tuple[Oid, Value]]:
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
            done = len(rows)
            last = _check_walk_step(self.target, column, last, plain, rows)
            if on_batch is not None:
                on_batch(rows[done:])
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
    """Native codec (fast) for v2c and v3 with AES; pysnmp for DES or when ``engine=pysnmp``."""
    if config.engine == "native":
        if config.version == "2c":
            return NativeV2cWalker(config)
        if config.priv_proto in snmp_usm.PRIV:
            return NativeV3Walker(config)
    return PysnmpWalker(config)
