"""The director layout's services (decision 0407): create it, sign device chains, keep the fleet index.

``otactl.repo.director`` has the metadata; this module does the I/O. A repository uses the layout when
its top-level ``targets`` lists ``director/root.json``; otherwise its records sit in hash bins.
Writes are ordered so that a device never sees a chain naming a record that is not there: record files,
then every changed device's targets and snapshot (new versioned names, invisible), then their
timestamps, then the index shards (conditional writes: a concurrent writer is a clear conflict). A crash
part-way leaves some devices on their new chain and the index behind them; running the command again
signs those devices once more at a higher version and brings the index up to date.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from securesystemslib.signer import Signer
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.api.serialization import DeserializationError

from otactl import progress
from otactl.app.context import Context
from otactl.errors import ConflictError, KeyAccessError, NotFoundError, StoreError, VerificationError
from otactl.fleet import index as fleet_index
from otactl.fleet.records import DeviceRecord
from otactl.repo import director, layout
from otactl.repo.repository import JOURNAL_KEY, Repository, _public


def enabled(repo: Repository) -> bool:
    """Whether the repository keeps its records in the director layout."""
    return director.ROOT_TARGET in repo.role("targets").signed.targets


def root(ctx: Context) -> Metadata[Root]:
    try:
        return Metadata.from_bytes(ctx.store.get(director.root_key(None)))
    except NotFoundError:
        raise StoreError(f"{ctx.store.url}{director.root_key(None)}: the director's root is missing") from None


def create(ctx: Context, repo: Repository) -> bytes:
    """Make the director's root (signed by the root keys held here) and list it as the image
    repository's ``director/root.json`` (in ``targets``, published by the caller). Returns its bytes."""
    trust = ctx.trust
    keys = {role: [_public(trust, k) for k in trust.role(src).keys] for role, src in director.ROLE_KEYS.items()}
    thresholds = {role: trust.role(src).threshold for role, src in director.ROLE_KEYS.items()}
    expires = (ctx.now + timedelta(days=trust.role("root").expires_days)).replace(microsecond=0)
    md = director.make_root(keys, thresholds, expires)
    signers = [ctx.signers.get(k) for k in trust.role("root").keys if ctx.signers.has_private(k)]
    try:
        data = director.sign_root(md, signers)
    except UnsignedMetadataError as exc:  # too few root keys here
        raise KeyAccessError(f"director root: needs {thresholds['root']} of the root keys "
                             f"({', '.join(trust.role('root').keys)}): {exc}") from None
    ctx.store.put(director.root_key(1), data)
    ctx.store.put(director.root_key(None), data)
    sha = hashlib.sha256(data).hexdigest()
    ctx.store.put(layout.target_key(director.ROOT_TARGET, sha), data)
    repo.add_target("targets", director.ROOT_TARGET, len(data), sha, {"director_root_version": 1})
    return data


def chain_signers(ctx: Context) -> dict[str, list[Signer]]:
    """The online keys that sign device chains, each role to its threshold; too few is one error."""
    out: dict[str, list[Signer]] = {}
    for role in ("targets", "snapshot", "timestamp"):
        entry = ctx.trust.role(director.ROLE_KEYS[role])
        held = [ctx.signers.get(k) for k in entry.keys if ctx.signers.has_private(k)]
        if len(held) < entry.threshold:
            raise KeyAccessError(f"director {role}: needs {entry.threshold} of the keys {', '.join(entry.keys)} "
                                 f"(role {director.ROLE_KEYS[role]!r}); {len(held)} here")
        out[role] = held[:entry.threshold]
    return out


@dataclass
class Index:
    """The fleet index shards, read on demand and written back (conditionally) by ``save``."""

    ctx: Context
    _shards: dict[int, dict[str, fleet_index.Row]] = field(default_factory=dict)
    _etags: dict[int, str | None] = field(default_factory=dict)
    _dirty: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        from otactl.app import director_served

        self.served = director_served.enabled(self.ctx)  # chains signed on request (decision 0408)
        self.packs = director_served.Packs(self.ctx)  # where the records are, then

    def record_bytes(self, row: fleet_index.Row) -> bytes:
        """The record file ``row`` names, checked against the row's length and hash."""
        tf = entry_of(row)
        data = self.packs.record(row) if self.served else self.ctx.store.get(layout.target_key(tf.path, row.sha256))
        tf.verify_length_and_hashes(data)
        return data

    def shard(self, number: int) -> dict[str, fleet_index.Row]:
        if number not in self._shards:
            key = fleet_index.shard_key(number)
            try:
                found = self.ctx.store.get_versioned(key)
                self._shards[number] = fleet_index.decode(found.data, f"{self.ctx.store.url}{key}")
                self._etags[number] = found.etag
            except NotFoundError:
                self._shards[number], self._etags[number] = {}, None
        return self._shards[number]

    def get(self, device_id: str) -> fleet_index.Row | None:
        return self.shard(fleet_index.shard_of(device_id)).get(device_id)

    def put(self, row: fleet_index.Row) -> None:
        number = fleet_index.shard_of(row.device_id)
        self.shard(number)[row.device_id] = row
        self._dirty.add(number)

    def rows(self) -> Iterator[fleet_index.Row]:
        for number in range(fleet_index.SHARDS):
            yield from self.shard(number).values()

    def save_shard(self, number: int) -> None:
        """Write shard ``number`` (changed in place, through ``shard``) and let it go: a later ``get``
        reads it again."""
        self._write(number)
        del self._shards[number], self._etags[number]

    def save(self, before: int | None = None) -> None:
        """Write the changed shards (only those numbered below ``before``, which are then let go: a
        later ``get`` reads them again)."""
        for number in sorted(n for n in self._dirty if before is None or n < before):
            self._write(number)
            if before is not None:
                del self._shards[number], self._etags[number]

    def _write(self, number: int) -> None:
        key = fleet_index.shard_key(number)
        try:
            self._etags[number] = self.ctx.store.put_if(key, fleet_index.encode(self._shards[number]),
                                                         self._etags[number])
        except ConflictError:
            raise ConflictError(f"{self.ctx.store.url}{key}: the fleet index changed while this command ran "
                                "(another fleet change at the same time); the devices' chains are written, "
                                "run the command again to bring the index up to date") from None
        self._dirty.discard(number)


def row_of(record: DeviceRecord, sha256: str, length: int) -> fleet_index.Row:
    """The index row of ``record``, whose file has that hash and length; ``publish`` sets its version and expiry."""
    tags = tuple(sorted(record.tags)) if len(record.tags) > 1 else record.tags
    return fleet_index.Row(record.device_id, record.model, record.variant, record.region, tags, record.pin,
                           record.inventory_digest(), sha256, length, 0, 0, record.public_key)


def entry_of(row: fleet_index.Row) -> TargetFile:
    """The record entry a row stands for (as ``fleet._entry`` makes it for that record)."""
    tf = TargetFile(row.length, {"sha256": row.sha256}, layout.device_path(row.device_id))
    layout.set_custom(tf, {"model": row.model, "variant": row.variant, "row": row.row})
    return tf


def _published_version(ctx: Context, device_id: str, row: fleet_index.Row | None) -> int:
    """The device's chain version now: the index's, or the published timestamp's if higher (a crash
    after the chain and before the index). A device refuses a chain below the one it saw."""
    version = 0 if row is None else row.version
    data = ctx.store.get_optional(director.device_key(device_id, "timestamp", None)) if row is not None else None
    if data is not None:
        with contextlib.suppress(DeserializationError):  # unreadable: the index's version, plus one, moves on
            version = max(version, Metadata.from_bytes(data).signed.version)
    return version


CHUNK = 20_000  # devices per write pass: memory stays bounded, each pass ends durable (one syncfs)


def publish(ctx: Context, index: Index, changed: Sequence[fleet_index.Row], *, reread: bool = True) -> int:
    """Sign and write the chains of ``changed`` (rows from ``row_of``; their record files are written
    already), then their index rows. ``reread``: read each known device's published timestamp for its
    version. Devices go in shard order, ``CHUNK`` at a time: a chunk's targets and snapshots, then its
    timestamps, then every index shard it completed (saved and let go). Returns the files written."""
    if not changed:
        return 0
    if index.served:  # nothing to sign here: the service signs from the rows (decision 0408)
        from otactl.app import director_served

        with writer_lock(ctx):
            return director_served.index_rows(ctx, index, changed)
    signers = chain_signers(ctx)
    expires = (ctx.now + timedelta(days=ctx.trust.role("devices").expires_days)).replace(microsecond=0)
    ordered = sorted(changed, key=lambda row: (fleet_index.shard_of(row.device_id), row.device_id))
    with writer_lock(ctx), progress.task("signing device chains", len(ordered)) as signing:
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start:start + CHUNK]
            stamps: list[tuple[str, bytes]] = []
            rows: list[fleet_index.Row] = []

            def bodies(chunk: Sequence[fleet_index.Row] = chunk, stamps: list[tuple[str, bytes]] = stamps,
                       rows: list[fleet_index.Row] = rows) -> Iterator[tuple[str, bytes]]:
                for new in chunk:
                    old = index.get(new.device_id)
                    version = (0 if old is None else _published_version(ctx, new.device_id, old) if reread
                               else old.version) + 1
                    files = director.device_chain(new.device_id, entry_of(new), version, expires, signers)
                    stamps.append(files[2])
                    rows.append(replace(new, version=version, expires=int(expires.timestamp())))
                    signing.advance()
                    yield from files[:2]

            ctx.store.put_many(bodies())
            ctx.store.put_many(stamps)  # each device's new chain becomes visible here
            for row in rows:
                index.put(row)
            last = fleet_index.shard_of(chunk[-1].device_id)
            index.save(before=None if start + CHUNK >= len(ordered) else last)
    return 3 * len(changed)


@contextlib.contextmanager
def writer_lock(ctx: Context) -> Iterator[None]:
    """One writer of device chains at a time: two would write the same ``<v>.snapshot.json`` of a
    device. The lock is the image repository's publication journal, empty: a crash leaves it behind,
    every command then says so, and ``otactl repo publish`` clears it (nothing to replay); the fleet
    command run again completes the chains."""
    lock = json.dumps({"schema": "otactl/publish-journal/1", "created": ctx.now.isoformat(),
                       "base_timestamp_etag": None, "files": [],
                       "note": "device chains being written (decision 0407)"}).encode()
    try:
        ctx.store.put_if(JOURNAL_KEY, lock, None)
    except ConflictError:
        raise ConflictError(f"{ctx.store.url}: another publication is in progress or unfinished",
                            hint="retry; if no one else is publishing, run `otactl repo publish`, then this "
                                 "command again") from None
    try:
        yield
    finally:  # an error (not a crash) releases it: what was written is completed by running again
        ctx.store.delete(JOURNAL_KEY)


def resign(ctx: Context, index: Index, rows: Sequence[fleet_index.Row]) -> int:
    """New chains (version + 1, fresh expiry) for the same records: ``repo refresh`` before they lapse."""
    return publish(ctx, index, rows)


def get_record(ctx: Context, device_id: str) -> DeviceRecord:
    """The device's published record, read through its signed chain as the device reads it (with
    chains signed on request: the record its index row names, as the service serves it)."""
    path = layout.device_path(device_id)
    index = Index(ctx)
    if index.served:
        row = index.get(device_id)
        if row is None:
            raise NotFoundError(f"device {device_id!r}: not in the fleet (import it with `otactl fleet import`)")
        return DeviceRecord.from_bytes(index.record_bytes(row), path)
    try:
        _, tf = director.read_chain(root(ctx), device_id, ctx.store.get)
    except NotFoundError:
        raise NotFoundError(f"device {device_id!r}: not in the fleet (import it with `otactl fleet import`)") from None
    except Exception as exc:  # noqa: BLE001 - python-tuf's verification errors
        raise VerificationError(f"{ctx.store.url}{director.device_prefix(device_id)}: the device's chain does not "
                                f"verify ({exc})") from None
    if tf is None:
        raise VerificationError(f"{ctx.store.url}{director.device_prefix(device_id)}: its targets lists no {path}")
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    tf.verify_length_and_hashes(data)
    return DeviceRecord.from_bytes(data, path)


def list_records(ctx: Context, index: Index | None = None) -> list[DeviceRecord]:
    """Every record the index names, each checked against the hash in its row."""
    index = index or Index(ctx)
    rows = list(index.rows())
    out = []
    with progress.task("reading device records", len(rows)) as reading:
        for row in rows:
            out.append(DeviceRecord.from_bytes(index.record_bytes(row), layout.device_path(row.device_id)))
            reading.advance()
    return sorted(out, key=lambda r: r.device_id)


@dataclass(frozen=True)
class Inconsistency:
    device_id: str
    problem: str


def verify(ctx: Context, index: Index | None = None) -> tuple[int, list[Inconsistency]]:
    """Prove the index consistent with the signed chains: for every row, the device's chain verifies
    under the director's root, lists the record the row names, and the record says what the row says.
    Also every device directory in the store has a row. Returns (devices checked, problems)."""
    index = index or Index(ctx)
    if index.served:
        return _verify_served(index)
    director_root = root(ctx)
    problems: list[Inconsistency] = []
    rows = {row.device_id: row for row in index.rows()}
    with progress.task("verifying device chains", len(rows)) as checking:
        for device_id, row in rows.items():
            checking.advance()
            try:
                version, tf = director.read_chain(director_root, device_id, ctx.store.get)
            except Exception as exc:  # noqa: BLE001
                problems.append(Inconsistency(device_id, f"its chain does not verify: {exc}"))
                continue
            if tf is None or tf.hashes.get("sha256") != row.sha256 or tf.length != row.length:
                problems.append(Inconsistency(device_id, "the index names another record than its signed chain"))
                continue
            if version != row.version:
                problems.append(Inconsistency(device_id, f"chain version {version}, index says {row.version}"))
            data = ctx.store.get(layout.target_key(tf.path, row.sha256))
            record = DeviceRecord.from_bytes(data, tf.path)
            if row_of(record, tf.hashes["sha256"], tf.length).at(row.version, row.expires) != row:
                problems.append(Inconsistency(device_id, "the index's attributes differ from the signed record"))
    for key in ctx.store.list("director/devices/"):
        device_id = key.removeprefix("director/devices/").partition("/")[0]
        if device_id not in rows and key.endswith("/timestamp.json"):
            problems.append(Inconsistency(device_id, "a signed chain the index does not list"))
    return len(rows), problems


def _verify_served(index: Index) -> tuple[int, list[Inconsistency]]:
    """Chains signed on request are made from the rows, so what can disagree is a row and its record:
    each row's record must be in its pack, with the row's hash, and say what the row says."""
    problems: list[Inconsistency] = []
    checked = 0
    with progress.task("verifying device records", fleet_index.SHARDS) as checking:
        for number in range(fleet_index.SHARDS):
            for row in index.shard(number).values():
                checked += 1
                try:
                    data = index.record_bytes(row)
                except (NotFoundError, LengthOrHashMismatchError) as exc:
                    problems.append(Inconsistency(row.device_id, f"its record: {exc}"))
                    continue
                record = DeviceRecord.from_bytes(data, layout.device_path(row.device_id))
                if row_of(record, row.sha256, row.length).at(row.version, row.expires) != row:
                    problems.append(Inconsistency(row.device_id, "the index's attributes differ from its record"))
            index.packs.forget(number)
            checking.advance()
    return checked, problems


def _shards(ctx: Context) -> Iterator[tuple[bytes, str]]:
    """Each index shard's bytes and where it is, read one at a time (absent shards skipped)."""
    for number in range(fleet_index.SHARDS):
        key = fleet_index.shard_key(number)
        data = ctx.store.get_optional(key)
        if data is not None:
            yield data, f"{ctx.store.url}{key}"


def ring_attributes(ctx: Context, model: str) -> Iterator[fleet_index.Attributes]:
    """Every device of ``model`` as rings see it, shard by shard (nothing else kept in memory)."""
    for data, where in _shards(ctx):
        yield from fleet_index.attributes(data, where, model)


def key_owners(ctx: Context, keys: set[str]) -> dict[str, str]:
    """Public key -> the device of the fleet index whose record binds it, for ``keys`` only (streamed:
    a million-device index is read without building its rows)."""
    out: dict[str, str] = {}
    for data, where in _shards(ctx):
        out.update(fleet_index.owners_of(data, where, keys))
    return out


def stale_rows(index: Index, before: datetime) -> list[fleet_index.Row]:
    limit = int(before.timestamp())
    return [row for row in index.rows() if row.expires <= limit]


