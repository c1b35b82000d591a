"""Salesforce scheduling reads, patient linking and the conflict check, against the sandbox org.

Free slots (BusinessHours less the owner's busy Events, DST nights, paging), finding patients
and their appointments from a new client, staff changes seen by get_appointment, a booking into
a taken slot refused with nothing written, the Contact (or Lead) a booking links, and the
requests each operation sends (pinned; docs/providers/salesforce.md has the same numbers).
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

import pms_integration as pms
from pms_integration import PMSClient
from pms_integration.errors import ConfigurationError, ConflictError, ServerError
from pms_integration.models import AppointmentRequest, AppointmentStatus, structure
from pms_integration.providers.salesforce import SalesforceAdapter
from pms_integration.sandbox import Fault, Sandbox
from pms_integration.sandbox.salesforce import SalesforceEmulator
from pms_integration.state import reset_memory_state

from .conftest import sent_targets

NY = ZoneInfo("America/New_York")
MONDAY = dt.date(2030, 3, 4)  # the seeded BusinessHours: Mon-Fri 08:00-17:00 America/New_York


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


def org(sb: Sandbox) -> SalesforceEmulator:
    return cast(SalesforceEmulator, sb.emulator("salesforce"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(sb: Sandbox, clock: Clock) -> Iterator[PMSClient]:
    with new_client(sb, clock=clock) as c:
        yield c


def new_client(sb: Sandbox, *, clock: Any = None, **env: str) -> PMSClient:
    """A client with the defaults: patient linking (Contact) and the conflict check on."""
    environ = {**sb.environ(default_provider="salesforce"), **env}
    extra = {"clock": clock} if clock is not None else {}
    return PMSClient(environ=environ, env_file=None, sleep=lambda s: None, **extra)


def booking(reference: str, start: dt.datetime, minutes: int = 30, **patient: str) -> dict[str, Any]:
    who = patient or {"name": "Ann Lee", "email": "ann.lee@example.com", "phone": "+15555550100"}
    return {
        "start": start.isoformat(),
        "duration_minutes": minutes,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "patient": who,
        "reference": reference,
    }


def sent(sb: Sandbox, mark: int) -> list[str]:
    return [r.operation for r in list(sb.records)[mark:]]


def starts(slots: Any) -> list[str]:
    return [f"{s.start:%H:%M}" for s in slots]


# ---------------------------------------------------------------------------------------------
# free slots


def test_slots_leave_out_booked_blocked_and_closed_time_and_fit_the_duration(sb: Sandbox, client: PMSClient) -> None:
    client.book_appointment(booking("slot-1", at(MONDAY, 9)))  # 09:00-09:30
    org(sb).block_time(at(MONDAY, 10), at(MONDAY, 11), "Staff meeting")
    slots = client.free_slots(at(MONDAY, 7), at(MONDAY, 12), duration_minutes=45)
    assert starts(slots) == ["08:00", "08:15", "11:00", "11:15"]  # 45 minutes fit nowhere else
    assert all(s.end - s.start == dt.timedelta(minutes=45) and s.start.tzinfo == NY for s in slots)
    shorter = client.free_slots(at(MONDAY, 9), at(MONDAY, 11), duration_minutes=30)
    assert starts(shorter) == ["09:30"]
    # 07:00 is before opening; Saturday and Sunday are closed in the seeded hours
    assert client.free_slots(at(MONDAY - dt.timedelta(days=2), 0), at(MONDAY, 0)) == []


def test_a_cancelled_booking_frees_its_slot_soft_or_deleted(sb: Sandbox) -> None:
    for mode in ("soft", "delete"):
        with new_client(sb, PMS_SALESFORCE_CANCEL_MODE=mode) as c:
            booked = c.book_appointment(booking(f"free-{mode}", at(MONDAY, 14)))
            assert "14:00" not in starts(c.free_slots(at(MONDAY, 14), at(MONDAY, 15)))
            c.cancel_appointment(booked.id)
            assert "14:00" in starts(c.free_slots(at(MONDAY, 14), at(MONDAY, 15)))


def test_open_hours_and_zone_from_configuration_override_business_hours(sb: Sandbox) -> None:
    env = {"PMS_SALESFORCE_OPEN_HOURS": "Sat 09:00-10:00", "PMS_SALESFORCE_TIMEZONE": "America/Chicago"}
    with new_client(sb, **env) as c:
        mark = len(sb.records)
        saturday = dt.datetime(2030, 3, 9, tzinfo=ZoneInfo("America/Chicago"))
        slots = c.free_slots(saturday, saturday + dt.timedelta(days=1), duration_minutes=30)
        assert starts(slots) == ["09:00", "09:15", "09:30"]
        assert str(slots[0].start.tzinfo) == "America/Chicago"
        assert sent(sb, mark) == ["query"]  # busy time only: nothing to read from BusinessHours


def test_business_hours_by_name_and_a_missing_record_says_what_to_set(sb: Sandbox) -> None:
    hours = dict(org(sb).business_hours[0], Name="Late surgery", IsDefault=False, TimeZoneSidKey="Europe/London")
    hours.update(MondayStartTime="12:00:00.000Z", MondayEndTime="13:00:00.000Z")
    org(sb).business_hours.append(hours)
    with new_client(sb, PMS_SALESFORCE_BUSINESS_HOURS="Late surgery") as c:
        london = ZoneInfo("Europe/London")
        slots = c.free_slots(dt.datetime(2030, 3, 4, tzinfo=london), dt.datetime(2030, 3, 5, tzinfo=london))
        assert starts(slots) == ["12:00", "12:15", "12:30"] and str(slots[0].start.tzinfo) == "Europe/London"
    with new_client(sb, PMS_SALESFORCE_BUSINESS_HOURS="Nowhere") as c, pytest.raises(ConfigurationError) as err:
        c.free_slots(at(MONDAY, 8), at(MONDAY, 17))
    assert "PMS_SALESFORCE_OPEN_HOURS" in str(err.value)


def test_business_hours_are_cached_ten_minutes(sb: Sandbox, client: PMSClient, clock: Clock) -> None:
    window = (at(MONDAY, 8), at(MONDAY, 17))
    counts = []
    for step in (0, 599, 2):
        clock.now += step
        mark = len(sb.records)
        client.free_slots(*window)
        counts.append(sent(sb, mark))
    assert counts == [["query", "query"], ["query"], ["query", "query"]]


def test_spring_forward_and_fall_back_nights(sb: Sandbox, client: PMSClient) -> None:
    hours = org(sb).business_hours[0]
    hours.update(SundayStartTime="00:00:00.000Z", SundayEndTime="00:00:00.000Z")  # open all day
    with new_client(sb, PMS_SALESFORCE_SLOT_STEP_MINUTES="60") as c:
        spring = c.free_slots(at(dt.date(2030, 3, 10), 0), at(dt.date(2030, 3, 10), 5), duration_minutes=60)
        # 02:00 does not exist that night: four hours, each a real hour long
        assert [f"{s.start:%H:%M%z}" for s in spring] == ["00:00-0500", "01:00-0500", "03:00-0400", "04:00-0400"]
        assert all(s.end.timestamp() - s.start.timestamp() == 3600 for s in spring)  # absolute hours
        night = dt.date(2030, 11, 3)
        fall = c.free_slots(at(night, 0), at(night, 4), duration_minutes=60)
        # 01:00 happens twice: both hours are offered
        assert [f"{s.start:%H:%M%z}" for s in fall] == [
            "00:00-0400",
            "01:00-0400",
            "01:00-0500",
            "02:00-0500",
            "03:00-0500",
        ]
        second = fall[2].start
        booked = c.book_appointment(booking("fall-back", second, 60))
        assert booked.start == second and booked.end is not None
        assert booked.end.timestamp() - second.timestamp() == 3600
        after = c.free_slots(at(night, 0), at(night, 4), duration_minutes=60)
        assert [f"{s.start:%H:%M%z}" for s in after] == ["00:00-0400", "01:00-0400", "02:00-0500", "03:00-0500"]
        across = c.book_appointment(booking("spring-forward", at(dt.date(2030, 3, 10), 1, 30), 60))
        assert across.end is not None and f"{across.end:%H:%M%z}" == "03:30-0400"


def test_busy_time_is_read_beyond_the_first_page(sb: Sandbox, client: PMSClient) -> None:
    org(sb).page_size = 2
    for hour in (8, 9, 10, 11, 12):
        org(sb).block_time(at(MONDAY, hour), at(MONDAY, hour, 30), "Blocked")
    client.free_slots(at(MONDAY, 7), at(MONDAY, 8))  # business hours now cached
    mark = len(sb.records)
    slots = client.free_slots(at(MONDAY, 8), at(MONDAY, 13), duration_minutes=30)
    assert starts(slots) == ["08:30", "09:30", "10:30", "11:30", "12:30"]
    assert sent(sb, mark) == ["query", "query.more", "query.more"]  # 5 Events, 2 a page


# ---------------------------------------------------------------------------------------------
# the conflict check


def test_a_taken_slot_is_refused_with_nothing_written(sb: Sandbox, client: PMSClient) -> None:
    first = client.book_appointment(booking("taken-1", at(MONDAY, 9)))
    before = sb.state("salesforce")
    mark = len(sb.records)
    with new_client(sb) as other, pytest.raises(ConflictError) as err:
        other.book_appointment(booking("taken-2", at(MONDAY, 9, 15), name="Bo Chen", email="bo@example.com"))
    assert err.value.code == "SLOT_TAKEN" and first.id in str(err.value)
    assert sent(sb, mark) == ["composite"]  # the check, then nothing
    assert sb.state("salesforce")["bookings"] == before["bookings"]
    assert sb.state("salesforce")["contacts"] == before["contacts"]  # no Contact made for Bo either


def test_blocked_time_is_refused_and_the_check_can_be_turned_off(sb: Sandbox) -> None:
    org(sb).block_time(at(MONDAY, 12), at(MONDAY, 13), "Lunch")
    with new_client(sb) as c, pytest.raises(ConflictError) as err:
        c.book_appointment(booking("lunch-1", at(MONDAY, 12, 30)))
    assert "blocked time" in str(err.value)
    with new_client(sb, PMS_SALESFORCE_CONFLICT_CHECK="off") as c:
        assert c.book_appointment(booking("lunch-2", at(MONDAY, 12, 30))).status is AppointmentStatus.BOOKED


def test_the_same_reference_from_a_new_process_returns_the_earlier_booking(sb: Sandbox, client: PMSClient) -> None:
    first = client.book_appointment(booking("again", at(MONDAY, 15)))
    mark = len(sb.records)
    reset_memory_state()  # a restart: memory:// goes with the process
    with new_client(sb) as restarted:
        again = restarted.book_appointment(booking("again", at(MONDAY, 15)))
    assert again.id == first.id
    assert sent(sb, mark) == ["composite", "query"]  # the check sees our reference, the look-up finds it
    assert len(sb.state("salesforce")["bookings"]) == 1


# ---------------------------------------------------------------------------------------------
# patient linking


def people(sb: Sandbox, email: str) -> list[dict[str, Any]]:
    return [c for c in sb.state("salesforce")["contacts"] if c.get("Email") == email]


def test_a_new_patient_gets_one_contact_and_a_returning_one_reuses_it(sb: Sandbox, client: PMSClient) -> None:
    mark = len(sb.records)
    first = client.book_appointment(booking("link-1", at(MONDAY, 8)))
    assert sent(sb, mark) == ["composite", "composite"]  # check + look-up, then Contact + Event
    [contact] = people(sb, "ann.lee@example.com")
    assert contact["type"] == "Contact" and contact["FirstName"] == "Ann" and contact["LastName"] == "Lee"
    assert contact["Phone"] == "+15555550100"
    event = org(sb).record(first.id)
    assert event is not None and event["WhoId"] == contact["Id"] == first.contact_id
    mark = len(sb.records)
    second = client.book_appointment(booking("link-2", at(MONDAY, 10)))
    assert sent(sb, mark) == ["composite", "sobjects.create"]
    assert second.contact_id == contact["Id"] and len(people(sb, "ann.lee@example.com")) == 1


def test_a_patient_known_by_phone_alone_gets_a_placeholder_name(sb: Sandbox, client: PMSClient) -> None:
    booked = client.book_appointment(booking("phone-1", at(MONDAY, 8), phone="+15555550177"))
    [contact] = [c for c in sb.state("salesforce")["contacts"] if c.get("Phone") == "+15555550177"]
    assert contact["LastName"] == "[not provided]" and "FirstName" not in contact
    assert booked.contact_id == contact["Id"]


def test_lead_mode_creates_a_lead_and_a_given_contact_id_skips_the_look_up(sb: Sandbox) -> None:
    with new_client(sb, PMS_SALESFORCE_PATIENT_RECORD="lead") as c:
        booked = c.book_appointment(booking("lead-1", at(MONDAY, 8), name="Max Roe", email="max@example.com"))
    [lead] = people(sb, "max@example.com")
    assert lead["type"] == "Lead" and lead["Company"] == "[not provided]" and booked.contact_id == lead["Id"]
    with new_client(sb) as c:
        mark = len(sb.records)
        given = {"name": "Max Roe", "email": "max@example.com", "contact_id": lead["Id"]}
        again = c.book_appointment(booking("lead-2", at(MONDAY, 9), **given))
        assert sent(sb, mark) == ["composite", "sobjects.create"]  # busy time only, then the Event
        assert again.contact_id == lead["Id"]
        [check] = [r for r in list(sb.records)[mark:] if r.operation == "composite"]
        assert check.method == "POST"


def test_a_lost_answer_on_the_create_makes_neither_the_event_nor_the_contact_twice(sb: Sandbox) -> None:
    with new_client(sb) as c:
        adapter = c.adapter("salesforce")
        assert isinstance(adapter, SalesforceAdapter)
        request = structure(booking("lost-1", at(MONDAY, 11)), AppointmentRequest)
        assert adapter.prepare(request) == (None, None)  # free, and a new patient
        sb.inject("salesforce", Fault.server_error(502, commit=True), operation="composite", times=1)
        mark = len(sb.records)
        booked = adapter.create_once(
            lambda: adapter.create_with_patient(request),
            lambda: adapter.find_booking(request),
            operation="book",
            reference=request.reference,
        )
        assert sent(sb, mark) == ["composite", "query"]  # the create (answer lost), then the look-up
        assert booked.reference == "lost-1"
    reset_memory_state()  # a restart: memory:// goes with the process
    with new_client(sb) as restarted:  # the caller retries the whole booking from a new process
        assert restarted.book_appointment(booking("lost-1", at(MONDAY, 11))).id == booked.id
    assert len(people(sb, "ann.lee@example.com")) == 1
    assert [b["Id"] for b in sb.state("salesforce")["bookings"]] == [booked.id]


def test_a_refused_create_rolls_the_new_contact_back(sb: Sandbox, client: PMSClient) -> None:
    bad = booking("refused-1", at(MONDAY, 8))
    bad["extra"] = {"Location": "x" * 300}  # longer than the field allows: the Event is refused
    with pytest.raises(pms.InvalidRequestError) as err:
        client.book_appointment(bad)
    assert err.value.code == "STRING_TOO_LONG"
    assert people(sb, "ann.lee@example.com") == [] and sb.state("salesforce")["bookings"] == []


# ---------------------------------------------------------------------------------------------
# finding patients and their appointments


def test_find_appointments_by_email_from_a_new_client_and_its_id_cancels(sb: Sandbox, client: PMSClient) -> None:
    booked = client.book_appointment(booking("find-1", at(MONDAY, 9)))
    window = {"start": at(MONDAY, 0), "end": at(MONDAY, 23)}
    reset_memory_state()  # a restart: memory:// goes with the process
    with new_client(sb) as restarted:
        mark = len(sb.records)
        [found] = restarted.find_appointments(email="ann.lee@example.com", **window)
        assert sent(sb, mark) == ["composite", "query"]  # the patient (e-mail in the body), their Events
        assert found.id == booked.id and found.reference == "find-1" and found.start == at(MONDAY, 9)
        assert found.status is AppointmentStatus.BOOKED and str(found.start.tzinfo) == "America/New_York"
        assert restarted.find_appointments(phone="+1 (555) 555-0100", **window)[0].id == booked.id
        assert restarted.cancel_appointment(found.id).status is AppointmentStatus.CANCELLED
        assert restarted.find_appointments(email="ann.lee@example.com", **window) == []
        [gone] = restarted.find_appointments(email="ann.lee@example.com", include_cancelled=True, **window)
        assert gone.id == booked.id and gone.status is AppointmentStatus.CANCELLED  # deleted: via queryAll


def test_cancelled_appointments_beyond_the_first_page(sb: Sandbox, client: PMSClient) -> None:
    ids = [client.book_appointment(booking(f"page-{h}", at(MONDAY, h))).id for h in (8, 9, 10)]
    client.cancel_appointment(ids[0])  # deleted: only queryAll sees it
    org(sb).page_size = 2
    window = {"start": at(MONDAY, 0), "end": at(MONDAY, 23)}
    mark = len(sb.records)
    found = client.find_appointments(email="ann.lee@example.com", include_cancelled=True, **window)
    assert [a.id for a in found] == ids and found[0].status is AppointmentStatus.CANCELLED
    assert sent(sb, mark) == ["composite", "queryAll", "query.more"]
    assert [r.path.split("/")[4] for r in list(sb.records)[mark:]][1:] == ["queryAll", "queryAll"]


def test_find_by_reference_and_soft_cancelled_ones_only_when_asked(sb: Sandbox) -> None:
    with new_client(sb, PMS_SALESFORCE_CANCEL_MODE="soft") as c:
        booked = c.book_appointment(booking("ref-1", at(MONDAY, 9)))
        c.book_appointment(booking("ref-10", at(MONDAY, 10)))
        window = {"start": at(MONDAY, 0), "end": at(MONDAY, 23)}
        mark = len(sb.records)
        assert [a.id for a in c.find_appointments(reference="ref-1", **window)] == [booked.id]
        assert sent(sb, mark) == ["query"]
        c.cancel_appointment(booked.id)
        assert c.find_appointments(reference="ref-1", **window) == []
        [soft] = c.find_appointments(reference="ref-1", include_cancelled=True, **window)
        assert soft.status is AppointmentStatus.CANCELLED


def test_find_appointments_defaults_to_upcoming_and_an_unknown_patient_has_none(sb: Sandbox, client: PMSClient) -> None:
    soon = dt.datetime.now(NY).replace(microsecond=0) + dt.timedelta(days=3)
    upcoming = client.book_appointment(
        {**booking("soon-1", soon), "start": soon.replace(hour=10, minute=0, second=0).isoformat()}
    )
    assert [a.id for a in client.find_appointments(email="ann.lee@example.com")] == [upcoming.id]
    mark = len(sb.records)
    assert client.find_appointments(email="nobody@example.com") == []
    assert sent(sb, mark) == ["composite"]  # no patient: no Event query


def test_find_patient_returns_contacts_and_in_lead_mode_leads(sb: Sandbox, client: PMSClient) -> None:
    org(sb).add_person("Contact", "Ann", "Lee", "ann.lee@example.com", "+15555550100")
    org(sb).add_person("Contact", "Tom", "Lee", "tom@example.com", "+15555550100")  # shares the phone
    org(sb).add_person("Lead", "Ann", "Lee", "ann.lee@example.com")
    mark = len(sb.records)
    found = client.find_patient(phone="+15555550100")
    assert sent(sb, mark) == ["composite"]
    assert sorted(p.name or "" for p in found) == ["Ann Lee", "Tom Lee"] and {p.kind for p in found} == {"contact"}
    assert [p.email for p in client.find_patient(email="ann.lee@example.com")] == ["ann.lee@example.com"]
    with new_client(sb, PMS_SALESFORCE_PATIENT_RECORD="lead") as c:
        kinds = sorted(p.kind for p in c.find_patient(email="ann.lee@example.com"))
        assert kinds == ["contact", "lead"]


def test_a_patient_search_beyond_the_first_page(sb: Sandbox, client: PMSClient) -> None:
    org(sb).page_size = 2
    for n in range(5):
        org(sb).add_person("Contact", f"P{n}", "Smith", phone="+15555550199")
    mark = len(sb.records)
    assert len(client.find_patient(phone="+15555550199")) == 5
    assert sent(sb, mark) == ["composite", "query.more", "query.more"]


# ---------------------------------------------------------------------------------------------
# get_appointment


def test_get_appointment_sees_what_staff_changed(sb: Sandbox, client: PMSClient) -> None:
    booked = client.book_appointment(booking("staff-1", at(MONDAY, 9)))
    mark = len(sb.records)
    assert client.get_appointment(booked.id).start == at(MONDAY, 9)
    assert sent(sb, mark) == ["sobjects.get"]
    org(sb).staff_move(booked.id, at(MONDAY, 15), at(MONDAY, 16))
    moved = client.get_appointment(booked.id)
    assert moved.start == at(MONDAY, 15) and moved.end == at(MONDAY, 16)
    assert "15:00" not in starts(client.free_slots(at(MONDAY, 15), at(MONDAY, 16)))
    org(sb).staff_cancel(booked.id)
    assert client.get_appointment(booked.id).status is AppointmentStatus.CANCELLED


# ---------------------------------------------------------------------------------------------
# every read: no patient data in a URL; retried like a GET


def test_no_email_or_phone_in_any_url_or_log(
    sb: Sandbox, client: PMSClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    targets = sent_targets(sb, monkeypatch)
    window = {"start": at(MONDAY, 0), "end": at(MONDAY, 23)}
    booked = client.book_appointment(booking("url-1", at(MONDAY, 9)))
    client.book_appointment(booking("url-2", at(MONDAY, 10)))
    client.find_patient(email="ann.lee@example.com", phone="+15555550100")
    client.find_appointments(email="ann.lee@example.com", phone="+15555550100", include_cancelled=True, **window)
    client.free_slots(at(MONDAY, 8), at(MONDAY, 17))
    client.get_appointment(booked.id)
    assert len(targets) >= 9
    for target in targets:
        seen = urllib.parse.unquote_plus(target).lower()
        assert "ann.lee" not in seen and "example.com" not in seen and "5550100" not in seen, target
    assert caplog.records and "example.com" not in caplog.text and "5550100" not in caplog.text


def test_a_read_composite_is_retried_and_a_failed_one_is_a_typed_error(sb: Sandbox, client: PMSClient) -> None:
    sb.inject("salesforce", Fault.server_error(503), operation="composite", times=1)
    assert client.find_patient(email="ann.lee@example.com") == []  # retried: reads are idempotent
    sb.inject("salesforce", Fault.server_error(503), operation="composite", times=None)
    with pytest.raises(ServerError) as err:
        client.find_patient(email="ann.lee@example.com")
    assert not err.value.outcome_unknown and "ann.lee" not in str(err.value)
