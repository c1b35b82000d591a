"""Rate budgets shared by every process that uses one state store.

A vendor's quota belongs to the account, not to a process: eight workers each keeping to 100
requests per 10 s send 800. :class:`SharedRateLimiter` keeps the budget in the state store
(``take_slot`` / ``finish_slot``, a sliding log), so every process and machine on the store
draws from the same one. It keeps the rule of :class:`~pms_integration._ratelimit.RateLimiter`:
a slot counts while its request is in flight and for one window after its answer came back, so
no window at the vendor ever holds more than N arrivals, whatever the latency.

Why not pyrate-limiter (4.5.1) or limits (5.8.0): both count a request when it is granted and
cannot hold a slot while the request is in flight, so a request granted at the end of a window
that arrives in the next one is not counted there; ``limits`` has no SQLite backend and no
blocking acquire; pyrate-limiter's SQLite bucket is multi-process safe only with its
``filelock`` extra, uses the clients' clocks with Redis, and reached 51-52 grants in a 1 s
window against a limit of 50 with 4 processes. The sliding log here is a few lines on the
store's atomic steps (docs/reliability.md, "Client-side rate limits").

:func:`budget_limiter` picks the limiter for a budget: with a ``memory://`` store the
in-process :class:`RateLimiter` (one per budget, clock and sleep in the process, so every client
on the account shares it); with SQLite or Redis a :class:`SharedRateLimiter` on real time.

Inside an async call (``pms_integration.aio``) nothing here blocks the event loop: the store's
steps run in a worker thread, awaited (:func:`~pms_integration.state._offloop.off_loop`), every
pause is :func:`pms_integration._green.sleep`, and the turn to poll the store (held across the
store's steps and pauses) is a :class:`_Turn`, whose async waiters await a future the holder
resolves when it lets go. ``_lock`` stays a ``threading.Lock``: it guards a few fields, never
across I/O. Threads wait as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable

from .. import _green
from .._ratelimit import LOOK_AGAIN, STALE_AFTER, LimiterTimeout, RateLimiter, RateLimitInfo, Slot, WaitHook
from .._retry import deadline_scope
from ..errors import StateStoreError
from . import StateStore
from ._offloop import off_loop, unwrap

__all__ = ["SharedRateLimiter", "SharedSlot", "budget_limiter"]

log = logging.getLogger("pms_integration.state")

#: Longest single sleep between two tries of the store (a finishing request elsewhere may free a slot).
POLL_CAP = 0.05
#: How often a limiter re-reads the budget's shared pause (a pause set by another process).
PAUSE_CHECK_EVERY = 0.1
#: The longest one step of the store may take here (less when the operation's deadline is
#: nearer), so a store that hangs leaves the fallback limiter and the request time to run.
STORE_WAIT = 1.0
#: While the store is unreachable, how often one caller tries it again (the rest use the fallback).
RETRY_STORE_EVERY = 2.0
#: Slots whose finish could not be recorded during an outage, kept to finish once it is over.
MAX_UNFINISHED = 10_000


class _Turn:
    """One caller at a time (threads and async calls alike), held across I/O and pauses.

    Unlike :class:`pms_integration._green.Lock`, whose async waiters nap and try again, a waiter
    here is woken when the holder lets go - a thread through the condition, an async call through
    a future resolved on its loop - so a hundred async callers queued behind a full budget cost
    the loop nothing while they wait. Each waiter also looks again by itself every
    :data:`~pms_integration._ratelimit.LOOK_AGAIN` seconds.
    """

    __slots__ = ("_cond", "_held", "_woken")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def acquire(self, timeout: float = -1) -> bool:
        """Take the turn, waiting at most ``timeout`` seconds (``-1``: as long as it takes)."""
        give_up = None if timeout < 0 else time.monotonic() + timeout
        in_async = _green.in_async()
        while True:
            with self._cond:
                if not self._held:
                    self._held = True
                    return True
                left = None if give_up is None else give_up - time.monotonic()
                if left is not None and left <= 0:
                    return False
                look_again = LOOK_AGAIN if left is None else min(left, LOOK_AGAIN)
                if not in_async:
                    self._cond.wait(look_again)
                    continue
                loop = asyncio.get_running_loop()
                woken: asyncio.Future[None] = loop.create_future()
                self._woken.append((loop, woken))
            passed_on = True
            try:
                _green.await_only(asyncio.wait((woken,), timeout=look_again))
                passed_on = False
            finally:
                with self._cond:
                    try:
                        self._woken.remove((loop, woken))
                    except ValueError:
                        # release() chose this waiter; one that leaves (cancelled) hands it on
                        if passed_on:
                            self._wake_one()

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._wake_one()

    def _wake_one(self) -> None:
        """One thread and one async waiter (the caller holds the condition); the first in wins."""
        self._cond.notify()
        if self._woken:
            loop, future = self._woken.pop(0)
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                loop.call_soon_threadsafe(_wake, future)

    def locked(self) -> bool:
        return self._held


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SharedSlot(Slot):
    """A slot of a shared budget: the store's slot id per rule, or the fallback limiter's slot."""

    __slots__ = ("fallback", "parts")

    def __init__(self, granted: float, parts: list[tuple[str, str]], fallback: tuple[RateLimiter, Slot] | None) -> None:
        super().__init__(granted)
        self.parts = parts
        self.fallback = fallback


class SharedRateLimiter:
    """No window of ``per_seconds`` at the vendor holds more than ``requests`` arrivals from all
    the processes sharing ``store`` and ``budget`` (a key such as ``budget:hubspot:<account>``).

    The same calls as :class:`RateLimiter` (``acquire`` / ``release`` / ``observe`` / ``pause``,
    ``on_wait``, ``rules``). It runs on real time (``time.monotonic``, ``_green.sleep``): the
    slots live on the store's clock, so an injected fake clock could not move them.

    * A vendor-reported limit tighter than the configured one is a second budget
      (``<budget>:vendor``); its slot is taken after the configured one, in the same order in
      every process, and the first is held (counting, as in flight) while the second is awaited.
    * A pause ("none left" that the budget's own recent grants do not explain) is written to the
      store (``<budget>:pause``, expiring with it), so every process waits, not only the one that
      read the header. Other processes see it within ``PAUSE_CHECK_EVERY`` seconds.
    * When the store fails, the process falls back to ``fallback`` (its own in-memory limiter for
      the account), logs one warning per outage, tries the store again every
      ``RETRY_STORE_EVERY`` seconds and returns to the shared budget once it answers.
    """

    MARGIN = RateLimiter.MARGIN

    def __init__(
        self,
        store: StateStore,
        budget: str,
        requests: int,
        per_seconds: float,
        *,
        stale: float = STALE_AFTER,
        fallback: RateLimiter | None = None,
        on_wait: WaitHook | None = None,
    ) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and per_seconds > 0")
        self.store = store
        # the steps taken: the same store, off the event loop inside an async call
        self._steps = off_loop(store)
        self.budget = budget
        self.requests = requests
        self.per_seconds = per_seconds
        self.stale = stale
        self.on_wait = on_wait
        self.fallback = fallback or RateLimiter(requests, per_seconds)
        self._configured = (requests, per_seconds * (1 + self.MARGIN))
        self._vendor: tuple[int, float] | None = None
        self._lock = threading.Lock()
        # one caller of this process at a time polls the store (the others queue here); held
        # across the store's steps and naps, so an async caller awaits its turn
        self._turn = _Turn()
        # this process's own recent grants
        self._grants: collections.deque[float] = collections.deque(maxlen=1000)
        # pauses: this process's own, and the shared one as last read (monotonic until, why)
        self._blocked = (0.0, "")
        self._shared_block = (0.0, "")
        self._pause_read_at = float("-inf")
        # outage: since when the store failed (None: it answers), when to try it again
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._unfinished: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_UNFINISHED)

    # -- introspection ----------------------------------------------------------------------------

    @property
    def rules(self) -> list[tuple[int, float]]:
        """(requests, window seconds incl. margin) pairs every grant satisfies."""
        return [self._configured] if self._vendor is None else [self._configured, self._vendor]

    @property
    def degraded(self) -> bool:
        """True while the store is unreachable and this process paces itself alone."""
        return self._down_since is not None

    def _budgets(self) -> list[tuple[str, int, float]]:
        """(store key, count, window) per rule; a vendor rule the configured one implies is skipped."""
        count, window = self._configured
        out = [(self.budget, count, window)]
        vendor = self._vendor
        if vendor is not None and not (vendor[0] >= count and vendor[1] <= window):
            out.append((self.budget + ":vendor", vendor[0], vendor[1]))
        return out

    # -- acquire / release ------------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Slot:
        """A slot of the shared budget, waiting for it; :class:`LimiterTimeout` (no slot taken)
        when it cannot be had within ``timeout`` seconds."""
        start = time.monotonic()
        give_up = None if timeout is None else start + max(timeout, 0.0)
        # during an outage one caller every RETRY_STORE_EVERY tries the store; the rest use the fallback
        chosen = self._down_since is not None and self._try_store_now(start)
        if self._down_since is not None and not chosen:
            return self._fallback_acquire(give_up)
        if not self._turn.acquire(-1 if give_up is None else max(give_up - time.monotonic(), 0.0)):
            raise LimiterTimeout(self.per_seconds)
        try:
            # the store may have failed the caller ahead in the queue: then only one tries it again
            down = self._down_since is not None and not chosen and not self._try_store_now(time.monotonic())
            slot = None if down else self._acquire_shared(give_up)
        except LimiterTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure: pace this process alone
            self._store_failed(exc)
            slot = None
        finally:
            self._turn.release()
        if slot is None:
            return self._fallback_acquire(give_up)
        self._store_answered()
        return slot

    def _acquire_shared(self, give_up: float | None) -> SharedSlot:
        held: dict[str, str] = {}
        told = False
        try:
            while True:
                now = time.monotonic()
                paused, why = self._paused_for(now)
                if paused > 0:
                    if give_up is not None and now + paused > give_up:
                        raise LimiterTimeout(paused)
                    told = self._tell(told, paused, why)
                    _green.sleep(min(paused, POLL_CAP))
                    continue
                wait, window = 0.0, 0.0
                for key, count, window in self._budgets():
                    if key in held:
                        continue
                    with deadline_scope(STORE_WAIT):
                        got, wait = self._steps.take_slot(key, count, window, self.stale)
                    if got is None:
                        break
                    held[key] = got
                else:
                    parts = list(held.items())
                    held = {}
                    with self._lock:
                        self._grants.append(now)
                    return SharedSlot(now, parts, None)
                # nothing frees a slot sooner than the earliest finished one leaves the window: a
                # request still in flight keeps counting for a whole window once it is back
                soonest = min(wait, window)
                if give_up is not None and now + soonest > give_up:
                    raise LimiterTimeout(soonest)
                told = self._tell(told, soonest, f"shared rate budget ({self._rule_text()})")
                nap = min(wait, POLL_CAP)
                if give_up is not None:
                    nap = min(nap, max(give_up - now, 0.0))
                _green.sleep(max(nap, 0.001))
        finally:
            # slots taken for some rules but not all: they were never used; finishing them is
            # all the store allows (they count one window more: a little capacity, never a burst)
            for key, got in held.items():
                self._finish(key, got)

    def _tell(self, told: bool, seconds: float, why: str) -> bool:
        if not told and self.on_wait is not None:
            self.on_wait(seconds, why)
        return True

    def _rule_text(self) -> str:
        return ", ".join(f"{count} per {window:.3g} s" for count, window in self.rules)

    def release(self, slot: Slot) -> None:
        """The answer to ``slot``'s request is back (or the request failed). Never raises."""
        if slot.done is None:
            slot.done = time.monotonic()
        if not isinstance(slot, SharedSlot):
            self.fallback.release(slot)
            return
        if slot.fallback is not None:
            slot.fallback[0].release(slot.fallback[1])
            return
        for key, got in slot.parts:
            self._finish(key, got)

    def _finish(self, key: str, got: str) -> None:
        try:
            with deadline_scope(STORE_WAIT):
                self._steps.finish_slot(key, got)
        except Exception as exc:  # noqa: BLE001 - finished later, when the store is back
            self._unfinished.append((key, got))
            self._store_failed(exc)

    # -- the store's outages ----------------------------------------------------------------------

    def _try_store_now(self, now: float) -> bool:
        """During an outage: whether this caller is the one to try the store again."""
        with self._lock:
            if now < self._retry_at:
                return False
            self._retry_at = now + RETRY_STORE_EVERY
            return True

    def _store_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
            self._retry_at = now + RETRY_STORE_EVERY
        if first:
            code = exc.code if isinstance(exc, StateStoreError) else type(exc).__name__
            log.warning(
                "rate budget %s: the state store %s does not answer (%s); this process keeps to the "
                "limit on its own until it does",
                self.budget,
                self.store.url,
                code,
            )

    def _store_answered(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
            late = list(self._unfinished)
            self._unfinished.clear()
        if since is not None:
            log.warning(
                "rate budget %s: the state store %s answers again after %.1f s; back on the shared budget",
                self.budget,
                self.store.url,
                time.monotonic() - since,
            )
        for key, got in late:
            self._finish(key, got)

    def _fallback_acquire(self, give_up: float | None) -> Slot:
        left = None if give_up is None else max(give_up - time.monotonic(), 0.0)
        self.fallback.on_wait = self.on_wait
        inner = self.fallback.acquire(left)
        return SharedSlot(inner.granted, [], (self.fallback, inner))

    # -- the vendor's view and pauses -------------------------------------------------------------

    def observe(self, info: RateLimitInfo) -> None:
        """A vendor-reported limit becomes a rule (a second shared budget); "none left" pauses every
        process when the budget's recent grants do not explain it."""
        if self._down_since is not None:
            self.fallback.observe(info)
        now = time.monotonic()
        with self._lock:
            if info.limit and info.interval_seconds and info.limit > 0 and info.interval_seconds > 0:
                self._vendor = (info.limit, info.interval_seconds * (1 + self.MARGIN))
            if info.remaining is None or info.remaining > 0:
                return
            # this process's own last N grants fall within the window: plainly ours
            own_doing = any(
                len(self._grants) >= count and self._grants[-count] > now - 2 * window for count, window in self.rules
            )
        if not own_doing and not self._budget_full(info.limit):
            self.pause(info.interval_seconds or self.per_seconds, "the vendor said no quota is left")

    def _budget_full(self, limit: int | None) -> bool:
        """Whether the shared budget holds the vendor's ``limit`` (else the tightest rule's count)
        slots right now: then "none left" is our own processes' doing. Every request the vendor
        counted in its window is still counting here (it was granted before it arrived and came
        back after, and a slot counts a window past that), so a budget that is not full means
        someone else used the account. Asked by trying for a slot; one granted is finished at once
        (it then counts one window: a pause follows anyway)."""
        key, count, window = self._budgets()[-1]
        if limit is not None and limit > count:
            return False  # we never send that many in a window: someone else did
        try:
            with deadline_scope(STORE_WAIT):
                got, _ = self._steps.take_slot(key, limit or count, window, self.stale)
        except Exception as exc:  # noqa: BLE001 - the store does not answer: do not pause on a guess
            self._store_failed(exc)
            return True
        if got is None:
            return True
        self._finish(key, got)
        return False

    def pause(self, seconds: float, why: str = "the vendor asked to wait") -> None:
        """Hold every caller of every process on the store for ``seconds``."""
        seconds = max(seconds, 0.0)
        until = time.monotonic() + seconds
        with self._lock:
            if until > self._blocked[0]:
                self._blocked = (until, why)
        if seconds <= 0:
            return
        try:
            with deadline_scope(STORE_WAIT):
                self._steps.put(self.budget + ":pause", f"{time.time() + seconds:.3f}|{seconds:.3f}|{why}", seconds)
        except Exception as exc:  # noqa: BLE001 - this process still pauses
            self._store_failed(exc)

    def _paused_for(self, now: float) -> tuple[float, str]:
        """Seconds left of this process's pause or the shared one (re-read now and then)."""
        if now - self._pause_read_at >= PAUSE_CHECK_EVERY:
            self._pause_read_at = now
            with deadline_scope(STORE_WAIT):
                value = self._steps.get(self.budget + ":pause")
            self._shared_block = (0.0, "")
            if value:
                until_text, _, rest = value.partition("|")
                seconds_text, _, why = rest.partition("|")
                try:
                    left = min(max(float(until_text) - time.time(), 0.0), float(seconds_text))
                except ValueError:
                    left = 0.0
                self._shared_block = (now + left, why or "another process paused the budget")
        blocked, shared = self._blocked, self._shared_block
        until, why = blocked if blocked[0] >= shared[0] else shared
        return max(until - now, 0.0), why


# -- one limiter per budget ---------------------------------------------------------------------

_cache_lock = threading.Lock()
# store -> (budget, requests, per_seconds, clock id, sleep id) -> limiter; the memory store's
# limiters go with it (reset_memory_state() gives tests a fresh one)
_by_store: weakref.WeakKeyDictionary[object, dict[tuple[object, ...], RateLimiter | SharedRateLimiter]] = (
    weakref.WeakKeyDictionary()
)
# budget -> this process's own limiter, used while a shared store is unreachable
_fallbacks: dict[tuple[str, int, float], RateLimiter] = {}
MAX_LIMITERS = 1000


def budget_limiter(
    store: StateStore,
    budget: str,
    requests: int,
    per_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stale: float = STALE_AFTER,
) -> RateLimiter | SharedRateLimiter:
    """The limiter of ``budget`` (``requests`` per ``per_seconds``) on ``store``.

    A memory store: one in-process :class:`RateLimiter` per budget, clock and sleep (so clients
    on one account share it, and an injected fake clock keeps its own; real time's sleep,
    ``time.sleep`` or :func:`pms_integration._green.sleep`, counts as one). SQLite or Redis: one
    :class:`SharedRateLimiter` per budget in the process, on real time, falling back to the
    process's own limiter while the store does not answer. ``stale``: seconds after which a slot
    never released counts as finished (at least the longest a request can be in flight).
    """
    shared = getattr(store, "kind", "memory") != "memory"
    # the sync and the async client on one account share a limiter: an off_loop proxy counts as
    # its store, and time.sleep as _green.sleep (which is time.sleep outside an async call)
    store = unwrap(store)
    if sleep is time.sleep:
        sleep = _green.sleep
    key: tuple[object, ...] = (budget, requests, per_seconds) if shared else (budget, requests, per_seconds, id(clock), id(sleep))
    with _cache_lock:
        limiters = _by_store.get(store)
        if limiters is None:
            limiters = _by_store[store] = {}
        limiter = limiters.get(key)
        if limiter is not None:
            return limiter
        if len(limiters) >= MAX_LIMITERS:
            limiters.pop(next(iter(limiters)))
        if shared:
            fallback = _fallbacks.get((budget, requests, per_seconds))
            if fallback is None:
                if len(_fallbacks) >= MAX_LIMITERS:
                    _fallbacks.pop(next(iter(_fallbacks)))
                fallback = _fallbacks[(budget, requests, per_seconds)] = RateLimiter(requests, per_seconds)
            limiter = SharedRateLimiter(store, budget, requests, per_seconds, stale=stale, fallback=fallback)
        else:
            # the limiter keeps clock and sleep alive, so their ids stay theirs while it is cached
            limiter = RateLimiter(requests, per_seconds, clock=clock, sleep=sleep)
        limiters[key] = limiter
        return limiter
