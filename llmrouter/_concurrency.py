"""Running blocking engine code (llama.cpp) from the async and the sync client.

Each helper comes in two spellings that ``scripts/unasync.py`` maps onto each other:
``athread_call``/``thread_call`` and ``athread_iter``/``thread_iter``. The async ones run the
work in a worker thread and never block the event loop; the sync ones run it in the caller's
thread. A generator factory receives a ``threading.Event`` that is set when the consumer closes
the iterator, so an engine can stop generating at the next token.

``aloop_call``/``loop_call`` and ``aloop_iter``/``loop_iter`` serve an engine that owns an
event loop of its own on a background thread (vLLM's async engine): the work is a coroutine
(or an async iterator) run on that loop; the async spelling awaits it from the caller's loop,
the sync spelling blocks the caller's thread on it. Closing either iterator cancels the
producer on the engine's loop, which is how a closed stream aborts its request.

:class:`GenerationWatch` carries a request's deadlines into an engine that generates in this
process: an HTTP driver hands its total, first-byte and idle timeouts to the socket; an engine
has no socket, so it asks the watch at every token (and bounds its waits by
:meth:`GenerationWatch.remaining`), and stops with the same :class:`BackendTimeoutError`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from llmrouter.errors import BackendTimeoutError

if TYPE_CHECKING:
    import asyncio

    from llmrouter.backends.spec import BackendSpec
    from llmrouter.policy import Deadline

__all__ = [
    "AsyncLoopIterator",
    "AsyncSleep",
    "Background",
    "AsyncThreadIterator",
    "GenerationWatch",
    "LoopIterator",
    "Sleep",
    "ThreadIterator",
    "asleep",
    "aloop_call",
    "aloop_iter",
    "aspawn",
    "athread_call",
    "athread_iter",
    "loop_call",
    "loop_iter",
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


class GenerationWatch:
    """The deadlines of one generation in this process, read between tokens (pure: the
    request's :class:`~llmrouter.policy.Deadline` and its clock, nothing else).

    Three limits, as the HTTP drivers apply them: the attempt's total deadline; the time to
    the first token (``ttft``, from when the watch is made: the wait for a busy engine counts,
    as queueing in a server does); and the longest wait for each later token (``read``), timed
    from when the consumer asks for it, so a slow reader is not taken for a stalled engine.
    Each is capped by the total deadline; ``None`` means no limit.

    Args:
        deadline: the attempt's deadline (the router's, capped by the backend's ``timeout``).
        ttft: seconds allowed until the first token (``ttft_timeout``).
        read: seconds allowed between tokens (``read_timeout``).
        backend: the backend's name, for the error.
    """

    __slots__ = ("_deadline", "_limit", "_read", "_ttft", "backend", "tokens")

    def __init__(
        self, deadline: Deadline, *, ttft: float | None, read: float | None, backend: str
    ) -> None:
        self._deadline = deadline
        self._ttft = ttft
        self._read = read
        self.backend = backend
        #: Tokens accepted so far.
        self.tokens = 0
        self._limit = deadline.child(ttft)

    @classmethod
    def for_backend(cls, deadline: Deadline, spec: BackendSpec) -> GenerationWatch:
        """The watch of one attempt on a backend: its ``ttft_timeout`` and ``read_timeout``."""
        timeouts = spec.timeouts
        return cls(deadline, ttft=timeouts.ttft, read=timeouts.read, backend=spec.name)

    def remaining(self) -> float | None:
        """Seconds the engine may take for the next token (``None``: no limit)."""
        return self._limit.remaining()

    def check(self) -> None:
        """Raise :class:`BackendTimeoutError` when the current limit has passed."""
        if self._limit.expired():
            raise self.timeout()

    def token(self, count: int = 1) -> None:
        """``count`` tokens arrived: raise :class:`BackendTimeoutError` if they came too late."""
        self.check()
        if count:  # an output with no token in it (a bare finish) starts no idle limit
            self.tokens += count
            self._limit = self._deadline.child(self._read)

    def waiting(self) -> None:
        """The consumer asks for the next token now: the idle limit runs from here."""
        if self.tokens:
            self._limit = self._deadline.child(self._read)

    def timeout(self, detail: str = "") -> BackendTimeoutError:
        """The error for the limit that passed (``detail``: what the engine was doing)."""
        if self._deadline.expired():
            what = f"the request's total deadline passed after {self.tokens} tokens"
        elif self.tokens == 0:
            what = f"no first token within the ttft_timeout of {self._ttft} s"
        else:
            what = f"no token for the read_timeout of {self._read} s after {self.tokens} tokens"
        return BackendTimeoutError(f"{what}{detail}", backend=self.backend)


async def athread_call(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread and await its result."""
    import asyncio

    return await asyncio.to_thread(fn)


def thread_call(fn: Callable[[], T]) -> T:
    """Run ``fn`` here (the sync twin of :func:`athread_call`)."""
    return fn()


class _QueueConsumer(Generic[T]):
    """The consumer side shared by the async bridges: items (or the end, or an error) arrive
    on an ``asyncio.Queue`` from another thread; subclasses start the producer (``_start``)
    and tell it to stop (``_stop``)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[object, BaseException | None]] | None = None
        self._finished = False

    def _start(self) -> asyncio.Queue[tuple[object, BaseException | None]]:
        raise TypeError("subclasses start their producer")

    def _stop(self) -> None:
        """Ask the producer to stop (it then sends the end marker)."""

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
        """Stop the producer and wait until it has let go."""
        if self._queue is None or self._finished:
            self._finished = True  # never started, or already over: nothing to stop
            return
        self._stop()
        while True:
            item, _ = await self._queue.get()
            if item is _END:
                break
        self._finished = True


class AsyncThreadIterator(_QueueConsumer[T]):
    """Iterates a blocking generator in a worker thread, handing items to the event loop."""

    def __init__(self, factory: Callable[[threading.Event], Iterator[T]]) -> None:
        super().__init__()
        self._factory = factory
        self._cancel = threading.Event()

    def _stop(self) -> None:
        self._cancel.set()  # the worker stops at the next item

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


# -- an engine's own event loop on a background thread (vLLM) ---------------------------------


async def aloop_call(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``fn()`` on ``loop`` (another thread's) and await its result here.

    Cancelling the awaiting task cancels the coroutine there.
    """
    import asyncio

    future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn), loop)
    try:
        return await asyncio.wrap_future(future)
    finally:
        future.cancel()  # no-op once done; stops the work when this task was cancelled


def loop_call(loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``fn()`` on ``loop`` and block this thread on its result."""
    import asyncio

    future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn), loop)
    try:
        return future.result()
    finally:
        future.cancel()  # KeyboardInterrupt while blocked: stop the work


async def _as_coroutine(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


class _Pump(Generic[T]):
    """Runs an async iterator on the engine's loop and hands each item to ``put``; the last
    thing handed over is always ``_END`` (with the error, if the iterator raised one)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], AsyncIterator[T]],
        put: Callable[[object, BaseException | None], None],
    ) -> None:
        self._put = put
        self._ended = False  # touched on the engine's loop only
        self._loop = loop
        self._task: asyncio.Task[None] | None = None

        def start() -> None:
            self._task = loop.create_task(self._run(factory))
            # Cancelled before it ever ran: the coroutine cannot say _END itself.
            self._task.add_done_callback(lambda _: self._end(None))

        loop.call_soon_threadsafe(start)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._put(_END, error)

    async def _run(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        try:
            iterator = factory()
            try:
                async for item in iterator:
                    self._put(item, None)
            finally:
                close = getattr(iterator, "aclose", None)
                if close is not None:
                    await close()
        except Exception as exc:  # handed to the consumer, re-raised there
            self._end(exc)
            return
        finally:
            self._end(None)  # also on cancellation

    def cancel(self) -> None:
        """Cancel the producer (it runs its ``finally`` blocks on the engine's loop)."""

        def cancel() -> None:
            if self._task is not None:
                self._task.cancel()

        try:
            self._loop.call_soon_threadsafe(cancel)  # after start(): callbacks run in order
        except RuntimeError:  # the engine's loop is gone
            self._end(None)


class AsyncLoopIterator(_QueueConsumer[T]):
    """Items of an async iterator that runs on another thread's event loop, handed to this
    one; ``aclose()`` cancels it there and waits until it has stopped."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], AsyncIterator[T]]
    ) -> None:
        super().__init__()
        self._loop = loop
        self._factory = factory
        self._pump: _Pump[T] | None = None

    def _stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()  # cancelled on the engine's loop; it then sends the end

    def _start(self) -> asyncio.Queue[tuple[object, BaseException | None]]:
        import asyncio

        here = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()

        def put(item: object, error: BaseException | None) -> None:
            # RuntimeError: the consumer's loop is closed; nobody is listening.
            with contextlib.suppress(RuntimeError):
                here.call_soon_threadsafe(queue.put_nowait, (item, error))

        self._pump = _Pump(self._loop, self._factory, put)
        return queue


class LoopIterator(Generic[T]):
    """The sync twin of :class:`AsyncLoopIterator`: this thread blocks on a queue."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], AsyncIterator[T]]
    ) -> None:
        import queue

        self._loop = loop
        self._factory = factory
        self._queue: queue.SimpleQueue[tuple[object, BaseException | None]] | None = None
        self._pump: _Pump[T] | None = None
        self._finished = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        import queue

        if self._finished:
            raise StopIteration
        if self._queue is None:
            q: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()
            self._queue = q
            self._pump = _Pump(self._loop, self._factory, lambda item, err: q.put((item, err)))
        item, error = self._queue.get()
        if item is _END:
            self._finished = True
            if error is not None:
                raise error
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Cancel the producer on the engine's loop and wait until it let go."""
        if self._pump is None or self._queue is None or self._finished:
            self._finished = True
            return
        self._pump.cancel()
        while True:
            item, _ = self._queue.get()
            if item is _END:
                break
        self._finished = True


def aloop_iter(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], AsyncIterator[T]]
) -> AsyncLoopIterator[T]:
    """Iterate ``factory()`` on ``loop`` (another thread's), items handed to this loop."""
    return AsyncLoopIterator(loop, factory)


def loop_iter(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], AsyncIterator[T]]
) -> LoopIterator[T]:
    """Iterate ``factory()`` on ``loop``, this thread blocking on each item."""
    return LoopIterator(loop, factory)
