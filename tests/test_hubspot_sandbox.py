"""HubSpot sandbox, end to end over loopback sockets: the client against the emulator.

Every adapter operation runs against the emulator; the reconcile paths run against injected
faults; and the emulator is held to the contract: what the contract checker rejects, the emulator
rejects too (with HubSpot's error bodies).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import requests

from pms_integration import PMSClient
from pms_integration._http import HttpResponse
from pms_integration.errors import AuthenticationError, InvalidRequestError, NotFoundError
from pms_integration.models import AppointmentStatus
from pms_integration.providers.hubspot import parse_error
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.sandbox.hubspot import REFERENCE_PROPERTY

from ._hubspot_support import sandbox_client as client
from ._hubspot_support import sandbox_emulator as emulator
from .test_hubspot_contract import check_request

BOOKING: dict[str, Any] = {
    "start": "2027-12-01T10:00:00-05:00",
    "duration_minutes": 45,
    "patient": {"name": "Jane Doe", "email": "jane@example.com", "phone": "+15555550100"},
    "title": "Cleaning",
}
REPORT = {"period_start": "2026-11-01", "period_end": "2026-11-30", "metrics": {"calls_handled": 120, "bookings": 31}}


def book(c: PMSClient, **overrides: Any) -> Any:
    return c.book_appointment({**BOOKING, **overrides}, provider="hubspot")


# ---------------------------------------------------------------------------------------------
# every operation


@pytest.mark.parametrize("api_version", ["v3", "2026-09"])
@pytest.mark.parametrize("reference_property", [None, REFERENCE_PROPERTY])
def test_full_lifecycle(sb: Sandbox, api_version: str, reference_property: str | None) -> None:
    env = {"PMS_HUBSPOT_API_VERSION": api_version}
    if reference_property:
        env["PMS_HUBSPOT_REFERENCE_PROPERTY"] = reference_property
    with client(sb, **env) as c:
        appt = book(c, reference="bk-life-1")
        assert appt.status is AppointmentStatus.BOOKED and appt.reference == "bk-life-1"
        booking = sb.state("hubspot")["bookings"][0]
        assert booking["id"] == appt.id and booking["reference"] == "bk-life-1"
        assert booking["start"] == "2027-12-01T15:00:00.000Z" and booking["end"] == "2027-12-01T15:45:00.000Z"
        assert booking["outcome"] == "SCHEDULED" and booking["dealstage"] == "appointmentscheduled"
        assert booking["contact_id"] == appt.contact_id

        moved = c.update_appointment(
            appt.id,
            {"start": "2027-12-03T14:00:00-05:00", "duration_minutes": 60, "title": "Check-up"},
            provider="hubspot",
        )
        assert moved.id == appt.id and moved.reference == "bk-life-1"
        booking = sb.state("hubspot")["bookings"][0]
        assert (booking["start"], booking["end"], booking["title"]) == (
            "2027-12-03T19:00:00.000Z",
            "2027-12-03T20:00:00.000Z",
            "Check-up",
        )
        deal = next(d for d in sb.state("hubspot")["deals"] if d["id"] == booking["deal_id"])
        assert deal["properties"]["closedate"] == "2027-12-03T19:00:00.000Z"

        cancelled = c.cancel_appointment(appt.id, reason="patient called", provider="hubspot")
        assert cancelled.status is AppointmentStatus.CANCELLED
        booking = sb.state("hubspot")["bookings"][0]
        assert booking["outcome"] == "CANCELED" and booking["dealstage"] == "closedlost"
        assert len(sb.state("hubspot")["deals"]) == 1  # cancel never deletes

        first = c.push_performance_report(REPORT, provider="hubspot")
        second = c.push_performance_report({**REPORT, "metrics": {"calls_handled": 121}}, provider="hubspot")
        assert first.created and not second.created and first.id == second.id
    notes = sb.state("hubspot")["notes"]
    assert len(notes) == 1 and "calls_handled" in notes[0]["properties"]["hs_note_body"]
    assert "121" in notes[0]["properties"]["hs_note_body"]
    state = sb.state("hubspot")
    links = {(a["from_type"], a["to_type"], a["type_id"]) for a in state["associations"]}
    assert ("meetings", "contacts", 200) in links and ("meetings", "deals", 212) in links
    assert ("notes", "companies", 190) in links
    assert ("deals", "contacts", 3) in links  # inline on create, or the default PUT after an upsert
    for kind in ("contacts", "deals", "meetings", "notes"):
        assert all(r["id"].isdigit() for r in state[kind])


def test_requests_per_operation_over_the_wire(sb: Sandbox) -> None:
    emulator(sb).seed("contacts", {"email": "jane@example.com", "firstname": "Jane"})
    emulator(sb).settle()  # the patient has been in HubSpot for a while: indexed
    with client(sb) as c:
        before = sb.request_count("hubspot")
        appt = book(c)
        # the conflict check's search, contact, its deals (none: this reference is not booked), deal, meeting
        assert sb.request_count("hubspot") - before == 5
        before = sb.request_count("hubspot")
        c.update_appointment(
            appt.id, {"start": "2027-12-02T10:00:00-05:00", "duration_minutes": 30}, provider="hubspot"
        )
        assert sb.request_count("hubspot") - before == 3  # read (cancelled? which zone?), 2 PATCHes
        before = sb.request_count("hubspot")
        c.cancel_appointment(appt.id, provider="hubspot")
        assert sb.request_count("hubspot") - before == 3  # read (exists? cancelled already?), 2 PATCHes
    assert len(sb.state("hubspot")["contacts"]) == 1


def test_phone_only_and_known_contact_id(sb: Sandbox) -> None:
    known = emulator(sb).seed("contacts", {"firstname": "Known"})
    with client(sb) as c:
        phone = book(c, patient={"phone": "+15555550199"}, reference="bk-phone")
        by_id = book(c, patient={"email": "k@example.com", "contact_id": known}, reference="bk-id")
    assert by_id.contact_id == known
    contacts = {r["id"]: r["properties"] for r in sb.state("hubspot")["contacts"]}
    assert contacts[str(phone.contact_id)]["phone"] == "+15555550199"


def test_rebooking_the_same_reference_from_another_process_reuses_the_deal(sb: Sandbox) -> None:
    env = {"PMS_HUBSPOT_REFERENCE_PROPERTY": REFERENCE_PROPERTY}
    with client(sb, **env) as c1, client(sb, **env) as c2:
        a = book(c1, reference="bk-twice")
        b = book(c2, reference="bk-twice")
    assert a.id == b.id
    state = sb.state("hubspot")
    assert len(state["deals"]) == 1 and len(state["meetings"]) == 1
    assert state["deals"][0]["properties"][REFERENCE_PROPERTY] == "bk-twice"


def test_update_of_unknown_booking_is_not_found(sb: Sandbox) -> None:
    with client(sb) as c, pytest.raises(NotFoundError):
        c.update_appointment("20450000001:61300000001", {"title": "x"}, provider="hubspot")


def test_bad_token_gets_hubspots_401(sb: Sandbox) -> None:
    with (
        client(sb, PMS_HUBSPOT_PRIVATE_APP_TOKEN="pat-na1-wrongtoken") as c,
        pytest.raises(AuthenticationError) as info,
    ):
        book(c)
    assert "PMS_HUBSPOT_PRIVATE_APP_TOKEN" in str(info.value)
    assert info.value.code == "INVALID_AUTHENTICATION"
    raw = requests.get(sb.base_url("hubspot") + "/crm/v3/objects/deals/1", timeout=5)
    assert raw.status_code == 401
    assert raw.json()["category"] == "INVALID_AUTHENTICATION" and raw.json()["status"] == "error"


# ---------------------------------------------------------------------------------------------
# reconcile against real faults


def test_deal_reset_after_commit_is_reconciled(sb: Sandbox) -> None:
    sb.inject("hubspot", Fault.reset_after_commit(), operation="deals.create", times=1)
    with client(sb) as c:
        appt = book(c, reference="bk-reset-deal")
    state = sb.state("hubspot")
    assert len(state["deals"]) == 1 and len(state["meetings"]) == 1
    assert appt.id == state["bookings"][0]["id"]


def test_meeting_timeout_is_reconciled_through_the_deal(sb: Sandbox) -> None:
    sb.inject("hubspot", Fault.delay(1.0), operation="meetings.create", times=1)
    with client(sb, PMS_HUBSPOT_TIMEOUT_MS="300") as c:
        appt = book(c, reference="bk-slow-meeting")
    state = sb.state("hubspot")
    assert len(state["meetings"]) == 1 and appt.id == state["bookings"][0]["id"]


def test_note_5xx_after_commit_is_not_duplicated(sb: Sandbox) -> None:
    sb.inject("hubspot", Fault.server_error(502, commit=True), operation="notes.create", times=1)
    with client(sb) as c:
        receipt = c.push_performance_report(REPORT, provider="hubspot")
    notes = sb.state("hubspot")["notes"]
    assert [n["id"] for n in notes] == [receipt.id]


def test_search_lag_within_the_settle_window_is_reconciled(sb: Sandbox) -> None:
    emulator(sb).search_lag = 0.5
    sb.inject("hubspot", Fault.reset_after_commit(), operation="deals.create", times=1)
    environ = {**sb.environ(), "PMS_HUBSPOT_RATE_LIMIT": "off"}
    with PMSClient(environ=environ, env_file=None, sleep=time.sleep) as c:  # the settle wait is real here
        book(c, reference="bk-lagging")
    assert len(sb.state("hubspot")["deals"]) == 1


@pytest.mark.parametrize(("reference_property", "deals"), [(None, 1), (REFERENCE_PROPERTY, 1)])
def test_search_lag_beyond_the_settle_window_is_reconciled(
    sb: Sandbox, reference_property: str | None, deals: int
) -> None:
    """Even when HubSpot's index lags far longer than the settle wait, an ambiguous deal create
    is found: through the contact's associated deals (a consistent read) or the upsert key."""
    emulator(sb).search_lag = 120.0
    sb.inject("hubspot", Fault.reset_after_commit(), operation="deals.create", times=1)
    sb.inject("hubspot", Fault.reset_after_commit(), operation="deals.upsert", times=1)
    env = {"PMS_HUBSPOT_REFERENCE_PROPERTY": reference_property} if reference_property else {}
    with client(sb, **env) as c:
        book(c, reference="bk-lag-beyond")
    state = sb.state("hubspot")
    assert len(state["deals"]) == deals
    assert len(state["meetings"]) == 1


def test_injected_429_is_retried(sb: Sandbox) -> None:
    sb.inject("hubspot", Fault.rate_limit(retry_after=1), operation="meetings.update", times=1)
    with client(sb) as c:
        appt = book(c, reference="bk-429")
        c.update_appointment(appt.id, {"title": "x"}, provider="hubspot")
    assert sb.state("hubspot")["bookings"][0]["title"] == "x"


def test_rate_limit_headers_are_exposed(sb: Sandbox) -> None:
    sb.set_rate_limit("hubspot", 100, 10)
    try:
        with client(sb) as c:
            book(c, reference="bk-headers")
            info = c.rate_limit_info("hubspot")
    finally:
        sb.set_rate_limit("hubspot", None)
    assert info is not None and info.limit == 100 and info.interval_seconds == 10.0
    assert info.remaining is not None and info.remaining < 100 and info.daily_limit == 250000


# ---------------------------------------------------------------------------------------------
# strictness: what the contract rejects, the sandbox rejects


def _raw(sb: Sandbox, method: str, path: str, body: Any = None, token: str | None = "valid") -> requests.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = "Bearer " + (emulator(sb).token if token == "valid" else token)
    return requests.request(method, sb.base_url("hubspot") + path, json=body, headers=headers, timeout=5)


def _good_bodies(sb: Sandbox) -> dict[str, tuple[str, str, Any]]:
    emu = emulator(sb)
    contact = emu.seed("contacts", {"email": "jane@example.com"})
    deal = emu.seed("deals", {"dealname": "d", "dealstage": "appointmentscheduled", "pipeline": "default"})

    def assoc(to: str, type_id: int) -> dict[str, Any]:
        return {"to": {"id": to}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}

    return {
        "deal": (
            "POST",
            "/crm/v3/objects/deals",
            {
                "properties": {
                    "dealname": "Cleaning - Jane [bk-1]",
                    "pipeline": "default",
                    "dealstage": "appointmentscheduled",
                    "closedate": "2026-10-05T13:00:00.000Z",
                },
                "associations": [assoc(contact, 3)],
            },
        ),
        "meeting": (
            "POST",
            "/crm/v3/objects/meetings",
            {
                "properties": {
                    "hs_timestamp": "2026-10-05T13:00:00.000Z",
                    "hs_meeting_title": "Cleaning",
                    "hs_meeting_start_time": "2026-10-05T13:00:00.000Z",
                    "hs_meeting_end_time": "2026-10-05T13:45:00.000Z",
                    "hs_meeting_body": "Booking reference: [bk-1]",
                    "hs_meeting_outcome": "SCHEDULED",
                },
                "associations": [assoc(contact, 200), assoc(deal, 212)],
            },
        ),
    }


def _mutations() -> list[tuple[str, str, Any, bool]]:
    """(request, what is wrong, how to make it so, whether the contract checker sees it too).

    What the contract rejects, the sandbox rejects; some requests are wrong only given the
    account's data (a stage, a record), which the contract checker cannot see.
    """

    def set_type(body: Any, index: int, value: int) -> None:
        body["associations"][index]["types"][0]["associationTypeId"] = value

    def prop(name: str, value: Any) -> Any:
        return lambda b: b["properties"].__setitem__(name, value)

    return [
        ("deal", "deal->contact association id 4", lambda b: set_type(b, 0, 4), True),
        ("meeting", "meeting->deal association id 211", lambda b: set_type(b, 1, 211), True),
        ("meeting", "unknown meeting property", prop("hs_meeting_start", "x"), True),
        ("meeting", "outcome CANCELLED", prop("hs_meeting_outcome", "CANCELLED"), True),
        ("deal", "closedate with an offset", prop("closedate", "2026-10-05T09:00:00-04:00"), True),
        ("deal", "numeric property value", prop("amount", 150), True),
        ("deal", "deal without dealstage", lambda b: b["properties"].pop("dealstage"), True),
        ("deal", "association category typo", lambda b: b["associations"][0]["types"][0].__setitem__(
            "associationCategory", "HUBSPOT"), True),
        ("deal", "unknown stage", prop("dealstage", "nosuchstage"), False),
        ("meeting", "association to a missing record", lambda b: b["associations"][0]["to"].__setitem__("id", "999"),
         False),
    ]  # fmt: skip


def test_good_requests_are_accepted(sb: Sandbox) -> None:
    for method, path, body in _good_bodies(sb).values():
        assert (
            check_request(method, "https://api.hubapi.com" + path, {"Authorization": "Bearer " + _token()}, body) == []
        )
        resp = _raw(sb, method, path, body)
        assert resp.status_code == 201, resp.text
        assert resp.json()["id"].isdigit()


def _token() -> str:
    from ._hubspot_support import TOKEN

    return TOKEN


@pytest.mark.parametrize("index", range(len(_mutations())), ids=[m[1] for m in _mutations()])
def test_bad_requests_get_hubspots_400(sb: Sandbox, index: int) -> None:
    which, what, mutate, contract_sees_it = _mutations()[index]
    method, path, body = _good_bodies(sb)[which]
    bad = copy.deepcopy(body)
    mutate(bad)
    if contract_sees_it:
        assert check_request(method, "https://api.hubapi.com" + path, {"Authorization": "Bearer " + _token()}, bad), (
            what
        )
    resp = _raw(sb, method, path, bad)
    assert resp.status_code == 400, (what, resp.status_code, resp.text)
    payload = resp.json()
    assert payload["status"] == "error" and payload["category"] == "VALIDATION_ERROR" and payload["correlationId"]


def test_missing_bearer_is_rejected_by_both(sb: Sandbox) -> None:
    method, path, body = _good_bodies(sb)["deal"]
    assert check_request(method, "https://api.hubapi.com" + path, {}, body)
    assert _raw(sb, method, path, body, token=None).status_code == 401


def test_unknown_property_error_names_the_property(sb: Sandbox) -> None:
    method, path, body = _good_bodies(sb)["meeting"]
    body["properties"]["hs_meeting_start"] = "x"
    resp = _raw(sb, method, path, body)
    assert "PROPERTY_DOESNT_EXIST" in resp.json()["message"]
    info = parse_error(HttpResponse(resp.status_code, dict(resp.headers), resp.text, method, path))
    assert info.fields == ("hs_meeting_start",) and info.code == "VALIDATION_ERROR"


def test_wrong_paths_and_shapes(sb: Sandbox) -> None:
    deal = _good_bodies(sb)["deal"][2]
    unknown = _raw(sb, "POST", "/crm/v3/object/deals", deal)
    assert unknown.status_code == 501, "a route the emulator lacks is not a 'record not found'"
    assert unknown.json()["category"] == "NOT_EMULATED" and "POST /crm/v3/object/deals" in unknown.json()["message"]
    upsert = {"inputs": [{"idProperty": REFERENCE_PROPERTY, "id": "bk-9", "properties": deal["properties"],
                          "associations": deal["associations"]}]}  # fmt: skip
    resp = _raw(sb, "POST", "/crm/v3/objects/deals/batch/upsert", upsert)
    assert resp.status_code == 400 and "Unrecognized field" in resp.json()["message"]
    non_unique = {"inputs": [{"idProperty": "dealname", "id": "x", "properties": deal["properties"]}]}
    resp = _raw(sb, "POST", "/crm/v3/objects/deals/batch/upsert", non_unique)
    assert resp.status_code == 400 and "non-unique" in resp.json()["message"]
    search = {"filterGroups": [{"filters": [{"propertyName": "dealname", "operator": "LIKE", "value": "x"}]}]}
    assert _raw(sb, "POST", "/crm/v3/objects/deals/search", search).status_code == 400
    assert _raw(sb, "POST", "/crm/v3/objects/deals/search", {"limit": 500}).status_code == 400
    too_many = {"filterGroups": [{"filters": [{"propertyName": "dealname", "operator": "EQ", "value": "x"}]}] * 6}
    assert _raw(sb, "POST", "/crm/v3/objects/deals/search", too_many).status_code == 400
    assert _raw(sb, "GET", "/crm/v3/objects/deals/not-a-number").status_code == 404
    assert _raw(sb, "PUT", "/crm/v4/objects/meetings/1/associations/default/notes/2").status_code == 400
    resp = requests.post(
        sb.base_url("hubspot") + "/crm/v3/objects/deals",
        data="{not json",
        headers={"Authorization": "Bearer " + emulator(sb).token, "Content-Type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 400 and resp.json()["category"] == "VALIDATION_ERROR"


def test_operations_fault_injection_can_target(sb: Sandbox) -> None:
    """Each object type has the same eight operations, under both path styles."""
    actions = ("search", "upsert", "batch_read", "create", "list", "read", "update", "archive")
    types = ("contacts", "companies", "deals", "notes", "meetings")
    expected = {f"{t}.{a}" for t in types for a in actions} | {"associations.put", "associations.batch_read"}
    assert {route.operation for route in emulator(sb).routes()} == expected
    for path in ("/crm/v3/objects/notes/batch/read", "/crm/objects/2026-09/0-46/batch/read"):
        matched = emulator(sb).match("POST", path)
        assert matched is not None and matched[0].operation == "notes.batch_read"


def test_archive_hides_the_record(sb: Sandbox) -> None:
    contact = emulator(sb).seed("contacts", {"email": "gone@example.com"})
    resp = _raw(sb, "DELETE", f"/crm/v3/objects/contacts/{contact}")
    assert resp.status_code == 204 and resp.headers["X-HubSpot-RateLimit-Daily"] == "250000"
    assert _raw(sb, "GET", f"/crm/v3/objects/contacts/{contact}").status_code == 404
    assert _raw(sb, "DELETE", f"/crm/v3/objects/contacts/{contact}").status_code == 404
    assert emulator(sb).records("contacts") == []
    assert [r["archived"] for r in emulator(sb).records("contacts", include_archived=True)] == [True]


def test_contact_email_is_unique_with_existing_id(sb: Sandbox) -> None:
    first = _raw(sb, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "dup@example.com"}})
    again = _raw(sb, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "DUP@example.com"}})
    assert first.status_code == 201 and again.status_code == 409
    assert again.json()["message"] == f"Contact already exists. Existing ID: {first.json()['id']}"
    by_email = _raw(sb, "GET", "/crm/v3/objects/contacts/dup%40example.com?idProperty=email")
    assert by_email.status_code == 200 and by_email.json()["id"] == first.json()["id"]


def test_search_is_limited_to_five_a_second(sb: Sandbox) -> None:
    body = {"filterGroups": [], "limit": 1}
    statuses = [_raw(sb, "POST", "/crm/v3/objects/notes/search", body).status_code for _ in range(6)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    resp = _raw(sb, "POST", "/crm/v3/objects/notes/search", body)
    if resp.status_code == 429:
        assert resp.json()["message"] == "You have reached your secondly limit."


@pytest.mark.parametrize(
    ("object_type", "flt", "total"),
    [
        ("contacts", {"propertyName": "hs_object_id", "operator": "BETWEEN", "value": "1", "highValue": "zzz"}, 1),
        ("meetings", {"propertyName": "hs_timestamp", "operator": "EQ", "value": "²"}, 0),
    ],
    ids=["number between a number and a text", "date-time filter on digits int() cannot read"],
)
def test_odd_filter_values_are_compared_not_crashed_on(
    sb: Sandbox, object_type: str, flt: dict[str, str], total: int
) -> None:
    emulator(sb).seed("contacts", {"email": "x@example.com"})
    emulator(sb).seed("meetings", {"hs_timestamp": "2026-10-05T13:00:00.000Z"})
    emulator(sb).settle()
    resp = _raw(sb, "POST", f"/crm/v3/objects/{object_type}/search", {"filterGroups": [{"filters": [flt]}]})
    assert resp.status_code == 200 and resp.json()["total"] == total


def test_validation_errors_reach_the_caller_typed(sb: Sandbox) -> None:
    with client(sb, PMS_HUBSPOT_STAGE_ID="nosuchstage") as c, pytest.raises(InvalidRequestError) as info:
        book(c, reference="bk-bad-stage")
    assert info.value.fields == ("dealstage",)
    assert len(sb.state("hubspot")["meetings"]) == 0


def test_state_is_json_ready(sb: Sandbox) -> None:
    with client(sb) as c:
        book(c, reference="bk-json")
    json.dumps(sb.state("hubspot"))
