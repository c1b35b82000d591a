"""Rotated Salesforce tokens in the shared state store, refreshed by one process at a time
(issue 16: "rotated OAuth tokens", and "a rotated Salesforce refresh token written by one process
is used by a newly started one").

Real parts only: the sandbox's Salesforce org (rotating refresh tokens, like a connected app set
to rotate them) runs in this process on a loopback port; the workers are real processes
(multiprocessing "spawn", code in tests/_token_workers.py) sharing a real SQLite file or a
namespace on a real redis-server. Waits are on queues and events with a generous give-up; no
assertion is about time.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pms_integration import PMSClient
from pms_integration.errors import AuthenticationError, StateStoreError
from pms_integration.providers.salesforce import SalesforceAdapter
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.salesforce import SalesforceEmulator
from pms_integration.state import StoreTokens, open_state

from . import _token_workers as workers

SPAWN = multiprocessing.get_context("spawn")
#: how long a process may take to start, book and end on a busy 2-core machine (a give-up only)
GIVE_UP = 240.0
STORES = ["sqlite", "redis"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=1616) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox, reset, with an org that rotates refresh tokens on every refresh."""
    sandbox.reset()
    org(sandbox).rotate_refresh_tokens = True
    yield sandbox
    sandbox.reset()


@pytest.fixture(params=STORES)
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file of this test's own, or a namespace of its own on the real redis-server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url = request.getfixturevalue("redis_url")
    return f"{url}?namespace={request.getfixturevalue('redis_namespace')}"


def org(sb: Sandbox) -> SalesforceEmulator:
    return cast(SalesforceEmulator, sb.emulator("salesforce"))


def environ(sb: Sandbox, state_url: str | None, **extra: str) -> dict[str, str]:
    """What a worker is configured with: the org, the refresh token as configured now, the store."""
    env = sb.environ(default_provider="salesforce")
    env.update(org(sb).refresh_environ())
    env["PMS_SALESFORCE_TIMEOUT_MS"] = "10000"
    env["PMS_DEADLINE_MS"] = "60000"
    if state_url is not None:
        env["PMS_STATE_URL"] = state_url
    env.update(extra)
    return env


def token_key(sb: Sandbox) -> str:
    return f"salesforce {sb.base_url('salesforce')} {org(sb).client_id}"


def token_requests(sb: Sandbox) -> int:
    """Token requests the sandbox received (its request log, not the client's counters)."""
    return sum(1 for r in list(sb.records) if r.operation == "oauth.token")


class Workers:
    """Worker processes and their reports (one queue for all of them)."""

    def __init__(self) -> None:
        self.out: Any = SPAWN.Queue()
        self.gate: Any = SPAWN.Event()
        self.processes: list[Any] = []
        self.logs: dict[str, str] = {}

    def start(self, name: str, env: dict[str, str], slots: list[int]) -> None:
        process = SPAWN.Process(
            target=workers.book_in_steps, args=(name, env, slots, self.out, self.gate), name=f"token-{name}"
        )
        process.start()
        self.processes.append(process)

    def results(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` booking reports (logs are kept aside as they arrive)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            try:
                report = self.out.get(timeout=GIVE_UP)
            except queue.Empty:
                pytest.fail(f"the workers reported {len(found)} of {count} bookings")
            if "logs" in report:
                self.logs[report["name"]] = report["logs"]
            else:
                found.append(report)
        return found

    def finish(self) -> None:
        """Collect every log and wait for every process to end."""
        while len(self.logs) < len(self.processes):
            try:
                report = self.out.get(timeout=GIVE_UP)
            except queue.Empty:
                pytest.fail("a worker never ended")
            if "logs" in report:
                self.logs[report["name"]] = report["logs"]
        for process in self.processes:
            process.join(GIVE_UP)
            assert process.exitcode == 0, f"{process.name} ended with {process.exitcode}"

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(10)
        self.out.close()


@pytest.fixture
def pool() -> Iterator[Workers]:
    running = Workers()
    try:
        yield running
    finally:
        running.close()


def succeeded(reports: list[dict[str, Any]]) -> None:
    failures = [r for r in reports if "id" not in r]
    assert not failures, failures


def assert_no_secrets(sb: Sandbox, text: str, *secrets: str) -> None:
    for secret in (*secrets, org(sb).refresh_token, org(sb).client_secret, org(sb).token):
        assert secret not in text


# ---------------------------------------------------------------------------------------------
# real processes on a real store


def test_a_rotated_refresh_token_reaches_a_process_started_later(sb: Sandbox, state_url: str, pool: Workers) -> None:
    configured = org(sb).refresh_environ()["PMS_SALESFORCE_REFRESH_TOKEN"]
    env = environ(sb, state_url)

    # process A: its session has expired, so it refreshes (the org rotates the refresh token) and ends
    org(sb).expire_token()
    pool.start("A", env, [0])
    succeeded(pool.results(1))
    rotated = org(sb).refresh_token
    assert rotated != configured and org(sb).token_refreshes == 1
    store = open_state(state_url)
    try:
        assert StoreTokens(store).load(token_key(sb)) == rotated
    finally:
        store.close()

    # process B, started afterwards with the same configuration (the configured refresh token
    # is dead by now): first it finds the access token A saved, then, when that session expires
    # too, it refreshes with the refresh token A stored
    pool.start("B", env, [1, 2])
    succeeded(pool.results(1))
    assert org(sb).token_refreshes == 1  # the shared access token was enough
    org(sb).expire_token()
    pool.gate.set()
    succeeded(pool.results(1))
    pool.finish()
    assert org(sb).token_refreshes == 2 == token_requests(sb)
    assert org(sb).refresh_token not in (configured, rotated)
    store = open_state(state_url)
    try:
        assert StoreTokens(store).load(token_key(sb)) == org(sb).refresh_token
    finally:
        store.close()
    assert len(sb.state("salesforce")["bookings"]) == 3
    assert "refresh token was saved" in pool.logs["A"] and "another process refreshed" in pool.logs["B"]
    assert_no_secrets(sb, "".join(pool.logs.values()), configured, rotated)


def test_four_processes_whose_token_expired_together_refresh_once(sb: Sandbox, state_url: str, pool: Workers) -> None:
    env = environ(sb, state_url)
    for n in range(4):
        pool.start(f"P{n}", env, [2 * n, 2 * n + 1])
    succeeded(pool.results(4))  # every process has booked once with the configured access token
    assert token_requests(sb) == 0
    org(sb).expire_token()  # the session ends for all four at the same moment
    pool.gate.set()
    succeeded(pool.results(4))
    pool.finish()
    assert token_requests(sb) == 1 == org(sb).token_refreshes
    assert len(sb.state("salesforce")["bookings"]) == 8
    logs = "".join(pool.logs.values())
    assert logs.count("another process refreshed") == 3
    assert_no_secrets(sb, logs)


def test_without_a_shared_store_a_restart_still_fails_with_invalid_grant(sb: Sandbox, pool: Workers) -> None:
    env = environ(sb, None)  # memory:// (the default): nothing outlives the process
    org(sb).expire_token()
    pool.start("A", env, [0])
    succeeded(pool.results(1))
    org(sb).expire_token()
    pool.start("B", env, [1])
    [report] = pool.results(1)
    pool.finish()
    assert report["error"] == "AuthenticationError" and report["code"] == "invalid_grant"
    assert "PMS_SALESFORCE_REFRESH_TOKEN" in report["message"]
    assert token_requests(sb) == 2 and len(sb.state("salesforce")["bookings"]) == 1


# ---------------------------------------------------------------------------------------------
# in this process, on a real SQLite file


def booking(n: int) -> dict[str, Any]:
    return workers.booking(n)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def store_tokens(url: str) -> StoreTokens:
    return StoreTokens(open_state(url))


@pytest.mark.parametrize("rotating", [True, False], ids=["rotating", "not rotating"])
def test_a_refused_stored_token_falls_back_to_the_configured_one_once(
    sb: Sandbox, sqlite_url: str, rotating: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org(sb).rotate_refresh_tokens = rotating
    dead = "5Aep861dead-stored-refresh-token-000"
    tokens = store_tokens(sqlite_url)
    tokens.save(token_key(sb), dead)  # what a store left over from an earlier authorisation holds
    configured = org(sb).refresh_token  # the operator authorised again and configured the new one
    with PMSClient(environ=environ(sb, sqlite_url), env_file=None) as client:
        org(sb).expire_token()
        client.book_appointment(booking(0))
    assert token_requests(sb) == 2 and org(sb).token_refreshes == 1  # the stored one, then the configured one
    assert tokens.load(token_key(sb)) == org(sb).refresh_token  # rotated, or the configured one itself
    assert (org(sb).refresh_token != configured) is rotating
    assert "trying the configured PMS_SALESFORCE_REFRESH_TOKEN once" in caplog.text
    assert_no_secrets(sb, caplog.text, dead, configured)
    tokens.store.close()


def test_no_fallback_when_the_configured_token_is_the_refused_one(sb: Sandbox, sqlite_url: str) -> None:
    dead = "5Aep861dead-stored-refresh-token-000"
    tokens = store_tokens(sqlite_url)
    tokens.save(token_key(sb), dead)
    with PMSClient(environ=environ(sb, sqlite_url, PMS_SALESFORCE_REFRESH_TOKEN=dead), env_file=None) as client:
        org(sb).expire_token()
        with pytest.raises(AuthenticationError) as info:
            client.book_appointment(booking(0))
    assert info.value.code == "invalid_grant" and dead not in str(info.value)
    assert token_requests(sb) == 1 and sb.state("salesforce")["bookings"] == []
    tokens.store.close()


def test_both_refused_is_one_authentication_error_after_two_token_requests(sb: Sandbox, sqlite_url: str) -> None:
    tokens = store_tokens(sqlite_url)
    tokens.save(token_key(sb), "5Aep861dead-stored-refresh-token-000")
    env = environ(sb, sqlite_url, PMS_SALESFORCE_REFRESH_TOKEN="5Aep861dead-configured-token-0001")
    with PMSClient(environ=env, env_file=None) as client:
        org(sb).expire_token()
        with pytest.raises(AuthenticationError) as info:
            client.book_appointment(booking(0))
        # the refusal is remembered: the next call does not ask the token endpoint again
        with pytest.raises(AuthenticationError):
            client.book_appointment(booking(1))
    assert info.value.code == "invalid_grant"
    assert token_requests(sb) == 2 and sb.state("salesforce")["bookings"] == []
    tokens.store.close()


def test_a_refresh_lock_held_elsewhere_is_a_typed_error_within_the_deadline(sb: Sandbox, sqlite_url: str) -> None:
    """Another holder (this test, on the same real file) keeps the refresh lock past the call's
    deadline: the call fails with StateStoreError, sending neither a token request nor a booking;
    once the lock is free, the next call refreshes and books."""
    store = open_state(sqlite_url)
    claim = store.claim(f"token-refresh:{token_key(sb)}", 600.0, 600.0)
    assert claim.held
    with PMSClient(environ=environ(sb, sqlite_url, PMS_DEADLINE_MS="1500"), env_file=None) as client:
        org(sb).expire_token()
        with pytest.raises(StateStoreError) as info:
            client.book_appointment(booking(0))
        assert info.value.code == "STATE_LOCK_BUSY" and "token refresh" in str(info.value)
        assert token_requests(sb) == 0 and sb.state("salesforce")["bookings"] == []
        assert store.settle(claim, None, False, 60.0)
        client.book_appointment(booking(0))  # same reference: nothing was booked the first time
    assert token_requests(sb) == 1 and len(sb.state("salesforce")["bookings"]) == 1
    store.close()


def test_an_old_shared_access_token_is_not_trusted(sb: Sandbox, sqlite_url: str) -> None:
    """A shared access token older than SHARED_TOKEN_MAX_AGE may have timed out: refresh instead."""
    env = environ(sb, sqlite_url)  # both start from the same configuration
    with PMSClient(environ=env, env_file=None) as first:
        org(sb).expire_token()
        first.book_appointment(booking(0))
    with PMSClient(environ=env, env_file=None) as second:
        auth = cast(SalesforceAdapter, second.adapter("salesforce")).auth
        auth.SHARED_TOKEN_MAX_AGE = -1.0  # as if the first client had refreshed long ago
        second.book_appointment(booking(1))  # its configured access token is dead: refreshes
    assert token_requests(sb) == 2 and len(sb.state("salesforce")["bookings"]) == 2
