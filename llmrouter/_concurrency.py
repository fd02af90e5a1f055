"""Running blocking engine code (llama.cpp) from the async and the sync client.

Each helper comes in two spellings that ``scripts/unasync.py`` maps onto each other:
``athread_call``/``thread_call`` and ``athread_iter``/``thread_iter``. The async ones run the
work in a worker thread and never block the event loop; the sync ones run it in the caller's
thread. A generator factory receives a ``threading.Event`` that is set when the consumer closes
the iterator, so an engine can stop generating at the next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "AsyncSleep",
    "Background",
    "AsyncThreadIterator",
    "Sleep",
    "ThreadIterator",
    "asleep",
    "aspawn",
    "athread_call",
    "athread_iter",
    "sleep",
    "spawn",
    "thread_call",
    "thread_iter",
]

AsyncSleep = Callable[[float], Awaitable[None]]
Sleep = Callable[[float], None]
sleep: Sleep = time.sleep


async def asleep(seconds: float) -> None:
    """``asyncio.sleep`` (asyncio is imported on first use: the sync client never loads it)."""
    import asyncio

    await asyncio.sleep(seconds)


T = TypeVar("T")


class Background(Protocol):
    def cancel(self) -> object: ...


def aspawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> Background:
    """Run ``fn()`` as a task of the running event loop (for health probing)."""
    import asyncio

    return asyncio.get_running_loop().create_task(fn(), name="llmrouter-health")


class _Thread:
    def cancel(self) -> None:
        """The loop checks its own stop flag; a daemon thread never blocks exit."""


def spawn(fn: Callable[[], None]) -> Background:
    """Run ``fn()`` in a daemon thread (the sync twin of :func:`aspawn`)."""
    threading.Thread(target=fn, name="llmrouter-health", daemon=True).start()
    return _Thread()


_END = object()


async def athread_call(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread and await its result."""
    import asyncio

    return await asyncio.to_thread(fn)


def thread_call(fn: Callable[[], T]) -> T:
    """Run ``fn`` here (the sync twin of :func:`athread_call`)."""
    return fn()


class AsyncThreadIterator(Generic[T]):
    """Iterates a blocking generator in a worker thread, handing items to the event loop."""

    def __init__(self, factory: Callable[[threading.Event], Iterator[T]]) -> None:
        self._factory = factory
        self._cancel = threading.Event()
        self._queue: asyncio.Queue[tuple[object, BaseException | None]] | None = None
        self._finished = False

    def _start(self) -> asyncio.Queue[tuple[object, BaseException | None]]:
        import asyncio

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()

        def put(item: object, error: BaseException | None = None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (item, error))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        def run() -> None:
            try:
                iterator = self._factory(self._cancel)
                try:
                    for item in iterator:
                        if self._cancel.is_set() or not put(item):
                            break
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(_END, exc)
                return
            put(_END)

        threading.Thread(target=run, name="llmrouter-engine", daemon=True).start()
        return queue

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        if self._queue is None:
            self._queue = self._start()
        item, error = await self._queue.get()
        if item is _END:
            self._finished = True
            if error is not None:
                raise error
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop the generator at its next item and wait for the worker to let go."""
        self._cancel.set()
        if self._queue is None or self._finished:
            self._finished = True
            return
        while True:
            item, _ = await self._queue.get()
            if item is _END:
                break
        self._finished = True


def athread_iter(factory: Callable[[threading.Event], Iterator[T]]) -> AsyncThreadIterator[T]:
    """Iterate ``factory(cancel_event)`` in a worker thread; ``aclose()`` stops it."""
    return AsyncThreadIterator(factory)


class ThreadIterator(Generic[T]):
    def __init__(self, factory: Callable[[threading.Event], Iterator[T]]) -> None:
        self._cancel = threading.Event()
        self._iterator: Iterator[T] | None = None
        self._factory = factory

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._iterator is None:
            if self._cancel.is_set():
                raise StopIteration
            self._iterator = self._factory(self._cancel)
        return next(self._iterator)

    def close(self) -> None:
        self._cancel.set()
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


def thread_iter(factory: Callable[[threading.Event], Iterator[T]]) -> ThreadIterator[T]:
    """Iterate ``factory(cancel_event)`` here (the sync twin of :func:`athread_iter`)."""
    return ThreadIterator(factory)
