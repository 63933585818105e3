"""A connector's batches streamed into a warehouse stage, fetch and write overlapping.

The connector runs in an event loop; each batch it yields goes through a bounded queue to a
writer thread that encodes it (``RawEncoder``) and appends it to the stage. When the writer
falls behind, the queue fills and the fetch waits (backpressure): memory holds at most
``max_buffered`` batches in flight, whatever the size of the day. No dagster here.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Protocol

import pyarrow as pa

from ingest_assets.connectors.base import Connector, FetchContext, stream
from ingest_assets.records.encode import RawEncoder

_DONE = object()


class Stage(Protocol):
    def append(self, batch: pa.RecordBatch) -> None: ...


def stream_into(
    connector: Connector,
    ctx: FetchContext,
    stage: Stage,
    encoder: RawEncoder,
    max_buffered: int = 2,
) -> None:
    """Fetch every batch of ``ctx.partition_date`` into ``stage``; raises the first error of
    either side (the fetch is cancelled when the writer fails)."""
    pending: queue.Queue[Any] = queue.Queue(maxsize=max_buffered)
    failures: list[BaseException] = []

    def write() -> None:
        while True:
            batch = pending.get()
            if batch is _DONE:
                return
            if failures:
                continue  # keep draining so the fetch side never blocks on a full queue
            try:
                stage.append(encoder.encode(batch))
            except BaseException as exc:  # handed to the fetch side, raised there
                failures.append(exc)

    async def fetch() -> None:
        async for batch in stream(connector, ctx):  # counts the batches, locates errors
            if failures:
                break
            await asyncio.to_thread(pending.put, batch)

    writer = threading.Thread(target=write, name="raw-writer", daemon=True)
    writer.start()
    try:
        asyncio.run(fetch())
    finally:
        pending.put(_DONE)
        writer.join()
    if failures:
        raise failures[0]
