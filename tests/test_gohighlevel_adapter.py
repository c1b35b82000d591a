"""GoHighLevel adapter: every operation over mocked HTTP (``responses``), v2 and v1."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import responses

import pms_integration as pms
from pms_integration import PMSClient
from pms_integration._http import Runtime
from pms_integration.config import load_config
from pms_integration.models import AppointmentRequest, AppointmentStatus, Patient, ProviderName
from pms_integration.provider import Capability
from pms_integration.providers import gohighlevel as ghl
from pms_integration.providers import gohighlevel_v1
from tests._gohighlevel_support import (
    CALENDAR_ID,
    CONTACT_ID,
    ENV_V1,
    ENV_V2,
    EVENT_ID,
    LOCATION_ID,
    NOTE_ID,
    REPORT_CONTACT_ID,
    TOKEN,
    V1_BASE,
    appointment_response,
    booking,
    calendar_event,
    note,
    report,
    upsert_response,
)

HOST = "https://services.leadconnectorhq.com"
NY = ZoneInfo("America/New_York")
UPSERT = f"{HOST}/contacts/upsert"
CREATE = f"{HOST}/calendars/events/appointments"
EVENTS = f"{HOST}/calendars/events"
EVENT = f"{HOST}/calendars/events/appointments/{EVENT_ID}"
SEARCH = f"{HOST}/contacts/search"
NOTES = f"{HOST}/contacts/{REPORT_CONTACT_ID}/notes"
V1_CREATE = f"{V1_BASE}/appointments/"
V1_EVENT = f"{V1_BASE}/appointments/v1appt01"
DESCRIPTION = "Six-month check-up\n\nTime zone: America/New_York\nBooking reference: bk-test"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Mocked HTTP where, unless a test says otherwise, the contact search finds nobody and the
    event read before an update or cancel finds a booked event."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(SEARCH, json={"contacts": [], "total": 0})
        mock.get(EVENT, json={"event": calendar_event(description=DESCRIPTION)})
        yield mock


def event_is(rsps: responses.RequestsMock, **fields: Any) -> None:
    """What the read before an update or cancel finds."""
    rsps.replace(responses.GET, EVENT, json={"event": calendar_event(**fields)})


def requests_made(rsps: responses.RequestsMock) -> list[str]:
    return [f"{call.request.method} {call.request.url.replace(HOST, '').split('?')[0]}" for call in rsps.calls]


def client(env: dict[str, str] | None = None, **extra: str) -> PMSClient:
    return PMSClient(environ={**(env or ENV_V2), **extra}, env_file=None, sleep=lambda s: None)


def sent(call: Any) -> Any:
    body = call.request.body
    return json.loads(body) if body else None


def _v1_record(status: str = "confirmed") -> dict[str, Any]:
    return {
        "id": "v1appt01",
        "calendarId": CALENDAR_ID,
        "contactId": "c1",
        "status": "booked",
        "appoinmentStatus": status,
        "title": "Cleaning",
        "notes": "Booking reference: bk-test",
        "startTime": "2037-03-10T14:00:00.000Z",
        "endTime": "2037-03-10T14:30:00.000Z",
        "selectedTimezone": "America/New_York",
    }


def v2_error(status: int, message: Any, error: str | None = None) -> dict[str, Any]:
    """A v2 error body (``message`` may be a list)."""
    return {"statusCode": status, "message": message, **({"error": error} if error else {})}


SLOT_TAKEN = "The slot you have selected is no longer available."
UNKNOWN_FIELDS = ["property selectedSlot should not exist", "startTime must be a string"]
V1_MANDATORY = {
    f"selected{name}": {"message": f"The selected {name.lower()} field is mandatory.", "rule": "required"}
    for name in ("Slot", "Timezone")
}


# ---------------------------------------------------------------------------------------------
# v2 book


def test_v2_book_searches_then_creates_contact_then_event(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, json=appointment_response(title="Cleaning"))
    with client() as c:
        appt = c.book_appointment(booking(), provider="ghl")

    # pinned: v2 book of a new patient = 3 requests (search, create the contact, the event)
    assert requests_made(rsps) == [
        "POST /contacts/search",
        "POST /contacts/upsert",
        "POST /calendars/events/appointments",
    ]
    search, upsert, create = rsps.calls
    assert search.request.headers["Version"] == "2021-07-28"
    assert sent(search) == {
        "locationId": LOCATION_ID,
        "page": 1,
        "pageLimit": 20,
        "filters": [
            {
                "group": "OR",
                "filters": [
                    {"field": "email", "operator": "eq", "value": "jane.doe@example.com"},
                    {"field": "phone", "operator": "eq", "value": "+15555550123"},
                ],
            }
        ],
    }
    for call in rsps.calls:  # no patient identifier in any URL
        assert "jane" not in call.request.url and "555" not in call.request.url
    assert upsert.request.headers["Version"] == "2021-07-28"
    assert upsert.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent(upsert) == {
        "locationId": LOCATION_ID,
        "firstName": "Jane",
        "lastName": "Doe",
        "email": "jane.doe@example.com",
        "phone": "+15555550123",
    }
    assert create.request.headers["Version"] == "2021-04-15"
    body = sent(create)
    assert body["calendarId"] == CALENDAR_ID
    assert body["locationId"] == LOCATION_ID
    assert body["contactId"] == CONTACT_ID
    assert body["startTime"] == "2037-03-10T10:00:00-04:00"
    assert body["endTime"] == "2037-03-10T10:30:00-04:00"
    # the title is what reminders show the patient: no reference in it
    assert body["title"] == "Cleaning"
    assert body["description"].endswith("Time zone: America/New_York\nBooking reference: bk-test")
    assert "Six-month check-up" in body["description"] and "Prefers Dr. Lee" in body["description"]
    assert set(body) <= {
        "calendarId",
        "locationId",
        "contactId",
        "startTime",
        "endTime",
        "title",
        "appointmentStatus",
        "description",
        "address",
    }

    assert appt.provider is ProviderName.GOHIGHLEVEL
    assert appt.id == EVENT_ID
    assert appt.status is AppointmentStatus.BOOKED
    assert appt.reference == "bk-test"
    assert appt.contact_id == CONTACT_ID
    assert appt.start == dt.datetime(2037, 3, 10, 10, tzinfo=NY)
    assert appt.end == dt.datetime(2037, 3, 10, 10, 30, tzinfo=NY)
    assert isinstance(appt.start.tzinfo, ZoneInfo) and appt.start.tzinfo.key == "America/New_York"


def test_v2_returning_patient_is_found_and_never_written(rsps: responses.RequestsMock) -> None:
    """A mother and her son share a phone and an e-mail: booking for one must not rename the other."""
    mother = {"id": "motherContact01", "firstName": "jane", "lastName": "doe", "email": "jane.doe@example.com",
              "phone": "+15555550123"}  # fmt: skip
    son = {"id": "sonContact00001", "firstName": "tom", "lastName": "doe", "email": "jane.doe@example.com",
           "phone": "+15555550123"}  # fmt: skip
    rsps.replace(responses.POST, SEARCH, json={"contacts": [mother, son], "total": 2})
    rsps.post(CREATE, json=appointment_response(contact_id="sonContact00001"))
    with client() as c:
        appt = c.book_appointment(booking(patient={"name": "Tom Doe", "email": "jane.doe@example.com",
                                                   "phone": "+15555550123"}))  # fmt: skip
    # pinned: v2 book of a returning patient = 2 requests; no contact write at all
    assert requests_made(rsps) == ["POST /contacts/search", "POST /calendars/events/appointments"]
    assert sent(rsps.calls[1])["contactId"] == "sonContact00001"  # the one with the patient's name
    assert appt.contact_id == "sonContact00001"


def test_v2_contact_search_prefers_both_keys_then_email(rsps: responses.RequestsMock) -> None:
    phone_only = {"id": "phoneOnly000001", "phone": "+15555550123"}
    email_only = {"id": "emailOnly000001", "email": "JANE.DOE@example.com"}
    unrelated = {"id": "unrelated000001", "email": "someone@example.com"}  # the vendor's search is not trusted
    rsps.replace(responses.POST, SEARCH, json={"contacts": [unrelated, phone_only, email_only]})
    rsps.post(CREATE, json=appointment_response())
    with client() as c:
        c.book_appointment(booking(patient={"name": "Ann Other", "email": "jane.doe@example.com",
                                            "phone": "+15555550123"}))  # fmt: skip
    assert sent(rsps.calls[1])["contactId"] == "emailOnly000001"


def test_v2_book_with_known_contact_skips_upsert(rsps: responses.RequestsMock) -> None:
    rsps.post(CREATE, json=appointment_response(contact_id="knownContact01"))
    patient = {"name": "Jane Doe", "email": "jane.doe@example.com", "contact_id": "knownContact01"}
    with client() as c:
        appt = c.book_appointment(booking(patient=patient))
    assert len(rsps.calls) == 1  # pinned: v2 book with a known contact = 1 request
    assert sent(rsps.calls[0])["contactId"] == "knownContact01"
    assert appt.contact_id == "knownContact01"


ZONES = [
    # (API version, start, timezone, PMS_GHL_TIMEZONE, the start sent, the zone recorded)
    # 8 March 2037 is the US spring-forward (2037 has 2026's calendar): one day apart, different offsets
    ("v2", "2037-03-07T15:00:00Z", "America/New_York", None, "2037-03-07T10:00:00-05:00", "America/New_York"),
    ("v2", "2037-03-09T14:00:00Z", "America/New_York", None, "2037-03-09T10:00:00-04:00", "America/New_York"),
    # a ...Z start names no zone: PMS_GHL_TIMEZONE wins over the model's defaulted "UTC"
    ("v2", "2037-03-10T14:00:00Z", None, "America/Chicago", "2037-03-10T09:00:00-05:00", "America/Chicago"),
    # a named zone beats the practice zone
    (
        "v2",
        "2037-03-10T14:00:00Z",
        "America/New_York",
        "America/Chicago",
        "2037-03-10T10:00:00-04:00",
        "America/New_York",
    ),
    # no zone known: the caller's offset stays
    ("v2", "2037-03-10T10:00:00+05:30", None, None, "2037-03-10T10:00:00+05:30", None),
    ("v1", "2037-03-09T14:00:00Z", "America/New_York", None, "2037-03-09T10:00:00-04:00", "America/New_York"),
    ("v1", "2037-03-07T15:00:00Z", "America/New_York", None, "2037-03-07T10:00:00-05:00", "America/New_York"),
    ("v1", "2037-03-10T10:00:00-04:00", None, "Europe/Berlin", "2037-03-10T15:00:00+01:00", "Europe/Berlin"),
    ("v1", "2037-03-10T15:00:00Z", None, "America/Chicago", "2037-03-10T10:00:00-05:00", "America/Chicago"),
    # v1 needs a zone: with no practice zone, the start's own (UTC) is all there is
    ("v1", "2037-03-11T15:00:00Z", None, None, "2037-03-11T15:00:00+00:00", "UTC"),
]


@pytest.mark.parametrize(("version", "start", "timezone", "practice", "sent_start", "zone"), ZONES)
def test_book_writes_the_start_in_the_bookings_zone(
    rsps: responses.RequestsMock,
    version: str,
    start: str,
    timezone: str | None,
    practice: str | None,
    sent_start: str,
    zone: str | None,
) -> None:
    """The zone the request names, else PMS_GHL_TIMEZONE, else the start's own offset; DST-correct."""
    end = (dt.datetime.fromisoformat(start.replace("Z", "+00:00")) + dt.timedelta(minutes=30)).isoformat()
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, json=appointment_response(start=start, end=end))
    rsps.post(V1_CREATE, json={"id": "v1appt01"})
    rsps.get(V1_EVENT, json={**_v1_record(), "startTime": start, "endTime": end})
    env = {**(ENV_V1 if version == "v1" else ENV_V2), **({"PMS_GHL_TIMEZONE": practice} if practice else {})}
    with client(env) as c:
        appt = c.book_appointment(booking(start=start, timezone=timezone))
    body = sent(next(call for call in rsps.calls if call.request.url in (CREATE, V1_CREATE)))
    if version == "v1":
        assert (body["selectedSlot"], body["selectedTimezone"]) == (sent_start, zone)
    else:
        assert body["startTime"] == sent_start
        assert f"Time zone: {zone}" in body["description"] if zone else "Time zone" not in body["description"]
    assert appt.start is not None and appt.start.isoformat() == sent_start


def test_a_utc_zoneinfo_names_its_zone_and_a_bare_z_does_not() -> None:
    adapter = make_adapter({**ENV_V2, "PMS_GHL_TIMEZONE": "America/Chicago"})
    named = AppointmentRequest(
        start=dt.datetime(2037, 3, 11, 14, tzinfo=ZoneInfo("UTC")), patient=Patient(email="a@example.com")
    )
    bare = AppointmentRequest(
        start=dt.datetime(2037, 3, 11, 14, tzinfo=dt.timezone.utc), patient=Patient(email="a@example.com")
    )
    assert adapter.appointment_body(named, CONTACT_ID)["startTime"] == "2037-03-11T14:00:00+00:00"
    assert adapter.appointment_body(bare, CONTACT_ID)["startTime"] == "2037-03-11T09:00:00-05:00"
    adapter.close()


def test_v2_book_merges_extra_and_location(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, json=appointment_response())
    with client() as c:
        c.book_appointment(booking(location="12 High St", extra={"assignedUserId": "user1", "toNotify": False}))
    body = sent(rsps.calls[2])
    assert body["address"] == "12 High St"
    assert body["assignedUserId"] == "user1"
    assert body["toNotify"] is False


def test_v2_book_slot_taken_is_a_conflict_and_not_retried(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, status=400, json=v2_error(400, SLOT_TAKEN, "Bad Request"))
    # the slot holds someone else's booking (another reference), so the refusal stands
    rsps.get(EVENTS, json={"events": [calendar_event(event_id="someoneElse01", title="Other (ref bk-other)")]})
    with client() as c, pytest.raises(pms.ConflictError) as info:
        c.book_appointment(booking())
    err = info.value
    assert err.status_code == 400
    assert err.code == "SLOT_UNAVAILABLE"
    assert not err.outcome_unknown
    assert "no longer available" in str(err)
    assert len(rsps.calls) == 4  # search, upsert, one create, the look-up of who holds the slot


def test_v2_book_refused_because_the_slot_holds_this_very_booking_returns_it(rsps: responses.RequestsMock) -> None:
    """An earlier attempt at the same reference (another process whose answer was lost) made the
    booking: GoHighLevel refuses the slot, and the booking holding it is the answer."""
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, status=400, json=v2_error(400, SLOT_TAKEN, "Bad Request"))
    request = booking()
    mine = calendar_event(event_id="mineFromBefore01", title=f"Cleaning (ref {request['reference']})")
    rsps.get(EVENTS, json={"events": [mine]})
    with client() as c:
        appt = c.book_appointment(request)
    assert (appt.id, appt.reference) == ("mineFromBefore01", request["reference"])
    assert requests_made(rsps).count("POST /calendars/events/appointments") == 1


def test_v2_book_refused_and_the_look_up_fails_keeps_the_vendors_answer(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, status=400, json=v2_error(400, SLOT_TAKEN, "Bad Request"))
    rsps.get(EVENTS, status=500, json={"message": "down"})
    with client() as c, pytest.raises(pms.ConflictError) as info:
        c.book_appointment(booking())
    assert info.value.code == "SLOT_UNAVAILABLE"


# ---------------------------------------------------------------------------------------------
# v2 update and cancel


def test_v2_update_reads_then_sends_only_changed_fields(rsps: responses.RequestsMock) -> None:
    rsps.put(EVENT, json=appointment_response(title="Whitening", start="2037-03-11T14:30:00-04:00"))
    with client() as c:
        appt = c.update_appointment(EVENT_ID, {"title": "Whitening"})
    # pinned: update = 2 requests (read: a cancelled booking is refused without a write)
    assert requests_made(rsps) == [
        f"GET /calendars/events/appointments/{EVENT_ID}",
        f"PUT /calendars/events/appointments/{EVENT_ID}",
    ]
    call = rsps.calls[1]
    assert call.request.headers["Version"] == "2021-04-15"
    assert sent(call) == {"title": "Whitening"}
    assert appt.id == EVENT_ID
    assert appt.title == "Whitening"
    assert appt.reference == "bk-test"  # from the description the read returned


def test_v2_update_reschedule(rsps: responses.RequestsMock) -> None:
    rsps.put(EVENT, json=appointment_response(start="2037-11-02T09:00:00-05:00", end="2037-11-02T10:00:00-05:00"))
    with client() as c:
        appt = c.update_appointment(
            EVENT_ID, {"start": "2037-11-02T14:00:00Z", "duration_minutes": 60, "timezone": "America/New_York"}
        )
    assert sent(rsps.calls[1]) == {"startTime": "2037-11-02T09:00:00-05:00", "endTime": "2037-11-02T10:00:00-05:00"}
    assert appt.start is not None and appt.start.isoformat() == "2037-11-02T09:00:00-05:00"
    assert appt.status is AppointmentStatus.BOOKED


def test_v2_reschedule_without_a_zone_uses_the_bookings_own_zone(rsps: responses.RequestsMock) -> None:
    event_is(rsps, description="Time zone: America/Los_Angeles\nBooking reference: bk-test")
    rsps.put(EVENT, json=appointment_response(start="2037-11-02T06:00:00-08:00", end="2037-11-02T06:30:00-08:00"))
    with client(PMS_GHL_TIMEZONE="America/Chicago") as c:
        appt = c.update_appointment(EVENT_ID, {"start": "2037-11-02T14:00:00Z", "duration_minutes": 30})
    assert sent(rsps.calls[1])["startTime"] == "2037-11-02T06:00:00-08:00"
    assert appt.start is not None and appt.start.isoformat() == "2037-11-02T06:00:00-08:00"


def test_v2_update_notes_keeps_the_reference_and_zone_lines(rsps: responses.RequestsMock) -> None:
    rsps.put(EVENT, json=appointment_response())
    with client() as c:
        c.update_appointment(EVENT_ID, {"notes": "Bring X-rays", "location": "Room 2"})
    assert sent(rsps.calls[1]) == {
        "description": "Bring X-rays\n\nTime zone: America/New_York\nBooking reference: bk-test",
        "address": "Room 2",
    }


@pytest.mark.parametrize(
    ("reason", "written"),
    [
        ("patient is ill", {"description": DESCRIPTION + "\n\nCancellation reason: patient is ill"}),
        (None, {}),  # no reason: the description is left alone
    ],
)
def test_v2_cancel_reads_sets_the_status_and_records_the_reason(
    rsps: responses.RequestsMock, reason: str | None, written: dict[str, str]
) -> None:
    rsps.put(EVENT, json=appointment_response(status="cancelled"))
    with client() as c:
        appt = c.cancel_appointment(EVENT_ID, reason=reason)
    # pinned: cancel = 2 requests (read, then the status PUT)
    assert requests_made(rsps) == [
        f"GET /calendars/events/appointments/{EVENT_ID}",
        f"PUT /calendars/events/appointments/{EVENT_ID}",
    ]
    assert sent(rsps.calls[1]) == {"appointmentStatus": "cancelled", **written}
    assert appt.status is AppointmentStatus.CANCELLED
    assert appt.reference == "bk-test"  # read back from the description
    assert appt.start is not None and appt.end is not None
    assert appt.start.isoformat() == "2037-03-10T10:00:00-04:00"


def test_recurring_instance_ids_are_accepted(rsps: responses.RequestsMock) -> None:
    instance = f"{EVENT_ID}_1729821600000_1800"
    url = f"{HOST}/calendars/events/appointments/{instance}"
    rsps.get(url, json={"event": calendar_event(event_id=instance)})
    rsps.put(url, json=appointment_response(event_id=instance))
    with client() as c:
        assert c.cancel_appointment(instance).id == instance


# ---------------------------------------------------------------------------------------------
# reports


def test_push_report_creates_note_on_upserted_reports_contact(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response(REPORT_CONTACT_ID))
    rsps.get(NOTES, json={"notes": [note("an unrelated note", note_id="otherNote01")]})
    rsps.post(NOTES, status=201, json={"note": note("...", title="AI receptionist report")})
    with client() as c:
        receipt = c.push_performance_report(report())
    assert [call.request.method for call in rsps.calls] == ["POST", "GET", "POST"]
    assert all(call.request.headers["Version"] == "2021-07-28" for call in rsps.calls)
    upsert_body = sent(rsps.calls[0])
    assert upsert_body["email"] == ghl.REPORTS_CONTACT_EMAIL and upsert_body["locationId"] == LOCATION_ID
    body = sent(rsps.calls[2])
    assert body["title"] == "AI receptionist report 2037-03-01 to 2037-03-07"
    assert "calls handled" in body["body"] and "142" in body["body"]
    assert body["body"].endswith("Report id: pms-report-2037-03-01-2037-03-07")
    assert body["pinned"] is False
    assert receipt.id == NOTE_ID and receipt.created is True
    assert receipt.report_id == "pms-report-2037-03-01-2037-03-07"


def test_repush_of_a_note_deleted_in_ghl_makes_a_new_one(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response(REPORT_CONTACT_ID))
    rsps.get(NOTES, json={"notes": []})
    rsps.post(NOTES, status=201, json={"note": note("first")})
    with client() as c:
        c.push_performance_report(report())
        rsps.put(f"{NOTES}/{NOTE_ID}", status=404, json={"statusCode": 404, "message": "Note not found"})
        again = c.push_performance_report(report())
    methods = [call.request.method for call in rsps.calls]
    assert methods == ["POST", "GET", "POST", "PUT", "GET", "POST"]
    assert again.created is True


def test_a_configured_contact_needs_no_upsert_and_the_report_marker_must_match_exactly(
    rsps: responses.RequestsMock,
) -> None:
    configured = f"{HOST}/contacts/configuredC01/notes"
    # a different report whose id merely starts with ours must not be overwritten
    rsps.get(configured, json={"notes": [note("Report id: pms-report-2037-03-01-2037-03-070")]})
    rsps.post(configured, status=201, json={"note": note("x", note_id="newNote0001", contact_id="configuredC01")})
    with client(PMS_GHL_REPORT_CONTACT_ID="configuredC01") as c:
        receipt = c.push_performance_report(report())
    assert requests_made(rsps) == ["GET /contacts/configuredC01/notes", "POST /contacts/configuredC01/notes"]
    assert receipt.created is True and receipt.id == "newNote0001"


def test_report_contact_is_upserted_once_across_threads(rsps: responses.RequestsMock) -> None:
    gate = threading.Event()

    def slow_upsert(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        gate.wait(2)
        return 200, {}, json.dumps(upsert_response(REPORT_CONTACT_ID))

    rsps.add_callback(responses.POST, UPSERT, callback=slow_upsert)
    adapter = make_adapter(ENV_V2)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(adapter.report_contact_id())) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    adapter.close()
    assert results == [REPORT_CONTACT_ID] * 8
    assert len(rsps.calls) == 1


# ---------------------------------------------------------------------------------------------
# reconcile after an ambiguous create


def test_timeout_on_create_then_lookup_finds_it(rsps: responses.RequestsMock) -> None:
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, body=requests.exceptions.ReadTimeout("read timed out"))
    found = calendar_event(title="Cleaning (ref bk-test)", description="Booking reference: bk-test")
    rsps.get(EVENTS, json={"events": [calendar_event(event_id="someoneElse01", title="Other (ref bk-other)"), found]})
    with client() as c:
        appt = c.book_appointment(booking())
    assert appt.id == EVENT_ID and appt.reference == "bk-test"
    posts = [call for call in rsps.calls if call.request.url == CREATE]
    assert len(posts) == 1  # nothing re-created
    lookup = next(call for call in rsps.calls if call.request.method == "GET")
    assert lookup.request.headers["Version"] == "2021-04-15"
    params = dict(requests.utils.urlparse(lookup.request.url).query.split("&")[i].split("=") for i in range(4))
    assert params["locationId"] == LOCATION_ID and params["calendarId"] == CALENDAR_ID
    start_ms = int(dt.datetime(2037, 3, 10, 14, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert int(params["startTime"]) <= start_ms < int(params["endTime"])


def test_unreadable_2xx_on_update_is_unexpected(rsps: responses.RequestsMock) -> None:
    rsps.put(EVENT, body="not json")
    with client() as c, pytest.raises(pms.UnexpectedResponseError):
        c.update_appointment(EVENT_ID, {"title": "x"})


# fmt: off
AMBIGUOUS = {
    # the description lost its reference (edited in the UI), but it is this patient at this instant
    "same-contact-same-instant": ({"status": 500, "json": v2_error(500, "Internal server error")},
                                  [calendar_event(title="Cleaning", start="2037-03-10T14:00:00.000Z")], EVENT_ID),
    # a 2xx answer without an id still made the record: looked up, never sent again
    "answer-without-id": ({"json": {"calendarId": CALENDAR_ID}}, [], pms.UnexpectedResponseError),
}
# fmt: on


@pytest.mark.parametrize(("create", "listed", "outcome"), list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
def test_an_ambiguous_create_is_looked_up_before_it_is_sent_again(
    rsps: responses.RequestsMock, create: dict[str, Any], listed: list[dict[str, Any]], outcome: Any
) -> None:
    """GoHighLevel's own cases (the cross-provider ones are in tests/test_one_behaviour.py)."""
    rsps.post(UPSERT, json=upsert_response())
    rsps.post(CREATE, **create)
    rsps.get(EVENTS, json={"events": listed})
    with client() as c:
        if isinstance(outcome, str):
            assert c.book_appointment(booking()).id == outcome
        else:
            with pytest.raises(outcome) as info:
                c.book_appointment(booking())
            assert info.value.outcome_unknown is True and "bk-test" in str(info.value)
    made = requests_made(rsps)
    assert made[2:] == ["POST /calendars/events/appointments", "GET /calendars/events"]  # looked up, not re-sent


# ---------------------------------------------------------------------------------------------
# error mapping


# fmt: off
ERROR_TABLE = [
    # (status, body, class, code, fields, text in message)
    (400, v2_error(400, "Bad Request"), pms.InvalidRequestError, None, (), "Bad Request"),
    (400, v2_error(400, SLOT_TAKEN, "Bad Request"), pms.ConflictError, "SLOT_UNAVAILABLE", (), "no longer available"),
    (401, v2_error(401, "Invalid token: access token is invalid", "Unauthorized"), pms.AuthenticationError, None, (),
     "PMS_GHL_API_KEY"),
    (401, v2_error(401, "Invalid JWT"), pms.AuthenticationError, None, (), "Invalid JWT"),
    (401, v2_error(401, "version header was not found.", "Unauthorized"), pms.InvalidRequestError, "VERSION_HEADER",
     ("Version",), "not a bad token"),
    (401, v2_error(401, "version header is invalid"), pms.InvalidRequestError, "VERSION_HEADER", ("Version",), "2021-04-15"),
    (403, v2_error(403, "The token does not have access to this location.", "Forbidden"), pms.PermissionDeniedError, None,
     (), "access to this location"),
    (404, v2_error(404, "Appointment not found"), pms.NotFoundError, None, (), "not found"),
    (422, v2_error(422, UNKNOWN_FIELDS, "Unprocessable Entity"), pms.InvalidRequestError, None,
     ("selectedSlot", "startTime"), "should not exist"),
    (429, v2_error(429, "Too Many Requests"), pms.RateLimitError, None, (), "Too Many Requests"),
    (500, v2_error(500, "Internal server error"), pms.ServerError, None, (), "Internal server error"),
    (502, "<html><body>502 Bad Gateway</body></html>", pms.ServerError, None, (), "HTTP 502"),
    # v1 shapes
    (400, {"msg": "Bad Request"}, pms.InvalidRequestError, None, (), "Bad Request"),
    (401, {"msg": "Unauthorized"}, pms.AuthenticationError, None, (), "PMS_GHL_API_KEY"),
    (422, V1_MANDATORY, pms.InvalidRequestError, "required", ("selectedSlot", "selectedTimezone"), "mandatory"),
]
# fmt: on


@pytest.mark.parametrize(("status", "body", "cls", "code", "fields", "text"), ERROR_TABLE)
def test_error_mapping_table(
    rsps: responses.RequestsMock,
    status: int,
    body: Any,
    cls: type[Exception],
    code: str | None,
    fields: tuple[str, ...],
    text: str,
) -> None:
    if isinstance(body, str):
        rsps.put(EVENT, status=status, body=body, content_type="text/html")
    else:
        rsps.put(EVENT, status=status, json=body)
    with client() as c, pytest.raises(cls) as info:
        c.update_appointment(EVENT_ID, {"title": "x"})
    err = info.value
    assert type(err) is cls
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.code == code  # type: ignore[attr-defined]
    assert err.fields == fields  # type: ignore[attr-defined]
    assert text in str(err)
    assert TOKEN not in str(err) and TOKEN not in repr(err)


def test_trace_id_becomes_request_id(rsps: responses.RequestsMock) -> None:
    rsps.put(EVENT, status=400, json={"statusCode": 400, "message": "Bad Request", "traceId": "trace-123"})
    with client() as c, pytest.raises(pms.InvalidRequestError) as info:
        c.update_appointment(EVENT_ID, {"title": "x"})
    assert info.value.request_id == "trace-123"


def test_rate_limit_headers_are_parsed(rsps: responses.RequestsMock) -> None:
    headers = {
        "X-RateLimit-Remaining": "97",
        "X-RateLimit-Max": "100",
        "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Limit-Daily": "200000",
        "X-RateLimit-Daily-Remaining": "199990",
    }
    rsps.put(EVENT, json=appointment_response(), headers=headers)
    with client() as c:
        assert c.rate_limit_info("ghl") is None
        c.update_appointment(EVENT_ID, {"title": "x"})
        info = c.rate_limit_info("ghl")
    assert info is not None
    assert (info.remaining, info.limit, info.interval_seconds) == (97, 100, 10.0)
    assert (info.daily_remaining, info.daily_limit) == (199990, 200000)


def test_rate_header_parser_edge_cases() -> None:
    assert ghl.parse_rate_headers({}) is None
    assert ghl.parse_rate_headers({"x-ratelimit-remaining": "junk"}) is None
    info = ghl.parse_rate_headers({"x-ratelimit-remaining": "0"})
    assert info is not None and info.remaining == 0 and info.limit is None


# ---------------------------------------------------------------------------------------------
# v1


def test_v1_book_posts_then_reads_back_the_calendars_length(rsps: responses.RequestsMock) -> None:
    rsps.post(
        f"{V1_BASE}/appointments/", json={"id": "004B1SpcAvh3s9E3rqk8", "contactId": "c1", "contact": {"id": "c1"}}
    )
    held = {**_v1_record(), "id": "004B1SpcAvh3s9E3rqk8"}
    held.update(startTime="2037-03-09T14:00:00.000Z", endTime="2037-03-09T14:30:00.000Z")
    rsps.get(f"{V1_BASE}/appointments/004B1SpcAvh3s9E3rqk8", json=held)
    with client(ENV_V1) as c:
        adapter = c.adapter("ghl")
        assert isinstance(adapter, ghl.GoHighLevelV1Adapter)
        assert Capability.PUSH_REPORT not in adapter.capabilities
        appt = c.book_appointment(booking(start="2037-03-09T14:00:00Z"))
    # pinned: v1 book = 2 requests; the create's answer has no times and v1 cannot set a
    # length, so the appointment is read back to report the end the calendar holds
    assert [call.request.method for call in rsps.calls] == ["POST", "GET"]
    assert appt.end is not None and appt.start is not None
    assert appt.end - appt.start == dt.timedelta(minutes=30)
    assert appt.start.utcoffset() == dt.timedelta(hours=-4)  # in the booking's zone, not UTC
    call = rsps.calls[0]
    assert "Version" not in call.request.headers
    assert call.request.headers["Authorization"] == "Bearer v1-location-api-key-0123456789"
    body = sent(call)
    assert body["calendarId"] == CALENDAR_ID
    assert body["selectedSlot"] == "2037-03-09T10:00:00-04:00"  # DST already in force
    assert body["selectedTimezone"] == "America/New_York"
    assert body["email"] == "jane.doe@example.com" and body["phone"] == "+15555550123"
    assert body["name"] == "Jane Doe"
    assert body["title"] == "Cleaning"  # no reference where reminders show it
    assert body["calendarNotes"].endswith("\n\nBooking reference: bk-test")  # v1 keeps the zone itself
    assert "locationId" not in body and "contactId" not in body
    assert appt.id == "004B1SpcAvh3s9E3rqk8" and appt.contact_id == "c1" and appt.reference == "bk-test"


def test_v1_needs_a_timezone(rsps: responses.RequestsMock) -> None:
    with client(ENV_V1) as c, pytest.raises(pms.ValidationError) as info:
        c.book_appointment(booking(start="2037-03-10T10:00:00-04:00", timezone=None))
    assert info.value.fields == ["timezone"]
    assert "PMS_GHL_TIMEZONE" in str(info.value)
    assert len(rsps.calls) == 0


def test_v1_reschedule_and_cancel(rsps: responses.RequestsMock) -> None:
    url = f"{V1_BASE}/appointments/v1appt01"
    rsps.get(url, json=_v1_record())
    rsps.put(url, json={"id": "v1appt01", "contactId": "c1"})
    rsps.put(f"{url}/status", body="")
    with client(ENV_V1) as c:
        moved = c.update_appointment(
            "v1appt01", {"start": "2037-03-11T14:30:00-04:00", "duration_minutes": 30, "timezone": "America/New_York"}
        )
        assert [call.request.method for call in rsps.calls] == ["GET", "PUT"]  # pinned: v1 update = 2
        cancelled = c.cancel_appointment("v1appt01")
    assert sent(rsps.calls[1]) == {"selectedSlot": "2037-03-11T14:30:00-04:00", "selectedTimezone": "America/New_York"}
    assert [call.request.method for call in rsps.calls][2:] == ["GET", "PUT"]  # pinned: v1 cancel = 2
    assert sent(rsps.calls[3]) == {"status": "cancelled"}
    assert moved.start == dt.datetime(2037, 3, 11, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    assert moved.end is not None and moved.end - moved.start == dt.timedelta(minutes=30)  # v1 keeps the length
    assert moved.reference == "bk-test"
    assert cancelled.status is AppointmentStatus.CANCELLED and cancelled.id == "v1appt01"
    assert cancelled.start is not None and cancelled.start.isoformat() == "2037-03-10T10:00:00-04:00"


def test_v1_cannot_change_title_and_says_v2_can(rsps: responses.RequestsMock) -> None:
    with client(ENV_V1) as c, pytest.raises(pms.UnsupportedOperationError) as info:
        c.update_appointment("v1appt01", {"title": "Whitening"})
    assert "v2" in str(info.value) and "title" in str(info.value)
    assert len(rsps.calls) == 0


def test_v1_push_report_is_unsupported(rsps: responses.RequestsMock) -> None:
    with client(ENV_V1) as c:
        with pytest.raises(pms.UnsupportedOperationError):
            c.push_performance_report(report())
        adapter = c.adapter("ghl")
        with pytest.raises(pms.UnsupportedOperationError) as info:
            adapter.push_report(load_report())
    assert "v2" in str(info.value)
    assert "v2" in str(adapter.unsupported_reason(Capability.PUSH_REPORT))  # type: ignore[attr-defined]
    assert len(rsps.calls) == 0


def load_report() -> Any:
    from pms_integration.models import PerformanceReport, structure

    return structure(report(), PerformanceReport)


def test_v1_reconcile_lists_appointments_in_the_window(rsps: responses.RequestsMock) -> None:
    url = f"{V1_BASE}/appointments/"
    rsps.post(url, body=requests.exceptions.ReadTimeout("read timed out"))
    rsps.get(
        url,
        json={
            "appointments": [
                {
                    "id": "v1appt01",
                    "calendarId": CALENDAR_ID,
                    "contactId": "c1",
                    "status": "booked",
                    "appoinmentStatus": "confirmed",
                    "title": "Cleaning (ref bk-test)",
                    "notes": "Booking reference: bk-test",
                    "startTime": "2037-03-10T14:00:00.000Z",
                    "endTime": "2037-03-10T14:30:00.000Z",
                    "selectedTimezone": "America/New_York",
                }
            ]
        },
    )
    with client(ENV_V1) as c:
        appt = c.book_appointment(booking())
    assert appt.id == "v1appt01" and appt.reference == "bk-test"
    get = rsps.calls[1]
    assert get.request.method == "GET"
    query = requests.utils.urlparse(get.request.url).query
    assert f"calendarId={CALENDAR_ID}" in query and "startDate=" in query and "endDate=" in query
    assert len([call for call in rsps.calls if call.request.method == "POST"]) == 1


def make_adapter(env: dict[str, str]) -> Any:
    settings = load_config(env, env_file=None).get(ProviderName.GOHIGHLEVEL).settings
    return ghl.create(settings, Runtime(sleep=lambda s: None))  # type: ignore[arg-type]


def test_settings_choose_the_adapter() -> None:
    for env, cls in ((ENV_V2, ghl.GoHighLevelV2Adapter), (ENV_V1, ghl.GoHighLevelV1Adapter)):
        adapter = make_adapter(env)
        assert type(adapter) is cls
        assert adapter.name is ProviderName.GOHIGHLEVEL
        assert TOKEN not in repr(adapter)
        adapter.close()
    assert ghl.GoHighLevelV1Adapter is gohighlevel_v1.GoHighLevelV1Adapter


@pytest.mark.parametrize("old", ["GoHighLevelV2", "GoHighLevelV1"])
def test_the_old_class_names_are_deprecated_aliases(old: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old}Adapter"):
        cls = getattr(ghl, old)
    assert cls is getattr(ghl, f"{old}Adapter")


def test_reference_helpers() -> None:
    assert ghl.reference_in({"title": ghl.title_with_reference("Cleaning", "bk-1")}) == "bk-1"
    assert ghl.reference_in({"title": "x", "description": "a\n\nBooking reference: bk-2"}) == "bk-2"
    assert ghl.reference_in({"title": None, "notes": 5}) is None


def test_a_429_without_a_hint_waits_out_the_10_second_window(rsps: responses.RequestsMock) -> None:
    """Without Retry-After or quota headers, the wait is GoHighLevel's documented 10-second window
    (a 429 with Retry-After: tests/test_one_behaviour.py)."""
    waits: list[float] = []
    rsps.put(EVENT, status=429, json={"statusCode": 429, "message": "Too Many Requests"})
    rsps.put(EVENT, json=appointment_response())
    with PMSClient(environ=ENV_V2, env_file=None, sleep=waits.append) as c:
        assert c.adapter("ghl").transport.rate_limit_window == 10.0  # type: ignore[attr-defined]
        assert c.update_appointment(EVENT_ID, {"title": "x"}).id == EVENT_ID
    assert [call.request.method for call in rsps.calls] == ["GET", "PUT", "PUT"]
    assert waits and max(waits) >= 10.0
