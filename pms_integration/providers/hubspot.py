"""HubSpot adapter: a booking is a deal plus a meeting on the patient's contact; a report is a note.

``Appointment.id`` is ``"<dealId>:<meetingId>"``. What is sent and why: ``docs/providers/hubspot.md``;
the wire format: :mod:`.hubspot_wire`.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from .. import _green
from .._http import ErrorInfo, HttpResponse, Runtime
from .._ratelimit import RateLimitInfo
from .._retry import current_deadline
from .._time import UTC
from ..changes import FeedPage, Observed
from ..config import HubSpotSettings
from ..errors import ConflictError, PMSError, UnexpectedResponseError, ValidationError
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    Patient,
    PerformanceReport,
    ProviderName,
    named_timezone,
)
from ..provider import CHANGE_CAPABILITIES, READ_CAPABILITIES, WRITE_CAPABILITIES, Provider
from ..scheduling import Busy, OpenHours
from . import hubspot_changes as changes
from . import hubspot_reads as reads
from . import hubspot_wire as wire
from ._base import BaseAdapter, text
from .hubspot_wire import (
    DEAL_TO_CONTACT,
    MEETING_TO_CONTACT,
    MEETING_TO_DEAL,
    NOTE_BODY_LIMIT,
    NOTE_TO_COMPANY,
    HubSpotPaths,
    Kind,
    parse_error,
    parse_rate_headers,
)

__all__ = [
    "HubSpotAdapter",
    "HubSpotPaths",
    "create",
    "parse_error",
    "parse_rate_headers",
    "TOKEN_VARIABLE",
    "DEAL_TO_CONTACT",
    "MEETING_TO_CONTACT",
    "MEETING_TO_DEAL",
    "NOTE_TO_COMPANY",
    "REPORTS_COMPANY_NAME",
    "NOTE_BODY_LIMIT",
]

TOKEN_VARIABLE = "PMS_HUBSPOT_PRIVATE_APP_TOKEN"  # noqa: S105 - the variable's name, not a token
#: How many of a record's newest associated records a reconcile look-up reads.
MAX_MEETINGS_CHECKED = 10
#: Wait before a second reconcile search: HubSpot search lags writes by "a few moments".
SETTLE_SECONDS = 2.0
#: Search page size (the search API allows up to 200) and HubSpot's cap on results per query.
SEARCH_LIMIT = 100
#: Report notes go to the company of this name when ``PMS_HUBSPOT_REPORT_COMPANY_ID`` is unset.
REPORTS_COMPANY_NAME = "pms-integration reports"


class HubSpotAdapter(BaseAdapter):
    """The HubSpot :class:`~pms_integration.provider.Provider`."""

    provider = ProviderName.HUBSPOT
    token_variable = TOKEN_VARIABLE
    default_headers: ClassVar[Mapping[str, str]] = {}
    parse_error: ClassVar[Callable[[HttpResponse], ErrorInfo]] = staticmethod(parse_error)
    parse_rate_headers: ClassVar[Callable[[Mapping[str, str]], RateLimitInfo | None] | None] = staticmethod(
        parse_rate_headers
    )
    settings: HubSpotSettings
    capabilities = WRITE_CAPABILITIES | READ_CAPABILITIES | CHANGE_CAPABILITIES
    checks_conflicts = True  # HubSpot accepts two meetings in one slot

    def __init__(self, settings: HubSpotSettings, runtime: Runtime) -> None:
        super().__init__(settings, runtime)
        self.paths = HubSpotPaths(settings.api_version)
        self._company_lock = _green.Lock()  # held across the look-up or create: awaited in an async call
        self._reports_company: str | None = settings.report_company_id
        self.search_limiter = reads.search_limiter(self)

    # -- book: the contact, then the deal, then the meeting ------------------------------------

    def book(self, request: AppointmentRequest) -> Appointment:
        deal_extra, _ = wire.split_extra(request.extra)
        contact_id = request.patient.contact_id
        if contact_id is not None and not wire.ID.fullmatch(contact_id):
            raise ValidationError.single("patient.contact_id", "must be a numeric HubSpot contact id")
        mine = self.check_slot_free(request)  # one meetings search; the same reference returns its booking
        if mine is not None:
            return mine
        contact_id, known = (contact_id, True) if contact_id else self._resolve_contact(request)
        # the search above lags writes: a known patient's own deals are read directly (consistent)
        earlier = (
            reads.booked_deal(self, contact_id, request) if known and not self.settings.reference_property else None
        )
        if earlier is not None:  # this reference's booking, made moments ago (its answer lost)
            return self._with_meeting(request, contact_id, earlier, look_first=True)
        deal, existing = self._deal(request, contact_id, deal_extra)
        # an upsert that found an earlier attempt's deal: its meeting may exist too
        return self._with_meeting(request, contact_id, deal, look_first=existing)

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The booking an earlier, unanswered attempt left: its deal by reference, then its meeting
        (made now when missing, so the booking ends up whole and single)."""
        deal = self._deal_by_reference(request.reference, request.patient)
        if deal is None:
            return None
        return self._with_meeting(request, request.patient.contact_id, deal, look_first=True)

    def _with_meeting(
        self, request: AppointmentRequest, contact_id: str | None, deal: dict[str, Any], *, look_first: bool
    ) -> Appointment:
        reference = request.reference
        try:  # the deal is written: whatever fails now, the booking may exist in part
            deal_id = self._id(deal, "book", "deal")
            contact_id = contact_id or self._deal_contact(deal_id)
            meeting = self._find_meeting(deal_id, reference) if look_first else None
            if meeting is None:
                if contact_id is None:
                    raise self.unexpected(
                        "book", f"deal {deal_id} for {reference} has no contact to attach a meeting to"
                    )
                meeting = self.create_once(
                    lambda: self._create_meeting(request, contact_id, deal_id),
                    lambda: self._find_meeting(deal_id, reference),
                    operation="book",
                    reference=reference,
                )
            meeting_id = self._id(meeting, "book", "meeting")
        except PMSError as exc:
            wire.mark_outcome_unknown(exc, reference)
            raise
        tz = wire.zone(wire.zone_label(request.timezone, request.start)) or UTC
        return Appointment(
            provider=self.provider,
            id=f"{deal_id}:{meeting_id}",
            status=AppointmentStatus.BOOKED,
            start=request.start.astimezone(tz),
            end=request.end_time.astimezone(tz),
            reference=reference,
            contact_id=contact_id,
            title=request.title,
            raw={"contact_id": contact_id, "deal": deal, "meeting": meeting},
        )

    def _resolve_contact(self, request: AppointmentRequest) -> tuple[str, bool]:
        """The patient's contact id, and whether it existed before this call."""
        patient = request.patient
        names = (("firstname", patient.given_name), ("lastname", patient.family_name), ("phone", patient.phone))
        properties = {k: v for k, v in names if v}
        email = patient.email
        if email is None:
            # HubSpot needs one of email, firstname or lastname on a new contact
            if not properties.keys() & {"firstname", "lastname"}:
                properties.update(firstname="Patient", lastname=patient.phone or "")
            return self._create_contact(request, properties, lambda: None), False
        found = self._contact_by_email(email)
        if found is not None:
            return found, True
        new = self._create_contact(request, {**properties, "email": email}, lambda: self._contact_by_email(email))
        return new, False

    def _contact_by_email(self, email: str) -> str | None:
        """The contact by its unique e-mail: a batch read (consistent, unlike search) with the
        e-mail in the body (``idProperty: email``), so it never appears in a URL or a log."""
        body = {"idProperty": "email", "inputs": [{"id": email}], "properties": ["email"], "propertiesWithHistory": []}
        path = self.paths.objects("contacts", "batch", "read")
        resp = self.transport.request("POST", path, operation="book", json=body, idempotent=True, expect=(404,))
        results = self.json_object(resp, "book", "the contact read").get("results") if resp.status != 404 else None
        for record in results if isinstance(results, list) else []:
            value = wire.props(record).get("email") if isinstance(record, dict) else None
            if isinstance(value, str) and value.casefold() == email.casefold():
                return self._id(record, "book", "contact")
        return None

    def _create_contact(
        self, request: AppointmentRequest, properties: dict[str, str], find: Callable[[], str | None]
    ) -> str:
        def create_contact() -> str:
            body = {"properties": properties, "associations": []}
            try:
                return self._id(self._create("contacts", body, "book", request.reference), "book", "contact")
            except ConflictError as exc:  # someone made the contact first: its id is in the message
                match = wire.EXISTING_ID.search(exc.message)
                if match is None:
                    raise
                return match.group(1)

        return self.create_once(create_contact, find, operation="book", reference=request.reference)

    def _deal(
        self, request: AppointmentRequest, contact_id: str, extra: Mapping[str, str]
    ) -> tuple[dict[str, Any], bool]:
        """The booking's deal, and whether it existed before this call (upsert path only)."""
        reference = request.reference
        properties = {
            "dealname": f"{request.title} - {request.patient.display_name} [{reference}]",
            "pipeline": self.settings.pipeline_id,
            "dealstage": self.settings.stage_id,
            "closedate": wire.wire_time(request.start),
            **({"hubspot_owner_id": self.settings.owner_id} if self.settings.owner_id else {}),
            **extra,
        }
        ref_property = self.settings.reference_property
        if ref_property is None:
            payload = {"properties": properties, "associations": [wire.association(contact_id, DEAL_TO_CONTACT)]}

            deal = self.create_once(
                lambda: self._create("deals", payload, "book", reference),
                lambda: self._find_deal(reference, contact_id),
                operation="book",
                reference=reference,
            )
            return deal, False
        upsert = {"inputs": [{"idProperty": ref_property, "id": reference, "properties": properties}]}

        def upsert_deal() -> dict[str, Any]:
            path = self.paths.batch_upsert("deals")
            resp = self.transport.request(
                "POST", path, operation="book", json=upsert, idempotent=True, reference=reference
            )
            return wire.upsert_result(self, resp, reference)

        # keyed by the reference, the upsert is safe to repeat: it is its own look-up
        deal = self.create_once(upsert_deal, upsert_deal, operation="book", reference=reference)
        try:  # batch/upsert takes no associations: add deal -> contact (a repeatable PUT)
            path = self.paths.default_association("deals", self._id(deal, "book", "deal"), "contacts", contact_id)
            self.transport.request("PUT", path, operation="book")
        except PMSError as exc:
            wire.mark_outcome_unknown(exc, reference)
            raise
        return deal, deal.get("new") is False

    def _deal_by_reference(self, reference: str, patient: Patient) -> dict[str, Any] | None:
        """The deal by the reference: a consistent read by the unique property when one is set."""
        prop = self.settings.reference_property
        if prop is None:
            contact_id = patient.contact_id or (self._contact_by_email(patient.email) if patient.email else None)
            return self._find_deal(reference, contact_id)
        params = {"idProperty": prop, "properties": "dealname"}
        path = self.paths.objects("deals", reference)
        resp = self.transport.request("GET", path, operation="book", params=params, expect=(404,))
        return None if resp.status == 404 else self.json_object(resp, "book", "the deal")

    def _deal_contact(self, deal_id: str) -> str | None:
        path = self.paths.objects("deals", deal_id)
        resp = self.transport.request("GET", path, operation="book", params={"associations": "contacts"})
        ids = wire.associated_ids(self.json_object(resp, "book", "the deal"), ("contacts", "contact", "0-1"))
        return ids[0] if ids else None

    def _find_deal(self, reference: str, contact_id: str | None) -> dict[str, Any] | None:
        via = ("contacts", contact_id) if contact_id else None
        return self._look_up(wire.DEALS, reference, f"[{reference}]", via=via)

    def _find_meeting(self, deal_id: str, reference: str) -> dict[str, Any] | None:
        return self._look_up(wire.MEETINGS, reference, f"Booking reference: [{reference}]", via=("deals", deal_id))

    def _create_meeting(self, request: AppointmentRequest, contact_id: str, deal_id: str) -> dict[str, Any]:
        start = wire.wire_time(request.start)
        properties = {
            "hs_timestamp": start,
            "hs_meeting_title": request.title,
            "hs_meeting_start_time": start,
            "hs_meeting_end_time": wire.wire_time(request.end_time),
            "hs_meeting_body": wire.meeting_body(request),
            "hs_meeting_outcome": "SCHEDULED",
        }
        if self.settings.owner_id:  # the calendar owner's meetings are the practice's busy time
            properties["hubspot_owner_id"] = self.settings.owner_id
        if request.location:
            properties["hs_meeting_location"] = request.location
        if request.notes:
            properties["hs_internal_meeting_notes"] = request.notes
        properties.update(wire.split_extra(request.extra)[1])
        associations = [wire.association(contact_id, MEETING_TO_CONTACT), wire.association(deal_id, MEETING_TO_DEAL)]
        return self._create(
            "meetings", {"properties": properties, "associations": associations}, "book", request.reference
        )

    # -- scheduling reads (hubspot_reads) and the conflict check ----------------------------------

    practice_zone = reads.practice_zone
    busy_times = reads.busy_times
    find_patients = reads.find_patients
    find_appointments = reads.find_appointments

    def open_hours(self) -> OpenHours:
        return self.settings.open_hours

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        return self.recover_booking(request)

    def slot_taken(self, request: AppointmentRequest, busy: Busy) -> ConflictError:
        return super().slot_taken(request, reads.named_busy(self, busy))

    # -- hearing about changes (hubspot_changes; docs/providers/hubspot.md, "Changes") ----------

    def observe_changes(self, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
        return changes.observe_changes(self, position, now)

    def observe_webhook(self, payload: Any) -> list[Observed]:
        return changes.observe_webhook(self, payload)

    # -- update and cancel: read the meeting, then write ----------------------------------------

    def check_id(self, appointment_id: str) -> str:
        if not isinstance(appointment_id, str) or not wire.APPOINTMENT_ID.fullmatch(appointment_id):
            raise ValidationError.single(
                "appointment_id", "must be a HubSpot booking id '<dealId>:<meetingId>' (two numeric ids)"
            )
        return appointment_id

    def read_booking(self, appointment_id: str, operation: str) -> Appointment:
        path = self.paths.objects("meetings", appointment_id.split(":")[1])
        params = {"properties": ",".join(wire.MEETING_PROPERTIES)}
        resp = self.transport.request("GET", path, operation=operation, params=params)
        return self._appointment(appointment_id, self.json_object(resp, operation, "the meeting"), operation)

    def write_update(self, current: Appointment, changes: AppointmentUpdate) -> Appointment:
        deal_id, meeting_id = current.id.split(":")
        new: dict[str, str] = {}
        if changes.start is not None:
            new["hs_timestamp"] = new["hs_meeting_start_time"] = wire.wire_time(changes.start)
        if changes.end is not None:
            new["hs_meeting_end_time"] = wire.wire_time(changes.end)
        for name, value in (
            ("hs_meeting_title", changes.title),
            ("hs_meeting_location", changes.location),
            ("hs_internal_meeting_notes", changes.notes),
        ):
            if value is not None:
                new[name] = value
        meeting = current.raw["meeting"]
        body = wire.props(meeting).get("hs_meeting_body")
        named = named_timezone(changes.timezone, changes.start)
        if isinstance(body, str):
            # a new zone without a new start re-expresses the current start in that zone
            moved = wire.moved_body(body, named, changes.start or (current.start if named else None))
            if moved != body:
                new["hs_meeting_body"] = moved
        meeting = wire.merged(meeting, self._patch("meetings", meeting_id, new, "update"))
        deal = None
        if changes.start is not None:
            deal = self._patch("deals", deal_id, {"closedate": wire.wire_time(changes.start)}, "update")
        return self._appointment(current.id, meeting, "update", changes=changes, deal=deal)

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        # unlike the template, a cancelled meeting still gets the (idempotent) deal write, so a
        # second cancel finishes one that stopped half-way
        return self.write_cancel(self.read_booking(self.check_id(appointment_id), "cancel"), reason)

    def write_cancel(self, current: Appointment, reason: str | None) -> Appointment:
        # the deal first: a cancel stage outside the deal's pipeline then fails with nothing written
        deal_id, meeting_id = current.id.split(":")
        deal_props = {"dealstage": self.settings.cancel_stage_id}
        if reason:
            deal_props["closed_lost_reason"] = reason
        deal = self._patch("deals", deal_id, deal_props, "cancel")
        meeting = current.raw["meeting"]
        if current.status is not AppointmentStatus.CANCELLED:
            try:
                patched = self._patch("meetings", meeting_id, {"hs_meeting_outcome": "CANCELED"}, "cancel")
            except PMSError as exc:
                wire.say_half_cancelled(exc, deal_id, meeting_id)
                raise
            meeting = wire.merged(meeting, patched)
        return self._appointment(current.id, meeting, "cancel", deal=deal, status=AppointmentStatus.CANCELLED)

    def _patch(self, object_type: str, object_id: str, properties: Mapping[str, str], operation: str) -> dict[str, Any]:
        path = self.paths.objects(object_type, object_id)
        resp = self.transport.request("PATCH", path, operation=operation, json={"properties": properties})
        return self.json_object(resp, operation, f"the {object_type[:-1]}")

    def _appointment(
        self,
        appointment_id: str,
        meeting: Mapping[str, Any],
        operation: str,
        *,
        changes: AppointmentUpdate | None = None,
        deal: Mapping[str, Any] | None = None,
        status: AppointmentStatus | None = None,
    ) -> Appointment:
        """The booking as its meeting says, in the zone its body records (or one the update names)."""
        values = wire.props(meeting)
        start = wire.read_time(values, "hs_meeting_start_time", "hs_timestamp")
        end = wire.read_time(values, "hs_meeting_end_time")
        title = text(values.get("hs_meeting_title"))
        body = values.get("hs_meeting_body")
        tz = wire.zone(wire.body_zone_label(body)) if isinstance(body, str) else None
        if changes is not None:
            start, end, title = changes.start or start, changes.end or end, changes.title or title
            tz = wire.zone(named_timezone(changes.timezone, changes.start)) or tz
        if start is None:
            raise self.unexpected(operation, "the meeting has no start time")
        cancelled = str(values.get("hs_meeting_outcome") or "").upper() == "CANCELED"
        reference = wire.BODY_REFERENCE.search(body) if isinstance(body, str) else None
        return Appointment(
            provider=self.provider,
            id=appointment_id,
            status=status or (AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.BOOKED),
            start=start.astimezone(tz or UTC),
            end=(end or start).astimezone(tz or UTC),
            reference=reference.group(1) if reference else None,
            title=title,
            raw={"meeting": dict(meeting), "deal": dict(deal) if deal is not None else None},
        )

    # -- reports: one note per report id, on the reports company ---------------------------------

    def report_payload(self, report: PerformanceReport) -> Mapping[str, Any]:
        tail = f"\n\nMetrics (JSON): {report.metrics_json()}\n[pms-report-id: {report.id}]"
        body = report.render_text()
        room = NOTE_BODY_LIMIT - len(tail)
        if len(body) > room:
            body = body[: max(room - 1, 0)] + "…"
        # the start of the day after the period (UTC): stable, so a re-push does not move the note
        day = report.period_end + _dt.timedelta(days=1)
        when = wire.wire_time(_dt.datetime(day.year, day.month, day.day, tzinfo=UTC))
        return {"hs_timestamp": when, "hs_note_body": (body + tail)[:NOTE_BODY_LIMIT]}

    def find_report(self, report: PerformanceReport, *, via: tuple[str, str] | None = None) -> str | None:
        note = self._look_up(wire.NOTES, report.id, f"[pms-report-id: {report.id}]", via=via, settle=via is not None)
        return None if note is None else self._id(note, "push_report", "note")

    def recover_report(self, report: PerformanceReport) -> str | None:
        return self.find_report(report, via=("companies", self._reports_company_id()))

    def update_report(self, record_id: str, report: PerformanceReport, payload: Mapping[str, Any]) -> bool:
        path = self.paths.objects("notes", record_id)
        body = {"properties": payload}
        resp = self.transport.request("PATCH", path, operation="push_report", json=body, expect=(404,))
        return resp.status != 404  # a 2xx applied the update, readable answer or not

    def create_report(self, report: PerformanceReport, payload: Mapping[str, Any]) -> str:
        body = {"properties": payload, "associations": [wire.association(self._reports_company_id(), NOTE_TO_COMPANY)]}
        return self._id(self._create("notes", body, "push_report", report.id), "push_report", "note")

    def _reports_company_id(self) -> str:
        """The configured company, else the "pms-integration reports" company: found by its exact
        name (or created) once per adapter, so the notes show on a company record anyone can open."""
        with self._company_lock:
            if self._reports_company is None:
                body = {"properties": {"name": REPORTS_COMPANY_NAME}, "associations": []}
                company = self._find_reports_company() or self.create_once(
                    lambda: self._create("companies", body, "push_report", REPORTS_COMPANY_NAME),
                    lambda: self._find_reports_company(settle=True),
                    operation="push_report",
                    reference=REPORTS_COMPANY_NAME,
                )
                self._reports_company = self._id(company, "push_report", "company")
            return self._reports_company

    def _find_reports_company(self, *, settle: bool = False) -> dict[str, Any] | None:
        groups = [{"filters": [{"propertyName": "name", "operator": "EQ", "value": REPORTS_COMPANY_NAME}]}]
        return self._search_marked(wire.COMPANIES, groups, REPORTS_COMPANY_NAME, settle=settle, exact=True)

    # -- reading answers and looking records up --------------------------------------------------

    def _create(self, object_type: str, body: Mapping[str, Any], operation: str, reference: str) -> dict[str, Any]:
        """POST a new record; an answer without a readable id means "created, id unknown"."""
        path = self.paths.objects(object_type)
        resp = self.transport.request("POST", path, operation=operation, json=body, reference=reference)
        record = resp.json_or_none()
        if not isinstance(record, dict) or not wire.ID.fullmatch(str(record.get("id", ""))):
            what = object_type[:-1].replace("companie", "company")
            raise self.unexpected(
                operation, f"the new {what}'s id is missing", outcome_unknown=True, reference=reference
            )
        return record

    def _id(self, body: Mapping[str, Any], operation: str, what: str) -> str:
        value = body.get("id")
        value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(value, str) or not wire.ID.fullmatch(value):
            raise self.unexpected(operation, f"the {what} has no numeric id")
        return value

    def _look_up(
        self, kind: Kind, token: str, marker: str, *, via: tuple[str, str] | None, settle: bool = True
    ) -> dict[str, Any] | None:
        """The record carrying ``marker``: first among the newest records associated with ``via``
        (reads by id are consistent, unlike search, so a record made moments ago is found), then
        by a search for ``token``."""
        found = self._find_associated(kind, *via, marker) if via else None
        return found or self._search_marked(
            kind, wire.search_filters(kind.marker_property, token), marker, settle=settle
        )

    def _find_associated(self, kind: Kind, from_type: str, from_id: str, marker: str) -> dict[str, Any] | None:
        def get(object_type: str, object_id: str, params: dict[str, str]) -> dict[str, Any] | None:
            path = self.paths.objects(object_type, object_id)
            resp = self.transport.request("GET", path, operation=kind.operation, params=params, expect=(404,))
            return None if resp.status == 404 else self.json_object(resp, kind.operation, f"the {object_type[:-1]}")

        source = get(from_type, from_id, {"associations": kind.object_type})
        ids = sorted(wire.associated_ids(source or {}, kind.association_keys), key=int, reverse=True)
        for record_id in ids[:MAX_MEETINGS_CHECKED]:
            record = get(kind.object_type, record_id, {"properties": ",".join(kind.properties)})
            value = wire.props(record or {}).get(kind.marker_property)
            if record is not None and isinstance(value, str) and marker in value:
                return record
        return None

    def _search_pages(self, kind: Kind, filter_groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Every search result, oldest first, page by page; a look-up that cannot read every page
        fails instead of answering "not found" (which would lead the caller to create a duplicate)."""
        return reads.search(
            self, kind.object_type, filter_groups, kind.properties, kind.operation,
            sorts=["hs_object_id"], page_size=SEARCH_LIMIT, too_many="the record may exist",
        )  # fmt: skip

    def _search_marked(
        self, kind: Kind, filter_groups: list[dict[str, Any]], marker: str, *, settle: bool, exact: bool = False
    ) -> dict[str, Any] | None:
        """The oldest result whose marker property contains (``exact``: equals) ``marker``.

        With ``settle`` (reconciling an ambiguous create) a miss is searched again after
        :data:`SETTLE_SECONDS`, because the search index lags writes; when the deadline cannot
        afford that wait, a miss proves nothing, so the look-up fails instead of saying "not found".
        """
        for wait in (0.0, SETTLE_SECONDS) if settle else (0.0,):
            deadline = current_deadline()
            if wait and deadline is not None and deadline.remaining() < wait + self.settings.timeout:
                raise UnexpectedResponseError(
                    "HubSpot's search index may not show a record created moments ago, and the "
                    "operation's deadline leaves no time to wait for it",
                    provider=self.provider.value,
                    operation=kind.operation,
                )
            if wait:
                self.transport.sleep(wait)
            for record in self._search_pages(kind, filter_groups):
                value = wire.props(record).get(kind.marker_property)
                if isinstance(value, str) and (value == marker if exact else marker in value):
                    return record  # oldest first: several can only come from a race; the oldest wins
        return None


def create(settings: HubSpotSettings, runtime: Runtime) -> Provider:
    """Build the HubSpot adapter (called by the client on first use)."""
    return HubSpotAdapter(settings, runtime)


def _error_parser(max_wait: float = 30.0) -> Callable[[HttpResponse], ErrorInfo]:
    return parse_error  # the transport decides whether a 477's Retry-After is too long to wait


def __getattr__(name: str) -> object:
    """``HubSpotErrorParser()``, once a class, is :func:`parse_error` now."""
    if name == "HubSpotErrorParser":
        warnings.warn("HubSpotErrorParser() is deprecated; use hubspot.parse_error", DeprecationWarning, stacklevel=2)
        return _error_parser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
