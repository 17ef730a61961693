"""Read JSON documents that otactl keeps in the store (release state, rollout records) into typed values.

A document in the store can be damaged (a truncated write by another tool, a hand edit, garbage
bytes). Every problem is one :class:`~otactl.errors.StoreError` that names the object and the
field, never a ``KeyError`` traceback::

    s3://bucket/releases-state/t9-engine/2.1.0.json: corrupt release state: field 'security_version':
    must be an integer, got 'two'
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from otactl.errors import StoreError


def decode(data: bytes, where: str, kind: str) -> Fields:
    """The JSON object in ``data`` (``where``: the object's URL, ``kind``: what it should hold)."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise StoreError(f"{where}: corrupt {kind}: JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise StoreError(f"{where}: corrupt {kind}: not JSON text (undecodable byte at offset {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError, or an integer with too many digits
        raise StoreError(f"{where}: corrupt {kind}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{where}: corrupt {kind}: not a JSON object")
    return Fields(doc, where, kind)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """One JSON object of a stored document; each accessor checks one field or says which one is wrong."""

    def __init__(self, doc: dict[str, Any], where: str, kind: str, path: str = "") -> None:
        self.doc = doc
        self.where = where
        self.kind = kind
        self.path = path

    def name(self, key: str | int) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def error(self, key: str | int | None, problem: str) -> StoreError:
        field = self.path if key is None else self.name(key)
        at = f"field {field!r}: " if field else ""
        return StoreError(f"{self.where}: corrupt {self.kind}: {at}{problem}")

    def raw(self, key: str) -> Any:
        if key not in self.doc:
            raise self.error(key, "missing")
        return self.doc[key]

    def text(self, key: str) -> str:
        return self.text_of(key, self.raw(key))

    def text_of(self, key: str | int, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_show(value)}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.doc.get(key) is None else self.text(key)

    def integer(self, key: str, *, low: int = 0) -> int:
        return self.integer_of(key, self.raw(key), low=low)

    def integer_of(self, key: str | int, value: Any, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, f"must be an integer of at least {low}, got {_show(value)}")
        return value

    def number_of(self, key: str | int, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {_show(value)}")
        return float(value)

    def time(self, key: str) -> datetime:
        return self.time_of(key, self.raw(key))

    def time_of(self, key: str | int, value: Any) -> datetime:
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise self.error(key, f"must be an ISO 8601 time with a UTC offset, got {_show(value)}")
        return parsed

    def obj(self, key: str) -> Fields:
        return self.obj_of(key, self.raw(key))

    def optional_obj(self, key: str) -> Fields | None:
        return None if self.doc.get(key) is None else self.obj(key)

    def obj_of(self, key: str | int, value: Any) -> Fields:
        if not isinstance(value, dict):
            raise self.error(key, f"must be an object, got {_show(value)}")
        return Fields(value, self.where, self.kind, self.name(key))

    def items(self, key: str, *, optional: bool = False) -> list[Any]:
        """A list field (``optional``: absent means empty)."""
        if optional and key not in self.doc:
            return []
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {_show(value)}")
        return value

    def texts(self, key: str, *, optional: bool = False) -> list[str]:
        return [self.text_of(f"{key}.{i}", v) for i, v in enumerate(self.items(key, optional=optional))]

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}, got {_show(value)}")
        return value
