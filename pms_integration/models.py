"""The neutral data model every adapter speaks, and :func:`structure` for dict/JSON input.

Input models are frozen attrs classes: converters normalise each field, each field's ``check``
says what is wrong with it, and one post-init adds the cross-field rules, so one
:class:`~pms_integration.errors.ValidationError` lists every bad field. See ``docs/api.md``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast
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
    "Slot",
    "SlotList",
    "PatientRecord",
    "PatientList",
    "AppointmentList",
    "SlotQuery",
    "PatientQuery",
    "AppointmentQuery",
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
    "MAX_SLOT_WINDOW_DAYS",
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
#: The longest window one free-slot search may cover (GoHighLevel's own limit is 31 days).
MAX_SLOT_WINDOW_DAYS = 31
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


_LABELS = dict(zip(ProviderName, ("GoHighLevel", "Salesforce", "HubSpot"), strict=True))
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
            field, "must be 1-128 characters of letters, digits, '_', '-', '.', ':' starting with a letter or digit"
        )
    return value


def check_not_past(start: _dt.datetime | None, now: _dt.datetime | None = None, *, field: str = "start") -> None:
    """Raise :class:`ValidationError` naming ``field`` when ``start`` lies more than
    :data:`PAST_ALLOWANCE_MINUTES` before ``now`` (default: the current time). Applied when
    booking or moving a booking, not when a model is built (a booking read back may be past)."""
    if start is None:
        return
    current = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    if start < current - _dt.timedelta(minutes=PAST_ALLOWANCE_MINUTES):
        raise ValidationError.single(
            field, f"is in the past ({start.isoformat()}); appointments can only be booked or moved to a future time"
        )


# ---------------------------------------------------------------------------------------------
# fields: a converter normalises the value; a check (value -> what is wrong, or None) judges it

_Check = Callable[[Any], "str | None"]


def _same(value: object) -> object:
    return value


def _meta(check: _Check, parse: Callable[[Any], Any] = _same) -> dict[str, Any]:
    """Field metadata: the ``check``, and how :func:`structure` reads the field from JSON."""
    return {"check": check, "parse": parse}


def _field(check: _Check, **kwargs: Any) -> Any:
    return attrs.field(metadata=_meta(check), **kwargs)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _strip_or_none(value: Any) -> Any:
    return (value.strip() or None) if isinstance(value, str) else value


def _text_check(max_len: int, *, required: bool = False, multiline: bool = False) -> _Check:
    control = _CONTROL_EXCEPT_NEWLINE if multiline else _CONTROL

    def check(value: object) -> str | None:
        if value is None:
            return "is required" if required else None
        if not isinstance(value, str):
            return "must be a string"
        if not value:
            return "must not be empty"
        if len(value) > max_len:
            return f"must be at most {max_len} characters (got {len(value)})"
        return "must not contain control characters" if control.search(value) else None

    return check


def _text(max_len: int, *, default: str | None = None, multiline: bool = False) -> Any:
    """Free text, stripped. With a default (a title) it must not be blank; otherwise blank is None."""
    check = _text_check(max_len, required=default is not None, multiline=multiline)
    return _field(check, default=default, converter=_strip if default is not None else _strip_or_none)


def _matching(pattern: re.Pattern[str], rule: str, *, optional: bool = True) -> _Check:
    def check(value: object) -> str | None:
        if (value is None and optional) or (isinstance(value, str) and pattern.fullmatch(value)):
            return None
        return f"must be {rule}"

    return check


_REFERENCE_RULE = "1-64 letters, digits, '_', '-', '.' or ':' starting with a letter or digit"


def _check_email(value: object) -> str | None:
    problem = _text_check(254)(value)
    if problem or value is None or _EMAIL.fullmatch(str(value)):
        return problem
    return "is not a valid e-mail address"


def _compact_phone(value: Any) -> Any:
    """``+1 (555) 555-0123`` and ``0044 20...`` to E.164; anything else is left for the check."""
    if not isinstance(value, str):
        return value
    compact = _PHONE_SEPARATORS.sub("", value)
    return "+" + compact[2:] if compact.startswith("00") else compact


def _check_phone(value: object) -> str | None:
    if value is None or (isinstance(value, str) and _E164.fullmatch(value)):
        return None
    return (
        "must be an E.164 number with country code, e.g. +15555550123" if isinstance(value, str) else "must be a string"
    )


def _parse_datetime(value: object) -> object:
    """ISO-8601 text to ``datetime``; anything else is passed on for the check to reject."""
    parsed = parse_iso_datetime(value)
    return value if parsed is None else parsed


def _aware(*, required: bool = False) -> _Check:
    def check(value: object) -> str | None:
        if value is None:
            return "is required" if required else None
        if not isinstance(value, _dt.datetime):
            return "must be an ISO-8601 date-time with offset, e.g. 2026-12-01T10:00:00-05:00"
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            return "must include a time zone (e.g. 2026-12-01T10:00:00-05:00); naive times are ambiguous"
        return None if _in_range(value) else f"must be between the years {MIN_YEAR} and {MAX_YEAR}"

    return check


def _in_range(value: _dt.date) -> bool:
    """Within the years a booking or report can sensibly have (and safely converted to UTC)."""
    if isinstance(value, _dt.datetime):
        try:
            value = value.astimezone(_dt.timezone.utc)
        except OverflowError:
            return False
    return MIN_YEAR <= value.year <= MAX_YEAR


def _check_minutes(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be a whole number of minutes"
    if MIN_DURATION_MINUTES <= value <= MAX_DURATION_MINUTES:
        return None
    return f"must be between {MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES} minutes"


def _check_zone(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        return "must be an IANA time zone name such as 'America/New_York'"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"is not a known IANA time zone: {value[:64]!r}"
    return None


def named_timezone(timezone: str | None, start: _dt.datetime | None) -> str | None:
    """The zone a request or update *names*, or None when it was only derived from a ``...Z``
    start ("UTC" says nothing about the practice, so adapters let the practice's or the
    booking's zone win). A start carrying a ``ZoneInfo`` (even ``ZoneInfo("UTC")``) names its zone."""
    if not timezone:
        return None
    derived = start is not None and not isinstance(start.tzinfo, ZoneInfo) and start.utcoffset() == _dt.timedelta(0)
    return None if timezone == "UTC" and derived else timezone


def _zone_name(value: _dt.datetime | None) -> str | None:
    tz = None if value is None else value.tzinfo
    if isinstance(tz, ZoneInfo):
        return tz.key
    return "UTC" if tz is _dt.timezone.utc else None


def _offset_problem(start: _dt.datetime, zone_name: str) -> str | None:
    """Why ``start`` contradicts the IANA zone it is said to be in, or None. 10:00-05:00 "in
    America/New_York" in July (-04:00) could mean 10:00 or 11:00 local: guessing moves the patient
    by an hour. A UTC start (``...Z``) names an instant only and always agrees."""
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


def _check_extra(extra: object) -> str | None:
    if not isinstance(extra, Mapping):
        return "must be an object of vendor field names to values"
    if any(not isinstance(key, str) or not key or len(key) > 100 for key in extra):
        return "keys must be non-empty field names"
    try:
        json.dumps(dict(extra), allow_nan=False)
    except (TypeError, ValueError):
        return "values must be JSON (strings, numbers, booleans, null, lists, objects)"
    return None


class _Problems(list[tuple[str, str]]):
    """A model's bad fields as ``(path, message)``: every field's own check, then the cross-field
    rules of its ``__attrs_post_init__``. A check may raise ValidationError for nested paths."""

    def __init__(self, model: attrs.AttrsInstance) -> None:
        super().__init__()
        self.model = model
        for field in attrs.fields(type(model)):
            try:
                problem = field.metadata["check"](getattr(model, field.name))
            except ValidationError as exc:
                self.extend((f"{field.name}.{path}" if path else field.name, m) for path, m in exc.errors)
            else:
                if problem:
                    self.append((field.name, problem))

    def valid(self, name: str) -> Any:
        """The field's value if it passed its check, else None."""
        bad = any(path == name or path.startswith(name + ".") for path, _ in self)
        return None if bad else getattr(self.model, name)

    def check_span(self, start: _dt.datetime, end: _dt.datetime, duration: int | None, *, whole: bool) -> None:
        """A given ``end`` against ``start`` (and a given ``duration_minutes``)."""
        minutes = (end - start).total_seconds() / 60
        if end <= start:
            self.append(("end", "must be after start"))
        elif not MIN_DURATION_MINUTES <= minutes <= MAX_DURATION_MINUTES:
            bounds = f"{MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES}"
            self.append(("end", f"gives a duration of {minutes:g} minutes; it must be between {bounds}"))
        if duration is not None and minutes != duration:
            self.append(("duration_minutes", "disagrees with end; give one or the other"))
        elif whole and minutes != int(minutes) and MIN_DURATION_MINUTES <= minutes <= MAX_DURATION_MINUTES:
            self.append(("end", "must fall on a whole minute after start"))

    def check_zone(self, start: _dt.datetime | None) -> None:
        zone = self.valid("timezone")
        problem = _offset_problem(start, zone) if zone and start is not None else None
        if problem:
            self.append(("start", problem))

    def raise_if_any(self) -> None:
        if self:
            raise ValidationError(self)


def _fill(model: object, **derived: object) -> None:
    """Set the values a model derives from its other fields (end, time zone, report id...):
    the one place a frozen model is written after its checks passed."""
    for name, value in derived.items():
        object.__setattr__(model, name, value)


def _minutes(start: _dt.datetime | None, end: _dt.datetime | None, otherwise: int | None) -> int | None:
    return otherwise if start is None or end is None else int((end - start).total_seconds() // 60)


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

    name: str | None = _text(100)
    first_name: str | None = _text(100)
    last_name: str | None = _text(100)
    email: str | None = _field(_check_email, default=None, converter=_strip_or_none)
    phone: str | None = _field(_check_phone, default=None, converter=_compact_phone)
    contact_id: str | None = _field(_matching(_CONTACT_ID, "1-64 letters, digits, '_' or '-'"), default=None)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        if not problems and self.email is None and self.phone is None:
            problems.append(("email", "an e-mail address or a phone number is required"))
        problems.raise_if_any()

    @property
    def display_name(self) -> str:
        """The best human-readable name available (may fall back to the e-mail or phone)."""
        if self.name:
            return self.name
        joined = " ".join(p for p in (self.first_name, self.last_name) if p)
        return joined or self.email or self.phone or "Patient"

    @property
    def given_name(self) -> str | None:
        return self.first_name or (self.name.split()[0] if self.name else None)

    @property
    def family_name(self) -> str | None:
        parts = (self.name or "").split(None, 1)
        return self.last_name or (parts[1] if len(parts) > 1 else None)


def _to_patient(value: Patient | Mapping[str, Any]) -> Patient:
    """``patient`` may be a dict (as ``book_appointment`` accepts it); a bad one stays a dict."""
    if isinstance(value, Mapping):
        try:
            return structure(value, Patient)
        except ValidationError:
            pass
    return value  # type: ignore[return-value]


def _check_patient(value: object) -> str | None:
    if isinstance(value, Mapping):
        structure(value, Patient)  # raises the dict's errors, reported under "patient."
    if value is None:
        return "is required (with an email or phone)"
    return None if isinstance(value, Patient) else "must be an object (a Patient or a dict)"


@attrs.frozen
class AppointmentRequest:
    """A booking to make.

    ``start`` must be time-zone aware. Give ``end`` or ``duration_minutes`` (default 30); after
    construction both are set and agree. ``timezone`` (IANA) defaults to ``start``'s ``ZoneInfo``.
    ``reference`` is the idempotency key: pass your own (a conversation id, say) so a retried
    request is recognised. ``extra`` holds vendor fields merged into the create payload last.
    """

    start: _dt.datetime = attrs.field(metadata=_meta(_aware(required=True), _parse_datetime))
    patient: Patient = attrs.field(converter=_to_patient, metadata=_meta(_check_patient))
    end: _dt.datetime | None = attrs.field(default=None, metadata=_meta(_aware(), _parse_datetime))
    duration_minutes: int | None = _field(_check_minutes, default=None)
    timezone: str | None = _field(_check_zone, default=None)
    title: str = _text(200, default="Dental appointment")
    reason: str | None = _text(500)
    notes: str | None = _text(4000, multiline=True)
    location: str | None = _text(255)
    reference: str = _field(_matching(_REFERENCE, _REFERENCE_RULE, optional=False), factory=new_reference)
    extra: Mapping[str, Any] = _field(_check_extra, factory=dict)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        start, end, duration = problems.valid("start"), problems.valid("end"), problems.valid("duration_minutes")
        if start is not None and self.end is None:
            end = start + _dt.timedelta(minutes=duration or DEFAULT_DURATION_MINUTES)
        elif start is not None and end is not None:
            problems.check_span(start, end, duration, whole=True)
        problems.check_zone(start)
        problems.raise_if_any()
        _fill(self, end=end, duration_minutes=_minutes(start, end, None), timezone=self.timezone or _zone_name(start))

    @property
    def end_time(self) -> _dt.datetime:
        """``end``, which construction always fills in."""
        assert self.end is not None
        return self.end


@attrs.frozen
class AppointmentUpdate:
    """Changes to an existing appointment; ``None`` means "unchanged".

    A new ``start`` needs ``end`` or ``duration_minutes`` too, so the appointment's length is
    always explicit (a reschedule must not silently shorten a 60-minute appointment).
    """

    start: _dt.datetime | None = attrs.field(default=None, metadata=_meta(_aware(), _parse_datetime))
    end: _dt.datetime | None = attrs.field(default=None, metadata=_meta(_aware(), _parse_datetime))
    duration_minutes: int | None = _field(_check_minutes, default=None)
    timezone: str | None = _field(_check_zone, default=None)
    title: str | None = _text(200)
    notes: str | None = _text(4000, multiline=True)
    location: str | None = _text(255)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        start, end, duration = problems.valid("start"), problems.valid("end"), problems.valid("duration_minutes")
        if start is not None and self.end is None:
            if duration is None:
                message = (
                    "is required with a new start (or give duration_minutes) so the appointment's length stays explicit"
                )
                problems.append(("end", message))
            else:
                end = start + _dt.timedelta(minutes=duration)
        elif start is not None and end is not None:
            problems.check_span(start, end, duration, whole=False)
        elif start is None and duration is not None and end is None:
            problems.append(("duration_minutes", "can only change together with start"))
        problems.check_zone(start)
        if not problems and self.is_empty():
            problems.append(("", "no changes given; set at least one of start, end, title, notes, location"))
        problems.raise_if_any()
        duration_minutes = _minutes(start, end, self.duration_minutes)
        _fill(self, end=end, duration_minutes=duration_minutes, timezone=self.timezone or _zone_name(start))

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("start", "end", "title", "notes", "location"))

    @property
    def changes_time(self) -> bool:
        return self.start is not None or self.end is not None


def _when(start: _dt.datetime | None, end: _dt.datetime | None) -> str:
    """``Tue 2031-03-04 09:00-09:30 -0500``: a time span as people read it."""
    if start is None:
        return "unknown"
    text = start.strftime("%a %Y-%m-%d %H:%M") + (end.strftime("-%H:%M") if end is not None else "")
    return f"{text} {start.strftime('%z')}".rstrip()


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
        return [
            ("provider", self.provider.value),
            ("id", self.id),
            ("status", self.status.value),
            ("when", _when(self.start, self.end)),
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


def _to_date(value: _dt.date) -> _dt.date:
    return value.date() if isinstance(value, _dt.datetime) else value


def _parse_date(value: object) -> object:
    """``YYYY-MM-DD`` (the date part of longer text) to ``date``; anything else is passed on."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            return _dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    return value


def _check_date(value: object) -> str | None:
    if not isinstance(value, _dt.date):
        return "must be a date (YYYY-MM-DD)"
    return None if _in_range(value) else f"must be between the years {MIN_YEAR} and {MAX_YEAR}"


def _to_dict(value: Mapping[str, float]) -> Mapping[str, float]:
    return dict(value) if isinstance(value, Mapping) else value


def _check_metrics(metrics: object) -> str | None:
    if not isinstance(metrics, Mapping):
        return "must be an object of metric names to numbers"
    if not 1 <= len(metrics) <= 100:
        return "must contain at least one metric" if not metrics else "must contain at most 100 metrics"
    problems = []
    for key, value in metrics.items():
        if not isinstance(key, str) or not _METRIC_NAME.fullmatch(key):
            problems.append(("", f"metric name {str(key)[:40]!r} must be 1-64 letters, digits, spaces or _.%/()-"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            problems.append((key, "must be a finite number"))
    if problems:
        raise ValidationError(problems)
    return None


@attrs.frozen
class PerformanceReport:
    """Analytics for a period, e.g. calls handled, bookings made, conversion.

    ``report_id`` is stable for the period by default (``pms-report-<start>-<end>``), so pushing
    the same report again updates the vendor record instead of adding another.
    """

    period_start: _dt.date = attrs.field(converter=_to_date, metadata=_meta(_check_date, _parse_date))
    period_end: _dt.date = attrs.field(converter=_to_date, metadata=_meta(_check_date, _parse_date))
    metrics: Mapping[str, float] = attrs.field(converter=_to_dict, metadata=_meta(_check_metrics))
    title: str | None = _text(200)
    summary: str | None = _text(2000, multiline=True)
    report_id: str | None = _field(_matching(_REFERENCE, _REFERENCE_RULE), default=None)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        start, end = problems.valid("period_start"), problems.valid("period_end")
        if start is not None and end is not None and end < start:
            problems.append(("period_end", "must not be before period_start"))
        problems.raise_if_any()
        _fill(
            self,
            report_id=self.report_id or f"pms-report-{start.isoformat()}-{end.isoformat()}",
            title=self.title or f"AI receptionist report {start.isoformat()} to {end.isoformat()}",
        )

    @property
    def id(self) -> str:
        """``report_id``, which construction always fills in."""
        assert self.report_id is not None
        return self.report_id

    def render_text(self) -> str:
        """A plain-text rendering for notes and task descriptions: title, period, metrics."""
        width = max(len(k) for k in self.metrics)
        lines = [str(self.title), f"Period: {self.period_start.isoformat()} to {self.period_end.isoformat()}", ""]
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


# ---------------------------------------------------------------------------------------------
# scheduling reads: what goes in (queries) and what comes out (slots, patients, lists)


def _check_flag(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _window_problems(problems: _Problems, *, longest: int | None = None) -> None:
    start, end = problems.valid("start"), problems.valid("end")
    if start is None or end is None:
        return
    if end <= start:
        problems.append(("end", "must be after start"))
    elif longest is not None and end - start > _dt.timedelta(days=longest):
        problems.append(("end", f"must be at most {longest} days after start (search a longer range in parts)"))


@attrs.frozen
class SlotQuery:
    """A window to search for free slots, and the length of the appointment to fit in it.

    ``start`` and ``end`` are aware (or ISO-8601 text with an offset) and at most
    :data:`MAX_SLOT_WINDOW_DAYS` apart; ``duration_minutes`` defaults to 30.
    """

    start: _dt.datetime = attrs.field(metadata=_meta(_aware(required=True), _parse_datetime))
    end: _dt.datetime = attrs.field(metadata=_meta(_aware(required=True), _parse_datetime))
    duration_minutes: int = _field(_check_minutes, default=DEFAULT_DURATION_MINUTES)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        _window_problems(problems, longest=MAX_SLOT_WINDOW_DAYS)
        problems.raise_if_any()
        _fill(self, duration_minutes=self.duration_minutes or DEFAULT_DURATION_MINUTES)

    @property
    def duration(self) -> _dt.timedelta:
        return _dt.timedelta(minutes=self.duration_minutes)


@attrs.frozen
class PatientQuery:
    """Who to look for: an e-mail address, a phone number (normalised to E.164), or both."""

    email: str | None = _field(_check_email, default=None, converter=_strip_or_none)
    phone: str | None = _field(_check_phone, default=None, converter=_compact_phone)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        if not problems and self.email is None and self.phone is None:
            problems.append(("email", "give an e-mail address or a phone number to search by"))
        problems.raise_if_any()


@attrs.frozen
class AppointmentQuery:
    """Which appointments to find: a patient's (by e-mail or phone), or the one a conversation
    booked (by ``reference``), optionally in a window. Without ``start``, only upcoming ones."""

    email: str | None = _field(_check_email, default=None, converter=_strip_or_none)
    phone: str | None = _field(_check_phone, default=None, converter=_compact_phone)
    reference: str | None = _field(_matching(_REFERENCE, _REFERENCE_RULE), default=None)
    start: _dt.datetime | None = attrs.field(default=None, metadata=_meta(_aware(), _parse_datetime))
    end: _dt.datetime | None = attrs.field(default=None, metadata=_meta(_aware(), _parse_datetime))
    include_cancelled: bool = _field(_check_flag, default=False)

    def __attrs_post_init__(self) -> None:
        problems = _Problems(self)
        if not problems and self.email is None and self.phone is None and self.reference is None:
            problems.append(("email", "give an e-mail address, a phone number or a booking reference"))
        _window_problems(problems)
        problems.raise_if_any()

    def window(self, now: _dt.datetime | None = None) -> tuple[_dt.datetime, _dt.datetime]:
        """The window to search: ``start`` (default: now, less the past allowance) to ``end``
        (default: a year and a day after it)."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        start = self.start or now - _dt.timedelta(minutes=PAST_ALLOWANCE_MINUTES)
        return start, self.end or start + _dt.timedelta(days=366)


@attrs.frozen(repr=False)
class Slot:
    """A free slot: ``start`` and ``end`` are aware, in the practice's time zone."""

    provider: ProviderName
    start: _dt.datetime
    end: _dt.datetime

    @property
    def duration_minutes(self) -> int:
        # through UTC: two datetimes sharing a ZoneInfo subtract by wall clock, wrong across a DST change
        utc = _dt.timezone.utc
        return int((self.end.astimezone(utc) - self.start.astimezone(utc)).total_seconds() // 60)

    def row(self) -> tuple[str, str, str]:
        return (self.provider.value, _when(self.start, self.end), f"{self.duration_minutes} min")

    def __str__(self) -> str:
        return _when(self.start, self.end)

    def __repr__(self) -> str:
        return f"<Slot {self.provider.value} {_when(self.start, self.end)}>"

    def _repr_html_(self) -> str:
        return html_table(["provider", "when", "length"], [self.row()])


@attrs.frozen(repr=False)
class PatientRecord:
    """A patient as the vendor holds them: the vendor's id (usable as ``patient.contact_id``
    when booking), and the name, e-mail and phone it has. ``kind`` is the vendor's record type
    (``contact``, or ``lead`` on Salesforce)."""

    provider: ProviderName
    id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    kind: str = "contact"
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def row(self) -> tuple[str, str, str, str, str]:
        return (self.provider.value, self.id, self.name or "", self.email or "", self.phone or "")

    def __str__(self) -> str:
        return text_table(
            [(k, v) for k, v in zip(("provider", "id", "name", "email", "phone"), self.row(), strict=True) if v]
        )

    def __repr__(self) -> str:
        # no e-mail or phone: a repr ends up in logs and tracebacks
        return f"<PatientRecord {self.provider.value} {self.kind} {self.id}>"

    def _repr_html_(self) -> str:
        return html_table(["provider", "id", "name", "email", "phone"], [self.row()])


class _Rows(list[T]):
    """A plain list that prints as a table (a terminal) and renders as HTML (a notebook)."""

    header: tuple[str, ...] = ()

    def rows(self) -> list[tuple[str, ...]]:
        return [item.row() for item in self]  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return text_table([tuple(h.upper() for h in self.header), *self.rows()]) if self else "(none)"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return html_table(list(self.header), self.rows())


class SlotList(_Rows[Slot]):
    """What ``free_slots()`` returns: the slots in order, printable as a table."""

    header = ("provider", "when", "length")


class PatientList(_Rows[PatientRecord]):
    """What ``find_patient()`` returns."""

    header = ("provider", "id", "name", "email", "phone")


class AppointmentList(_Rows[Appointment]):
    """What ``find_appointments()`` returns: earliest first."""

    header = ("provider", "id", "status", "when", "title", "reference")

    def rows(self) -> list[tuple[str, ...]]:
        return [tuple(v for _, v in a._rows()[:6]) for a in self]


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
        missing = ["missing " + ", ".join(self.missing)] if self.missing else []
        return "; ".join([*missing, *self.problems])

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
# input and output


def structure(data: object, cls: type[T], *, path: str = "") -> T:
    """Build ``cls`` from ``data`` (a dict, or already a ``cls``); ISO-8601 text becomes dates.

    Unknown keys, missing keys, wrong types and failed checks become one :class:`ValidationError`
    listing every bad field's path (under ``path``, when given).
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ValidationError.single(path, f"must be an object ({with_article(cls.__name__)} or a dict)")
    fields = attrs.fields_dict(cast("type[attrs.AttrsInstance]", cls))
    errors = [(str(key), "is not a known field") for key in data if key not in fields]
    values = {name: None for name, field in fields.items() if field.default is attrs.NOTHING}
    values.update((k, fields[k].metadata.get("parse", _same)(v)) for k, v in data.items() if k in fields)
    try:
        result = cls(**values)
    except ValidationError as exc:
        errors += exc.errors
    if errors:
        raise ValidationError((f"{path}.{p}" if path and p else p or path, m) for p, m in errors)
    return result


_converter: cattrs.Converter | None = None


def get_converter() -> cattrs.Converter:
    """The cattrs converter for JSON-ready output (input models structure through :func:`structure`),
    built on first use so that ``import pms_integration`` does not pay for cattrs."""
    global _converter
    if _converter is None:
        from cattrs.preconf.json import make_converter

        _converter = make_converter()
        inputs = (
            Patient,
            AppointmentRequest,
            AppointmentUpdate,
            PerformanceReport,
            SlotQuery,
            PatientQuery,
            AppointmentQuery,
        )
        _converter.register_structure_hook_func(lambda t: t in inputs, structure)
    return _converter


def __getattr__(name: str) -> Any:
    if name == "converter":
        return get_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unstructure(obj: object) -> Any:
    """A JSON-ready representation (dicts, lists, strings, numbers) of a model."""
    return get_converter().unstructure(obj)
