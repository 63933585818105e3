"""Property tests: whatever the values, the records a connector hands over are the records the
source holds, in the source's order; hostile bytes give parse-error records or a permanent file
error, never a crash.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_assets.connectors.base import FileParseError
from ingest_assets_tests.hostile import Api, Reply, Request, records, serve, source

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# JSON values as a JSON document can carry them (lone surrogates included, as \\u escapes).
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
json_records = st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), max_size=12)

# ---------------------------------------------------------------------------------------------
# Pages

PAGINATIONS = {
    "limit_offset": {"kind": "limit_offset"},
    "limit_offset_no_total": {"kind": "limit_offset", "total_path": None},
    "page_number": {"kind": "page_number", "size_param": "size", "total_pages_path": "pages"},
    "page_number_no_total": {"kind": "page_number", "size_param": "size"},
    "cursor": {"kind": "cursor", "cursor_path": "next"},
    "next_link": {"kind": "next_link", "next_path": "next"},
}


class PagedData:
    """One API for every paging kind over the current example's records."""

    def __init__(self) -> None:
        self.data: list[dict[str, Any]] = []

    def route(self, request: Request) -> Reply:
        q = request.query
        size = int(q.get("limit") or q.get("size") or 7)
        if "offset" in q:
            start = int(q["offset"])
        elif "page" in q:
            start = (int(q["page"]) - 1) * size
        else:
            start = int(q.get("cursor") or q.get("from") or 0)
        more = start + size < len(self.data)
        body: dict[str, Any] = {
            "items": self.data[start : start + size],
            "total": len(self.data),
            "pages": math.ceil(len(self.data) / size),
        }
        if request.path == "/cursor":
            body["next"] = str(start + size) if more else None
        if request.path == "/link":
            body["next"] = f"/link?from={start + size}" if more else None
        return Reply(body)


@pytest.fixture(scope="module")
def paged() -> Iterator[tuple[Api, PagedData]]:
    data = PagedData()
    with serve(data.route) as api:
        yield api, data


@SETTINGS
@given(
    values=st.lists(json_values, max_size=60),
    page_size=st.integers(1, 25),
    kind=st.sampled_from(sorted(PAGINATIONS)),
)
def test_pages_out_are_the_records_in(
    paged: tuple[Api, PagedData], values: list[Any], page_size: int, kind: str
) -> None:
    api, state = paged
    # Records carry an id, as real ones do: pages of identical records would read as a repeat.
    state.data = [{"id": i, "value": v} for i, v in enumerate(values)]
    pagination = dict(PAGINATIONS[kind])
    if kind.startswith(("limit_offset", "page_number")):
        pagination["page_size"] = page_size
    path = {"cursor": "/cursor", "next_link": "/link"}.get(kind, "/items")
    src = source("rest", base_url=api.url, path=path, record_path="items", pagination=pagination)
    assert records(src) == state.data


# ---------------------------------------------------------------------------------------------
# Files


def landed(content: bytes, suffix: str) -> tuple[tempfile.TemporaryDirectory, str]:
    folder = tempfile.TemporaryDirectory()
    (Path(folder.name) / f"2024-06-01.{suffix}").write_bytes(content)
    return folder, str(Path(folder.name) / f"{{date}}.{suffix}")


def file_records(content: bytes, connector: str, **options: Any) -> list[dict]:
    folder, path = landed(content, connector)
    with folder:
        return records(source(connector, path=path, **options))


# Text a UTF-8 file can hold (no lone surrogates).
file_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@SETTINGS
@given(
    header=st.lists(file_text, min_size=1, max_size=5, unique=True).filter(
        lambda h: not h[0].startswith("\ufeff")  # a leading byte-order mark is dropped (utf-8-sig)
    ),
    data=st.data(),
    # Python's writer leaves a lone \r unquoted under a \n terminator: quote all fields there.
    dialect=st.sampled_from([("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_MINIMAL)]),
)
def test_csv_records_out_are_the_rows_in(
    header: list[str], data: Any, dialect: tuple[str, int]
) -> None:
    rows = data.draw(
        st.lists(st.lists(file_text, min_size=len(header), max_size=len(header)), max_size=15)
    )
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=dialect[0], quoting=dialect[1])
    writer.writerow(header)
    writer.writerows(rows)
    got = file_records(out.getvalue().encode(), "csv")
    assert got == [dict(zip(header, row, strict=True)) for row in rows]


@SETTINGS
@given(values=json_records, ascii_only=st.booleans())
def test_jsonl_records_out_are_the_lines_in(values: list[dict], ascii_only: bool) -> None:
    def line(value: dict) -> str:
        text = json.dumps(value, ensure_ascii=ascii_only)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value)  # lone surrogates travel as \u escapes
        return text + "\n"

    assert file_records("".join(map(line, values)).encode(), "jsonl") == values


xml_text = st.text(
    st.characters(
        # XML 1.0 characters; \r is normalised to \n by every XML parser (the spec, not a loss).
        exclude_categories=["Cs", "Cc"],
        exclude_characters="\ufffe\uffff",
        include_characters="\t\n",
    ),
    max_size=10,
)


@SETTINGS
@given(
    products=st.lists(
        st.lists(st.tuples(st.sampled_from(["name", "tag", "price"]), xml_text), max_size=5),
        max_size=8,
    )
)
def test_xml_records_out_are_the_elements_in(products: list[list[tuple[str, str]]]) -> None:
    document = (
        "<catalog>"
        + "".join(
            f'<product id="{i}">'
            + "".join(f"<{name}>{escape(text)}</{name}>" for name, text in children)
            + "</product>"
            for i, children in enumerate(products)
        )
        + "</catalog>"
    )
    expected = []
    for i, children in enumerate(products):
        fields: dict[str, list[Any]] = {"id": [str(i)]}
        for name, text in children:
            fields.setdefault(name, []).append(text or None)
        expected.append({k: v[0] if len(v) == 1 else v for k, v in fields.items()})
    assert file_records(document.encode(), "xml", record_tag="product") == expected


@SETTINGS
@given(content=st.binary(max_size=300), connector=st.sampled_from(["csv", "jsonl", "xml"]))
def test_hostile_bytes_never_crash_a_file_connector(content: bytes, connector: str) -> None:
    try:
        got = file_records(
            content, connector, **({"record_tag": "r"} if connector == "xml" else {})
        )
    except FileParseError as error:
        assert error.permanent and "\n" not in str(error)
        return
    assert connector != "xml" or content  # an empty document is not XML
    for record in got:
        assert isinstance(record, dict)
        if "_parse_error" in record:
            assert set(record) == {"_parse_error", "_line", "_raw"}
            record["_raw"].encode("utf-8")
    if connector == "jsonl":
        lines = content.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        assert len(got) == sum(1 for line in lines if _not_blank(line, first=line is lines[0]))


def _not_blank(line: bytes, first: bool) -> bool:
    try:
        return bool(line.decode("utf-8-sig" if first else "utf-8").strip())
    except UnicodeDecodeError:
        return True
