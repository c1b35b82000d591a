"""Contract tests: every v2 request the adapter sends is valid against GoHighLevel's OpenAPI specs.

The adapter runs each operation (book, book of a returning patient, book with a known contact,
the reconcile look-up, update,
cancel, push_report, re-push, and the scheduling reads: free slots, find_patient,
find_appointments by e-mail and by reference, get_appointment) against ``responses``; every request it sent is then validated with
openapi-core against ``apps/calendars.json`` / ``apps/contacts.json`` (path, method, the required
``Version`` header and its enum, the bearer token, the JSON body). The canned responses the
adapter tests use are validated against the spec's response schemas too, so the adapter is shown
to parse the documented shapes. API v1 has no OpenAPI document; it is covered by the adapter tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

from pms_integration import PMSClient
from tests._gohighlevel_support import (
    BAD_REQUESTS,
    CAL,
    CALENDAR_ID,
    CON,
    CONTACT_ID,
    ENV_V2,
    EVENT_ID,
    GOOD_CREATE,
    NOTE_ID,
    REPORT_CONTACT_ID,
    SKIP_REASON,
    appointment_response,
    booking,
    calendar_event,
    make_response,
    note,
    prepared,
    report,
    specs_available,
    upsert_response,
    validate_request,
    validate_response,
)

pytestmark = pytest.mark.skipif(not specs_available(), reason=SKIP_REASON)

HOST = "https://services.leadconnectorhq.com"
NOTES = f"{HOST}/contacts/{REPORT_CONTACT_ID}/notes"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def contract_booking() -> dict[str, Any]:
    """Every optional field set, so the spec checks each one the adapter can send."""
    patient = {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com", "phone": "+15555550123"}
    return booking(location="Main office", reference="bk-contract", patient=patient)


def _book(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/contacts/search", json={"contacts": [], "total": 0})
    rsps.post(f"{HOST}/contacts/upsert", json=upsert_response())
    rsps.post(f"{HOST}/calendars/events/appointments", json=appointment_response())
    c.book_appointment(contract_booking())


def _book_known_contact(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/calendars/events/appointments", json=appointment_response())
    c.book_appointment(booking(patient={"name": "Jane", "phone": "+15555550123", "contact_id": CONTACT_ID}))


def _book_returning(c: PMSClient, rsps: responses.RequestsMock) -> None:
    found = {"id": CONTACT_ID, "email": "jane@example.com", "phone": "+15555550123"}
    rsps.post(f"{HOST}/contacts/search", json={"contacts": [found], "total": 1})
    rsps.post(f"{HOST}/calendars/events/appointments", json=appointment_response())
    c.book_appointment(contract_booking())


def _book_reconciled(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/contacts/search", json={"contacts": [], "total": 0})
    rsps.post(f"{HOST}/contacts/upsert", json=upsert_response())
    rsps.post(f"{HOST}/calendars/events/appointments", body=requests.exceptions.ReadTimeout("timed out"))
    rsps.get(
        f"{HOST}/calendars/events",
        json={"events": [calendar_event(title="Cleaning", description="Booking reference: bk-contract")]},
    )
    c.book_appointment(contract_booking())


def _read(rsps: responses.RequestsMock) -> None:
    event = calendar_event(description="Time zone: America/New_York\nBooking reference: bk-contract")
    rsps.get(f"{HOST}/calendars/events/appointments/{EVENT_ID}", json={"event": event})


def _update(c: PMSClient, rsps: responses.RequestsMock) -> None:
    _read(rsps)
    rsps.put(f"{HOST}/calendars/events/appointments/{EVENT_ID}", json=appointment_response())
    c.update_appointment(
        EVENT_ID,
        {
            "start": "2037-03-11T09:00:00-04:00",
            "duration_minutes": 30,
            "title": "Whitening",
            "notes": "Moved by the patient",
            "location": "Room 2",
        },
    )


def _cancel(c: PMSClient, rsps: responses.RequestsMock) -> None:
    _read(rsps)
    rsps.put(f"{HOST}/calendars/events/appointments/{EVENT_ID}", json=appointment_response(status="cancelled"))
    c.cancel_appointment(EVENT_ID, reason="ill")


def _report(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/contacts/upsert", json=upsert_response(REPORT_CONTACT_ID))
    rsps.get(NOTES, json={"notes": []})
    rsps.post(NOTES, status=201, json={"note": note("x")})
    c.push_performance_report(report())


def _repush(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.get(NOTES, json={"notes": [note("old\n\nReport id: pms-report-2037-03-01-2037-03-07")]})
    rsps.put(f"{NOTES}/{NOTE_ID}", json={"note": note("new")})
    c.push_performance_report(report())


# -- scheduling reads ----------------------------------------------------------------------------

SLOTS_ANSWER = {"2037-03-10": {"slots": ["2037-03-10T09:00:00-04:00", "2037-03-10T09:30:00-04:00"]}}
FOUND = {"id": CONTACT_ID, "email": "jane@example.com", "phone": "+15555550123", "firstName": "Jane"}
LISTED = {
    "id": EVENT_ID,
    "calendarId": CALENDAR_ID,
    "status": "booked",
    "appointmentStatus": "confirmed",
    "title": "Cleaning",
    "contactId": CONTACT_ID,
    "startTime": "2037-03-10 09:00:00",
    "endTime": "2037-03-10 09:30:00",
}


def _free_slots(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.get(f"{HOST}/calendars/{CALENDAR_ID}/free-slots", json=SLOTS_ANSWER)
    assert len(c.free_slots("2037-03-10T08:00:00-04:00", "2037-03-10T18:00:00-04:00", duration_minutes=60)) == 1


def _find_patient(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/contacts/search", json={"contacts": [FOUND], "total": 1})
    assert [p.id for p in c.find_patient(email="jane@example.com", phone="+15555550123")] == [CONTACT_ID]


def _find_appointments(c: PMSClient, rsps: responses.RequestsMock) -> None:
    rsps.post(f"{HOST}/contacts/search", json={"contacts": [FOUND], "total": 1})
    rsps.get(f"{HOST}/contacts/{CONTACT_ID}/appointments", json={"events": [LISTED]})
    _read(rsps)
    found = c.find_appointments(email="jane@example.com", start="2037-03-01T00:00:00Z", end="2037-04-01T00:00:00Z")
    assert [a.id for a in found] == [EVENT_ID]


def _find_by_reference(c: PMSClient, rsps: responses.RequestsMock) -> None:
    event = calendar_event(description="Time zone: America/New_York\nBooking reference: bk-contract")
    rsps.get(f"{HOST}/calendars/events", json={"events": [event]})
    assert [a.id for a in c.find_appointments(reference="bk-contract", start="2037-03-01T00:00:00Z")] == [EVENT_ID]


def _get_appointment(c: PMSClient, rsps: responses.RequestsMock) -> None:
    _read(rsps)
    assert c.get_appointment(EVENT_ID).id == EVENT_ID


ZONED = {"PMS_GHL_TIMEZONE": "America/New_York"}

OPERATIONS: dict[str, tuple[Callable[[PMSClient, responses.RequestsMock], None], dict[str, str], list[str]]] = {
    "book": (
        _book,
        {},
        ["POST /contacts/search", "POST /contacts/upsert", "POST /calendars/events/appointments"],
    ),
    "book_returning": (_book_returning, {}, ["POST /contacts/search", "POST /calendars/events/appointments"]),
    "book_known_contact": (_book_known_contact, {}, ["POST /calendars/events/appointments"]),
    "book_reconciled": (
        _book_reconciled,
        {},
        [
            "POST /contacts/search",
            "POST /contacts/upsert",
            "POST /calendars/events/appointments",
            "GET /calendars/events",
        ],
    ),
    "update": (
        _update,
        {},
        [f"GET /calendars/events/appointments/{EVENT_ID}", f"PUT /calendars/events/appointments/{EVENT_ID}"],
    ),
    "cancel": (
        _cancel,
        {},
        [f"GET /calendars/events/appointments/{EVENT_ID}", f"PUT /calendars/events/appointments/{EVENT_ID}"],
    ),
    "push_report": (
        _report,
        {},
        [
            "POST /contacts/upsert",
            f"GET /contacts/{REPORT_CONTACT_ID}/notes",
            f"POST /contacts/{REPORT_CONTACT_ID}/notes",
        ],
    ),
    "free_slots": (_free_slots, ZONED, [f"GET /calendars/{CALENDAR_ID}/free-slots"]),
    "find_patient": (_find_patient, {}, ["POST /contacts/search"]),
    "find_appointments": (
        _find_appointments,
        ZONED,
        [
            "POST /contacts/search",
            f"GET /contacts/{CONTACT_ID}/appointments",
            f"GET /calendars/events/appointments/{EVENT_ID}",
        ],
    ),
    "find_by_reference": (_find_by_reference, {}, ["GET /calendars/events"]),
    "get_appointment": (_get_appointment, {}, [f"GET /calendars/events/appointments/{EVENT_ID}"]),
    "repush_report": (
        _repush,
        {"PMS_GHL_REPORT_CONTACT_ID": REPORT_CONTACT_ID},
        [f"GET /contacts/{REPORT_CONTACT_ID}/notes", f"PUT /contacts/{REPORT_CONTACT_ID}/notes/{NOTE_ID}"],
    ),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_request_the_adapter_sends_matches_the_spec(rsps: responses.RequestsMock, operation: str) -> None:
    run, env, expected = OPERATIONS[operation]
    with PMSClient(environ={**ENV_V2, **env}, env_file=None, sleep=lambda s: None) as c:
        run(c, rsps)
    seen = [f"{call.request.method} {requests.utils.urlparse(call.request.url).path}" for call in rsps.calls]
    assert seen == expected
    for call in rsps.calls:
        validate_request(call.request)  # raises with the spec's complaint if anything is off


def test_the_canned_responses_match_the_spec_response_schemas() -> None:
    pairs = [
        (prepared("POST", "/contacts/upsert", body={"locationId": "x"}, version=CON), 200, upsert_response()),
        (
            prepared("POST", "/calendars/events/appointments", body=GOOD_CREATE, version=CAL),
            200,
            appointment_response(),
        ),
        (
            prepared("PUT", f"/calendars/events/appointments/{EVENT_ID}", body={"title": "x"}, version=CAL),
            200,
            appointment_response(status="cancelled"),
        ),
        (
            prepared(
                "GET",
                "/calendars/events",
                version=CAL,
                params={"locationId": "l", "calendarId": "c", "startTime": "1", "endTime": "2"},
            ),
            200,
            {"events": [calendar_event()]},
        ),
        (
            prepared("GET", f"/calendars/events/appointments/{EVENT_ID}", version=CAL),
            200,
            {"event": calendar_event(status="cancelled")},
        ),
        (prepared("GET", f"/contacts/{CONTACT_ID}/notes", version=CON), 200, {"notes": [note("x")]}),
        (prepared("POST", f"/contacts/{CONTACT_ID}/notes", body={"body": "x"}, version=CON), 201, {"note": note("x")}),
        (
            prepared("PUT", f"/contacts/{CONTACT_ID}/notes/{NOTE_ID}", body={"body": "x"}, version=CON),
            200,
            {"note": note("x")},
        ),
        (
            prepared(
                "GET",
                f"/calendars/{CALENDAR_ID}/free-slots",
                version=CAL,
                params={"startDate": "1", "endDate": "2", "timezone": "America/New_York"},
            ),
            200,
            SLOTS_ANSWER,
        ),
        (prepared("GET", f"/contacts/{CONTACT_ID}/appointments", version=CON), 200, {"events": [LISTED]}),
        (
            prepared("POST", "/calendars/events/appointments", body=GOOD_CREATE, version=CAL),
            400,
            {"statusCode": 400, "message": "The slot you have selected is no longer available."},
        ),
        (
            prepared("POST", "/contacts/upsert", body={"locationId": "x"}, version=CON),
            422,
            {"statusCode": 422, "message": ["property foo should not exist"], "error": "Unprocessable Entity"},
        ),
    ]
    for request, status, body in pairs:
        validate_response(request, make_response(status, body))


def test_a_response_of_the_wrong_shape_is_caught() -> None:
    request = prepared("POST", "/calendars/events/appointments", body=GOOD_CREATE, version=CAL)
    with pytest.raises(Exception, match=r"(?i)invalid|required"):
        validate_response(request, make_response(200, {"calendarId": 5}))


# Why each deliberately wrong request must be refused: openapi-core's own error class, so a
# request refused for an unrelated reason (a path the spec lacks, a crash) does not count.
WHY_REFUSED = {
    "create without Version header": "MissingRequiredParameter",
    "create with the contacts Version": "InvalidParameter",
    "create without contactId": "InvalidRequestBody",
    "create with a v1 field (selectedSlot)": "InvalidRequestBody",
    "create with a numeric startTime": "InvalidRequestBody",
    "update with an unknown appointmentStatus": "InvalidRequestBody",
    "update with locationId (not editable)": "InvalidRequestBody",
    "upsert without locationId": "InvalidRequestBody",
    "upsert with the calendars Version": "InvalidParameter",
    "note without body": "InvalidRequestBody",
    "note with a string pinned": "InvalidRequestBody",
    "create without a bearer token": "SecurityValidationError",
    "free slots without a date range": "MissingRequiredParameter",
}


def test_every_wrong_request_has_a_stated_reason() -> None:
    assert {name for name, _ in BAD_REQUESTS} == set(WHY_REFUSED)


@pytest.mark.parametrize("case", [name for name, _ in BAD_REQUESTS])
def test_the_validator_rejects_deliberately_wrong_requests(case: str) -> None:
    from openapi_core.validation.request import exceptions as request_errors

    spec = dict(dict(BAD_REQUESTS)[case]())
    method, path = spec.pop("method"), spec.pop("path")
    expected = getattr(request_errors, WHY_REFUSED[case])
    with pytest.raises(expected):
        validate_request(prepared(method, path, **spec))


def test_a_well_formed_request_passes_so_the_rejections_mean_something() -> None:
    validate_request(prepared("POST", "/calendars/events/appointments", body=GOOD_CREATE, version=CAL))
