"""A state store whose steps never block the event loop of an async call.

SQLite and Redis stores do blocking I/O (a file lock, a socket read). Inside a call made
through ``pms_integration.aio`` that I/O would stop the event loop the call runs on, so
:func:`off_loop` puts a thin proxy in front of such a store: each step runs through
:func:`pms_integration._green.run_blocking` - in a worker thread, awaited, inside an async call
(the caller's context variables, such as the operation's deadline, go with it); directly, as
before, anywhere else. The proxy is therefore safe to hand to threads and async calls alike.

The memory store does no I/O (its lock is held for a few dictionary steps), so ``off_loop``
returns it as it is.

Cancellation: a step already handed to a worker thread runs to its end there (a thread cannot
be stopped), while the awaiting call sees the cancellation at once. A ``claim`` cancelled that
way may leave the key's lock taken until its lease runs out; the booking memory's lease keeps
that short, and nothing is sent to the vendor without a claim the caller saw.
"""

from __future__ import annotations

from .. import _green
from . import Claim, StateStore

__all__ = ["off_loop", "OffLoopStore", "unwrap"]


class OffLoopStore:
    """``store``'s steps, run off the event loop inside an async call (:func:`off_loop`)."""

    __slots__ = ("kind", "namespace", "store", "url")

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.kind, self.url, self.namespace = store.kind, store.url, store.namespace

    def get(self, key: str) -> str | None:
        return _green.run_blocking(self.store.get, key)

    def put(self, key: str, value: str, ttl: float | None) -> None:
        _green.run_blocking(self.store.put, key, value, ttl)

    def delete(self, key: str) -> None:
        _green.run_blocking(self.store.delete, key)

    def claim(self, key: str, lease: float, ttl: float) -> Claim:
        return _green.run_blocking(self.store.claim, key, lease, ttl)

    def mark(self, claim: Claim, ttl: float) -> bool:
        return _green.run_blocking(self.store.mark, claim, ttl)

    def settle(self, claim: Claim, result: str | None, pending: bool, ttl: float) -> bool:
        return _green.run_blocking(self.store.settle, claim, result, pending, ttl)

    def take_slot(self, budget: str, limit: int, window: float, stale: float) -> tuple[str | None, float]:
        return _green.run_blocking(self.store.take_slot, budget, limit, window, stale)

    def finish_slot(self, budget: str, slot: str) -> None:
        _green.run_blocking(self.store.finish_slot, budget, slot)

    def close(self) -> None:
        _green.run_blocking(self.store.close)

    def __repr__(self) -> str:
        return f"off_loop({self.store!r})"


def off_loop(store: StateStore) -> StateStore:
    """``store`` with every step run off the event loop inside an async call (a proxy for a
    SQLite or Redis store; a memory store, or a proxy given again, as it is). What is kept per
    store (the rate budgets) is kept per store behind the proxy: see :func:`unwrap`."""
    if isinstance(store, OffLoopStore) or store.kind == "memory":
        return store
    return OffLoopStore(store)


def unwrap(store: StateStore) -> StateStore:
    """The store behind an :func:`off_loop` proxy (any other store as it is)."""
    return store.store if isinstance(store, OffLoopStore) else store
