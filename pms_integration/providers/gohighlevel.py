"""GoHighLevel (HighLevel / LeadConnector) adapter.

Two API generations sit behind one adapter, chosen by ``settings.api_version``:

* **v2** (default, ``https://services.leadconnectorhq.com``, Private Integration Token). Every
  request carries the ``Version`` header its endpoint declares in the official OpenAPI spec:
  ``2021-04-15`` for calendars, ``2021-07-28`` for contacts.

  - book: ``POST /contacts/search`` (by e-mail or phone, in the body); only when nobody matches,
    ``POST /contacts/upsert`` to create the contact; then ``POST /calendars/events/appointments``.
    A found contact is never written to, so family members sharing a phone or e-mail do not
    rename each other. Both contact steps are skipped when the patient's ``contact_id`` is known.
  - update: ``GET /calendars/events/appointments/{id}``, then a ``PUT`` of the changed fields.
  - cancel: the same ``GET``, then a ``PUT`` with ``{"appointmentStatus": "cancelled"}`` (and the
    reason appended to the description); the event stays.
  - push_report: a note on a "reports" contact (``POST /contacts/{id}/notes``); a re-push of
    the same ``report_id`` finds that note (``GET /contacts/{id}/notes``) and ``PUT``s it.

* **v1** (legacy ``https://rest.gohighlevel.com/v1``, location API key): ``POST /appointments/``,
  ``PUT /appointments/{id}`` (reschedule only) and ``PUT /appointments/{id}/status``. v1 cannot
  change titles or notes, and this adapter does not push reports over it; those raise
  :class:`UnsupportedOperationError` pointing at v2.

The booking reference is written into the event's description (v1: ``calendarNotes``) as a
``Booking reference: ...`` line, next to a ``Time zone: ...`` line naming the IANA zone the
booking was made in; the title stays the caller's, because calendar reminders show it to the
patient. After a create whose outcome is unknown (timeout, reset, 5xx) the adapter lists the
events in the slot's window and looks for that reference before anything is sent again
(:func:`~pms_integration._http.create_once`).

Update and cancel read the appointment first: a cancelled booking is never changed
(:class:`~pms_integration.errors.AppointmentCancelledError`, no write sent), a second cancel
sends nothing, the description's reference and zone lines survive a change of notes, and the
cancel reason is appended to the description (v2).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import BearerAuth, ErrorInfo, HttpResponse, Runtime, Transport
from .._once import create_once
from .._ratelimit import RateLimitInfo
from ..config import GoHighLevelSettings
from ..errors import (
    AppointmentCancelledError,
    ConflictError,
    InvalidRequestError,
    PMSError,
    UnsupportedOperationError,
    ValidationError,
)
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
    named_timezone,
    parse_iso_datetime,
)
from ..provider import ALL_CAPABILITIES, Capability, Provider
from ._base import unexpected

_log = logging.getLogger("pms_integration.providers.gohighlevel")

__all__ = [
    "create",
    "GoHighLevelV1",
    "GoHighLevelV2",
    "parse_error",
    "parse_rate_headers",
    "TOKEN_VARIABLE",
    "CALENDARS_VERSION",
    "CONTACTS_VERSION",
    "REPORTS_CONTACT_EMAIL",
    "title_with_reference",
    "reference_in",
]

PROVIDER = ProviderName.GOHIGHLEVEL
TOKEN_VARIABLE = "PMS_GHL_API_KEY"  # noqa: S105 - a variable name
#: ``Version`` header values, per endpoint family, exactly as the v2 spec's enums declare them.
CALENDARS_VERSION = "2021-04-15"
CONTACTS_VERSION = "2021-07-28"
#: Identity of the contact that collects report notes when PMS_GHL_REPORT_CONTACT_ID is unset.
#: example.com is reserved (RFC 2606), so no automation can ever e-mail a real person.
REPORTS_CONTACT_EMAIL = "ai-receptionist-reports@example.com"
_V2_ONLY_HINT = (
    "GoHighLevel API v2 can: set PMS_GHL_API_VERSION=v2 (or PMS_GHL_BASE_URL=https://services.leadconnectorhq.com) "
    "with a Private Integration Token in PMS_GHL_API_KEY."
)
#: GoHighLevel's documented burst window (100 requests per 10 s, v1 and v2).
BURST_WINDOW_SECONDS = 10.0
#: Slack around the slot when listing events to reconcile an ambiguous create.
_LOOKUP_MARGIN = _dt.timedelta(minutes=1)
# How many report ids a client remembers the note of (a report a day for years fits).
_REPORT_CACHE_SIZE = 1000

# v2 event ids are 20 alphanumerics; a recurring instance is "<id>_<epoch ms>_<duration>".
_EVENT_ID = re.compile(r"^[A-Za-z0-9]{1,64}(?:_\d{10,16}_\d{1,7})?$")
_V1_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
# ids read out of responses before they go into a URL path (contacts, notes)
_RECORD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# what the client accepts as an appointment id
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_REF = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_TITLE_REF = re.compile(r"\(ref (" + _REF + r")\)\s*$")
_NOTES_REF = re.compile(r"(?m)^Booking reference: (" + _REF + r")\s*$")
_ZONE_LINE = re.compile(r"(?m)^Time zone: ([A-Za-z0-9_+/-]{1,64})\s*$")
#: how many contacts a patient look-up reads (people sharing an e-mail or phone: a family)
_CONTACT_SEARCH_LIMIT = 20
_SLOT_TAKEN = re.compile(r"\bslot\b.*\b(?:no longer available|not available|unavailable|already booked)", re.I)
_UNKNOWN_PROPERTY = re.compile(r"^property (\S+) should not exist", re.I)
_FIELD_FIRST = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*) (?:must|should)\b")
_VERSION_HEADER = re.compile(r"version header", re.I)


def create(settings: GoHighLevelSettings, runtime: Runtime) -> Provider:
    """The adapter for ``settings.api_version`` (v2 unless configured otherwise)."""
    if settings.api_version == "v1":
        return GoHighLevelV1(settings, runtime)
    return GoHighLevelV2(settings, runtime)


# ---------------------------------------------------------------------------------------------
# error bodies and rate-limit headers


def parse_error(resp: HttpResponse) -> ErrorInfo:
    """Read a GoHighLevel error body; never raises.

    Handles v2 ``{"statusCode", "message": str | [str], "error", "traceId"}``, v1 ``{"msg"}`` and
    v1's 422 field map ``{"<field>": {"message", "rule"}}``. "The slot you have selected is no
    longer available" becomes a :class:`ConflictError`; a 401 about the ``Version`` header is a
    request problem, not a bad token, and says so.
    """
    try:
        return _parse_error(resp)
    except Exception:  # noqa: BLE001 - a parser must never turn an error into a crash
        return ErrorInfo(f"HTTP {resp.status}")


def _parse_error(resp: HttpResponse) -> ErrorInfo:
    body = resp.json_or_none()
    if not isinstance(body, dict):
        return ErrorInfo(f"HTTP {resp.status} without a JSON error body")
    messages: list[str] = []
    fields: list[str] = []
    code: str | None = None
    message = body.get("message")
    if isinstance(message, str):
        messages.append(message)
    elif isinstance(message, list):
        messages.extend(str(m) for m in message if isinstance(m, (str, int, float)))
    if isinstance(body.get("msg"), str):
        messages.append(body["msg"])
    if not messages:
        # v1 validation: one key per failing field
        for key, value in body.items():
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                fields.append(str(key))
                messages.append(value["message"])
                if code is None and isinstance(value.get("rule"), str):
                    code = value["rule"]
    error = body.get("error")
    if not messages and isinstance(error, str):
        messages.append(error)
    for text in messages:
        m = _UNKNOWN_PROPERTY.match(text) or _FIELD_FIRST.match(text)
        if m and m.group(1) not in fields:
            fields.append(m.group(1))
    trace = body.get("traceId")
    request_id = trace if isinstance(trace, str) and trace else None
    text = "; ".join(messages) or f"HTTP {resp.status}"
    if any(_SLOT_TAKEN.search(t) for t in messages):
        return ErrorInfo(
            text,
            code="SLOT_UNAVAILABLE",
            fields=tuple(fields),
            request_id=request_id,
            error_class=ConflictError,
            retryable=False,
        )
    if resp.status == 401 and _VERSION_HEADER.search(text):
        return ErrorInfo(
            f"{text} GoHighLevel rejected the request's Version header: "
            f"the endpoint expects Version {CALENDARS_VERSION} (calendars) or {CONTACTS_VERSION} (contacts). "
            "This is an API-version problem (check PMS_GHL_BASE_URL / PMS_GHL_API_VERSION), not a bad token.",
            code="VERSION_HEADER",
            fields=("Version",),
            request_id=request_id,
            error_class=InvalidRequestError,
            retryable=False,
        )
    return ErrorInfo(text, code=code, fields=tuple(fields), request_id=request_id)


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """``X-RateLimit-*`` headers (burst and daily) as :class:`RateLimitInfo`; None if absent."""
    lower = {str(k).lower(): v for k, v in headers.items()}

    def number(name: str) -> int | None:
        value = lower.get(name)
        if value is None:
            return None
        try:
            return int(float(str(value).strip()))
        except ValueError:
            return None

    remaining = number("x-ratelimit-remaining")
    limit = number("x-ratelimit-max")
    interval_ms = number("x-ratelimit-interval-milliseconds")
    daily_remaining = number("x-ratelimit-daily-remaining")
    daily_limit = number("x-ratelimit-limit-daily")
    if all(v is None for v in (remaining, limit, interval_ms, daily_remaining, daily_limit)):
        return None
    return RateLimitInfo(
        remaining=remaining,
        limit=limit,
        interval_seconds=interval_ms / 1000 if interval_ms is not None else None,
        daily_remaining=daily_remaining,
        daily_limit=daily_limit,
    )


# ---------------------------------------------------------------------------------------------
# small helpers


def title_with_reference(title: str, reference: str) -> str:
    """The title with a ``(ref ...)`` suffix, as releases before 2026-12 wrote it.

    Bookings no longer carry the reference in the title (calendar reminders show the title to
    the patient); :func:`reference_in` still reads the suffix on older events.
    """
    return f"{title} (ref {reference})"


def _trailer(reference: str | None, zone: str | None) -> str:
    """The description's machine-readable tail: the booking's zone and its reference."""
    lines = []
    if zone:
        lines.append(f"Time zone: {zone}")
    if reference:
        lines.append(f"Booking reference: {reference}")
    return "\n".join(lines)


def _notes_with_reference(parts: list[str | None], reference: str, zone: str | None = None) -> str:
    lines = [p for p in parts if p]
    lines.append(_trailer(reference, zone))
    return "\n\n".join(lines)


def _recorded_zone(record: Mapping[str, Any]) -> str | None:
    """The IANA zone a booking was made in, as this adapter recorded it (or v1's own field)."""
    for key in ("description", "notes", "calendarNotes"):
        value = record.get(key)
        if isinstance(value, str):
            m = _ZONE_LINE.search(value)
            if m and _zone_or_none(m.group(1)) is not None:
                return m.group(1)
    selected = record.get("selectedTimezone")
    if isinstance(selected, str) and _zone_or_none(selected) is not None:
        return selected
    return None


def _zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return None


def _local(value: _dt.datetime | None, zone: str | None, fallback: _dt.tzinfo | None) -> _dt.datetime | None:
    """``value`` expressed in the booking's zone (same instant), else in ``fallback``'s offset."""
    if value is None:
        return None
    if zone:
        tz = _zone_or_none(zone)
        if tz is not None:
            return value.astimezone(tz)
    if fallback is not None:
        return value.astimezone(fallback)
    return value


def _reference_pattern(reference: str) -> re.Pattern[str]:
    return re.compile(r"(?<![A-Za-z0-9_.:-])" + re.escape(reference) + r"(?![A-Za-z0-9_.:-])")


def reference_in(record: Mapping[str, Any]) -> str | None:
    """The booking reference written into an event's title or notes, if any."""
    title = record.get("title")
    if isinstance(title, str):
        m = _TITLE_REF.search(title)
        if m:
            return m.group(1)
    for key in ("description", "notes", "calendarNotes"):
        value = record.get(key)
        if isinstance(value, str):
            m = _NOTES_REF.search(value)
            if m:
                return m.group(1)
    return None


def _carries(record: Mapping[str, Any], reference: str) -> bool:
    pattern = _reference_pattern(reference)
    return any(
        isinstance(record.get(key), str) and pattern.search(record[key])
        for key in ("title", "description", "notes", "calendarNotes")
    )


def _zone(name: str | None) -> ZoneInfo | None:
    return ZoneInfo(name) if name else None


def _iso(value: _dt.datetime, zone: ZoneInfo | None) -> str:
    """ISO-8601 with the offset; moved into ``zone`` first (same instant, DST-correct offset)."""
    if zone is not None:
        value = value.astimezone(zone)
    return value.isoformat()


def _epoch_ms(value: _dt.datetime) -> str:
    return str(int(value.timestamp() * 1000))


def _parse_time(value: object) -> _dt.datetime | None:
    """A vendor timestamp (ISO string with offset or ``Z``, or epoch ms) as an aware datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return _dt.datetime.fromtimestamp(value / 1000, tz=_dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    parsed = parse_iso_datetime(value)
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def _status(record: Mapping[str, Any]) -> AppointmentStatus:
    for key in ("appointmentStatus", "appoinmentStatus", "status"):  # v1 misspells the key
        if _str(record, key) == "cancelled":
            return AppointmentStatus.CANCELLED
    return AppointmentStatus.BOOKED


# ---------------------------------------------------------------------------------------------
# the adapters


class _GoHighLevel:
    """What v1 and v2 share: the transport, id checks and response reading."""

    api_version = "v2"
    capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def __init__(self, settings: GoHighLevelSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.transport: Transport = runtime.transport(
            provider=PROVIDER,
            base_url=settings.base_url,
            auth=BearerAuth(settings.api_key),
            timeout=settings.timeout,
            token_variable=TOKEN_VARIABLE,
            error_parser=parse_error,
            rate_header_parser=parse_rate_headers,
            rate_limit=settings.rate_limit,
            # a 429 from GoHighLevel carries no Retry-After; without quota headers either, wait
            # out the documented burst window (100 requests per 10 s)
            rate_limit_window=BURST_WINDOW_SECONDS,
        )

    @property
    def name(self) -> ProviderName:
        return PROVIDER

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"<GoHighLevel adapter {self.api_version} {self.settings.base_url}>"

    # -- helpers ----------------------------------------------------------------------------

    def _object(
        self, resp: HttpResponse, operation: str, *, creates: bool = False, reference: str | None = None
    ) -> dict[str, Any]:
        """The response body as a JSON object, or an :class:`UnexpectedResponseError`."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise unexpected(
                PROVIDER,
                operation,
                f"HTTP {resp.status} from {resp.method} {resp.path} is not a JSON object",
                outcome_unknown=creates,
                reference=reference,
            )
        return body

    def _appointment_id(self, value: object, operation: str, *, creates: bool, reference: str | None) -> str:
        if isinstance(value, str) and _SAFE_ID.fullmatch(value):
            return value
        raise unexpected(
            PROVIDER,
            operation,
            "the response carries no usable appointment id",
            outcome_unknown=creates,
            reference=reference,
        )

    def _appointment(
        self,
        record: Mapping[str, Any],
        operation: str,
        *,
        creates: bool = False,
        reference: str | None = None,
        start: _dt.datetime | None = None,
        end: _dt.datetime | None = None,
        contact_id: str | None = None,
        status: AppointmentStatus | None = None,
        zone: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> Appointment:
        """An :class:`Appointment` from a vendor record, its times in the booking's zone.

        ``zone`` is the booking's IANA zone when known; otherwise the times keep the offset of
        ``start`` (what the caller gave), else the vendor's own.
        """
        appointment_id = self._appointment_id(record.get("id"), operation, creates=creates, reference=reference)
        fallback = start.tzinfo if start is not None else None
        found_start = _parse_time(record.get("startTime")) or start
        found_end = _parse_time(record.get("endTime")) or end
        return Appointment(
            provider=PROVIDER,
            id=appointment_id,
            status=status or _status(record),
            start=_local(found_start, zone, fallback),
            end=_local(found_end, zone, fallback),
            reference=reference or reference_in(record),
            contact_id=_str(record, "contactId") or contact_id,
            title=_str(record, "title"),
            raw=dict(raw if raw is not None else record),
        )

    def _check_id(self, appointment_id: str, pattern: re.Pattern[str], example: str) -> None:
        if not isinstance(appointment_id, str) or not pattern.fullmatch(appointment_id):
            raise ValidationError.single("appointment_id", f"is not a GoHighLevel appointment id (e.g. {example})")

    def _selected_zone(self, requested: str | None, start: _dt.datetime | None = None) -> str | None:
        """The zone the caller named, else PMS_GHL_TIMEZONE, else None (keep the start's offset)."""
        return named_timezone(requested, start) or self.settings.timezone

    def _cancelled(self, appointment_id: str) -> AppointmentCancelledError:
        return AppointmentCancelledError(
            f"GoHighLevel appointment {appointment_id} was cancelled; it cannot be moved or changed. "
            "Book a new appointment instead",
            status_code=409,
            code="APPOINTMENT_CANCELLED",
            provider=PROVIDER.value,
            operation="update",
        )


class GoHighLevelV2(_GoHighLevel):
    """API v2: contacts + calendar events with per-endpoint ``Version`` headers."""

    api_version = "v2"
    capabilities = ALL_CAPABILITIES

    def __init__(self, settings: GoHighLevelSettings, runtime: Runtime) -> None:
        super().__init__(settings, runtime)
        self._report_contact_lock = threading.Lock()
        self._report_contact_id: str | None = settings.report_contact_id
        # report_id -> (contact id, note id) of notes this client wrote: a re-push goes
        # straight to the PUT instead of listing the contact's notes first
        self._report_notes: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._report_notes_lock = threading.Lock()

    # -- requests ---------------------------------------------------------------------------

    def _calendars(self, method: str, path: str, *, operation: str, **kwargs: Any) -> HttpResponse:
        return self.transport.request(
            method, path, operation=operation, headers={"Version": CALENDARS_VERSION}, **kwargs
        )

    def _contacts(self, method: str, path: str, *, operation: str, **kwargs: Any) -> HttpResponse:
        return self.transport.request(
            method, path, operation=operation, headers={"Version": CONTACTS_VERSION}, **kwargs
        )

    def _upsert(self, body: dict[str, Any], operation: str) -> str:
        """``POST /contacts/upsert``; returns the contact id.

        Sent as idempotent: an upsert matches on e-mail/phone, so repeating it after a timeout
        updates the same contact rather than creating a second one.
        """
        resp = self._contacts("POST", "/contacts/upsert", operation=operation, json=body, idempotent=True)
        data = self._object(resp, operation)
        contact = data.get("contact")
        contact_id = contact.get("id") if isinstance(contact, dict) else None
        if not isinstance(contact_id, str) or not _RECORD_ID.fullmatch(contact_id):
            raise unexpected(PROVIDER, operation, "the contact upsert returned no usable contact id")
        return contact_id

    # -- book -------------------------------------------------------------------------------

    def upsert_body(self, request: AppointmentRequest) -> dict[str, Any]:
        """The ``UpsertContactDto`` that creates the patient (only fields the caller gave)."""
        patient = request.patient
        body: dict[str, Any] = {"locationId": self.settings.location_id}
        if patient.given_name:
            body["firstName"] = patient.given_name
        if patient.family_name:
            body["lastName"] = patient.family_name
        if patient.email:
            body["email"] = patient.email
        if patient.phone:
            body["phone"] = patient.phone
        return body

    def search_body(self, request: AppointmentRequest) -> dict[str, Any]:
        """``POST /contacts/search``: contacts with the patient's e-mail or phone (in the body,
        never in a URL)."""
        patient = request.patient
        filters: list[dict[str, Any]] = []
        if patient.email:
            filters.append({"field": "email", "operator": "eq", "value": patient.email})
        if patient.phone:
            filters.append({"field": "phone", "operator": "eq", "value": patient.phone})
        if len(filters) > 1:
            filters = [{"group": "OR", "filters": filters}]
        return {
            "locationId": self.settings.location_id,
            "page": 1,
            "pageLimit": _CONTACT_SEARCH_LIMIT,
            "filters": filters,
        }

    def find_contact(self, request: AppointmentRequest) -> str | None:
        """The id of the patient's existing contact, or None; reads only, never writes.

        Among contacts sharing the e-mail or phone (a family), the one with the patient's name
        wins, then one matching both e-mail and phone, then e-mail, then phone.
        """
        resp = self._contacts(
            "POST", "/contacts/search", operation="book", json=self.search_body(request), idempotent=True
        )
        contacts = self._object(resp, "book").get("contacts")
        if not isinstance(contacts, list):
            raise unexpected(PROVIDER, "book", "the contact search answer has no 'contacts' array")
        patient = request.patient
        email = (patient.email or "").lower()
        wanted_name = " ".join((patient.display_name or "").lower().split())
        best: tuple[int, int, int] | None = None
        best_id: str | None = None
        for contact in contacts:
            if not isinstance(contact, dict):
                continue
            contact_id = contact.get("id")
            if not isinstance(contact_id, str) or not _RECORD_ID.fullmatch(contact_id):
                continue
            found_email = contact.get("email")
            same_email = bool(email) and isinstance(found_email, str) and found_email.lower() == email
            same_phone = bool(patient.phone) and contact.get("phone") == patient.phone
            if not (same_email or same_phone):
                continue  # the search is the vendor's; the match is checked here
            names = [contact.get(k) for k in ("firstName", "lastName")]
            full = " ".join(str(n) for n in names if isinstance(n, str) and n) or str(contact.get("name") or "")
            same_name = bool(wanted_name) and " ".join(full.lower().split()) == wanted_name
            score = (int(same_name), int(same_email and same_phone), int(same_email))
            if best is None or score > best:
                best, best_id = score, contact_id
        return best_id

    def contact_for(self, request: AppointmentRequest) -> str:
        """The patient's contact id: given, found by e-mail/phone, or created (upsert)."""
        if request.patient.contact_id:
            return request.patient.contact_id
        found = self.find_contact(request)
        if found is not None:
            return found
        return self._upsert(self.upsert_body(request), "book")

    def appointment_body(self, request: AppointmentRequest, contact_id: str) -> dict[str, Any]:
        """The ``AppointmentCreateSchema`` body; ``request.extra`` is merged last."""
        zone_name = self._selected_zone(request.timezone, request.start)
        zone = _zone(zone_name)
        body: dict[str, Any] = {
            "calendarId": self.settings.calendar_id,
            "locationId": self.settings.location_id,
            "contactId": contact_id,
            "startTime": _iso(request.start, zone),
            "endTime": _iso(request.end_time, zone),
            "title": request.title,
            "appointmentStatus": "confirmed",
            "description": _notes_with_reference([request.reason, request.notes], request.reference, zone_name),
        }
        if request.location:
            body["address"] = request.location
        body.update(request.extra)
        return body

    def book(self, request: AppointmentRequest) -> Appointment:
        contact_id = self.contact_for(request)
        body = self.appointment_body(request, contact_id)
        zone = self._selected_zone(request.timezone, request.start)

        def create_event() -> Appointment:
            resp = self._calendars(
                "POST", "/calendars/events/appointments", operation="book", json=body, reference=request.reference
            )
            data = self._object(resp, "book", creates=True, reference=request.reference)
            return self._appointment(
                data,
                "book",
                creates=True,
                reference=request.reference,
                start=request.start,
                end=request.end,
                contact_id=contact_id,
                zone=zone,
            )

        return create_once(
            create_event,
            lambda: self.find_booking(request, contact_id),
            provider=PROVIDER,
            operation="book",
            reference=request.reference,
        )

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The event an earlier, unanswered attempt at ``request`` created, or None."""
        return self.find_booking(request)

    def find_booking(self, request: AppointmentRequest, contact_id: str | None = None) -> Appointment | None:
        """The event carrying ``request.reference`` in the slot's window, if GoHighLevel has one.

        ``GET /calendars/events`` (epoch-ms window) is read-only, so it is safe after an
        ambiguous create. An event of the same contact at the same instant also counts: the
        patient cannot hold two bookings of one slot, so it is this booking.
        """
        params = {
            "locationId": self.settings.location_id,
            "calendarId": self.settings.calendar_id,
            "startTime": _epoch_ms(request.start - _LOOKUP_MARGIN),
            "endTime": _epoch_ms(request.end_time + _LOOKUP_MARGIN),
        }
        resp = self._calendars("GET", "/calendars/events", operation="book", params=params)
        data = self._object(resp, "book")
        events = data.get("events")
        if not isinstance(events, list):
            raise unexpected(PROVIDER, "book", "the event list has no 'events' array")
        records = [e for e in events if isinstance(e, dict)]
        match = next((e for e in records if _carries(e, request.reference)), None)
        if match is None and contact_id:
            match = next(
                (
                    e
                    for e in records
                    if e.get("contactId") == contact_id
                    and _parse_time(e.get("startTime")) == request.start
                    and _status(e) is not AppointmentStatus.CANCELLED
                ),
                None,
            )
        if match is None:
            return None
        return self._appointment(
            match,
            "book",
            reference=request.reference,
            start=request.start,
            end=request.end,
            contact_id=contact_id,
            zone=_recorded_zone(match) or self._selected_zone(request.timezone, request.start),
        )

    # -- update / cancel --------------------------------------------------------------------

    def read_event(self, appointment_id: str, operation: str) -> dict[str, Any]:
        """``GET /calendars/events/appointments/{id}``: the event (404 is NotFoundError)."""
        resp = self._calendars("GET", f"/calendars/events/appointments/{appointment_id}", operation=operation)
        event = self._object(resp, operation).get("event")
        if not isinstance(event, dict):
            raise unexpected(PROVIDER, operation, "the appointment read has no 'event' object")
        event.setdefault("id", appointment_id)
        return event

    def _booking_zone(self, event: Mapping[str, Any]) -> str | None:
        return _recorded_zone(event) or self.settings.timezone

    def update_body(self, changes: AppointmentUpdate, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Only the changed fields, in ``AppointmentEditSchema`` names.

        Times are expressed in the zone the update names, else the booking's own zone, else
        PMS_GHL_TIMEZONE. New notes keep the description's ``Time zone:`` and
        ``Booking reference:`` lines.
        """
        current = event or {}
        zone = _zone(named_timezone(changes.timezone, changes.start) or self._booking_zone(current))
        body: dict[str, Any] = {}
        if changes.start is not None:
            body["startTime"] = _iso(changes.start, zone)
        if changes.end is not None:
            body["endTime"] = _iso(changes.end, zone)
        if changes.title is not None:
            body["title"] = changes.title
        if changes.notes is not None:
            old = current.get("description")
            old_text = old if isinstance(old, str) else ""
            kept_ref, kept_zone = _NOTES_REF.search(old_text), _ZONE_LINE.search(old_text)
            tail = _trailer(kept_ref.group(1) if kept_ref else None, kept_zone.group(1) if kept_zone else None)
            body["description"] = "\n\n".join(p for p in (changes.notes, tail) if p)
        if changes.location is not None:
            body["address"] = changes.location
        return body

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        """Read the event (a cancelled one is refused, nothing written), then ``PUT`` the changes."""
        self._check_id(appointment_id, _EVENT_ID, "ocQHyuzHvysMo5N5VsXc")
        event = self.read_event(appointment_id, "update")
        if _status(event) is AppointmentStatus.CANCELLED:
            raise self._cancelled(appointment_id)
        resp = self._calendars(
            "PUT",
            f"/calendars/events/appointments/{appointment_id}",
            operation="update",
            json=self.update_body(changes, event),
        )
        data = self._object(resp, "update")
        data.setdefault("id", appointment_id)
        zone = named_timezone(changes.timezone, changes.start) or self._booking_zone(event)
        start = changes.start or _parse_time(event.get("startTime"))
        return self._appointment(
            data,
            "update",
            reference=reference_in(event),
            start=start,
            end=changes.end or _parse_time(event.get("endTime")),
            contact_id=_str(event, "contactId"),
            zone=zone,
        )

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        """Set ``appointmentStatus`` to ``cancelled``; the event stays in the calendar.

        The event is read first: an already cancelled one is returned as it is (no second
        write, so no second round of cancellation messages). ``reason`` is appended to the
        description as a ``Cancellation reason:`` line, below the booking's notes.
        """
        self._check_id(appointment_id, _EVENT_ID, "ocQHyuzHvysMo5N5VsXc")
        event = self.read_event(appointment_id, "cancel")
        zone = self._booking_zone(event)
        if _status(event) is AppointmentStatus.CANCELLED:
            return self._appointment(event, "cancel", status=AppointmentStatus.CANCELLED, zone=zone)
        body: dict[str, Any] = {"appointmentStatus": "cancelled"}
        if reason:
            old = event.get("description")
            line = f"Cancellation reason: {reason}"
            body["description"] = f"{old}\n\n{line}" if isinstance(old, str) and old.strip() else line
        resp = self._calendars("PUT", f"/calendars/events/appointments/{appointment_id}", operation="cancel", json=body)
        data = self._object(resp, "cancel")
        data.setdefault("id", appointment_id)
        return self._appointment(
            data,
            "cancel",
            reference=reference_in(event),
            start=_parse_time(event.get("startTime")),
            end=_parse_time(event.get("endTime")),
            contact_id=_str(event, "contactId"),
            status=AppointmentStatus.CANCELLED,
            zone=zone,
        )

    # -- reports ----------------------------------------------------------------------------

    def report_contact_id(self) -> str:
        """The contact that holds report notes: configured, or upserted once and cached."""
        cached = self._report_contact_id
        if cached is not None:
            return cached
        with self._report_contact_lock:
            if self._report_contact_id is None:
                self._report_contact_id = self._upsert(
                    {
                        "locationId": self.settings.location_id,
                        "email": REPORTS_CONTACT_EMAIL,
                        "firstName": "AI Receptionist",
                        "lastName": "Reports",
                        "source": "pms-integration",
                    },
                    "push_report",
                )
            return self._report_contact_id

    def find_report_note(self, contact_id: str, report: PerformanceReport) -> dict[str, Any] | None:
        """The note whose body carries ``Report id: <report_id>`` (``GET /contacts/{id}/notes``)."""
        resp = self._contacts("GET", f"/contacts/{contact_id}/notes", operation="push_report")
        data = self._object(resp, "push_report")
        notes = data.get("notes")
        if not isinstance(notes, list):
            raise unexpected(PROVIDER, "push_report", "the note list has no 'notes' array")
        marker = re.compile(r"(?m)^Report id: " + re.escape(report.id) + r"\s*$")
        for note in notes:
            if isinstance(note, dict) and isinstance(note.get("body"), str) and marker.search(note["body"]):
                return note
        return None

    def _note_receipt(
        self, note: Mapping[str, Any], report: PerformanceReport, contact_id: str, *, created: bool
    ) -> ReportReceipt:
        note_id = note.get("id")
        if not isinstance(note_id, str) or not _RECORD_ID.fullmatch(note_id):
            raise unexpected(
                PROVIDER, "push_report", "the note has no usable id", outcome_unknown=created, reference=report.id
            )
        return ReportReceipt(
            provider=PROVIDER,
            id=note_id,
            report_id=report.id,
            created=created,
            raw={"contactId": contact_id, "note": dict(note)},
        )

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        payload: dict[str, Any] = {"title": str(report.title), "body": report.render_text()}
        with self._report_notes_lock:
            known = self._report_notes.get(report.id)
        if known is not None:
            receipt = self._update_note(known[0], known[1], payload, report)
            if receipt is not None:
                return receipt
        receipt = self._push_report_fresh(report, payload)  # first push, or the note was deleted
        with self._report_notes_lock:
            self._report_notes[report.id] = (str(receipt.raw.get("contactId", "")), receipt.id)
            while len(self._report_notes) > _REPORT_CACHE_SIZE:
                self._report_notes.popitem(last=False)
        return receipt

    def _update_note(
        self, contact_id: str, note_id: str, payload: Mapping[str, Any], report: PerformanceReport
    ) -> ReportReceipt | None:
        """PUT the note; None when GoHighLevel no longer has it."""
        resp = self._contacts(
            "PUT", f"/contacts/{contact_id}/notes/{note_id}", operation="push_report", json=payload, expect=(404,)
        )
        if resp.status == 404:
            return None
        note = self._object(resp, "push_report").get("note")
        return self._note_receipt(
            note if isinstance(note, dict) else {"id": note_id}, report, contact_id, created=False
        )

    def _push_report_fresh(self, report: PerformanceReport, payload: Mapping[str, Any]) -> ReportReceipt:
        contact_id = self.report_contact_id()
        existing = self.find_report_note(contact_id, report)
        if existing is not None:
            note_id = existing.get("id")
            if not isinstance(note_id, str) or not _RECORD_ID.fullmatch(note_id):
                raise unexpected(PROVIDER, "push_report", "a listed note has no usable id")
            receipt = self._update_note(contact_id, note_id, payload, report)
            if receipt is None:
                raise unexpected(PROVIDER, "push_report", f"note {note_id} was listed but cannot be updated")
            return receipt

        def create_note() -> ReportReceipt:
            resp = self._contacts(
                "POST",
                f"/contacts/{contact_id}/notes",
                operation="push_report",
                json={**payload, "pinned": False},
                reference=report.id,
            )
            note = self._object(resp, "push_report", creates=True, reference=report.id).get("note")
            if not isinstance(note, dict):
                raise unexpected(
                    PROVIDER, "push_report", "the response has no 'note'", outcome_unknown=True, reference=report.id
                )
            return self._note_receipt(note, report, contact_id, created=True)

        def find_note() -> ReportReceipt | None:
            note = self.find_report_note(contact_id, report)
            return None if note is None else self._note_receipt(note, report, contact_id, created=True)

        return create_once(create_note, find_note, provider=PROVIDER, operation="push_report", reference=report.id)


class GoHighLevelV1(_GoHighLevel):
    """Legacy API v1 (end-of-life): appointments only, contact matched from e-mail/phone."""

    api_version = "v1"
    capabilities = frozenset({Capability.BOOK, Capability.UPDATE, Capability.CANCEL})

    def _zone_or_fail(self, requested: str | None, start: _dt.datetime | None = None) -> str:
        # a defaulted "UTC" (from a bare ...Z start) yields to PMS_GHL_TIMEZONE, but is still
        # the start's own zone when nothing else names one
        zone = self._selected_zone(requested, start) or requested
        if zone is None:
            raise ValidationError.single(
                "timezone",
                "is required for GoHighLevel API v1 (selectedTimezone): pass an IANA zone such as "
                "'America/New_York', give start a ZoneInfo, or set PMS_GHL_TIMEZONE",
            )
        return zone

    def appointment_body(self, request: AppointmentRequest) -> dict[str, Any]:
        """The ``POST /appointments/`` body; ``request.extra`` is merged last."""
        zone = self._zone_or_fail(request.timezone, request.start)
        patient = request.patient
        body: dict[str, Any] = {
            "calendarId": self.settings.calendar_id,
            "selectedSlot": _iso(request.start, ZoneInfo(zone)),
            "selectedTimezone": zone,
        }
        if patient.email:
            body["email"] = patient.email
        if patient.phone:
            body["phone"] = patient.phone
        if patient.name or patient.first_name or patient.last_name:
            body["name"] = patient.display_name
        if patient.given_name:
            body["firstName"] = patient.given_name
        if patient.family_name:
            body["lastName"] = patient.family_name
        body["title"] = request.title
        body["calendarNotes"] = _notes_with_reference([request.reason, request.notes], request.reference)
        body.update(request.extra)
        return body

    def book(self, request: AppointmentRequest) -> Appointment:
        body = self.appointment_body(request)
        zone = str(body["selectedTimezone"])

        def create_appointment() -> Appointment:
            resp = self.transport.request(
                "POST", "/appointments/", operation="book", json=body, reference=request.reference
            )
            data = self._object(resp, "book", creates=True, reference=request.reference)
            # v1 answers {id, contactId, contact}; the end is the calendar's slot length
            contact = data.get("contact")
            return self._appointment(
                data,
                "book",
                creates=True,
                reference=request.reference,
                start=request.start,
                end=request.end,
                contact_id=_str(contact, "id") if isinstance(contact, dict) else None,
                zone=zone,
            )

        booked = create_once(
            create_appointment,
            lambda: self.find_booking(request),
            provider=PROVIDER,
            operation="book",
            reference=request.reference,
        )
        # v1 cannot set a length: the calendar's slot length decides the end, and the create's
        # answer carries no times. Read the appointment back so the caller sees what the
        # practice's calendar holds, not the length that was asked for.
        try:
            record = self.read_appointment(booked.id, "book")
        except PMSError as exc:
            _log.warning(
                "gohighlevel book: booked %s, but reading it back failed (%s); its end is the requested one",
                booked.id,
                type(exc).__name__,
            )
            return booked
        return self._appointment(
            record,
            "book",
            reference=request.reference,
            start=request.start,
            end=request.end,
            contact_id=booked.contact_id,
            zone=zone,
        )

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The appointment an earlier, unanswered attempt at ``request`` created, or None."""
        return self.find_booking(request)

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        """``GET /appointments/?startDate=&endDate=&calendarId=`` and match the reference."""
        params = {
            "startDate": _epoch_ms(request.start - _LOOKUP_MARGIN),
            "endDate": _epoch_ms(request.end_time + _LOOKUP_MARGIN),
            "calendarId": self.settings.calendar_id,
            "includeAll": "true",
        }
        resp = self.transport.request("GET", "/appointments/", operation="book", params=params)
        data = self._object(resp, "book")
        items = data.get("appointments")
        if not isinstance(items, list):
            raise unexpected(PROVIDER, "book", "the appointment list has no 'appointments' array")
        records = [a for a in items if isinstance(a, dict)]
        match = next((a for a in records if _carries(a, request.reference)), None)
        if match is None:
            patient = request.patient

            def same_patient(a: Mapping[str, Any]) -> bool:
                found = a.get("contact")
                contact: Mapping[str, Any] = found if isinstance(found, dict) else {}
                email = contact.get("email") or a.get("email")
                phone = contact.get("phone") or a.get("phone")
                return bool(
                    (patient.email and isinstance(email, str) and email.lower() == patient.email.lower())
                    or (patient.phone and phone == patient.phone)
                )

            match = next(
                (
                    a
                    for a in records
                    if _parse_time(a.get("startTime")) == request.start
                    and _status(a) is not AppointmentStatus.CANCELLED
                    and same_patient(a)
                ),
                None,
            )
        if match is None:
            return None
        return self._appointment(
            match,
            "book",
            reference=request.reference,
            start=request.start,
            zone=_recorded_zone(match) or self._selected_zone(request.timezone, request.start),
        )

    def read_appointment(self, appointment_id: str, operation: str) -> dict[str, Any]:
        """``GET /appointments/{id}`` (a flat record; 404 is NotFoundError)."""
        resp = self.transport.request("GET", f"/appointments/{appointment_id}", operation=operation)
        record = self._object(resp, operation)
        record.setdefault("id", appointment_id)
        return record

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        """Reschedule (``GET`` then ``PUT /appointments/{id}``); v1 has no way to change anything else."""
        self._check_id(appointment_id, _V1_ID, "004B1SpcAvh3s9E3rqk8")
        other = [f for f in ("title", "notes", "location") if getattr(changes, f) is not None]
        if other:
            raise UnsupportedOperationError(
                f"GoHighLevel API v1 can only reschedule an appointment; it cannot change {', '.join(other)}. "
                + _V2_ONLY_HINT
            )
        if changes.start is None:
            raise UnsupportedOperationError(
                "GoHighLevel API v1 reschedules by start time only (the calendar sets the length); "
                "give a new start. " + _V2_ONLY_HINT
            )
        record = self.read_appointment(appointment_id, "update")
        if _status(record) is AppointmentStatus.CANCELLED:
            raise self._cancelled(appointment_id)
        zone = named_timezone(changes.timezone, changes.start) or _recorded_zone(record)
        zone = self._zone_or_fail(zone, None)
        body = {"selectedSlot": _iso(changes.start, ZoneInfo(zone)), "selectedTimezone": zone}
        resp = self.transport.request("PUT", f"/appointments/{appointment_id}", operation="update", json=body)
        data = self._object(resp, "update")
        data.setdefault("id", appointment_id)
        # v1 keeps the appointment's length; the answer carries no times
        old_start, old_end = _parse_time(record.get("startTime")), _parse_time(record.get("endTime"))
        length = old_end - old_start if old_start is not None and old_end is not None else None
        return self._appointment(
            data,
            "update",
            reference=reference_in(record),
            start=changes.start,
            end=changes.start + length if length is not None else changes.end,
            contact_id=_str(record, "contactId"),
            zone=zone,
        )

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        """``GET``, then ``PUT /appointments/{id}/status`` ``{"status": "cancelled"}`` unless it
        already is. v1 has no field that could hold ``reason``; it is not stored."""
        self._check_id(appointment_id, _V1_ID, "004B1SpcAvh3s9E3rqk8")
        record = self.read_appointment(appointment_id, "cancel")
        zone = _recorded_zone(record) or self.settings.timezone
        if _status(record) is not AppointmentStatus.CANCELLED:
            self.transport.request(
                "PUT", f"/appointments/{appointment_id}/status", operation="cancel", json={"status": "cancelled"}
            )
        return self._appointment(record, "cancel", status=AppointmentStatus.CANCELLED, zone=zone)

    def unsupported_reason(self, capability: Capability) -> str | None:
        """Why this adapter lacks ``capability`` (for the client's UnsupportedOperationError)."""
        if capability is Capability.PUSH_REPORT:
            return (
                "GoHighLevel API v1 cannot hold performance reports in this library (v1 has no way to update "
                "a note, so a re-push would duplicate it). " + _V2_ONLY_HINT
            )
        return None

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        raise UnsupportedOperationError(str(self.unsupported_reason(Capability.PUSH_REPORT)))
