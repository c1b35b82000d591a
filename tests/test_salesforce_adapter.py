"""Unit tests of the Salesforce adapter against mocked HTTP (``responses``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import responses

from pms_integration import _time
from pms_integration._http import HttpResponse
from pms_integration.config import Secret
from pms_integration.errors import (
    AppointmentCancelledError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from pms_integration.models import (
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    structure,
)
from pms_integration.providers import salesforce
from pms_integration.providers.salesforce import (
    CANCELLED_PREFIX,
    id_checksum,
    is_salesforce_id,
    parse_error,
    parse_rate_headers,
    soql_like_contains,
    soql_string,
)

from ._salesforce_support import (
    API,
    BASE,
    CONTACT,
    EVENT_ID,
    EVENTS,
    LEAD,
    NY,
    OWNER,
    QUERY,
    RECORD_TYPE,
    REFRESH_ENV,
    TASK_ID,
    TASKS,
    TOKEN_URL,
    adapter,
    body_of,
    booking,
    calls,
    client,
    created,
    query_result,
    report,
    sf_error,
    sf_id,
    soql_of,
)
from .conftest import CANARY

EVENT_URL = f"{API}/sobjects/Event/{EVENT_ID}"
TASK_URL = f"{API}/sobjects/Task/{TASK_ID}"


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def req(**overrides: Any) -> AppointmentRequest:
    return structure(booking(**overrides), AppointmentRequest)


def rep(**overrides: Any) -> PerformanceReport:
    return structure(report(**overrides), PerformanceReport)


# ---------------------------------------------------------------------------------------------
# ids, SOQL and time helpers


def test_checksum_matches_known_ids() -> None:
    # 15 -> 18 conversions with the documented algorithm (upper-case bitmap per 5 characters)
    assert id_checksum("005000000000001") == "AAA"
    assert id_checksum("001A0000006Vm9r") == "IAC"
    assert is_salesforce_id("001A0000006Vm9rIAC")
    assert is_salesforce_id("001A0000006Vm9r")
    assert not is_salesforce_id("001A0000006Vm9rIAD")
    assert not is_salesforce_id("001a0000006vm9rIAC")  # case changed: checksum no longer matches
    assert not is_salesforce_id("001A0000006Vm9r-AC")
    assert not is_salesforce_id("001A0000006Vm9")
    assert not is_salesforce_id(None)


def test_soql_quoting() -> None:
    assert soql_string("O'Brien \\ x") == "'O\\'Brien \\\\ x'"
    assert soql_like_contains("[bk-a_b%c]") == "'%[bk-a\\_b\\%c]%'"
    assert soql_like_contains("it's") == "'%it\\'s%'"


def test_wire_times_are_utc_and_dst_correct_and_salesforce_forms_are_read() -> None:
    assert _time.utc_text(dt.datetime(2037, 3, 6, 9, 0, tzinfo=NY)) == "2037-03-06T14:00:00Z"  # EST
    assert _time.utc_text(dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY)) == "2037-03-09T13:00:00Z"  # EDT
    with pytest.raises(ValueError):
        _time.utc_text(dt.datetime(2037, 3, 9, 9, 0))
    want = dt.datetime(2025, 3, 14, 15, 0, tzinfo=dt.timezone.utc)
    for form in ("2025-03-14T15:00:00.000+0000", "2025-03-14T15:00:00Z", "2025-03-14T15:00:00.000Z"):
        assert _time.parse_instant(form) == want
    assert _time.parse_instant("yesterday") is None and _time.parse_instant(None) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("SalesforceProvider", salesforce.SalesforceAdapter),
        ("parse_limit_info", parse_rate_headers),
        ("wire_datetime", _time.utc_text),
        ("soql_datetime", _time.utc_text),
        ("parse_salesforce_datetime", _time.parse_instant),
    ],
)
def test_old_names_still_work_with_a_deprecation_warning(old: str, new: object) -> None:
    with pytest.warns(DeprecationWarning, match=old):
        assert getattr(salesforce, old) is new
    with pytest.raises(AttributeError):
        salesforce.no_such_name


# ---------------------------------------------------------------------------------------------
# book


def test_book_sends_one_event_create(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    with client(PMS_SALESFORCE_EVENT_RECORD_TYPE=RECORD_TYPE) as c:
        appt = c.book_appointment(
            booking(
                patient={"name": "Jane Doe", "email": "jane@example.com", "contact_id": CONTACT}, location="Chair 2"
            )
        )
    assert calls(rsps) == [("POST", "/services/data/v67.0/sobjects/Event/")]
    body = body_of(rsps.calls[0])
    assert body["Subject"] == "Cleaning - Jane Doe [bk-0123456789abcdef0123]"
    assert body["StartDateTime"] == "2037-03-09T13:00:00Z"
    assert body["EndDateTime"] == "2037-03-09T13:45:00Z"
    assert body["IsAllDayEvent"] is False
    assert body["ShowAs"] == "Busy"
    assert body["OwnerId"] == OWNER
    assert body["RecordTypeId"] == RECORD_TYPE
    assert body["WhoId"] == CONTACT
    assert body["Location"] == "Chair 2"
    for text in ("Prefers the morning.", "Reason: routine cleaning", "jane@example.com", "bk-0123456789abcdef0123"):
        assert text in body["Description"]
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == "Bearer " + CANARY["PMS_SALESFORCE_TOKEN"]
    assert headers["Content-Type"] == "application/json"
    assert appt.id == EVENT_ID
    assert appt.reference == "bk-0123456789abcdef0123"
    assert appt.status is AppointmentStatus.BOOKED
    assert appt.contact_id == CONTACT
    assert appt.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY)


def test_book_optional_fields_are_left_out(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    adapter().book(req(patient={"name": "Jo", "phone": "+15555550123", "contact_id": "ghl-contact-9"}))
    body = body_of(rsps.calls[0])
    assert "RecordTypeId" not in body and "WhoId" not in body and "Location" not in body
    assert "Patient id: ghl-contact-9" in body["Description"]


@pytest.mark.parametrize("who", [LEAD, LEAD[:15], CONTACT[:15]])
def test_book_lead_and_15_character_who_ids(rsps: responses.RequestsMock, who: str) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    adapter().book(req(patient={"name": "Jo", "email": "jo@example.com", "contact_id": who}))
    assert body_of(rsps.calls[0])["WhoId"] == who


def test_book_rejects_a_mistyped_contact_id_before_sending(rsps: responses.RequestsMock) -> None:
    bad = CONTACT[:15] + "ZZZ"
    with pytest.raises(ValidationError) as info:
        adapter().book(req(patient={"name": "Jo", "email": "jo@example.com", "contact_id": bad}))
    assert info.value.fields == ["patient.contact_id"]
    assert len(rsps.calls) == 0


def test_book_subject_is_truncated_but_keeps_the_reference(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    ref = "bk-" + "f" * 61
    adapter().book(req(title="T" * 200, patient={"name": "N" * 100, "email": "jo@example.com"}, reference=ref))
    subject = body_of(rsps.calls[0])["Subject"]
    assert len(subject) == 255
    assert subject.endswith(f"… [{ref}]")


def test_book_extra_fields_are_merged_and_protected_ones_refused(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    adapter().book(req(extra={"Type": "Meeting", "Chair__c": "2"}))
    body = body_of(rsps.calls[0])
    assert body["Type"] == "Meeting" and body["Chair__c"] == "2"
    for bad in ({"Subject": "x"}, {"OwnerId": OWNER}, {"bad field": 1}):
        with pytest.raises(ValidationError):
            adapter().book(req(extra=bad))
    assert len(rsps.calls) == 1


def test_book_uses_the_configured_api_version(rsps: responses.RequestsMock) -> None:
    url = f"{BASE}/services/data/v62.0/sobjects/Event/"
    rsps.post(url, json=created(EVENT_ID), status=201)
    adapter(PMS_SALESFORCE_API_VERSION="62.0").book(req())
    assert rsps.calls[0].request.url == url


# ---------------------------------------------------------------------------------------------
# reconcile after an ambiguous create failure


def found_event(**extra: Any) -> dict[str, Any]:
    record = {
        "Id": EVENT_ID,
        "Subject": "Cleaning - Jane Doe [bk-0123456789abcdef0123]",
        "StartDateTime": "2037-03-09T13:00:00.000+0000",
        "EndDateTime": "2037-03-09T13:45:00.000+0000",
        "WhoId": None,
        "Description": "--- booking details (pms-integration) ---\nTime zone: America/New_York",
        "ShowAs": "Busy",
    }
    record.update(extra)
    return record


def live_event(rsps: responses.RequestsMock, **extra: Any) -> None:
    """The read every update and cancel starts with: the Event exists and is booked."""
    rsps.get(EVENT_URL, json={"attributes": {"type": "Event"}, **found_event(**extra)})


def test_timeout_on_create_then_lookup_finds_it(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, body=requests.exceptions.ReadTimeout("slow"))
    rsps.get(QUERY, json=query_result([found_event()]))
    appt = adapter().book(req())
    assert appt.id == EVENT_ID and appt.reference == "bk-0123456789abcdef0123"
    assert appt.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY)
    assert str(appt.start.tzinfo) == "America/New_York"
    assert [m for m, _ in calls(rsps)] == ["POST", "GET"]
    soql = soql_of(rsps.calls[1])
    assert soql == (
        "SELECT Id, Subject, Description, StartDateTime, EndDateTime, WhoId FROM Event WHERE "
        f"OwnerId = '{OWNER}' AND StartDateTime = 2037-03-09T13:00:00Z "
        "AND Subject LIKE '%[bk-0123456789abcdef0123]%' LIMIT 2"
    )


def test_reconcile_escapes_like_wildcards(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, body=requests.exceptions.ReadTimeout("slow"))
    rsps.get(QUERY, json=query_result([found_event()]))
    adapter().book(req(reference="bk_1x"))
    assert "Subject LIKE '%[bk\\_1x]%'" in soql_of(rsps.calls[1])


def test_definite_create_failure_is_not_reconciled(rsps: responses.RequestsMock) -> None:
    rsps.post(
        EVENTS,
        json=sf_error("REQUIRED_FIELD_MISSING", "Required fields are missing: [EndDateTime]", ["EndDateTime"]),
        status=400,
    )
    with pytest.raises(InvalidRequestError) as info:
        adapter().book(req())
    assert info.value.outcome_unknown is False
    assert info.value.fields == ("EndDateTime",)
    assert len(rsps.calls) == 1


# ---------------------------------------------------------------------------------------------
# update


def test_reschedule_is_a_read_and_one_patch_with_start_and_end(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.patch(EVENT_URL, status=204)
    new_start = dt.datetime(2037, 11, 2, 10, 0, tzinfo=NY)  # after the DST change
    with client() as c:
        appt = c.update_appointment(EVENT_ID, {"start": new_start.isoformat(), "duration_minutes": 60})
    path = f"/services/data/v67.0/sobjects/Event/{EVENT_ID}"
    assert calls(rsps) == [("GET", path), ("PATCH", path)]
    assert body_of(rsps.calls[1]) == {"StartDateTime": "2037-11-02T15:00:00Z", "EndDateTime": "2037-11-02T16:00:00Z"}
    assert appt.id == EVENT_ID and appt.start == new_start


def test_location_change_is_one_patch(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.patch(EVENT_URL, status=204)
    appt = adapter().update(EVENT_ID, AppointmentUpdate(location="Chair 3"))
    assert body_of(rsps.calls[1]) == {"Location": "Chair 3"}
    # the answer carries the booking's times, in the zone it was booked in
    assert appt.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY) and str(appt.start.tzinfo) == "America/New_York"
    assert appt.end == dt.datetime(2037, 3, 9, 9, 45, tzinfo=NY)


def test_title_change_keeps_name_and_reference(rsps: responses.RequestsMock) -> None:
    rsps.get(EVENT_URL, json={"attributes": {"type": "Event"}, "Id": EVENT_ID, **found_event()})
    rsps.patch(EVENT_URL, status=204)
    appt = adapter().update(EVENT_ID, AppointmentUpdate(title="Check-up"))
    assert [m for m, _ in calls(rsps)] == ["GET", "PATCH"]
    assert "fields=Id%2CSubject%2CDescription" in rsps.calls[0].request.url
    assert body_of(rsps.calls[1]) == {"Subject": "Check-up - Jane Doe [bk-0123456789abcdef0123]"}
    assert appt.reference == "bk-0123456789abcdef0123"


def test_notes_change_keeps_the_details_block(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    a = adapter()
    a.book(req())
    description = body_of(rsps.calls[0])["Description"]
    rsps.get(EVENT_URL, json={**found_event(), "Description": description})
    rsps.patch(EVENT_URL, status=204)
    a.update(EVENT_ID, AppointmentUpdate(notes="Bring X-rays."))
    new = body_of(rsps.calls[2])["Description"]
    assert new.startswith("Bring X-rays.\n\n--- booking details")
    assert "Prefers the morning." not in new
    assert "Booking reference: bk-0123456789abcdef0123" in new


def test_15_character_event_id_is_accepted(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/sobjects/Event/{EVENT_ID[:15]}", json=found_event())
    rsps.delete(f"{API}/sobjects/Event/{EVENT_ID[:15]}", status=204)
    assert adapter().cancel(EVENT_ID[:15]).status is AppointmentStatus.CANCELLED


# ---------------------------------------------------------------------------------------------
# cancel


def test_cancel_reads_then_deletes(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.delete(EVENT_URL, status=204)
    with client() as c:
        appt = c.cancel_appointment(EVENT_ID, reason="patient called")
    path = f"/services/data/v67.0/sobjects/Event/{EVENT_ID}"
    assert calls(rsps) == [("GET", path), ("DELETE", path)]
    assert appt.status is AppointmentStatus.CANCELLED and appt.id == EVENT_ID
    assert appt.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY) and str(appt.start.tzinfo) == "America/New_York"
    assert appt.end == dt.datetime(2037, 3, 9, 9, 45, tzinfo=NY)
    assert appt.reference == "bk-0123456789abcdef0123"


@pytest.mark.parametrize("mode", ["delete", "soft"])
def test_cancel_of_an_already_deleted_event_succeeds_with_its_times(rsps: responses.RequestsMock, mode: str) -> None:
    rsps.get(EVENT_URL, json=sf_error("ENTITY_IS_DELETED", "entity is deleted", []), status=404)
    rsps.get(f"{API}/queryAll/", json=query_result([found_event()]))
    appt = adapter(PMS_SALESFORCE_CANCEL_MODE=mode).cancel(EVENT_ID)
    assert [m for m, _ in calls(rsps)] == ["GET", "GET"]  # no DELETE
    assert urlsplit(rsps.calls[1].request.url).path == "/services/data/v67.0/queryAll/"
    assert soql_of(rsps.calls[1]).endswith(f"FROM Event WHERE Id = '{EVENT_ID}'")
    assert appt.status is AppointmentStatus.CANCELLED
    assert appt.raw["already_cancelled"] == "ENTITY_IS_DELETED"
    assert appt.start == dt.datetime(2037, 3, 9, 9, 0, tzinfo=NY) and str(appt.start.tzinfo) == "America/New_York"


def test_cancel_racing_a_delete_is_still_success(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.delete(EVENT_URL, json=sf_error("ENTITY_IS_DELETED", "entity is deleted", []), status=404)
    appt = adapter().cancel(EVENT_ID)
    assert appt.status is AppointmentStatus.CANCELLED and appt.raw["already_cancelled"] == "ENTITY_IS_DELETED"
    assert appt.start is not None and appt.end is not None


def test_cancel_404_without_a_salesforce_body_is_an_error(rsps: responses.RequestsMock) -> None:
    rsps.get(EVENT_URL, body="<html><title>Not Found</title></html>", status=404)
    with pytest.raises(NotFoundError):
        adapter().cancel(EVENT_ID)


@pytest.mark.parametrize(
    "changes",
    [{"start": dt.datetime(2037, 4, 1, 9, tzinfo=NY), "duration_minutes": 30}, {"title": "Check-up"}],
)
def test_changing_a_soft_cancelled_booking_is_refused_without_a_write(
    rsps: responses.RequestsMock, changes: dict[str, Any]
) -> None:
    """A deleted Event, and a soft-cancelled one in soft mode, are tests/test_one_behaviour.py's
    cases; a soft-cancelled Event is refused in the delete mode too (the mode changed since)."""
    rsps.get(EVENT_URL, json=found_event(Subject=CANCELLED_PREFIX + "Cleaning - Jane Doe [bk-1]", ShowAs="Free"))
    with pytest.raises(AppointmentCancelledError) as info:
        adapter().update(EVENT_ID, AppointmentUpdate(**changes))
    assert info.value.code == "APPOINTMENT_CANCELLED" and info.value.status_code == 409
    assert "book a new appointment" in str(info.value).lower()
    assert [m for m, _ in calls(rsps)] == ["GET"]


def test_soft_cancel_marks_and_frees_the_event(rsps: responses.RequestsMock) -> None:
    rsps.get(EVENT_URL, json={**found_event(), "Description": "details", "ShowAs": "Busy"})
    rsps.patch(EVENT_URL, status=204)
    appt = adapter(PMS_SALESFORCE_CANCEL_MODE="soft").cancel(EVENT_ID, reason="feeling better")
    assert [m for m, _ in calls(rsps)] == ["GET", "PATCH"]
    patch = body_of(rsps.calls[1])
    assert set(patch) == {"Subject", "ShowAs", "Description"}
    assert patch["Subject"] == CANCELLED_PREFIX + "Cleaning - Jane Doe [bk-0123456789abcdef0123]"
    assert patch["ShowAs"] == "Free"
    assert patch["Description"].startswith("details\n\nCancelled by the AI receptionist")
    assert patch["Description"].endswith("Reason: feeling better")
    assert appt.status is AppointmentStatus.CANCELLED and appt.reference == "bk-0123456789abcdef0123"


def test_soft_cancel_keeps_a_long_subject_within_255(rsps: responses.RequestsMock) -> None:
    subject = "S" * 229 + " [bk-0123456789abcdef0123]"  # 255 characters
    rsps.get(EVENT_URL, json={**found_event(Subject=subject)})
    rsps.patch(EVENT_URL, status=204)
    adapter(PMS_SALESFORCE_CANCEL_MODE="soft").cancel(EVENT_ID)
    new = body_of(rsps.calls[1])["Subject"]
    assert len(new) <= 255 and new.startswith(CANCELLED_PREFIX) and new.endswith("[bk-0123456789abcdef0123]")


# ---------------------------------------------------------------------------------------------
# performance report


def test_first_push_queries_then_creates_a_completed_task(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY, json=query_result([], "Task"))
    rsps.post(TASKS, json=created(TASK_ID), status=201)
    with client() as c:
        receipt = c.push_performance_report(report())
    assert [m for m, _ in calls(rsps)] == ["GET", "POST"]
    assert soql_of(rsps.calls[0]) == (
        f"SELECT Id, Subject FROM Task WHERE OwnerId = '{OWNER}' "
        "AND Subject LIKE '%[pms-report-2026-03-02-2026-03-08]%' LIMIT 2"
    )
    body = body_of(rsps.calls[1])
    assert body["Subject"] == "AI receptionist report 2026-03-02 to 2026-03-08 [pms-report-2026-03-02-2026-03-08]"
    assert body["Status"] == "Completed"
    assert body["ActivityDate"] == "2026-03-08"
    assert body["OwnerId"] == OWNER
    text, _, machine = body["Description"].partition("--- machine-readable ---\n")
    assert "calls_handled" in text and "212" in text
    data = json.loads(machine)
    assert data["metrics"] == {"calls_handled": 212, "bookings_made": 61, "conversion_rate": 0.288}
    assert data["report_id"] == "pms-report-2026-03-02-2026-03-08"
    assert receipt.id == TASK_ID and receipt.created is True


def test_repush_after_the_task_was_deleted_creates_a_new_one(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY, json=query_result([], "Task"))
    rsps.post(TASKS, json=created(TASK_ID), status=201)
    a = adapter()
    a.push_report(rep())
    rsps.patch(TASK_URL, json=sf_error("ENTITY_IS_DELETED", "entity is deleted", []), status=404)
    other = sf_id("00T", 201)
    rsps.replace(responses.POST, TASKS, json=created(other), status=201)
    receipt = a.push_report(rep())
    assert [m for m, _ in calls(rsps)] == ["GET", "POST", "PATCH", "GET", "POST"]
    assert receipt.id == other and receipt.created is True


def test_report_with_a_calendar_owner_omits_task_owner(rsps: responses.RequestsMock) -> None:
    rsps.get(QUERY, json=query_result([], "Task"))
    rsps.post(TASKS, json=created(TASK_ID), status=201)
    adapter(PMS_SALESFORCE_OWNER_ID=sf_id("023", 5)).push_report(rep(report_id="weekly_10"))
    assert "OwnerId" not in body_of(rsps.calls[1])
    assert soql_of(rsps.calls[0]) == "SELECT Id, Subject FROM Task WHERE Subject LIKE '%[weekly\\_10]%' LIMIT 2"


# ---------------------------------------------------------------------------------------------
# errors


ERROR_TABLE = [
    # status, body, expected class, code, attempts (update = PATCH, idempotent; 3 attempts)
    (401, sf_error("INVALID_SESSION_ID", "Session expired or invalid"), AuthenticationError, "INVALID_SESSION_ID", 1),
    (
        403,
        sf_error("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
        RateLimitError,
        "REQUEST_LIMIT_EXCEEDED",
        3,
    ),
    (
        403,
        sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        RateLimitError,
        "REQUEST_LIMIT_EXCEEDED",
        1,
    ),
    (403, sf_error("INSUFFICIENT_ACCESS", "no access"), PermissionDeniedError, "INSUFFICIENT_ACCESS", 1),
    (
        400,
        sf_error("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights", []),
        PermissionDeniedError,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        1,
    ),
    (
        400,
        sf_error("MALFORMED_ID", "Event ID: id value of incorrect type", ["Id"]),
        InvalidRequestError,
        "MALFORMED_ID",
        1,
    ),
    (
        400,
        sf_error("INVALID_FIELD", "No such column 'Foo' on sobject of type Event"),
        InvalidRequestError,
        "INVALID_FIELD",
        1,
    ),
    (
        400,
        sf_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Chair is required", []),
        InvalidRequestError,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        1,
    ),
    (400, sf_error("DUPLICATES_DETECTED", "Use one of these records?", []), ConflictError, "DUPLICATES_DETECTED", 1),
    (
        400,
        sf_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", []),
        InvalidRequestError,
        "UNABLE_TO_LOCK_ROW",
        3,
    ),
    (404, sf_error("NOT_FOUND", "The requested resource does not exist"), NotFoundError, "NOT_FOUND", 1),
    (404, sf_error("ENTITY_IS_DELETED", "entity is deleted", []), NotFoundError, "ENTITY_IS_DELETED", 1),
    (420, "<html><title>Edge</title></html>", ServerError, None, 3),
    (500, "<html><head><title>Internal Error</title></head><body>oops</body></html>", ServerError, None, 3),
    (502, "Bad Gateway", ServerError, None, 3),
    (503, "", ServerError, None, 3),
]


@pytest.mark.parametrize(("status", "body", "cls", "code", "attempts"), ERROR_TABLE)
def test_error_mapping_table(
    rsps: responses.RequestsMock, status: int, body: Any, cls: type, code: str | None, attempts: int
) -> None:
    live_event(rsps)
    if isinstance(body, str):
        rsps.patch(EVENT_URL, body=body, status=status, content_type="text/html")
    else:
        rsps.patch(EVENT_URL, json=body, status=status)
    if code == "ENTITY_IS_DELETED":
        # deleted between the read and the write: the booking is cancelled
        cls, status = AppointmentCancelledError, 409
        code = "APPOINTMENT_CANCELLED"
    with pytest.raises(cls) as info:
        adapter().update(EVENT_ID, AppointmentUpdate(location="x"))
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.code == code
    assert len(rsps.calls) == 1 + attempts  # the read, then the PATCH attempts
    if cls is AuthenticationError:
        assert "PMS_SALESFORCE_TOKEN" in str(err)


def test_a_create_refused_for_a_locked_row_is_retried_not_reconciled(rsps: responses.RequestsMock) -> None:
    """REQUEST_LIMIT_EXCEEDED is the cross-provider rate-limit case (tests/test_one_behaviour.py)."""
    rsps.post(EVENTS, json=sf_error("UNABLE_TO_LOCK_ROW", "locked"), status=400)
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    assert adapter().book(req()).id == EVENT_ID
    assert [m for m, _ in calls(rsps)] == ["POST", "POST"]


def http(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, {}, text, "GET", "/x")


def test_error_parser_reads_the_array_and_oauth_bodies() -> None:
    info = parse_error(
        http(400, json.dumps(sf_error("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"])))
    )
    assert (info.code, info.message, info.fields) == (
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [Name]",
        ("Name",),
    )
    info = parse_error(http(400, '{"error":"invalid_grant","error_description":"expired access/refresh token"}'))
    assert (info.code, info.message) == ("invalid_grant", "expired access/refresh token")
    info = parse_error(http(502, "<html><title>Bad Gateway</title></html>"))
    assert info.message == "HTTP 502 (HTML page 'Bad Gateway')"


# ---------------------------------------------------------------------------------------------
# Sforce-Limit-Info


def test_limit_info_is_parsed_exposed_and_logged(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pms_integration")
    live_event(rsps)
    rsps.delete(EVENT_URL, status=204, headers={"Sforce-Limit-Info": "api-usage=18/15000; api-bursts=1/750"})
    with client() as c:
        c.cancel_appointment(EVENT_ID)
        info = c.rate_limit_info("salesforce")
    assert info is not None and info.daily_limit == 15000 and info.daily_remaining == 14982
    assert any("18 of 15000" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ({"Sforce-Limit-Info": "api-usage=10018/100000"}, (89982, 100000)),
        ({"sforce-limit-info": "per-app-api-usage=17/250(appName=x); api-usage=5/10"}, (5, 10)),
        ({"Sforce-Limit-Info": "api-usage=20/10"}, (0, 10)),
        ({"Sforce-Limit-Info": "api-usage=lots"}, None),
        ({"Sforce-Limit-Info": ""}, None),
        ({}, None),
    ],
)
def test_limit_info_parser(header: dict[str, str], want: tuple[int, int] | None) -> None:
    info = parse_rate_headers(header)
    if want is None:
        assert info is None
    else:
        assert info is not None and (info.daily_remaining, info.daily_limit) == want


# ---------------------------------------------------------------------------------------------
# token refresh (single-threaded; the 16-thread test is in test_salesforce_refresh.py)


def test_expired_token_is_refreshed_once_and_the_request_replayed(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    live_event(rsps)
    caplog.set_level(logging.DEBUG)
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.patch(EVENT_URL, status=204)
    rsps.post(
        TOKEN_URL,
        json={
            "access_token": "00Dnewtoken!AQ4fresh-token-value",
            "token_type": "Bearer",
            "instance_url": BASE,
            "issued_at": "1700000000000",
            "signature": "sig",
        },
    )
    a = adapter(**REFRESH_ENV)
    a.update(EVENT_ID, AppointmentUpdate(location="x"))
    assert [m for m, _ in calls(rsps)] == ["GET", "PATCH", "POST", "PATCH"]
    form = dict(p.split("=", 1) for p in rsps.calls[2].request.body.split("&"))
    assert form["grant_type"] == "refresh_token"
    assert form["client_id"] == "3MVG9clientid"
    assert form["client_secret"] == CANARY["PMS_SALESFORCE_CLIENT_SECRET"]
    assert form["refresh_token"] == CANARY["PMS_SALESFORCE_REFRESH_TOKEN"]
    assert "Authorization" not in rsps.calls[2].request.headers
    assert rsps.calls[3].request.headers["Authorization"] == "Bearer 00Dnewtoken!AQ4fresh-token-value"
    assert isinstance(a.auth._token, Secret)
    assert "fresh-token-value" not in repr(a.auth) and "fresh-token-value" not in caplog.text
    for secret in CANARY.values():
        assert secret not in caplog.text


def test_rotated_refresh_token_is_used_next_time(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.post(
        TOKEN_URL,
        json={"access_token": "tokenA-123456-long-enough-x", "refresh_token": "rotated-refresh-42-long-enough-x"},
    )
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.patch(EVENT_URL, status=204)
    a = adapter(**REFRESH_ENV)
    a.update(EVENT_ID, AppointmentUpdate(location="x"))
    assert isinstance(a.auth._refresh_token, Secret)
    assert a.auth._refresh_token.reveal() == "rotated-refresh-42-long-enough-x"


def test_refresh_failure_names_the_variables_without_secrets(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.post(
        TOKEN_URL, json={"error": "invalid_grant", "error_description": "expired access/refresh token"}, status=400
    )
    a = adapter(**REFRESH_ENV)
    with pytest.raises(AuthenticationError) as info:
        a.update(EVENT_ID, AppointmentUpdate(location="x"))
    text = str(info.value) + repr(info.value)
    for name in ("PMS_SALESFORCE_CLIENT_ID", "PMS_SALESFORCE_CLIENT_SECRET", "PMS_SALESFORCE_REFRESH_TOKEN"):
        assert name in text
    assert "invalid_grant" in text
    for secret in CANARY.values():
        assert secret not in text
    # a second call with the same rejected token does not hammer the token endpoint
    with pytest.raises(AuthenticationError):
        a.update(EVENT_ID, AppointmentUpdate(location="x"))
    assert [m for m, _ in calls(rsps)] == ["GET", "PATCH", "POST", "GET", "PATCH"]


def test_refresh_network_failure_is_a_transport_error(rsps: responses.RequestsMock) -> None:
    live_event(rsps)
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.post(TOKEN_URL, body=requests.exceptions.ConnectionError("refused"))
    a = adapter(**REFRESH_ENV)
    with pytest.raises(TransportError) as info:
        a.update(EVENT_ID, AppointmentUpdate(location="x"))
    assert "token refresh" in str(info.value)
    # a network failure is not remembered: the next request tries the refresh again
    rsps.replace(responses.POST, TOKEN_URL, json={"access_token": "tokenD-123456-long-enough-x"})
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.patch(EVENT_URL, status=204)
    a.update(EVENT_ID, AppointmentUpdate(location="x"))
    assert a.auth.refresh_count == 1
    assert [m for m, _ in calls(rsps)] == ["GET", "PATCH", "POST", "GET", "PATCH", "POST", "PATCH"]


@pytest.mark.parametrize(
    ("env", "sent"),
    [({}, ["GET", "PATCH"]), (REFRESH_ENV, ["GET", "PATCH", "POST", "PATCH"])],
    ids=["no refresh variables", "replay rejected again"],
)
def test_a_401_a_refresh_cannot_cure_is_an_authentication_error(
    rsps: responses.RequestsMock, env: dict[str, str], sent: list[str]
) -> None:
    live_event(rsps)
    rsps.patch(EVENT_URL, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.post(TOKEN_URL, json={"access_token": "tokenB-123456-long-enough-x"})
    with pytest.raises(AuthenticationError):
        adapter(**env).update(EVENT_ID, AppointmentUpdate(location="x"))
    assert [m for m, _ in calls(rsps)] == sent


def test_expired_token_on_create_refreshes_and_creates_once(rsps: responses.RequestsMock) -> None:
    rsps.post(EVENTS, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"), status=401)
    rsps.post(TOKEN_URL, json={"access_token": "tokenC-123456-long-enough-x"})
    rsps.post(EVENTS, json=created(EVENT_ID), status=201)
    assert adapter(**REFRESH_ENV).book(req()).id == EVENT_ID
    assert [u for _, u in calls(rsps)] == [
        "/services/data/v67.0/sobjects/Event/",
        "/services/oauth2/token",
        "/services/data/v67.0/sobjects/Event/",
    ]


# ---------------------------------------------------------------------------------------------
# logs (requests per operation, as docs/providers/salesforce.md counts them: tests/test_one_behaviour.py)


def test_no_secret_or_body_in_logs(rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rsps.post(EVENTS, json=created(EVENT_ID), status=201, headers={"Sforce-Limit-Info": "api-usage=1/100"})
    adapter().book(req())
    assert CANARY["PMS_SALESFORCE_TOKEN"] not in caplog.text
    assert "jane@example.com" not in caplog.text and "Prefers the morning" not in caplog.text
