"""GoHighLevel API v2 (Private Integration Token): contacts, calendar events, notes and the
scheduling reads, each endpoint family with its own ``Version`` header.

What it sends: ``docs/providers/gohighlevel.md``; the wire helpers shared with v1 live in
``gohighlevel``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

from .. import _green
from .._http import HttpResponse, Runtime
from .._time import epoch_ms, parse_instant
from ..changes import FeedPage, Observed
from ..config import GoHighLevelSettings
from ..models import (
    Appointment,
    AppointmentQuery,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PatientQuery,
    PatientRecord,
    PerformanceReport,
    Slot,
    SlotQuery,
    named_timezone,
)
from ..provider import CHANGE_CAPABILITIES, READ_CAPABILITIES, WRITE_CAPABILITIES
from . import gohighlevel_changes
from ._base import text
from .gohighlevel import (
    _CONTACT_SEARCH_LIMIT,
    _MARGIN_DAY,
    _NOTES_REF,
    _RECORD_ID,
    _WALL_CLOCK,
    _ZONE_LINE,
    CALENDARS_VERSION,
    CONTACTS_VERSION,
    MAX_CONTACT_PAGES,
    PROVIDER,
    REPORTS_CONTACT_EMAIL,
    GoHighLevelBase,
    _carries,
    _found,
    _zone,
    in_zone,
    notes_with_reference,
    reference_in,
    status_of,
)

__all__ = ["GoHighLevelV2Adapter"]


class GoHighLevelV2Adapter(GoHighLevelBase):
    """API v2: contacts and calendar events, each endpoint family with its own ``Version`` header."""

    def __init__(self, settings: GoHighLevelSettings, runtime: Runtime) -> None:
        super().__init__(settings, runtime)
        self._report_contact_lock = _green.Lock()  # held across the upsert: awaited in an async call
        self._report_contact_id: str | None = settings.report_contact_id

    def send(self, method: str, path: str, *, operation: str, **kwargs: Any) -> HttpResponse:
        version = CALENDARS_VERSION if path.startswith("/calendars") else CONTACTS_VERSION
        return self.transport.request(method, path, operation=operation, headers={"Version": version}, **kwargs)

    # -- the patient's contact ----------------------------------------------------------------

    def upsert(self, body: dict[str, Any], operation: str) -> str:
        """``POST /contacts/upsert``, sent as idempotent (it matches on e-mail/phone); the id."""
        resp = self.send("POST", "/contacts/upsert", operation=operation, json=body, idempotent=True)
        contact_id = self.answer(resp, operation, "contact").get("id")
        if not isinstance(contact_id, str) or not _RECORD_ID.fullmatch(contact_id):
            raise self.unexpected(operation, "the contact upsert returned no usable contact id")
        return contact_id

    def search_body(self, email: str | None, phone: str | None, page: int = 1) -> dict[str, Any]:
        """A ``POST /contacts/search`` body: e-mail and/or phone (either matches) as filters."""
        keys = (("email", email), ("phone", phone))
        filters = [{"field": k, "operator": "eq", "value": v} for k, v in keys if v]
        return {
            "locationId": self.settings.location_id,
            "page": page,
            "pageLimit": _CONTACT_SEARCH_LIMIT,
            "filters": [{"group": "OR", "filters": filters}] if len(filters) > 1 else filters,
        }

    def find_contact(self, request: AppointmentRequest) -> str | None:
        """The patient's existing contact (``POST /contacts/search``, e-mail or phone in the body),
        or None; never writes. The patient's name wins among a family sharing them, then a
        contact matching both, then e-mail, then phone."""
        patient = request.patient
        search = self.search_body(patient.email, patient.phone)
        resp = self.send("POST", "/contacts/search", operation="book", json=search, idempotent=True)
        email, wanted = (patient.email or "").lower(), " ".join((patient.display_name or "").lower().split())
        best: tuple[tuple[int, int, int], str] | None = None
        for contact in self.records(resp, "book", "contacts"):
            contact_id = text(contact.get("id"))
            same_email = bool(email) and (text(contact.get("email")) or "").lower() == email
            same_phone = bool(patient.phone) and contact.get("phone") == patient.phone
            if not (contact_id and _RECORD_ID.fullmatch(contact_id) and (same_email or same_phone)):
                continue  # the search is the vendor's; the match is checked here
            full = " ".join(n for n in (text(contact.get("firstName")), text(contact.get("lastName"))) if n)
            same_name = bool(wanted) and " ".join((full or str(contact.get("name") or "")).lower().split()) == wanted
            score = (int(same_name), int(same_email and same_phone), int(same_email))
            if best is None or score > best[0]:
                best = (score, contact_id)
        return best[1] if best else None

    def contact_for(self, request: AppointmentRequest) -> str:
        """The patient's contact id: given, found by e-mail/phone, or created (upsert)."""
        patient = request.patient
        if patient.contact_id:
            return patient.contact_id
        fields = dict(
            firstName=patient.given_name, lastName=patient.family_name, email=patient.email, phone=patient.phone
        )
        body = {"locationId": self.settings.location_id, **{k: v for k, v in fields.items() if v}}
        return self.find_contact(request) or self.upsert(body, "book")

    # -- bookings ---------------------------------------------------------------------------

    def appointment_body(self, request: AppointmentRequest, contact_id: str) -> dict[str, Any]:
        """The ``AppointmentCreateSchema`` body; ``request.extra`` is merged last."""
        zone = self.selected_zone(request.timezone, request.start)
        body: dict[str, Any] = {
            "calendarId": self.settings.calendar_id,
            "locationId": self.settings.location_id,
            "contactId": contact_id,
            "startTime": in_zone(request.start, zone),
            "endTime": in_zone(request.end_time, zone),
            "title": request.title,
            "appointmentStatus": "confirmed",
            "description": notes_with_reference([request.reason, request.notes], request.reference, zone),
        }
        if request.location:
            body["address"] = request.location
        return {**body, **request.extra}

    def book(self, request: AppointmentRequest) -> Appointment:
        contact_id = self.contact_for(request)  # outside create_once: a retried create reuses it
        return self.unless_ours(
            request,
            lambda: self.create_once(
                lambda: self.create_booking(request, contact_id),
                lambda: self.find_booking(request, contact_id),
                operation="book",
                reference=request.reference,
            ),
            lambda: self.find_booking(request, contact_id),
        )

    def create_booking(self, request: AppointmentRequest, contact_id: str | None = None) -> Appointment:
        contact_id = contact_id or self.contact_for(request)
        body = self.appointment_body(request, contact_id)
        ref = request.reference
        resp = self.send("POST", "/calendars/events/appointments", operation="book", json=body, reference=ref)
        data = self.answer(resp, "book", creates=True, reference=ref)
        zone = self.selected_zone(request.timezone, request.start)
        return self.booked(data, request, zone, contact_id, creates=True)

    def find_booking(self, request: AppointmentRequest, contact_id: str | None = None) -> Appointment | None:
        """``GET /calendars/events`` in the slot's window (read-only, so safe after an ambiguous create)."""
        start, end = self.window(request)
        where = {"locationId": self.settings.location_id, "calendarId": self.settings.calendar_id}
        params = {**where, "startTime": start, "endTime": end}
        events = self.records(self.send("GET", "/calendars/events", operation="book", params=params), "book", "events")

        def same_contact(event: dict[str, Any]) -> bool:
            return bool(contact_id) and event.get("contactId") == contact_id

        return self.matching(events, request, same_contact, contact_id)

    def read_booking(self, appointment_id: str, operation: str) -> Appointment:
        resp = self.send("GET", f"/calendars/events/appointments/{appointment_id}", operation=operation)
        event = self.answer(resp, operation, "event")
        event.setdefault("id", appointment_id)
        return self.appointment(event, operation, zone=self.booking_zone(event))

    # -- scheduling reads ---------------------------------------------------------------------

    capabilities = WRITE_CAPABILITIES | READ_CAPABILITIES | CHANGE_CAPABILITIES

    def observe_changes(self, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
        """The calendar's events in a window, diffed by ``dateUpdated`` (``gohighlevel_changes``)."""
        return gohighlevel_changes.observe_changes(self, position, now)

    def observe_webhook(self, payload: Any) -> list[Observed]:
        """AppointmentCreate/Update/Delete webhook bodies (``gohighlevel_changes``)."""
        return gohighlevel_changes.observe_webhook(self, payload)

    def free_slots(self, query: SlotQuery) -> list[Slot]:
        """``GET /calendars/{calendarId}/free-slots``: GoHighLevel computes the slots (open hours,
        bookings, block slots); one request per window (the models cap a window at 31 days,
        GoHighLevel's own limit)."""
        path = f"/calendars/{self.settings.calendar_id}/free-slots"
        resp = self.send("GET", path, operation="free_slots", params=self.slot_params(query))
        return self.slots_in(self.answer(resp, "free_slots"), query)

    def search_contacts(self, email: str | None, phone: str | None, operation: str) -> list[dict[str, Any]]:
        """Every contact with this e-mail or phone (``POST /contacts/search``, both in the body),
        page after page up to ``MAX_CONTACT_PAGES``; the vendor's match is checked here, and
        contacts matching both come first."""
        found: dict[str, tuple[int, dict[str, Any]]] = {}
        for page in range(1, MAX_CONTACT_PAGES + 1):
            body = self.search_body(email, phone, page)
            resp = self.send("POST", "/contacts/search", operation=operation, json=body, idempotent=True)
            data = self.answer(resp, operation)
            batch = data.get("contacts")
            if not isinstance(batch, list):
                raise self.unexpected(operation, "the answer has no 'contacts' array")
            for contact in batch:
                contact_id = text(contact.get("id")) if isinstance(contact, dict) else None
                if not contact_id or not _RECORD_ID.fullmatch(contact_id):
                    continue
                same_email = bool(email) and (text(contact.get("email")) or "").lower() == (email or "").lower()
                same_phone = bool(phone) and contact.get("phone") == phone
                if same_email or same_phone:
                    found.setdefault(contact_id, (-int(same_email and same_phone), dict(contact)))
            total = data.get("total", data.get("count"))
            seen = (page - 1) * _CONTACT_SEARCH_LIMIT + len(batch)
            if len(batch) < _CONTACT_SEARCH_LIMIT or (isinstance(total, int) and seen >= total):
                break
        return [contact for _, contact in sorted(found.values(), key=lambda pair: pair[0])]

    def find_patients(self, query: PatientQuery) -> list[PatientRecord]:
        """Contacts by e-mail and/or phone: a family sharing a phone all come back."""
        return [
            PatientRecord(
                PROVIDER,
                str(c["id"]),
                name=text(c.get("name"))
                or " ".join(n for n in (text(c.get("firstName")), text(c.get("lastName"))) if n)
                or None,
                email=text(c.get("email")),
                phone=text(c.get("phone")),
                raw=c,
            )
            for c in self.search_contacts(query.email, query.phone, "find_patient")
        ]

    def find_appointments(self, query: AppointmentQuery) -> list[Appointment]:
        """By patient: contacts by search, then ``GET /contacts/{contactId}/appointments`` for each,
        then each listed appointment in the window is read (see :meth:`listed`). By reference: the calendar's events in the window (``GET /calendars/events``), the one
        carrying it; with an e-mail or phone as well, only if it belongs to one of their contacts."""
        operation = "find_appointments"
        start, end = query.window()
        contacts = None
        if query.email or query.phone:
            contacts = [str(c["id"]) for c in self.search_contacts(query.email, query.phone, operation)]
        found: list[Appointment] = []
        if query.reference:
            params = {
                "locationId": self.settings.location_id,
                "calendarId": self.settings.calendar_id,
                "startTime": str(epoch_ms(start)),
                "endTime": str(epoch_ms(end)),
            }
            resp = self.send("GET", "/calendars/events", operation=operation, params=params)
            for event in self.records(resp, operation, "events"):
                if _carries(event, query.reference) and (contacts is None or event.get("contactId") in contacts):
                    found.append(self.appointment(event, operation, zone=self.booking_zone(event)))
        else:
            seen: set[str] = set()
            for contact_id in contacts or []:
                resp = self.send("GET", f"/contacts/{contact_id}/appointments", operation=operation)
                for event in self.records(resp, operation, "events"):
                    if text(event.get("id")) in seen:
                        continue
                    seen.add(str(event.get("id")))
                    if status_of(event) is AppointmentStatus.CANCELLED and not query.include_cancelled:
                        continue
                    appointment = self.listed(event, operation, start, end)
                    if appointment is not None:
                        found.append(appointment)
        return [
            a
            for a in found
            if (query.include_cancelled or a.status is not AppointmentStatus.CANCELLED)
            and a.start is not None
            and start <= a.start < end
        ]

    def listed(
        self, event: Mapping[str, Any], operation: str, start: _dt.datetime, end: _dt.datetime
    ) -> Appointment | None:
        """An event from a contact's appointment list as the event itself reads
        (``GET /calendars/events/appointments/{id}``), or None when it starts well outside the
        window (then it is not read).

        The list alone is not enough: the spec shows its times as the calendar's wall clock
        without an offset (``2021-07-16 11:00:00``) and its records carry no description, where
        the booking reference is. Its times only spare the read of appointments outside the
        window: read in PMS_GHL_TIMEZONE, with a day's margin either side. A listed record that
        has offsets and names its reference is used as it is."""
        value = event.get("startTime")
        exact = parse_instant(value)
        at, zone = exact, _zone(self.settings.timezone)
        if at is None and zone is not None and isinstance(value, str) and _WALL_CLOCK.fullmatch(value.strip()):
            at = _dt.datetime.fromisoformat(value.strip().replace(" ", "T")).replace(tzinfo=zone)
        if at is not None and not start - _MARGIN_DAY <= at < end + _MARGIN_DAY:
            return None
        if exact is not None and reference_in(event):
            return self.appointment(event, operation, zone=self.booking_zone(event))
        event_id = text(event.get("id"))
        if event_id is None or not self.id_pattern.fullmatch(event_id):
            raise self.unexpected(operation, "a listed appointment has no usable id")
        return self.read_booking(event_id, operation)

    def update_body(self, changes: AppointmentUpdate, event: Mapping[str, Any]) -> dict[str, Any]:
        """Only the changed fields, in ``AppointmentEditSchema`` names; times in the zone the update
        names, else the booking's; new notes keep the description's zone and reference lines."""
        zone = named_timezone(changes.timezone, changes.start) or self.booking_zone(event)
        body: dict[str, Any] = {}
        if changes.start is not None:
            body["startTime"] = in_zone(changes.start, zone)
        if changes.end is not None:
            body["endTime"] = in_zone(changes.end, zone)
        if changes.title is not None:
            body["title"] = changes.title
        if changes.notes is not None:
            kept = _found(_NOTES_REF, event, ("description",)), _found(_ZONE_LINE, event, ("description",))
            body["description"] = notes_with_reference([changes.notes], kept[0], kept[1])
        if changes.location is not None:
            body["address"] = changes.location
        return body

    def write_update(self, current: Appointment, changes: AppointmentUpdate) -> Appointment:
        path = f"/calendars/events/appointments/{current.id}"
        resp = self.send("PUT", path, operation="update", json=self.update_body(changes, current.raw))
        zone = named_timezone(changes.timezone, changes.start) or self.booking_zone(current.raw)
        return self.rewritten(resp, current, "update", zone=zone, start=changes.start, end=changes.end)

    def write_cancel(self, current: Appointment, reason: str | None) -> Appointment:
        """Status ``cancelled`` (the event stays); the reason is appended to the description."""
        body: dict[str, Any] = {"appointmentStatus": "cancelled"}
        if reason:
            old, line = text(current.raw.get("description")), f"Cancellation reason: {reason}"
            body["description"] = f"{old}\n\n{line}" if old and old.strip() else line
        resp = self.send("PUT", f"/calendars/events/appointments/{current.id}", operation="cancel", json=body)
        zone = self.booking_zone(current.raw)
        return self.rewritten(resp, current, "cancel", zone=zone, status=AppointmentStatus.CANCELLED)

    # -- reports: a note on the reports contact -------------------------------------------------

    def report_contact_id(self) -> str:
        """The contact that holds report notes: configured, or upserted once and cached."""
        with self._report_contact_lock:
            if self._report_contact_id is None:
                body = {"locationId": self.settings.location_id, "email": REPORTS_CONTACT_EMAIL}
                names = {"firstName": "AI Receptionist", "lastName": "Reports", "source": "pms-integration"}
                self._report_contact_id = self.upsert({**body, **names}, "push_report")
            return self._report_contact_id

    def note_id(self, note: Mapping[str, Any], report: PerformanceReport, *, creates: bool = False) -> str:
        note_id = note.get("id")
        if not isinstance(note_id, str) or not _RECORD_ID.fullmatch(note_id):
            raise self.unexpected(
                "push_report", "the note has no usable id", outcome_unknown=creates, reference=report.id
            )
        return note_id

    def report_payload(self, report: PerformanceReport) -> Mapping[str, Any]:
        return {"title": str(report.title), "body": report.render_text()}

    def find_report(self, report: PerformanceReport) -> str | None:
        """The note whose body has the exact ``Report id: <report_id>`` line."""
        resp = self.send("GET", f"/contacts/{self.report_contact_id()}/notes", operation="push_report")
        marker = re.compile(r"(?m)^Report id: " + re.escape(report.id) + r"\s*$")
        notes = self.records(resp, "push_report", "notes")
        return next((self.note_id(n, report) for n in notes if marker.search(text(n.get("body")) or "")), None)

    def update_report(self, record_id: str, report: PerformanceReport, payload: Mapping[str, Any]) -> bool:
        path = f"/contacts/{self.report_contact_id()}/notes/{record_id}"
        return self.send("PUT", path, operation="push_report", json=payload, expect=(404,)).status != 404

    def create_report(self, report: PerformanceReport, payload: Mapping[str, Any]) -> str:
        path, body = f"/contacts/{self.report_contact_id()}/notes", {**payload, "pinned": False}
        resp = self.send("POST", path, operation="push_report", json=body, reference=report.id)
        return self.note_id(
            self.answer(resp, "push_report", "note", creates=True, reference=report.id), report, creates=True
        )
