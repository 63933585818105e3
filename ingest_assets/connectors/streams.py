"""Fan-in of concurrent async producers into one stream, with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def fan_in(
    producers: Iterable[Callable[[], AsyncIterator[T]]], max_buffered: int = 8
) -> AsyncIterator[T]:
    """Run every producer concurrently and yield their items in arrival order.

    The queue is bounded: a producer that runs ahead of the consumer waits (backpressure), so
    memory holds at most ``max_buffered`` items. The first producer error cancels the others
    and is raised to the consumer.
    """
    queue: asyncio.Queue = asyncio.Queue(maxsize=max_buffered)
    factories = list(producers)

    async def run(factory: Callable[[], AsyncIterator[T]]) -> None:
        try:
            async for item in factory():
                await queue.put(item)
        except asyncio.CancelledError:
            # The consumer has stopped and cancelled us: nobody reads the queue any more, and
            # a put on a full queue would wait forever (the fetch hung when a page failed).
            raise
        except BaseException:
            await queue.put(_DONE)
            raise
        await queue.put(_DONE)

    tasks = [asyncio.create_task(run(f)) for f in factories]
    finished = 0
    try:
        while finished < len(tasks):
            item = await queue.get()
            if item is _DONE:
                finished += 1
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                continue
            yield item  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def bounded_gather(
    calls: Iterable[Callable[[], Awaitable[T]]], limit: int
) -> AsyncIterator[T]:
    """Await calls at most ``limit`` at a time, yielding results in completion order."""

    async def one(call: Callable[[], Awaitable[T]]) -> AsyncIterator[T]:
        yield await call()

    async for result in fan_in((lambda c=c: one(c) for c in calls), max_buffered=limit):
        yield result
