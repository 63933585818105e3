"""File connectors: ``csv``, ``jsonl`` and ``xml`` files landed per partition date.

A file read counts as one request. Every record of a file is handed over, in line order: a
line or row that cannot be parsed becomes a parse-error record,
``{"_parse_error": "line N…: why", "_line": N, "_raw": "<the line's text>"}``, which
validation quarantines, and the rest of the file still loads. A file fails as a whole
(``FileParseError``, permanent) only when the rest cannot be read: a broken or duplicate CSV
header, malformed or forbidden XML (DTDs, entities), a file undecodable as a whole, or a file
larger than ``max_file_bytes``.
XML is parsed with defusedxml: no entity expansion, no external entities, no DTD retrieval.

Every read is bounded: a gzip-compressed file (recognised by its magic bytes, whatever its name)
is inflated as a stream and counted, as a plain file is, against ``max_file_bytes``; a line is
read at most ``max_record_bytes`` at a time (a longer one is a parse-error record holding its
first ``max_record_bytes``, the rest skipped unread into memory); checking a line costs time
linear in its length.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import json
import re
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple
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
    Page,
)
from ingest_assets.connectors.registry import register

PARSE_ERROR = "_parse_error"
_SURROGATE = re.compile("[\ud800-\udfff]")
GZIP_MAGIC = b"\x1f\x8b"
# Far below a worker's memory; files are streamed, so this bounds a bomb, not a normal day.
DEFAULT_MAX_FILE_BYTES = 1024**3
DEFAULT_MAX_RECORD_BYTES = 64 * 1024**2


class MissingFileError(FileNotFoundError):
    """No file has landed for the partition yet."""


def parse_error(reason: str, line: int, raw: str) -> dict[str, Any]:
    """The record standing in for a line that cannot be parsed (validation quarantines it)."""
    # _raw must survive UTF-8 encoding in any warehouse: no lone surrogates.
    return {PARSE_ERROR: reason, "_line": line, "_raw": _SURROGATE.sub("\ufffd", raw)}


class FileOptions(ConnectorOptions):
    path: str = Field(description="template with {landing_dir} and {date}")
    max_file_bytes: int = Field(
        DEFAULT_MAX_FILE_BYTES,
        ge=1,
        description="largest file, in bytes once decompressed; larger fails the file (permanent)",
    )
    max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES,
        ge=1,
        description="largest record (line, CSV row, XML record element); larger: a parse error",
    )
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


def _batched(
    records: Iterator[dict[str, Any]], size: int, line: Callable[[], int], ref: str
) -> Iterator[Batch]:
    """Batches of ``size`` records, each with its ``_source_ref``: ``ref#L<line>``, the line
    the record starts on (``line()`` says it right after the record is yielded)."""
    batch, refs = Page(), []
    for record in records:
        batch.append(record)
        refs.append(f"{ref}#L{line()}")
        if len(batch) >= size:
            batch.refs = refs
            yield batch
            batch, refs = Page(), []
    if batch:
        batch.refs = refs
        yield batch


class FileConnector(Connector):
    """Shared file handling: resolve the path, count the read, stream batches."""

    options: FileOptions
    # The line the record ``records`` last yielded starts on (its ``_source_ref``).
    line: int = 0

    def file_path(self, ctx: FetchContext) -> Path:
        return Path(render_template(self.resolved(self.options.path, ctx), ctx.template_values()))

    async def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        path = self.file_path(ctx)
        if not path.is_file():
            raise MissingFileError(f"no file for partition {ctx.partition_date}: {path}")
        ctx.stats.requests += 1
        # The archive object of the file when it was archived, else the file's own name.
        ref = ctx.file_objects.get(str(path)) or f"file:{path.name}"
        self.line = 0
        try:
            batches = _batched(self.records(path), self.options.batch_size, lambda: self.line, ref)
            for batch in batches:
                ctx.progress(f"{path.name}: {len(batch)} records")
                yield batch
        except Exception:
            ctx.stats.failed_requests += 1
            raise

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


class FileTooLarge(FileParseError):
    """A file past ``max_file_bytes`` (decompressed): the same file fails again."""


class BoundedFile:
    """A landing file's bytes, inflated as they are read when it is gzip-compressed, and
    counted: reading past ``max_bytes`` raises ``FileTooLarge`` (so a small file that inflates
    to gigabytes costs a read buffer, not gigabytes)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.count = 0
        self._file = path.open("rb")
        self.compressed = self._file.read(2) == GZIP_MAGIC
        self._file.seek(0)
        self._handle: BinaryIO = (
            gzip.GzipFile(fileobj=self._file, mode="rb") if self.compressed else self._file
        )

    def __enter__(self) -> BoundedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
        self._file.close()

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.max_bytes:
            how = " once decompressed" if self.compressed else ""
            raise FileTooLarge(
                f"{self.path} holds more than max_file_bytes={self.max_bytes} bytes{how}; "
                "raise max_file_bytes if the file really is that large"
            )
        return data

    def _guarded(self, read: Any, size: int) -> bytes:
        try:
            return self._counted(read(size))
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise FileParseError(f"cannot decompress {self.path}: {exc}") from None

    def readline(self, limit: int = -1) -> bytes:
        return self._guarded(self._handle.readline, limit)

    def read(self, size: int = -1) -> bytes:
        if size >= 0:
            return self._guarded(self._handle.read, size)
        # In pieces: an inflating file is stopped at the cap, not after inflating entirely.
        return b"".join(iter(lambda: self._guarded(self._handle.read, 1 << 20), b""))


class Line(NamedTuple):
    """One physical line: its number, its text (None where undecodable) and its bytes.

    ``too_long``: longer than ``max_record_bytes``; ``raw`` then holds only its first
    ``max_record_bytes`` (the rest was skipped, never held).
    """

    number: int
    text: str | None
    raw: bytes
    too_long: bool = False


def _physical_lines(handle: BoundedFile, max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """(bytes, too long) per line; at most ``max_bytes`` (+ its line break) of a line is held,
    and it is read in pieces, so the file's own bound trips early inside one endless line."""
    while True:
        pieces: list[bytes] = []
        held = 0
        while piece := handle.readline(1 << 20):
            if held <= max_bytes + 2:
                pieces.append(piece)
                held += len(piece)
            if piece.endswith(b"\n"):
                break
        if not pieces:
            return
        line = b"".join(pieces)
        if len(line.rstrip(b"\r\n")) > max_bytes:
            yield line[:max_bytes], True
        else:
            yield line, False


def text_lines(
    path: Path, encoding: str, max_file_bytes: int, max_record_bytes: int
) -> Iterator[Line]:
    """Each physical line of the file, as ``Line``s, bounded as ``BoundedFile`` says.

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
        with BoundedFile(path, max_file_bytes) as handle:
            data = handle.read()
        try:
            text = data.decode(codec.name)
        except UnicodeDecodeError as exc:
            raise FileParseError(
                f"cannot decode {path} as {encoding}: byte {exc.start}: {exc.reason}"
            ) from None
        for number, line in enumerate(text.splitlines(keepends=True), start=1):
            raw = line.encode("utf-8", "surrogatepass")
            if len(raw.rstrip(b"\r\n")) > max_record_bytes:
                yield Line(number, None, raw[:max_record_bytes], too_long=True)
            else:
                yield Line(number, line, raw)
        return
    # A byte-order mark is dropped at the start of the file only, never from a later line.
    rest = "utf-8" if codec.name == "utf-8-sig" else codec.name
    with BoundedFile(path, max_file_bytes) as handle:
        lines = _physical_lines(handle, max_record_bytes)
        for number, (raw, too_long) in enumerate(lines, start=1):
            if too_long:
                yield Line(number, None, raw, too_long=True)
                continue
            try:
                yield Line(number, raw.decode(codec.name if number == 1 else rest), raw)
            except UnicodeDecodeError:
                yield Line(number, None, raw)


def too_long(line: Line, encoding: str, max_bytes: int) -> dict[str, Any]:
    """The parse-error record of a line longer than ``max_record_bytes``."""
    return parse_error(
        f"line {line.number}: longer than max_record_bytes={max_bytes} bytes (first "
        f"{max_bytes} bytes kept)",
        line.number,
        line.raw.decode(encoding, errors="replace"),
    )


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


class _TooLarge(Exception):
    pass


class _LineSource:
    """Feeds csv.reader one physical line at a time, keeping the current record's lines.

    When a record breaks (an unterminated quote that runs on, a bad byte inside it), only its
    first line is reported; the lines it swallowed are given back and read again.
    """

    def __init__(self, lines: Iterator[Line], max_lines: int, max_bytes: int) -> None:
        self.lines = lines
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.size = 0
        self.given_back: deque[Line] = deque()
        self.taken: list[Line] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = self.given_back.popleft() if self.given_back else next(self.lines)
        self.taken.append(line)
        self.size += len(line.raw)
        if line.too_long or (len(self.taken) > 1 and self.size > self.max_bytes):
            raise _TooLarge
        if line.text is None:
            raise _Undecodable
        if len(self.taken) > self.max_lines:
            raise _TooManyLines
        return line.text

    def start(self) -> None:
        self.taken = []
        self.size = 0

    def give_back(self) -> Line:
        """The failed record's first line; the others will be read again."""
        first, rest = self.taken[0], self.taken[1:]
        self.given_back.extendleft(reversed(rest))
        self.taken = []
        self.size = 0
        return first

    def text(self) -> str:
        return "".join(line.text or "" for line in self.taken).rstrip("\r\n")


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
        lines = text_lines(path, opts.encoding, opts.max_file_bytes, opts.max_record_bytes)
        source = _LineSource(lines, opts.max_record_lines, opts.max_record_bytes)
        reader = csv.reader(source, delimiter=opts.delimiter, strict=True)
        header: list[str] | None = None
        while True:
            source.start()
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, _Undecodable, _TooManyLines, _TooLarge) as exc:
                first = source.give_back()
                number, text, raw = first.number, first.text, first.raw
                self.line = number
                if first.too_long:
                    error = too_long(first, opts.encoding, opts.max_record_bytes)
                elif text is None:
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
            self.line = number
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
        if isinstance(exc, _TooLarge):
            return (
                f"a record is longer than max_record_bytes={opts.max_record_bytes} bytes "
                "(an unclosed quoted field, or a real record that large)"
            )
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


# A string, or an unterminated one running to the end of the text. Possessive: a string that
# never closes is consumed once, not tried again from each of its quotes (escaped JSON inside a
# truncated line made that quadratic: minutes for a few hundred kB).
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays/objects more than ``limit`` deep (strings ignored).

    Linear in the text's length, whatever it holds (an unclosed bracket counts as open).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0) > limit


@register
class JsonlConnector(FileConnector):
    """One JSON object per line; blank lines are skipped, every other line is one record."""

    kind = "jsonl"
    Options = JsonlOptions
    options: JsonlOptions

    def records(self, path: Path) -> Iterator[dict[str, Any]]:
        opts = self.options
        lines = text_lines(path, opts.encoding, opts.max_file_bytes, opts.max_record_bytes)
        for whole in lines:
            number, text, raw = whole.number, whole.text, whole.raw
            self.line = number
            if whole.too_long:
                yield too_long(whole, opts.encoding, opts.max_record_bytes)
                continue
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
        # Per open record: its line, and the bytes fed before the chunk it starts in.
        starts: list[tuple[int, int]] = []
        number = 1
        fed = 0
        with BoundedFile(path, opts.max_file_bytes) as handle:
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
                fed_before, fed = fed, fed + len(chunk)
                for event, element in events:
                    if event == "start":
                        stack.append(element)
                        if local_name(element.tag) == opts.record_tag:
                            starts.append((number, fed_before))
                        continue
                    stack.pop()
                    if local_name(element.tag) != opts.record_tag:
                        # A record certainly past the bound (more fed since it began than the
                        # bound and a chunk) is not kept growing: its finished parts are dropped.
                        if starts and fed - starts[0][1] > opts.max_record_bytes + len(chunk):
                            starts[0] = (starts[0][0], -1)
                            _drop(element, stack)
                        continue
                    line, began = starts.pop()
                    self.line = line
                    yield self._record(element, line, dropped=began < 0)
                    _drop(element, stack)
                if not chunk:
                    return
                number += chunk.count(b"\n")

    def _record(self, element: ET.Element, line: int, dropped: bool) -> dict[str, Any]:
        opts = self.options
        if dropped or _size(element) > opts.max_record_bytes:
            return parse_error(
                f"line {line}: <{local_name(element.tag)}> is larger than "
                f"max_record_bytes={opts.max_record_bytes} bytes (its start kept)",
                line,
                _shown(element)[: opts.max_record_bytes],
            )
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


def _drop(element: ET.Element, stack: list[ET.Element]) -> None:
    """Done with an element: cleared and detached, so the tree does not grow with the file."""
    element.clear()
    if stack and len(stack[-1]) and stack[-1][-1] is element:
        del stack[-1][-1]


def _size(element: ET.Element) -> int:
    """About the bytes an element took in the file (UTF-8 of its names, text and attributes)."""
    total = 0
    for node in element.iter():
        parts = [node.tag, node.text or "", node.tail or "", *node.attrib.keys()]
        parts += node.attrib.values()
        total += sum(len(p.encode("utf-8", "surrogatepass")) for p in parts) + 2 * len(node.tag) + 5
    return total


def _shown(element: ET.Element) -> str:
    try:
        return ET.tostring(element, encoding="unicode")
    except RecursionError:
        return f"<{local_name(element.tag)}> (too deep to show)"
