"""A large, generated product catalogue: the packaged DummyJSON products repeated with new ids.

Record ``n`` (0-based) is template ``n % 194`` with ``id = n + 1``, a unique ``sku`` and its price,
discount, rating and stock varied by a seeded hash of ``n``: the same ``(records, seed)`` always
serves the same bytes, whatever the page size. Nothing is held per record, so a catalogue of
ten million costs no more memory than one of a hundred; pages are encoded straight from
pre-rendered templates, because ``json.dumps`` of a 1000-record page would make the sandbox, not
the client under test, the slowest part of a benchmark.

    from ingest_assets.sandbox import Sandbox
    with Sandbox(port=0, generated=1_000_000, generated_seed=7) as sb: ...

or ``python -m ingest_assets.sandbox --generated 1000000 --generated-seed 7``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

__all__ = ["GeneratedCatalogue"]

_MASK = (1 << 64) - 1
#: Fields that differ between the copies of one template, so keys and values look like a real
#: catalogue (no two records alike) rather than 194 records over and over.
_VARYING = ("id", "sku", "price", "discountPercentage", "rating", "stock")


def _mix(seed: int, n: int) -> int:
    """splitmix64 of ``(seed, n)``: 64 well-spread bits, stable across processes and versions."""
    z = (seed * 0x9E3779B97F4A7C15 + n + 1) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _template(product: Mapping[str, Any]) -> str:
    """The product's JSON with ``%(field)s`` where a varying field's value goes."""
    marked = dict(product)
    for name in _VARYING:
        marked[name] = f"@@{name}@@"
    text = json.dumps(marked, ensure_ascii=False, separators=(",", ":")).replace("%", "%%")
    for name in _VARYING:
        text = text.replace(f'"@@{name}@@"', f"%({name})s")
    return text


class GeneratedCatalogue(Sequence[dict[str, Any]]):
    """``records`` products made from ``templates`` (default: the packaged catalogue)."""

    def __init__(
        self, records: int, seed: int = 0, templates: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        if records < 0:
            raise ValueError(f"records must be >= 0, got {records!r}")
        if templates is None:
            from ingest_assets.sandbox.server import load_products

            templates = load_products()
        if not templates:
            raise ValueError("a generated catalogue needs at least one template product")
        self.records = records
        self.seed = seed
        self._templates = [_template(p) for p in templates]
        self._bases = [
            (
                str(p.get("sku") or f"GEN-{i:03d}"),
                float(p.get("price") or 10.0),
                float(p.get("discountPercentage") or 10.0),
            )
            for i, p in enumerate(templates)
        ]

    def __len__(self) -> int:
        return self.records

    def record_json(self, n: int) -> str:
        """Record ``n`` (0-based) as compact JSON text."""
        k = n % len(self._templates)
        sku, price, discount = self._bases[k]
        bits = _mix(self.seed, n)
        return self._templates[k] % {
            "id": n + 1,
            "sku": f'"{sku}-{n + 1:08d}"',
            # ±50 % around the template's price, never 0: prices stay plausible and valid.
            "price": round(price * (0.5 + (bits & 0xFFFF) / 65536), 2) or 0.01,
            "discountPercentage": round(
                min(discount * (0.5 + (bits >> 16 & 0xFFFF) / 65536), 99), 2
            ),
            "rating": round((bits >> 32 & 0xFFFF) / 65535 * 5, 2),
            "stock": (bits >> 48) % 200,
        }

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[n] for n in range(*index.indices(self.records))]
        if index < 0:
            index += self.records
        if not 0 <= index < self.records:
            raise IndexError("catalogue index out of range")
        return json.loads(self.record_json(index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[n] for n in range(self.records))

    def by_id(self, product_id: int) -> dict[str, Any] | None:
        """The product with ``id``, or None (ids are 1..records, no scan needed)."""
        return self[product_id - 1] if 1 <= product_id <= self.records else None

    def page_json(self, skip: int, limit: int) -> bytes:
        """``GET /products?limit=&skip=`` answered as DummyJSON would, already encoded."""
        if limit == 0 or limit > self.records:
            limit = self.records
        stop = min(skip + limit, self.records)
        body = ",".join(self.record_json(n) for n in range(skip, stop))
        tail = f'],"total":{self.records},"skip":{skip},"limit":{max(stop - skip, 0)}}}'
        return ('{"products":[' + body + tail).encode("utf-8")
