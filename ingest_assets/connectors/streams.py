"""Concurrent async calls and producers merged into one stream, in order, with backpressure.

A source's records come out in the source's own order (page, then place in the page; fan-out
items in config order), whatever the network completion order: identical data gives identical
tables. Memory stays bounded: at most a window of results is held.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def ordered_gather(
    calls: Iterable[Callable[[], Awaitable[T]]], limit: int
) -> AsyncIterator[T]:
    """Await calls at most ``limit`` at a time, yielding results in the order of ``calls``.

    A sliding window: the head call is awaited while up to ``limit - 1`` later ones run, so
    the network stays busy, order never depends on completion time, and at most ``limit``
    results are held. The first error (in call order) cancels the rest.
    """
    pending: deque[asyncio.Task[T]] = deque()
    queued = iter(calls)
    try:
        for call in itertools.islice(queued, max(1, limit)):
            pending.append(asyncio.ensure_future(call()))
        while pending:
            result = await pending.popleft()
            following = next(queued, None)
            if following is not None:
                pending.append(asyncio.ensure_future(following()))
            yield result
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def ordered_fan_in(
    producers: Iterable[Callable[[], AsyncIterator[T]]], limit: int, buffered: int = 2
) -> AsyncIterator[T]:
    """Run up to ``limit`` producers at once; yield all of the first one's items, then the next's.

    Each running producer may get ``buffered`` items ahead of the consumer (backpressure), so
    memory is bounded by ``limit * buffered`` items whatever the completion order.
    """
    queued = iter(producers)
    running: deque[tuple[asyncio.Queue, asyncio.Task[None]]] = deque()

    def start(factory: Callable[[], AsyncIterator[T]]) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, buffered))

        async def run() -> None:
            try:
                async for item in factory():
                    await queue.put((True, item))
                await queue.put((False, None))
            except Exception as exc:
                await queue.put((False, exc))

        running.append((queue, asyncio.ensure_future(run())))

    try:
        for factory in itertools.islice(queued, max(1, limit)):
            start(factory)
        while running:
            queue, _ = running[0]
            more, item = await queue.get()
            if more:
                yield item
                continue
            if item is not None:
                raise item
            running.popleft()
            following = next(queued, None)
            if following is not None:
                start(following)
    finally:
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
