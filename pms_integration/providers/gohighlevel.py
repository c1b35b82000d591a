"""GoHighLevel (HighLevel / LeadConnector) adapter: API v2 here, legacy v1 in ``gohighlevel_v1``.

This module also holds the wire helpers both share. What is sent and why: ``docs/providers/gohighlevel.md``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import Auth, BearerAuth, ErrorInfo, HttpResponse, Runtime
from .._ratelimit import RateLimitInfo
from .._time import epoch_ms, parse_instant
from ..config import GoHighLevelSettings
from ..errors import ConflictError, InvalidRequestError, ValidationError
from ..models import (
    Appointment,
    AppointmentQuery,
    AppointmentStatus,
    PatientQuery,
    PatientRecord,
    ProviderName,
    Slot,
    SlotQuery,
    named_timezone,
)
from ..provider import READ_CAPABILITIES, WRITE_CAPABILITIES, Provider
from ._base import BaseAdapter, text

if TYPE_CHECKING:
    from ..models import AppointmentRequest, AppointmentUpdate, PerformanceReport

__all__ = [
    "create",
    "GoHighLevelV2Adapter",
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
#: The contact that collects report notes when PMS_GHL_REPORT_CONTACT_ID is unset (example.com
#: is reserved, so no automation can ever e-mail a real person).
REPORTS_CONTACT_EMAIL = "ai-receptionist-reports@example.com"
#: GoHighLevel's documented burst window (100 requests per 10 s, v1 and v2).
BURST_WINDOW_SECONDS = 10.0
V2_ONLY_HINT = (
    "GoHighLevel API v2 can: set PMS_GHL_API_VERSION=v2 (or PMS_GHL_BASE_URL=https://services.leadconnectorhq.com) "
    "with a Private Integration Token in PMS_GHL_API_KEY."
)
#: Slack around the slot when listing events to reconcile an ambiguous create.
LOOKUP_MARGIN = _dt.timedelta(minutes=1)
_CONTACT_SEARCH_LIMIT = 20  # people sharing an e-mail or phone: a family
#: pages of contact search followed at most (200 contacts share one e-mail or phone: a clinic's own number)
MAX_CONTACT_PAGES = 10
#: GoHighLevel's default slot interval: the grid assumed when a free-slot answer offers too few
#: starts to show the calendar's own
DEFAULT_SLOT_INTERVAL = _dt.timedelta(minutes=30)
_MARGIN_DAY = _dt.timedelta(days=1)
_DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WALL_CLOCK = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")

# v2 event ids are 20 alphanumerics; a recurring instance is "<id>_<epoch ms>_<duration>".
_EVENT_ID = re.compile(r"^[A-Za-z0-9]{1,64}(?:_\d{10,16}_\d{1,7})?$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # contact and note ids before they go into a URL
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")  # what the client accepts as an appointment id
_REF = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_TITLE_REF = re.compile(r"\(ref (" + _REF + r")\)\s*$")
_NOTES_REF = re.compile(r"(?m)^Booking reference: (" + _REF + r")\s*$")
_ZONE_LINE = re.compile(r"(?m)^Time zone: ([A-Za-z0-9_+/-]{1,64})\s*$")
_NOTE_KEYS = ("description", "notes", "calendarNotes")
_SLOT_TAKEN = re.compile(r"\bslot\b.*\b(?:no longer available|not available|unavailable|already booked)", re.I)
_FIELD_NAMED = re.compile(r"^(?:property (\S+) should not exist|([A-Za-z_][A-Za-z0-9_.]*) (?:must|should)\b)", re.I)
_VERSION_HEADER = re.compile(r"version header", re.I)
_RENAMED = {"GoHighLevelV2": "GoHighLevelV2Adapter", "GoHighLevelV1": "GoHighLevelV1Adapter"}


def create(settings: GoHighLevelSettings, runtime: Runtime) -> Provider:
    """The adapter for ``settings.api_version`` (v2 unless configured otherwise)."""
    if settings.api_version == "v1":
        from .gohighlevel_v1 import GoHighLevelV1Adapter

        return GoHighLevelV1Adapter(settings, runtime)
    return GoHighLevelV2Adapter(settings, runtime)


def __getattr__(name: str) -> Any:
    """``GoHighLevelV1Adapter`` (from ``gohighlevel_v1``) and the deprecated class names."""
    new = _RENAMED.get(name, name)
    if new not in ("GoHighLevelV1Adapter", "GoHighLevelV2Adapter"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name != new:
        warnings.warn(f"{__name__}.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
    from . import gohighlevel_v1

    return getattr(gohighlevel_v1, new) if new.endswith("V1Adapter") else globals()[new]


def parse_error(resp: HttpResponse) -> ErrorInfo:
    """Read a v2 ``{"statusCode", "message", "error", "traceId"}``, v1 ``{"msg"}`` or v1 422
    field-map body; a taken slot is a :class:`ConflictError`, a rejected ``Version`` header a
    request problem (not a bad token). Never raises."""
    try:
        return _parse_error(resp)
    except Exception:  # noqa: BLE001 - a parser must never turn an error into a crash
        return ErrorInfo(f"HTTP {resp.status}")


def _parse_error(resp: HttpResponse) -> ErrorInfo:
    body = resp.json_or_none()
    if not isinstance(body, dict):
        return ErrorInfo(f"HTTP {resp.status} without a JSON error body")
    message = body.get("message")
    fields: list[str] = []
    code: str | None = None
    messages: list[str] = [message] if isinstance(message, str) else []
    if isinstance(message, list):
        messages = [str(m) for m in message if isinstance(m, (str, int, float))]
    messages += [body["msg"]] if isinstance(body.get("msg"), str) else []
    for key, value in body.items() if not messages else ():  # v1 validation: one key per field
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            fields.append(str(key))
            messages.append(value["message"])
            code = code or text(value.get("rule"))
    if not messages and isinstance(body.get("error"), str):
        messages.append(body["error"])
    for line in messages:
        m = _FIELD_NAMED.match(line)
        named = m and (m.group(1) or m.group(2))
        if named and named not in fields:
            fields.append(named)
    said = "; ".join(messages) or f"HTTP {resp.status}"
    info = ErrorInfo(said, code=code, fields=tuple(fields), request_id=text(body.get("traceId")))
    if any(_SLOT_TAKEN.search(line) for line in messages):
        return ErrorInfo(said, "SLOT_UNAVAILABLE", info.fields, info.request_id, ConflictError, retryable=False)
    if resp.status == 401 and _VERSION_HEADER.search(said):
        return ErrorInfo(
            f"{said} GoHighLevel rejected the request's Version header: "
            f"the endpoint expects Version {CALENDARS_VERSION} (calendars) or {CONTACTS_VERSION} (contacts). "
            "This is an API-version problem (check PMS_GHL_BASE_URL / PMS_GHL_API_VERSION), not a bad token.",
            "VERSION_HEADER",
            ("Version",),
            info.request_id,
            InvalidRequestError,
            retryable=False,
        )
    return info


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """``X-RateLimit-*`` headers (burst and daily) as :class:`RateLimitInfo`; None if absent."""
    lower = {str(k).lower(): v for k, v in headers.items()}

    def number(name: str) -> int | None:
        try:
            return int(float(str(lower[f"x-ratelimit-{name}"]).strip()))
        except (KeyError, ValueError):
            return None

    found = [number(n) for n in ("remaining", "max", "interval-milliseconds", "daily-remaining", "limit-daily")]
    if all(v is None for v in found):
        return None
    remaining, limit, interval_ms, daily_remaining, daily_limit = found
    return RateLimitInfo(
        remaining=remaining,
        limit=limit,
        interval_seconds=interval_ms / 1000 if interval_ms is not None else None,
        daily_remaining=daily_remaining,
        daily_limit=daily_limit,
    )


def title_with_reference(title: str, reference: str) -> str:
    """The title with a ``(ref ...)`` suffix, as releases before 2026-12 wrote it (reminders
    show the title to the patient, so bookings no longer do; :func:`reference_in` still reads it)."""
    return f"{title} (ref {reference})"


def notes_with_reference(parts: list[str | None], reference: str | None, zone: str | None = None) -> str:
    """The description: the caller's text, then the ``Time zone:`` and ``Booking reference:`` lines."""
    trailer = "\n".join(
        ([f"Time zone: {zone}"] if zone else []) + ([f"Booking reference: {reference}"] if reference else [])
    )
    return "\n\n".join(p for p in [*parts, trailer] if p)


def _found(pattern: re.Pattern[str], record: Mapping[str, Any], keys: tuple[str, ...] = _NOTE_KEYS) -> str | None:
    for key in keys:
        m = pattern.search(text(record.get(key)) or "")
        if m:
            return m.group(1)
    return None


def reference_in(record: Mapping[str, Any]) -> str | None:
    """The booking reference written into an event's title or notes, if any."""
    return _found(_TITLE_REF, record, ("title",)) or _found(_NOTES_REF, record)


def _carries(record: Mapping[str, Any], reference: str) -> bool:
    pattern = re.compile(r"(?<![A-Za-z0-9_.:-])" + re.escape(reference) + r"(?![A-Za-z0-9_.:-])")
    return any(pattern.search(text(record.get(key)) or "") for key in ("title", *_NOTE_KEYS))


def _zone(name: str | None) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return None


def recorded_zone(record: Mapping[str, Any]) -> str | None:
    """The IANA zone the booking was made in: its ``Time zone:`` line, else v1's own field."""
    for zone in (_found(_ZONE_LINE, record), text(record.get("selectedTimezone"))):
        if _zone(zone) is not None:
            return zone
    return None


def in_zone(value: _dt.datetime, zone: str | None) -> str:
    """ISO-8601 with the offset, moved into ``zone`` first (same instant, DST-correct offset)."""
    tz = _zone(zone)
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def status_of(record: Mapping[str, Any]) -> AppointmentStatus:
    cancelled = any(record.get(k) == "cancelled" for k in ("appointmentStatus", "appoinmentStatus", "status"))
    return AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.BOOKED  # v1 misspells the key


class GoHighLevelBase(BaseAdapter):
    """What v1 and v2 share: credentials, error and quota formats, id checks, reading events."""

    provider = PROVIDER
    token_variable = TOKEN_VARIABLE
    default_headers: ClassVar[Mapping[str, str]] = {}  # requests sets Content-Type on a JSON body
    # a 429 carries no Retry-After; without quota headers either, wait out the burst window
    rate_limit_window = BURST_WINDOW_SECONDS
    parse_error: ClassVar[Callable[[HttpResponse], ErrorInfo]] = staticmethod(parse_error)
    parse_rate_headers: ClassVar[Callable[[Mapping[str, str]], RateLimitInfo | None] | None] = staticmethod(
        parse_rate_headers
    )
    id_pattern: ClassVar[re.Pattern[str]] = _EVENT_ID
    id_example: ClassVar[str] = "ocQHyuzHvysMo5N5VsXc"
    settings: GoHighLevelSettings

    def make_auth(self) -> Auth:
        return BearerAuth(self.settings.api_key)

    def check_id(self, appointment_id: str) -> str:
        if not isinstance(appointment_id, str) or not self.id_pattern.fullmatch(appointment_id):
            raise ValidationError.single(
                "appointment_id", f"is not a GoHighLevel appointment id (e.g. {self.id_example})"
            )
        return appointment_id

    def answer(
        self,
        resp: HttpResponse,
        operation: str,
        key: str | None = None,
        *,
        creates: bool = False,
        reference: str | None = None,
    ) -> dict[str, Any]:
        """The answer as a JSON object, or its ``key`` member, which must be one too."""
        data = self.json_object(
            resp, operation, f"HTTP {resp.status} from {resp.method} {resp.path}", creates=creates, reference=reference
        )
        if key is None:
            return data
        if not isinstance(data.get(key), dict):
            raise self.unexpected(
                operation, f"the answer has no '{key}' object", outcome_unknown=creates, reference=reference
            )
        return dict(data[key])

    def records(self, resp: HttpResponse, operation: str, key: str) -> list[dict[str, Any]]:
        """The objects in the answer's ``key`` array."""
        items = self.answer(resp, operation).get(key)
        if not isinstance(items, list):
            raise self.unexpected(operation, f"the answer has no '{key}' array")
        return [item for item in items if isinstance(item, dict)]

    def selected_zone(self, requested: str | None, start: _dt.datetime | None = None) -> str | None:
        """The zone the caller named, else PMS_GHL_TIMEZONE, else None (keep the start's offset)."""
        return named_timezone(requested, start) or self.settings.timezone

    def booking_zone(self, record: Mapping[str, Any]) -> str | None:
        return recorded_zone(record) or self.settings.timezone

    def appointment(
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
    ) -> Appointment:
        """An :class:`Appointment` from a vendor record (its fields win over the fallbacks given),
        its times in ``zone``, else in the offset of ``start``, else in the vendor's own."""
        appointment_id = record.get("id")
        if not isinstance(appointment_id, str) or not _SAFE_ID.fullmatch(appointment_id):
            raise self.unexpected(
                operation, "the response carries no usable appointment id", outcome_unknown=creates, reference=reference
            )
        tz = _zone(zone) or (start.tzinfo if start is not None else None)

        def local(key: str, fallback: _dt.datetime | None) -> _dt.datetime | None:
            value = parse_instant(record.get(key)) or fallback
            return value.astimezone(tz) if value is not None and tz is not None else value

        return Appointment(
            provider=PROVIDER,
            id=appointment_id,
            status=status or status_of(record),
            start=local("startTime", start),
            end=local("endTime", end),
            reference=reference or reference_in(record),
            contact_id=text(record.get("contactId")) or contact_id,
            title=text(record.get("title")),
            raw=dict(record),
        )

    def rewritten(
        self,
        resp: HttpResponse,
        current: Appointment,
        operation: str,
        *,
        zone: str | None,
        start: _dt.datetime | None = None,
        end: _dt.datetime | None = None,
        status: AppointmentStatus | None = None,
    ) -> Appointment:
        """The answer to a write of ``current``; what it lacks comes from the change, else ``current``."""
        data = self.answer(resp, operation)
        data.setdefault("id", current.id)
        return self.appointment(
            data,
            operation,
            reference=current.reference,
            start=start or current.start,
            end=end or current.end,
            contact_id=current.contact_id,
            status=status,
            zone=zone,
        )

    def matching(
        self,
        records: list[dict[str, Any]],
        request: AppointmentRequest,
        same_patient: Callable[[dict[str, Any]], bool],
        contact_id: str | None = None,
    ) -> Appointment | None:
        """The listed record that carries the request's reference, else one of the same patient at
        the same instant (a patient cannot hold one slot twice), as the booking."""

        def same_slot(r: dict[str, Any]) -> bool:
            active = status_of(r) is not AppointmentStatus.CANCELLED
            return active and parse_instant(r.get("startTime")) == request.start and same_patient(r)

        match = next((r for r in records if _carries(r, request.reference)), None) or next(
            filter(same_slot, records), None
        )
        if match is None:
            return None
        zone = recorded_zone(match) or self.selected_zone(request.timezone, request.start)
        return self.booked(match, request, zone, contact_id)

    def booked(
        self,
        record: Mapping[str, Any],
        request: AppointmentRequest,
        zone: str | None,
        contact_id: str | None = None,
        *,
        creates: bool = False,
    ) -> Appointment:
        """``record`` as the booking ``request`` made; the request fills in what the record lacks.
        With ``creates``, a record without a usable id leaves the create's outcome unknown."""
        return self.appointment(
            record,
            "book",
            creates=creates,
            reference=request.reference,
            start=request.start,
            end=request.end_time,
            contact_id=contact_id,
            zone=zone,
        )

    # -- scheduling reads: free slots (v1 and v2 answer the same availability map) ---------------

    def slot_params(self, query: SlotQuery) -> dict[str, str]:
        """``startDate``/``endDate`` in epoch ms and, when configured, the practice's ``timezone``
        (unset: GoHighLevel answers in the calendar's own zone)."""
        params = {"startDate": str(epoch_ms(query.start)), "endDate": str(epoch_ms(query.end))}
        if self.settings.timezone:
            params["timezone"] = self.settings.timezone
        return params

    def slots_in(self, data: Mapping[str, Any], query: SlotQuery) -> list[Slot]:
        """Slots of ``query.duration_minutes`` from a ``{"<date>": {"slots": [...]}}`` answer.

        GoHighLevel offers slot *starts* on the calendar's grid, each one the start of a free
        slot of the calendar's own length. A start is kept when every grid start inside the
        requested duration is offered too, so the whole appointment lies in consecutive free
        time; the grid is the smallest gap between offered starts (``DEFAULT_SLOT_INTERVAL``
        when the answer has a single start). Keys that are not dates (``traceId``, ``_dates_``)
        are skipped."""
        starts: set[_dt.datetime] = set()
        for key, day in data.items():
            if not _DATE_KEY.fullmatch(str(key)):
                continue
            offered = day.get("slots") if isinstance(day, dict) else None
            if not isinstance(offered, list):
                raise self.unexpected("free_slots", f"the day {key} has no 'slots' array")
            for item in offered:
                at = parse_instant(item)
                if at is None:
                    raise self.unexpected("free_slots", "a slot is not an ISO-8601 time with an offset")
                starts.add(at)
        ordered = sorted(starts)
        gaps = [b - a for a, b in itertools.pairwise(ordered)]
        step = min(gaps, default=DEFAULT_SLOT_INTERVAL)
        needed = max(1, -(-query.duration // step))  # grid starts the duration spans (ceiling)
        tz = _zone(self.settings.timezone)
        slots = []
        for at in ordered:
            end = at + query.duration
            if at < query.start or end > query.end or any(at + k * step not in starts for k in range(1, needed)):
                continue
            local = at.astimezone(tz) if tz is not None else at
            slots.append(Slot(PROVIDER, local, end.astimezone(local.tzinfo)))
        return slots

    def window(self, request: AppointmentRequest) -> tuple[str, str]:
        """The look-up window around the slot, in epoch milliseconds."""
        return str(epoch_ms(request.start - LOOKUP_MARGIN)), str(epoch_ms(request.end_time + LOOKUP_MARGIN))


class GoHighLevelV2Adapter(GoHighLevelBase):
    """API v2: contacts and calendar events, each endpoint family with its own ``Version`` header."""

    def __init__(self, settings: GoHighLevelSettings, runtime: Runtime) -> None:
        super().__init__(settings, runtime)
        self._report_contact_lock = threading.Lock()
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
        return self.create_once(
            lambda: self.create_booking(request, contact_id),
            lambda: self.find_booking(request, contact_id),
            operation="book",
            reference=request.reference,
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

    capabilities = WRITE_CAPABILITIES | READ_CAPABILITIES

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
