"""HubSpot's scheduling reads against the sandbox: free slots (opening hours less the calendar
owner's meetings), the conflict check before a booking, patients and their appointments, and a
booking read by id. Search lag is the sandbox's own (``settle()`` makes it pass; a long
``search_lag`` keeps it from passing), so no test depends on timing.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import pms_integration as pms
from pms_integration import PMSClient
from pms_integration._http import Runtime
from pms_integration._retry import deadline_scope
from pms_integration.errors import ConfigurationError, ConflictError
from pms_integration.models import AppointmentStatus
from pms_integration.provider import ALL_CAPABILITIES
from pms_integration.providers import hubspot_reads
from pms_integration.providers.hubspot import create
from pms_integration.sandbox import Sandbox
from pms_integration.state import reset_memory_state

from ._hubspot_support import fake_hubspot, sandbox_client, sandbox_emulator, sandbox_raw, settings
from .conftest import sent_targets

NY = ZoneInfo("America/New_York")
DAY = "2030-03-05"  # a Tuesday; open hours default to Mon-Fri 09:00-17:00
JANE = {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+15555550123"}
JOE = {"name": "Joe Roe", "email": "joe.roe@example.com", "phone": "+15555550188"}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
READ_POSTS = ("search", "batch_read")


@pytest.fixture(autouse=True)
def _options_restored(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulator options a test changes go back afterwards; the test clients do not really sleep
    out HubSpot's 5 searches a second, so that limit is off here."""
    emulator = sandbox_emulator(sandbox)
    for option in ("timezone", "owner_id", "search_lag", "association_page_size"):
        monkeypatch.setattr(emulator, option, getattr(emulator, option))
    monkeypatch.setattr(emulator, "search_rate", None)


def client(sb: Sandbox, **env: str) -> PMSClient:
    return sandbox_client(sb, **env)


def booking(reference: str, start: str, minutes: int = 45, patient: dict[str, str] = JANE) -> dict[str, Any]:
    return {
        "start": start,
        "duration_minutes": minutes,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": patient,
        "reference": reference,
    }


def at(day: str, hhmm: str, zone: ZoneInfo = NY) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=zone)


def ops(sb: Sandbox, since: int = 0) -> list[str]:
    return [r.operation for r in list(sb.records)[since:]]


def writes(sb: Sandbox, since: int = 0) -> list[str]:
    return [
        r.operation for r in list(sb.records)[since:] if r.method in WRITES and not r.operation.endswith(READ_POSTS)
    ]


def starts(slots: Any) -> list[str]:
    return [f"{s.start:%H:%M}" for s in slots]


# ---------------------------------------------------------------------------------------------
# free slots


def test_slots_exclude_booked_blocked_and_closed_time_and_respect_duration(sb: Sandbox) -> None:
    with client(sb) as c:
        c.book_appointment(booking("slots-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        sb.block_time("hubspot", at(DAY, "13:00"), at(DAY, "14:00"), "Staff meeting")
        sandbox_emulator(sb).settle()
        mark = len(sb.records)
        slots = c.free_slots(f"{DAY}T07:00:00-05:00", f"{DAY}T19:00:00-05:00", provider="hubspot")
        assert ops(sb, mark) == ["meetings.search"]  # one page: one request
        hourly = c.free_slots(f"{DAY}T07:00:00-05:00", f"{DAY}T19:00:00-05:00", duration_minutes=60, provider="hubspot")
    times = starts(slots)
    assert times[0] == "09:00" and times[-1] == "16:30"  # opening hours, 30 minutes by default
    assert "09:30" in times and "10:45" in times  # either side of the 10:00-10:45 booking
    assert not {"09:45", "10:00", "10:15", "10:30"} & set(times)
    assert "12:30" in times and "14:00" in times and not {"12:45", "13:00", "13:30"} & set(times)
    assert all(s.start.tzinfo == NY and s.duration_minutes == 30 for s in slots)
    assert starts(hourly)[-1] == "16:00" and "09:45" not in starts(hourly) and "12:15" not in starts(hourly)
    assert all(s.duration_minutes == 60 for s in hourly)


def test_a_cancelled_booking_frees_its_slot_and_a_staff_move_takes_the_new_one(sb: Sandbox) -> None:
    with client(sb) as c:
        first = c.book_appointment(booking("free-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        moved = c.book_appointment(booking("free-2", f"{DAY}T11:00:00-05:00", 30), provider="hubspot")
        c.cancel_appointment(first.id, provider="hubspot")
        sb.staff_move("hubspot", moved.id, at(DAY, "15:00"), at(DAY, "15:30"))
        sandbox_emulator(sb).settle()
        times = starts(c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot"))
        # busy time is the moved booking alone: the cancelled one is not
        window = {"start": at(DAY, "09:00"), "end": at(DAY, "17:00")}
        busy = c.adapter("hubspot").busy_times(window["start"], window["end"])  # type: ignore[attr-defined]
    assert [b.appointment_id for b in busy] == [moved.id.split(":")[1]]
    assert {"10:00", "11:00"} <= set(times)
    assert "15:00" not in times and "14:30" in times and "15:30" in times


def test_slots_on_the_dst_nights_are_on_real_instants(sb: Sandbox) -> None:
    """Spring forward (2030-03-10) loses the 02:00 hour; fall back (2030-11-03) has 01:00 twice.
    A booking in the second 01:00 takes that hour only."""
    env = {"PMS_HUBSPOT_OPEN_HOURS": "Sun 00:00-05:00", "PMS_HUBSPOT_SLOT_STEP_MINUTES": "60"}
    with client(sb, **env) as c:
        spring = c.free_slots(
            "2030-03-10T00:00:00-05:00", "2030-03-10T06:00:00-04:00", duration_minutes=60, provider="hubspot"
        )
        assert [f"{s.start:%H:%M%z}" for s in spring] == ["00:00-0500", "01:00-0500", "03:00-0400", "04:00-0400"]
        fall = c.free_slots(
            "2030-11-03T00:00:00-04:00", "2030-11-03T06:00:00-05:00", duration_minutes=60, provider="hubspot"
        )
        labels = [f"{s.start:%H:%M%z}" for s in fall]
        assert labels == ["00:00-0400", "01:00-0400", "01:00-0500", "02:00-0500", "03:00-0500", "04:00-0500"]
        second_one = fall[2]
        booked = c.book_appointment(
            {**booking("dst-fall", second_one.start.isoformat(), 60), "timezone": None}, provider="hubspot"
        )
        # the same instant (== is never true across zones for the repeated hour, PEP 495)
        assert booked.start.timestamp() == second_one.start.timestamp() and booked.start.utcoffset() == dt.timedelta(
            hours=-5
        )
        sandbox_emulator(sb).settle()
        after = c.free_slots(
            "2030-11-03T00:00:00-04:00", "2030-11-03T06:00:00-05:00", duration_minutes=60, provider="hubspot"
        )
    assert [f"{s.start:%H:%M%z}" for s in after] == [x for x in labels if x != "01:00-0500"]
    assert all(s.end.timestamp() - s.start.timestamp() == 3600 for s in after)  # real hours, not wall clock


def test_free_slots_need_the_practice_zone(sb: Sandbox) -> None:
    sandbox_emulator(sb).timezone = None
    with client(sb) as c:
        mark = len(sb.records)
        with pytest.raises(ConfigurationError) as info:
            c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot")
    assert "PMS_HUBSPOT_TIMEZONE" in str(info.value) and info.value.missing == ("PMS_HUBSPOT_TIMEZONE",)
    assert ops(sb, mark) == []


def test_only_the_owners_meetings_are_busy_time_and_bookings_are_assigned_to_the_owner(sb: Sandbox) -> None:
    emulator = sandbox_emulator(sb)
    emulator.owner_id = "7001"
    other = {"hs_meeting_start_time": "2030-03-05T14:00:00.000Z", "hs_meeting_end_time": "2030-03-05T15:00:00.000Z"}
    emulator.seed("meetings", {**other, "hs_timestamp": other["hs_meeting_start_time"], "hubspot_owner_id": "7002"})
    # the owner's meeting logged without an outcome is busy time too (16:00-16:30 local)
    mine = {"hs_meeting_start_time": "2030-03-05T21:00:00.000Z", "hs_meeting_end_time": "2030-03-05T21:30:00.000Z"}
    emulator.seed("meetings", {**mine, "hs_timestamp": mine["hs_meeting_start_time"], "hubspot_owner_id": "7001"})
    with client(sb) as c:
        booked = c.book_appointment(booking("owner-1", f"{DAY}T11:00:00-05:00", 30), provider="hubspot")
        sb.block_time("hubspot", at(DAY, "12:00"), at(DAY, "12:30"))
        emulator.settle()
        times = starts(c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot"))
    assert "09:00" in times  # another owner's meeting 09:00-10:00 does not block this calendar
    assert "11:00" not in times and "12:00" not in times and "16:00" not in times and "15:30" in times
    meeting = next(m for m in sb.state("hubspot")["meetings"] if m["id"] == booked.id.split(":")[1])
    assert meeting["properties"]["hubspot_owner_id"] == "7001"


def test_busy_time_is_read_page_by_page(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubspot_reads, "PAGE_SIZE", 2)
    for hour in (9, 10, 11, 13, 14):
        sb.block_time("hubspot", at(DAY, f"{hour:02d}:00"), at(DAY, f"{hour:02d}:30"))
    sandbox_emulator(sb).settle()
    with client(sb) as c:
        mark = len(sb.records)
        times = starts(c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot"))
    assert ops(sb, mark) == ["meetings.search"] * 3  # 5 meetings, 2 a page
    assert not {"09:00", "10:00", "11:00", "13:00", "14:00"} & set(times) and "09:30" in times


def test_a_window_with_more_pages_than_one_call_reads_fails_instead_of_offering_taken_slots(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot_reads, "PAGE_SIZE", 1)
    monkeypatch.setattr(hubspot_reads, "MAX_PAGES", 2)
    for hour in (9, 10, 11):
        sb.block_time("hubspot", at(DAY, f"{hour:02d}:00"), at(DAY, f"{hour:02d}:30"))
    sandbox_emulator(sb).settle()
    with client(sb) as c, pytest.raises(pms.UnexpectedResponseError) as info:
        c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot")
    assert "shorter window" in str(info.value)


# ---------------------------------------------------------------------------------------------
# the conflict check


def test_booking_into_a_taken_slot_is_refused_with_nothing_written(sb: Sandbox) -> None:
    with client(sb) as c:
        first = c.book_appointment(booking("taken-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        sandbox_emulator(sb).settle()
        before = {k: len(v) for k, v in sb.state("hubspot").items() if isinstance(v, list)}
        mark = len(sb.records)
        with pytest.raises(ConflictError) as info:
            c.book_appointment(booking("taken-2", f"{DAY}T10:30:00-05:00", 30, JOE), provider="hubspot")
        assert info.value.code == "SLOT_TAKEN" and first.id in str(info.value)
        # the check, and (a slot is taken) the clash's deal for the message: nothing written
        assert ops(sb, mark) == ["meetings.search", "associations.batch_read"] and writes(sb, mark) == []
        assert {k: len(v) for k, v in sb.state("hubspot").items() if isinstance(v, list)} == before
        block = sb.block_time("hubspot", at(DAY, "15:00"), at(DAY, "16:00"), "Lunch and learn")
        sandbox_emulator(sb).settle()
        with pytest.raises(ConflictError) as info:
            c.book_appointment(booking("taken-3", f"{DAY}T15:30:00-05:00", 30, JOE), provider="hubspot")
        assert block in str(info.value)
        # back to back is not a clash
        c.book_appointment(booking("taken-4", f"{DAY}T10:45:00-05:00", 30, JOE), provider="hubspot")


def test_the_same_reference_from_a_new_client_returns_its_booking_without_writing(sb: Sandbox) -> None:
    with client(sb) as c:
        first = c.book_appointment(booking("again-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
    sandbox_emulator(sb).settle()
    reset_memory_state()  # a new process: memory:// starts empty
    with client(sb) as fresh:
        mark = len(sb.records)
        again = fresh.book_appointment(booking("again-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
    assert again.id == first.id and writes(sb, mark) == []


def test_the_check_can_be_turned_off_for_practices_that_double_book(sb: Sandbox) -> None:
    with client(sb, PMS_HUBSPOT_CONFLICT_CHECK="off") as c:
        c.book_appointment(booking("double-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        sandbox_emulator(sb).settle()
        mark = len(sb.records)
        c.book_appointment(booking("double-2", f"{DAY}T10:00:00-05:00", 45, JOE), provider="hubspot")
    assert "meetings.search" not in ops(sb, mark)
    assert len(sb.state("hubspot")["meetings"]) == 2


def test_a_meeting_the_search_index_has_not_seen_yet_is_not_caught(sb: Sandbox) -> None:
    """The documented window: HubSpot's search lags writes, so a booking made moments before is
    invisible to the check. Held open here with a long lag, not with timing."""
    sandbox_emulator(sb).search_lag = 3600.0
    with client(sb) as c:
        c.book_appointment(booking("lag-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        c.book_appointment(booking("lag-2", f"{DAY}T10:00:00-05:00", 45, JOE), provider="hubspot")
    assert len(sb.state("hubspot")["meetings"]) == 2


def test_the_same_reference_within_the_search_lag_returns_the_first_booking(sb: Sandbox) -> None:
    """The search index has not seen the first booking yet (lag held open, not timed), but the
    patient's own deals are read by id: the retry from a new client gets the first booking back
    and writes nothing (one deal, one meeting)."""
    sandbox_emulator(sb).search_lag = 3600.0
    request = booking("lag-same", f"{DAY}T10:00:00-05:00")
    with client(sb) as c:
        first = c.book_appointment(request, provider="hubspot")
    reset_memory_state()  # a new process: memory:// starts empty
    with client(sb) as fresh:
        mark = len(sb.records)
        again = fresh.book_appointment(request, provider="hubspot")
    assert again.id == first.id and again.reference == "lag-same" and writes(sb, mark) == []
    # the check (blind here), the contact by e-mail, its deals, those deals; then the meeting by id
    assert ops(sb, mark)[:4] == [
        "meetings.search",
        "contacts.batch_read",
        "associations.batch_read",
        "deals.batch_read",
    ]
    state = sb.state("hubspot")
    assert len(state["deals"]) == 1 and len(state["meetings"]) == 1


def test_within_the_lag_a_returning_patients_other_bookings_are_not_mistaken_for_this_one(sb: Sandbox) -> None:
    """Another reference, or the same reference at another time, is a new booking; a cancelled
    one with this reference is not returned either (as the conflict check would not)."""
    sandbox_emulator(sb).search_lag = 3600.0
    with client(sb) as c:
        earlier = c.book_appointment(booking("mine-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        mark = len(sb.records)
        other = c.book_appointment(booking("mine-2", f"{DAY}T11:00:00-05:00"), provider="hubspot")
        assert ops(sb, mark) == [
            "meetings.search",
            "contacts.batch_read",
            "associations.batch_read",
            "deals.batch_read",
            "deals.create",
            "meetings.create",
        ]
        c.cancel_appointment(other.id, provider="hubspot")
    reset_memory_state()  # a new process: memory:// starts empty
    with client(sb) as fresh:  # this client remembers nothing of the references above
        moved = fresh.book_appointment(booking("mine-1", f"{DAY}T14:00:00-05:00"), provider="hubspot")
        rebooked = fresh.book_appointment(booking("mine-2", f"{DAY}T11:00:00-05:00"), provider="hubspot")
    assert len({earlier.id, other.id, moved.id, rebooked.id}) == 4
    assert len(sb.state("hubspot")["deals"]) == 4


def test_with_the_reference_property_the_upsert_alone_protects_within_the_lag(sb: Sandbox) -> None:
    sandbox_emulator(sb).search_lag = 3600.0
    request = booking("lag-prop", f"{DAY}T10:00:00-05:00")
    env = {"PMS_HUBSPOT_REFERENCE_PROPERTY": "pms_booking_id"}
    with client(sb, **env) as c:
        first = c.book_appointment(request, provider="hubspot")
    with client(sb, **env) as fresh:
        mark = len(sb.records)
        again = fresh.book_appointment(request, provider="hubspot")
    assert again.id == first.id and "deals.batch_read" not in ops(sb, mark)
    state = sb.state("hubspot")
    assert len(state["deals"]) == 1 and len(state["meetings"]) == 1


# ---------------------------------------------------------------------------------------------
# patients and their appointments


def test_find_patient_by_email_or_phone_as_staff_typed_it(sb: Sandbox) -> None:
    emulator = sandbox_emulator(sb)
    typed = emulator.seed("contacts", {"firstname": "Ann", "lastname": "Lee", "phone": "(555) 555-0177"})
    with client(sb) as c:
        c.book_appointment(booking("pat-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        emulator.settle()
        mark = len(sb.records)
        [by_email] = c.find_patient(email="JANE.DOE@example.com", provider="hubspot")
        assert ops(sb, mark) == ["contacts.search"]
        [by_phone] = c.find_patient(phone="+1 555 555 0123", provider="hubspot")
        [staff_typed] = c.find_patient(phone="+15555550177", provider="hubspot")
        both = c.find_patient(email=JANE["email"], phone="+15555550177", provider="hubspot")
        assert c.find_patient(email="nobody@example.com", provider="hubspot") == []
    assert by_email.id == by_phone.id and by_email.name == "Jane Doe"
    assert by_email.email == JANE["email"] and by_email.phone == JANE["phone"]
    assert staff_typed.id == typed and staff_typed.name == "Ann Lee"
    assert {p.id for p in both} == {by_email.id, typed}


def test_find_appointments_by_email_from_a_new_client_and_its_id_cancels_it(sb: Sandbox) -> None:
    with client(sb) as c:
        booked = c.book_appointment(booking("conv-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        c.book_appointment(booking("conv-other", f"{DAY}T11:00:00-05:00", 30, JOE), provider="hubspot")
    sandbox_emulator(sb).settle()
    with client(sb) as restarted:  # a new process: nothing remembered
        mark = len(sb.records)
        [found] = restarted.find_appointments(email=JANE["email"], start=f"{DAY}T00:00:00-05:00", provider="hubspot")
        # the contact, its meetings, the meetings, their deals
        assert ops(sb, mark) == [
            "contacts.search",
            "associations.batch_read",
            "meetings.batch_read",
            "associations.batch_read",
        ]
        assert found.id == booked.id and found.reference == "conv-1" and found.start == booked.start
        assert found.start.tzinfo == NY and found.status is AppointmentStatus.BOOKED
        [by_phone] = restarted.find_appointments(phone=JANE["phone"], start=f"{DAY}T00:00:00-05:00", provider="hubspot")
        assert by_phone.id == booked.id
        cancelled = restarted.cancel_appointment(found.id, provider="hubspot")
        assert cancelled.status is AppointmentStatus.CANCELLED
        assert restarted.find_appointments(email=JANE["email"], start=f"{DAY}T00:00:00-05:00", provider="hubspot") == []
        [shown] = restarted.find_appointments(
            email=JANE["email"], start=f"{DAY}T00:00:00-05:00", include_cancelled=True, provider="hubspot"
        )
    assert shown.id == booked.id and shown.status is AppointmentStatus.CANCELLED


@pytest.mark.parametrize("reference_property", [None, "pms_booking_id"])
def test_find_appointments_by_reference(sb: Sandbox, reference_property: str | None) -> None:
    env = {"PMS_HUBSPOT_REFERENCE_PROPERTY": reference_property} if reference_property else {}
    with client(sb, **env) as c:
        booked = c.book_appointment(booking("ref-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        c.book_appointment(booking("ref-2", f"{DAY}T11:00:00-05:00"), provider="hubspot")
        sandbox_emulator(sb).settle()
        mark = len(sb.records)
        [found] = c.find_appointments(reference="ref-1", start=f"{DAY}T00:00:00-05:00", provider="hubspot")
        sent = ops(sb, mark)
        assert c.find_appointments(reference="ref-9", provider="hubspot") == []
        # outside the window: not listed
        assert c.find_appointments(reference="ref-1", start=f"{DAY}T12:00:00-05:00", provider="hubspot") == []
    assert found.id == booked.id and found.reference == "ref-1"
    # the deal by its unique property (with its meetings), or a deal search then the deal; the meetings
    expected = ["deals.read"] if reference_property else ["deals.search", "deals.read"]
    assert sent == [*expected, "meetings.batch_read"]


def test_a_patients_many_meetings_are_read_page_by_page(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_emulator(sb).association_page_size = 2
    with client(sb) as c:
        booked = [
            c.book_appointment(booking(f"many-{h}", f"{DAY}T{h:02d}:00:00-05:00", 30), provider="hubspot").id
            for h in (9, 10, 11, 13, 14)
        ]
        sandbox_emulator(sb).settle()
        mark = len(sb.records)
        found = c.find_appointments(email=JANE["email"], start=f"{DAY}T00:00:00-05:00", provider="hubspot")
    assert [a.id for a in found] == booked  # earliest first
    # contacts -> meetings in three pages of two, one batch read, meetings -> deals in one
    assert ops(sb, mark).count("associations.batch_read") == 4


def test_get_appointment_sees_what_staff_changed_in_hubspot(sb: Sandbox) -> None:
    with client(sb) as c:
        booked = c.book_appointment(booking("staff-1", f"{DAY}T10:00:00-05:00"), provider="hubspot")
        sb.staff_move("hubspot", booked.id, at(DAY, "14:00"), at(DAY, "14:45"))
        mark = len(sb.records)
        moved = c.get_appointment(booked.id, provider="hubspot")
        assert ops(sb, mark) == ["meetings.read"]
        assert moved.start == at(DAY, "14:00") and moved.end == at(DAY, "14:45") and moved.start.tzinfo == NY
        assert moved.status is AppointmentStatus.BOOKED and moved.reference == "staff-1"
        sb.staff_cancel("hubspot", booked.id)
        assert c.get_appointment(booked.id, provider="hubspot").status is AppointmentStatus.CANCELLED


def test_hubspot_has_every_capability(sb: Sandbox) -> None:
    with client(sb) as c:
        assert c.adapter("hubspot").capabilities == ALL_CAPABILITIES


def test_no_patient_email_or_phone_travels_in_a_url(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    targets = sent_targets(sb, monkeypatch)
    patient = {"name": "Jane Doe", "email": "jane+b/c@example.com", "phone": "+15555550123"}
    with client(sb, PMS_HUBSPOT_REFERENCE_PROPERTY="pms_booking_id") as c:
        booked = c.book_appointment(booking("url-1", f"{DAY}T10:00:00-05:00", 45, patient), provider="hubspot")
        sandbox_emulator(sb).settle()
        with pytest.raises(ConflictError):
            c.book_appointment(booking("url-2", f"{DAY}T10:00:00-05:00", 45, patient), provider="hubspot")
        c.free_slots(f"{DAY}T09:00:00-05:00", f"{DAY}T17:00:00-05:00", provider="hubspot")
        assert c.find_patient(email=patient["email"], phone=patient["phone"], provider="hubspot")
        for by in ({"email": patient["email"]}, {"phone": patient["phone"]}, {"reference": "url-1"}):
            assert c.find_appointments(**by, start=f"{DAY}T00:00:00-05:00", provider="hubspot")
        c.get_appointment(booked.id, provider="hubspot")
    assert len(targets) >= 12
    for target in targets:
        seen = urllib.parse.unquote(target).lower()
        assert "jane" not in seen and "example.com" not in seen and "5550123" not in seen, target


# ---------------------------------------------------------------------------------------------
# the search limit


@pytest.mark.parametrize(("rate_limit", "paced"), [("100/10", True), ("off", False)])
def test_searches_are_paced_to_hubspots_five_a_second(rate_limit: str, paced: bool) -> None:
    """Every booking now searches, and HubSpot allows 5 searches a second per account: the sixth
    search within a second waits (on a clock that only moves when the adapter sleeps)."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def clock() -> float:
        return now[0]

    with fake_hubspot():
        # two clients of one process on one account share HubSpot's limit (a reload, a second client)
        first, second = (
            create(settings(PMS_HUBSPOT_RATE_LIMIT=rate_limit), Runtime(sleep=sleep, clock=clock)) for _ in range(2)
        )
        for n in range(7):
            (first if n % 2 else second).busy_times(at(DAY, "09:00"), at(DAY, "10:00"))
    if paced:
        assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 1.1  # the sixth; the seventh fits the same second
    else:
        assert sleeps == []


# ---------------------------------------------------------------------------------------------
# the emulator's new routes answer like HubSpot


def test_the_associations_batch_read_pages_and_refuses_like_hubspot(sb: Sandbox) -> None:
    emulator = sandbox_emulator(sb)
    emulator.association_page_size = 2
    with client(sb) as c:
        booked = [
            c.book_appointment(booking(f"assoc-{h}", f"{DAY}T{h:02d}:00:00-05:00", 30), provider="hubspot")
            for h in (9, 10, 11)
        ]
    contact = str(booked[0].contact_id)
    path = "/crm/v4/associations/contacts/meetings/batch/read"
    first = sandbox_raw(sb, "POST", path, {"inputs": [{"id": contact}, {"id": "99999"}]})
    assert first.status_code == 207  # the unknown contact has no associations: an error of its own
    body = first.json()
    [result] = body["results"]
    assert result["from"] == {"id": contact} and len(result["to"]) == 2
    assert result["to"][0]["associationTypes"][0] == {"category": "HUBSPOT_DEFINED", "typeId": 199, "label": None}
    assert body["numErrors"] == 1 and body["errors"][0]["context"] == {"fromObjectId": ["99999"]}
    after = result["paging"]["next"]["after"]
    rest = sandbox_raw(sb, "POST", path, {"inputs": [{"id": contact, "after": after}]}).json()["results"][0]
    assert "paging" not in rest
    meetings = {t["toObjectId"] for t in [*result["to"], *rest["to"]]}
    assert meetings == {b.id.split(":")[1] for b in booked}
    dated = sandbox_raw(
        sb, "POST", "/crm/associations/2026-09/contacts/meetings/batch/read", {"inputs": [{"id": contact}]}
    )
    assert dated.status_code == 200
    for bad in ({"inputs": []}, {"inputs": [{"id": contact, "limit": 5}]}, {"inputs": [{"id": 1}]}, {"ids": [contact]}):
        refused = sandbox_raw(sb, "POST", path, bad)
        assert refused.status_code == 400, bad
    assert (
        sandbox_raw(
            sb, "POST", "/crm/v4/associations/contacts/widgets/batch/read", {"inputs": [{"id": "1"}]}
        ).status_code
        == 400
    )


def test_no_patient_found_is_one_request_and_an_empty_list(sb: Sandbox) -> None:
    with client(sb) as c:
        mark = len(sb.records)
        assert c.find_appointments(email="nobody@example.com", provider="hubspot") == []
        assert ops(sb, mark) == ["contacts.search"]


def test_a_search_slot_beyond_the_deadline_is_a_rate_limit_error_before_sending() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with fake_hubspot() as (_, rsps):
        adapter = create(settings(PMS_HUBSPOT_RATE_LIMIT="100/10"), Runtime(sleep=sleep, clock=clock))
        for _ in range(5):
            adapter.busy_times(at(DAY, "09:00"), at(DAY, "10:00"))
        sent = len(rsps.calls)
        with deadline_scope(0.5, clock), pytest.raises(pms.RateLimitError) as info:
            adapter.busy_times(at(DAY, "09:00"), at(DAY, "10:00"))
        assert len(rsps.calls) == sent  # nothing sent
    assert info.value.code == "CLIENT_RATE_LIMIT" and info.value.retry_after is not None
