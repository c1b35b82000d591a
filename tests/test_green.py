"""No blocking wait on the event loop: every wait of the sync core is awaited inside an async call.

Every test runs its coroutines with ``asyncio.run`` and proves the loop kept running with a
ticker task that must see ticks while the sync code is parked; none asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pms_integration import _green
from pms_integration._retry import current_deadline, deadline_scope
from pms_integration.state import StateStore, open_state
from pms_integration.state._offloop import OffLoopStore, off_loop, unwrap

T = TypeVar("T")

#: How long any one await in these tests may take before the test fails (a hang, not a timing).
HANG = 60.0


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, HANG)

    return asyncio.run(bounded())


class Ticker:
    """A task that counts loop turns; ``await ticker.ticks(n)`` returns once n more went by."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1
            for target, future in list(self._waiters):
                if self.count >= target and not future.done():
                    future.set_result(None)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def ticks(self, n: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.count + n, future))
        await future


def wait_event(event: asyncio.Event) -> None:
    """Sync code (under run_sync) parked until ``event`` is set."""
    _green.await_only(event.wait())


# -- _green itself --------------------------------------------------------------------------------


def test_await_only_outside_an_async_call_raises() -> None:
    assert not _green.in_async()

    async def sleeper() -> None:
        await asyncio.sleep(0)

    coro = sleeper()
    with pytest.raises(RuntimeError, match="run_sync"):
        _green.await_only(coro)
    coro.close()


def test_run_sync_returns_the_result_and_sees_the_callers_context() -> None:
    seen: list[Any] = []

    def work(a: int, b: int = 0) -> int:
        seen.append((_green.in_async(), current_deadline() is not None))
        return a + b

    async def main() -> int:
        with deadline_scope(30.0):
            return await _green.run_sync(work, 2, b=3)

    assert run(main()) == 5
    assert seen == [(True, True)]


def test_an_exception_thrown_through_run_sync_reaches_the_sync_code_at_its_wait() -> None:
    caught: list[BaseException] = []

    def work() -> str:
        async def fails() -> None:
            raise KeyError("boom")

        try:
            _green.await_only(fails())
        except KeyError as exc:
            caught.append(exc)
            return "handled"
        return "not reached"

    assert run(_green.run_sync(work)) == "handled"
    assert isinstance(caught[0], KeyError)


def test_a_cancellation_reaches_the_sync_code_at_its_wait_point() -> None:
    parked, reached = [], []

    def work(event: asyncio.Event) -> None:
        parked.append(True)
        try:
            wait_event(event)
        except asyncio.CancelledError:
            reached.append("cancelled at the wait")
            raise
        finally:
            reached.append("finally ran")

    async def main() -> None:
        never = asyncio.Event()
        task = asyncio.get_running_loop().create_task(_green.run_sync(work, never))
        with Ticker() as ticker:
            await ticker.ticks(3)
        assert parked == [True]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert reached == ["cancelled at the wait", "finally ran"]


def test_sleep_and_run_blocking_block_outside_an_async_call() -> None:
    _green.sleep(0)
    assert _green.run_blocking(threading.get_ident) == threading.get_ident()


def test_run_blocking_uses_a_worker_thread_with_the_callers_context() -> None:
    loop_thread = threading.get_ident()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("green_test", default="unset")

    def inside() -> tuple[int, str, bool]:
        return threading.get_ident(), var.get(), current_deadline() is not None

    def work() -> tuple[int, str, bool]:
        var.set("caller")
        with deadline_scope(30.0):
            return _green.run_blocking(inside)

    thread, value, has_deadline = run(_green.run_sync(work))
    assert thread != loop_thread
    assert (value, has_deadline) == ("caller", True)


# -- off_loop ---------------------------------------------------------------------------------------


def test_off_loop_keeps_the_memory_store_and_does_not_wrap_twice(tmp_path: Path) -> None:
    memory = open_state("memory://")
    assert off_loop(memory) is memory
    store = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    proxy = off_loop(store)
    assert isinstance(proxy, OffLoopStore) and isinstance(proxy, StateStore)
    assert off_loop(proxy) is proxy
    assert unwrap(proxy) is store and unwrap(store) is store
    assert (proxy.kind, proxy.url, proxy.namespace) == (store.kind, store.url, store.namespace)
    assert repr(store) in repr(proxy)


class ThreadSpy:
    """Wraps every step of a store and records the thread each ran on."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.threads: dict[str, set[int]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if not callable(value):
            return value

        def spied(*args: Any) -> Any:
            self.threads.setdefault(name, set()).add(threading.get_ident())
            return value(*args)

        return spied


STEPS = ("put", "get", "claim", "mark", "settle", "take_slot", "finish_slot", "delete")


def exercise(store: StateStore) -> list[Any]:
    """Every step once; what each answered (slot ids and fencing tokens reduced to their shape)."""
    out: list[Any] = []
    store.put("k", "v", 60.0)
    out.append(store.get("k"))
    claim = store.claim("lock", 5.0, 60.0)
    out.append((claim.held, claim.result, claim.pending))
    out.append(store.mark(claim, 60.0))
    out.append(store.settle(claim, "done", False, 60.0))
    out.append(store.claim("lock", 5.0, 60.0).result)
    slot, wait = store.take_slot("budget", 1, 10.0, 60.0)
    out.append((slot is not None, wait))
    out.append(store.take_slot("budget", 1, 10.0, 60.0)[0])
    assert slot is not None
    store.finish_slot("budget", slot)
    store.delete("k")
    out.append(store.get("k"))
    return out


def check_off_loop(make: Callable[[str], StateStore]) -> None:
    sync_results = exercise(make("sync"))
    spy = ThreadSpy(make("async"))
    proxy = OffLoopStore(spy)  # type: ignore[arg-type]
    loop_thread: list[int] = []

    async def main() -> list[Any]:
        loop_thread.append(threading.get_ident())
        with Ticker() as ticker:
            results = await _green.run_sync(exercise, proxy)
            await ticker.ticks(1)
        return results

    assert run(main()) == sync_results
    assert set(spy.threads) == set(STEPS)
    for name, threads in spy.threads.items():
        assert loop_thread[0] not in threads, name
    # outside an async call the proxy is the store: the caller's own thread
    spy.threads.clear()
    proxy.get("k")
    assert spy.threads == {"get": {threading.get_ident()}}


def test_off_loop_runs_every_sqlite_step_off_the_loop_thread(tmp_path: Path) -> None:
    check_off_loop(lambda name: open_state(f"sqlite:///{tmp_path / name}.db"))


def test_off_loop_runs_every_redis_step_off_the_loop_thread(redis_url: str, redis_namespace: str) -> None:
    check_off_loop(lambda name: open_state(redis_url, namespace=f"{redis_namespace}{name}"))
