"""One implementation for both APIs: the sync core, driven from asyncio on greenlets.

The adapters, the booking memory, the retries and the rate limiter are ordinary blocking code.
``pms_integration.aio`` runs each call of that code in a greenlet of its own on the event
loop's thread. Where the code would block - a request on the wire, a sleep, a contended lock -
it calls :func:`await_only` (through :func:`sleep`, :class:`Lock` and the async transport),
which switches back to the coroutine that drives the greenlet; the coroutine awaits the
awaitable and switches back in with its result. The loop never blocks on the library, and no
adapter exists twice. Outside such a greenlet (the sync API, any thread), the same helpers
block as they always did.

Why greenlets rather than an executor of threads, or a second, async copy of every adapter:
docs/asyncio.md, "How it works", with the measurements.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import greenlet

__all__ = ["in_async", "await_only", "run_sync", "sleep", "Lock", "run_blocking"]

T = TypeVar("T")

# greenlet comes with the [aio] extra and is imported by the first async call, never by the sync
# API: until then no greenlet of ours can be running, so in_async() is simply False.
_driven: type[greenlet.greenlet] | None = None
_getcurrent: Callable[[], greenlet.greenlet] | None = None


def _driven_class() -> type[greenlet.greenlet]:
    global _driven, _getcurrent
    if _driven is None:
        import greenlet

        class Driven(greenlet.greenlet):
            """A greenlet running sync library code for a coroutine (``driver`` awaits for it)."""

            driver: greenlet.greenlet

        _getcurrent, _driven = greenlet.getcurrent, Driven
    return _driven


def in_async() -> bool:
    """True inside a call made through ``pms_integration.aio`` (waits must be awaited)."""
    return _getcurrent is not None and _driven is not None and isinstance(_getcurrent(), _driven)


def await_only(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from sync code running under :func:`run_sync`: the driving
    coroutine awaits it while this greenlet is suspended; its result (or exception) comes back."""
    if not in_async():
        raise RuntimeError("await_only() is only for code running under pms_integration._green.run_sync")
    assert _getcurrent is not None
    return _getcurrent().driver.switch(awaitable)  # type: ignore[attr-defined, no-any-return]


async def run_sync(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function(*args, **kwargs)`` (blocking library code) on this loop's thread, awaiting
    for it wherever it calls :func:`await_only`. An exception thrown into the awaiting
    coroutine (a cancellation) is thrown into the function at the point where it waits.

    Each stretch of sync code between two waits first passes the loop's :class:`_Gate`, so
    that one turn of the loop runs only about TURN_BUDGET (1 ms) of library code and the
    caller's own tasks (an audio stream, a ticker) get their turn in between."""
    driven = _driven_class()(function)
    assert _getcurrent is not None
    driven.driver = _getcurrent()  # type: ignore[attr-defined]
    # a new greenlet starts with an empty context: give it a copy of the caller's (a deadline
    # scope around the await, say), as a task or a thread started from here would see
    driven.gr_context = contextvars.copy_context()
    gate = _Gate.of(asyncio.get_running_loop())
    await gate.enter()
    started = time.perf_counter()
    pending = driven.switch(*args, **kwargs)
    gate.spent(time.perf_counter() - started)
    while not driven.dead:
        try:
            value = await pending
        except BaseException as exc:  # noqa: BLE001 - the sync code decides (a cancellation included)
            # not gated: a cancellation or a failure is handled at once
            started = time.perf_counter()
            pending = driven.throw(exc)
        else:
            try:
                await gate.enter()
            except BaseException as exc:  # noqa: BLE001 - cancelled while queued: the sync code hears it where it waits
                started = time.perf_counter()
                pending = driven.throw(exc)
            else:
                started = time.perf_counter()
                pending = driven.switch(value)
        gate.spent(time.perf_counter() - started)
    return pending  # type: ignore[no-any-return]


#: Library CPU one turn of the event loop may run before the rest waits for the next turn.
TURN_BUDGET = 0.001


class _Gate:
    """Shares each turn of one event loop between the library's greenlets and everything else.

    Two hundred bookings whose answers arrive together would otherwise all resume in the same
    turn of the loop, one after another, and hold up every other task for tens of milliseconds.
    Stretches of library code are let in while this turn's budget lasts; the rest queue (first
    come, first served) and are let in on the following turns, as many as the budget fits at
    the recent mean cost of a stretch. A queued caller that is cancelled simply leaves the queue.
    """

    _gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self.turn_open = False
        self.used = 0.0
        self.mean = 0.0003

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Gate:
        gate = cls._gates.get(loop)
        if gate is None:
            gate = cls._gates[loop] = cls(loop)
        return gate

    def _open_turn(self) -> None:
        if not self.turn_open:
            self.turn_open, self.used = True, 0.0
            self.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Runs once per turn while anyone is queued: lets in what this turn's budget fits."""
        self.turn_open = False
        room = max(1, int(TURN_BUDGET / max(self.mean, 1e-5)))
        while self.queue and room:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1
        if self.queue:
            self._open_turn()

    async def enter(self) -> None:
        self._open_turn()
        if not self.queue and self.used < TURN_BUDGET:
            return
        waiter = self.loop.create_future()
        self.queue.append(waiter)
        await waiter

    def spent(self, seconds: float) -> None:
        self.used += seconds
        self.mean = 0.9 * self.mean + 0.1 * seconds


def sleep(seconds: float) -> None:
    """``time.sleep``, or an awaited ``asyncio.sleep`` inside an async call."""
    if in_async():
        await_only(asyncio.sleep(max(seconds, 0.0)))
    else:
        time.sleep(max(seconds, 0.0))


def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` directly, or in a worker thread awaited inside an async call (for
    I/O that has no async form: a SQLite file, a Redis socket). The worker runs in a copy of the
    caller's context (the operation's deadline is a context variable)."""
    if in_async():
        context = contextvars.copy_context()
        return await_only(asyncio.get_running_loop().run_in_executor(None, context.run, function, *args))
    return function(*args)


#: The longest nap between two tries of a contended :class:`Lock` inside an async call.
_LONGEST_NAP = 0.01


class Lock:
    """A lock for sections that wait on I/O (a refresh, a booking in flight), shared by threads
    and async calls alike: a thread blocks on it as on ``threading.Lock``; an async call, which
    must not block the loop its holder may be running on, naps (awaited) between tries."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not in_async():
            return self._lock.acquire(blocking, timeout)
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        give_up = None if timeout < 0 else time.monotonic() + timeout
        nap = 0.0005
        while True:
            left = None if give_up is None else give_up - time.monotonic()
            if left is not None and left <= 0:
                return False
            sleep(nap if left is None else min(nap, left))
            if self._lock.acquire(False):
                return True
            nap = min(nap * 2, _LONGEST_NAP)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
