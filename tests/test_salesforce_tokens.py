"""Rotated refresh tokens survive a restart: the TokenStore hook, its file store, and the sandbox."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pms_integration import CallbackTokenStore, FileTokenStore, PMSClient, TokenStore
from pms_integration.errors import AuthenticationError, ConfigurationError
from pms_integration.providers.salesforce import SalesforceAdapter
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.salesforce import SalesforceEmulator
from pms_integration.state import reset_memory_state
from pms_integration.tokens import MemoryTokenStore

from .conftest import CANARY


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=11) as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    org(sandbox).rotate_refresh_tokens = True
    yield sandbox
    sandbox.reset()


def org(sb: Sandbox) -> SalesforceEmulator:
    return cast(SalesforceEmulator, sb.emulator("salesforce"))


def environ(sb: Sandbox, refresh: dict[str, str]) -> dict[str, str]:
    env = sb.environ(default_provider="salesforce")
    env.update(refresh)
    return env


def booking(n: int) -> dict[str, Any]:
    start = dt.datetime(2037, 3, 9, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4))) + dt.timedelta(hours=n)
    return {"start": start.isoformat(), "patient": {"name": "Jane Doe", "email": "jane@example.com"}}


def key_of(client: PMSClient) -> str:
    adapter = client.adapter("salesforce")
    assert isinstance(adapter, SalesforceAdapter)
    return adapter.auth.store_key


def test_the_sandbox_invalidates_a_rotated_refresh_token(sb: Sandbox) -> None:
    configured = org(sb).refresh_environ()
    with PMSClient(environ=environ(sb, configured), env_file=None, sleep=lambda s: None) as c:
        org(sb).expire_token()
        c.book_appointment(booking(0))
    assert org(sb).refresh_token != configured["PMS_SALESFORCE_REFRESH_TOKEN"]
    # a restart without a store (memory:// goes with the process): the configured refresh token
    # was used up by the rotation
    reset_memory_state()
    with PMSClient(environ=environ(sb, configured), env_file=None, sleep=lambda s: None) as c:
        org(sb).expire_token()
        with pytest.raises(AuthenticationError) as info:
            c.book_appointment(booking(1))
    assert "invalid_grant" in str(info.value)


def test_a_rotation_is_saved_and_picked_up_after_a_restart(
    sb: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configured = org(sb).refresh_environ()
    path = tmp_path / "state" / "tokens.json"
    with PMSClient(environ=environ(sb, configured), env_file=None, token_store=FileTokenStore(path)) as first:
        org(sb).expire_token()
        first.book_appointment(booking(0))
        key = key_of(first)
    rotated = org(sb).refresh_token
    assert rotated != configured["PMS_SALESFORCE_REFRESH_TOKEN"]
    assert FileTokenStore(path).load(key) == rotated
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key == f"salesforce {sb.base_url('salesforce')} {configured['PMS_SALESFORCE_CLIENT_ID']}"

    # "restart": a new client (as a new process would build) with the same, now dead, configuration
    with PMSClient(environ=environ(sb, configured), env_file=None, token_store=FileTokenStore(path)) as second:
        org(sb).expire_token()
        second.book_appointment(booking(1))  # refreshes with the stored token, not the configured one
    assert org(sb).token_refreshes == 2
    assert FileTokenStore(path).load(key) == org(sb).refresh_token != rotated
    assert len(sb.state("salesforce")["bookings"]) == 2
    for secret in (rotated, org(sb).refresh_token, org(sb).client_secret):
        assert secret not in caplog.text


def test_a_second_process_that_rotated_first_is_followed(sb: Sandbox) -> None:
    """Two clients share a store; each reads it before refreshing, so neither uses a dead token."""
    store = MemoryTokenStore()
    configured = org(sb).refresh_environ()
    a = PMSClient(environ=environ(sb, configured), env_file=None, token_store=store, sleep=lambda s: None)
    b = PMSClient(environ=environ(sb, configured), env_file=None, token_store=store, sleep=lambda s: None)
    with a, b:
        for client, n in ((a, 0), (b, 1), (a, 2), (b, 3)):
            org(sb).expire_token()
            client.book_appointment(booking(n))
        key = key_of(a)
    assert org(sb).token_refreshes == 4 and store.load(key) == org(sb).refresh_token


class _Ledger:
    """A callback store that records the order of events."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.values: dict[str, str] = {}
        self.events: list[str] = []
        self.lock = threading.Lock()

    def load(self, key: str) -> str | None:
        with self.lock:
            self.events.append("load")
            return self.values.get(key)

    def save(self, key: str, value: str) -> None:
        with self.lock:
            # saved before use: the sandbox has not yet seen a request with the new access token
            self.events.append(f"save after {org(self.sb).token_refreshes} refreshes")
            self.values[key] = value


def test_the_rotated_token_is_saved_before_it_is_used(sb: Sandbox) -> None:
    ledger = _Ledger(sb)
    configured = org(sb).refresh_environ()
    store = CallbackTokenStore(ledger.load, ledger.save)
    with PMSClient(environ=environ(sb, configured), env_file=None, token_store=store) as c:
        org(sb).expire_token()
        before = sb.request_count("salesforce")
        c.book_appointment(booking(0))
    # the check before the create answered 401, token request, replay, then the create: the
    # save happened inside the refresh, before the replay
    assert [r.operation for r in list(sb.records)[before:]] == ["composite", "oauth.token", "composite", "composite"]
    assert ledger.events == ["load", "save after 1 refreshes"]
    assert list(ledger.values.values()) == [org(sb).refresh_token]


def test_a_broken_store_does_not_stop_the_booking(sb: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    def load(key: str) -> str | None:
        raise OSError("disk gone")

    def save(key: str, value: str) -> None:
        raise OSError("disk gone")

    configured = org(sb).refresh_environ()
    store = CallbackTokenStore(load, save)
    with PMSClient(environ=environ(sb, configured), env_file=None, token_store=store) as c:
        org(sb).expire_token()
        c.book_appointment(booking(0))
        org(sb).expire_token()
        c.book_appointment(booking(1))  # the rotated token is still kept in memory
    assert org(sb).token_refreshes == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "could not be saved" in errors[0].getMessage()
    assert org(sb).refresh_token not in caplog.text


# ---------------------------------------------------------------------------------------------
# the stores themselves


def test_file_store_round_trip_permissions_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    assert store.load("k") is None
    store.save("k", "value-one-long-enough")
    store.save("other", "value-two-long-enough")
    store.save("k", "value-three-long-enough")
    assert FileTokenStore(path).load("k") == "value-three-long-enough"
    assert FileTokenStore(path).load("other") == "value-two-long-enough"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]  # no temporary files left
    assert "value" not in repr(store)


def test_store_misuse_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        PMSClient(environ={}, env_file=None, token_store=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        FileTokenStore(b"tokens.json")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CallbackTokenStore(None, None)  # type: ignore[arg-type]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError):
        FileTokenStore(bad).load("k")
    assert isinstance(MemoryTokenStore(), TokenStore) and isinstance(FileTokenStore(bad), TokenStore)


def test_canary_secrets_never_reach_the_store_key() -> None:
    from ._salesforce_support import REFRESH_ENV, adapter

    a = adapter(**REFRESH_ENV)
    for secret in CANARY.values():
        assert secret not in a.auth.store_key


def test_reload_keeps_the_token_store(sb: Sandbox, tmp_path: Path) -> None:
    import pms_integration as pms

    store = FileTokenStore(tmp_path / "tokens.json")
    env = environ(sb, org(sb).refresh_environ())
    pms.use_client(PMSClient(environ=env, env_file=None, token_store=store))
    fresh = pms.reload(env, env_file=None)
    assert fresh.token_store is store
    org(sb).expire_token()
    pms.book_appointment(booking(0))
    assert store.load(key_of(fresh)) == org(sb).refresh_token
