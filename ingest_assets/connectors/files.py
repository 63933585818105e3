"""File connectors: ``csv``, ``jsonl`` and ``xml`` files landed per partition date.

A file read counts as one request. Every record of a file is handed over, in line order: a
line or row that cannot be parsed becomes a parse-error record,
``{"_parse_error": "line N…: why", "_line": N, "_raw": "<the line's text>"}``, which
validation quarantines, and the rest of the file still loads. A file fails as a whole
(``FileParseError``, permanent) only when the rest cannot be read: a broken or duplicate CSV
header, malformed or forbidden XML (DTDs, entities), a file undecodable as a whole.
XML is parsed with defusedxml: no entity expansion, no external entities, no DTD retrieval.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from pydantic import Field

from ingest_assets import jsontext
from ingest_assets.config import render_template
from ingest_assets.connectors.base import (
    Batch,
    Connector,
    ConnectorOptions,
    FetchContext,
    FileParseError,
)
from ingest_assets.connectors.registry import register

PARSE_ERROR = "_parse_error"
_SURROGATE = re.compile("[\ud800-\udfff]")


class MissingFileError(FileNotFoundError):
    """No file has landed for the partition yet."""


def parse_error(reason: str, line: int, raw: str) -> dict[str, Any]:
    """The record standing in for a line that cannot be parsed (validation quarantines it)."""
    # _raw must survive UTF-8 encoding in any warehouse: no lone surrogates.
    return {PARSE_ERROR: reason, "_line": line, "_raw": _SURROGATE.sub("\ufffd", raw)}


class FileOptions(ConnectorOptions):
    path: str = Field(description="template with {landing_dir} and {date}")
    # utf-8-sig reads plain UTF-8 too, and drops the byte-order mark spreadsheet exports add
    # (otherwise the first header would be "\ufeffpartner_sku" and every row would miss it).
    encoding: str = "utf-8-sig"
    # A parsed record can weigh 10-20 kB as Python objects: batches stay small so the records
    # in flight between fetch and write (a few batches) stay within tens of megabytes.
    batch_size: int = Field(1_000, ge=1)


class CsvOptions(FileOptions):
    delimiter: str = Field(",", min_length=1, max_length=1)
    max_field_size: int = Field(
        16 * 1024 * 1024, ge=1, description="largest field, in characters; larger: a parse error"
    )
    max_record_lines: int = Field(
        1_000, ge=1, description="lines one record may span (quoted fields with line breaks)"
    )


class JsonlOptions(FileOptions):
    max_depth: int = Field(100, ge=1, description="deepest nesting of arrays and objects")


class XmlOptions(FileOptions):
    record_tag: str = "record"
    attributes: bool = True
    max_depth: int = Field(100, ge=1, description="deepest nesting of elements in a record")


def _batched(records: Iterator[dict[str, Any]], size: int) -> Iterator[Batch]:
    batch: Batch = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class FileConnector(Connector):
    """Shared file handling: resolve the path, count the read, stream batches."""

    options: FileOptions

    def file_path(self, ctx: FetchContext) -> Path:
        return Path(render_template(self.resolved(self.options.path, ctx), ctx.template_values()))

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        path = self.file_path(ctx)
        if not path.is_file():
            raise MissingFileError(f"no file for partition {ctx.partition_date}: {path}")
        ctx.stats.requests += 1
        try:
            for batch in _batched(self.records(path), self.options.batch_size):
                ctx.progress(f"{path.name}: {len(batch)} records")
                yield batch
        except Exception:
            ctx.stats.failed_requests += 1
            raise

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


Line = tuple[int, str | None, bytes]


def text_lines(path: Path, encoding: str) -> Iterator[Line]:
    """(line number, text or None where undecodable, original bytes) for each physical line.

    Decoded line by line, so one bad byte costs one line, not the file. An encoding that is not
    ASCII-compatible (UTF-16/32) cannot be split into lines as bytes: that file is decoded as a
    whole, and fails as a whole.
    """
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise FileParseError(f"unknown encoding {encoding!r} for {path}") from None
    try:
        ascii_compatible = b"a,\n".decode(codec.name) == "a,\n"
    except UnicodeDecodeError:
        ascii_compatible = False
    if not ascii_compatible:
        data = path.read_bytes()
        try:
            text = data.decode(codec.name)
        except UnicodeDecodeError as exc:
            raise FileParseError(
                f"cannot decode {path} as {encoding}: byte {exc.start}: {exc.reason}"
            ) from None
        for number, line in enumerate(text.splitlines(keepends=True), start=1):
            yield number, line, line.encode("utf-8", "surrogatepass")
        return
    # A byte-order mark is dropped at the start of the file only, never from a later line.
    rest = "utf-8" if codec.name == "utf-8-sig" else codec.name
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode(codec.name if number == 1 else rest), raw
            except UnicodeDecodeError:
                yield number, None, raw


def undecodable(number: int, raw: bytes, encoding: str) -> dict[str, Any]:
    """The parse-error record of a line with bytes that are not text in ``encoding``."""
    reason = f"line {number}: not valid {encoding}"
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        reason += f" (byte {exc.start + 1}: {exc.reason})"
    return parse_error(reason, number, raw.decode(encoding, errors="replace").rstrip("\r\n"))


class _Undecodable(Exception):
    pass


class _TooManyLines(Exception):
    pass


class _LineSource:
    """Feeds csv.reader one physical line at a time, keeping the current record's lines.

    When a record breaks (an unterminated quote that runs on, a bad byte inside it), only its
    first line is reported; the lines it swallowed are given back and read again.
    """

    def __init__(self, lines: Iterator[Line], max_lines: int) -> None:
        self.lines = lines
        self.max_lines = max_lines
        self.given_back: deque[Line] = deque()
        self.taken: list[Line] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = self.given_back.popleft() if self.given_back else next(self.lines)
        self.taken.append(line)
        if line[1] is None:
            raise _Undecodable
        if len(self.taken) > self.max_lines:
            raise _TooManyLines
        return line[1]

    def start(self) -> None:
        self.taken = []

    def give_back(self) -> Line:
        """The failed record's first line; the others will be read again."""
        first, rest = self.taken[0], self.taken[1:]
        self.given_back.extendleft(reversed(rest))
        self.taken = []
        return first

    def text(self) -> str:
        return "".join(line[1] or "" for line in self.taken).rstrip("\r\n")


@register
class CsvConnector(FileConnector):
    """A CSV file with a header row, parsed strictly; broken rows become parse-error records."""

    kind = "csv"
    Options = CsvOptions
    options: CsvOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        opts = self.options
        # The csv module's limit is per process: raise it (never lower it) and apply this
        # source's own limit below.
        csv.field_size_limit(max(csv.field_size_limit(), opts.max_field_size + 1))
        source = _LineSource(text_lines(path, opts.encoding), opts.max_record_lines)
        reader = csv.reader(source, delimiter=opts.delimiter, strict=True)
        header: list[str] | None = None
        while True:
            source.start()
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, _Undecodable, _TooManyLines) as exc:
                number, text, raw = source.give_back()
                if text is None:
                    error = undecodable(number, raw, opts.encoding)
                else:
                    error = parse_error(
                        f"line {number}: {self._why(exc, opts)}", number, text.rstrip("\r\n")
                    )
                if header is None:
                    raise FileParseError(
                        f"cannot read the header of {path}: {error[PARSE_ERROR]}"
                    ) from None
                yield error
                continue
            number = source.taken[0][0]
            if not row:
                continue
            if header is None:
                header = self._header(row, path, number)
                continue
            if len(row) != len(header):
                more_or_fewer = "more" if len(row) > len(header) else "fewer"
                yield parse_error(
                    f"line {number}: {more_or_fewer} fields ({len(row)}) than the header "
                    f"names ({len(header)})",
                    number,
                    source.text(),
                )
                continue
            oversized = next((i for i, v in enumerate(row) if len(v) > opts.max_field_size), None)
            if oversized is not None:
                yield parse_error(
                    f"line {number}: field {header[oversized]!r} is longer than "
                    f"max_field_size={opts.max_field_size} characters",
                    number,
                    source.text(),
                )
                continue
            yield dict(zip(header, row, strict=True))

    @staticmethod
    def _why(exc: Exception, opts: CsvOptions) -> str:
        if isinstance(exc, _TooManyLines):
            return f"a quoted field is not closed within max_record_lines={opts.max_record_lines}"
        message = str(exc)
        if message == "unexpected end of data":
            return "a quoted field is not closed before the end of the file"
        if message.startswith("field larger than field limit"):
            return f"a field is longer than max_field_size={opts.max_field_size} characters"
        return message

    @staticmethod
    def _header(row: list[str], path: Path, number: int) -> list[str]:
        seen: dict[str, int] = {}
        for column, name in enumerate(row, start=1):
            if name in seen:
                raise FileParseError(
                    f"cannot read {path}: line {number}: the header names {name!r} twice "
                    f"(columns {seen[name]} and {column})"
                )
            seen[name] = column
        return row


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_INNERMOST = re.compile(r"[\[{][^\[\]{}]*[\]}]")


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays/objects more than ``limit`` deep (strings ignored)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    text = _JSON_STRING.sub("", text)
    for _ in range(limit):
        # Each pass removes the innermost containers: one level of nesting.
        text, removed = _INNERMOST.subn("", text)
        if not removed:
            return False
    return any(bracket in text for bracket in "[{")


@register
class JsonlConnector(FileConnector):
    """One JSON object per line; blank lines are skipped, every other line is one record."""

    kind = "jsonl"
    Options = JsonlOptions
    options: JsonlOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        opts = self.options
        for number, text, raw in text_lines(path, opts.encoding):
            if text is None:
                yield undecodable(number, raw, opts.encoding)
                continue
            if not text.strip():
                continue
            line = text.rstrip("\r\n")
            if nested_deeper_than(line, opts.max_depth):
                yield parse_error(
                    f"line {number}: nested deeper than max_depth={opts.max_depth}", number, line
                )
                continue
            try:
                value = jsontext.loads(line)
            except json.JSONDecodeError as exc:
                yield parse_error(f"line {number}, column {exc.colno}: {exc.msg}", number, line)
                continue
            except (ValueError, RecursionError) as exc:
                yield parse_error(f"line {number}: {exc}", number, line)
                continue
            if isinstance(value, dict):
                yield value
            else:
                yield parse_error(
                    f"line {number}: a JSON {type(value).__name__}, not an object", number, line
                )


class _TooDeep(Exception):
    pass


def local_name(tag: str) -> str:
    """``{urn:supplier}product`` → ``product``: namespaced feeds match the configured names."""
    return tag.rsplit("}", 1)[-1]


def _grouped(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A name seen again (a repeated element, an attribute and an element) becomes a list."""
    fields: dict[str, list[Any]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def _mixed_text(element: ET.Element) -> str | None:
    parts = [element.text or ""] + [child.tail or "" for child in element]
    return "".join(parts) if "".join(parts).strip() else None


def element_value(element: ET.Element, depth: int) -> Any:
    """A leaf's text; otherwise a dict of ``@attributes``, children and ``#text``."""
    if not len(element) and not element.attrib:
        return element.text
    if depth <= 0:
        raise _TooDeep
    return _grouped(_fields(element, depth, attribute_prefix="@", attributes=True))


def _fields(
    element: ET.Element, depth: int, attribute_prefix: str, attributes: bool
) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    if attributes:
        pairs += [(attribute_prefix + local_name(k), v) for k, v in element.attrib.items()]
    text = _mixed_text(element)
    if text is not None:
        pairs.append(("#text", text))
    pairs += [(local_name(child.tag), element_value(child, depth - 1)) for child in element]
    return pairs


def as_field(value: Any) -> Any:
    """Nested elements are kept as JSON text (a raw column holds text, never a lost value)."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return [as_field(v) for v in value]
    return value


@register
class XmlConnector(FileConnector):
    """Elements named ``record_tag`` become records.

    Attributes and child elements become fields: a leaf child's text as it is, a child with
    children or attributes as JSON text (``{"@attr": …, "child": …, "#text": …}``), a repeated
    child (or an attribute and a child of one name) as a list. Nothing is reduced silently; a
    record nested deeper than ``max_depth`` is a parse-error record.
    """

    kind = "xml"
    Options = XmlOptions
    options: XmlOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        opts = self.options
        # The pull parser with defusedxml's parser: iterparse's safety, plus line numbers
        # (the file is fed a line at a time).
        parser = ET.XMLPullParser(
            events=("start", "end"),
            _parser=DefusedXMLParser(target=ET.TreeBuilder(), forbid_dtd=True),
        )
        stack: list[ET.Element] = []
        starts: list[int] = []
        number = 1
        with path.open("rb") as handle:
            while True:
                chunk = handle.readline(1 << 16)
                try:
                    if chunk:
                        parser.feed(chunk)
                    else:
                        parser.close()
                    events = list(parser.read_events())
                except ET.ParseError as exc:
                    line, column = exc.position
                    # expat counts columns from 0; editors (and JSON's messages) from 1.
                    raise FileParseError(
                        f"cannot parse {path}: line {line}, column {column + 1}: "
                        f"{str(exc).split(':')[0]}"
                    ) from None
                except DefusedXmlException as exc:
                    raise FileParseError(
                        f"forbidden XML in {path} at line {number}: {type(exc).__name__} "
                        "(DTDs and entities are refused)"
                    ) from None
                for event, element in events:
                    if event == "start":
                        stack.append(element)
                        if local_name(element.tag) == opts.record_tag:
                            starts.append(number)
                        continue
                    stack.pop()
                    if local_name(element.tag) != opts.record_tag:
                        continue
                    yield self._record(element, starts.pop())
                    element.clear()
                    if stack and len(stack[-1]) and stack[-1][-1] is element:
                        # Done with it: the tree does not grow with the file.
                        del stack[-1][-1]
                if not chunk:
                    return
                number += chunk.count(b"\n")

    def _record(self, element: ET.Element, line: int) -> dict[str, Any]:
        opts = self.options
        try:
            pairs = _fields(element, opts.max_depth, "", opts.attributes)
        except _TooDeep:
            return parse_error(
                f"line {line}: <{local_name(element.tag)}> nested deeper than "
                f"max_depth={opts.max_depth}",
                line,
                _shown(element),
            )
        return _grouped([(name, as_field(value)) for name, value in pairs])


def _shown(element: ET.Element) -> str:
    try:
        return ET.tostring(element, encoding="unicode")
    except RecursionError:
        return f"<{local_name(element.tag)}> (too deep to show)"
