"""The datasets known to a sources file: the shipped declarations plus its own ``datasets:``.

``products`` and ``weather`` are declarations shipped in ``datasets/builtin/``; a sources file
may declare more beside its ``sources:``. A name declared twice is an error naming both files.
Every declaration compiles once, here; a broken one fails the load naming ``file:line``, the
dataset, the field or column and the word at fault. No dagster here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ingest_assets.datasets.compile import CompiledDataset, CompileError, compile_dataset
from ingest_assets.datasets.declaration import (
    DATASET_NAME,
    RESERVED_NAMES,
    DatasetDeclaration,
)
from ingest_assets.datasets.yamltext import DeclarationError, YamlText

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
_WORD = re.compile(r"^([A-Za-z_][\w/.]*): (.*)$", re.S)


@dataclass
class Catalog:
    """Compiled datasets by name, in declaration order (shipped ones first)."""

    datasets: dict[str, CompiledDataset] = field(default_factory=dict)

    def __iter__(self) -> Iterator[CompiledDataset]:
        return iter(self.datasets.values())

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    def __getitem__(self, name: str) -> CompiledDataset:
        return self.datasets[name]

    @property
    def names(self) -> list[str]:
        return list(self.datasets)


def _message(error: Mapping[str, Any]) -> tuple[list[str], str]:
    """(path, message) of one Pydantic error, worded for a person."""
    at = [str(p) for p in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return at, f"unknown key {at[-1]!r}"
    if error["type"] == "missing":
        return at, "is required"
    match = _WORD.match(message)
    if error["type"] == "value_error" and match:
        words = match.group(1).replace("/", ".").split(".")
        return [*at, *[w for w in words if w]], match.group(2)
    if error["type"] == "union_tag_invalid":
        return at, message
    return at, message


def declarations(source: YamlText, section: Any, base: Sequence[str]) -> dict[str, CompiledDataset]:
    """Compile the ``datasets:`` mapping found at ``base`` in ``source``."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise source.error(base, "expected a mapping of dataset names to declarations")
    compiled = {}
    for name, block in section.items():
        at = [*base, str(name)]
        if not isinstance(name, str) or not DATASET_NAME.match(name):
            raise source.error(
                at, f"{name!r} is not a dataset name (lower case letters, digits, _)"
            )
        if name in RESERVED_NAMES:
            raise source.error(at, f"{name!r} is reserved ({', '.join(RESERVED_NAMES)})")
        try:
            decl = DatasetDeclaration.model_validate(block if block is not None else {})
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                path, message = _message(error)
                problems.append(str(source.error([*at, *path], message)))
            raise DeclarationError("\n".join(problems)) from None
        try:
            compiled[name] = compile_dataset(name, decl, str(source.path))
        except CompileError as exc:
            raise source.error([*at, *exc.at[2:]], exc.message) from None
    return compiled


def builtin_catalog() -> Catalog:
    """The shipped declarations (``datasets/builtin/*.yaml``)."""
    catalog = Catalog()
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        text = YamlText.read(path)
        data = text.data or {}
        for name, compiled in declarations(text, data.get("datasets"), ["datasets"]).items():
            if name in catalog:
                raise text.error(
                    ["datasets", name], f"declared twice (also in {catalog[name].origin})"
                )
            catalog.datasets[name] = compiled
    return catalog


_BUILTIN: Catalog | None = None


def shipped() -> Catalog:
    """The shipped catalog, compiled once per process."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = builtin_catalog()
    return _BUILTIN


def catalog_for(text: YamlText, base: Catalog | None = None) -> Catalog:
    """The datasets of ``base`` (default: the shipped ones) plus those a sources file declares."""
    base = base or shipped()
    data = text.data if isinstance(text.data, Mapping) else {}
    own = declarations(text, data.get("datasets"), ["datasets"])
    for name in own:
        if name in base:
            raise text.error(
                ["datasets", name],
                f"dataset {name!r} exists already (declared in {base[name].origin}); "
                "choose another name",
            )
    return Catalog({**base.datasets, **own})
