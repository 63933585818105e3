"""PostgreSQL's binary ``COPY`` format, encoded from Arrow a column at a time.

The server reads binary rows without parsing text (``float8in``, ``timestamptz_in``, CSV
quoting): for the products rows of ``benchmarks/bench_postgres.py`` its side of a ``COPY``
took a third less time than the same rows as CSV, and encoding them here is faster than Arrow's
CSV writer. A row is a 16-bit field count, then per field a 32-bit length (-1 for NULL) and
the value in the type's send format, all big-endian. Each column's fields are built with
numpy/Arrow kernels; ``binary_join_element_wise`` interleaves them into rows. Fixed-width
columns without nulls share one block per row, so the join has fewer arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # flags 0, no header extension
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_DAYS_1970_TO_2000 = 10_957
# PostgreSQL type: (how the value is sent, Arrow type it is read as, offset from Unix epoch).
_FIXED: dict[str, tuple[str, pa.DataType, int]] = {
    "bigint": (">i8", pa.int64(), 0),
    "double precision": (">f8", pa.float64(), 0),
    "boolean": ("u1", pa.uint8(), 0),
    "date": (">i4", pa.int32(), _DAYS_1970_TO_2000),
    "timestamp with time zone": (">i8", pa.int64(), _DAYS_1970_TO_2000 * 86_400_000_000),
    "timestamp without time zone": (">i8", pa.int64(), _DAYS_1970_TO_2000 * 86_400_000_000),
}
_JSONB_VERSION = b"\x01"
BINARY_TYPES = frozenset(_FIXED) | {"text", "jsonb"}


def copy_order(names: Sequence[str], pg_types: Mapping[str, str]) -> list[str]:
    """The column order to ``COPY`` in: fixed-width types first, so they form one block."""
    fixed = [c for c in names if pg_types[c] in _FIXED]
    return fixed + [c for c in names if pg_types[c] not in _FIXED]


def encode_rows(table: pa.Table, pg_types: Mapping[str, str], order: Sequence[str]) -> memoryview:
    """The rows of ``table`` as binary ``COPY`` data (without signature or trailer), fields in
    ``order``; ``pg_types`` are the target's exact column types, all in ``BINARY_TYPES``.

    Values must already be what the column holds (see ``postgres_io.to_arrow``): text without
    U+0000, timestamps in microseconds; other Arrow types are cast to the column's.
    """
    rows = table.num_rows
    if not rows:
        return memoryview(b"")
    segments: list[pa.Array] = []
    block = [_constant(np.array(len(order), ">i2").tobytes(), rows)]
    for name in order:
        array = table[name].combine_chunks()
        pg_type = pg_types[name]
        if pg_type in _FIXED and not array.null_count:
            block += _fixed_parts(array, pg_type)
            continue
        if block:
            segments.append(_block_array(block, rows))
            block = []
        segments.append(_field_array(array, pg_type))
    if block:
        segments.append(_block_array(block, rows))
    joined = segments[0] if len(segments) == 1 else pc.binary_join_element_wise(*segments, b"")
    offsets = np.frombuffer(joined.buffers()[1], np.int32)
    start, end = offsets[joined.offset], offsets[joined.offset + rows]
    return memoryview(joined.buffers()[2])[start:end]


def _constant(value: bytes, rows: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(value, np.uint8), (rows, len(value)))


def _fixed_parts(array: pa.Array, pg_type: str) -> list[np.ndarray]:
    """Length header and value bytes of a fixed-width column, one row each (nulls as 0)."""
    send, arrow_type, offset = _FIXED[pg_type]
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.timestamp("us", tz=array.type.tz)).view(pa.int64())
    elif pa.types.is_date(array.type):
        array = array.cast(pa.date32()).view(pa.int32())
    values = array.cast(arrow_type).fill_null(0).to_numpy(zero_copy_only=False)
    if offset:
        values = values - offset
    width = np.dtype(send).itemsize
    return [
        _constant(np.array(width, ">i4").tobytes(), len(values)),
        values.astype(send).view(np.uint8).reshape(len(values), width),
    ]


def _block_array(parts: list[np.ndarray], rows: int) -> pa.Array:
    """Fixed-width per-row parts side by side, as one binary value per row."""
    block = np.ascontiguousarray(np.hstack(parts))
    width = block.shape[1]
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), rows, [None, pa.py_buffer(block)]
    )
    return fixed.cast(pa.binary())


def _field_array(array: pa.Array, pg_type: str) -> pa.Array:
    """One binary value per row: the field's length header and bytes, or the NULL marker."""
    if pg_type in _FIXED:
        field = _block_array(_fixed_parts(array, pg_type), len(array))
        return pc.if_else(array.is_valid(), field, pa.scalar(_NULL, pa.binary()))
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    data = array.cast(pa.binary())
    lengths = pc.binary_length(data).fill_null(0).to_numpy(zero_copy_only=False)
    if pg_type == "jsonb":
        header = [(lengths + 1).astype(">i4").view(np.uint8).reshape(-1, 4)]
        header.append(_constant(_JSONB_VERSION, len(data)))
    else:
        header = [lengths.astype(">i4").view(np.uint8).reshape(-1, 4)]
    field = pc.binary_join_element_wise(_block_array(header, len(data)), data, b"")
    return field.fill_null(_NULL) if field.null_count else field
