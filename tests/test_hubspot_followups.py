"""HubSpot follow-ups from the independent review of issue 13, end to end against the sandbox.

1. A deal-stage change that omits ``pipeline`` is checked against the deal's stored pipeline
   (as HubSpot does), not against ``default``; and the adapter's cancel never leaves a booking
   half cancelled without saying so: the deal is written first (a wrong cancel stage then
   writes nothing), and a failing meeting write says what is done and that cancelling again
   finishes it.
2. A move given in UTC keeps the booking's own zone (a bare ``...Z`` start names no zone), and
   the meeting body's ``Local time:`` line follows every move.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pms_integration.errors import InvalidRequestError, ProviderError
from pms_integration.models import AppointmentStatus
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.sandbox.hubspot import HubSpotEmulator

from ._hubspot_support import sandbox_client as client
from ._hubspot_support import sandbox_raw as raw

DENVER = ZoneInfo("America/Denver")
DENTAL = {
    "PMS_HUBSPOT_PIPELINE_ID": "dental",
    "PMS_HUBSPOT_STAGE_ID": "dental-booked",
    "PMS_HUBSPOT_CANCEL_STAGE_ID": "dental-cancelled",
}
BOOKING: dict[str, Any] = {
    "start": "2030-03-07T10:00:00-07:00",
    "duration_minutes": 30,
    "patient": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "title": "Check-up",
}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=131) as sandbox:
        emu = sandbox.emulator("hubspot")
        assert isinstance(emu, HubSpotEmulator)
        emu.pipelines["dental"] = ("dental-booked", "dental-cancelled")
        yield sandbox


def booking(sb: Sandbox) -> dict[str, Any]:
    bookings = sb.state("hubspot")["bookings"]
    assert len(bookings) == 1
    found: dict[str, Any] = bookings[0]
    return found


def meeting_body(sb: Sandbox, meeting_id: str) -> str:
    resp = raw(sb, "GET", f"/crm/v3/objects/meetings/{meeting_id}?properties=hs_meeting_body")
    assert resp.status_code == 200, resp.text
    body: str = resp.json()["properties"]["hs_meeting_body"]
    return body


# ---------------------------------------------------------------------------------------------
# 1. the deal's own pipeline; no silent half-cancel


def test_book_and_cancel_in_a_non_default_pipeline(sb: Sandbox) -> None:
    with client(sb, **DENTAL) as c:
        appt = c.book_appointment({**BOOKING, "reference": "bk-dental"}, provider="hubspot")
        assert booking(sb)["dealstage"] == "dental-booked"
        cancelled = c.cancel_appointment(appt.id, provider="hubspot", reason="Patient unwell")
    assert cancelled.status is AppointmentStatus.CANCELLED
    done = booking(sb)
    assert done["dealstage"] == "dental-cancelled" and done["outcome"] == "CANCELED"


def test_stage_without_pipeline_is_checked_against_the_deals_pipeline(sb: Sandbox) -> None:
    created = raw(
        sb,
        "POST",
        "/crm/v3/objects/deals",
        {"properties": {"dealname": "Dental deal", "pipeline": "dental", "dealstage": "dental-booked"}},
    )
    assert created.status_code == 201, created.text
    deal = f"/crm/v3/objects/deals/{created.json()['id']}"
    wrong = raw(sb, "PATCH", deal, {"properties": {"dealstage": "closedlost"}})
    assert wrong.status_code == 400, wrong.text
    assert "pipeline dental" in wrong.json()["message"]
    right = raw(sb, "PATCH", deal, {"properties": {"dealstage": "dental-cancelled"}})
    assert right.status_code == 200, right.text
    # A deal that never named a pipeline is in ``default``: its stages still apply to it.
    plain = raw(sb, "POST", "/crm/v3/objects/deals", {"properties": {"dealname": "Plain", "dealstage": "closedlost"}})
    assert plain.status_code == 201, plain.text
    plain_deal = f"/crm/v3/objects/deals/{plain.json()['id']}"
    other = raw(sb, "PATCH", plain_deal, {"properties": {"dealstage": "dental-booked"}})
    assert other.status_code == 400, other.text
    # Naming the pipeline in the same PATCH checks the stage against that pipeline.
    moved = raw(sb, "PATCH", deal, {"properties": {"pipeline": "default", "dealstage": "closedlost"}})
    assert moved.status_code == 200, moved.text


def test_a_wrong_cancel_stage_writes_nothing(sb: Sandbox) -> None:
    with client(sb, **DENTAL) as c:
        appt = c.book_appointment({**BOOKING, "reference": "bk-wrong-stage"}, provider="hubspot")
    wrong = {**DENTAL, "PMS_HUBSPOT_CANCEL_STAGE_ID": "closedlost"}
    with client(sb, **wrong) as c, pytest.raises(InvalidRequestError) as info:
        c.cancel_appointment(appt.id, provider="hubspot")
    assert "closedlost" in str(info.value)
    after = booking(sb)
    # Before the fix the meeting was set to CANCELED first, and the deal then refused.
    assert after["outcome"] == "SCHEDULED" and after["dealstage"] == "dental-booked"


def test_a_failed_meeting_write_says_half_cancelled_and_a_second_cancel_finishes(sb: Sandbox) -> None:
    with client(sb, **DENTAL) as c:
        appt = c.book_appointment({**BOOKING, "reference": "bk-half"}, provider="hubspot")
        sb.inject("hubspot", Fault.server_error(400), operation="meetings.update", times=1)
        with pytest.raises(ProviderError) as info:
            c.cancel_appointment(appt.id, provider="hubspot")
        deal_id, meeting_id = appt.id.split(":")
        text = str(info.value)
        assert "half cancelled" in text and deal_id in text and meeting_id in text
        assert "cancel again" in text.lower()
        half = booking(sb)
        assert half["dealstage"] == "dental-cancelled" and half["outcome"] == "SCHEDULED"
        again = c.cancel_appointment(appt.id, provider="hubspot")
    assert again.status is AppointmentStatus.CANCELLED
    done = booking(sb)
    assert done["dealstage"] == "dental-cancelled" and done["outcome"] == "CANCELED"


# ---------------------------------------------------------------------------------------------
# 2. a UTC move keeps the booking's zone; the local time follows the move


def test_a_utc_move_keeps_the_booking_zone_and_updates_the_local_time(sb: Sandbox) -> None:
    with client(sb) as c:
        appt = c.book_appointment(
            {**BOOKING, "reference": "bk-denver", "timezone": "America/Denver"}, provider="hubspot"
        )
        meeting_id = appt.id.split(":")[1]
        assert "Local time: 2030-03-07 10:00 (America/Denver)" in meeting_body(sb, meeting_id)
        moved = c.update_appointment(
            appt.id, {"start": "2030-03-07T23:00:00Z", "duration_minutes": 30}, provider="hubspot"
        )
        assert moved.start.tzinfo == DENVER and moved.end is not None and moved.end.tzinfo == DENVER
        assert moved.start.isoformat() == "2030-03-07T16:00:00-07:00"
        body = meeting_body(sb, meeting_id)
        assert "Booking time zone: [America/Denver]" in body and "[UTC]" not in body
        assert "Local time: 2030-03-07 16:00 (America/Denver)" in body
        assert body.count("Local time:") == 1
        later = c.update_appointment(
            appt.id, {"start": "2030-03-08T09:00:00-07:00", "duration_minutes": 30}, provider="hubspot"
        )
        assert later.start.tzinfo == DENVER and later.start.isoformat() == "2030-03-08T09:00:00-07:00"
        assert "Local time: 2030-03-08 09:00 (America/Denver)" in meeting_body(sb, meeting_id)
        cancelled = c.cancel_appointment(appt.id, provider="hubspot")
    assert cancelled.start.tzinfo == DENVER


def test_a_move_that_names_a_zone_changes_it(sb: Sandbox) -> None:
    with client(sb) as c:
        appt = c.book_appointment(
            {**BOOKING, "reference": "bk-named", "timezone": "America/Denver"}, provider="hubspot"
        )
        moved = c.update_appointment(
            appt.id,
            {"start": "2030-03-07T23:00:00Z", "duration_minutes": 30, "timezone": "America/New_York"},
            provider="hubspot",
        )
        body = meeting_body(sb, appt.id.split(":")[1])
    assert moved.start.tzinfo == ZoneInfo("America/New_York")
    assert moved.start.isoformat() == "2030-03-07T18:00:00-05:00"
    assert "Booking time zone: [America/New_York]" in body
    assert "Local time: 2030-03-07 18:00 (America/New_York)" in body


def test_a_move_of_an_offset_booking_adds_the_local_time(sb: Sandbox) -> None:
    with client(sb) as c:
        appt = c.book_appointment({**BOOKING, "reference": "bk-offset"}, provider="hubspot")
        moved = c.update_appointment(
            appt.id, {"start": "2030-03-07T23:00:00Z", "duration_minutes": 30}, provider="hubspot"
        )
        body = meeting_body(sb, appt.id.split(":")[1])
    assert moved.start.utcoffset() == dt.timedelta(hours=-7)
    assert "Booking time zone: [-07:00]" in body
    assert "Local time: 2030-03-07 16:00 (-07:00)" in body


def test_naming_a_new_zone_without_a_move_rewrites_the_local_time(sb: Sandbox) -> None:
    with client(sb) as c:
        appt = c.book_appointment(
            {**BOOKING, "reference": "bk-rezone", "timezone": "America/Denver"}, provider="hubspot"
        )
        changed = c.update_appointment(
            appt.id, {"title": "Cleaning", "timezone": "America/New_York"}, provider="hubspot"
        )
        body = meeting_body(sb, appt.id.split(":")[1])
    assert changed.start.isoformat() == "2030-03-07T12:00:00-05:00"
    assert "Booking time zone: [America/New_York]" in body
    assert "Local time: 2030-03-07 12:00 (America/New_York)" in body and "Denver" not in body
