"""The fleet index (decision 0407): what rings need of every device, without opening a signed record.

256 shards ``director/index/<xx>.tsv`` (``xx``: the first byte of sha256(device id)), each a header line
and one tab-separated row per device, sorted by id:

    device_id  model  variant  region  tags  pin  row  sha256  length  version  expires  key

``tags`` is comma-separated (``-`` for none), ``pin`` is ``-`` for none, ``row`` the inventory digest
(``fleet import`` skips a device whose row is unchanged), ``sha256``/``length`` the record file the
device's director targets lists, ``version`` that chain's version and ``expires`` its expiry (Unix
seconds, for ``repo refresh``), ``key`` the device's public key (hex: an import refuses a key another
device of the fleet already has). Names are checked path segments, so no field holds a tab or newline.

The index is written by the same command that signs the chains, after them, and it is not signed: it is
a cache of the signed records, and ``otactl fleet verify`` proves it consistent with them (every row's
record hash is the one its device's signed chain lists, and its attributes are that record's).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from otactl.errors import VerificationError

HEADER = (b"# otactl/fleet-index/1\tdevice_id\tmodel\tvariant\tregion\ttags\tpin\trow\tsha256\tlength\tversion"
          b"\texpires\tkey\n")
FIELDS = 12
SHARDS = 256
_NONE = "-"


def shard_of(device_id: str) -> int:  # not cached: at 1M devices a bounded cache misses, and costs more than it saves
    return hashlib.sha256(device_id.encode()).digest()[0]


def shard_key(shard: int) -> str:
    return f"director/index/{shard:02x}.tsv"


@dataclass(frozen=True, slots=True)
class Row:
    device_id: str
    model: str
    variant: str
    region: str
    tags: tuple[str, ...]
    pin: str | None
    row: str  # the inventory digest (DeviceRecord.inventory_digest)
    sha256: str
    length: int
    version: int
    expires: int  # Unix seconds
    key: str  # the device's public key, hex

    def at(self, version: int, expires: int) -> Row:
        """This row at another chain version and expiry (``dataclasses.replace``, without its cost)."""
        return Row(self.device_id, self.model, self.variant, self.region, self.tags, self.pin, self.row,
                   self.sha256, self.length, version, expires, self.key)

    def encode(self) -> str:
        return "\t".join((self.device_id, self.model, self.variant, self.region, ",".join(self.tags) or _NONE,
                          self.pin or _NONE, self.row, self.sha256, str(self.length), str(self.version),
                          str(self.expires), self.key))


def _rows_text(data: bytes, where: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each row of a shard; a shard that is not an index is refused, named."""
    if not data.startswith(HEADER):
        raise VerificationError(f"{where}: not a fleet index shard (its first line is not {HEADER[:22]!r}...)")
    return enumerate(data[len(HEADER):].decode("utf-8", "replace").splitlines(), start=2)


def _lines(data: bytes, where: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _rows_text(data, where):
        parts = line.split("\t")
        if len(parts) != FIELDS:
            raise VerificationError(f"{where}: line {number}: {len(parts)} fields, expected {FIELDS}")
        yield number, parts


def decode(data: bytes, where: str) -> dict[str, Row]:
    """A shard's rows by device id; a shard that is not an index is a ``VerificationError`` naming it."""
    rows: dict[str, Row] = {}
    for number, parts in _lines(data, where):
        try:
            tags = () if parts[4] == _NONE else tuple(sys.intern(t) for t in parts[4].split(","))
            rows[parts[0]] = Row(parts[0], sys.intern(parts[1]), sys.intern(parts[2]), sys.intern(parts[3]), tags,
                                 None if parts[5] == _NONE else parts[5], parts[6], parts[7], int(parts[8]),
                                 int(parts[9]), int(parts[10]), parts[11])
        except ValueError:
            raise VerificationError(f"{where}: line {number}: length, version and expires must be integers") from None
    return rows


Attributes = tuple[str, str, str, str, frozenset[str]]  # device id, model, variant, region, tags


def attributes(data: bytes, where: str, model: str | None = None) -> Iterator[Attributes]:
    """What rings need of each row (of ``model`` only, if given), without building rows: ``rollout plan``
    reads a million of them. Repeated names are shared (interned), so a million rows stay small."""
    none: frozenset[str] = frozenset()
    intern = sys.intern
    for number, line in _rows_text(data, where):
        parts = line.split("\t", 5)  # the five it needs, and the rest (counted, not split)
        if len(parts) != 6 or parts[5].count("\t") != FIELDS - 6:
            raise VerificationError(f"{where}: line {number}: expected {FIELDS} tab-separated fields")
        if model is not None and parts[1] != model:
            continue
        tags = none if parts[4] == _NONE else frozenset(intern(t) for t in parts[4].split(","))
        yield parts[0], intern(parts[1]), intern(parts[2]), intern(parts[3]), tags


def encode(rows: dict[str, Row]) -> bytes:
    return HEADER + "".join(rows[k].encode() + "\n" for k in sorted(rows)).encode()


def owners_of(data: bytes, where: str, keys: set[str]) -> Iterator[tuple[str, str]]:
    """(key, device id) for each row of the shard whose key is in ``keys``, without building rows."""
    for _, parts in _lines(data, where):
        if parts[11] in keys:
            yield parts[11], parts[0]
