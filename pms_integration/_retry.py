"""Retry policy and per-operation deadlines (the transport's tenacity loop reads both).

Every operation (a booking may take several requests) runs under one :class:`Deadline`, carried
in a context variable so that nested calls and retries all see the same budget.
"""

from __future__ import annotations

import contextvars
import datetime
import math
import time
from collections.abc import Callable

import attrs

__all__ = ["RetryPolicy", "Deadline", "deadline_scope", "current_deadline", "parse_retry_after"]


@attrs.frozen
class RetryPolicy:
    """How hard the transport tries (docs/errors.md, "What the library retries for you").

    ``max_attempts`` counts the first try. Backoff doubles from ``backoff_initial`` up to
    ``backoff_max`` seconds, plus up to ``jitter`` seconds. No wait over ``max_retry_after`` is
    made (the error is raised with ``retry_after`` set, so the caller can decide).
    """

    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 30.0


class Deadline:
    """An absolute point on ``clock`` after which an operation must not go on."""

    __slots__ = ("clock", "expires_at")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.expires_at = clock() + seconds

    def remaining(self) -> float:
        return self.expires_at - self.clock()

    def expired(self) -> bool:
        return self.remaining() <= 0


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("pms_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


class deadline_scope:
    """Run the block under a deadline; an enclosing, earlier deadline stays in force.

    A small class rather than a generator context manager: it runs once per operation.
    """

    __slots__ = ("_token", "deadline")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        outer = _current.get()
        mine = Deadline(seconds, clock)
        if outer is not None and outer.clock is clock and outer.expires_at < mine.expires_at:
            mine = outer
        self.deadline = mine

    def __enter__(self) -> Deadline:
        self._token = _current.set(self.deadline)
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # only HTTP-date values need it; keep it off the import path

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, source zone unknown"
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - now()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
