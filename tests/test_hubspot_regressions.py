"""HubSpot regressions from the correctness review (issue 13), end to end against the sandbox.

Each test here failed before its fix: reference look-ups that read one search page, a report
note attached to nothing, ``outcome_unknown`` false after a committed write, and an emulator that
was more lenient than HubSpot (instant search, ignored ``sorts``/``query``, string-compared
dates, every property by default, first-only repeated parameters, no burst limit, 404 for routes
it does not emulate). Patient data in URLs, moving a cancelled booking and the booking's own zone
are rules of every provider: tests/test_one_behaviour.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from pms_integration import PMSClient
from pms_integration.errors import AppointmentCancelledError, ProviderError
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.sandbox.hubspot import DEFAULT_BURST_LIMIT, DEFAULT_SEARCH_LAG, REFERENCE_PROPERTY

from ._hubspot_support import sandbox_client as client
from ._hubspot_support import sandbox_emulator as emulator
from ._hubspot_support import sandbox_raw as raw

NY = ZoneInfo("America/New_York")
EMAIL = "grace.hopper@example.com"
PHONE = "+14155550199"
BOOKING: dict[str, Any] = {
    "start": "2027-03-02T10:00:00-05:00",
    "duration_minutes": 45,
    "patient": {"name": "Grace Hopper", "email": EMAIL, "phone": PHONE},
    "title": "Cleaning",
}
REPORT = {"period_start": "2026-11-01", "period_end": "2026-11-30", "metrics": {"calls_handled": 120}}


class FakeClock:
    """A monotonic clock the test moves by hand (the emulator's search lag and limits use it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=13) as sandbox:
        yield sandbox


def book(c: PMSClient, **overrides: Any) -> Any:
    return c.book_appointment({**BOOKING, **overrides}, provider="hubspot")


def writes(sb: Sandbox) -> list[str]:
    return [f"{r.method} {r.path}" for r in sb.records if r.method in ("POST", "PATCH", "PUT", "DELETE")]


# ---------------------------------------------------------------------------------------------
# 2. exact, paged reference look-ups


def crowded(sb: Sandbox, kind: str, count: int, record: Callable[[int], dict[str, str]]) -> Any:
    """The HubSpot emulator holding ``count`` records of ``kind`` already (no burst limit)."""
    emu = emulator(sb)
    emu.burst_limit = None
    for i in range(count):
        emu.seed(kind, record(i))
    return emu


def old_report(body: str) -> dict[str, str]:
    return {"hs_timestamp": "2026-01-01T00:00:00.000Z", "hs_note_body": body}


def test_repush_after_105_reports_and_a_restart_updates_the_same_note(sb: Sandbox) -> None:
    emu = crowded(sb, "notes", 104, lambda i: old_report(f"old\n[pms-report-id: pms-report-{i:03d}]"))
    with client(sb) as c:
        first = c.push_performance_report(REPORT, provider="hubspot")
    emu.settle()  # later, after a restart: HubSpot's index has caught up
    with client(sb) as c:
        again = c.push_performance_report(REPORT, provider="hubspot")
    assert again.id == first.id and not again.created
    assert len(sb.state("hubspot")["notes"]) == 105


def test_recovering_booking_101_among_call_references_finds_it(sb: Sandbox) -> None:
    stage = {"dealstage": "appointmentscheduled", "pipeline": "default"}
    emu = crowded(sb, "deals", 100, lambda i: {"dealname": f"Cleaning - P{i} [call-{i:04x}]", **stage})
    request = {**BOOKING, "patient": {"phone": "+14155550100"}, "reference": "call-7f3a"}
    with client(sb) as c:
        booked = c.book_appointment(request, provider="hubspot")
    emu.settle()
    with client(sb) as c:  # another process: nothing in memory, the deal is found by search
        found = c.recover_booking(request, provider="hubspot")
    assert found is not None and found.id == booked.id
    assert sum("[call-7f3a]" in d["properties"]["dealname"] for d in sb.state("hubspot")["deals"]) == 1


def test_search_bodies_are_spec_valid_and_page_with_after(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[Any] = []
    dispatch = sb._dispatch

    def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
        if target.endswith("/search"):
            bodies.append(requests.models.complexjson.loads(body))
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(sb, "_dispatch", recording)
    emu = crowded(sb, "notes", 150, lambda i: old_report(f"[pms-report-id: pms-report-{i:03d}]"))
    emu.settle()
    with client(sb) as c:
        c.push_performance_report(REPORT, provider="hubspot")
    assert [b["after"] for b in bodies] == ["0", "100"]  # every page, not just the first
    for body in bodies:
        assert {"filterGroups", "properties", "sorts", "limit", "after"} <= set(body)
        assert body["sorts"] == ["hs_object_id"]


# ---------------------------------------------------------------------------------------------
# 3. report notes are attached somewhere a person looks


def test_report_note_goes_to_the_reports_company_without_configuration(sb: Sandbox) -> None:
    environ = {k: v for k, v in sb.environ().items() if k != "PMS_HUBSPOT_REPORT_COMPANY_ID"}
    with PMSClient(environ={**environ, "PMS_HUBSPOT_RATE_LIMIT": "off"}, env_file=None, sleep=lambda s: None) as c:
        receipt = c.push_performance_report(REPORT, provider="hubspot")
    emulator(sb).settle()
    with PMSClient(environ={**environ, "PMS_HUBSPOT_RATE_LIMIT": "off"}, env_file=None, sleep=lambda s: None) as c:
        second = c.push_performance_report({**REPORT, "period_end": "2026-11-29"}, provider="hubspot")
    companies = [
        r for r in sb.state("hubspot")["companies"] if r["properties"].get("name") == "pms-integration reports"
    ]
    assert len(companies) == 1  # found again by the second process, not made twice
    company = companies[0]["id"]
    assert emulator(sb).associations_of("notes", receipt.id, "companies") == [company]
    assert emulator(sb).associations_of("notes", second.id, "companies") == [company]


# ---------------------------------------------------------------------------------------------
# 4. outcome_unknown after a committed write


@pytest.mark.parametrize("operation", ["associations.put", "meetings.create"])
def test_failure_after_the_deal_upsert_says_the_booking_may_exist(sb: Sandbox, operation: str) -> None:
    sb.inject("hubspot", Fault.server_error(400), operation=operation, times=5)
    with client(sb, PMS_HUBSPOT_REFERENCE_PROPERTY=REFERENCE_PROPERTY) as c, pytest.raises(ProviderError) as info:
        book(c, reference="bk-after-upsert")
    assert info.value.outcome_unknown is True
    assert info.value.reference == "bk-after-upsert"
    assert len(sb.state("hubspot")["deals"]) == 1


def test_failure_after_the_deal_create_says_the_booking_may_exist(sb: Sandbox) -> None:
    sb.inject("hubspot", Fault.server_error(400), operation="meetings.create", times=5)
    with client(sb) as c, pytest.raises(ProviderError) as info:
        book(c, reference="bk-after-create")
    assert info.value.outcome_unknown is True and info.value.reference == "bk-after-create"


# ---------------------------------------------------------------------------------------------
# 5. one rule for cancel and move; the booking's own zone


def test_a_second_cancel_rewrites_the_deal_and_a_cancelled_booking_keeps_its_title(sb: Sandbox) -> None:
    # NotFoundError for an unknown id, cancelling twice and refusing a move are the cross-provider
    # rules of test_one_behaviour; here, what is HubSpot's own
    with client(sb) as c:
        appt = book(c, reference="bk-rules")
        before = len(writes(sb))
        c.cancel_appointment(appt.id, provider="hubspot")
        c.cancel_appointment(appt.id, provider="hubspot")
        written = len(writes(sb))
        with pytest.raises(AppointmentCancelledError) as info:
            c.update_appointment(appt.id, {"title": "Still on?"}, provider="hubspot")
    assert info.value.code == "APPOINTMENT_CANCELLED" and info.value.status_code == 409
    assert len(writes(sb)) == written, "retitling a cancelled booking sent a write"
    assert written - before == 3  # deal + meeting, then the deal again (the meeting is already cancelled)
    booking = sb.state("hubspot")["bookings"][0]
    assert booking["outcome"] == "CANCELED" and booking["dealstage"] == "closedlost"


# ---------------------------------------------------------------------------------------------
# 6. the emulator is as strict as HubSpot


def _search(sb: Sandbox, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = raw(sb, "POST", f"/crm/v3/objects/{object_type}/search", body)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_search_lags_writes_by_default(sb: Sandbox) -> None:
    emu = emulator(sb)
    assert emu.search_lag == DEFAULT_SEARCH_LAG > 0
    clock = FakeClock()
    emu.clock = clock
    created = raw(sb, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "lag@example.com"}})
    assert created.status_code == 201
    query = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "lag@example.com"}]}]}
    assert _search(sb, "contacts", query)["total"] == 0  # just written: not indexed yet
    assert raw(sb, "GET", f"/crm/v3/objects/contacts/{created.json()['id']}").status_code == 200  # reads see it
    clock.now += DEFAULT_SEARCH_LAG
    assert _search(sb, "contacts", query)["total"] == 1
    emu.search_lag = 0  # 0 turns the lag off
    raw(sb, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "now@example.com"}})
    query["filterGroups"][0]["filters"][0]["value"] = "now@example.com"
    assert _search(sb, "contacts", query)["total"] == 1


def test_settle_makes_writes_visible_without_waiting(sb: Sandbox) -> None:
    emu = emulator(sb)
    emu.clock = FakeClock()
    emu.seed("contacts", {"email": "seeded@example.com"})
    assert _search(sb, "contacts", {})["total"] == 0
    emu.settle()
    assert _search(sb, "contacts", {})["total"] == 1


def test_sorts_and_free_text_query_are_honoured(sb: Sandbox) -> None:
    emu = emulator(sb)
    for name, amount in (("Root canal", "300"), ("Cleaning", "80"), ("Crown", "1200")):
        emu.seed(
            "deals", {"dealname": name, "amount": amount, "dealstage": "appointmentscheduled", "pipeline": "default"}
        )
    emu.settle()
    descending = _search(sb, "deals", {"sorts": [{"propertyName": "amount", "direction": "DESCENDING"}]})
    assert [r["properties"]["amount"] for r in descending["results"]] == ["1200", "300", "80"]
    ascending = _search(sb, "deals", {"sorts": ["amount"]})
    assert [r["properties"]["amount"] for r in ascending["results"]] == ["80", "300", "1200"]
    by_query = _search(sb, "deals", {"query": "cle"})
    assert [r["properties"]["dealname"] for r in by_query["results"]] == ["Cleaning"]


def test_date_filters_compare_instants(sb: Sandbox) -> None:
    emu = emulator(sb)
    emu.seed("meetings", {"hs_timestamp": "2027-03-02T15:00:00.000Z"})
    emu.seed("meetings", {"hs_timestamp": "2027-03-03T15:00:00.000Z"})
    emu.settle()
    boundary = dt.datetime(2027, 3, 2, 15, tzinfo=dt.timezone.utc)
    epoch_ms = str(int(boundary.timestamp() * 1000))

    def count(op: str, value: str) -> int:
        body = {"filterGroups": [{"filters": [{"propertyName": "hs_timestamp", "operator": op, "value": value}]}]}
        return int(_search(sb, "meetings", body)["total"])

    assert count("GT", epoch_ms) == 1  # epoch milliseconds are an instant, not "match everything"
    assert count("GTE", epoch_ms) == 2
    assert count("EQ", epoch_ms) == 1
    assert count("GTE", "2027-03-02T15:00:00Z") == 2  # the boundary record, without milliseconds
    assert count("LTE", "2027-03-02T10:00:00-05:00") == 1  # an offset is the same instant


def test_search_without_properties_returns_the_default_set(sb: Sandbox) -> None:
    emu = emulator(sb)
    emu.seed("contacts", {"email": "d@example.com", "firstname": "D", "phone": "+14155550111", "city": "Boston"})
    emu.settle()
    props = _search(sb, "contacts", {})["results"][0]["properties"]
    assert {"email", "firstname", "lastname", "hs_object_id"} <= set(props)
    assert "phone" not in props and "city" not in props
    chosen = _search(sb, "contacts", {"properties": ["phone"]})["results"][0]["properties"]
    assert chosen["phone"] == "+14155550111" and "email" not in chosen


def test_repeated_query_parameters_are_all_honoured(sb: Sandbox) -> None:
    emu = emulator(sb)
    contact = emu.seed("contacts", {"email": "r@example.com", "firstname": "R", "phone": "+14155550112"})
    deal = emu.seed("deals", {"dealname": "x", "dealstage": "appointmentscheduled", "pipeline": "default"})
    raw(sb, "PUT", f"/crm/v4/objects/deals/{deal}/associations/default/contacts/{contact}")
    resp = requests.get(
        sb.base_url("hubspot") + f"/crm/v3/objects/contacts/{contact}",
        params=[("properties", "phone"), ("properties", "firstname"), ("associations", "deals")],
        headers={"Authorization": "Bearer " + emu.token},
        timeout=5,
    )
    body = resp.json()
    assert body["properties"]["phone"] == "+14155550112" and body["properties"]["firstname"] == "R"
    assert [a["id"] for a in body["associations"]["deals"]["results"]] == [deal]


def test_burst_limit_is_on_by_default_and_can_be_turned_off(sb: Sandbox) -> None:
    emu = emulator(sb)
    assert emu.burst_limit == DEFAULT_BURST_LIMIT == (100, 10.0)
    clock = FakeClock()
    emu.clock = clock
    statuses = [raw(sb, "GET", f"/crm/v3/objects/companies/{emu.company_id}").status_code for _ in range(101)]
    assert statuses[:100] == [200] * 100
    assert statuses[100] == 429
    limited = raw(sb, "GET", f"/crm/v3/objects/companies/{emu.company_id}")
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    clock.now += 10.0  # the rolling window has passed
    assert raw(sb, "GET", f"/crm/v3/objects/companies/{emu.company_id}").status_code == 200
    emu.burst_limit = None
    assert all(raw(sb, "GET", f"/crm/v3/objects/companies/{emu.company_id}").status_code == 200 for _ in range(120))


def test_unemulated_route_is_501_naming_the_route(sb: Sandbox) -> None:
    resp = raw(sb, "POST", "/crm/v3/objects/contacts/merge", {"primaryObjectId": "1", "objectIdToMerge": "2"})
    assert resp.status_code == 501
    assert resp.json()["category"] == "NOT_EMULATED"
    assert "POST /crm/v3/objects/contacts/merge" in resp.json()["message"]
