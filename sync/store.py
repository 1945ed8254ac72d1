"""SQLite state store: the last good snapshot (compact blob) and the sync history.

The snapshot is one zlib-compressed binary blob per snapshot rather than one row per
route: 250k routes save in under a second and load fast enough to serve at once after a
restart.  Routes are grouped by next-hop tuple (a router has few of those), so next hops
are written once and each route is a fixed 23-byte record decoded with ``iter_unpack``.
Blob layout (version 2), all little-endian:

    header   b"XS6R" u8 version u32 json_len  json {"ifnames": [...], "protocols": [...]}
    u32 group_count, then per group:
             u8 nexthop_count, per next hop: u16 ifname_idx  u8 has_gateway  [16s gateway]
             u32 route_count, per route: 16s network  u8 prefixlen  u32 metric  u16 protocol_idx

``Route.extra`` is not stored (it is informational and not part of route identity), and
route order is not kept (a snapshot is a set of prefixes).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.model import Interface, NextHop, Route, Snapshot
from sync.gcpause import gc_paused

MAGIC = b"XS6R"
VERSION = 2
DB_NAME = "sync.sqlite3"
log = logging.getLogger("xcast6.sync")
HISTORY_KEEP = 2000

_HDR = struct.Struct("<4sBI")
_ROUTE = struct.Struct("<16sBIH")
_NH = struct.Struct("<HB")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY,
    saved_at REAL NOT NULL,
    source TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    route_count INTEGER NOT NULL,
    interface_count INTEGER NOT NULL,
    interfaces TEXT NOT NULL,
    routes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    source TEXT NOT NULL,
    trigger TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    duration_s REAL NOT NULL,
    added INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    route_count INTEGER NOT NULL DEFAULT 0,
    generation INTEGER,
    detail TEXT
);
"""


class StoreError(Exception):
    """The state store is unreadable or holds data this version cannot decode."""


class StoreDamaged(StoreError):
    """The database file itself is damaged (not a directory or permission problem): it can be
    put aside and replaced by a fresh store (:func:`open_store`, :meth:`SyncStore.quarantine`)."""


@dataclass(slots=True)
class HistoryEntry:
    """One sync attempt as recorded (outcome: applied, unchanged, held, failed)."""

    started_at: float
    finished_at: float
    source: str
    trigger: str
    outcome: str
    error: str | None = None
    duration_s: float = 0.0
    added: int = 0
    removed: int = 0
    changed: int = 0
    route_count: int = 0
    generation: int | None = None
    detail: dict[str, object] = field(default_factory=dict)
    id: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def pack_routes(routes: list[Route]) -> bytes:
    """Encode routes into the compact blob (uncompressed), grouped by next-hop tuple."""
    ifnames: dict[str, int] = {}
    protocols: dict[str, int] = {}
    groups: dict[tuple[NextHop, ...], list[bytes]] = {}
    route_pack = _ROUTE.pack
    for r in routes:
        members = groups.get(r.nexthops)
        if members is None:
            if len(r.nexthops) > 255:
                raise ValueError(f"route {r.prefix} has {len(r.nexthops)} next hops; "
                                 "the store holds at most 255")
            members = groups[r.nexthops] = []
        proto = protocols.get(r.protocol)
        if proto is None:
            proto = protocols[r.protocol] = len(protocols)
        members.append(route_pack(r.prefix.network_address.packed, r.prefix.prefixlen, r.metric & 0xFFFFFFFF,
                                  proto))
    out = [struct.pack("<I", len(groups))]
    for nexthops, members in groups.items():
        out.append(bytes([len(nexthops)]))
        for nh in nexthops:
            idx = ifnames.setdefault(nh.ifname, len(ifnames))
            out.append(_NH.pack(idx, 0) if nh.gateway is None else _NH.pack(idx, 1) + nh.gateway)
        out.append(struct.pack("<I", len(members)))
        out.extend(members)
    meta = json.dumps({"ifnames": list(ifnames), "protocols": list(protocols)}).encode()
    return _HDR.pack(MAGIC, VERSION, len(meta)) + meta + b"".join(out)


def unpack_routes(blob: bytes) -> list[Route]:
    """Decode :func:`pack_routes` output; raises StoreError on anything malformed."""
    try:
        magic, version, meta_len = _HDR.unpack_from(blob, 0)
        if magic != MAGIC or version != VERSION:
            raise StoreError(f"snapshot blob has magic {magic!r} v{version}, expected {MAGIC!r} v{VERSION}")
        off = _HDR.size
        meta = json.loads(blob[off: off + meta_len])
        ifnames: list[str] = meta["ifnames"]
        protocols: list[str] = meta["protocols"]
        off += meta_len
        (n_groups,) = struct.unpack_from("<I", blob, off)
        off += 4
        routes: list[Route] = []
        append = routes.append
        net = ipaddress.IPv6Network
        from_bytes = int.from_bytes
        size = _ROUTE.size
        for _ in range(n_groups):
            n_nh = blob[off]
            off += 1
            hops = []
            for _ in range(n_nh):
                idx, has_gw = _NH.unpack_from(blob, off)
                off += 3
                gw = None
                if has_gw:
                    gw = blob[off: off + 16]
                    if len(gw) != 16:
                        raise StoreError("snapshot blob is corrupt: next hop cut short")
                    off += 16
                hops.append(NextHop(ifnames[idx], gw))
            nexthops = tuple(hops)
            (count,) = struct.unpack_from("<I", blob, off)
            off += 4
            end = off + count * size
            if end > len(blob):
                raise StoreError(f"snapshot blob is corrupt: {count} routes announced, blob ends first")
            for addr, plen, metric, proto in _ROUTE.iter_unpack(blob[off:end]):
                append(Route(net((from_bytes(addr, "big"), plen)), nexthops, protocols[proto], metric))
            off = end
        if off != len(blob):
            raise StoreError(f"snapshot blob has {len(blob) - off} trailing bytes after {len(routes)} routes")
        return routes
    except StoreError:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"snapshot blob is corrupt: {exc}") from exc


def _put_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    return aside


def open_store(state_dir: str | os.PathLike[str]) -> SyncStore:
    """The state store, or -- when its file is damaged -- a fresh one with the damaged file put
    aside and logged: a damaged store must never keep the engine from starting (the router's
    table comes back with the first fetch).  Raises StoreError only for what a fresh file cannot
    fix (the directory cannot be created or written)."""
    try:
        return SyncStore(state_dir)
    except StoreDamaged as exc:
        aside = _put_aside(Path(state_dir) / DB_NAME)
        log.error("%s; kept aside as %s, starting with a fresh store (the next fetch refills it)",
                  exc, aside)
        return SyncStore(state_dir)


class SyncStore:
    """The state directory's SQLite database (thread-safe; calls are short)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {self.state_dir}: {exc.strerror}") from exc
        self.path = self.state_dir / DB_NAME
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            # A page overwritten in the middle opens fine and fails later: look at every page now.
            verdict = db.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise StoreDamaged(f"state store {self.path} failed its integrity check: {verdict}")
            return db
        except sqlite3.OperationalError as exc:
            if db is not None:
                db.close()
            if "unable to open" in str(exc) or "readonly" in str(exc):
                raise StoreError(f"state store {self.path} is unusable: {exc}") from exc
            raise StoreDamaged(f"state store {self.path} is damaged: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise StoreDamaged(f"state store {self.path} is damaged: {exc}") from exc
        except StoreDamaged:
            if db is not None:
                db.close()
            raise

    def quarantine(self) -> Path:
        """Put the damaged database aside (renamed with a UTC timestamp, WAL and SHM with it) and
        continue with a fresh, empty one; returns where the damaged file now is."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            aside = _put_aside(self.path)
            self._db = self._connect()
        return aside

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- snapshot ---------------------------------------------------------------------
    def save_snapshot(self, snap: Snapshot) -> None:
        """Replace the stored last good snapshot (one transaction: old one stays until commit)."""
        blob = zlib.compress(pack_routes(snap.routes), 1)
        ifaces = json.dumps([[i.name, i.index, i.oper_up, i.descr] for i in snap.interfaces])
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM snapshot")
                self._db.execute(
                    "INSERT INTO snapshot (saved_at, source, fetched_at, duration_s, route_count,"
                    " interface_count, interfaces, routes) VALUES (?,?,?,?,?,?,?,?)",
                    (time.time(), snap.source, snap.fetched_at, snap.duration_s, len(snap.routes),
                     len(snap.interfaces), ifaces, blob),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def load_snapshot(self) -> Snapshot | None:
        """The last good snapshot, or None if none was ever saved (StoreDamaged when unreadable)."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT source, fetched_at, duration_s, interfaces, routes, route_count FROM snapshot"
                    " ORDER BY id DESC LIMIT 1"
                ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(f"stored snapshot in {self.path} is unreadable: {exc}") from exc
        if row is None:
            return None
        source, fetched_at, duration_s, ifaces_json, blob, count = row
        try:
            with gc_paused():
                routes = unpack_routes(zlib.decompress(blob))
            interfaces = [Interface(n, idx, bool(up), descr) for n, idx, up, descr in json.loads(ifaces_json)]
        except (zlib.error, ValueError, TypeError, StoreError) as exc:
            raise StoreDamaged(f"stored snapshot in {self.path} is corrupt: {exc}") from exc
        if len(routes) != count:
            raise StoreDamaged(f"stored snapshot in {self.path}: {len(routes)} routes, header says {count}")
        return Snapshot(routes, interfaces, source, fetched_at, duration_s)

    def snapshot_info(self) -> dict[str, object] | None:
        """Metadata of the stored snapshot without decoding it."""
        with self._lock:
            row = self._db.execute(
                "SELECT saved_at, source, fetched_at, route_count, interface_count, length(routes)"
                " FROM snapshot ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        keys = ("saved_at", "source", "fetched_at", "route_count", "interface_count", "blob_bytes")
        return dict(zip(keys, row, strict=True))

    # -- history ----------------------------------------------------------------------
    def add_history(self, e: HistoryEntry) -> int:
        """Record one sync attempt; keeps the newest HISTORY_KEEP rows."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO history (started_at, finished_at, source, trigger, outcome, error, duration_s,"
                " added, removed, changed, route_count, generation, detail)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (e.started_at, e.finished_at, e.source, e.trigger, e.outcome, e.error, e.duration_s, e.added,
                 e.removed, e.changed, e.route_count, e.generation, json.dumps(e.detail, default=str)),
            )
            rowid = int(cur.lastrowid or 0)
            if rowid % 100 == 0:
                self._db.execute("DELETE FROM history WHERE id <= ?", (rowid - HISTORY_KEEP,))
        e.id = rowid
        return rowid

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, started_at, finished_at, source, trigger, outcome, error, duration_s, added,"
                " removed, changed, route_count, generation, detail FROM history ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out = []
        for row in rows:
            detail: dict[str, object] = {}
            with contextlib.suppress(ValueError, TypeError):
                detail = json.loads(row[13] or "{}")
            out.append(HistoryEntry(row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                                    row[10], row[11], row[12], detail, row[0]))
        return out
