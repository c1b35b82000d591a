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
    """A task that ticks on the loop; ``await ticker.ticks(n)`` returns once n more went by."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def _run(self) -> None:
        while True:
            # a short timed sleep, not sleep(0): a loop that never waits in select() holds the GIL
            # almost all the time, and worker threads (the SQLite store's steps) then crawl - under
            # a busy CI machine past the store's 5 s lock wait
            await asyncio.sleep(0.0005)
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


# -- _green.Lock held across an awaited wait -------------------------------------------------------


def test_many_async_calls_contending_for_a_lock_held_across_a_wait_all_finish() -> None:
    lock = _green.Lock()
    inside: list[int] = []
    order: list[tuple[str, int]] = []

    def section(n: int, event: asyncio.Event | None) -> int:
        with lock:
            inside.append(n)
            assert len(inside) == 1, "two callers inside the lock at once"
            order.append(("in", n))
            if event is not None:
                wait_event(event)  # held across an awaited wait (I/O, say)
            else:
                _green.sleep(0)  # the others also give the loop a turn while holding it
            order.append(("out", n))
            inside.remove(n)
        return n

    async def main() -> list[int]:
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        holder = loop.create_task(_green.run_sync(section, 0, release))
        with Ticker() as ticker:
            while not lock.locked():
                await ticker.ticks(1)
            waiters = [loop.create_task(_green.run_sync(section, n, None)) for n in range(1, 21)]
            # the holder is parked on the event, twenty callers want the lock: the loop still runs
            await ticker.ticks(50)
            assert order == [("in", 0)] and not any(w.done() for w in waiters)
            release.set()
            done = await asyncio.gather(holder, *waiters)
        return done

    assert sorted(run(main())) == list(range(21))
    assert len(order) == 42 and order[:2] == [("in", 0), ("out", 0)]
    assert all(order[i][1] == order[i + 1][1] for i in range(0, 42, 2))


def test_a_thread_and_async_calls_share_one_lock() -> None:
    lock = _green.Lock()
    taken, leave = threading.Event(), threading.Event()
    entered: list[str] = []

    def thread_holder() -> None:
        with lock:
            taken.set()
            leave.wait(HANG)
            entered.append("thread")

    def section() -> None:
        with lock:
            entered.append("async")

    worker = threading.Thread(target=thread_holder)
    worker.start()
    assert taken.wait(HANG)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(_green.run_sync(section))
        with Ticker() as ticker:
            await ticker.ticks(20)
            assert not task.done()
            leave.set()
            await task

    try:
        run(main())
    finally:
        leave.set()
        worker.join(HANG)
    assert entered == ["thread", "async"]


def test_a_lock_acquire_with_a_timeout_gives_up_inside_an_async_call() -> None:
    lock = _green.Lock()
    assert lock.acquire()

    def tries() -> tuple[bool, bool]:
        return lock.acquire(blocking=False), lock.acquire(timeout=0.01)

    assert run(_green.run_sync(tries)) == (False, False)
    lock.release()


# -- the rate limiter --------------------------------------------------------------------------------


def test_a_limiter_with_every_slot_in_flight_lets_the_loop_run_and_grants_on_release() -> None:
    from pms_integration._ratelimit import RateLimiter

    now = [0.0]
    slept: list[float] = []
    limiter = RateLimiter(2, 1.0, clock=lambda: now[0], sleep=slept.append)
    in_flight = [limiter.acquire(), limiter.acquire()]

    async def main() -> float:
        task = asyncio.get_running_loop().create_task(_green.run_sync(limiter.acquire))
        with Ticker() as ticker:
            await ticker.ticks(50)  # both requests still out: the caller waits, the loop runs
            assert not task.done()
            now[0] = 100.0
            limiter.release(in_flight[0])  # back at 100: its slot frees one window later
            slot = await task
        return slot.granted

    granted = run(main())
    assert granted == pytest.approx(100.0 + 1.0 * (1 + RateLimiter.MARGIN))
    assert slept == [pytest.approx(1.0 * (1 + RateLimiter.MARGIN))]  # the injected sleep, once


def test_a_limiters_real_time_sleep_is_awaited_inside_an_async_call() -> None:
    from pms_integration._ratelimit import RateLimiter

    limiter = RateLimiter(1, 0.05)
    limiter.release(limiter.acquire())  # the next slot is up to a window away

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(_green.run_sync(limiter.acquire))
        with Ticker() as ticker:
            while not task.done():
                await ticker.ticks(1)
            assert ticker.count >= 1
        limiter.release(task.result())

    run(main())


def test_a_shared_budget_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    from pms_integration.state._budget import SharedRateLimiter

    store = open_state(f"sqlite:///{tmp_path / 'budget.db'}")
    limiter = SharedRateLimiter(store, "budget:test:green", 1, 0.05)
    first = limiter.acquire()
    loop_thread = threading.get_ident()
    steps_on: set[int] = set()
    take_slot = store.take_slot

    def spied(*args: Any) -> tuple[str | None, float]:
        steps_on.add(threading.get_ident())
        return take_slot(*args)

    store.take_slot = spied  # type: ignore[method-assign]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # three async callers queue for the one in-process turn while the slot is in flight
        tasks = [loop.create_task(_green.run_sync(limiter.acquire)) for _ in range(3)]
        with Ticker() as ticker:
            while not steps_on:
                await ticker.ticks(1)
            await ticker.ticks(20)
            assert not any(t.done() for t in tasks)
            limiter.release(first)
            for task in tasks:
                limiter.release(await task)  # each is granted in turn, a window after the last

    run(main())
    assert steps_on and loop_thread not in steps_on


# -- the booking memory ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def booking_store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "memory":
        from pms_integration.state._memory import MemoryStore

        return MemoryStore()
    if request.param == "sqlite":
        return off_loop(open_state(f"sqlite:///{tmp_path / 'bookings.db'}"))
    url = request.getfixturevalue("redis_url")
    return off_loop(open_state(url, namespace=request.getfixturevalue("redis_namespace")))


def test_async_bookings_of_one_reference_wait_without_blocking_the_loop_and_create_once(
    booking_store: StateStore,
) -> None:
    import datetime as dt

    from pms_integration._once import BookingMemory
    from pms_integration.models import Appointment, AppointmentRequest, AppointmentStatus, Patient, ProviderName

    start = dt.datetime(2031, 1, 6, 9, tzinfo=dt.timezone.utc)
    request = AppointmentRequest(patient=Patient(email="ada@example.com"), start=start, reference="green-1")
    key = (ProviderName.HUBSPOT, "https://api.hubapi.com|pipeline", "green-1")
    # two memories on one store, as two processes would have: waiters queue on the per-reference
    # lock within a memory and on the store's claim across the two
    memories = [BookingMemory(store=booking_store), BookingMemory(store=booking_store)]
    created: list[str] = []

    def book(memory: BookingMemory, release: asyncio.Event) -> Appointment:
        def create() -> Appointment:
            created.append("create")
            wait_event(release)  # the vendor's answer is on its way
            return Appointment(ProviderName.HUBSPOT, "m-1", AppointmentStatus.BOOKED, request.start, request.end)

        with deadline_scope(HANG):
            return memory.book(key, request, create, lambda: None)

    async def main() -> list[Appointment]:
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        first = loop.create_task(_green.run_sync(book, memories[0], release))
        with Ticker() as ticker:
            while not created:
                await ticker.ticks(1)
            others = [loop.create_task(_green.run_sync(book, memories[n % 2], release)) for n in range(1, 7)]
            await ticker.ticks(100)  # six callers wait for the reference; the loop keeps running
            assert created == ["create"] and not any(t.done() for t in others)
            release.set()
            return await asyncio.gather(first, *others)

    booked = run(main())
    assert created == ["create"]
    assert {(a.id, a.status) for a in booked} == {("m-1", AppointmentStatus.BOOKED)}


def test_a_release_from_another_thread_wakes_async_callers_waiting_for_a_slot() -> None:
    from pms_integration._ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(1, 1.0, clock=lambda: now[0], sleep=lambda seconds: None)
    out = limiter.acquire()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(_green.run_sync(limiter.acquire)) for _ in range(20)]
        with Ticker() as ticker:
            while len(limiter._woken) < 20:  # every caller is parked on its future
                await ticker.ticks(1)
            now[0] = 100.0  # all later slots are due at once on the test's clock
            releaser = threading.Thread(target=limiter.release, args=(out,))
            releaser.start()
            granted = 0
            for next_done in asyncio.as_completed(tasks):
                slot = await next_done
                granted += 1
                now[0] += 10.0
                limiter.release(slot)
            releaser.join(HANG)
        assert not limiter._woken
        return granted

    assert run(main()) == 20


def test_a_cancelled_wait_for_a_slot_leaves_no_waiter_and_takes_no_slot() -> None:
    from pms_integration._ratelimit import RateLimiter

    limiter = RateLimiter(1, 1.0, clock=lambda: 0.0, sleep=lambda seconds: None)
    limiter.acquire()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(_green.run_sync(limiter.acquire))
        with Ticker() as ticker:
            while not limiter._woken:
                await ticker.ticks(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert not limiter._woken and len(limiter._slots) == 1


# -- state.hold --------------------------------------------------------------------------------------


def test_state_hold_waits_for_another_holder_without_blocking_the_loop(tmp_path: Path) -> None:
    from pms_integration.state import hold

    store = open_state(f"sqlite:///{tmp_path / 'hold.db'}")
    other = store.claim("refresh", 60.0, 60.0)  # another process holds the key
    assert other.held
    entered: list[str] = []

    def refresh() -> None:
        with hold(off_loop(store), "refresh", lease=30.0, wait=HANG, what="a refresh"):
            entered.append("in")

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(_green.run_sync(refresh))
        with Ticker() as ticker:
            await ticker.ticks(50)
            assert not entered
            store.settle(other, None, False, 60.0)  # the other process is done
            await task

    run(main())
    assert entered == ["in"]


def test_the_shared_budgets_turn_wakes_its_waiters_one_by_one_and_hands_on_a_cancelled_wake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pms_integration.state import _budget
    from pms_integration.state._budget import _Turn

    monkeypatch.setattr(_budget, "LOOK_AGAIN", 10 * HANG)  # only a wake can move a waiter on
    turn = _Turn()
    order: list[int] = []

    def take(n: int) -> None:
        assert turn.acquire()
        try:
            order.append(n)
            _green.sleep(0)  # holds the turn across an awaited wait
        finally:
            turn.release()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert turn.acquire()  # the test holds the turn (the loop's own thread: it is free)
        with Ticker() as ticker:
            waiters = [loop.create_task(_green.run_sync(take, n)) for n in range(1, 31)]
            while len(turn._woken) < 30:
                await ticker.ticks(1)
            await ticker.ticks(50)  # thirty callers parked: the loop runs, nobody has the turn
            assert order == []
            # the first in line is woken, then cancelled before it runs: it hands the wake on
            turn.release()
            waiters[0].cancel()
            await asyncio.gather(*waiters[1:])
            with pytest.raises(asyncio.CancelledError):
                await waiters[0]
        assert not turn.locked() and not turn._woken

    run(main())
    assert sorted(order) == list(range(2, 31))


def test_the_shared_budgets_turn_is_shared_by_a_thread_and_gives_up_on_time() -> None:
    from pms_integration.state._budget import _Turn

    turn = _Turn()
    assert turn.acquire()
    assert run(_green.run_sync(turn.acquire, 0.01)) is False
    assert turn.acquire(0) is False
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(turn.acquire(HANG)))
    waiter.start()
    turn.release()
    waiter.join(HANG)
    assert got == [True] and turn.locked()
    turn.release()


def test_a_caller_cancelled_while_it_waits_for_its_turn_gives_its_slot_back() -> None:
    """A slot is reserved before its wait: a caller cancelled during that wait never sends, so the
    slot must not stay 'in flight' (it would block the vendor for every caller until STALE_AFTER)."""
    import contextlib

    from pms_integration._ratelimit import RateLimiter

    now = [0.0]
    parked = threading.Event()

    def sleep(seconds: float) -> None:  # the wait for the slot's time, parked until cancelled
        parked.set()
        _green.await_only(asyncio.get_running_loop().create_future())

    limiter = RateLimiter(1, 1.0, clock=lambda: now[0], sleep=sleep)
    limiter.release(limiter.acquire())  # the next slot is a window away: its caller must wait

    async def main() -> None:
        waiter = asyncio.get_running_loop().create_task(_green.run_sync(limiter.acquire))
        while not parked.is_set():
            await asyncio.sleep(0.001)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter

    run(main())
    assert all(slot.done is not None for slot in limiter._slots)
    now[0] = 10.0  # windows later: the next caller goes at once (a leaked slot would hold it)
    limiter.release(limiter.acquire(timeout=0.5))
