"""A client-side rate limiter shared by every thread of a client: it counts answers, not grants,
so no window at the vendor ever holds more than N arrivals however threads are scheduled.
The rule and why it holds: docs/reliability.md, "Client-side rate limits".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from . import _green

__all__ = ["Limiter", "RateLimiter", "RateLimitInfo", "LimiterTimeout", "Slot"]

#: Seconds after which a slot whose request never reported back is treated as finished (a
#: caller that lost track of it must not stall the limiter forever).
STALE_AFTER = 300.0


@attrs.frozen
class RateLimitInfo:
    """What the vendor last said about the caller's quota (any field may be unknown)."""

    remaining: int | None = None
    limit: int | None = None
    interval_seconds: float | None = None
    daily_remaining: int | None = None
    daily_limit: int | None = None


class LimiterTimeout(Exception):
    """No slot could be had before the caller's deadline; ``wait`` is how long it would take."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit slot in {wait:.2f} s")
        self.wait = wait


class Slot:
    """One granted request: when it was granted, and when its answer came back."""

    __slots__ = ("done", "granted")

    def __init__(self, granted: float) -> None:
        self.granted = granted
        self.done: float | None = None

    def finished(self, now: float) -> float | None:
        """When the answer came back (one silent for ``STALE_AFTER`` counts as back then), or None."""
        if self.done is None:
            return self.granted + STALE_AFTER if now - self.granted >= STALE_AFTER else None
        return self.done


#: The longest a caller waiting for a request in flight to come back waits before it looks
#: again by itself (a release wakes it sooner): threads on the condition, async calls awaited.
LOOK_AGAIN = 0.25

#: Called before every wait for a slot: ``(seconds, why)``.
WaitHook = Callable[[float, str], None]


class Limiter(Protocol):
    """What a transport needs of a limiter: :class:`RateLimiter` (one process) or
    :class:`~pms_integration.state._budget.SharedRateLimiter` (a budget in the state store)."""

    requests: int
    per_seconds: float
    on_wait: WaitHook | None

    @property
    def rules(self) -> list[tuple[int, float]]: ...

    def acquire(self, timeout: float | None = None) -> Slot: ...

    def release(self, slot: Slot) -> None: ...

    def observe(self, info: RateLimitInfo) -> None: ...

    def pause(self, seconds: float, why: str = ...) -> None: ...


class RateLimiter:
    """No window of ``per_seconds`` ever holds more than ``requests`` arrivals at the vendor.

    Call :meth:`acquire` before sending and :meth:`release` with the returned :class:`Slot`
    once the answer (or the failure) is back; :meth:`observe` adds the vendor's own limit.

    Inside an async call (``pms_integration.aio``) no wait blocks the event loop: the default
    sleep is :func:`pms_integration._green.sleep` (``time.sleep`` anywhere else), and a caller
    waiting for a request in flight awaits a future that :meth:`release` resolves (from any
    thread, through the caller's loop) instead of waiting on the condition, whose lock is
    released meanwhile. That lock is held only for a few steps with no I/O.
    """

    #: Safety margin on each window (clock granularity between us and the vendor).
    MARGIN = 0.03

    def __init__(
        self,
        requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: WaitHook | None = None,
    ) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and per_seconds > 0")
        self.requests = requests
        self.per_seconds = per_seconds
        self._clock = clock
        # real time's sleep is the one that awaits inside an async call (time.sleep elsewhere)
        self._sleep = _green.sleep if sleep is time.sleep else sleep
        self.on_wait = on_wait
        self._cond = threading.Condition(threading.Lock())
        # async callers waiting for a release: (their loop, the future release() resolves)
        self._woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._configured = (requests, per_seconds * (1 + self.MARGIN))
        self._vendor: tuple[int, float] | None = None
        # the most recent slots in grant order; older ones are folded into _floor, the
        # latest time any of them came back (they all count against every rule)
        self._slots: collections.deque[Slot] = collections.deque()
        self._floor = float("-inf")
        self._blocked_until = 0.0
        self._blocked_why = "the vendor said no quota is left"

    @property
    def rules(self) -> list[tuple[int, float]]:
        """(requests, window seconds incl. margin) pairs every grant satisfies."""
        return [self._configured] if self._vendor is None else [self._configured, self._vendor]

    def _fold(self, now: float) -> None:
        """Forget slots no rule needs one by one (all finished, older than the longest rule)."""
        keep = max(count for count, _ in self.rules)
        while len(self._slots) > keep:
            done = self._slots[0].finished(now)
            if done is None:
                return
            self._floor = max(self._floor, done)
            self._slots.popleft()

    def _ready_at(self, now: float) -> tuple[float | None, str]:
        """When the next slot may be granted (None: only after a request in flight is back), and why."""
        at = max(now, self._blocked_until)
        why = self._blocked_why if self._blocked_until > now else ""
        held = len(self._slots)
        for count, window in self.rules:
            rule = f"client-side rate limit ({count} per {window:.3g} s)"
            if self._floor != float("-inf") and self._floor + window > at:
                at, why = self._floor + window, rule
            # slots at positions 0 .. held-count are "request i - N or earlier"
            for position in range(held - count + 1):
                done = self._slots[position].finished(now)
                if done is None:
                    return None, rule
                if done + window > at:
                    at, why = done + window, rule
        return at, why

    def acquire(self, timeout: float | None = None) -> Slot:
        """Reserve the next slot and wait until its time; return it (pass it to :meth:`release`).

        Reserved in arrival order under the lock, waited for outside it. :class:`LimiterTimeout`
        (no slot taken) when the slot is further away than ``timeout`` seconds.
        """
        start = self._clock()
        in_async = _green.in_async()
        while True:
            with self._cond:
                now = self._clock()
                at, why = self._ready_at(now)
                if at is not None:
                    if timeout is not None and at - start > timeout:
                        raise LimiterTimeout(at - now)
                    slot = Slot(max(at, now))
                    self._slots.append(slot)
                    self._fold(now)
                    break
                # a request that must come back first is still in flight: release() wakes us
                left = None if timeout is None else start + timeout - now
                if left is not None and left <= 0:
                    raise LimiterTimeout(self.per_seconds)
                look_again = LOOK_AGAIN if left is None else min(left, LOOK_AGAIN)
                if not in_async:
                    self._cond.wait(look_again)
                    continue
                # an async call: the request in flight may be another call on this very loop, so
                # the loop must run; the future is awaited with the condition released
                loop = asyncio.get_running_loop()
                woken: asyncio.Future[None] = loop.create_future()
                self._woken.append((loop, woken))
            try:
                _green.await_only(asyncio.wait((woken,), timeout=look_again))
            finally:
                with self._cond, contextlib.suppress(ValueError):
                    self._woken.remove((loop, woken))
        wait = slot.granted - now
        if wait > 0:
            try:
                if self.on_wait is not None:
                    self.on_wait(wait, why)
                self._sleep(wait)
            except BaseException:
                # cancelled (an async caller) or interrupted before its time: the request is never
                # sent, so the slot goes back now rather than counting as in flight for STALE_AFTER
                self.release(slot)
                raise
        return slot

    def release(self, slot: Slot) -> None:
        """The answer to ``slot``'s request is back (or the request failed): record when."""
        with self._cond:
            if slot.done is None:
                slot.done = self._clock()
            self._fold(slot.done)
            self._cond.notify_all()
            woken, self._woken = self._woken, []
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                loop.call_soon_threadsafe(_wake, future)

    def observe(self, info: RateLimitInfo) -> None:
        """Adapt to the vendor's view: a reported limit becomes a rule of its own (it only ever
        tightens), and "none left" pauses everyone only when our own recent grants do not explain
        it (the limiter sends right up to the window's edge, so a 0 is normal)."""
        with self._cond:
            if info.limit and info.interval_seconds and info.limit > 0 and info.interval_seconds > 0:
                self._vendor = (info.limit, info.interval_seconds * (1 + self.MARGIN))
            if info.remaining is None or info.remaining > 0:
                return
            now = self._clock()
            # our own last N grants span about a window plus the answers' latency
            own_doing = any(
                len(self._slots) >= count and self._slots[-count].granted > now - 2 * window
                for count, window in self.rules
            )
        if not own_doing:
            self.pause(info.interval_seconds or self.per_seconds, "the vendor said no quota is left")

    def pause(self, seconds: float, why: str = "the vendor asked to wait") -> None:
        """Hold every caller for ``seconds`` (an exhausted quota header, say)."""
        with self._cond:
            until = self._clock() + max(seconds, 0.0)
            if until > self._blocked_until:
                self._blocked_until = until
                self._blocked_why = why


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
