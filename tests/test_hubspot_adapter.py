"""The HubSpot adapter against a ``responses``-backed fake: every operation, requests per
operation, the reconcile paths after ambiguous create failures, and id validation."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import responses

from pms_integration import PMSClient
from pms_integration.errors import (
    InvalidRequestError,
    ProviderError,
    UnexpectedResponseError,
    ValidationError,
)
from pms_integration.models import (
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    Patient,
    PerformanceReport,
    ProviderName,
)
from pms_integration.providers import hubspot as hs

from ._hubspot_support import BASE, fake_hubspot, hubspot_env, make_adapter, sent

NY = ZoneInfo("America/New_York")
REF = "bk-1a2b3c4d5e6f7a8b9c0d"


def booking(patient: Patient | None = None, **kw: Any) -> AppointmentRequest:
    return AppointmentRequest(
        start=dt.datetime(2026, 10, 5, 9, 0, tzinfo=NY),
        duration_minutes=45,
        patient=patient or Patient(name="Jane Doe", email="jane@example.com", phone="+15555550100"),
        reference=kw.pop("reference", REF),
        **kw,
    )


def report(**kw: Any) -> PerformanceReport:
    return PerformanceReport(
        period_start=dt.date(2026, 9, 29),
        period_end=dt.date(2026, 10, 5),
        metrics={"calls_handled": 212, "bookings": 47, "conversion": 0.2217},
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# book


def test_book_with_an_existing_contact_takes_five_requests() -> None:
    with fake_hubspot() as (fake, rsps):
        contact = fake.add("contacts", {"email": "jane@example.com", "firstname": "Jane"})
        appt = make_adapter().book(booking())
        calls = sent(rsps)
        first_url = str(rsps.calls[1].request.url)
    assert [(m, p) for m, p, _ in calls] == [
        ("POST", "/crm/v3/objects/meetings/search"),  # the conflict check: is the slot free?
        ("POST", "/crm/v3/objects/contacts/batch/read"),
        # the search lags: a known contact's own deals are read for this reference (it has none)
        ("POST", "/crm/v4/associations/contacts/deals/batch/read"),
        ("POST", "/crm/v3/objects/deals"),
        ("POST", "/crm/v3/objects/meetings"),
    ]
    deal_id, meeting_id = appt.id.split(":")
    assert appt.provider is ProviderName.HUBSPOT
    assert appt.status is AppointmentStatus.BOOKED
    assert appt.reference == REF and appt.contact_id == contact
    assert appt.start == booking().start and appt.end == booking().end
    assert appt.start.tzinfo == NY  # the booking's own zone, not UTC
    deal = fake.props("deals", deal_id)
    assert deal["dealname"] == f"Dental appointment - Jane Doe [{REF}]"
    assert deal["pipeline"] == "default" and deal["dealstage"] == "appointmentscheduled"
    assert deal["closedate"] == "2026-10-05T13:00:00.000Z"  # 09:00 EDT
    meeting = fake.props("meetings", meeting_id)
    assert meeting["hs_meeting_outcome"] == "SCHEDULED"
    assert meeting["hs_timestamp"] == meeting["hs_meeting_start_time"] == "2026-10-05T13:00:00.000Z"
    assert meeting["hs_meeting_end_time"] == "2026-10-05T13:45:00.000Z"
    assert f"Booking reference: [{REF}]" in meeting["hs_meeting_body"]
    assert "Booking time zone: [America/New_York]" in meeting["hs_meeting_body"]
    assert "Local time: 2026-10-05 09:00 (America/New_York)" in meeting["hs_meeting_body"]
    assert ("deals", deal_id, "contacts", contact, 3) in fake.associations
    assert ("meetings", meeting_id, "contacts", contact, 200) in fake.associations
    assert ("meetings", meeting_id, "deals", deal_id, 212) in fake.associations
    assert calls[1][2] == {
        "idProperty": "email",
        "inputs": [{"id": "jane@example.com"}],
        "properties": ["email"],
        "propertiesWithHistory": [],
    }
    assert "jane" not in first_url and "example.com" not in first_url


@pytest.mark.parametrize(
    ("patient", "contact_requests", "contact"),
    [
        # a known contact id: no look-up, no contact written; its deals are read for this reference
        (
            Patient(name="Jane Doe", email="jane@example.com", contact_id="4242"),
            ["/crm/v4/associations/contacts/deals/batch/read"],
            None,
        ),
        # a new e-mail: the batch read misses, then the contact is created
        (
            None,
            ["/crm/v3/objects/contacts/batch/read", "/crm/v3/objects/contacts"],
            {"email": "jane@example.com", "firstname": "Jane", "lastname": "Doe", "phone": "+15555550100"},
        ),
        # a phone only: nothing to look up by, so a contact with a placeholder name
        (
            Patient(phone="+1 555 555 0199"),
            ["/crm/v3/objects/contacts"],
            {"phone": "+15555550199", "firstname": "Patient", "lastname": "+15555550199"},
        ),
    ],
    ids=["contact-id", "new-email", "phone-only"],
)
def test_book_resolves_the_contact(
    patient: Patient | None, contact_requests: list[str], contact: dict[str, str] | None
) -> None:
    with fake_hubspot() as (fake, rsps):
        appt = make_adapter().book(booking(patient))
        calls = [(m, p) for m, p, _ in sent(rsps)]
    assert calls == [("POST", p) for p in ["/crm/v3/objects/meetings/search", *contact_requests]] + [
        ("POST", "/crm/v3/objects/deals"),
        ("POST", "/crm/v3/objects/meetings"),
    ]
    if contact is None:
        assert appt.contact_id == "4242" and fake.count("contacts") == 0
    else:
        assert fake.props("contacts", str(appt.contact_id)) == contact


def test_book_recovers_the_contact_id_from_a_409_race() -> None:
    with fake_hubspot() as (fake, rsps):
        winner = fake.add("contacts", {"email": "jane@example.com"})
        # The read misses (the other request has not committed yet); the create then collides.
        fake.fail("POST", "/contacts/batch/read", status=207, body={"status": "COMPLETE", "results": []})
        appt = make_adapter().book(booking())
        assert len(rsps.calls) == 5  # the conflict check, the read, the colliding create, deal, meeting
    assert appt.contact_id == winner
    assert fake.count("contacts") == 1


def test_a_409_without_an_existing_id_is_a_conflict_error() -> None:
    with fake_hubspot() as (fake, _):
        fake.fail("POST", "/contacts/batch/read", status=207, body={"status": "COMPLETE", "results": []})
        fake.fail(
            "POST", "/contacts$", status=409, body={"status": "error", "message": "Conflict", "category": "CONFLICT"}
        )
        with pytest.raises(ProviderError) as info:
            make_adapter().book(booking())
    assert info.value.__class__.__name__ == "ConflictError"
    assert fake.count("deals") == 0


def test_book_extra_goes_to_the_deal_and_meeting() -> None:
    with fake_hubspot() as (fake, _):
        appt = make_adapter().book(
            booking(
                extra={"amount": 150, "meeting": {"hs_meeting_location": "Main St"}, "deal": {"hubspot_owner_id": 7}}
            )
        )
    deal_id, meeting_id = appt.id.split(":")
    assert fake.props("deals", deal_id)["amount"] == "150"
    assert fake.props("deals", deal_id)["hubspot_owner_id"] == "7"
    assert fake.props("meetings", meeting_id)["hs_meeting_location"] == "Main St"


def test_book_rejects_nested_extra_and_bad_contact_id_before_sending() -> None:
    with fake_hubspot() as (_, rsps):
        adapter = make_adapter()
        with pytest.raises(ValidationError) as info:
            adapter.book(booking(extra={"amount": {"nested": 1}}))
        assert info.value.fields == ["extra.amount"]
        with pytest.raises(ValidationError) as info:
            adapter.book(booking(extra={"meeting": {"hs_meeting_body": "x"}}))
        assert info.value.fields == ["extra.meeting.hs_meeting_body"]
        with pytest.raises(ValidationError) as info:
            adapter.book(booking(extra={"deal": {"dealname": "x"}}))
        assert info.value.fields == ["extra.dealname"]
        with pytest.raises(ValidationError) as info:
            adapter.book(booking(Patient(email="a@example.com", contact_id="abc")))
        assert info.value.fields == ["patient.contact_id"]
        assert len(rsps.calls) == 0


def test_upsert_path_uses_the_reference_property_and_is_idempotent_across_processes() -> None:
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        first = make_adapter(PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id").book(booking())
        calls = sent(rsps)
        assert [(m, p) for m, p, _ in calls] == [
            ("POST", "/crm/v3/objects/meetings/search"),  # the conflict check: is the slot free?
            ("POST", "/crm/v3/objects/contacts/batch/read"),
            ("POST", "/crm/v3/objects/deals/batch/upsert"),
            ("PUT", f"/crm/v4/objects/deals/{first.id.split(':')[0]}/associations/default/contacts/{first.contact_id}"),
            ("POST", "/crm/v3/objects/meetings"),
        ]
        upsert = calls[2][2]
        assert upsert["inputs"][0]["idProperty"] == "pms_booking_id"
        assert upsert["inputs"][0]["id"] == REF
        assert "associations" not in upsert["inputs"][0]
        # Another process books the same reference again: same deal, no second meeting.
        again = make_adapter(PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id").book(booking())
    assert again.id == first.id
    assert fake.count("deals") == 1 and fake.count("meetings") == 1


def test_date_versioned_paths() -> None:
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        appt = make_adapter(PMS_HUBSPOT_API_VERSION="2026-09", PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id").book(
            booking()
        )
        deal_id = appt.id.split(":")[0]
        assert [p for _, p, _ in sent(rsps)] == [
            "/crm/objects/2026-09/meetings/search",
            "/crm/objects/2026-09/contacts/batch/read",
            "/crm/objects/2026-09/deals/batch/upsert",
            f"/crm/objects/2026-09/deals/{deal_id}/associations/default/contacts/{appt.contact_id}",
            "/crm/objects/2026-09/meetings",
        ]


# ---------------------------------------------------------------------------------------------
# update and cancel


def _booked(fake: Any) -> tuple[str, str]:
    deal = fake.add("deals", {"dealname": f"x [{REF}]", "dealstage": "appointmentscheduled"})
    meeting = fake.add(
        "meetings",
        {
            "hs_meeting_body": f"Booking reference: [{REF}]\nBooking time zone: [America/New_York]",
            "hs_meeting_outcome": "SCHEDULED",
            "hs_timestamp": "2026-10-05T13:00:00.000Z",
            "hs_meeting_start_time": "2026-10-05T13:00:00.000Z",
            "hs_meeting_end_time": "2026-10-05T13:45:00.000Z",
        },
    )
    return deal, meeting


def test_update_reads_then_patches_meeting_and_deal() -> None:
    with fake_hubspot() as (fake, rsps):
        deal, meeting = _booked(fake)
        start = dt.datetime(2026, 11, 2, 9, 30, tzinfo=NY)  # after the DST change: EST
        appt = make_adapter().update(
            f"{deal}:{meeting}", AppointmentUpdate(start=start, duration_minutes=60, title="Check-up")
        )
        assert [(m, p) for m, p, _ in sent(rsps)] == [
            ("GET", f"/crm/v3/objects/meetings/{meeting}"),
            ("PATCH", f"/crm/v3/objects/meetings/{meeting}"),
            ("PATCH", f"/crm/v3/objects/deals/{deal}"),
        ]
        assert sent(rsps)[2][2] == {"properties": {"closedate": "2026-11-02T14:30:00.000Z"}}
    props = fake.props("meetings", meeting)
    assert props["hs_meeting_start_time"] == props["hs_timestamp"] == "2026-11-02T14:30:00.000Z"
    assert props["hs_meeting_end_time"] == "2026-11-02T15:30:00.000Z"
    assert props["hs_meeting_title"] == "Check-up"
    assert appt.id == f"{deal}:{meeting}" and appt.reference == REF
    assert appt.start == start and appt.title == "Check-up"
    assert appt.start.utcoffset() == dt.timedelta(hours=-5) and appt.end is not None


def test_update_without_a_new_time_patches_only_the_meeting() -> None:
    with fake_hubspot() as (fake, rsps):
        deal, meeting = _booked(fake)
        make_adapter().update(f"{deal}:{meeting}", AppointmentUpdate(notes="bring x-rays", location="Room 2"))
        assert [(m, p) for m, p, _ in sent(rsps)] == [
            ("GET", f"/crm/v3/objects/meetings/{meeting}"),
            ("PATCH", f"/crm/v3/objects/meetings/{meeting}"),
        ]
    assert fake.props("meetings", meeting)["hs_internal_meeting_notes"] == "bring x-rays"
    assert fake.props("meetings", meeting)["hs_meeting_location"] == "Room 2"


@pytest.mark.parametrize(("stage", "reason"), [(None, None), ("lost42", "patient called")])
def test_cancel_reads_then_moves_the_deal_then_marks_meeting_canceled(stage: str | None, reason: str | None) -> None:
    # The deal first: a cancel stage the deal's pipeline refuses then writes nothing at all.
    env = {"PMS_HUBSPOT_CANCEL_STAGE_ID": stage} if stage else {}
    with fake_hubspot() as (fake, rsps):
        deal, meeting = _booked(fake)
        appt = make_adapter(**env).cancel(f"{deal}:{meeting}", reason=reason)
        calls = sent(rsps)
    assert [(m, p) for m, p, _ in calls] == [
        ("GET", f"/crm/v3/objects/meetings/{meeting}"),
        ("PATCH", f"/crm/v3/objects/deals/{deal}"),
        ("PATCH", f"/crm/v3/objects/meetings/{meeting}"),
    ]
    # the default cancel stage is closedlost
    expected = {"dealstage": stage or "closedlost"} | ({"closed_lost_reason": reason} if reason else {})
    assert calls[1][2] == {"properties": expected}
    assert calls[2][2] == {"properties": {"hs_meeting_outcome": "CANCELED"}}
    assert appt.status is AppointmentStatus.CANCELLED
    assert appt.start == dt.datetime(2026, 10, 5, 9, 0, tzinfo=NY) and appt.start.tzinfo == NY
    assert appt.end == dt.datetime(2026, 10, 5, 9, 45, tzinfo=NY)
    assert fake.count("deals") == 1 and fake.count("meetings") == 1  # nothing deleted


# ---------------------------------------------------------------------------------------------
# reports


def test_push_report_creates_a_note_on_the_company() -> None:
    """The re-push (same process or new) is tests/test_one_behaviour.py's, on every provider."""
    with fake_hubspot() as (fake, rsps):
        adapter = make_adapter(PMS_HUBSPOT_REPORT_COMPANY_ID="3001")
        first = adapter.push_report(report())
        calls = sent(rsps)
        assert [(m, p) for m, p, _ in calls] == [
            ("POST", "/crm/v3/objects/notes/search"),
            ("POST", "/crm/v3/objects/notes"),
        ]
        create = calls[1][2]
        assert create["associations"] == [
            {"to": {"id": "3001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 190}]}
        ]
        body = create["properties"]["hs_note_body"]
        assert report().render_text() in body
        assert report().metrics_json() in body
        assert body.endswith("[pms-report-id: pms-report-2026-09-29-2026-10-05]")
        assert create["properties"]["hs_timestamp"] == "2026-10-06T00:00:00.000Z"
        assert first.created and first.report_id == "pms-report-2026-09-29-2026-10-05"
    assert fake.count("notes") == 1


def test_push_report_without_company_attaches_the_note_to_the_reports_company() -> None:
    """Without PMS_HUBSPOT_REPORT_COMPANY_ID the note still lands where a person will see it."""
    with fake_hubspot() as (fake, rsps):
        adapter = make_adapter()
        adapter.push_report(report())
        calls = sent(rsps)
        assert [(m, p) for m, p, _ in calls] == [
            ("POST", "/crm/v3/objects/notes/search"),
            ("POST", "/crm/v3/objects/companies/search"),
            ("POST", "/crm/v3/objects/companies"),
            ("POST", "/crm/v3/objects/notes"),
        ]
        assert calls[1][2]["filterGroups"] == [
            {"filters": [{"propertyName": "name", "operator": "EQ", "value": hs.REPORTS_COMPANY_NAME}]}
        ]
        company = next(iter(fake.records["companies"]))
        assert fake.props("companies", company) == {"name": "pms-integration reports"}
        assert calls[3][2]["associations"] == [
            {"to": {"id": company}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 190}]}
        ]
        # The company is looked up once per adapter ...
        adapter.push_report(report(report_id="pms-report-b"))
        assert [p for _, p, _ in sent(rsps)][4:] == ["/crm/v3/objects/notes/search", "/crm/v3/objects/notes"]
        # ... and another process finds the same company instead of making a second one.
        make_adapter().push_report(report(report_id="pms-report-c"))
        assert [(m, p) for m, p, _ in sent(rsps)][6:] == [
            ("POST", "/crm/v3/objects/notes/search"),
            ("POST", "/crm/v3/objects/companies/search"),
            ("POST", "/crm/v3/objects/notes"),
        ]
    assert fake.count("companies") == 1 and fake.count("notes") == 3
    assert all(a[3] == company and a[4] == 190 for a in fake.associations if a[0] == "notes")


def test_cached_note_deleted_in_hubspot_is_recreated() -> None:
    with fake_hubspot() as (fake, rsps):
        adapter = make_adapter()
        first = adapter.push_report(report())
        del fake.records["notes"][first.id]
        again = adapter.push_report(report())
        assert [m for m, _, _ in sent(rsps)][4:] == ["PATCH", "POST", "POST"]
    assert again.created and again.id != first.id


def test_note_body_is_cut_to_the_limit_keeping_the_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hs, "NOTE_BODY_LIMIT", 200)
    with fake_hubspot() as (_, rsps):
        make_adapter().push_report(report(summary="x" * 1500))
        body = sent(rsps)[-1][2]["properties"]["hs_note_body"]
    assert len(body) <= 200
    assert body.endswith("[pms-report-id: pms-report-2026-09-29-2026-10-05]")


def test_report_search_is_sent_as_idempotent_and_retried() -> None:
    with fake_hubspot() as (fake, rsps):
        fake.fail("POST", "/notes/search$", status=502, body="<html>bad gateway</html>")
        receipt = make_adapter().push_report(report())
        assert [p for _, p, _ in sent(rsps)][:2] == ["/crm/v3/objects/notes/search"] * 2
    assert receipt.created


# ---------------------------------------------------------------------------------------------
# reconcile after ambiguous create failures (never double-book)


def test_deal_timeout_after_commit_is_found_through_the_contact_and_not_recreated() -> None:
    """The contact's associated deals are a consistent read: no wait for the search index."""
    with fake_hubspot() as (fake, rsps):
        contact = fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/deals$", exception=requests.exceptions.ReadTimeout("read timed out"), commit=True)
        appt = make_adapter().book(booking())
        methods = [(m, p) for m, p, _ in sent(rsps)]
    assert ("GET", f"/crm/v3/objects/contacts/{contact}") in methods
    assert ("POST", "/crm/v3/objects/deals/search") not in methods
    assert fake.count("deals") == 1 and fake.count("meetings") == 1
    assert appt.id.split(":")[0] in fake.records["deals"]


def test_deal_5xx_without_commit_is_created_once() -> None:
    sleeps: list[float] = []
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/deals$", status=503, body={"status": "error", "message": "unavailable"})
        make_adapter(sleeps).book(booking())
        posts = [p for m, p, _ in sent(rsps) if m == "POST" and p.endswith("/deals")]
    assert len(posts) == 2  # the failed one, then exactly one more after the look-up missed
    assert fake.count("deals") == 1
    assert hs.SETTLE_SECONDS in sleeps  # the look-up waited for the search index once


def test_deal_failure_with_failing_lookup_is_outcome_unknown() -> None:
    with fake_hubspot() as (fake, _):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/deals$", exception=requests.exceptions.ReadTimeout("slow"), commit=True)
        fake.fail("POST", "/deals/search$", status=503, body={}, times=10)
        fake.fail("GET", "/contacts/", status=503, body={}, times=10)
        with pytest.raises(ProviderError) as info:
            make_adapter().book(booking())
    assert info.value.outcome_unknown
    assert REF in str(info.value)
    assert fake.count("deals") == 1 and fake.count("meetings") == 0


def test_unreadable_2xx_on_deal_create_is_never_repeated() -> None:
    with fake_hubspot() as (fake, _):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/deals$", status=201, body="<html>ok</html>", commit=True)
        fake.search_sees_nothing = True  # index lag: the look-up cannot see it yet
        fake.hide_associations = True  # and the contact's associations do not show it either
        with pytest.raises(UnexpectedResponseError) as info:
            make_adapter().book(booking())
    assert info.value.outcome_unknown and REF in str(info.value)
    assert fake.count("deals") == 1


def test_meeting_timeout_after_commit_is_found_through_the_deal_associations() -> None:
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/meetings$", exception=requests.exceptions.ConnectionError("reset"), commit=True)
        appt = make_adapter().book(booking())
        methods = [(m, p) for m, p, _ in sent(rsps)]
    deal_id, meeting_id = appt.id.split(":")
    assert ("GET", f"/crm/v3/objects/deals/{deal_id}") in methods
    assert ("GET", f"/crm/v3/objects/meetings/{meeting_id}") in methods
    assert fake.count("meetings") == 1


def test_meeting_found_by_search_when_associations_are_not_visible() -> None:
    with fake_hubspot() as (fake, rsps):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.hide_associations = True
        fake.fail("POST", "/meetings$", status=500, body={"status": "error", "message": "internal"}, commit=True)
        make_adapter().book(booking())
        assert ("POST", "/crm/v3/objects/meetings/search") in [(m, p) for m, p, _ in sent(rsps)]
    assert fake.count("meetings") == 1


def test_contact_create_timeout_is_reconciled_by_email() -> None:
    with fake_hubspot() as (fake, _):
        fake.fail("POST", "/contacts$", exception=requests.exceptions.ReadTimeout("slow"), commit=True)
        appt = make_adapter().book(booking())
    assert fake.count("contacts") == 1
    assert appt.contact_id in fake.records["contacts"]


def test_upsert_5xx_is_retried_by_the_transport() -> None:
    with fake_hubspot() as (fake, _):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail("POST", "/batch/upsert$", status=503, body={}, commit=True)
        appt = make_adapter(PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id").book(booking())
    assert fake.count("deals") == 1 and fake.count("meetings") == 1
    assert appt.id.split(":")[0] in fake.records["deals"]


def test_upsert_errors_become_invalid_request() -> None:
    with fake_hubspot() as (fake, _):
        fake.add("contacts", {"email": "jane@example.com"})
        fake.fail(
            "POST",
            "/batch/upsert$",
            status=207,
            body={
                "status": "COMPLETE",
                "results": [],
                "numErrors": 1,
                "errors": [
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": "Property pms_booking_id is not unique",
                    }
                ],
            },
        )
        with pytest.raises(InvalidRequestError) as info:
            make_adapter(PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id").book(booking())
    assert info.value.code == "VALIDATION_ERROR"
    assert fake.count("meetings") == 0


# ---------------------------------------------------------------------------------------------
# through the client


def test_client_book_update_cancel_report_and_rate_limit_info() -> None:
    with fake_hubspot() as (fake, _):
        client = PMSClient(environ=hubspot_env(), env_file=None, sleep=lambda s: None)
        request = {
            "start": "2027-12-01T10:00:00-05:00",
            "duration_minutes": 30,
            "patient": {"name": "Jane Doe", "email": "jane@example.com"},
            "reference": "bk-client-1",
        }
        appt = client.book_appointment(request, provider="hubspot")
        client.update_appointment(appt.id, {"title": "Cleaning"}, provider="hubspot")
        cancelled = client.cancel_appointment(appt.id, provider="hubspot")
        receipt = client.push_performance_report(
            {"period_start": "2026-11-01", "period_end": "2026-11-30", "metrics": {"calls": 10}}, provider="hubspot"
        )
        info = client.rate_limit_info("hubspot")
    assert cancelled.status is AppointmentStatus.CANCELLED
    assert receipt.id in fake.records["notes"]
    assert info is not None and info.limit == 100 and info.remaining == 99
    assert info.interval_seconds == 10.0 and info.daily_limit == 250000 and info.daily_remaining == 249000


def test_requests_carry_the_bearer_token() -> None:
    with fake_hubspot() as (fake, rsps):
        _booked(fake)
        make_adapter().update("987654321:55501", AppointmentUpdate(title="x"))
        assert (
            rsps.calls[0].request.headers["Authorization"] == "Bearer " + hubspot_env()["PMS_HUBSPOT_PRIVATE_APP_TOKEN"]
        )
        assert BASE in str(rsps.calls[0].request.url)


def test_responses_library_is_the_transport_seam() -> None:
    # A guard that the fake really intercepts: an unregistered host fails loudly.
    with responses.RequestsMock() as _, pytest.raises(ProviderError):
        make_adapter(PMS_HUBSPOT_BASE_URL="https://other.example.com").cancel("1:2")


def test_an_update_naming_a_new_zone_records_it_and_answers_in_it() -> None:
    chicago = ZoneInfo("America/Chicago")
    with fake_hubspot() as (fake, _):
        deal, meeting = _booked(fake)
        start = dt.datetime(2026, 10, 6, 9, 0, tzinfo=chicago)
        appt = make_adapter().update(f"{deal}:{meeting}", AppointmentUpdate(start=start, duration_minutes=30))
        body = fake.props("meetings", meeting)["hs_meeting_body"]
        again = make_adapter().update(f"{deal}:{meeting}", AppointmentUpdate(title="Check-up"))
    assert "Booking time zone: [America/Chicago]" in body and "America/New_York" not in body
    assert appt.start == start and appt.start.tzinfo == chicago
    assert again.start is not None and again.start.tzinfo == chicago  # read back from the meeting
