"""Load user-written YAML once, keeping line numbers so errors can name file, line and field.

Every user-written YAML file (manifests, plans, inventories, scenarios, the workspace and trust
configuration) is read here, and hostile input is bounded before anything is built from it
(docs/decisions/0501-hostile-yaml.md):

* anchors (``&a``) and aliases (``*a``) are refused where the parser meets them, before any
  expansion, so "billion laughs" and self-referencing documents end in one clear error at once;
* merge keys (``<<``) and explicit tags other than the plain JSON-like ones are refused;
* a file is at most :data:`MAX_BYTES`, nests at most :data:`MAX_DEPTH` levels and holds at most
  :data:`MAX_NODES` values;
* an empty document (an empty file, only comments, only ``---``) and a second document are errors.

Every refusal is an :class:`~otactl.errors.InputFileError` naming the file and, where the parser
knows it, the line.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otactl.errors import InputFileError

FieldPath = tuple[str | int, ...]

MAX_BYTES = 8 * 1024 * 1024  # a manifest or plan is a few KiB; large fleet inventories are CSV
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 1_000_000  # keys and values together

_Y = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_Y}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_VALUE_TAG = f"{_Y}value"  # PyYAML resolves a plain `=` to it, with no constructor: read it as text
_MERGE_TAG = f"{_Y}merge"
_SEQ_TAG, _MAP_TAG = f"{_Y}seq", f"{_Y}map"
_NO_ALIASES = "otactl reads no YAML anchors or aliases (write the value out in full)"


@dataclass(frozen=True)
class YamlDoc:
    path: str
    data: Any
    lines: dict[FieldPath, int]

    def line(self, where: FieldPath) -> int | None:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return self.lines.get((), None)

    def error(self, where: FieldPath, problem: str) -> InputFileError:
        return InputFileError(self.path, problem, line=self.line(where), field=field_name(where))


def field_name(where: FieldPath) -> str | None:
    """``rings.0.gates``; a key that is not printable text (a newline, a control character) shown quoted."""
    if not where:
        return None
    return ".".join(str(p) if str(p).isprintable() and str(p) else repr(p) for p in where)


def _line(mark: Any) -> int | None:
    return None if mark is None else int(mark.line) + 1


def _show_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_Y) if tag.startswith(_Y) else tag


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer, refusing anchors, aliases, deep nesting and too many nodes as it goes."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self._path = path
        self._depth = 0
        self._nodes = 0

    def _refuse(self, mark: Any, problem: str) -> InputFileError:
        return InputFileError(self._path, problem, line=_line(mark))

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves Parser.peek_event untyped
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(event.start_mark, f"YAML alias '*{event.anchor}': {_NO_ALIASES}")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise self._refuse(event.start_mark, f"YAML anchor '&{anchor}': {_NO_ALIASES}")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self._refuse(event.start_mark, f"more than {MAX_NODES:,} values; refusing to read further")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._refuse(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Builder:
    """Plain Python values (dict, list, str, int, float, bool, None, date) from a composed node tree."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: dict[FieldPath, int] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, problem: str, where: FieldPath = ()) -> InputFileError:
        return InputFileError(self.path, problem, line=_line(node.start_mark), field=field_name(where))

    def build(self, node: yaml.Node, where: FieldPath) -> Any:
        self.lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self.error(node, self._bad_tag(node.tag), where)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.key(key_node, where)
                if key in out:
                    raise self.error(key_node, "duplicate key", (*where, key))
                out[key] = self.build(value_node, (*where, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(node, self._bad_tag(node.tag), where)
            return [self.build(item, (*where, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, where)

    def key(self, node: yaml.Node, where: FieldPath) -> str:
        if isinstance(node, yaml.ScalarNode) and node.tag == _MERGE_TAG:
            raise self.error(node, "YAML merge key '<<': otactl reads no merge keys (write the keys out in full)",
                             where)
        if not isinstance(node, yaml.ScalarNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
            raise self.error(node, f"keys must be strings, got a {kind}")
        key = self.scalar(node, where)
        if not isinstance(key, str):
            raise self.error(node, f"keys must be strings, got {key!r}")
        if not key.isprintable():  # a line break or control character would also break every message naming it
            raise self.error(node, f"key {key!r} holds a line break or control character", where)
        return key

    def scalar(self, node: yaml.Node, where: FieldPath) -> Any:
        if node.tag == _VALUE_TAG:
            return str(node.value)
        if node.tag == _MERGE_TAG:  # `<<` as a value rather than a key: it is just text
            return str(node.value)
        if node.tag not in _SCALAR_TAGS:
            raise self.error(node, self._bad_tag(node.tag), where)
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError, LookupError) as exc:  # `!!bool maybe`: KeyError
            problem = getattr(exc, "problem", None) or str(exc)
            shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
            raise self.error(node, f"cannot read {shown!r} as {_show_tag(node.tag)}: {_one_line(problem)}",
                             where) from None

    @staticmethod
    def _bad_tag(tag: str) -> str:
        return (f"YAML tag {_show_tag(tag)!r} is not allowed (plain mappings, lists, strings, numbers, "
                "booleans, null and dates only)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_yaml(path: str | Path) -> YamlDoc:
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputFileError(str(p), "file not found") from None
    except IsADirectoryError:
        raise InputFileError(str(p), "is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(str(p), f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise InputFileError(str(p), _too_large())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputFileError(str(p), f"not UTF-8 text (byte {exc.start})", line=line) from None
    return parse_yaml(text, str(p))


def _too_large() -> str:
    return f"larger than {MAX_BYTES // (1024 * 1024)} MiB, the limit for otactl's YAML files"


def parse_yaml(text: str, path: str) -> YamlDoc:
    """Parse one YAML document, refusing what the module docstring lists with one InputFileError."""
    if len(text) > MAX_BYTES:
        raise InputFileError(path, _too_large())
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, path)  # the reader checks every character here
        node = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise InputFileError(path, f"not valid YAML: unacceptable character #x{char:04x}: "
                                   f"{_one_line(exc.reason)}", line=line) from None
    except yaml.composer.ComposerError as exc:
        if "another document" in str(exc.problem):
            raise InputFileError(path, "a second YAML document ('---'); a file holds exactly one",
                                 line=_line(exc.problem_mark)) from None
        raise _syntax_error(exc, path) from None
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, path) from None
    except RecursionError:  # not expected with MAX_DEPTH, but never a traceback
        raise InputFileError(path, f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == f"{_Y}null"):
        raise InputFileError(path, "file is empty (no YAML content, only blank lines, comments, '---' or null)")
    builder = _Builder(path)
    return YamlDoc(path, builder.build(node, ()), builder.lines)


def _syntax_error(exc: yaml.YAMLError, path: str) -> InputFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    return InputFileError(path, f"not valid YAML: {_one_line(problem)}", line=_line(mark))


def check_keys(doc: YamlDoc, where: FieldPath, value: Any, allowed: set[str],
               required: Set[str] = frozenset()) -> dict[str, Any]:
    """A mapping with only known keys and all required ones, or an error naming the field."""
    if not isinstance(value, dict):
        raise doc.error(where, "must be a mapping")
    for key in value:
        if key not in allowed:
            raise doc.error((*where, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required):
        if key not in value:
            raise doc.error(where, f"missing required key {key!r}")
    return value
