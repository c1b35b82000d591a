"""A client-side rate limiter shared by every thread of a client.

It keeps the send times of the last ``N`` requests (a sliding-window log), so no window of
``per_seconds`` ever holds more than ``N`` requests - the same rule the vendors' rolling windows
enforce - while a burst still goes out at the full rate. Callers reserve a slot under a lock
and sleep outside it, so waiting threads are served in arrival order. Vendor headers that report
the remaining quota tighten it further (:meth:`RateLimiter.observe`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import attrs

__all__ = ["RateLimiter", "RateLimitInfo", "LimiterTimeout"]


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


class RateLimiter:
    """Sliding-window limiter: no window of ``per_seconds`` ever holds more than ``requests``.

    The vendor's own limit, once its headers report one (``X-RateLimit-Max`` with
    ``X-RateLimit-Interval-Milliseconds``, say), becomes a second rule that every grant must
    also satisfy, so a configured limit looser than the account's real one cannot cause 429s.
    """

    #: Safety margin on each window, covering jitter between our send time and the vendor's
    #: arrival time (a request sent exactly one window later could still land inside it).
    MARGIN = 0.03

    def __init__(
        self,
        requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and per_seconds > 0")
        self.requests = requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._configured = (requests, per_seconds * (1 + self.MARGIN))
        self._vendor: tuple[int, float] | None = None
        self._grants: collections.deque[float] = collections.deque()
        self._blocked_until = 0.0

    @property
    def rules(self) -> list[tuple[int, float]]:
        """(requests, window seconds incl. margin) pairs every grant satisfies."""
        return [self._configured] if self._vendor is None else [self._configured, self._vendor]

    def _next_slot(self, now: float) -> float:
        at = max(now, self._blocked_until)
        for count, window in self.rules:
            if len(self._grants) >= count:
                at = max(at, self._grants[-count] + window)
        return at

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for a slot; return how long was waited.

        Raises :class:`LimiterTimeout` (without taking a slot) when the slot is further away
        than ``timeout``.
        """
        with self._lock:
            now = self._clock()
            at = self._next_slot(now)
            wait = at - now
            if timeout is not None and wait > timeout:
                raise LimiterTimeout(wait)
            self._grants.append(at)
            keep = max(count for count, _ in self.rules)
            while len(self._grants) > keep:
                self._grants.popleft()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def observe(self, info: RateLimitInfo) -> None:
        """Adapt to the vendor's own view of the quota.

        A reported limit becomes a rule of its own (tightening, never loosening, what is
        configured). "None left" is normal when the limiter and the vendor count the same
        requests - the limiter sends right up to the window's edge and its log already holds the
        next caller back - so everyone is paused for the vendor's window only when the log does
        not explain it (another process sharing the quota, say).
        """
        with self._lock:
            if info.limit and info.interval_seconds and info.limit > 0 and info.interval_seconds > 0:
                vendor = (info.limit, info.interval_seconds * (1 + self.MARGIN))
                if vendor != self._vendor:
                    self._vendor = vendor
            if info.remaining is None or info.remaining > 0:
                return
            now = self._clock()
            own_doing = any(
                len(self._grants) >= count and self._grants[-count] > now - window for count, window in self.rules
            )
        if not own_doing:
            self.pause(info.interval_seconds or self.per_seconds)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (after a 429, or an exhausted quota header)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + max(seconds, 0.0))
