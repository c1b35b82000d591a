"""The scheduling reads keep the same promises on every provider (issue 15, "What it must show").

Each test runs on GoHighLevel v2 and v1, Salesforce and HubSpot against the sandbox, through
the public API only: free slots leave out booked, blocked and closed time and fit the length
asked for, across daylight-saving changes too; a taken slot is refused before anything is
written; a booking is found again by the patient's e-mail from another process, and the id
found cancels it; ``get_appointment`` shows what staff changed in the CRM; and no e-mail or
phone number travels in a URL. Where GoHighLevel v1 cannot do a read, the test is skipped with
the reason the library itself gives (``UnsupportedOperationError``).

Each vendor's wire format, paging and its own limits are tested in its own test files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

import pms_integration as pms
from pms_integration import PMSClient
from pms_integration.provider import Capability
from pms_integration.sandbox import Sandbox
from pms_integration.state import reset_memory_state
from pms_integration.testing import as_default

NY = ZoneInfo("America/New_York")
HALF_HOUR = dt.timedelta(minutes=30)


@attrs.frozen
class Variant:
    provider: str
    version: str = "v2"
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def checks_the_slot(self) -> bool:
        """Whether the library checks the slot before booking (the vendor accepts double bookings)."""
        return self.provider in ("salesforce", "hubspot")


VARIANTS = {
    "gohighlevel-v2": Variant("gohighlevel"),
    "gohighlevel-v1": Variant("gohighlevel", "v1"),
    "salesforce": Variant("salesforce"),
    "hubspot": Variant("hubspot"),
}


@attrs.define
class Case:
    variant: Variant
    sandbox: Sandbox
    client: PMSClient
    env: dict[str, str]

    @property
    def provider(self) -> str:
        return self.variant.provider

    def needs(self, *capabilities: Capability) -> None:
        """Skip, with the library's own reason, where this provider or API version cannot."""
        adapter = self.client.adapter()
        for capability in capabilities:
            if capability not in adapter.capabilities:
                pytest.skip(adapter.unsupported_reason(capability) or f"{self.provider} has no {capability}")

    def day(self, date: dt.date) -> list[pms.Slot]:
        """The whole local day's free half-hour slots."""
        start = dt.datetime.combine(date, dt.time(0), tzinfo=NY)
        return pms.free_slots(start, start + dt.timedelta(days=1), duration_minutes=30)

    def book(self, start: dt.datetime, reference: str, minutes: int = 30, **patient: str) -> pms.Appointment:
        who = {"name": "Jane Doe", "email": f"{reference}@example.com", "phone": "+15555550123", **patient}
        return pms.book_appointment(
            {
                "start": start.isoformat(),
                "duration_minutes": minutes,
                "timezone": "America/New_York",
                "title": "Cleaning",
                "patient": who,
                "reference": reference,
            }
        )

    def settle(self) -> None:
        """HubSpot's search index lags its writes; its emulator can be told to catch up."""
        settle = getattr(self.sandbox.emulator(self.provider), "settle", None)
        if settle is not None:
            settle()


@pytest.fixture(params=[pytest.param(v, id=name) for name, v in VARIANTS.items()])
def case(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[Case]:
    variant: Variant = request.param
    env = {**sb.environ(ghl_api_version=variant.version, default_provider=variant.provider), **dict(variant.settings)}
    with PMSClient(environ=env, env_file=None) as client, as_default(client):
        yield Case(variant, sb, client, env)


def _coming_tuesday() -> dt.date:
    """A Tuesday two to three weeks ahead: inside the year ``find_appointments`` looks at by default."""
    day = dt.datetime.now(NY).date() + dt.timedelta(days=14)
    return day + dt.timedelta(days=(1 - day.weekday()) % 7)


TUESDAY = _coming_tuesday()


def records(case: Case) -> dict[str, Any]:
    """The emulator's records (its counters, such as API usage, left out)."""
    return {k: v for k, v in case.sandbox.state(case.provider).items() if isinstance(v, (list, dict))}


def overlapping(slots: list[pms.Slot], start: dt.datetime, end: dt.datetime) -> list[pms.Slot]:
    return [s for s in slots if s.start < end and start < s.end]


# ---------------------------------------------------------------------------------------------
# free slots


def test_slots_leave_out_booked_blocked_and_closed_time_and_fit_the_duration(case: Case) -> None:
    case.needs(Capability.FREE_SLOTS)
    slots = case.day(TUESDAY)
    assert len(slots) >= 4, slots
    assert [s.start for s in slots] == sorted(s.start for s in slots)
    for slot in slots:
        assert slot.provider.value == case.provider
        assert slot.end - slot.start == HALF_HOUR and slot.start.tzinfo is not None
        # closed time: the night is never offered
        assert dt.time(6) <= slot.start.astimezone(NY).time() and slot.end.astimezone(NY).time() <= dt.time(22)

    booked = case.book(slots[0].start, "slots-booked")
    blocked_start, blocked_end = slots[2].start, slots[2].end + HALF_HOUR
    case.sandbox.block_time(case.provider, blocked_start, blocked_end, "Staff meeting")
    case.settle()
    after = case.day(TUESDAY)
    assert booked.start is not None and booked.end is not None
    assert overlapping(after, booked.start, booked.end) == []
    assert overlapping(after, blocked_start, blocked_end) == []
    assert after and set(after) < set(slots)

    hour_long = pms.free_slots(
        dt.datetime.combine(TUESDAY, dt.time(0), tzinfo=NY),
        dt.datetime.combine(TUESDAY, dt.time(23, 59), tzinfo=NY),
        duration_minutes=60,
    )
    assert hour_long, "an hour is free somewhere on the day"
    assert all(s.end - s.start == dt.timedelta(hours=1) for s in hour_long)
    assert overlapping(hour_long, booked.start, booked.end) == []
    assert overlapping(hour_long, blocked_start, blocked_end) == []
    # an hour fits where two free half hours do, and nowhere else
    halves = {s.start for s in after}
    assert all(s.start in halves for s in hour_long)


def test_slots_keep_their_wall_clock_times_across_daylight_saving_changes(case: Case) -> None:
    """The week before and after spring-forward (2031-03-09) and fall-back (2031-11-02) nights:
    the same local opening times, a different UTC offset; a booking on the far side holds."""
    case.needs(Capability.FREE_SLOTS)
    for before, after in ((dt.date(2031, 3, 7), dt.date(2031, 3, 10)), (dt.date(2031, 10, 31), dt.date(2031, 11, 3))):
        start = dt.datetime.combine(before, dt.time(0), tzinfo=NY)
        # one search across the night the clocks change
        slots = pms.free_slots(start, dt.datetime.combine(after, dt.time(23, 59), tzinfo=NY))
        on = {day: [s for s in slots if s.start.astimezone(NY).date() == day] for day in (before, after)}
        assert on[before] and on[after], (before, after)
        local = {day: [s.start.astimezone(NY).time() for s in on[day]] for day in on}
        assert local[before] == local[after]
        assert on[before][0].start.utcoffset() != on[after][0].start.utcoffset()
        assert all(s.end - s.start == HALF_HOUR for s in slots)
        booked = case.book(on[after][0].start, f"dst-{after:%m%d}")
        assert booked.start == on[after][0].start


# ---------------------------------------------------------------------------------------------
# a taken slot


def test_a_taken_slot_is_refused_and_nothing_is_written(case: Case) -> None:
    """Salesforce and HubSpot accept two bookings in one slot, so the library checks first and
    writes nothing; GoHighLevel refuses the second booking itself."""
    case.needs(Capability.FREE_SLOTS)
    slot = case.day(TUESDAY)[0]
    first = case.book(slot.start, "taken-first")
    case.settle()
    before = records(case)
    mark = len(case.sandbox.records)
    with pytest.raises(pms.ConflictError) as refused:
        case.book(slot.start, "taken-second", name="John Roe", email="john@example.com")
    assert refused.value.operation == "book"
    if case.variant.checks_the_slot:
        assert refused.value.code == "SLOT_TAKEN"
        assert records(case) == before, "the refused booking wrote something"
        sent = [r.operation for r in list(case.sandbox.records)[mark:]]
        assert not [op for op in sent if op.endswith(("create", "update", "upsert", "delete"))], sent
    else:
        assert "taken-second" not in json.dumps(case.sandbox.state(case.provider)), "GoHighLevel stored it"
    found = _found(case, first.reference)
    assert found is None or [a.id for a in found] == [first.id]


def _found(case: Case, reference: str | None) -> list[pms.Appointment] | None:
    """The bookings with ``reference``, where the provider can look them up."""
    if Capability.FIND_APPOINTMENTS not in case.client.adapter().capabilities:
        return None
    return pms.find_appointments(reference=reference)


def test_blocked_time_is_refused_too(case: Case) -> None:
    """Time staff blocked in the calendar is taken too: refused before anything is written."""
    case.needs(Capability.FREE_SLOTS)
    slot = case.day(TUESDAY)[1]
    case.sandbox.block_time(case.provider, slot.start, slot.end, "Lunch")
    case.settle()
    before = records(case)
    with pytest.raises(pms.ConflictError) as refused:
        case.book(slot.start, "blocked")
    if case.variant.checks_the_slot:
        assert refused.value.code == "SLOT_TAKEN"
        assert records(case) == before
    else:  # GoHighLevel refuses it itself (the patient's contact, upserted first, may stay)
        assert records(case)["bookings"] == before["bookings"]


def test_a_practice_that_double_books_on_purpose_can_turn_the_check_off(case: Case) -> None:
    if not case.variant.checks_the_slot:
        pytest.skip("GoHighLevel refuses a double booking itself; there is no check to turn off")
    variable = {"salesforce": "PMS_SALESFORCE_CONFLICT_CHECK", "hubspot": "PMS_HUBSPOT_CONFLICT_CHECK"}[case.provider]
    slot = case.day(TUESDAY)[0]
    first = case.book(slot.start, "double-1")
    case.settle()
    with PMSClient(environ={**case.env, variable: "off"}, env_file=None) as relaxed, as_default(relaxed):
        second = case.book(slot.start, "double-2", name="John Roe", email="john@example.com")
    assert second.id != first.id


# ---------------------------------------------------------------------------------------------
# finding a booking again


def _cli(case: Case, *args: str, cwd: Path) -> Any:
    """``pms-integration ARGS`` in a new process configured like ``case``; its JSON output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_")} | case.env
    done = subprocess.run(
        [sys.executable, "-m", "pms_integration", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_booking_is_found_by_email_after_a_restart_and_its_id_cancels_it(case: Case, tmp_path: Path) -> None:
    case.needs(Capability.FIND_APPOINTMENTS, Capability.FREE_SLOTS)
    slots = case.day(TUESDAY)
    email = "returning.patient@example.com"
    booked = case.book(slots[0].start, "restart-1", email=email, phone="+15555550142")
    other = case.book(slots[3].start, "restart-other", email="someone.else@example.com", phone="+15555550999")
    case.settle()

    found = _cli(case, "find", "--email", email, cwd=tmp_path)  # another process: nothing remembered
    assert [a["id"] for a in found] == [booked.id]
    assert found[0]["reference"] == "restart-1" and found[0]["status"] == "booked"
    assert [a["id"] for a in _cli(case, "find", "--phone", "+1 555 555 0142", cwd=tmp_path)] == [booked.id]
    assert [a["id"] for a in _cli(case, "find", "--reference", "restart-1", cwd=tmp_path)] == [booked.id]

    cancelled = _cli(case, "cancel", found[0]["id"], cwd=tmp_path)
    assert cancelled["status"] == "cancelled"
    case.settle()
    assert pms.find_appointments(email=email) == []
    with_cancelled = pms.find_appointments(email=email, include_cancelled=True)
    assert [(a.id, a.status) for a in with_cancelled] == [(booked.id, pms.AppointmentStatus.CANCELLED)]
    assert pms.get_appointment(other.id).status is pms.AppointmentStatus.BOOKED


def test_find_patient_returns_the_vendor_record_a_booking_used(case: Case) -> None:
    case.needs(Capability.FIND_PATIENT, Capability.FREE_SLOTS)
    case.book(case.day(TUESDAY)[0].start, "patient-1", name="Ada Lovelace", email="ada@example.com")
    case.settle()
    records = pms.find_patient(email="ada@example.com")
    assert len(records) == 1 and records[0].email == "ada@example.com" and records[0].id
    assert pms.find_patient(email="nobody@example.com") == []


def test_get_appointment_sees_what_staff_changed_in_the_crm(case: Case) -> None:
    case.needs(Capability.GET_APPOINTMENT, Capability.FREE_SLOTS)
    slots = case.day(TUESDAY)
    booked = case.book(slots[0].start, "staff-1")
    assert pms.get_appointment(booked.id).start == booked.start

    later = slots[-1].start
    case.sandbox.staff_move(case.provider, booked.id, later, later + HALF_HOUR)
    moved = pms.get_appointment(booked.id)
    assert (moved.start, moved.end, moved.status) == (later, later + HALF_HOUR, pms.AppointmentStatus.BOOKED)

    case.sandbox.staff_cancel(case.provider, booked.id)
    assert pms.get_appointment(booked.id).status is pms.AppointmentStatus.CANCELLED


# ---------------------------------------------------------------------------------------------
# no patient detail in a URL


def test_no_email_or_phone_in_any_url_the_reads_send(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Look-ups by e-mail or phone carry them in request bodies; URLs end up in proxies' logs."""
    targets: list[str] = []
    dispatch = case.sandbox._dispatch

    def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
        targets.append(target)  # path and query string
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(case.sandbox, "_dispatch", recording)
    adapter = case.client.adapter()
    patient = {"email": "private.person@example.com", "phone": "+15555550173"}
    calls = 0
    booked = None
    if Capability.FREE_SLOTS in adapter.capabilities:
        start = case.day(TUESDAY)[0].start
        booked = case.book(start, "url-1", name="Private Person", email=patient["email"], phone=patient["phone"])
        case.settle()
        calls += 2
    if Capability.FIND_PATIENT in adapter.capabilities:
        pms.find_patient(email=patient["email"])
        pms.find_patient(phone=patient["phone"])
        pms.find_patient(**patient)
        calls += 3
    if Capability.FIND_APPOINTMENTS in adapter.capabilities:
        pms.find_appointments(email=patient["email"])
        pms.find_appointments(phone=patient["phone"], include_cancelled=True)
        pms.find_appointments(reference="url-1")
        calls += 3
    if booked is not None and Capability.GET_APPOINTMENT in adapter.capabilities:
        pms.get_appointment(booked.id)
        calls += 1
    if not calls:
        pytest.skip(adapter.unsupported_reason(Capability.FIND_PATIENT) or "no reads")
    assert len(targets) >= calls
    for target in targets:
        seen = urllib.parse.unquote(urllib.parse.unquote(target)).lower()
        assert "private" not in seen and "example.com" not in seen and "5550173" not in seen, target


def test_the_same_booking_retried_from_a_new_process_is_the_first_one(case: Case) -> None:
    """A retry after a restart (same reference, same slot) is not a clash: on the vendors the
    library checks (Salesforce, HubSpot) the check finds the first booking and returns it; on
    GoHighLevel, which refuses the slot itself, the refusal is followed by a look-up that finds
    the booking holding the slot is this very one."""
    slot = case.day(TUESDAY)[0]
    first = case.book(slot.start, "retried-1")
    case.settle()
    reset_memory_state()  # a restart: memory:// goes with the process
    with PMSClient(environ=case.env, env_file=None) as restarted, as_default(restarted):
        mark = len(case.sandbox.records)
        again = case.book(slot.start, "retried-1")
        sent = [r.operation for r in list(case.sandbox.records)[mark:]]
        assert again.id == first.id
        writes = [op for op in sent if op.endswith(("create", "update", "upsert", "delete"))]
        if case.variant.checks_the_slot:
            assert not writes, sent
        else:  # the one create GoHighLevel refused (a contact upsert is not a booking)
            assert [op for op in writes if "appointment" in op] == [writes[-1]], sent
        found = _found(case, "retried-1")
        assert found is None or [a.id for a in found] == [first.id]
