"""GoHighLevel (HighLevel / LeadConnector) adapter: API v2 here, legacy v1 in ``gohighlevel_v1``.

This module also holds the wire helpers both share. What is sent and why: ``docs/providers/gohighlevel.md``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import Auth, BearerAuth, ErrorInfo, HttpResponse, Runtime
from .._ratelimit import RateLimitInfo
from .._time import epoch_ms, parse_instant
from ..config import GoHighLevelSettings
from ..errors import ConflictError, InvalidRequestError, PMSError, ValidationError
from ..models import (
    Appointment,
    AppointmentStatus,
    ProviderName,
    Slot,
    SlotQuery,
    named_timezone,
)
from ..provider import Provider
from ._base import BaseAdapter, text

if TYPE_CHECKING:
    from ..models import AppointmentRequest

__all__ = [
    "create",
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
    from .gohighlevel_v2 import GoHighLevelV2Adapter

    return GoHighLevelV2Adapter(settings, runtime)


def __getattr__(name: str) -> Any:
    """The adapter classes (from ``gohighlevel_v1`` and ``gohighlevel_v2``) and their deprecated names."""
    new = _RENAMED.get(name, name)
    if new not in ("GoHighLevelV1Adapter", "GoHighLevelV2Adapter"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name != new:
        warnings.warn(f"{__name__}.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
    from . import gohighlevel_v1, gohighlevel_v2

    return getattr(gohighlevel_v1 if new.endswith("V1Adapter") else gohighlevel_v2, new)


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

    def unless_ours(
        self, request: AppointmentRequest, book: Callable[[], Appointment], find: Callable[[], Appointment | None]
    ) -> Appointment:
        """``book()``; when GoHighLevel refuses the slot as taken, the booking holding it may be this
        very one (an earlier attempt at the same reference, from another process whose answer was
        lost): then that booking is the answer, not a ConflictError about the patient's own slot."""
        try:
            return book()
        except ConflictError as exc:
            if exc.code != "SLOT_UNAVAILABLE":
                raise
            try:
                mine = find()
            except PMSError:
                mine = None  # cannot tell: the vendor's own answer stands
            if mine is None or not _carries(mine.raw, request.reference):  # the same patient's other booking is not it
                raise exc from None
            logging.getLogger(__name__).info(
                "book: the slot holds reference %s already; returning it", request.reference
            )
            return mine

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
