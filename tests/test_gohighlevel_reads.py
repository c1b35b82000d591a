"""GoHighLevel scheduling reads against the sandbox, API v2 and v1: free slots (booked, blocked
and closed time left out, the duration respected, DST nights), finding a patient and their
appointments from a fresh client, reading a booking staff changed, contact-search paging, the
spec, no e-mail or phone in a URL, and the requests each read sends."""

from __future__ import annotations

import datetime as dt
import itertools
import urllib.parse
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import responses

from pms_integration import PMSClient
from pms_integration.errors import ConflictError, UnexpectedResponseError, UnsupportedOperationError, ValidationError
from pms_integration.models import AppointmentStatus, SlotQuery
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.gohighlevel import DEFAULT_OPEN_HOURS, GoHighLevelEmulator
from pms_integration.sandbox.gohighlevel.state import new_id
from tests._gohighlevel_support import ENV_V2, on_official_host, specs_available, validate_request, validate_response
from tests.test_gohighlevel_sandbox import Recorder

NY = ZoneInfo("America/New_York")
EMAIL, PHONE = "jane.roe@example.com", "+15555550142"
PATIENT = {"first_name": "Jane", "last_name": "Roe", "email": EMAIL, "phone": PHONE}
DAY = dt.date(2037, 3, 10)  # a Tuesday


@pytest.fixture
def ghl(sb: Sandbox) -> Iterator[GoHighLevelEmulator]:
    emulator = sb.emulator("ghl")
    assert isinstance(emulator, GoHighLevelEmulator)
    yield emulator
    emulator.open_hours = dict(DEFAULT_OPEN_HOURS)


@pytest.fixture(params=["v2", "v1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(sb: Sandbox, version: str = "v2", recorder: Recorder | None = None, **env: str) -> PMSClient:
    environ = {**sb.environ(ghl_api_version=version, default_provider="ghl"), "PMS_GHL_TIMEZONE": "America/New_York"}
    return PMSClient(
        environ={**environ, **env},
        env_file=None,
        sleep=lambda s: None,
        **({"session_factory": recorder} if recorder else {}),
    )


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=NY)


def book(c: PMSClient, start: dt.datetime, reference: str, minutes: int = 30) -> Any:
    return c.book_appointment(
        {
            "start": start.isoformat(),
            "duration_minutes": minutes,
            "title": "Cleaning",
            "reference": reference,
            "timezone": "America/New_York",
            "patient": PATIENT,
        }
    )


def soon(days: int = 14, hour: int = 10) -> dt.datetime:
    """A time inside the default look-up window (upcoming, less than a year away)."""
    return at(dt.datetime.now(NY).date() + dt.timedelta(days=days), hour)


def absolute(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc)


def sent(sb: Sandbox, mark: int) -> list[str]:
    return [r.operation for r in list(sb.records)[mark:]]


# ---------------------------------------------------------------------------------------------
# free slots


def test_slots_leave_out_booked_blocked_and_closed_time_and_fit_the_duration(
    sb: Sandbox, ghl: GoHighLevelEmulator, version: str
) -> None:
    ghl.open_hours = {DAY.weekday(): (dt.time(9), dt.time(17))}  # only Tuesdays, 09:00-17:00
    ghl.block_time(at(DAY, 12), at(DAY, 13), "Lunch")
    with client(sb, version) as c:
        book(c, at(DAY, 10), "bk-slots")
        half_hours = c.free_slots(at(DAY, 7), at(DAY + dt.timedelta(days=1), 12))
        hours = c.free_slots(at(DAY, 7), at(DAY, 20), duration_minutes=60)
        ninety = c.free_slots(at(DAY, 7), at(DAY, 20), duration_minutes=90)

    def starts(slots: Any) -> list[str]:
        return [f"{s.start:%H:%M}" for s in slots]

    closed_or_taken = {"10:00", "12:00", "12:30"}
    every = [f"{h:02d}:{m:02d}" for h in range(9, 17) for m in (0, 30)]
    assert starts(half_hours) == [t for t in every if t not in closed_or_taken]  # Wednesday is closed
    assert all(s.end - s.start == dt.timedelta(minutes=30) and s.start.tzinfo == NY for s in half_hours)
    # an hour needs two free half-hours in a row, and must end by 17:00
    assert starts(hours) == ["09:00", "10:30", "11:00", "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00"]
    assert starts(ninety) == ["10:30", "13:00", "13:30", "14:00", "14:30", "15:00", "15:30"]
    assert all(s.duration_minutes == 90 for s in ninety)


def test_a_staff_block_and_a_cancelled_booking_change_the_slots(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    with client(sb) as c:
        booked = book(c, at(DAY, 9), "bk-freed")
        assert at(DAY, 9) not in [s.start for s in c.free_slots(at(DAY, 9), at(DAY, 10))]
        sb.staff_cancel("ghl", booked.id)
        sb.block_time("ghl", at(DAY, 9, 30), at(DAY, 10))
        assert [s.start for s in c.free_slots(at(DAY, 9), at(DAY, 10))] == [at(DAY, 9)]
        with pytest.raises(ConflictError):  # GoHighLevel refuses a booking into a block slot itself
            book(c, at(DAY, 9, 30), "bk-blocked")


SPRING_FORWARD, FALL_BACK = dt.date(2037, 3, 8), dt.date(2037, 11, 1)


@pytest.mark.parametrize("night", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_slots_across_a_dst_night_are_whole_and_in_the_practice_zone(
    sb: Sandbox, ghl: GoHighLevelEmulator, version: str, night: dt.date
) -> None:
    ghl.open_hours = None  # open around the clock, so the night itself is bookable
    start, end = at(night, 0), at(night, 5)
    with client(sb, version) as c:
        slots = c.free_slots(start, end, duration_minutes=60)
    utc = [s.start.astimezone(dt.timezone.utc) for s in slots]
    assert all(b - a == dt.timedelta(minutes=30) for a, b in itertools.pairwise(utc))
    # (two datetimes in one zone subtract by wall clock in Python: compare instants)
    assert all(absolute(s.end) - absolute(s.start) == dt.timedelta(minutes=60) for s in slots)
    assert all(s.start.tzinfo == NY for s in slots)
    hours_in_window = (absolute(end) - absolute(start)) / dt.timedelta(hours=1)  # 4 in spring, 6 in autumn
    assert hours_in_window == (4 if night == SPRING_FORWARD else 6)
    assert len(slots) == 2 * hours_in_window - 1
    offsets = {s.start.utcoffset() for s in slots}
    assert offsets == {dt.timedelta(hours=-5), dt.timedelta(hours=-4)}
    if night == SPRING_FORWARD:  # 02:00-02:59 does not exist: 01:30 EST runs to 03:30 EDT
        assert all(s.start.hour != 2 for s in slots)
        crossing = next(s for s in slots if f"{s.start:%H:%M}" == "01:30")
        assert f"{crossing.end:%H:%M %z}" == "03:30 -0400" and crossing.duration_minutes == 60
    else:  # 01:00-01:59 happens twice
        assert [f"{s.start:%H:%M}" for s in slots].count("01:00") == 2


def test_booking_across_the_spring_forward_night_takes_exactly_its_hour(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    ghl.open_hours = None
    with client(sb) as c:
        crossing = next(
            s
            for s in c.free_slots(at(SPRING_FORWARD, 1), at(SPRING_FORWARD, 5), duration_minutes=60)
            if s.start.hour == 1 and s.start.minute == 30
        )
        booked = book(c, crossing.start, "bk-dst", minutes=60)
        assert absolute(booked.end) == absolute(crossing.end)
        left = c.free_slots(at(SPRING_FORWARD, 0), at(SPRING_FORWARD, 5))
    free = {absolute(s.start) for s in left}
    assert not {absolute(at(SPRING_FORWARD, 1, 30)), absolute(at(SPRING_FORWARD, 3))} & free
    assert absolute(at(SPRING_FORWARD, 3, 30)) in free


def test_a_window_over_31_days_is_refused_before_anything_is_sent(sb: Sandbox) -> None:
    with client(sb) as c, pytest.raises(ValidationError, match="31 days"):
        c.free_slots(at(DAY, 0), at(DAY + dt.timedelta(days=32), 0))
    assert sb.request_count("ghl") == 0


def test_the_answer_is_read_as_documented_and_as_seen_live() -> None:
    """Keys that are not dates (``traceId``, ``_dates_``) are skipped; a lone start is taken as
    GoHighLevel's default 30-minute grid."""
    host = "https://services.leadconnectorhq.com"
    answer = {
        "2037-03-10": {"slots": ["2037-03-10T09:00:00-04:00", "2037-03-10T09:30:00-04:00"]},
        "2037-03-11": {"slots": ["2037-03-11T15:00:00-04:00"]},
        "traceId": "0f0e",
        "_dates_": {"x": 1},
    }
    with responses.RequestsMock() as mock, PMSClient(environ=ENV_V2, env_file=None) as c:
        mock.get(f"{host}/calendars/{ENV_V2['PMS_GHL_CALENDAR_ID']}/free-slots", json=answer)
        slots = c.free_slots(at(DAY, 0), at(DAY + dt.timedelta(days=2), 0), duration_minutes=60)
        assert "timezone" not in urllib.parse.urlsplit(mock.calls[0].request.url).query  # the calendar's zone
    assert [s.start.isoformat() for s in slots] == ["2037-03-10T09:00:00-04:00"]
    assert SlotQuery(at(DAY, 0), at(DAY, 1)).duration_minutes == 30


def test_an_unreadable_answer_and_a_flaky_search_give_typed_errors_and_retries() -> None:
    host, calendar = "https://services.leadconnectorhq.com", ENV_V2["PMS_GHL_CALENDAR_ID"]
    with responses.RequestsMock() as mock, PMSClient(environ=ENV_V2, env_file=None, sleep=lambda s: None) as c:
        mock.get(f"{host}/calendars/{calendar}/free-slots", json={"2037-03-10": ["2037-03-10T09:00:00-04:00"]})
        with pytest.raises(UnexpectedResponseError, match="no 'slots' array"):
            c.free_slots(at(DAY, 0), at(DAY, 23))
        mock.post(f"{host}/contacts/search", status=503, json={"statusCode": 503, "message": "busy"})
        mock.post(f"{host}/contacts/search", json={"contacts": [{"id": "c1", "email": EMAIL}], "total": 1})
        assert [p.id for p in c.find_patient(email=EMAIL)] == ["c1"]  # a search is a read: retried
        assert [call.request.method for call in mock.calls][1:] == ["POST", "POST"]


# ---------------------------------------------------------------------------------------------
# patients and their appointments


def test_a_new_client_finds_the_booking_by_email_and_its_id_cancels_it(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    with client(sb) as first:
        booked = book(first, soon(), "bk-restart")
    with client(sb) as after_restart:  # nothing remembered: as after a process restart
        mark = len(sb.records)
        found = after_restart.find_appointments(email=EMAIL)
        assert sent(sb, mark) == ["contacts.search", "contacts.appointments", "appointments.get"]
        assert [(a.id, a.reference) for a in found] == [(booked.id, "bk-restart")]
        assert found[0].start == booked.start and found[0].status is AppointmentStatus.BOOKED
        assert after_restart.find_appointments(phone=PHONE)[0].id == booked.id
        after_restart.cancel_appointment(found[0].id)
        assert after_restart.find_appointments(email=EMAIL) == []
        cancelled = after_restart.find_appointments(email=EMAIL, include_cancelled=True)
    assert [(a.id, a.status) for a in cancelled] == [(booked.id, AppointmentStatus.CANCELLED)]
    assert ghl.booking(booked.id)["appointmentStatus"] == "cancelled"


def test_the_practice_zone_spares_reading_appointments_outside_the_window(sb: Sandbox) -> None:
    """A contact's list gives wall-clock times without an offset and no booking reference, so each
    appointment found is read; with PMS_GHL_TIMEZONE those outside the window are not."""
    with client(sb) as c:
        book(c, soon(3), "bk-near")
        far = book(c, soon(40), "bk-far")
    window = {"email": EMAIL, "start": soon(30).isoformat(), "end": soon(50).isoformat()}
    for zone, reads in (("America/New_York", 1), ("", 2)):
        with client(sb, PMS_GHL_TIMEZONE=zone) as c:
            mark = len(sb.records)
            found = c.find_appointments(**window)
            assert sent(sb, mark) == ["contacts.search", "contacts.appointments"] + ["appointments.get"] * reads
        assert [(a.id, a.reference, a.start) for a in found] == [(far.id, "bk-far", far.start)]


def test_by_reference_a_new_client_finds_what_the_conversation_booked(sb: Sandbox) -> None:
    with client(sb) as c:
        booked = book(c, soon(20), "bk-conversation-7")
        book(c, soon(21), "bk-conversation-8")
    with client(sb) as c:
        mark = len(sb.records)
        found = c.find_appointments(reference="bk-conversation-7")
        assert sent(sb, mark) == ["appointments.list"]
        assert [(a.id, a.reference) for a in found] == [(booked.id, "bk-conversation-7")]
        assert c.find_appointments(reference="bk-conversation-7", email="someone.else@example.com") == []


def test_the_window_limits_what_is_found(sb: Sandbox) -> None:
    with client(sb) as c:
        near, far = book(c, soon(3), "bk-near"), book(c, soon(40), "bk-far")
        assert [a.id for a in c.find_appointments(email=EMAIL)] == [near.id, far.id]
        window = c.find_appointments(email=EMAIL, start=soon(30).isoformat(), end=soon(50).isoformat())
        assert [a.id for a in window] == [far.id]


def test_get_appointment_sees_what_staff_changed_in_the_crm(sb: Sandbox, version: str) -> None:
    with client(sb, version) as c:
        booked = book(c, at(DAY, 10), "bk-staff")
        sb.staff_move("ghl", booked.id, at(DAY, 14), at(DAY, 14, 30))
        mark = len(sb.records)
        moved = c.get_appointment(booked.id)
        assert sent(sb, mark) == ["appointments.get" if version == "v2" else "v1.appointments.get"]
        assert (moved.start, moved.end, moved.status) == (at(DAY, 14), at(DAY, 14, 30), AppointmentStatus.BOOKED)
        sb.staff_cancel("ghl", booked.id)
        assert c.get_appointment(booked.id).status is AppointmentStatus.CANCELLED


def test_a_family_sharing_a_phone_all_come_back_over_several_pages(sb: Sandbox, ghl: GoHighLevelEmulator) -> None:
    """25 contacts share the practice's front-desk number: the search pages 20 at a time."""
    with ghl.store.lock:
        for n in range(25):
            contact_id = new_id()
            ghl.contacts[contact_id] = {
                "id": contact_id,
                "locationId": ghl.location_id,
                "firstName": f"Kid{n}",
                "phone": PHONE,
                "dateAdded": f"2037-01-01T00:00:{n:02d}Z",
            }
    with client(sb) as c:
        mark = len(sb.records)
        found = c.find_patient(phone=PHONE)
        assert sent(sb, mark) == ["contacts.search", "contacts.search"]
    assert len(found) == len({p.id for p in found}) == 25
    assert {p.phone for p in found} == {PHONE}


def test_find_patient_returns_the_contact_booking_made(sb: Sandbox) -> None:
    with client(sb) as c:
        booked = book(c, at(DAY, 11), "bk-patient")
        mark = len(sb.records)
        patients = c.find_patient(email=EMAIL.upper(), phone=PHONE)
        assert sent(sb, mark) == ["contacts.search"]
    assert [(p.id, p.name, p.email, p.phone) for p in patients] == [(booked.contact_id, "Jane Roe", EMAIL, PHONE)]
    assert EMAIL not in repr(patients[0])


@pytest.mark.parametrize("call", ["find_patient", "find_appointments"])
def test_v1_refuses_patient_searches_and_says_v2_can(sb: Sandbox, call: str) -> None:
    with client(sb, "v1") as c, pytest.raises(UnsupportedOperationError, match=r"in the URL.*PMS_GHL_API_VERSION=v2"):
        getattr(c, call)(email=EMAIL)
    assert sb.request_count("ghl") == 0


# ---------------------------------------------------------------------------------------------
# the wire: requests per read, the spec, no patient identifiers in URLs


def test_each_read_sends_the_pinned_requests(sb: Sandbox, version: str) -> None:
    with client(sb, version) as c:
        booked = book(c, soon(), "bk-pins")
        pins: list[tuple[Any, list[str]]] = [
            (lambda: c.free_slots(at(DAY, 9), at(DAY, 17)), ["slots.list"]),
            (lambda: c.get_appointment(booked.id), ["appointments.get"]),
        ]
        if version == "v2":
            pins += [
                (lambda: c.find_patient(email=EMAIL), ["contacts.search"]),
                (
                    lambda: c.find_appointments(email=EMAIL),
                    ["contacts.search", "contacts.appointments", "appointments.get"],
                ),
                (lambda: c.find_appointments(reference="bk-pins"), ["appointments.list"]),
            ]
        for call, expected in pins:
            mark = len(sb.records)
            call()
            assert sent(sb, mark) == [e if version == "v2" else _v1_name(e) for e in expected]


def _v1_name(operation: str) -> str:
    return {"slots.list": "v1.appointments.slots", "appointments.get": "v1.appointments.get"}[operation]


def test_no_email_or_phone_in_any_url_and_every_v2_read_matches_the_spec(sb: Sandbox) -> None:
    recorder = Recorder()
    with client(sb, recorder=recorder) as c:
        booked = book(c, soon(), "bk-wire")
        c.free_slots(at(DAY, 9), at(DAY, 17), duration_minutes=45)
        c.find_patient(email=EMAIL, phone=PHONE)
        c.find_appointments(email=EMAIL)
        c.find_appointments(phone=PHONE, include_cancelled=True)
        c.find_appointments(reference="bk-wire", email=EMAIL)
        c.get_appointment(booked.id)
    with client(sb, recorder=recorder, PMS_GHL_TIMEZONE="") as c:
        c.find_appointments(email=EMAIL)
        c.free_slots(at(DAY, 9), at(DAY, 17))
    secrets = {EMAIL, PHONE, PHONE.lstrip("+"), urllib.parse.quote(EMAIL), urllib.parse.quote(PHONE)}
    for request, _ in recorder.pairs:
        url = urllib.parse.unquote(request.url or "")
        assert not any(s in url or s in (request.url or "") for s in secrets), url
    assert len(recorder.pairs) >= 12
    if specs_available():
        base = sb.base_url("ghl")
        for request, response in recorder.pairs:
            official = on_official_host(request, base)
            validate_request(official)
            if not official.path_url.startswith("/contacts/search"):  # the spec documents no body for it
                validate_response(official, response)


def test_v1_reads_keep_patient_identifiers_out_of_urls(sb: Sandbox) -> None:
    recorder = Recorder()
    with client(sb, "v1", recorder=recorder) as c:
        booked = book(c, at(DAY, 10), "bk-v1-wire")
        c.free_slots(at(DAY, 9), at(DAY, 17))
        c.get_appointment(booked.id)
    urls = [urllib.parse.unquote(r.url or "") for r, _ in recorder.pairs]
    assert [urllib.parse.urlsplit(u).path.rsplit("/", 1)[-1] for u in urls[-2:]] == ["slots", booked.id]
    assert not any(EMAIL in u or PHONE in u for u in urls)
