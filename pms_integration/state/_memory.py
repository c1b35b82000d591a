"""``memory://``: the state store of one process (every client in it shares the default one)."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable

from . import PENDING, Claim

__all__ = ["MemoryStore"]

#: Entries kept at most (the oldest result is forgotten first); locks in use are never dropped.
MAX_ENTRIES = 100_000


class MemoryStore:
    """A :class:`~pms_integration.state.StateStore` in this process's memory (no I/O, never fails)."""

    kind = "memory"

    def __init__(
        self, *, namespace: str = "", clock: Callable[[], float] = time.monotonic, size: int = MAX_ENTRIES
    ) -> None:
        self.namespace = namespace
        self.url = "memory://" + (f"?namespace={namespace}" if namespace else "")
        self._clock = clock
        self._size = size
        self._lock = threading.Lock()
        # key -> (value, expires at or None), oldest first
        self._values: collections.OrderedDict[str, tuple[str, float | None]] = collections.OrderedDict()
        self._locks: dict[str, tuple[int, float]] = {}  # key -> (token, lease ends)
        self._fences: dict[str, tuple[int, float]] = {}  # key -> (last token, forget after)
        self._slots: dict[str, dict[str, tuple[float, float]]] = {}  # budget -> slot -> (counts until, window)
        self._ids = itertools.count(1)

    # -- values ---------------------------------------------------------------------------------

    def _live(self, key: str, now: float) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= now:
            del self._values[key]
            return None
        return entry[0]

    def _set(self, key: str, value: str, ttl: float | None, now: float) -> None:
        self._values[key] = (value, None if ttl is None else now + ttl)
        self._values.move_to_end(key)
        while len(self._values) > self._size:
            self._values.popitem(last=False)

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._live(key, self._clock())

    def put(self, key: str, value: str, ttl: float | None) -> None:
        with self._lock:
            self._set(key, value, ttl, self._clock())

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    # -- claims ---------------------------------------------------------------------------------

    def claim(self, key: str, lease: float, ttl: float) -> Claim:
        with self._lock:
            now = self._clock()
            result = self._live(key, now)
            if result is not None:
                return Claim(key, result=result)
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return Claim(key, busy_for=held[1] - now)
            last = self._fences.get(key)
            token = (last[0] if last is not None and last[1] > now else 0) + 1
            self._fences[key] = (token, now + max(ttl, lease))
            self._locks[key] = (token, now + lease)
            self._sweep(now)
            return Claim(key, token=token, pending=self._live(key + PENDING, now) is not None)

    def mark(self, claim: Claim, ttl: float) -> bool:
        with self._lock:
            now = self._clock()
            held = self._locks.get(claim.key)
            if held is None or held[0] != claim.token or held[1] <= now:
                return False
            self._set(claim.key + PENDING, "1", ttl, now)
            return True

    def settle(self, claim: Claim, result: str | None, pending: bool, ttl: float) -> bool:
        with self._lock:
            now = self._clock()
            last = self._fences.get(claim.key)
            if claim.token is None or last is None or last[0] != claim.token:
                return False
            if result is not None:
                self._set(claim.key, result, ttl, now)
            if pending:
                self._set(claim.key + PENDING, "1", ttl, now)
            else:
                self._values.pop(claim.key + PENDING, None)
            held = self._locks.get(claim.key)
            if held is not None and held[0] == claim.token:
                del self._locks[claim.key]
            return True

    def _sweep(self, now: float) -> None:
        """Drop expired locks and fences once there are many (amortised over claims)."""
        if len(self._fences) > self._size:
            self._fences = {k: v for k, v in self._fences.items() if v[1] > now}
            self._locks = {k: v for k, v in self._locks.items() if v[1] > now}

    # -- budgets --------------------------------------------------------------------------------

    def take_slot(self, budget: str, limit: int, window: float, stale: float) -> tuple[str | None, float]:
        with self._lock:
            now = self._clock()
            slots = self._slots.setdefault(budget, {})
            for slot, (until, _) in list(slots.items()):
                if until <= now:
                    del slots[slot]
            if len(slots) < limit:
                slot = str(next(self._ids))
                slots[slot] = (now + stale + window, window)
                return slot, 0.0
            return None, max(min(until for until, _ in slots.values()) - now, 0.001)

    def finish_slot(self, budget: str, slot: str) -> None:
        with self._lock:
            slots = self._slots.get(budget)
            entry = None if slots is None else slots.get(slot)
            if slots is not None and entry is not None:
                slots[slot] = (self._clock() + entry[1], entry[1])

    def close(self) -> None:
        """Nothing to release (the memory goes with the process)."""

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r}, {len(self._values)} entries)"
