"""Load user-written YAML once, keeping line numbers so errors can name file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otactl.errors import InputFileError

FieldPath = tuple[str | int, ...]


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
        field = ".".join(str(p) for p in where) if where else None
        return InputFileError(self.path, problem, line=self.line(where), field=field)


def _build(node: yaml.Node, where: FieldPath, lines: dict[FieldPath, int], path: str) -> Any:
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if not isinstance(key, str):
                raise InputFileError(path, f"keys must be strings, got {key!r}",
                                     line=key_node.start_mark.line + 1)
            if key in out:
                raise InputFileError(path, "duplicate key", line=key_node.start_mark.line + 1,
                                     field=".".join(str(p) for p in (*where, key)))
            out[key] = _build(value_node, (*where, key), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*where, i), lines, path) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: str | Path) -> YamlDoc:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(str(p), "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(str(p), f"cannot read: {exc}") from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, path: str) -> YamlDoc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputFileError(path, f"not valid YAML: {problem}",
                             line=None if mark is None else mark.line + 1) from None
    lines: dict[FieldPath, int] = {}
    if node is None:
        raise InputFileError(path, "file is empty")
    return YamlDoc(path, _build(node, (), lines, path), lines)


def check_keys(doc: YamlDoc, where: FieldPath, value: Any, allowed: set[str],
               required: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
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
