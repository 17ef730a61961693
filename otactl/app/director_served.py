"""Device chains signed on request (decision 0408): the director layout without a file per device.

``otactl init --device-layout director-served`` keeps decision 0407's trust (the director root, per-device
timestamp/snapshot/targets, the records' offline-signed entitlements) but stores none of the per-device
files. What is stored is the fleet index (``director/index/<xx>.tsv``) and record packs
``director/records/<xyz>.tsv``, 16 per index shard (the first 12 bits of sha256(id)): the records'
bytes. A director service (``otactl repo serve`` holding the online keys, as Uptane's director is an
online service) signs a device's chain file when the device asks for it, from the index row: its
version, expiry and record hash. So a fleet change writes a few files per touched shard (its packs,
then the shard), and a million-device import creates no million files.

Pack format: a header line, then ``device_id <TAB> sha256 <TAB> record JSON`` per line (records are
canonical JSON: no tab or newline). A pack may hold two records of one device for a moment: a write puts
the new record in the pack first, then the index row that names it (the commit point), and the next
write of that shard drops every record no row names. A crash between the two leaves the device on its
old record, whole.

The inputs of the service (index and packs) are as sensitive as the online ``devices`` key: whoever can
write them can have the service sign a record's tags, region or pin. Never its entitlement: variant,
features and the device's key come from the offline-signed statement inside the record, which the
device checks (decision 0406).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from otactl import progress
from otactl.app import director as app_director
from otactl.app.context import Context
from otactl.errors import ConflictError, NotFoundError, VerificationError
from otactl.fleet import index as fleet_index
from otactl.fleet.records import DeviceRecord
from otactl.repo import director

CONFIG_KEY = "director/config.json"
CONFIG_SCHEMA = "otactl/director/1"
PACK_HEADER = b"# otactl/fleet-records/1\tdevice_id\tsha256\trecord\n"
RECORD_URL = re.compile(r"^targets/devices/(?P<sha>[0-9a-f]{64})\.(?P<id>[^/]+)\.json\Z")

Pack = dict[tuple[str, str], bytes]  # (device id, record sha256) -> record bytes


PACKS_PER_SHARD = 16  # a pack holds 1/4096 of the fleet: a one-device change rewrites ~370 KB at 1M


def pack_of(device_id: str) -> int:
    """The device's record pack: the first 12 bits of sha256(id), so pack ``p`` is in index shard ``p // 16``."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return (digest[0] << 4) | (digest[1] >> 4)


def pack_key(pack: int) -> str:
    return f"director/records/{pack:03x}.tsv"


def write_config(ctx: Context) -> None:
    ctx.store.put(CONFIG_KEY, json.dumps({"schema": CONFIG_SCHEMA, "chains": "served"}, sort_keys=True).encode())


def enabled(ctx: Context) -> bool:
    """Whether this director signs device chains on request (else they are stored files)."""
    data = ctx.store.get_optional(CONFIG_KEY)
    if data is None:
        return False
    try:
        doc = json.loads(data)
        chains = doc["chains"] if doc.get("schema") == CONFIG_SCHEMA else None
    except (ValueError, TypeError, KeyError, AttributeError):
        chains = None
    if chains not in ("served", "stored"):
        raise VerificationError(f"{ctx.store.url}{CONFIG_KEY}: not a director configuration "
                                f"(schema {CONFIG_SCHEMA}, chains: served or stored)")
    return bool(chains == "served")


def decode_pack(data: bytes, where: str) -> Pack:
    if not data.startswith(PACK_HEADER):
        raise VerificationError(f"{where}: not a record pack (its first line is not {PACK_HEADER[:24]!r}...)")
    out: Pack = {}
    for number, line in enumerate(data[len(PACK_HEADER):].split(b"\n"), start=2):
        if not line:
            continue
        parts = line.split(b"\t", 2)
        if len(parts) != 3:
            raise VerificationError(f"{where}: line {number}: expected device_id, sha256 and record")
        out[(parts[0].decode("utf-8", "replace"), parts[1].decode("ascii", "replace"))] = parts[2]
    return out


def encode_pack(pack: Pack) -> bytes:
    lines = [PACK_HEADER]
    for (device_id, sha), data in sorted(pack.items()):
        if b"\n" in data or b"\t" in data:
            raise ValueError(f"device {device_id}: a record holds a tab or newline")  # canonical JSON never does
        lines.append(b"%s\t%s\t%s\n" % (device_id.encode(), sha.encode(), data))
    return b"".join(lines)


@dataclass
class Packs:
    """The record packs a command reads, each once."""

    ctx: Context

    def __post_init__(self) -> None:
        self._packs: dict[int, tuple[Pack, str | None]] = {}

    def load(self, pack: int) -> tuple[Pack, str | None]:
        if pack not in self._packs:
            key = pack_key(pack)
            try:
                found = self.ctx.store.get_versioned(key)
                self._packs[pack] = decode_pack(found.data, f"{self.ctx.store.url}{key}"), found.etag
            except NotFoundError:
                self._packs[pack] = {}, None
        return self._packs[pack]

    def record(self, row: fleet_index.Row) -> bytes:
        """The record bytes ``row`` names; a missing one is a ``NotFoundError`` naming the pack."""
        pack = pack_of(row.device_id)
        data = self.load(pack)[0].get((row.device_id, row.sha256))
        if data is None:
            raise NotFoundError(f"{self.ctx.store.url}{pack_key(pack)}: no record {row.sha256[:12]}... of device "
                                f"{row.device_id!r} (the index names it)")
        return data

    def forget(self, shard: int) -> None:
        """Let go of the shard's packs (a later read loads them again)."""
        for pack in range(shard * PACKS_PER_SHARD, (shard + 1) * PACKS_PER_SHARD):
            self._packs.pop(pack, None)

    def write(self, rows: dict[str, fleet_index.Row], new: Iterable[tuple[fleet_index.Row, bytes]]) -> int:
        """The packs of ``new``'s devices (one index shard's): every record ``rows`` (that shard's index
        now) names, plus ``new``; conditional writes. Returns the packs written."""
        by_pack: dict[int, list[tuple[fleet_index.Row, bytes]]] = {}
        for row, data in new:
            by_pack.setdefault(pack_of(row.device_id), []).append((row, data))
        for number, items in sorted(by_pack.items()):
            pack, etag = self.load(number)
            kept: Pack = {k: v for k, v in pack.items() if (r := rows.get(k[0])) is not None and r.sha256 == k[1]}
            for row, data in items:
                kept[(row.device_id, row.sha256)] = data
            key = pack_key(number)
            try:
                etag = self.ctx.store.put_if(key, encode_pack(kept), etag)
            except ConflictError:
                raise ConflictError(f"{self.ctx.store.url}{key}: the record pack changed while this command ran "
                                    "(another fleet change at the same time); run the command again") from None
            self._packs[number] = kept, etag
        return len(by_pack)


def in_shard_order(records: Iterable[DeviceRecord]) -> list[DeviceRecord]:
    """Records sorted so that each index shard, and each of its packs, is written once."""
    return sorted(records, key=lambda r: (fleet_index.shard_of(r.device_id), r.device_id))


def row_and_bytes(record: DeviceRecord) -> tuple[fleet_index.Row, bytes]:
    """A record's bytes and its index row (version and expiry set when written)."""
    data = record.to_bytes()
    return app_director.row_of(record, hashlib.sha256(data).hexdigest(), len(data)), data


def write_records(ctx: Context, index: app_director.Index, items: Iterable[tuple[fleet_index.Row, bytes]]) -> int:
    """Write changed records (rows from ``row_of`` with their bytes), shard by shard: the pack, then the
    index rows at their next version (the commit point). Items in shard order write each shard once.
    Returns the files written."""
    written = 0
    with app_director.writer_lock(ctx):
        shard, batch = -1, list[tuple[fleet_index.Row, bytes]]()
        for row, data in items:
            number = fleet_index.shard_of(row.device_id)
            if number != shard and batch:
                written += _flush(ctx, index, shard, batch)
                batch = []
            shard = number
            batch.append((row, data))
        if batch:
            written += _flush(ctx, index, shard, batch)
    return written


def _flush(ctx: Context, index: app_director.Index, shard: int, batch: list[tuple[fleet_index.Row, bytes]]) -> int:
    """One index shard's changed records: its packs, then its rows (the commit point); both are then
    let go (bounded memory: a million records and rows are not kept)."""
    rows = index.shard(shard)
    packs = index.packs.write(rows, batch)
    expires = _expires(ctx)
    for new, _ in batch:
        rows[new.device_id] = _next(new, rows.get(new.device_id), expires)
    index.save_shard(shard)
    index.packs.forget(shard)
    return 1 + packs


def _expires(ctx: Context) -> int:
    return int((ctx.now + timedelta(days=ctx.trust.role("devices").expires_days)).timestamp())


def _next(new: fleet_index.Row, old: fleet_index.Row | None, expires: int) -> fleet_index.Row:
    """``new`` at the device's next chain version (a device refuses a version it has seen go back)."""
    return new.at((0 if old is None else old.version) + 1, expires)


def index_rows(ctx: Context, index: app_director.Index, rows: Iterable[fleet_index.Row]) -> int:
    """Each row at its device's next chain version with a fresh expiry, then the index saved: what
    devices see next (the service signs from it). Returns the rows."""
    expires = _expires(ctx)
    count = 0
    for new in rows:
        index.put(_next(new, index.get(new.device_id), expires))
        count += 1
    index.save()
    return count


def _stamp(ctx: Context, key: str) -> object:
    """What changes when the key's file changes (directory store); None: read it again each time."""
    from otactl.store.directory import DirectoryStore

    store = ctx.store
    return _file_stamp(store.root / key) if isinstance(store, DirectoryStore) else None


def _file_stamp(path: Path) -> object:
    try:
        st = path.stat()
    except FileNotFoundError:
        return "absent"
    return st.st_ino, st.st_mtime_ns, st.st_size


class DirectorService:
    """What ``otactl repo serve`` makes on request: device chains while the director configuration says
    they are served (a ``ChainService``), else nothing (static files only). The configuration and the
    workspace's trust file are looked at again when their files change: a repository migrated to served
    chains while the server runs (``repo migrate-devices --chains served``, which also rotates the
    snapshot key) is served from its next request on, signed by the keys the trust file names now."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._seen: object = self._stamps()
        self._service = ChainService(ctx) if enabled(ctx) else None  # bad configuration, no keys: refused now

    def _stamps(self) -> object:
        stamp = _stamp(self.ctx, CONFIG_KEY)
        return None if stamp is None else (stamp, _file_stamp(self.ctx.workspace.root / self.ctx.trust.path))

    def enabled(self) -> bool:
        stamps = self._stamps()
        with self._lock:
            if stamps is None or stamps != self._seen:
                self.ctx = Context.open(self.ctx.workspace.root)  # the trust file as it is now
                self._service = ChainService(self.ctx) if enabled(self.ctx) else None
                self._seen = stamps
            return self._service is not None

    def get(self, key: str) -> bytes | None:
        """The bytes served at ``key`` (``ChainService.get``); None for a static file."""
        if not self.enabled():
            return None
        assert self._service is not None
        return self._service.get(key)


class ChainService:
    """Signs a device's chain files on request, from the fleet index (``otactl repo serve``). Shards
    and packs are cached and read again when their file changes (directory store) or on each request."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.signers = app_director.chain_signers(ctx)
        self._rows: dict[int, tuple[object, dict[str, fleet_index.Row]]] = {}
        self._packs: dict[int, tuple[object, Pack]] = {}

    def _row(self, device_id: str) -> fleet_index.Row | None:
        number = fleet_index.shard_of(device_id)
        stamp = _stamp(self.ctx, fleet_index.shard_key(number))
        cached = self._rows.get(number)
        if cached is None or cached[0] != stamp or stamp is None:
            cached = self._rows[number] = (stamp, app_director.Index(self.ctx).shard(number))
        return cached[1].get(device_id)

    def _pack(self, device_id: str) -> Pack:
        number = pack_of(device_id)
        stamp = _stamp(self.ctx, pack_key(number))
        cached = self._packs.get(number)
        if cached is None or cached[0] != stamp or stamp is None:
            cached = self._packs[number] = (stamp, Packs(self.ctx).load(number)[0])
        return cached[1]

    def get(self, key: str) -> bytes | None:
        """The bytes served at ``key``; None when the key is not the service's (a static file);
        ``NotFoundError`` for a device or version it does not have."""
        found = director.SERVED_URL.match(key)
        if found is not None:
            device_id = found["id"]
            if found["vrole"] == "root":
                return self.ctx.store.get(director.root_key(int(found["version"])))
            row = self._row(device_id)
            if row is None:
                raise NotFoundError(f"device {device_id!r}: not in the fleet")
            role = found["role"] or found["vrole"]
            if found["version"] is not None and int(found["version"]) != row.version:
                raise NotFoundError(f"device {device_id!r}: no {role} version {found['version']}")
            expires = datetime.fromtimestamp(row.expires, UTC)
            return director.device_role(device_id, role, app_director.entry_of(row), row.version, expires,
                                        self.signers[role])
        found = RECORD_URL.match(key)
        if found is not None:
            device_id = found["id"]
            data = self._pack(device_id).get((device_id, found["sha"]))
            if data is None:
                raise NotFoundError(f"{key}: no such record")
            return data
        return None


def records(ctx: Context, index: app_director.Index) -> Iterator[tuple[fleet_index.Row, bytes]]:
    """Every row with its record bytes, shard by shard (one pack in memory at a time)."""
    with progress.task("reading device records", fleet_index.SHARDS) as reading:
        for number in range(fleet_index.SHARDS):
            for row in index.shard(number).values():
                yield row, index.packs.record(row)
            index.packs.forget(number)
            reading.advance()

