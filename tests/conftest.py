from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pms_integration import _default
from pms_integration.sandbox import Sandbox
from pms_integration.state import reset_memory_state

CANARY = {
    "PMS_GHL_API_KEY": "pit-canary-ghl-7f3e9a1b2c4d",
    "PMS_SALESFORCE_TOKEN": "sf-canary-session!AQcanarySalesforceToken42",
    "PMS_HUBSPOT_PRIVATE_APP_TOKEN": "pat-na1-canary00-hubspot-secret-99",
    "PMS_SALESFORCE_CLIENT_SECRET": "canary-sf-client-secret-31337",
    "PMS_SALESFORCE_REFRESH_TOKEN": "canary-sf-refresh-token-8086",
}


def full_environ(**overrides: str) -> dict[str, str]:
    """Every provider configured against unroutable https hosts (tests mock them)."""
    env = {
        "PMS_GHL_API_KEY": CANARY["PMS_GHL_API_KEY"],
        "PMS_GHL_LOCATION_ID": "loc123",
        "PMS_GHL_CALENDAR_ID": "cal456",
        "PMS_SALESFORCE_BASE_URL": "https://example.my.salesforce.com",
        "PMS_SALESFORCE_TOKEN": CANARY["PMS_SALESFORCE_TOKEN"],
        "PMS_SALESFORCE_OWNER_ID": "005000000000001AAA",
        "PMS_HUBSPOT_PRIVATE_APP_TOKEN": CANARY["PMS_HUBSPOT_PRIVATE_APP_TOKEN"],
    }
    env.update(overrides)
    return env


@pytest.fixture(autouse=True)
def _isolate_default_client(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[None]:
    """No test sees another's default client, the developer's environment or a ./.env."""
    for key in list(__import__("os").environ):
        if key.startswith("PMS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(str(tmp_path))
    previous = _default._client
    _default._client = None
    reset_memory_state()  # the process-wide memory:// store starts empty for every test
    yield
    _default._client = previous


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One running sandbox per test module; ``sb`` hands it to a test freshly reset."""
    with Sandbox(seed=7) as running:
        yield running


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.reset()
    return sandbox


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


SPECS_REQUIRED = "PMS_REQUIRE_VENDOR_SPECS"
#: Read once, at collection: every test runs with the PMS_* variables removed (the autouse
#: fixture above), so a skip raised inside a test would otherwise never see them.
_REQUIRED = {name: __import__("os").environ.get(name, "") for name in (SPECS_REQUIRED, "PMS_REQUIRE_REDIS")}
_REDIS_URL = __import__("os").environ.get("PMS_TEST_REDIS_URL") or None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server's URL: the one .ci/run started (PMS_TEST_REDIS_URL), else our own
    redis-server; skipped when neither exists (a failure under PMS_REQUIRE_REDIS=1)."""
    from tests._redis_server import SKIP_REASON, RedisServer, external_url

    url = _REDIS_URL or external_url()
    if url is not None:
        yield url
        return
    server = RedisServer()
    if not server.available:
        pytest.skip(SKIP_REASON)
    try:
        yield server.start().url
    finally:
        server.close()


@pytest.fixture
def redis_namespace(redis_url: str) -> str:
    """A namespace of its own for each test, so tests sharing the server never see each other's keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (PMS_REQUIRE_VENDOR_SPECS=1) a contract test skipped for want of ../shared fails."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and _REQUIRED.get("PMS_REQUIRE_REDIS") == "1":
        reason = str(report.longrepr)
        if "redis" in reason.lower():
            report.outcome = "failed"
            report.longrepr = f"PMS_REQUIRE_REDIS=1 but the Redis test was skipped: {reason}"
    if report.skipped and _REQUIRED.get(SPECS_REQUIRED) == "1":
        reason = str(report.longrepr)
        if "shared" in reason or "vendor-specs" in reason or "specs are not available" in reason:
            report.outcome = "failed"
            report.longrepr = f"{SPECS_REQUIRED}=1 but the vendor specs are missing: {reason}"


def sent_targets(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request target (path and query string) the sandbox receives from now on, in order:
    for tests that look for patient data in URLs."""
    targets: list[str] = []
    dispatch = sandbox._dispatch

    def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
        targets.append(target)
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(sandbox, "_dispatch", recording)
    return targets
