"""YAML read with the line of every key, so a broken declaration names ``file:line``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class DeclarationError(ValueError):
    """A declaration that cannot compile; the message names file, line, path and the word."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}: each key may appear once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


@dataclass
class YamlText:
    """A YAML document, its data and the line of each key path."""

    path: Path
    data: Any
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> YamlText:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DeclarationError(f"{path}: the file does not exist") from None
        try:
            node = yaml.compose(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else None
            where = f"{path}:{line}" if line else str(path)
            raise DeclarationError(f"{where}: not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise DeclarationError(f"{path}: not valid YAML: {exc}") from None
        lines: dict[tuple[str, ...], int] = {}
        if node is not None:
            _walk(node, (), lines)
        return cls(path, data, lines)

    def line_of(self, at: Sequence[Any]) -> int | None:
        """The line of the deepest key of ``at`` present in the file."""
        parts = tuple(str(p) for p in at)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None

    def where(self, at: Sequence[Any]) -> str:
        line = self.line_of(at)
        return f"{self.path.name}:{line}" if line else self.path.name

    def error(self, at: Sequence[Any], message: str) -> DeclarationError:
        dotted = ".".join(str(p) for p in at)
        return DeclarationError(f"{self.where(at)}: {dotted}: {message}")


def _walk(node: yaml.Node, at: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            here = (*at, str(key_node.value))
            lines[here] = key_node.start_mark.line + 1
            _walk(value_node, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            here = (*at, str(i))
            lines[here] = item.start_mark.line + 1
            _walk(item, here, lines)
