"""The neutral data model every adapter speaks, and the converter for dict/JSON input.

All models are frozen ``attrs`` classes. They validate themselves on construction and raise one
:class:`~pms_integration.errors.ValidationError` that lists *every* bad field, so a caller (or a
chatbot) can fix everything in one go. Dict input - what a conversation manager or an HTTP body
holds - goes through :func:`structure`, which reports unknown keys and wrong types the same way.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ._render import html_table, text_table
from ._time import parse_iso as parse_iso_datetime
from .errors import ValidationError, with_article

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "ProviderName",
    "AppointmentStatus",
    "Patient",
    "AppointmentRequest",
    "AppointmentUpdate",
    "Appointment",
    "PerformanceReport",
    "ReportReceipt",
    "ProviderStatus",
    "ProviderStatusList",
    "get_converter",
    "parse_iso_datetime",
    "structure",
    "unstructure",
    "new_reference",
    "validate_appointment_id",
    "MIN_DURATION_MINUTES",
    "MAX_DURATION_MINUTES",
    "DEFAULT_DURATION_MINUTES",
    "PAST_ALLOWANCE_MINUTES",
    "check_not_past",
]

#: Bounds on an appointment's length. Eight hours covers the longest surgical session a
#: practice books; Salesforce refuses more than 24 h without "multiday events" anyway.
MIN_DURATION_MINUTES = 5
MAX_DURATION_MINUTES = 8 * 60
DEFAULT_DURATION_MINUTES = 30
#: How far in the past a new start may lie and still be booked (or a booking moved to it):
#: clocks of the caller, this process and the vendor disagree by a little, and a booking for
#: "now" takes a moment to send. Anything older is refused as a mistake.
PAST_ALLOWANCE_MINUTES = 5
#: Dates outside these years are typing mistakes, and near the ends of Python's range they
#: overflow when converted to UTC or moved by a duration.
MIN_YEAR = 2000
MAX_YEAR = 2199

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")  # ASCII digits only (\d would take any script's)
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
# References and report ids end up in vendor search queries and titles: keep them to a safe,
# quotable alphabet.
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Vendor record ids as they travel through this library (HubSpot's composite id joins three
# numeric ids with ':'). The first character must be alphanumeric, which also rules out '..'.
_APPOINTMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CONTACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_METRIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.%/()-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

T = TypeVar("T")


class ProviderName(str, enum.Enum):
    """The three supported vendors. ``ProviderName.parse("ghl")`` accepts the aliases."""

    GOHIGHLEVEL = "gohighlevel"
    SALESFORCE = "salesforce"
    HUBSPOT = "hubspot"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def parse(cls, value: object) -> ProviderName:
        """Return the provider for ``value`` (a name or alias, any case) or raise ``ValueError``."""
        if isinstance(value, ProviderName):
            return value
        if not isinstance(value, str):
            raise ValueError("must be a provider name string")
        key = value.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        try:
            return _ALIASES[key]
        except KeyError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown provider {value[:40]!r}; expected one of {names} (or ghl)") from None

    def __str__(self) -> str:
        return self.value


_LABELS = {
    ProviderName.GOHIGHLEVEL: "GoHighLevel",
    ProviderName.SALESFORCE: "Salesforce",
    ProviderName.HUBSPOT: "HubSpot",
}
_ALIASES = {
    "gohighlevel": ProviderName.GOHIGHLEVEL,
    "ghl": ProviderName.GOHIGHLEVEL,
    "highlevel": ProviderName.GOHIGHLEVEL,
    "leadconnector": ProviderName.GOHIGHLEVEL,
    "salesforce": ProviderName.SALESFORCE,
    "sfdc": ProviderName.SALESFORCE,
    "hubspot": ProviderName.HUBSPOT,
}


class AppointmentStatus(str, enum.Enum):
    BOOKED = "booked"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


def new_reference() -> str:
    """A fresh booking reference (``bk-`` and 20 hex digits)."""
    return "bk-" + secrets.token_hex(10)


def validate_appointment_id(value: object, field: str = "appointment_id") -> str:
    """Check an id that will be placed in a URL path; raise :class:`ValidationError` if unsafe."""
    if not isinstance(value, str):
        raise ValidationError.single(field, "must be a string")
    if not _APPOINTMENT_ID.fullmatch(value):
        raise ValidationError.single(
            field,
            "must be 1-128 characters of letters, digits, '_', '-', '.', ':' starting with a letter or digit",
        )
    return value


def check_not_past(start: _dt.datetime | None, now: _dt.datetime | None = None, *, field: str = "start") -> None:
    """Raise :class:`ValidationError` naming ``field`` when ``start`` lies more than
    :data:`PAST_ALLOWANCE_MINUTES` before ``now`` (the current time by default).

    Applied when booking and when moving a booking, not when a model is built: an
    :class:`Appointment` read back from a vendor may well lie in the past.
    """
    if start is None:
        return
    current = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    if start < current - _dt.timedelta(minutes=PAST_ALLOWANCE_MINUTES):
        raise ValidationError.single(
            field,
            f"is in the past ({start.isoformat()}); appointments can only be booked or moved to a future time",
        )


# ---------------------------------------------------------------------------------------------
# validation helpers


class _Errors:
    """Collects (path, message) pairs; raises them together."""

    def __init__(self, prefix: str = "") -> None:
        self.items: list[tuple[str, str]] = []
        self.prefix = prefix

    def add(self, path: str, message: str) -> None:
        self.items.append((f"{self.prefix}{path}", message))

    def extend(self, path: str, error: ValidationError) -> None:
        for sub, message in error.errors:
            self.items.append((f"{self.prefix}{path}.{sub}" if sub else f"{self.prefix}{path}", message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)


def _text(
    errors: _Errors,
    path: str,
    value: object,
    *,
    max_len: int,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    if value is None:
        if required:
            errors.add(path, "is required")
        return None
    if not isinstance(value, str):
        errors.add(path, "must be a string")
        return None
    stripped = value.strip()
    if required and not stripped:
        errors.add(path, "must not be empty")
        return None
    if len(stripped) > max_len:
        errors.add(path, f"must be at most {max_len} characters (got {len(stripped)})")
        return None
    pattern = _CONTROL_EXCEPT_NEWLINE if multiline else _CONTROL
    if pattern.search(stripped):
        errors.add(path, "must not contain control characters")
        return None
    return stripped or None


def _aware(errors: _Errors, path: str, value: object, *, required: bool) -> _dt.datetime | None:
    if value is None:
        if required:
            errors.add(path, "is required")
        return None
    if not isinstance(value, _dt.datetime):
        errors.add(path, "must be an ISO-8601 date-time with offset, e.g. 2026-12-01T10:00:00-05:00")
        return None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        errors.add(path, "must include a time zone (e.g. 2026-12-01T10:00:00-05:00); naive times are ambiguous")
        return None
    if not _in_range(value):
        errors.add(path, f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
        return None
    return value


def _in_range(value: _dt.date) -> bool:
    """Within the years a booking or report can sensibly have (and safely converted to UTC)."""
    if isinstance(value, _dt.datetime):
        try:
            value = value.astimezone(_dt.timezone.utc)
        except OverflowError:
            return False
    return MIN_YEAR <= value.year <= MAX_YEAR


def _duration(errors: _Errors, path: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, "must be a whole number of minutes")
        return None
    if not MIN_DURATION_MINUTES <= value <= MAX_DURATION_MINUTES:
        errors.add(path, f"must be between {MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES} minutes")
        return None
    return value


def _check_span(errors: _Errors, start: _dt.datetime, end: _dt.datetime, path: str = "end") -> None:
    if end <= start:
        errors.add(path, "must be after start")
        return
    minutes = (end - start).total_seconds() / 60
    if minutes < MIN_DURATION_MINUTES or minutes > MAX_DURATION_MINUTES:
        errors.add(
            path,
            f"gives a duration of {minutes:g} minutes; it must be between "
            f"{MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES}",
        )


def _timezone(errors: _Errors, path: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        errors.add(path, "must be an IANA time zone name such as 'America/New_York'")
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        errors.add(path, f"is not a known IANA time zone: {value[:64]!r}")
        return None
    return value


def named_timezone(timezone: str | None, start: _dt.datetime | None) -> str | None:
    """The zone a request or update *names*, or None when this module only derived it.

    A request with no ``timezone`` gets one from its start; for a start written as ``...Z``
    that is "UTC", which says nothing about where the practice or the patient is, so adapters
    let the practice's zone (or the booking's recorded one) win over it. A start carrying a
    ``ZoneInfo`` (even ``ZoneInfo("UTC")``) does name its zone.
    """
    if not timezone:
        return None
    if (
        timezone == "UTC"
        and start is not None
        and not isinstance(start.tzinfo, ZoneInfo)
        and start.utcoffset() == _dt.timedelta(0)
    ):
        return None
    return timezone


def _zone_name(value: _dt.datetime) -> str | None:
    tz = value.tzinfo
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is _dt.timezone.utc:
        return "UTC"
    return None


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------------------------------------
# models


@attrs.frozen
class Patient:
    """Who the appointment is for. At least one of ``email`` and ``phone`` is required.

    ``phone`` is normalised to E.164 (``+15555550123``); spaces, dashes, dots and brackets are
    accepted on input. ``contact_id`` is the vendor's own id for this person, when the caller
    already knows it (GoHighLevel contact, Salesforce Contact/Lead, HubSpot contact): adapters
    then skip the contact look-up.
    """

    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    contact_id: str | None = None

    def __attrs_post_init__(self) -> None:
        errors = _Errors()
        for field in ("name", "first_name", "last_name"):
            _set(self, field, _text(errors, field, getattr(self, field), max_len=100))
        email = _text(errors, "email", self.email, max_len=254)
        if email is not None:
            if not _EMAIL.fullmatch(email):
                errors.add("email", "is not a valid e-mail address")
            else:
                _set(self, "email", email)
        else:
            _set(self, "email", None)
        phone = self.phone
        if phone is not None:
            if not isinstance(phone, str):
                errors.add("phone", "must be a string")
                phone = None
            else:
                compact = _PHONE_SEPARATORS.sub("", phone)
                if compact.startswith("00"):
                    compact = "+" + compact[2:]
                if not _E164.fullmatch(compact):
                    errors.add("phone", "must be an E.164 number with country code, e.g. +15555550123")
                    phone = None
                else:
                    phone = compact
        _set(self, "phone", phone)
        contact_id = self.contact_id
        if contact_id is not None and (not isinstance(contact_id, str) or not _CONTACT_ID.fullmatch(contact_id)):
            errors.add("contact_id", "must be 1-64 letters, digits, '_' or '-'")
        if self.email is None and self.phone is None and not errors.items:
            errors.add("email", "an e-mail address or a phone number is required")
        errors.raise_if_any()

    @property
    def display_name(self) -> str:
        """The best human-readable name available (may fall back to the e-mail or phone)."""
        if self.name:
            return self.name
        joined = " ".join(p for p in (self.first_name, self.last_name) if p)
        return joined or self.email or self.phone or "Patient"

    @property
    def given_name(self) -> str | None:
        if self.first_name:
            return self.first_name
        if self.name:
            return self.name.split()[0]
        return None

    @property
    def family_name(self) -> str | None:
        if self.last_name:
            return self.last_name
        if self.name and len(self.name.split()) > 1:
            return self.name.split(None, 1)[1]
        return None


def _to_patient(value: Patient | Mapping[str, Any]) -> Patient:
    """``patient`` may be given as a dict (as ``book_appointment`` accepts it): structure it
    here; a bad one becomes :class:`_Invalid`, reported with the request's other fields."""
    if isinstance(value, Mapping) and not isinstance(value, Patient):
        try:
            return structure(value, Patient)
        except ValidationError as exc:
            return _Invalid(exc.errors)  # type: ignore[return-value]
    return value


def _offset_problem(start: _dt.datetime, zone_name: str) -> str | None:
    """Why ``start`` contradicts the IANA zone it is said to be in, or None.

    A start with a fixed offset other than UTC must carry the offset the zone has at that
    instant: 10:00-05:00 "in America/New_York" in July (when New York is at -04:00) could mean
    10:00 or 11:00 local, and silently picking one moves the patient by an hour. A UTC start
    (``...Z``) names an instant only and is always consistent.
    """
    offset = start.utcoffset()
    if offset is None or offset == _dt.timedelta(0):
        return None
    expected = start.astimezone(ZoneInfo(zone_name)).utcoffset()
    if expected is None or expected == offset:
        return None
    return (
        f"has the offset {_format_offset(offset)}, but {zone_name} is at {_format_offset(expected)} on that date; "
        "give the local time with the zone's own offset, or a UTC time"
    )


def _format_offset(offset: _dt.timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


@attrs.frozen
class AppointmentRequest:
    """A booking to make.

    ``start`` must be time-zone aware. Give ``end`` or ``duration_minutes`` (default 30); after
    construction ``end`` and ``duration_minutes`` are both set and agree. ``timezone`` (IANA) is
    taken from ``start`` when it carries a ``ZoneInfo``; when both are given, a non-UTC offset
    on ``start`` must be the zone's offset at that instant. ``patient`` is a :class:`Patient`
    or a dict of its fields. ``reference`` is the idempotency key:
    pass your own (a conversation id, say) so a retried request is recognised; one is generated
    otherwise. ``extra`` holds vendor fields merged into the create payload last.
    """

    start: _dt.datetime
    patient: Patient = attrs.field(converter=_to_patient)
    end: _dt.datetime | None = None
    duration_minutes: int | None = None
    timezone: str | None = None
    title: str = "Dental appointment"
    reason: str | None = None
    notes: str | None = None
    location: str | None = None
    reference: str = attrs.field(factory=new_reference)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        errors = _Errors()
        start = _aware(errors, "start", self.start, required=True)
        end = _aware(errors, "end", self.end, required=False)
        duration = _duration(errors, "duration_minutes", self.duration_minutes)
        if isinstance(self.patient, _Invalid):
            for sub, message in self.patient.errors:
                errors.add(f"patient.{sub}" if sub else "patient", message)
        elif self.patient is None:
            errors.add("patient", "is required (with an email or phone)")
        elif not isinstance(self.patient, Patient):
            errors.add("patient", "must be a Patient")
        if start is not None:
            if end is None and self.end is None:
                end = start + _dt.timedelta(minutes=duration or DEFAULT_DURATION_MINUTES)
            if end is not None:
                _check_span(errors, start, end)
                minutes = (end - start).total_seconds() / 60
                if duration is not None and self.end is not None and abs(minutes - duration) > 1e-9:
                    errors.add("duration_minutes", "disagrees with end; give one or the other")
                elif not errors.items:
                    if minutes != int(minutes):
                        errors.add("end", "must fall on a whole minute after start")
                    _set(self, "end", end)
                    _set(self, "duration_minutes", int(minutes))
        timezone = _timezone(errors, "timezone", self.timezone)
        if timezone is None and start is not None and self.timezone is None:
            timezone = _zone_name(start)
        elif timezone is not None and start is not None:
            problem = _offset_problem(start, timezone)
            if problem is not None:
                errors.add("start", problem)
        _set(self, "timezone", timezone)
        _set(self, "title", _text(errors, "title", self.title, max_len=200, required=True))
        _set(self, "reason", _text(errors, "reason", self.reason, max_len=500))
        _set(self, "notes", _text(errors, "notes", self.notes, max_len=4000, multiline=True))
        _set(self, "location", _text(errors, "location", self.location, max_len=255))
        if not isinstance(self.reference, str) or not _REFERENCE.fullmatch(self.reference):
            errors.add(
                "reference", "must be 1-64 letters, digits, '_', '-', '.' or ':' starting with a letter or digit"
            )
        _check_extra(errors, self.extra)
        errors.raise_if_any()

    @property
    def end_time(self) -> _dt.datetime:
        """``end``, which construction always fills in."""
        assert self.end is not None
        return self.end


def _check_extra(errors: _Errors, extra: object) -> None:
    if not isinstance(extra, Mapping):
        errors.add("extra", "must be an object of vendor field names to values")
        return
    for key in extra:
        if not isinstance(key, str) or not key or len(key) > 100:
            errors.add("extra", "keys must be non-empty field names")
            return
    try:
        json.dumps(dict(extra), allow_nan=False)
    except (TypeError, ValueError):
        errors.add("extra", "values must be JSON (strings, numbers, booleans, null, lists, objects)")


@attrs.frozen
class AppointmentUpdate:
    """Changes to an existing appointment; ``None`` means "unchanged".

    A new ``start`` needs ``end`` or ``duration_minutes`` too, so the appointment's length is
    always explicit (a reschedule must not silently shorten a 60-minute appointment).
    """

    start: _dt.datetime | None = None
    end: _dt.datetime | None = None
    duration_minutes: int | None = None
    timezone: str | None = None
    title: str | None = None
    notes: str | None = None
    location: str | None = None

    def __attrs_post_init__(self) -> None:
        errors = _Errors()
        start = _aware(errors, "start", self.start, required=False)
        end = _aware(errors, "end", self.end, required=False)
        duration = _duration(errors, "duration_minutes", self.duration_minutes)
        if start is not None and end is None and self.end is None:
            if duration is None:
                errors.add(
                    "end",
                    "is required with a new start (or give duration_minutes) so the "
                    "appointment's length stays explicit",
                )
            else:
                end = start + _dt.timedelta(minutes=duration)
                _set(self, "end", end)
        if start is not None and end is not None:
            _check_span(errors, start, end)
            if duration is not None and self.end is not None and start + _dt.timedelta(minutes=duration) != end:
                errors.add("duration_minutes", "disagrees with end; give one or the other")
            elif not errors.items:
                _set(self, "duration_minutes", int((end - start).total_seconds() // 60))
        elif start is None and duration is not None and end is None:
            errors.add("duration_minutes", "can only change together with start")
        timezone = _timezone(errors, "timezone", self.timezone)
        if timezone is None and start is not None and self.timezone is None:
            timezone = _zone_name(start)
        elif timezone is not None and start is not None:
            problem = _offset_problem(start, timezone)
            if problem is not None:
                errors.add("start", problem)
        _set(self, "timezone", timezone)
        _set(self, "title", _text(errors, "title", self.title, max_len=200))
        _set(self, "notes", _text(errors, "notes", self.notes, max_len=4000, multiline=True))
        _set(self, "location", _text(errors, "location", self.location, max_len=255))
        if not errors.items and self.is_empty():
            errors.add("", "no changes given; set at least one of start, end, title, notes, location")
        errors.raise_if_any()

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("start", "end", "title", "notes", "location"))

    @property
    def changes_time(self) -> bool:
        return self.start is not None or self.end is not None


@attrs.frozen(repr=False)
class Appointment:
    """A booking as the vendor holds it.

    ``id`` is opaque and enough to update or cancel the booking without another look-up.
    ``raw`` keeps the parsed vendor responses for callers who need a vendor-specific field.
    """

    provider: ProviderName
    id: str
    status: AppointmentStatus
    start: _dt.datetime | None
    end: _dt.datetime | None
    reference: str | None = None
    contact_id: str | None = None
    title: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def _rows(self) -> list[tuple[str, str]]:
        when = "unknown"
        if self.start is not None:
            when = self.start.strftime("%a %Y-%m-%d %H:%M")
            if self.end is not None:
                when += self.end.strftime("-%H:%M")
            when += f" {self.start.strftime('%z') or ''}".rstrip()
        return [
            ("provider", self.provider.value),
            ("id", self.id),
            ("status", self.status.value),
            ("when", when),
            ("title", self.title or ""),
            ("reference", self.reference or ""),
            ("contact", self.contact_id or ""),
        ]

    def __str__(self) -> str:
        return text_table([(k, v) for k, v in self._rows() if v])

    def __repr__(self) -> str:
        rows = dict(self._rows())
        ref = f" ref={self.reference}" if self.reference else ""
        return f"<Appointment {rows['provider']} {self.id} {rows['status']} {rows['when']}{ref}>"

    def _repr_html_(self) -> str:
        return html_table(["Appointment", ""], [(k, v) for k, v in self._rows() if v])


@attrs.frozen
class PerformanceReport:
    """Analytics for a period, e.g. calls handled, bookings made, conversion.

    ``report_id`` is stable for the period by default (``pms-report-<start>-<end>``), so pushing
    the same report again updates the vendor record instead of adding another.
    """

    period_start: _dt.date
    period_end: _dt.date
    metrics: Mapping[str, float]
    title: str | None = None
    summary: str | None = None
    report_id: str | None = None

    def __attrs_post_init__(self) -> None:
        errors = _Errors()
        dates_ok = True
        for field in ("period_start", "period_end"):
            value = getattr(self, field)
            if isinstance(value, _dt.datetime):
                value = value.date()
                _set(self, field, value)
            if not isinstance(value, _dt.date):
                errors.add(field, "must be a date (YYYY-MM-DD)")
                dates_ok = False
            elif not _in_range(value):
                errors.add(field, f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
                dates_ok = False
        if dates_ok and self.period_end < self.period_start:
            errors.add("period_end", "must not be before period_start")
        metrics = self.metrics
        if not isinstance(metrics, Mapping):
            errors.add("metrics", "must be an object of metric names to numbers")
        elif not metrics:
            errors.add("metrics", "must contain at least one metric")
        elif len(metrics) > 100:
            errors.add("metrics", "must contain at most 100 metrics")
        else:
            clean: dict[str, float] = {}
            for key, value in metrics.items():
                if not isinstance(key, str) or not _METRIC_NAME.fullmatch(key):
                    errors.add(
                        "metrics", f"metric name {str(key)[:40]!r} must be 1-64 letters, digits, spaces or _.%/()-"
                    )
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
                    errors.add(f"metrics.{key}", "must be a finite number")
                    continue
                clean[key] = value
            _set(self, "metrics", clean)
        _set(self, "title", _text(errors, "title", self.title, max_len=200))
        _set(self, "summary", _text(errors, "summary", self.summary, max_len=2000, multiline=True))
        report_id = self.report_id
        if report_id is None and dates_ok:
            report_id = f"pms-report-{self.period_start.isoformat()}-{self.period_end.isoformat()}"
        elif report_id is not None and (not isinstance(report_id, str) or not _REFERENCE.fullmatch(report_id)):
            errors.add(
                "report_id", "must be 1-64 letters, digits, '_', '-', '.' or ':' starting with a letter or digit"
            )
        _set(self, "report_id", report_id)
        if self.title is None and dates_ok:
            _set(
                self,
                "title",
                f"AI receptionist report {self.period_start.isoformat()} to {self.period_end.isoformat()}",
            )
        errors.raise_if_any()

    @property
    def id(self) -> str:
        """``report_id``, which construction always fills in."""
        assert self.report_id is not None
        return self.report_id

    def render_text(self) -> str:
        """A plain-text rendering for notes and task descriptions: title, period, metrics."""
        width = max(len(k) for k in self.metrics)
        lines = [
            str(self.title),
            f"Period: {self.period_start.isoformat()} to {self.period_end.isoformat()}",
            "",
        ]
        if self.summary:
            lines += [self.summary, ""]
        for key, value in self.metrics.items():
            lines.append(f"{key.ljust(width)}  {_format_number(value)}")
        lines += ["", f"Report id: {self.report_id}"]
        return "\n".join(lines)

    def metrics_json(self) -> str:
        """The metrics as compact, key-sorted JSON."""
        return json.dumps(dict(self.metrics), sort_keys=True, separators=(",", ":"))


def _finite(value: float) -> bool:
    """Finite and representable as a float (a huge int overflows, and JSON readers choke)."""
    try:
        return math.isfinite(value) and abs(float(value)) < 1e300
    except OverflowError:
        return False


def _format_number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"


@attrs.frozen(repr=False)
class ReportReceipt:
    """Where a performance report landed. ``created`` is false when an earlier push was updated."""

    provider: ProviderName
    id: str
    report_id: str
    created: bool = True
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def _rows(self) -> list[tuple[str, str]]:
        return [
            ("provider", self.provider.value),
            ("id", self.id),
            ("report id", self.report_id),
            ("action", "created" if self.created else "updated"),
        ]

    def __str__(self) -> str:
        return text_table(self._rows())

    def __repr__(self) -> str:
        action = "created" if self.created else "updated"
        return f"<ReportReceipt {self.provider.value} {self.id} {action} report_id={self.report_id}>"

    def _repr_html_(self) -> str:
        return html_table(["Report receipt", ""], self._rows())


@attrs.frozen
class ProviderStatus:
    """Whether a provider is usable, and if not, which variables to set or fix. Never a secret."""

    name: ProviderName
    enabled: bool
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    api_version: str | None = None
    base_url: str | None = None

    @property
    def detail(self) -> str:
        """Where it points when enabled; what to set or fix when not."""
        if self.enabled:
            return f"API {self.api_version} at {self.base_url}"
        why = []
        if self.missing:
            why.append("missing " + ", ".join(self.missing))
        why.extend(self.problems)
        return "; ".join(why)

    def row(self) -> tuple[str, str, str]:
        return (self.name.value, "enabled" if self.enabled else "disabled", self.detail)

    def __str__(self) -> str:
        return f"{self.name.value}: {'enabled' if self.enabled else 'disabled'} ({self.detail})"

    def _repr_html_(self) -> str:
        return html_table(["provider", "status", "detail"], [self.row()])


class ProviderStatusList(list[ProviderStatus]):
    """What ``providers()`` returns: a plain list that prints as a table."""

    def __str__(self) -> str:
        return text_table([("PROVIDER", "STATUS", "DETAIL"), *(s.row() for s in self)])

    def __repr__(self) -> str:
        # what a plain REPL prints for ``pms.providers()``: the table, one provider a line
        # (notebooks use _repr_html_ instead)
        return str(self)

    def _repr_html_(self) -> str:
        return html_table(["provider", "status", "detail"], [s.row() for s in self])


# ---------------------------------------------------------------------------------------------
# converter


def _parse_datetime(value: object, _: object) -> object:
    """ISO-8601 text to ``datetime``; anything else is passed on for the model to reject."""
    parsed = parse_iso_datetime(value)
    return value if parsed is None else parsed


def _parse_date(value: object, _: object) -> object:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, str) and len(value) <= 40:
        try:
            return _dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return value
    return value


def _as_is(value: object, _: object) -> object:
    """Leaf values pass through unchanged; each model checks its own field types, so every
    bad field is reported together with the model's other checks."""
    return value


def _provider_name(value: object, _: object) -> ProviderName:
    return ProviderName.parse(value)


class _Invalid:
    """Stands in for a nested model whose input was invalid; carries its errors upward."""

    __slots__ = ("errors",)

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors


def _make_converter() -> cattrs.Converter:
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(_dt.datetime, _parse_datetime)
    conv.register_structure_hook(_dt.date, _parse_date)
    for leaf in (str, int, float, bool):
        conv.register_structure_hook(leaf, _as_is)
    conv.register_structure_hook_func(lambda t: t in (Mapping[str, Any], Mapping[str, float]), _as_is)
    conv.register_structure_hook(ProviderName, _provider_name)
    for model in (Patient, AppointmentRequest, AppointmentUpdate, PerformanceReport):
        conv.register_structure_hook(model, _model_hook(conv, model))
    conv.register_unstructure_hook(_dt.datetime, lambda d: d.isoformat())
    conv.register_unstructure_hook(_dt.date, lambda d: d.isoformat())
    conv.register_unstructure_hook(ProviderName, lambda p: p.value)
    conv.register_unstructure_hook(AppointmentStatus, lambda s: s.value)
    return conv


def _model_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    """Structure one input model, never raising: failures come back as :class:`_Invalid`.

    Unknown keys are reported and dropped, missing required keys become ``None`` (which the
    model reports as "is required"), then cattrs builds the model and the model's own checks
    run - so one error lists unknown keys, missing keys, bad types and bad values together.
    """
    import cattrs.gen
    from cattrs.errors import BaseValidationError

    base: Callable[[Any, Any], Any] = cattrs.gen.make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
    fields = attrs.fields(cls)
    known = {f.name for f in fields}

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            return _Invalid([("", f"must be an object ({with_article(cls.__name__)} or a dict)")])
        errors = [(str(k), "is not a known field") for k in value if k not in known]
        data = {k: v for k, v in value.items() if k in known}
        for f in fields:
            if f.name not in data and f.default is attrs.NOTHING:
                data[f.name] = None
        try:
            result = base(data, cls)
        except ValidationError as exc:
            return _Invalid(errors + exc.errors)
        except (BaseValidationError, ValueError, TypeError, KeyError, ArithmeticError) as exc:
            return _Invalid(errors + _flatten(exc, ""))
        if errors:
            return _Invalid(errors)
        return result

    return hook


_converter: cattrs.Converter | None = None


def get_converter() -> cattrs.Converter:
    """The one converter for dict input and JSON-ready output (built on first use, so that
    ``import pms_integration`` does not pay for cattrs)."""
    global _converter
    if _converter is None:
        _converter = _make_converter()
    return _converter


def __getattr__(name: str) -> Any:
    if name == "converter":
        return get_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _join(path: str, segment: str) -> str:
    if not path:
        return segment
    if segment.startswith("["):
        return path + segment
    return f"{path}.{segment}"


def _flatten(exc: BaseException, path: str) -> list[tuple[str, str]]:
    from cattrs.errors import (
        AttributeValidationNote,
        BaseValidationError,
        ForbiddenExtraKeysError,
        IterableValidationNote,
    )

    if isinstance(exc, ValidationError):
        return [(_join(path, p) if p else path, m) for p, m in exc.errors]
    if isinstance(exc, ForbiddenExtraKeysError):
        return [(_join(path, str(k)), "is not a known field") for k in sorted(exc.extra_fields, key=str)]
    if isinstance(exc, BaseValidationError):
        out: list[tuple[str, str]] = []
        for sub in exc.exceptions:
            seg = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    seg = _join(path, note.name)
                elif isinstance(note, IterableValidationNote):
                    seg = _join(path, str(note.index))
            if isinstance(sub, KeyError) and seg != path:
                out.append((seg, "is required"))
            else:
                out.extend(_flatten(sub, seg))
        return out
    if isinstance(exc, (ValueError, TypeError)):
        message = str(exc) if isinstance(exc, ValueError) and str(exc) else "has the wrong type"
        return [(path, message)]
    return [(path, f"is invalid ({type(exc).__name__})")]


def structure(data: object, cls: type[T], *, path: str = "") -> T:
    """Build ``cls`` from ``data`` (a dict, or already a ``cls``).

    Any problem - unknown keys, missing keys, wrong types, failed checks - becomes one
    :class:`ValidationError` listing every bad field path.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ValidationError.single(path, f"must be an object ({with_article(cls.__name__)} or a dict)")
    from cattrs.errors import BaseValidationError, ForbiddenExtraKeysError

    try:
        result = get_converter().structure(dict(data), cls)
    except ValidationError as exc:
        raise ValidationError(_flatten(exc, path)) from None
    except (BaseValidationError, ForbiddenExtraKeysError, ValueError, TypeError, KeyError) as exc:
        raise ValidationError(_flatten(exc, path)) from None
    if isinstance(result, _Invalid):
        raise ValidationError([(_join(path, p) if p else path, m) for p, m in result.errors])
    return result


def unstructure(obj: object) -> Any:
    """A JSON-ready representation (dicts, lists, strings, numbers) of a model."""
    return get_converter().unstructure(obj)
