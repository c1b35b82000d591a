"""Opening hours, slot fitting across daylight-saving changes, and the scheduling-read inputs."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import pms_integration as pms
from pms_integration.models import AppointmentQuery, PatientQuery, SlotQuery, structure
from pms_integration.scheduling import Busy, OpenHours, fit_slots

NY = ZoneInfo("America/New_York")
HALF_HOUR = dt.timedelta(minutes=30)


def _slots(hours: str, start: dt.datetime, end: dt.datetime, busy: list[Busy] | None = None) -> list[str]:
    ranges = OpenHours.parse(hours).intervals(start, end, NY)
    found = fit_slots(ranges, busy or [], start=start, end=end, duration=HALF_HOUR, step=HALF_HOUR, zone=NY)
    return [a.isoformat() for a, _ in found]


def test_open_hours_read_and_print_back() -> None:
    hours = OpenHours.parse("mon-fri 08:00-12:00 13:00-17:00; Saturday 9:00-12:00")
    assert str(hours) == "Mon-Fri 08:00-12:00 13:00-17:00; Sat 09:00-12:00"
    assert hours.days[6] == ()


@pytest.mark.parametrize("text", ["", "whenever", "Fri-Mon 08:00-10:00", "Mon 25:00-26:00", "Mon 10:00-09:00"])
def test_unreadable_open_hours_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="must be weekdays and times like"):
        OpenHours.parse(text)


def test_spring_forward_night_has_no_slot_in_the_missing_hour() -> None:
    night = dt.datetime(2031, 3, 9, 0, tzinfo=NY)  # clocks jump from 02:00 to 03:00
    assert _slots("Sun 01:00-04:00", night, night + dt.timedelta(hours=12)) == [
        "2031-03-09T01:00:00-05:00",
        "2031-03-09T01:30:00-05:00",
        "2031-03-09T03:00:00-04:00",
        "2031-03-09T03:30:00-04:00",
    ]


def test_fall_back_night_offers_the_repeated_hour_twice_unless_busy() -> None:
    night = dt.datetime(2031, 11, 2, 0, tzinfo=NY)  # 01:00-02:00 happens twice
    second_one = dt.datetime(2031, 11, 2, 6, 0, tzinfo=dt.timezone.utc)  # 01:00 the second time
    busy = [Busy(second_one, second_one + HALF_HOUR, appointment_id="a-1")]
    assert _slots("Sun 01:00-03:00", night, night + dt.timedelta(hours=12), busy) == [
        "2031-11-02T01:00:00-04:00",
        "2031-11-02T01:30:00-04:00",
        "2031-11-02T01:30:00-05:00",
        "2031-11-02T02:00:00-05:00",
        "2031-11-02T02:30:00-05:00",
    ]


def test_slots_respect_the_window_busy_time_and_duration() -> None:
    monday = dt.datetime(2031, 3, 3, 9, 15, tzinfo=NY)
    busy = [Busy(monday.replace(hour=10), monday.replace(hour=10, minute=45))]
    ranges = OpenHours.parse("Mon 09:00-12:00").intervals(monday, monday + dt.timedelta(hours=8), NY)
    hour = dt.timedelta(hours=1)
    found = fit_slots(
        ranges, busy, start=monday, end=monday + dt.timedelta(hours=8), duration=hour, step=HALF_HOUR, zone=NY
    )
    # 09:00 starts before the window; 09:30 and later overlap 10:00-10:45 until 11:00
    assert [a.strftime("%H:%M") for a, _ in found] == ["11:00"]


def test_queries_report_every_bad_field_at_once() -> None:
    with pytest.raises(pms.ValidationError) as caught:
        structure({"start": "2031-03-04T09:00:00", "end": "soon", "duration_minutes": 2, "x": 1}, SlotQuery)
    assert {path for path, _ in caught.value.errors} == {"x", "start", "end", "duration_minutes"}
    with pytest.raises(pms.ValidationError, match="at most 31 days"):
        SlotQuery(start=dt.datetime(2031, 3, 1, tzinfo=NY), end=dt.datetime(2031, 4, 2, tzinfo=NY))
    with pytest.raises(pms.ValidationError, match="e-mail address or a phone number"):
        PatientQuery()
    assert PatientQuery(phone="+1 (555) 555-0123").phone == "+15555550123"
    with pytest.raises(pms.ValidationError, match="booking reference"):
        AppointmentQuery(include_cancelled=True)
    with pytest.raises(pms.ValidationError, match="include_cancelled: must be true or false"):
        AppointmentQuery(reference="conv-1", include_cancelled="yes")  # type: ignore[arg-type]


def test_a_search_without_start_looks_at_upcoming_appointments() -> None:
    now = dt.datetime(2031, 3, 4, 12, tzinfo=dt.timezone.utc)
    start, end = AppointmentQuery(reference="conv-1").window(now)
    assert now - dt.timedelta(minutes=5) == start and end - start == dt.timedelta(days=366)


def test_results_read_well_in_a_terminal_and_keep_contact_details_out_of_reprs() -> None:
    start = dt.datetime(2031, 3, 4, 9, tzinfo=NY)
    slots = pms.SlotList([pms.Slot(pms.ProviderName.HUBSPOT, start, start + HALF_HOUR)])
    assert "Tue 2031-03-04 09:00-09:30 -0500" in str(slots) and "<table>" in slots._repr_html_()
    patient = pms.PatientRecord(
        pms.ProviderName.SALESFORCE, "003000000000001AAA", "Ada", "ada@example.com", "+15555550123"
    )
    assert "ada@example.com" in str(patient) and "ada@example.com" not in repr(patient)
    assert str(pms.AppointmentList()) == "(none)"
