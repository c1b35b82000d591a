"""Shared helpers of the Salesforce adapter tests (ids, settings, canned responses)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import responses

from pms_integration import PMSClient
from pms_integration._http import Runtime
from pms_integration._retry import RetryPolicy
from pms_integration.config import SalesforceSettings, load_config
from pms_integration.models import ProviderName
from pms_integration.providers.salesforce import SalesforceAdapter, create, id_checksum

from .conftest import CANARY

BASE = "https://example.my.salesforce.com"
API = f"{BASE}/services/data/v67.0"
EVENTS = f"{API}/sobjects/Event/"
TASKS = f"{API}/sobjects/Task/"
QUERY = f"{API}/query/"
TOKEN_URL = f"{BASE}/services/oauth2/token"
NY = ZoneInfo("America/New_York")


def sf_id(prefix: str, serial: int) -> str:
    """A realistic 18-character id: key prefix, mixed-case body, valid checksum."""
    body = f"{prefix}Hs{serial:010d}"
    assert len(body) == 15
    return body + id_checksum(body)


OWNER = sf_id("005", 1)
RECORD_TYPE = sf_id("012", 2)
CONTACT = sf_id("003", 3)
LEAD = sf_id("00Q", 4)
EVENT_ID = sf_id("00U", 100)
TASK_ID = sf_id("00T", 200)


def environ(**overrides: str) -> dict[str, str]:
    env = {
        "PMS_SALESFORCE_BASE_URL": BASE,
        "PMS_SALESFORCE_TOKEN": CANARY["PMS_SALESFORCE_TOKEN"],
        "PMS_SALESFORCE_OWNER_ID": OWNER,
        # the write-path tests look at the Event create alone; test_salesforce_reads turns the
        # patient look-up and the conflict check (the defaults) back on
        "PMS_SALESFORCE_PATIENT_RECORD": "off",
        "PMS_SALESFORCE_CONFLICT_CHECK": "off",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


REFRESH_ENV = {
    "PMS_SALESFORCE_CLIENT_ID": "3MVG9clientid",
    "PMS_SALESFORCE_CLIENT_SECRET": CANARY["PMS_SALESFORCE_CLIENT_SECRET"],
    "PMS_SALESFORCE_REFRESH_TOKEN": CANARY["PMS_SALESFORCE_REFRESH_TOKEN"],
}


def settings(**overrides: str) -> SalesforceSettings:
    pc = load_config(environ(**overrides), env_file=None).get(ProviderName.SALESFORCE)
    assert isinstance(pc.settings, SalesforceSettings), (pc.missing, pc.problems)
    return pc.settings


def adapter(attempts: int = 3, **overrides: str) -> SalesforceAdapter:
    policy = RetryPolicy(max_attempts=attempts, backoff_initial=0.0, backoff_max=0.0, jitter=0.0)
    return create(settings(**overrides), Runtime(policy=policy, sleep=lambda s: None))


def client(**overrides: str) -> PMSClient:
    return PMSClient(environ=environ(**overrides), env_file=None, sleep=lambda s: None)


def booking(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "start": dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY).isoformat(),
        "duration_minutes": 45,
        "patient": {"name": "Jane Doe", "email": "jane@example.com", "phone": "+15555550123"},
        "title": "Cleaning",
        "reason": "routine cleaning",
        "notes": "Prefers the morning.",
        "reference": "bk-0123456789abcdef0123",
    }
    data.update(overrides)
    return data


def report(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "period_start": "2026-03-02",
        "period_end": "2026-03-08",
        "metrics": {"calls_handled": 212, "bookings_made": 61, "conversion_rate": 0.288},
    }
    data.update(overrides)
    return data


def created(record_id: str) -> dict[str, Any]:
    return {"id": record_id, "success": True, "errors": []}


def sf_error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return [entry]


def query_result(records: list[dict[str, Any]], sobject: str = "Event") -> dict[str, Any]:
    out = []
    for r in records:
        out.append({"attributes": {"type": sobject, "url": f"/services/data/v67.0/sobjects/{sobject}/{r['Id']}"}, **r})
    return {"totalSize": len(out), "done": True, "records": out}


def body_of(call: Any) -> Any:
    raw = call.request.body
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


def soql_of(call: Any) -> str:
    return parse_qs(urlsplit(call.request.url).query)["q"][0]


def calls(rsps: responses.RequestsMock) -> list[tuple[str, str]]:
    """(method, path) of every call, in order."""
    return [(c.request.method, urlsplit(c.request.url).path) for c in rsps.calls]
