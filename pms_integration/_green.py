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
import contextvars
import threading
import time
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
    coroutine (a cancellation) is thrown into the function at the point where it waits."""
    driven = _driven_class()(function)
    assert _getcurrent is not None
    driven.driver = _getcurrent()  # type: ignore[attr-defined]
    # a new greenlet starts with an empty context: give it a copy of the caller's (a deadline
    # scope around the await, say), as a task or a thread started from here would see
    driven.gr_context = contextvars.copy_context()
    pending = driven.switch(*args, **kwargs)
    while not driven.dead:
        try:
            value = await pending
        except BaseException as exc:  # noqa: BLE001 - the sync code decides (a cancellation included)
            pending = driven.throw(exc)
        else:
            pending = driven.switch(value)
    return pending  # type: ignore[no-any-return]


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
