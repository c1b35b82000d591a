"""The Redis state store on a real ``redis-server``: outages, passwords, TLS URLs, forks.

The store's semantics (the same as memory:// and sqlite://) are checked by the conformance
suite in tests/test_state_stores.py; this file covers what only Redis has: a server that stops
mid-run (killed, or frozen so it accepts but never answers), a password that must never show,
the ``rediss://`` scheme, the missing-client message and a pool reused after ``fork``.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pms_integration as pms
from pms_integration._retry import RetryPolicy, deadline_scope
from pms_integration.errors import ConfigurationError, StateStoreError
from pms_integration.sandbox import Sandbox
from pms_integration.state import check_state, open_state

from ._redis_server import REQUIRE_REDIS, SKIP_REASON, RedisServer

# read now: the autouse fixture clears PMS_* variables before each test runs
REQUIRED = os.environ.get(REQUIRE_REDIS) == "1"
START = dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
FAST_RETRIES = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.05, jitter=0.01)
PASSWORD = "s3cret-redis-pw-4711"
GIVE_UP = 120.0  # a watchdog's generous give-up: only a hang comes anywhere near it


@pytest.fixture
def server(redis_url: str) -> Iterator[RedisServer]:
    """A redis-server of this test's own (stopped and restarted by the test)."""
    own = RedisServer()
    if not own.available:
        if REQUIRED:
            pytest.fail(f"{REQUIRE_REDIS}=1 but {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    try:
        yield own.start()
    finally:
        own.close()


def _request(i: int) -> dict[str, Any]:
    return {
        "start": (START + dt.timedelta(minutes=30 * (i % 10))).isoformat(),  # in opening hours
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": {"name": f"Patient {i}", "email": f"redis{i}@example.com", "phone": f"+1555{i:07d}"},
        "reference": f"redis-{i:04d}",
    }


def _client(sb: Sandbox, state: str) -> pms.PMSClient:
    environ = sb.environ(default_provider="gohighlevel")
    environ["PMS_GHL_RATE_LIMIT"] = "off"
    environ["PMS_DEADLINE_MS"] = "2000"
    return pms.PMSClient(environ=environ, env_file=None, retry_policy=FAST_RETRIES, state=state)


def _creates(sb: Sandbox) -> int:
    """Appointment creates the sandbox received, and bookings it holds (they must agree)."""
    sent = sum(1 for r in sb.records if r.operation == "appointments.create")
    assert len(sb.state("gohighlevel")["bookings"]) == sent
    return sent


def _within_deadline(call: Callable[[], Any]) -> BaseException | Any:
    """Run ``call`` on a watchdog thread: its result or exception, failing if it hangs."""
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(GIVE_UP), "the call hung past its deadline"
    return outcome[0]


def _fails_closed(outcome: Any) -> StateStoreError:
    assert isinstance(outcome, StateStoreError), f"expected StateStoreError, got {outcome!r}"
    assert outcome.code == "STATE_UNAVAILABLE"
    assert "nothing was sent to the vendor" in str(outcome)
    return outcome


# -- one pool for threads, a fresh one after fork (first: no sandbox threads running yet) --------


def test_threads_share_one_budget_and_one_lock(redis_url: str, redis_namespace: str) -> None:
    store = open_state(redis_url, namespace=redis_namespace)
    granted: list[str] = []
    holders: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait(GIVE_UP)
        slot, _ = store.take_slot("shared", 5, 60.0, 60.0)
        claim = store.claim("one-key", 60.0, 60.0)
        with lock:
            if slot is not None:
                granted.append(slot)
            if claim.held:
                holders.append(claim.token or 0)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GIVE_UP)
    assert len(granted) == 5 and len(set(granted)) == 5
    assert holders == [1]


def _child_uses_store(store: Any, queue: Any) -> None:
    store.put("from-child", str(os.getpid()), 60.0)
    queue.put(store.get("from-parent"))


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX-only")
def test_a_forked_child_gets_its_own_connections(redis_url: str, redis_namespace: str) -> None:
    store = open_state(redis_url, namespace=redis_namespace)
    store.put("from-parent", "hello", 60.0)  # the parent's pool now holds an open connection
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_uses_store, args=(store, queue))
    child.start()
    assert queue.get(timeout=GIVE_UP) == "hello"
    child.join(GIVE_UP)
    assert child.exitcode == 0
    assert store.get("from-child") == str(child.pid)
    assert store.get("from-parent") == "hello"  # the parent's own connection still works


# -- Redis stopped mid-run --------------------------------------------------------------------


def test_redis_killed_mid_run_fails_closed_and_resumes_when_back(server: RedisServer, sb: Sandbox) -> None:
    client = _client(sb, server.url)
    first = [client.book_appointment(_request(i)) for i in range(3)]
    assert _creates(sb) == 3
    assert client.book_appointment(_request(0)).id == first[0].id  # remembered: no second create
    assert _creates(sb) == 3

    server.stop()
    for i in (0, 3, 4, 5):  # one already booked, three new
        error = _fails_closed(_within_deadline(lambda i=i: client.book_appointment(_request(i))))
        assert error.store == server.url
    assert _creates(sb) == 3, "a booking was sent while the state store was down"

    # Redis back on the same port (empty: this server keeps nothing on disk; see docs/deployment.md)
    again = RedisServer(port=server.port).start()
    try:
        later = [client.book_appointment(_request(i)) for i in (3, 4, 5)]
        assert _creates(sb) == 6
        assert [client.book_appointment(_request(i)).id for i in (3, 4, 5)] == [a.id for a in later]
        assert _creates(sb) == 6
        assert "reachable and writable" in str(client.check_state())
    finally:
        again.close()


def test_redis_frozen_mid_run_gives_up_within_the_deadline(server: RedisServer, sb: Sandbox) -> None:
    """A server that accepts connections but never answers (SIGSTOP): no hang, nothing sent."""
    client = _client(sb, server.url)
    first = client.book_appointment(_request(10))
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        for i in (10, 11):
            _fails_closed(_within_deadline(lambda i=i: client.book_appointment(_request(i))))
        assert _creates(sb) == 1
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert client.book_appointment(_request(11)).reference == "redis-0011"
    assert client.book_appointment(_request(10)).id == first.id  # remembered across the freeze
    assert _creates(sb) == 2


def test_redis_dying_during_the_create_returns_the_appointment(
    server: RedisServer, sb: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis dies while the vendor is creating: the booking was made, so it is returned (the
    failure to record it is logged), and the next attempt fails closed instead of re-creating."""
    client = _client(sb, server.url)
    dispatch = sb._dispatch

    def kill_redis_on_create(method: str, target: str, headers: Any, body: bytes) -> Any:
        if method == "POST" and "/appointments" in target:
            server.stop()
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(sb, "_dispatch", kill_redis_on_create)
    caplog.set_level(logging.ERROR, logger="pms_integration")
    made = client.book_appointment(_request(20))
    assert made.reference == "redis-0020"
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)
    _fails_closed(_within_deadline(lambda: client.book_appointment(_request(20))))
    assert _creates(sb) == 1


# -- passwords, URLs, the client library ------------------------------------------------------


def test_password_never_shown_and_a_wrong_one_is_a_state_store_error(
    server: RedisServer, sb: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    caplog.set_level(logging.DEBUG)
    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("requirepass", PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    store = open_state(url, namespace="pw")
    seen = [store.url, repr(store), str(check_state(store))]

    wrong = open_state(f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0")
    error = _within_deadline(lambda: wrong.get("anything"))
    assert isinstance(error, StateStoreError) and error.code == "STATE_UNAVAILABLE"
    seen += [wrong.url, repr(wrong), str(error), repr(error), str(error.store)]

    client = _client(sb, url)
    client.book_appointment(_request(30))
    seen += [repr(client), repr(client.state), repr(client.memory), repr(client.token_store)]
    seen += [repr(_client(sb, f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0").state)]
    bad = _fails_closed(_within_deadline(lambda: _client(sb, f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0")
                                          .book_appointment(_request(31))))  # fmt: skip
    seen += [str(bad), repr(bad)]
    # redis-py also takes the password as an option of the URL: it is masked there too
    in_query = f"redis://127.0.0.1:{server.port}/0?password={PASSWORD}"
    seen += [open_state(in_query, namespace="pwq").url, str(check_state(open_state(in_query, namespace="pwq")))]
    query_client = _client(sb, in_query)
    query_client.book_appointment(_request(33))
    seen += [repr(query_client), repr(query_client.state), str(query_client.check_state())]

    server.stop()
    seen += [str(_fails_closed(_within_deadline(lambda: query_client.book_appointment(_request(34)))))]
    down = _fails_closed(_within_deadline(lambda: client.book_appointment(_request(32))))
    seen += [str(down), repr(down), down.store or ""]
    seen += [r.getMessage() for r in caplog.records]
    assert store.url == f"redis://:***@127.0.0.1:{server.port}/0"
    leaks = [text for text in seen if PASSWORD in text]
    assert leaks == []
    assert _creates(sb) == 2


def test_rediss_urls_are_accepted_and_bad_urls_are_configuration_errors() -> None:
    redis = pytest.importorskip("redis")
    store = open_state(f"rediss://:{PASSWORD}@cache.example.com:6380/2?namespace=practice-7")
    assert store.kind == "redis"
    assert store.url == "rediss://:***@cache.example.com:6380/2"
    assert store.namespace == "practice-7"
    assert issubclass(store._pool.connection_class, redis.SSLConnection)  # type: ignore[attr-defined]
    assert PASSWORD not in repr(store)
    for bad in (
        f"redis://:{PASSWORD}@host:port/0",
        f"redis://:{PASSWORD}@host:6379/not-a-db",
        f"redis://:{PASSWORD}@host:6379/0?no_such_option=1",
    ):
        with pytest.raises(ConfigurationError) as caught:
            open_state(bad)
        assert PASSWORD not in str(caught.value)
        assert PASSWORD not in repr(caught.value)


def test_without_the_redis_client_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'pms-integration\[redis\]'"):
        open_state("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match=r"pms-integration\[redis\]"):
        pms.PMSClient(environ={}, env_file=None, state="redis://127.0.0.1:6379/0")


def test_a_deadline_already_spent_is_refused_without_asking(redis_url: str, redis_namespace: str) -> None:
    store = open_state(redis_url, namespace=redis_namespace)
    store.put("k", "v", 60.0)
    with deadline_scope(0.0), pytest.raises(StateStoreError, match="deadline"):
        store.get("k")
    assert store.get("k") == "v"
