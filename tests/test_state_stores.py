"""One conformance suite for the three state stores (memory, SQLite, Redis), then what only the
SQLite store must show: real processes and threads sharing one file, and unusable files.

Every store is real: a SQLite file in tmp_path, a real redis-server (the ``redis_url`` fixture).
Short TTLs are waited out by polling a condition, never by asserting on elapsed time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pms_integration._retry import deadline_scope
from pms_integration.errors import ConfigurationError, StateStoreError
from pms_integration.state import (
    PENDING,
    StateCheck,
    StateStore,
    StoreTokens,
    check_state,
    hold,
    open_state,
)
from pms_integration.state._memory import MemoryStore
from pms_integration.state._sqlite import SQLiteStore
from tests import _sqlite_workers

GIVE_UP = 30.0  # seconds a poll waits for its condition before the test fails

MakeStore = Callable[[str], StateStore]


def eventually(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` until it is true (a generous give-up, not a timing assertion)."""
    give_up = time.monotonic() + GIVE_UP
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens stores of one kind on one backing (one SQLite file, one Redis server); the argument
    is a namespace suffix (memory stores are separate objects: nothing to share)."""
    opened: list[StateStore] = []

    def make(suffix: str = "") -> StateStore:
        if request.param == "memory":
            return MemoryStore(namespace=suffix)
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / "state.db", namespace=suffix)
            opened.append(store)
            return store
        url, namespace = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_namespace")
        try:
            return open_state(url, namespace=namespace + suffix)
        except ConfigurationError as exc:
            if "not built" in str(exc):
                pytest.skip(f"the Redis store is not built yet ({exc})")
            raise

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> StateStore:
    return make_store("")


# -- values ---------------------------------------------------------------------------------------


def test_values_round_trip(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert store.get("a") is None
    store.put("a", "one", None)
    store.put("b", "två ✓", 600.0)
    assert (store.get("a"), store.get("b")) == ("one", "två ✓")
    store.put("a", "two", None)
    assert store.get("a") == "two"
    store.delete("a")
    store.delete("never-there")
    assert (store.get("a"), store.get("b")) == (None, "två ✓")


def test_values_expire(store: StateStore) -> None:
    store.put("short", "x", 0.2)
    store.put("long", "y", 600.0)
    eventually(lambda: store.get("short") is None, "a 0.2 s value to expire")
    assert store.get("long") == "y"
    store.put("short", "again", None)  # an expired key can be written afresh
    assert store.get("short") == "again"


# -- claims ---------------------------------------------------------------------------------------


def test_claim_gives_the_lock_then_busy_then_result(store: StateStore) -> None:
    first = store.claim("ref", 60.0, 600.0)
    assert first.held and first.token is not None and not first.pending and first.result is None
    busy = store.claim("ref", 60.0, 600.0)
    assert not busy.held and busy.result is None and 0 < busy.busy_for <= 60.0
    assert store.settle(first, None, False, 600.0)  # released, nothing stored
    second = store.claim("ref", 60.0, 600.0)
    assert second.held and second.token is not None and second.token > first.token
    assert store.settle(second, "booked", False, 600.0)
    done = store.claim("ref", 60.0, 600.0)
    assert (done.result, done.held, done.pending) == ("booked", False, False)
    assert store.get("ref") == "booked"


def test_tokens_keep_increasing(store: StateStore) -> None:
    tokens = []
    for _ in range(5):
        claim = store.claim("ref", 60.0, 600.0)
        assert claim.token is not None
        tokens.append(claim.token)
        assert store.settle(claim, None, False, 600.0)
    assert tokens == sorted(set(tokens))


def test_mark_sets_pending_while_the_lease_lives(store: StateStore) -> None:
    claim = store.claim("ref", 60.0, 600.0)
    assert store.mark(claim, 600.0)
    assert store.get("ref" + PENDING) is not None
    assert store.settle(claim, None, True, 600.0)  # outcome unknown: stays pending
    again = store.claim("ref", 60.0, 600.0)
    assert again.held and again.pending
    assert store.settle(again, "found it", False, 600.0)
    assert store.get("ref" + PENDING) is None and store.get("ref") == "found it"


def test_mark_fails_once_the_lease_expired(store: StateStore) -> None:
    claim = store.claim("ref", 0.3, 600.0)
    eventually(lambda: not store.mark(claim, 600.0), "the 0.3 s lease to expire")
    assert not store.mark(claim, 600.0)
    # nobody claimed since: the late holder may still settle (fencing, not the lease, decides)
    assert store.settle(claim, None, True, 600.0)
    assert store.claim("ref", 60.0, 600.0).pending


def test_mark_and_settle_are_fenced_against_a_later_claim(store: StateStore) -> None:
    late = store.claim("ref", 0.3, 600.0)
    eventually(lambda: store.claim("ref", 60.0, 600.0).held, "the 0.3 s lease to expire")
    newer = store.claim("ref", 60.0, 600.0)
    assert not newer.held and newer.busy_for > 0  # the claim taken in the poll holds it
    assert not store.mark(late, 600.0)
    assert not store.settle(late, "late result", False, 600.0)
    assert store.get("ref") is None
    assert not store.claim("ref", 60.0, 600.0).held  # the newer holder's lock was not released


def test_a_refused_settle_changes_nothing(store: StateStore) -> None:
    late = store.claim("ref", 0.3, 600.0)
    holder = None

    def take_over() -> bool:
        nonlocal holder
        holder = store.claim("ref", 60.0, 600.0)
        return holder.held

    eventually(take_over, "the 0.3 s lease to expire")
    assert holder is not None and holder.token is not None and late.token is not None
    assert holder.token > late.token
    assert store.mark(holder, 600.0)
    assert not store.settle(late, None, False, 600.0)  # would clear the pending mark
    assert store.get("ref" + PENDING) is not None
    assert store.settle(holder, "mine", False, 600.0)
    assert store.get("ref") == "mine" and store.get("ref" + PENDING) is None


def test_pending_survives_a_holder_that_never_settles(store: StateStore) -> None:
    crashed = store.claim("ref", 0.3, 600.0)
    assert store.mark(crashed, 600.0)  # then the holder dies before the create returns
    found = None

    def next_attempt() -> bool:
        nonlocal found
        found = store.claim("ref", 60.0, 600.0)
        return found.held

    eventually(next_attempt, "the crashed holder's lease to expire")
    assert found is not None and found.pending
    assert store.settle(found, "recovered", False, 600.0)
    assert store.claim("ref", 60.0, 600.0).result == "recovered"


def test_an_unheld_claim_is_refused(store: StateStore) -> None:
    store.put("ref", "done", 600.0)
    replay = store.claim("ref", 60.0, 600.0)
    assert replay.result == "done"
    assert not store.mark(replay, 600.0)
    assert not store.settle(replay, "other", False, 600.0)
    assert store.get("ref") == "done"


# -- budgets --------------------------------------------------------------------------------------


def test_take_slot_never_grants_more_than_the_limit(store: StateStore) -> None:
    slots = [store.take_slot("acct", 3, 0.5, 600.0) for _ in range(3)]
    assert all(slot is not None and wait == 0.0 for slot, wait in slots)
    assert len({slot for slot, _ in slots}) == 3
    for _ in range(10):
        slot, wait = store.take_slot("acct", 3, 0.5, 600.0)
        assert slot is None and 0 < wait <= 600.5
    assert store.take_slot("other", 1, 0.5, 600.0)[0] is not None  # budgets are separate


def test_finish_slot_frees_the_slot_after_a_window(store: StateStore) -> None:
    first, _ = store.take_slot("acct", 2, 0.2, 600.0)
    second, _ = store.take_slot("acct", 2, 0.2, 600.0)
    assert first is not None and second is not None
    assert store.take_slot("acct", 2, 0.2, 600.0)[0] is None
    store.finish_slot("acct", first)
    store.finish_slot("acct", "no-such-slot")  # ignored
    granted: list[str] = []

    def retake() -> bool:
        slot, _ = store.take_slot("acct", 2, 0.2, 600.0)
        if slot is not None:
            granted.append(slot)
        return bool(granted)

    eventually(retake, "a finished slot to leave its window")
    # `second` is still in flight and the new slot counts: full again
    assert store.take_slot("acct", 2, 0.2, 600.0)[0] is None


def test_an_unfinished_slot_counts_until_stale(store: StateStore) -> None:
    assert store.take_slot("acct", 1, 0.1, 0.2)[0] is not None
    eventually(lambda: store.take_slot("acct", 1, 0.1, 0.2)[0] is not None, "a stale slot to stop counting")


# -- namespaces, and what the library builds on the steps -----------------------------------------


def test_namespaces_are_isolated(make_store: MakeStore) -> None:
    a, b = make_store("a"), make_store("b")
    a.put("k", "from a", None)
    assert b.get("k") is None
    assert a.claim("ref", 60.0, 600.0).held and b.claim("ref", 60.0, 600.0).held
    assert a.take_slot("acct", 1, 1.0, 600.0)[0] is not None
    assert b.take_slot("acct", 1, 1.0, 600.0)[0] is not None
    b.delete("k")
    assert a.get("k") == "from a"


def test_stores_naming_one_namespace_share_it(make_store: MakeStore, store: StateStore) -> None:
    if store.kind == "memory":
        pytest.skip("two memory stores are two separate memories (open_state shares the default one)")
    twin = make_store("")
    store.put("k", "v", None)
    assert twin.get("k") == "v"
    claim = store.claim("ref", 60.0, 600.0)
    assert not twin.claim("ref", 60.0, 600.0).held
    assert store.settle(claim, "r", False, 600.0)
    assert twin.claim("ref", 60.0, 600.0).result == "r"


def test_hold_is_one_holder_at_a_time(store: StateStore) -> None:
    with hold(store, "refresh", lease=60.0, wait=5.0, what="the token refresh") as first:
        assert first.held
        again = hold(store, "refresh", lease=60.0, wait=0.0, what="the token refresh")
        with pytest.raises(StateStoreError) as busy, again:
            pass
        assert busy.value.code == "STATE_LOCK_BUSY" and "the token refresh" in str(busy.value)
    with hold(store, "refresh", lease=60.0, wait=0.0, what="the token refresh") as second:
        assert second.token is not None and first.token is not None and second.token > first.token


def test_hold_waits_for_the_holder_in_another_thread(store: StateStore) -> None:
    inside, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with hold(store, "job", lease=60.0, wait=5.0, what="the job"):
            inside.set()
            leave.wait(GIVE_UP)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(GIVE_UP)
    leave.set()  # the waiter below gets the lock once the holder lets go
    with hold(store, "job", lease=60.0, wait=GIVE_UP, what="the job") as mine:
        assert mine.held
    thread.join(GIVE_UP)


def test_check_state(store: StateStore) -> None:
    check = check_state(store)
    assert isinstance(check, StateCheck)
    assert (check.kind, check.url, check.namespace) == (store.kind, store.url, store.namespace)
    assert "reachable and writable" in str(check)


def test_store_tokens_round_trip(store: StateStore) -> None:
    tokens = StoreTokens(store)
    assert tokens.load("salesforce:acct") is None
    tokens.save("salesforce:acct", "refresh-1")
    tokens.save("salesforce:acct", "refresh-2")
    assert tokens.load("salesforce:acct") == "refresh-2"
    assert store.get("token:salesforce:acct") == "refresh-2"
    assert "refresh" not in repr(tokens)


# -- SQLite only: real processes and threads on one file ------------------------------------------


def test_processes_never_hold_a_key_at_once(tmp_path: Path) -> None:
    path, keys, rounds, threads, processes = str(tmp_path / "shared.db"), ["r1", "r2", "r3"], 24, 2, 4
    SQLiteStore(path).put("ready", "1", None)  # the file and its schema exist before the race
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.starmap_async(_sqlite_workers.hammer_claims, [(path, keys, rounds, threads)] * processes).get(
            timeout=300
        )
    store = SQLiteStore(path)
    assert sum(r["overlaps"] for r in results) == 0
    assert sum(r["refused"] for r in results) == 0
    for key in keys:
        assert int(store.get(f"count:{key}") or 0) == sum(r[key] for r in results)
    assert sum(int(store.get(f"count:{key}") or 0) for key in keys) == rounds * threads * processes


def test_processes_opening_a_new_file_together_all_get_in(tmp_path: Path) -> None:
    """Workers starting together on a new host: setting up a brand-new file (the switch to WAL,
    the schema) is outside SQLite's busy wait, so racing connections saw "database is locked" or
    "disk I/O error" at once (about one run in ten) until opening was serialised."""
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(5):
        path = str(tmp_path / f"new-{attempt}" / "state.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        workers = [
            ctx.Process(target=_sqlite_workers.first_steps_together, args=(path, barrier, results, 8)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        errors = [error for _ in workers for error in results.get(timeout=300)]
        for worker in workers:
            worker.join(timeout=300)
        assert errors == []


def test_threads_never_hold_a_key_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "threads.db")
    taken = _sqlite_workers.hammer_claims(path, ["r1", "r2"], 20, 6)
    store = SQLiteStore(path)
    assert taken["overlaps"] == 0 and taken["refused"] == 0
    assert [int(store.get(f"count:{key}") or 0) for key in ("r1", "r2")] == [taken["r1"], taken["r2"]] == [60, 60]


def test_processes_share_one_budget(tmp_path: Path) -> None:
    path, limit, processes = str(tmp_path / "budget.db"), 7, 4
    SQLiteStore(path).put("ready", "1", None)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        granted = pool.starmap_async(_sqlite_workers.grab_slots, [(path, "acct", limit, 20)] * processes).get(
            timeout=300
        )
    assert sum(granted) == limit
    assert SQLiteStore(path).take_slot("acct", limit, 1.0, 600.0)[0] is None


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fork.db")
    store.put("parent", "1", None)  # this thread's connection is open now
    pid = os.fork()
    if pid == 0:  # the child: must not reuse the parent's connection
        code = 1
        try:
            store.put("child", str(os.getpid()), None)
            code = 0 if store.get("parent") == "1" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store.get("child") == str(pid)
    store.put("parent", "2", None)  # the parent's connection still works
    assert store.get("parent") == "2"


# -- SQLite only: URLs, files and failures --------------------------------------------------------


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStore.from_url("sqlite:///data/rel.db")
    relative.put("k", "v", None)
    assert (tmp_path / "data" / "rel.db").is_file()
    assert relative.url == "sqlite:///data/rel.db" and relative.kind == "sqlite"
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path}/deep/er/abs.db")  # four slashes in all
    absolute.put("k", "v", None)
    assert (tmp_path / "deep" / "er" / "abs.db").stat().st_mode & 0o077 == 0  # may hold refresh tokens
    named = open_state(f"sqlite:///{tmp_path}/named.db?namespace=practice-1")
    assert isinstance(named, SQLiteStore) and named.namespace == "practice-1"
    assert "namespace" not in named.url
    for bad in ("sqlite://", "sqlite:///", "sqlite://host/file.db", "sqlite:///:memory:", "sqlite:///x.db?mode=ro"):
        with pytest.raises(ConfigurationError):
            SQLiteStore.from_url(bad)


def test_an_existing_file_keeps_its_data_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).put("k", "v", None)
    path.chmod(0o640)
    reopened = SQLiteStore(f"{path}")
    assert reopened.get("k") == "v"
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("shape", ["directory", "parent-is-a-file", "not-a-database"])
def test_an_unusable_path_is_a_state_store_error(tmp_path: Path, shape: str) -> None:
    if shape == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
    elif shape == "parent-is-a-file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "state.db"
    else:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a SQLite database, just bytes " * 100)
    store = SQLiteStore(path)
    for step in (lambda: store.get("k"), lambda: store.put("k", "v", None), lambda: check_state(store)):
        with pytest.raises(StateStoreError) as failed:
            step()
        assert failed.value.code == "STATE_UNAVAILABLE" and failed.value.store == store.url
        assert str(path) in str(failed.value)
        assert failed.value.__cause__ is None  # no sqlite3 exception leaks through


def test_the_store_works_once_its_path_is_usable_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.mkdir()
    store = SQLiteStore(path)
    with pytest.raises(StateStoreError):
        store.put("k", "v", None)
    path.rmdir()
    store.put("k", "v", None)
    assert store.get("k") == "v"


def test_a_locked_file_fails_within_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path)
    store.put("k", "v", None)
    other = sqlite3.connect(path, isolation_level=None)  # another writer that does not let go
    other.execute("BEGIN IMMEDIATE")
    try:
        with deadline_scope(0.2), pytest.raises(StateStoreError) as failed:
            store.claim("ref", 60.0, 600.0)
        assert "locked" in str(failed.value) and str(path) in str(failed.value)
        assert store.get("k") == "v"  # readers are not blocked by the writer (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.claim("ref", 60.0, 600.0).held  # and the store works again once it is free


def test_expired_rows_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pms_integration.state._sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "SWEEP_ONE_IN", 1)  # sweep on every write
    path = tmp_path / "sweep.db"
    store = SQLiteStore(path)
    for n in range(20):
        store.put(f"gone{n}", "x", 0.05)
        assert store.settle(store.claim(f"lock{n}", 0.05, 0.05), None, False, 0.05)
    store.put("kept", "y", None)

    def rows() -> int:
        store.put("tick", "t", None)  # a write, so a sweep
        with contextlib.closing(sqlite3.connect(path)) as db:
            return sum(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("kv", "fence"))

    eventually(lambda: rows() == 2, "expired rows to be swept")
    assert store.get("kept") == "y"
