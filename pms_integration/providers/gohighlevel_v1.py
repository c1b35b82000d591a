"""GoHighLevel legacy API v1 (end-of-life, location API key): appointments only, on v2's helpers.

What it sends and cannot do: ``docs/providers/gohighlevel.md#api-v1-legacy``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from typing import Any

import attrs

from ..errors import PMSError, UnsupportedOperationError, ValidationError
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    ReportReceipt,
    Slot,
    SlotQuery,
    named_timezone,
)
from ..provider import Capability
from ._base import text
from .gohighlevel import V2_ONLY_HINT, GoHighLevelBase, in_zone, notes_with_reference, recorded_zone

__all__ = ["GoHighLevelV1Adapter"]

_log = logging.getLogger("pms_integration.providers.gohighlevel")


class GoHighLevelV1Adapter(GoHighLevelBase):
    """Legacy API v1: appointments only, the contact matched by GoHighLevel from e-mail/phone."""

    capabilities = frozenset(
        {Capability.BOOK, Capability.UPDATE, Capability.CANCEL, Capability.FREE_SLOTS, Capability.GET_APPOINTMENT}
    )
    id_pattern = re.compile(r"^[A-Za-z0-9]{1,64}$")
    id_example = "004B1SpcAvh3s9E3rqk8"

    def zone_for(self, requested: str | None, start: _dt.datetime | None = None) -> str:
        """``selectedTimezone``: the zone named, else PMS_GHL_TIMEZONE, else a defaulted "UTC"."""
        zone = self.selected_zone(requested, start) or requested
        if zone is None:
            raise ValidationError.single(
                "timezone",
                "is required for GoHighLevel API v1 (selectedTimezone): pass an IANA zone such as "
                "'America/New_York', give start a ZoneInfo, or set PMS_GHL_TIMEZONE",
            )
        return zone

    def appointment_body(self, request: AppointmentRequest) -> dict[str, Any]:
        """The ``POST /appointments/`` body; ``request.extra`` is merged last."""
        zone = self.zone_for(request.timezone, request.start)
        patient = request.patient
        named = patient.name or patient.first_name or patient.last_name
        body: dict[str, Any] = {
            "calendarId": self.settings.calendar_id,
            "selectedSlot": in_zone(request.start, zone),
            "selectedTimezone": zone,
            "email": patient.email,
            "phone": patient.phone,
            "name": patient.display_name if named else None,
            "firstName": patient.given_name,
            "lastName": patient.family_name,
        }
        body = {k: v for k, v in body.items() if v}
        body["title"] = request.title
        body["calendarNotes"] = notes_with_reference([request.reason, request.notes], request.reference)
        return {**body, **request.extra}

    def book(self, request: AppointmentRequest) -> Appointment:
        """``POST /appointments/``, then a read-back: v1 cannot set a length (the calendar's slot
        length decides) and its answer carries no times."""
        zone = self.zone_for(request.timezone, request.start)
        booked = self.unless_ours(
            request, lambda: super(GoHighLevelV1Adapter, self).book(request), lambda: self.find_booking(request)
        )
        try:
            record = self.read(booked.id, "book")
        except PMSError as exc:
            _log.warning(
                "gohighlevel book: booked %s, but reading it back failed (%s); its end is the requested one",
                booked.id,
                type(exc).__name__,
            )
            return booked
        return self.booked(record, request, zone, booked.contact_id)

    def create_booking(self, request: AppointmentRequest) -> Appointment:
        body, ref = self.appointment_body(request), request.reference
        resp = self.transport.request("POST", "/appointments/", operation="book", json=body, reference=ref)
        data = self.answer(resp, "book", creates=True, reference=ref)  # {id, contactId, contact}
        contact = data.get("contact")
        contact_id = text(contact.get("id")) if isinstance(contact, dict) else None
        return self.booked(data, request, str(body["selectedTimezone"]), contact_id, creates=True)

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        """``GET /appointments/`` in the slot's window; the reference, else the same e-mail or phone."""
        start, end = self.window(request)
        params = {"startDate": start, "endDate": end, "calendarId": self.settings.calendar_id, "includeAll": "true"}
        resp = self.transport.request("GET", "/appointments/", operation="book", params=params)
        patient = request.patient

        def same_patient(record: dict[str, Any]) -> bool:
            found = record.get("contact")
            contact: dict[str, Any] = found if isinstance(found, dict) else {}
            email, phone = (contact.get(k) or record.get(k) for k in ("email", "phone"))
            same_email = isinstance(email, str) and email.lower() == (patient.email or "").lower()
            return bool(patient.email and same_email) or bool(patient.phone and phone == patient.phone)

        return self.matching(self.records(resp, "book", "appointments"), request, same_patient)

    def read(self, appointment_id: str, operation: str) -> dict[str, Any]:
        """``GET /appointments/{id}``: a flat record (404 is NotFoundError)."""
        resp = self.transport.request("GET", f"/appointments/{appointment_id}", operation=operation)
        record = self.answer(resp, operation)
        record.setdefault("id", appointment_id)
        return record

    def read_booking(self, appointment_id: str, operation: str) -> Appointment:
        record = self.read(appointment_id, operation)
        return self.appointment(record, operation, zone=self.booking_zone(record))

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        """Reschedule only; anything else is refused before a request is sent."""
        self.check_id(appointment_id)
        other = [f for f in ("title", "notes", "location") if getattr(changes, f) is not None]
        if other:
            raise UnsupportedOperationError(
                f"GoHighLevel API v1 can only reschedule an appointment; it cannot change {', '.join(other)}. "
                + V2_ONLY_HINT
            )
        if changes.start is None:
            raise UnsupportedOperationError(
                "GoHighLevel API v1 reschedules by start time only (the calendar sets the length); "
                "give a new start. " + V2_ONLY_HINT
            )
        return super().update(appointment_id, changes)

    def write_update(self, current: Appointment, changes: AppointmentUpdate) -> Appointment:
        """``PUT /appointments/{id}``; the appointment keeps its length (the answer has no times)."""
        start = changes.start
        assert start is not None  # checked by update
        zone = self.zone_for(named_timezone(changes.timezone, start) or recorded_zone(current.raw))
        body = {"selectedSlot": in_zone(start, zone), "selectedTimezone": zone}
        resp = self.transport.request("PUT", f"/appointments/{current.id}", operation="update", json=body)
        length = current.end - current.start if current.start and current.end else None
        end = start + length if length is not None else changes.end
        return self.rewritten(resp, current, "update", zone=zone, start=start, end=end)

    def write_cancel(self, current: Appointment, reason: str | None) -> Appointment:
        """``PUT /appointments/{id}/status``; v1 has no field that could hold ``reason``."""
        status = {"status": "cancelled"}
        self.transport.request("PUT", f"/appointments/{current.id}/status", operation="cancel", json=status)
        return attrs.evolve(current, status=AppointmentStatus.CANCELLED)

    def free_slots(self, query: SlotQuery) -> list[Slot]:
        """``GET /appointments/slots``: the same availability map as v2, one request per window."""
        params = {"calendarId": self.settings.calendar_id, **self.slot_params(query)}
        resp = self.transport.request("GET", "/appointments/slots", operation="free_slots", params=params)
        return self.slots_in(self.answer(resp, "free_slots"), query)

    def unsupported_reason(self, capability: Capability) -> str | None:
        if capability in (Capability.FIND_PATIENT, Capability.FIND_APPOINTMENTS):
            return (
                "GoHighLevel API v1 looks patients up only with the e-mail address or phone number in the URL "
                "(GET /v1/contacts/lookup), where proxies and server logs keep it, so this library does not "
                "search patients on v1; API v2 searches in the request body. " + V2_ONLY_HINT
            )
        if capability in (Capability.CHANGES, Capability.WEBHOOKS):
            return (
                "GoHighLevel API v1 lists appointments without the time they were last changed (v2's "
                "dateUpdated), so no change feed can be built on it, and GoHighLevel's signed appointment "
                "webhooks belong to Marketplace apps (API v2). " + V2_ONLY_HINT
            )
        if capability is Capability.PUSH_REPORT:
            return (
                "GoHighLevel API v1 cannot hold performance reports in this library (v1 has no way to update "
                "a note, so a re-push would duplicate it). " + V2_ONLY_HINT
            )
        return None

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        raise UnsupportedOperationError(str(self.unsupported_reason(Capability.PUSH_REPORT)))
