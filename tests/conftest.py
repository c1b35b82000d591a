from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pms_integration import _default

CANARY = {
    "PMS_GHL_API_KEY": "pit-canary-ghl-7f3e9a1b2c4d",
    "PMS_SALESFORCE_TOKEN": "00Dcanary000000!AQcanarySalesforceToken42",
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
    yield
    _default._client = previous


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
