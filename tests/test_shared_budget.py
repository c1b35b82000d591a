"""Rate budgets shared by every process on one state store (issue 16, "rate budgets").

The limiter is exercised on a real SQLite file, a real redis-server and the memory store; the
cross-process tests start real processes (multiprocessing "spawn", workers in
tests/_budget_workers.py) against the sandbox. "Zero 429s" holds by the limiter's rule (a slot
counts while its request is in flight and for a window after the answer; the sandbox's window
is shorter than ours by the margin), not by timing luck: nothing here asserts a duration.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pms_integration as pms
from pms_integration._http import Runtime
from pms_integration._ratelimit import LimiterTimeout, RateLimiter, RateLimitInfo
from pms_integration._retry import deadline_scope
from pms_integration.errors import ConfigurationError
from pms_integration.sandbox import Sandbox
from pms_integration.state import StateStore, _budget, open_state
from pms_integration.state._budget import SharedRateLimiter, budget_limiter
from pms_integration.state._memory import MemoryStore

from . import _budget_workers

GIVE_UP = 30.0  # generous: conditions polled for on a busy machine


def eventually(condition: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + GIVE_UP
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.01)


def _open(url: str, namespace: str = "") -> StateStore:
    try:
        return open_state(url, namespace=namespace)
    except ConfigurationError as exc:  # the placeholder until the store lands
        pytest.skip(f"the {url.partition(':')[0]} state store is not built yet: {exc}")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for a fresh store of each kind; each test opens it as often as it needs ("processes")."""
    if request.param == "memory":
        yield "memory://?namespace=budget-test"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")
        yield f"{url}?namespace={namespace}"


def limiter_on(url: str, requests: int, per_seconds: float, budget: str = "budget:test:acct") -> SharedRateLimiter:
    return SharedRateLimiter(_open(url), budget, requests, per_seconds)


# -- the limiter on each store ----------------------------------------------------------------------


def test_slots_in_flight_count_until_released(store_url: str) -> None:
    limiter = limiter_on(store_url, 2, 0.2)
    first, second = limiter.acquire(0), limiter.acquire(0)
    # long after a window, both are still in flight: no third slot
    since = time.monotonic()
    eventually(lambda: time.monotonic() - since > 0.5, "a window to pass")
    with pytest.raises(LimiterTimeout):
        limiter.acquire(0)
    limiter.release(first)
    limiter.release(second)
    eventually(lambda: _try(limiter) is not None, "a slot once both are back and a window passed")


def _try(limiter: SharedRateLimiter) -> object:
    try:
        return limiter.acquire(0)
    except LimiterTimeout:
        return None


def test_a_finished_slot_frees_after_one_window(store_url: str) -> None:
    limiter = limiter_on(store_url, 1, 0.3)
    limiter.release(limiter.acquire(0))
    back = time.monotonic()
    with pytest.raises(LimiterTimeout) as info:
        limiter.acquire(0)
    assert 0 < info.value.wait <= 0.3 * (1 + limiter.MARGIN) + 0.05
    eventually(lambda: _try(limiter) is not None, "the slot to leave the window")
    # never before a whole window after the answer (a lower bound: a slow machine cannot break it)
    assert time.monotonic() - back >= 0.3 * 0.98


def test_a_timeout_raises_without_taking_a_slot(store_url: str) -> None:
    limiter = limiter_on(store_url, 1, 60.0)
    limiter.acquire(0)
    for timeout in (0.0, 0.05):
        with pytest.raises(LimiterTimeout):
            limiter.acquire(timeout)
    # the store holds the one slot only: a budget of 2 on the same key has exactly one to give
    store = limiter.store
    assert store.take_slot("budget:test:acct", 2, 60.0, 300.0)[0] is not None
    assert store.take_slot("budget:test:acct", 2, 60.0, 300.0)[0] is None


def test_a_second_process_view_shares_the_budget(store_url: str) -> None:
    """Two limiters on two store objects (as two processes would open them) share one budget."""
    one, other = limiter_on(store_url, 3, 60.0), limiter_on(store_url, 3, 60.0)
    one.acquire(0)
    other.acquire(0)
    one.acquire(0)
    with pytest.raises(LimiterTimeout):
        other.acquire(0)


def test_a_vendor_limit_tightens_the_budget_for_every_caller(store_url: str) -> None:
    limiter = limiter_on(store_url, 10, 60.0)
    limiter.observe(RateLimitInfo(remaining=5, limit=2, interval_seconds=60.0))
    assert limiter.rules == [(10, 60.0 * (1 + limiter.MARGIN)), (2, 60.0 * (1 + limiter.MARGIN))]
    limiter.acquire(0)
    limiter.acquire(0)
    with pytest.raises(LimiterTimeout):
        limiter.acquire(0)
    # the vendor's budget lives in the store: another process that learned it too is held as well
    other = limiter_on(store_url, 10, 60.0)
    other.observe(RateLimitInfo(remaining=5, limit=2, interval_seconds=60.0))
    with pytest.raises(LimiterTimeout):
        other.acquire(0)


def test_a_vendor_limit_the_configured_one_implies_adds_no_budget(store_url: str) -> None:
    limiter = limiter_on(store_url, 5, 1.0)
    limiter.observe(RateLimitInfo(remaining=3, limit=50, interval_seconds=1.0))
    assert [key for key, _, _ in limiter._budgets()] == ["budget:test:acct"]


def test_a_pause_holds_every_process_on_the_store(store_url: str) -> None:
    limiter, other = limiter_on(store_url, 100, 1.0), limiter_on(store_url, 100, 1.0)
    limiter.pause(30.0, "the vendor asked to wait")
    for each in (limiter, other):
        with pytest.raises(LimiterTimeout) as info:
            each.acquire(0.05)
        assert info.value.wait > 1.0
    # a fresh budget on the same store is not paused
    limiter_on(store_url, 100, 1.0, budget="budget:test:other").acquire(0)


def test_none_left_pauses_only_when_our_grants_do_not_explain_it(store_url: str) -> None:
    limiter = limiter_on(store_url, 2, 30.0)
    limiter.acquire(0)
    limiter.acquire(0)
    with pytest.raises(LimiterTimeout):
        limiter.acquire(0)  # the budget is full: our own doing
    limiter.observe(RateLimitInfo(remaining=0, limit=2, interval_seconds=30.0))
    assert limiter._paused_for(time.monotonic())[0] == 0
    quiet = limiter_on(store_url, 2, 30.0, budget="budget:test:quiet")
    quiet.observe(RateLimitInfo(remaining=0, limit=2, interval_seconds=30.0))  # someone else's requests
    with pytest.raises(LimiterTimeout) as info:
        quiet.acquire(0.05)
    assert "no quota" in str(quiet._paused_for(time.monotonic())[1])
    assert info.value.wait > 1.0


def test_the_limiter_waits_for_a_slot_and_says_why(store_url: str) -> None:
    limiter = limiter_on(store_url, 1, 0.2)
    told: list[tuple[float, str]] = []
    limiter.on_wait = lambda seconds, why: told.append((seconds, why))
    first = limiter.acquire(0)
    limiter.release(first)
    limiter.acquire(GIVE_UP)  # waits out the window
    assert len(told) == 1 and "shared rate budget" in told[0][1]


# -- outages: the process paces itself, once warned, and comes back ----------------------------------


def back_on_the_store(limiter: SharedRateLimiter) -> bool:
    limiter.release(limiter.acquire(GIVE_UP))
    return not limiter.degraded


def test_a_locked_sqlite_store_falls_back_with_one_warning_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setattr(_budget, "RETRY_STORE_EVERY", 0.0)  # every call tries the store again
    monkeypatch.setattr(_budget, "STORE_WAIT", 0.2)
    caplog.set_level(logging.WARNING, logger="pms_integration.state")
    url = f"sqlite:///{tmp_path}/state.db"
    limiter = limiter_on(url, 100, 1.0)
    limiter.release(limiter.acquire(0))
    # another process holds the write lock for longer than our deadline: a real outage
    blocker = sqlite3.connect(str(tmp_path / "state.db"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            with deadline_scope(GIVE_UP):
                slot = limiter.acquire(GIVE_UP)  # the store gives up after STORE_WAIT; the fallback serves
            limiter.release(slot)
            assert limiter.degraded
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    eventually(lambda: back_on_the_store(limiter), "the store to answer")
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert str(tmp_path) in warnings[0].getMessage()


def test_redis_stopped_mid_run_falls_back_then_comes_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from tests._redis_server import RedisServer

    monkeypatch.setattr(_budget, "RETRY_STORE_EVERY", 0.0)  # every call tries the store again
    caplog.set_level(logging.WARNING, logger="pms_integration.state")
    server = RedisServer()
    server.start()
    try:
        limiter = limiter_on(server.url.replace("redis://", "redis://:s3cret-pass@"), 100, 1.0)
        limiter.release(limiter.acquire(0))
        server.stop()
        for _ in range(3):
            with deadline_scope(GIVE_UP):
                slot = limiter.acquire(GIVE_UP)  # the process's own limiter, not a hang
            limiter.release(slot)
        assert limiter.degraded
        server.start()
        eventually(lambda: back_on_the_store(limiter), "Redis to answer")
    finally:
        server.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "does not answer" in m]) == 1, messages
    assert any("answers again" in m for m in messages)
    assert not any("s3cret-pass" in m for m in messages)


# -- wiring: which limiter a transport gets -----------------------------------------------------------


def test_a_memory_store_gives_one_limiter_per_account_clock_and_sleep() -> None:
    store = MemoryStore()
    a = budget_limiter(store, "budget:x:acct", 5, 1.0)
    assert isinstance(a, RateLimiter) and budget_limiter(store, "budget:x:acct", 5, 1.0) is a
    assert budget_limiter(store, "budget:x:other", 5, 1.0) is not a
    assert budget_limiter(store, "budget:x:acct", 5, 1.0, clock=lambda: 0.0) is not a


def test_clients_get_the_account_budget_from_their_store(sb: Sandbox, tmp_path: Path) -> None:
    environ = {**sb.environ(), "PMS_GHL_RATE_LIMIT": "10/1", "PMS_HUBSPOT_RATE_LIMIT": "100/10"}
    with pms.PMSClient(environ=environ, env_file=None) as one, pms.PMSClient(environ=environ, env_file=None) as two:
        limiters = [c.adapter("gohighlevel").transport.limiter for c in (one, two)]
        assert isinstance(limiters[0], RateLimiter) and limiters[0] is limiters[1]
    url = f"sqlite:///{tmp_path}/state.db"
    with pms.PMSClient(environ=environ, env_file=None, state=url) as shared:
        limiter = shared.adapter("gohighlevel").transport.limiter
        assert isinstance(limiter, SharedRateLimiter)
        assert limiter.budget.startswith("budget:gohighlevel:http://127.0.0.1:")
        search = shared.adapter("hubspot").search_limiter
        assert isinstance(search, SharedRateLimiter) and search.budget.endswith(":search")
        assert (search.requests, search.per_seconds) == (5, 1.0)


def test_a_runtime_without_a_store_uses_the_process_memory_store() -> None:
    runtime = Runtime()
    assert runtime.budget("budget:x:a", 5, 1.0, stale=60.0) is Runtime().budget("budget:x:a", 5, 1.0, stale=60.0)


# -- against the sandbox: one process with two clients, four processes --------------------------------


def _booked(sb: Sandbox) -> str:
    """One appointment to read, booked before any limit is set."""
    sb.emulator("ghl").open_hours = None  # type: ignore[attr-defined]
    environ = {**sb.environ(), "PMS_GHL_RATE_LIMIT": "off"}
    with pms.PMSClient(environ=environ, env_file=None) as client:
        start = dt.datetime(2027, 5, 3, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
        appointment = client.book_appointment(
            {
                "start": start.isoformat(),
                "duration_minutes": 30,
                "timezone": "America/New_York",
                "title": "Cleaning",
                "patient": {"name": "Budget Test", "email": "budget@example.com", "phone": "+15550001111"},
                "reference": "budget-0001",
            },
            provider="gohighlevel",
        )
    return appointment.id


def test_two_clients_in_one_process_share_the_account_budget(sb: Sandbox) -> None:
    appointment = _booked(sb)
    sb.set_rate_limit("gohighlevel", 5, 1.0)  # each client alone keeps to it; both together would not
    environ = {**sb.environ(), "PMS_GHL_RATE_LIMIT": "5/1"}
    before = sb.request_count("gohighlevel")
    one, two = (pms.PMSClient(environ=environ, env_file=None) for _ in range(2))
    with one, two, ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: (one if i % 2 else two).get_appointment(appointment, provider="gohighlevel"), range(16)))
    assert sb.request_count("gohighlevel") - before == 16
    assert sb.request_count("gohighlevel", status=429) == 0 and sb.rate_limited == 0


def run_workers(
    sb: Sandbox, state: str, tmp_path: Path, *, limit: int, workers: int = 4, threads: int = 2, **load: Any
) -> tuple[list[dict[str, Any]], int]:
    """``workers`` real processes reading one appointment through ``state``'s shared budget:
    what each saw, and how many requests the sandbox received from them."""
    appointment = _booked(sb)
    sb.set_rate_limit("gohighlevel", limit, 1.0)
    before = sb.request_count("gohighlevel")
    spec = {
        "environ": {**sb.environ(), "PMS_GHL_RATE_LIMIT": f"{limit}/1"},
        "state": state,
        "appointment": appointment,
        "provider": "gohighlevel",
        "threads": threads,
        **load,
    }
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(workers)
    outs = [str(tmp_path / f"worker-{n}.json") for n in range(workers)]
    procs = [context.Process(target=_budget_workers.read_many, args=(spec, ready, out)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
        assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"
    return [json.loads(Path(out).read_text()) for out in outs], sb.request_count("gohighlevel") - before


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_four_processes_share_one_budget_and_see_no_429(
    kind: str, sb: Sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        state = f"sqlite:///{tmp_path}/state.db"
    else:
        state = f"{request.getfixturevalue('redis_url')}?namespace={request.getfixturevalue('redis_namespace')}"
    _open(state).close()  # skips while the store is a placeholder
    results, sent = run_workers(sb, state, tmp_path, limit=10, requests=6)
    outcomes: dict[str, int] = {}
    for result in results:
        for name, n in result["outcomes"].items():
            outcomes[name] = outcomes.get(name, 0) + n
    # each process alone would send 10 in its first second; four together would send 40
    assert outcomes == {"ok": 4 * 2 * 6}, [r["problems"] for r in results]
    assert sent == 4 * 2 * 6
    assert sb.request_count("gohighlevel", status=429) == 0 and sb.rate_limited == 0
