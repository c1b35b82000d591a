"""Duplicate safety across processes (issue 16, "What it must show", bullets 1 and 2).

Real parts only: the sandbox runs in this process on a loopback port; the workers are real
processes (multiprocessing, "spawn"; their code is in tests/_state_workers.py) sharing a real
SQLite file or a real redis-server. Every wait is on an event, a barrier or a process exit,
with a generous give-up; nothing here asserts on how long anything took.

Decisions the issue left open:

* a worker retries a booking, with the same reference, after an outcome-unknown error
  (BookingInProgressError included) or a vendor fault that made nothing (5xx, 429, connection),
  at most ``_state_workers.MAX_ATTEMPTS`` times, as a conversation would; a StateStoreError or
  any other error is not retried: it fails the test (a store problem must show, not be hidden);
* "one record per reference" counts the vendor's live booking records: GoHighLevel appointments,
  Salesforce Events, HubSpot deals and meetings (each must exist once);
* the killed holder's create is stalled by wrapping ``Sandbox._dispatch`` in the test (no new
  sandbox fault kind); both endings are covered, each vendor once per ending, the stores alternating.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pms_integration import errors as pms_errors
from pms_integration.sandbox import Fault, Sandbox

from . import _state_workers as workers

SPAWN = multiprocessing.get_context("spawn")
VENDORS = ["gohighlevel", "salesforce", "hubspot"]
STORES = ["sqlite", "redis"]
#: the request that makes the booking's first vendor record (Salesforce: a new patient's
#: Contact and Event go in one composite request)
CREATES = {
    "gohighlevel": {"appointments.create"},
    "salesforce": {"composite", "sobjects.create"},
    "hubspot": {"deals.create"},
}
#: the look-ups by reference that find an earlier attempt's booking
LOOKUPS = {
    "gohighlevel": {"appointments.list", "contacts.appointments"},
    "salesforce": {"query"},
    "hubspot": {"deals.search", "deals.read"},
}
#: where each vendor keeps the records that must exist once per booking
RECORD_KINDS = {"gohighlevel": ["bookings"], "salesforce": ["bookings"], "hubspot": ["deals", "meetings"]}
#: how long a process may take to start, book and end on a busy 2-core machine (a give-up only)
GIVE_UP = 240.0
PROCESSES, THREADS, REFERENCES = 4, 8, 200


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """This module's own sandbox (``sb`` from conftest resets it for every test)."""
    with Sandbox(seed=16) as running:
        yield running


@pytest.fixture
def box(sb: Sandbox) -> Sandbox:
    """The sandbox, open round the clock and without HubSpot's own search and burst limits
    (200 bookings would otherwise spend most of the test waiting on them)."""
    sb.emulator("gohighlevel").open_hours = None  # type: ignore[attr-defined]
    sb.emulator("hubspot").burst_limit = None  # type: ignore[attr-defined]
    sb.emulator("hubspot").search_rate = None  # type: ignore[attr-defined]
    return sb


@pytest.fixture(params=STORES)
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared store: a SQLite file of this test's own, or a namespace of its own on the
    real redis-server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = request.getfixturevalue("redis_url")
    return f"{url}?namespace={request.getfixturevalue('redis_namespace')}"


def environ(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = sandbox.environ()
    for prefix in ("GHL", "SALESFORCE", "HUBSPOT"):
        env[f"PMS_{prefix}_RATE_LIMIT"] = "off"  # the sandbox enforces no window here
        env[f"PMS_{prefix}_TIMEOUT_MS"] = "5000"
    env["PMS_DEADLINE_MS"] = "10000"
    env.update(extra)
    return env


def inject_faults(sandbox: Sandbox, vendor: str) -> None:
    """Resets after commit and 503s (before and after commit) on the creates, 503s on the rest."""
    for operation in CREATES[vendor]:
        sandbox.inject(vendor, Fault.reset_after_commit(), operation=operation, probability=0.15)
        sandbox.inject(vendor, Fault.server_error(503, commit=True), operation=operation, probability=0.1)
    sandbox.inject(vendor, Fault.server_error(503), probability=0.08)


def records_per_reference(sandbox: Sandbox, vendor: str, pattern: str) -> dict[str, collections.Counter[str]]:
    """For each record kind: how many live records carry each reference matching ``pattern``."""
    state = sandbox.state(vendor)
    found: dict[str, collections.Counter[str]] = {}
    for kind in RECORD_KINDS[vendor]:
        counts: collections.Counter[str] = collections.Counter()
        for record in state[kind]:
            if isinstance(record, dict) and record.get("archived"):
                continue
            for ref in set(re.findall(pattern, json.dumps(record))):
                counts[ref] += 1
        found[kind] = counts
    return found


def assert_one_record_each(sandbox: Sandbox, vendor: str, references: list[str], pattern: str) -> None:
    for kind, counts in records_per_reference(sandbox, vendor, pattern).items():
        wrong = {ref: counts.get(ref, 0) for ref in references if counts.get(ref, 0) != 1}
        extra = sorted(set(counts) - set(references))
        assert wrong == {} and extra == [], f"{vendor} {kind}: records per reference not 1: {wrong}; unexpected {extra}"


def fired(sandbox: Sandbox) -> collections.Counter[str]:
    return collections.Counter(r.fault for r in sandbox.records if r.fault)


def join_all(processes: list[Any]) -> None:
    """Wait for every process to end (a give-up, not a timing check); none may be left running."""
    try:
        for process in processes:
            process.join(GIVE_UP)
        stuck = [p.pid for p in processes if p.is_alive()]
        assert stuck == [], f"worker processes still running after {GIVE_UP} s: {stuck}"
        assert [p.exitcode for p in processes] == [0] * len(processes)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(30)


# -- bullet 1: many processes, many threads, the same requests ---------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_four_processes_of_eight_threads_make_one_record_per_reference(
    box: Sandbox, state_url: str, vendor: str, tmp_path: Path
) -> None:
    inject_faults(box, vendor)
    env = environ(box)
    ready = SPAWN.Barrier(PROCESSES + 1)
    outputs = [str(tmp_path / f"worker-{n}.json") for n in range(PROCESSES)]
    processes = [
        SPAWN.Process(
            target=workers.book_many,
            args=(
                {
                    "environ": env,
                    "state": state_url,
                    "provider": vendor,
                    "references": REFERENCES,
                    "threads": THREADS,
                    "worker": n,
                },
                ready,
                outputs[n],
            ),
            name=f"booker-{n}",
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        ready.wait(GIVE_UP)  # every worker has its client: they start booking together
    finally:
        join_all(processes)

    results = [json.loads(Path(path).read_text()) for path in outputs]
    assert len({r["pid"] for r in results}) == PROCESSES
    failures = [f for r in results for f in r["failures"]]
    assert failures == [], "\n".join(failures[:10])
    references = [workers.reference(i) for i in range(REFERENCES)]
    # every thread of every worker got the same appointment for a reference
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for result in results:
        assert sorted(result["ids"]) == sorted(references)
        for ref, found in result["ids"].items():
            ids[ref].update(found)
    split = {ref: sorted(found) for ref, found in ids.items() if len(found) != 1}
    assert split == {}, f"workers got different appointments for one reference: {list(split.items())[:5]}"
    # and the vendor holds exactly one live record per reference
    assert_one_record_each(box, vendor, references, r"mp16-\d{4}")
    # the faults did fire (the run proved something)
    faults = fired(box)
    assert faults["reset_after_commit"] > 0 and faults["server_error"] > 0, faults


@pytest.mark.parametrize("vendor", VENDORS)
def test_thirty_two_clients_in_one_process_share_the_default_store(box: Sandbox, vendor: str) -> None:
    """The bug in the issue: 32 clients, one reference, 32 Salesforce Events. Clients built
    without ``state`` share the process-wide memory:// store."""
    inject_faults(box, vendor)
    env = environ(box)
    clients = [workers.make_client(env, None) for _ in range(32)]
    assert all(c.state is clients[0].state for c in clients) and clients[0].state.kind == "memory"
    count = 40
    ids: dict[str, set[str]] = collections.defaultdict(set)
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(clients))

    def run(n: int) -> None:
        seen: collections.Counter[str] = collections.Counter()
        order = list(range(count)) if n % 2 == 0 else list(range(count))[n % count :] + list(range(count))[: n % count]
        start.wait(GIVE_UP)
        for i in order:
            got, problem = workers.book_until_done(clients[n], workers.request_for(i, "ip16"), vendor, seen)
            with lock:
                if got is not None:
                    ids[workers.reference(i, "ip16")].add(got)
                else:
                    failures.append(f"client {n} {workers.reference(i, 'ip16')}: {problem}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GIVE_UP)
    assert not any(t.is_alive() for t in threads)
    for client in clients:
        client.close()
    assert failures == [], "\n".join(failures[:10])
    references = [workers.reference(i, "ip16") for i in range(count)]
    assert sorted(ids) == references
    assert {ref: sorted(found) for ref, found in ids.items() if len(found) != 1} == {}
    assert_one_record_each(box, vendor, references, r"ip16-\d{4}")
    assert fired(box)["reset_after_commit"] > 0


# -- bullet 2: a worker killed while it holds a reference's lock -------------------------------


class HeldCreate:
    """Makes the sandbox stall the first booking create it receives until told what to do
    with it: commit it (the vendor made the record; its answer goes to a dead socket) or drop
    it (a reset, nothing made). Wraps ``Sandbox._dispatch`` for one test."""

    def __init__(self, sandbox: Sandbox, operations: set[str]) -> None:
        self.sandbox = sandbox
        self.operations = operations
        self.received = threading.Event()
        self.decided = threading.Event()
        self.finished = threading.Event()
        self.commit = False
        self.armed = True
        self._lock = threading.Lock()
        self._dispatch: Callable[..., Any] = sandbox._dispatch
        #: every request the sandbox received: (operation, whether it was a booking's create)
        self.seen: list[tuple[str | None, bool]] = []

    def is_create(self, operation: str | None, body: bytes) -> bool:
        """A booking's create (a Salesforce composite only when it writes: it also carries reads)."""
        return operation in self.operations and (operation != "composite" or b'"method": "POST"' in body)

    def operation_of(self, method: str, target: str) -> str | None:
        found = self.sandbox._find(urlsplit(target).path)
        if found is None:
            return None
        emulator, path = found
        matched = emulator.match(method, path)
        return matched[0].operation if matched else None

    def __call__(self, method: str, target: str, headers: Any, body: bytes) -> Any:
        operation = self.operation_of(method, target)
        create = self.is_create(operation, body)
        with self._lock:
            self.seen.append((operation, create))
            hold = self.armed and create
            if hold:
                self.armed = False
        if not hold:
            return self._dispatch(method, target, headers, body)
        self.received.set()
        try:
            if not self.decided.wait(GIVE_UP) or not self.commit:
                return None  # a reset: the create never reached the vendor's records
            return self._dispatch(method, target, headers, body)
        finally:
            self.finished.set()


KILL_CASES = [
    ("sqlite", "committed", "salesforce"),
    ("sqlite", "not committed", "hubspot"),
    ("redis", "committed", "hubspot"),
    ("redis", "not committed", "gohighlevel"),
    ("sqlite", "committed", "gohighlevel"),
    ("redis", "not committed", "salesforce"),
]


@pytest.mark.parametrize(("store", "outcome", "vendor"), KILL_CASES)
def test_a_killed_holder_blocks_the_reference_only_until_its_lease_expires(
    box: Sandbox, request: pytest.FixtureRequest, tmp_path: Path, store: str, outcome: str, vendor: str
) -> None:
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = f"{request.getfixturevalue('redis_url')}?namespace={request.getfixturevalue('redis_namespace')}"
    held = HeldCreate(box, CREATES[vendor])
    request.getfixturevalue("monkeypatch").setattr(box, "_dispatch", held)
    # A's lease: its deadline (2 s) plus the 5 s margin; B's deadline is shorter than that, so
    # B waits and gives up (BookingInProgressError, then retries) while the lease holds
    spec = {"state": url, "provider": vendor, "index": 1, "prefix": "kill16"}
    timeouts = {f"PMS_{p}_TIMEOUT_MS": "1000" for p in ("GHL", "SALESFORCE", "HUBSPOT")}
    a_spec = {**spec, "environ": environ(box, PMS_DEADLINE_MS="2000", **timeouts)}
    # B's deadline leaves room for HubSpot's wait on its search index (2 s) after a timeout
    b_spec = {**spec, "environ": environ(box, PMS_DEADLINE_MS="4000", **timeouts)}
    a_ready, a_go, b_ready, b_go = (SPAWN.Event() for _ in range(4))
    a_out, b_out = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    a = SPAWN.Process(target=workers.book_one, args=(a_spec, a_ready, a_go, a_out), name="holder")
    b = SPAWN.Process(target=workers.book_one, args=(b_spec, b_ready, b_go, b_out), name="successor")
    a.start()
    b.start()
    try:
        assert a_ready.wait(GIVE_UP) and b_ready.wait(GIVE_UP), "a worker did not start"
        a_go.set()
        assert held.received.wait(GIVE_UP), "the sandbox never received A's create"
        # A holds the reference's lock and its create is at the vendor: kill it there
        assert a.pid is not None
        os.kill(a.pid, signal.SIGKILL)
        a.join(GIVE_UP)
        assert a.exitcode == -signal.SIGKILL
        held.commit = outcome == "committed"
        held.decided.set()
        assert held.finished.wait(GIVE_UP)
        before = len(held.seen)
        b_go.set()
        b.join(GIVE_UP)
        assert b.exitcode == 0
    finally:
        held.decided.set()
        for process in (a, b):
            if process.is_alive():
                process.kill()
                process.join(30)

    result = json.loads(Path(b_out).read_text())
    assert result["problem"] is None, result
    # B retried only "someone else holds it" and, HubSpot, "the search index may lag and the
    # deadline leaves no time to wait" (its claim came late in its deadline): both outcome-unknown
    assert set(result["retried"]) <= {"BookingInProgressError", "UnexpectedResponseError"}, result["retried"]
    # exactly one vendor record, and it is the one B returned
    assert_one_record_each(box, vendor, ["kill16-0001"], r"kill16-\d{4}")
    # B looked the reference up before any create (the pending mark A left), and created
    # nothing when A's create had been made
    b_requests = held.seen[before:]
    b_operations = [op for op, _ in b_requests]
    creates = [n for n, (_, create) in enumerate(b_requests) if create]
    lookups = [n for n, op in enumerate(b_operations) if op in LOOKUPS[vendor]]
    assert lookups, f"B never looked the reference up: {b_operations}"
    if outcome == "committed":
        assert creates == [], f"B created the booking A had made: {b_operations}"
    else:
        assert len(creates) == 1, b_operations
        assert lookups[0] < creates[0], f"B created before looking the reference up: {b_operations}"
    state = box.state(vendor)
    kind = RECORD_KINDS[vendor][0]
    ids = [r.get("id") or r.get("Id") for r in state[kind] if "kill16-0001" in json.dumps(r)]
    assert len(ids) == 1
    assert ids[0] in result["id"], (ids, result["id"])


# -- found while running the above: a deadline spent waiting is not a store failure ------------


@pytest.mark.parametrize("store", STORES)
def test_a_deadline_spent_waiting_for_another_attempt_is_booking_in_progress(
    request: pytest.FixtureRequest, tmp_path: Path, store: str
) -> None:
    """A call that waited its whole deadline for another attempt at the same reference (here:
    another thread of this process) gets BookingInProgressError, as it would while polling the
    store; never a StateStoreError ("the store is unavailable") because no time was left to ask
    the store. The clock is the test's own, so the deadline runs out exactly while it waits."""
    from pms_integration._once import BookingMemory
    from pms_integration._retry import deadline_scope
    from pms_integration.errors import BookingInProgressError
    from pms_integration.models import AppointmentRequest, ProviderName, structure
    from pms_integration.state import open_state

    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = f"{request.getfixturevalue('redis_url')}?namespace={request.getfixturevalue('redis_namespace')}"
    memory = BookingMemory(store=open_state(url))
    booking = structure(workers.request_for(1, "dl16"), AppointmentRequest)
    key = (ProviderName.SALESFORCE, "account", booking.reference)
    now = [0.0]
    creating, finish = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        def create() -> Any:
            creating.set()
            assert finish.wait(GIVE_UP)
            raise pms_errors.ServerError("made nothing", status_code=503, provider="salesforce")

        with contextlib.suppress(pms_errors.PMSError):
            memory.book(key, booking, create, lambda: None)

    def second() -> None:
        with deadline_scope(2.0, lambda: now[0]):
            try:
                memory.book(
                    key, booking, lambda: pytest.fail("created while another attempt held the reference"), lambda: None
                )
            except BaseException as exc:
                errors.append(exc)

    holder = threading.Thread(target=first)
    holder.start()
    assert creating.wait(GIVE_UP)
    waiter = threading.Thread(target=second)
    waiter.start()
    # the waiter is queued behind the holder; its deadline (on the test's clock) runs out there
    assert wait_until(lambda: memory._key_locks.get(key, [None, 0])[1] == 2)
    now[0] = 10.0
    finish.set()
    holder.join(GIVE_UP)
    waiter.join(GIVE_UP)
    assert len(errors) == 1
    assert isinstance(errors[0], BookingInProgressError), repr(errors[0])
    memory.store.close()


def wait_until(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until true, with a generous give-up (a condition, not a timing check)."""
    import time

    give_up = time.monotonic() + GIVE_UP
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True
