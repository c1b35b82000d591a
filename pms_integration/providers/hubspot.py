"""HubSpot adapter: a booking is a deal plus a meeting, both associated with the patient contact.

Objects and what they carry (the property names and association type ids are the ones in the
vendor note, ``notes/hubspot.md`` sections 3.1-3.5):

* **contact** - the patient. Taken from ``patient.contact_id`` when given; otherwise read by
  e-mail with a batch read (``POST .../contacts/batch/read``, ``idProperty: email`` in the body,
  so no patient identifier is ever in a URL), created when missing, and recovered from a 409
  ``Existing ID: n`` when a concurrent create won the race. A patient known only by phone
  gets a new contact.
* **deal** - the booking in the configured pipeline and stage. ``dealname`` carries the booking
  reference in square brackets, ``closedate`` the start time. When a unique deal property is
  configured (``PMS_HUBSPOT_REFERENCE_PROPERTY``) the deal is written with ``batch/upsert`` keyed
  by the reference, so a repeated booking can never make a second deal.
* **meeting** - the time slot: start, end, title, ``SCHEDULED`` outcome, and a body that
  repeats the booking reference. Associated inline with the contact (200) and the deal (212).
* **note** - a performance report, optionally associated with the practice's company (190).

``Appointment.id`` is ``"<dealId>:<meetingId>"``, so update and cancel go straight to the two
records. Cancel never deletes: the meeting's outcome becomes ``CANCELED`` and the deal moves to
the cancel stage, which keeps both in HubSpot's history and reports.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import BearerAuth, ErrorInfo, HttpResponse, Runtime, Transport
from .._once import create_once
from .._ratelimit import RateLimitInfo
from .._retry import current_deadline, parse_retry_after
from ..config import HubSpotSettings
from ..errors import (
    AppointmentCancelledError,
    ConflictError,
    InvalidRequestError,
    PMSError,
    ProviderError,
    UnexpectedResponseError,
    ValidationError,
)
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    Patient,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
    named_timezone,
    parse_iso_datetime,
)
from ..provider import ALL_CAPABILITIES, Capability, Provider
from ._base import unexpected

__all__ = [
    "HubSpotAdapter",
    "HubSpotErrorParser",
    "HubSpotPaths",
    "create",
    "parse_rate_headers",
    "TOKEN_VARIABLE",
    "DEAL_TO_CONTACT",
    "MEETING_TO_CONTACT",
    "MEETING_TO_DEAL",
    "NOTE_TO_COMPANY",
    "REPORTS_COMPANY_NAME",
    "NOTE_BODY_LIMIT",
]

PROVIDER = ProviderName.HUBSPOT
TOKEN_VARIABLE = "PMS_HUBSPOT_PRIVATE_APP_TOKEN"  # noqa: S105 - the variable's name, not a token

# HUBSPOT_DEFINED association type ids (vendor note section 3.5).
DEAL_TO_CONTACT = 3
MEETING_TO_CONTACT = 200
MEETING_TO_DEAL = 212
NOTE_TO_COMPANY = 190

#: ``hs_note_body`` is "limited to 65,536 characters" (vendor note section 3.4).
NOTE_BODY_LIMIT = 65_536
#: How many of a deal's associated meetings the reconcile step reads before giving up.
MAX_MEETINGS_CHECKED = 10
#: Wait before a second reconcile search: HubSpot search lags writes by "a few moments".
SETTLE_SECONDS = 2.0
#: Search page size for the reconcile look-ups (the search API allows up to 200).
SEARCH_LIMIT = 100
#: HubSpot's search answers at most 10,000 results per query; past that paging is refused.
SEARCH_MAX_RESULTS = 10_000
#: The company report notes are attached to when ``PMS_HUBSPOT_REPORT_COMPANY_ID`` is not set:
#: found by this exact name (or created once), so the reports show on a company record in HubSpot.
REPORTS_COMPANY_NAME = "pms-integration reports"

_ID = re.compile(r"^\d{1,20}$")
_APPOINTMENT_ID = re.compile(r"^(\d{1,20}):(\d{1,20})$")
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d{1,20})")
_BODY_REFERENCE = re.compile(r"Booking reference: \[([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})\]")
_BODY_ZONE = re.compile(r"Booking time zone: \[([A-Za-z0-9_+:/-]{1,64})\]")
_BODY_LOCAL_ZONE = re.compile(r"^Local time: .* \(([A-Za-z0-9_+/-]{1,64})\)$", re.MULTILINE)
_BODY_LOCAL_LINE = re.compile(r"^Local time: .*$", re.MULTILINE)
_OFFSET = re.compile(r"^([+-])(\d\d):(\d\d)$")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_UTC = _dt.timezone.utc
T = TypeVar("T")

_MEETING_PROPERTIES = (
    "hs_timestamp",
    "hs_meeting_title",
    "hs_meeting_body",
    "hs_meeting_start_time",
    "hs_meeting_end_time",
    "hs_meeting_outcome",
)


# ---------------------------------------------------------------------------------------------
# paths


class HubSpotPaths:
    """URL paths for one API version.

    ``v3`` gives the semantic paths (``/crm/v3/objects/deals``, with the v4 associations API);
    a date version such as ``2026-09`` gives ``/crm/objects/2026-09/deals`` and its association
    routes on the same prefix (vendor note section 1.1).
    """

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        self.dated = api_version != "v3"

    def objects(self, object_type: str, *parts: str) -> str:
        base = f"/crm/objects/{self.api_version}/{object_type}" if self.dated else f"/crm/v3/objects/{object_type}"
        return "/".join((base, *parts))

    def search(self, object_type: str) -> str:
        return self.objects(object_type, "search")

    def batch_upsert(self, object_type: str) -> str:
        return self.objects(object_type, "batch", "upsert")

    def default_association(self, from_type: str, from_id: str, to_type: str, to_id: str) -> str:
        """``PUT`` target that creates the unlabelled (default) association between two records."""
        if self.dated:
            return self.objects(from_type, from_id, "associations", "default", to_type, to_id)
        return f"/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}"


# ---------------------------------------------------------------------------------------------
# error bodies and rate-limit headers


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """``X-HubSpot-RateLimit-*`` as a :class:`RateLimitInfo`; ``None`` when none are present.

    Search responses are reported to omit these headers, so the last value seen stays in force.
    """
    h = _lower_keys(headers)
    limit = _int_header(h, "x-hubspot-ratelimit-max")
    remaining = _int_header(h, "x-hubspot-ratelimit-remaining")
    interval_ms = _int_header(h, "x-hubspot-ratelimit-interval-milliseconds")
    if limit is None and remaining is None:
        # Older responses carried a per-second pair instead.
        limit = _int_header(h, "x-hubspot-ratelimit-secondly")
        remaining = _int_header(h, "x-hubspot-ratelimit-secondly-remaining")
        if limit is not None or remaining is not None:
            interval_ms = 1000
    daily = _int_header(h, "x-hubspot-ratelimit-daily")
    daily_remaining = _int_header(h, "x-hubspot-ratelimit-daily-remaining")
    if all(v is None for v in (limit, remaining, daily, daily_remaining)):
        return None
    return RateLimitInfo(
        remaining=remaining,
        limit=limit,
        interval_seconds=interval_ms / 1000 if interval_ms and interval_ms > 0 else None,
        daily_remaining=daily_remaining,
        daily_limit=daily,
    )


def _fields_from_validation_message(message: str) -> list[str]:
    """Property names from the legacy ``Property values were not valid: [...]`` message."""
    start = message.find("[")
    if "not valid" not in message or start < 0:
        return []
    names = re.findall(r'"name"\s*:\s*"([A-Za-z0-9_.-]{1,100})"', message[start:])
    return list(dict.fromkeys(names))


class HubSpotErrorParser:
    """Reads HubSpot's error body ``{status, message, errors[], category, correlationId}``.

    Every field is optional (HubSpot's own advice), and a body that is HTML, empty or not JSON
    still yields a usable :class:`ErrorInfo`. Status-specific rules from the vendor note:

    * 429 with ``policyName`` ``DAILY``: not retried (the quota resets at the account's midnight).
      ``TEN_SECONDLY_ROLLING`` waits 10 s, the search "secondly" limit 1 s, unless ``Retry-After``
      says otherwise.
    * 423 (record locked for about 2 s): retried after at least 2 s, creates included, because a
      locked request was not applied.
    * 477 (account migration in progress): retried after ``Retry-After`` seconds when that is
      within ``max_wait``; otherwise raised at once, naming the wait.
    """

    def __init__(self, max_wait: float = 30.0) -> None:
        self.max_wait = max_wait

    def __call__(self, resp: HttpResponse) -> ErrorInfo:
        body = resp.json_or_none()
        if not isinstance(body, dict):
            body = {}
        message = _text(body.get("message")) or f"HTTP {resp.status}"
        category = _text(body.get("category")) or _text(body.get("errorType"))
        policy = _text(body.get("policyName"))
        headers = _lower_keys(resp.headers)
        request_id = _text(body.get("correlationId")) or headers.get("x-hubspot-correlation-id")
        details: list[str] = []
        fields: list[str] = []
        raw_errors = body.get("errors")
        for item in raw_errors[:20] if isinstance(raw_errors, list) else []:
            if not isinstance(item, dict):
                continue
            text = _text(item.get("message"))
            if text and text not in message and len(details) < 3:
                details.append(text)
            context = item.get("context")
            names = context.get("propertyName") if isinstance(context, dict) else None
            if isinstance(names, list):
                fields.extend(n for n in names if isinstance(n, str))
            elif isinstance(names, str):
                fields.append(names)
        fields.extend(_fields_from_validation_message(message))
        if details:
            message = message.rstrip(". ") + ". " + "; ".join(details)
        code = category
        retryable: bool | None = None
        retry_after: float | None = None
        status = resp.status
        if status == 429:
            code = policy or category
            # a Retry-After header, when HubSpot sends one, is the better guide; these are the
            # windows' lengths for when it does not
            has_header = headers.get("retry-after") is not None
            if policy == "DAILY":
                retryable = False
            elif policy == "TEN_SECONDLY_ROLLING" and not has_header:
                retry_after = 10.0
            elif "secondly limit" in message.lower() and not has_header:
                retry_after = 1.0
        elif status == 423:
            code = category or "LOCKED"
            retryable = True
            retry_after = 2.0
        elif status == 477:
            code = category or "MIGRATION_IN_PROGRESS"
            wait = parse_retry_after(headers.get("retry-after"))
            if wait is not None and wait <= self.max_wait:
                retryable, retry_after = True, max(wait, 0.0)
            else:
                retryable = False
                when = f"{wait:g} s" if wait is not None else "a while (HubSpot says up to 24 hours)"
                message = f"the HubSpot account is being migrated; retry after {when}. {message}"
        return ErrorInfo(
            message,
            code=code,
            fields=tuple(dict.fromkeys(fields)),
            request_id=request_id,
            retryable=retryable,
            retry_after=retry_after,
        )


# ---------------------------------------------------------------------------------------------
# value helpers


def hubspot_time(value: _dt.datetime) -> str:
    """An aware datetime as HubSpot's UTC form, e.g. ``2026-10-05T13:00:00.000Z``."""
    return value.astimezone(_UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_hubspot_time(value: object) -> _dt.datetime | None:
    """HubSpot returns datetimes as ISO strings or as epoch milliseconds; ``None`` if neither."""
    if not isinstance(value, str) or not value or len(value) > 40:
        return None
    text = value.strip()
    if text.isdigit():
        try:
            return _dt.datetime.fromtimestamp(int(text) / 1000, tz=_UTC)
        except (OverflowError, OSError, ValueError):
            return None
    parsed = parse_iso_datetime(text)
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_UTC)


def _property_value(path: str, value: object) -> str:
    """HubSpot property values are strings; ``None`` clears a property (empty string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValidationError.single(path, "must be a string, number, boolean or null (HubSpot properties are flat)")


def _search_filters(property_name: str, token: str) -> list[dict[str, Any]]:
    """Filter groups (OR-ed) that find ``token`` inside a text property.

    How HubSpot tokenises text is not documented; a reference such as ``bk-1a2b`` may be one
    token or two. One group asks for the whole value, another for its longest alphanumeric run,
    so either tokenisation matches. Results are then checked for the exact marker by the caller.
    """
    groups = [{"filters": [{"propertyName": property_name, "operator": "CONTAINS_TOKEN", "value": token}]}]
    runs = sorted(_ALNUM_RUN.findall(token), key=len, reverse=True)
    if runs and runs[0] != token:
        groups.append({"filters": [{"propertyName": property_name, "operator": "CONTAINS_TOKEN", "value": runs[0]}]})
    return groups


def _contact_name(patient: Patient) -> dict[str, str]:
    names: dict[str, str] = {}
    if patient.given_name:
        names["firstname"] = patient.given_name
    if patient.family_name:
        names["lastname"] = patient.family_name
    return names


def _zone_label(request_zone: str | None, start: _dt.datetime) -> str:
    """The booking's own zone as written on the meeting: an IANA name, else the start's offset."""
    if request_zone:
        return request_zone
    offset = start.utcoffset() or _dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _zone_from_label(label: str | None) -> _dt.tzinfo | None:
    """The tzinfo a :func:`_zone_label` names, or ``None`` when it names none we know."""
    if not label:
        return None
    match = _OFFSET.fullmatch(label)
    if match:
        minutes = int(match.group(2)) * 60 + int(match.group(3))
        return _dt.timezone(_dt.timedelta(minutes=-minutes if match.group(1) == "-" else minutes))
    try:
        return ZoneInfo(label)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _body_zone_label(body: str) -> str | None:
    """The booking's zone as its meeting body records it (zone line, else the local-time line)."""
    for pattern in (_BODY_ZONE, _BODY_LOCAL_ZONE):
        match = pattern.search(body)
        if match and _zone_from_label(match.group(1)) is not None:
            return match.group(1)
    return None


def _meeting_zone(meeting: Mapping[str, Any]) -> _dt.tzinfo:
    """The zone a meeting was booked in, from its body; UTC for meetings that do not say."""
    props = meeting.get("properties")
    body = props.get("hs_meeting_body") if isinstance(props, dict) else None
    label = _body_zone_label(body) if isinstance(body, str) else None
    return (_zone_from_label(label) if label else None) or _UTC


def _mark_outcome_unknown(exc: PMSError, reference: str) -> None:
    """A failure after a committed write: the booking may (partly) exist, so say so."""
    if isinstance(exc, ProviderError):
        exc.outcome_unknown = True
        exc.reference = exc.reference or reference


def _say_half_cancelled(exc: PMSError, deal_id: str, meeting_id: str) -> None:
    """Put what is already done, and what to do, in front of the error of a cancel's second write."""
    meeting_state = "may not have been" if isinstance(exc, ProviderError) and exc.outcome_unknown else "could not be"
    note = (
        f"The booking is half cancelled: deal {deal_id} is already in the cancel stage, but meeting "
        f"{meeting_id} {meeting_state} marked CANCELED. Call cancel again with the same id to finish it "
        "(repeating a cancel is safe)."
    )
    exc.args = (f"{note} {exc.message}", *exc.args[1:])


# ---------------------------------------------------------------------------------------------
# the adapter


class HubSpotAdapter:
    """The HubSpot :class:`~pms_integration.provider.Provider`."""

    def __init__(self, settings: HubSpotSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.paths = HubSpotPaths(settings.api_version)
        self.transport: Transport = runtime.transport(
            provider=PROVIDER,
            base_url=settings.base_url,
            auth=BearerAuth(settings.token),
            timeout=settings.timeout,
            token_variable=TOKEN_VARIABLE,
            error_parser=HubSpotErrorParser(runtime.policy.max_retry_after),
            rate_header_parser=parse_rate_headers,
            rate_limit=settings.rate_limit,
            default_headers=None,
        )
        self._notes_lock = threading.Lock()
        self._notes: OrderedDict[str, str] = OrderedDict()
        self._company_lock = threading.Lock()
        self._reports_company: str | None = settings.report_company_id

    # -- Provider ---------------------------------------------------------------------------

    @property
    def name(self) -> ProviderName:
        return PROVIDER

    @property
    def capabilities(self) -> frozenset[Capability]:
        return ALL_CAPABILITIES

    def close(self) -> None:
        self.transport.close()

    def book(self, request: AppointmentRequest) -> Appointment:
        deal_extra, meeting_extra = self._split_extra(request.extra)
        contact_id = request.patient.contact_id
        if contact_id is not None and not _ID.fullmatch(contact_id):
            raise ValidationError.single("patient.contact_id", "must be a numeric HubSpot contact id")
        if contact_id is None:
            contact_id = self._resolve_contact(request)
        deal, existing = self._deal(request, contact_id, deal_extra)
        try:
            deal_id = self._object_id(deal, "book", "deal")
            meeting: dict[str, Any] | None = None
            if existing:
                # The upsert found a deal made by an earlier attempt at this booking: its meeting
                # may exist too, and must not be made twice.
                meeting = self._find_meeting(deal_id, request.reference)
            if meeting is None:
                meeting = self._create_once(
                    lambda: self._create_meeting(request, contact_id, deal_id, meeting_extra),
                    lambda: self._find_meeting(deal_id, request.reference),
                    operation="book",
                    reference=request.reference,
                )
            return self._booked(request, contact_id, deal, meeting)
        except PMSError as exc:
            # The deal is written: whatever failed after it, the booking may exist in part.
            _mark_outcome_unknown(exc, request.reference)
            raise

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The booking an earlier, unanswered attempt at ``request`` left behind, or None.

        Finds the deal by the reference (a consistent read by the unique property when
        ``PMS_HUBSPOT_REFERENCE_PROPERTY`` is set, else a search on ``dealname``), then its
        meeting; a deal whose meeting was never made is completed with one, so the booking ends
        up whole and single.
        """
        reference = request.reference
        deal = self._deal_by_reference(reference, request.patient)
        if deal is None:
            return None
        try:
            deal_id = self._object_id(deal, "book", "deal")
            contact_id = request.patient.contact_id or self._deal_contact(deal_id)
            meeting = self._find_meeting(deal_id, reference)
            if meeting is None:
                if contact_id is None:
                    raise unexpected(
                        PROVIDER, "book", f"deal {deal_id} for {reference} has no contact to attach a meeting to"
                    )
                _, meeting_extra = self._split_extra(request.extra)
                meeting = self._create_once(
                    lambda: self._create_meeting(request, contact_id, deal_id, meeting_extra),
                    lambda: self._find_meeting(deal_id, reference),
                    operation="book",
                    reference=reference,
                )
            return self._booked(request, contact_id, deal, meeting)
        except PMSError as exc:
            _mark_outcome_unknown(exc, reference)
            raise

    def _booked(
        self, request: AppointmentRequest, contact_id: str | None, deal: dict[str, Any], meeting: dict[str, Any]
    ) -> Appointment:
        deal_id = self._object_id(deal, "book", "deal")
        meeting_id = self._object_id(meeting, "book", "meeting")
        zone = _zone_from_label(_zone_label(request.timezone, request.start)) or _UTC
        return Appointment(
            provider=PROVIDER,
            id=f"{deal_id}:{meeting_id}",
            status=AppointmentStatus.BOOKED,
            start=request.start.astimezone(zone),
            end=request.end_time.astimezone(zone),
            reference=request.reference,
            contact_id=contact_id,
            title=request.title,
            raw={"contact_id": contact_id, "deal": deal, "meeting": meeting},
        )

    def _deal_by_reference(self, reference: str, patient: Patient | None = None) -> dict[str, Any] | None:
        prop = self.settings.reference_property
        if prop is None:
            contact_id = patient.contact_id if patient is not None else None
            if contact_id is None and patient is not None and patient.email:
                contact_id = self._contact_by_email(patient.email)
            return self._find_deal(reference, contact_id)
        resp = self.transport.request(
            "GET",
            self.paths.objects("deals", reference),
            operation="book",
            params={"idProperty": prop, "properties": "dealname"},
            expect=(404,),
        )
        return None if resp.status == 404 else self._json_object(resp, "book")

    def _deal_contact(self, deal_id: str) -> str | None:
        resp = self.transport.request(
            "GET", self.paths.objects("deals", deal_id), operation="book", params={"associations": "contacts"}
        )
        ids = _associated_ids(self._json_object(resp, "book"), ("contacts", "contact", "0-1"))
        return ids[0] if ids else None

    def _read_meeting(self, meeting_id: str, operation: str) -> dict[str, Any]:
        """The meeting as it is now (a 404 is the caller's :class:`NotFoundError`)."""
        resp = self.transport.request(
            "GET",
            self.paths.objects("meetings", meeting_id),
            operation=operation,
            params={"properties": ",".join(_MEETING_PROPERTIES)},
        )
        return self._json_object(resp, operation)

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        deal_id, meeting_id = self._split_id(appointment_id)
        # Read first: a cancelled booking is never moved (the one rule for every provider), and
        # the meeting's body says which zone the booking was made in.
        current = self._read_meeting(meeting_id, "update")
        if _outcome(current) == "CANCELED":
            raise AppointmentCancelledError(
                f"HubSpot appointment {appointment_id} was cancelled; it cannot be moved or changed. "
                "Book a new appointment instead.",
                status_code=409,
                code="APPOINTMENT_CANCELLED",
                provider=PROVIDER.value,
                operation="update",
            )
        props: dict[str, str] = {}
        if changes.start is not None:
            props["hs_timestamp"] = hubspot_time(changes.start)
            props["hs_meeting_start_time"] = hubspot_time(changes.start)
        if changes.end is not None:
            props["hs_meeting_end_time"] = hubspot_time(changes.end)
        if changes.title is not None:
            props["hs_meeting_title"] = changes.title
        if changes.location is not None:
            props["hs_meeting_location"] = changes.location
        if changes.notes is not None:
            props["hs_internal_meeting_notes"] = changes.notes
        body = _props(current).get("hs_meeting_body")
        named = named_timezone(changes.timezone, changes.start)
        if isinstance(body, str):
            start = changes.start
            if start is None and named is not None:
                # A new zone without a new start: the local time is re-expressed in that zone.
                current_props = _props(current)
                start = parse_hubspot_time(current_props.get("hs_meeting_start_time")) or parse_hubspot_time(
                    current_props.get("hs_timestamp")
                )
            new_body = self._moved_body(body, named, start)
            if new_body != body:
                props["hs_meeting_body"] = new_body
        meeting = _merged(current, self._patch("meetings", meeting_id, props, "update"))
        deal: dict[str, Any] | None = None
        if changes.start is not None:
            deal = self._patch("deals", deal_id, {"closedate": hubspot_time(changes.start)}, "update")
        return self._appointment(appointment_id, meeting, deal, AppointmentStatus.BOOKED, changes)

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        deal_id, meeting_id = self._split_id(appointment_id)
        # Read first: an unknown id is a NotFoundError (404) before anything is written, and an
        # already cancelled meeting is not written again (cancelling twice is a success).
        meeting = self._read_meeting(meeting_id, "cancel")
        deal_props = {"dealstage": self.settings.cancel_stage_id}
        if reason:
            deal_props["closed_lost_reason"] = reason
        # The deal first, the meeting second. The deal step is the one a configuration mistake
        # (a cancel stage outside the deal's pipeline) fails, and then nothing is written yet:
        # the meeting still says SCHEDULED, which is the truth. The deal PATCH is always sent
        # (it is idempotent), so a repeated cancel completes one that stopped half-way.
        deal = self._patch("deals", deal_id, deal_props, "cancel")
        if _outcome(meeting) != "CANCELED":
            try:
                patched = self._patch("meetings", meeting_id, {"hs_meeting_outcome": "CANCELED"}, "cancel")
            except PMSError as exc:
                _say_half_cancelled(exc, deal_id, meeting_id)
                raise
            meeting = _merged(meeting, patched)
        return self._appointment(appointment_id, meeting, deal, AppointmentStatus.CANCELLED, None)

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        report_id = report.id
        body = self._note_body(report)
        properties = {"hs_timestamp": self._note_timestamp(report), "hs_note_body": body}
        with self._notes_lock:
            cached = self._notes.get(report_id)
        if cached is not None:
            resp = self.transport.request(
                "PATCH",
                self.paths.objects("notes", cached),
                operation="push_report",
                json={"properties": properties},
                expect=(404,),
            )
            if resp.status != 404:
                return self._receipt(resp, report_id, created=False)
            with self._notes_lock:
                self._notes.pop(report_id, None)
        found = self._find_note(report_id)
        if found is not None:
            note_id = self._object_id(found, "push_report", "note")
            resp = self.transport.request(
                "PATCH",
                self.paths.objects("notes", note_id),
                operation="push_report",
                json={"properties": properties},
            )
            return self._receipt(resp, report_id, created=False)
        associations = [self._association(self._reports_company_id(), NOTE_TO_COMPANY)]
        payload = {"properties": properties, "associations": associations}

        def create_note() -> dict[str, Any]:
            resp = self.transport.request(
                "POST", self.paths.objects("notes"), operation="push_report", json=payload, reference=report_id
            )
            return self._created(resp, "push_report", "note", report_id)

        def find_note() -> dict[str, Any] | None:
            # The company's notes are read first (consistent), then search with its settle wait.
            company = str(associations[0]["to"]["id"])
            found = self._find_associated(
                "companies",
                company,
                "notes",
                ("notes", "note", "0-46"),
                ["hs_note_body", "hs_timestamp"],
                "hs_note_body",
                self._note_marker(report_id),
            )
            return found if found is not None else self._find_note(report_id, settle=True)

        note = self._create_once(create_note, find_note, operation="push_report", reference=report_id)
        note_id = self._object_id(note, "push_report", "note")
        self._remember_note(report_id, note_id)
        return ReportReceipt(provider=PROVIDER, id=note_id, report_id=report_id, created=True, raw=note)

    # -- contact ----------------------------------------------------------------------------

    def _resolve_contact(self, request: AppointmentRequest) -> str:
        patient = request.patient
        properties = _contact_name(patient)
        if patient.phone:
            properties["phone"] = patient.phone
        if patient.email is None:
            # HubSpot needs one of email, firstname or lastname on a new contact.
            if not properties.keys() & {"firstname", "lastname"}:
                properties["firstname"] = "Patient"
                properties["lastname"] = patient.phone or ""
            return self._create_contact(request, properties, lambda: None)
        email = patient.email
        found = self._contact_by_email(email)
        if found is not None:
            return found
        properties["email"] = email
        return self._create_contact(request, properties, lambda: self._contact_by_email(email))

    def _contact_by_email(self, email: str) -> str | None:
        """The patient's contact, read by its unique e-mail with a batch read.

        The e-mail travels in the request body (``idProperty: email``), never in the URL, so it
        stays out of access and debug logs. A batch read is a consistent read, unlike search: a
        contact created moments ago is found.
        """
        body = {"idProperty": "email", "inputs": [{"id": email}], "properties": ["email"], "propertiesWithHistory": []}
        resp = self.transport.request(
            "POST",
            self.paths.objects("contacts", "batch", "read"),
            operation="book",
            json=body,
            idempotent=True,
            expect=(404,),
        )
        if resp.status == 404:
            return None
        results = self._json_object(resp, "book").get("results")
        wanted = email.casefold()
        for record in results if isinstance(results, list) else []:
            value = _props(record).get("email") if isinstance(record, dict) else None
            if isinstance(value, str) and value.casefold() == wanted:
                return self._object_id(record, "book", "contact")
        return None

    def _create_contact(
        self, request: AppointmentRequest, properties: dict[str, str], find: Callable[[], str | None]
    ) -> str:
        def create_contact() -> str:
            resp = self.transport.request(
                "POST",
                self.paths.objects("contacts"),
                operation="book",
                json={"properties": properties, "associations": []},
                expect=(409,),
                reference=request.reference,
            )
            if resp.status == 409:
                return self._existing_contact(resp)
            return self._object_id(self._created(resp, "book", "contact", request.reference), "book", "contact")

        return self._create_once(create_contact, find, operation="book", reference=request.reference)

    def _existing_contact(self, resp: HttpResponse) -> str:
        """A 409 on contact create: someone made the contact first; its id is in the message."""
        body = resp.json_or_none()
        message = _text(body.get("message")) if isinstance(body, dict) else None
        match = _EXISTING_ID.search(message or "")
        if match:
            return match.group(1)
        info = HubSpotErrorParser()(resp)
        raise ConflictError(
            f"HubSpot book failed with HTTP 409 {info.code or ''}: {info.message}".replace("  ", " "),
            status_code=409,
            code=info.code,
            request_id=info.request_id,
            provider=PROVIDER.value,
            operation="book",
        )

    # -- deal -------------------------------------------------------------------------------

    def _deal_properties(self, request: AppointmentRequest, extra: Mapping[str, str]) -> dict[str, str]:
        props = {
            "dealname": f"{request.title} - {request.patient.display_name} [{request.reference}]",
            "pipeline": self.settings.pipeline_id,
            "dealstage": self.settings.stage_id,
            "closedate": hubspot_time(request.start),
        }
        props.update(extra)
        return props

    def _deal(
        self, request: AppointmentRequest, contact_id: str, extra: Mapping[str, str]
    ) -> tuple[dict[str, Any], bool]:
        """The booking's deal, and whether it existed before this call (upsert path only)."""
        properties = self._deal_properties(request, extra)
        reference = request.reference
        ref_property = self.settings.reference_property
        if ref_property is None:
            payload = {"properties": properties, "associations": [self._association(contact_id, DEAL_TO_CONTACT)]}

            def create_deal() -> dict[str, Any]:
                resp = self.transport.request(
                    "POST", self.paths.objects("deals"), operation="book", json=payload, reference=reference
                )
                return self._created(resp, "book", "deal", reference)

            deal = self._create_once(
                create_deal, lambda: self._find_deal(reference, contact_id), operation="book", reference=reference
            )
            return deal, False

        upsert = {"inputs": [{"idProperty": ref_property, "id": reference, "properties": properties}]}

        def upsert_deal() -> dict[str, Any]:
            resp = self.transport.request(
                "POST",
                self.paths.batch_upsert("deals"),
                operation="book",
                json=upsert,
                idempotent=True,
                reference=reference,
            )
            return self._upsert_result(resp, reference)

        # The upsert is keyed by the reference, so repeating it is safe: it is its own look-up.
        deal = self._create_once(upsert_deal, upsert_deal, operation="book", reference=reference)
        try:
            deal_id = self._object_id(deal, "book", "deal")
            # batch/upsert takes no associations; add the deal -> contact one (a repeatable PUT).
            self.transport.request(
                "PUT",
                self.paths.default_association("deals", deal_id, "contacts", contact_id),
                operation="book",
            )
        except PMSError as exc:
            # The upsert committed the deal: the error must say the booking may exist.
            _mark_outcome_unknown(exc, reference)
            raise
        return deal, deal.get("new") is False

    def _upsert_result(self, resp: HttpResponse, reference: str) -> dict[str, Any]:
        body = self._json_object(resp, "book")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            message = _text(first.get("message")) or "the deal upsert reported an error"
            category = _text(first.get("category"))
            raise InvalidRequestError(
                f"HubSpot book failed with HTTP {resp.status} {category or ''}: {message}".replace("  ", " "),
                status_code=resp.status,
                code=category,
                request_id=_text(body.get("correlationId")),
                provider=PROVIDER.value,
                operation="book",
            )
        results = body.get("results")
        result = results[0] if isinstance(results, list) and results else None
        if not isinstance(result, dict) or not _ID.fullmatch(str(result.get("id", ""))):
            raise _UnreadableCreate(
                "HubSpot answered book with an unreadable response: the deal upsert returned no deal id",
                provider=PROVIDER.value,
                operation="book",
            )
        return result

    def _find_deal(self, reference: str, contact_id: str | None = None) -> dict[str, Any] | None:
        """The deal whose name carries ``[reference]``.

        With the patient's contact known, the contact's associated deals are read first: that read
        is consistent, so a deal created moments ago is found although search cannot see it yet.
        Then deals are searched (eventually consistent; see docs).
        """
        marker = f"[{reference}]"
        properties = ["dealname", "pipeline", "dealstage", "closedate"]
        if contact_id is not None:
            found = self._find_associated(
                "contacts", contact_id, "deals", ("deals", "deal", "0-3"), properties, "dealname", marker
            )
            if found is not None:
                return found
        return self._search_marked(
            "deals", _search_filters("dealname", reference), properties, "book", "dealname", marker, settle=True
        )

    # -- meeting ----------------------------------------------------------------------------

    @staticmethod
    def _meeting_marker(reference: str) -> str:
        """The line of the meeting body that names the booking (brackets make it exact)."""
        return f"Booking reference: [{reference}]"

    def _meeting_body(self, request: AppointmentRequest) -> str:
        lines = ["Booked by the AI receptionist.", f"Patient: {request.patient.display_name}"]
        if request.timezone:
            local = request.start.astimezone(ZoneInfo(request.timezone))
            lines.append(f"Local time: {local:%Y-%m-%d %H:%M} ({request.timezone})")
        if request.reason:
            lines.append(f"Reason: {request.reason}")
        lines.append(self._meeting_marker(request.reference))
        lines.append(self._zone_marker(_zone_label(request.timezone, request.start)))
        return "\n".join(lines)

    def _moved_body(self, body: str, named: str | None, start: _dt.datetime | None) -> str:
        """The meeting body after an update: the booking's zone and its ``Local time:`` line.

        The zone line changes only when the update names a zone (a bare UTC start names none);
        the local time is rewritten on every move (and when the zone changes), in the booking's
        zone, so staff reading the meeting see the new time.
        """
        if named is not None:
            # The update names the booking's zone: record it where the booking keeps it.
            line = self._zone_marker(named)
            body = _BODY_ZONE.sub(lambda _m: line, body, count=1) if _BODY_ZONE.search(body) else f"{body}\n{line}"
        if start is None:
            return body
        label = named or _body_zone_label(body)
        zone = _zone_from_label(label) if label else None
        if zone is None:
            zone, label = _UTC, "UTC"
        local = start.astimezone(zone)
        line = f"Local time: {local:%Y-%m-%d %H:%M} ({label})"
        if _BODY_LOCAL_LINE.search(body):
            return _BODY_LOCAL_LINE.sub(lambda _m: line, body, count=1)
        # Where a booking made with a named zone has it: just before the reference line.
        lines = body.split("\n")
        at = next((i for i, text in enumerate(lines) if _BODY_REFERENCE.fullmatch(text)), len(lines))
        return "\n".join([*lines[:at], line, *lines[at:]])

    @staticmethod
    def _zone_marker(label: str) -> str:
        """The line of the meeting body that records the booking's own zone (returned times use it)."""
        return f"Booking time zone: [{label}]"

    def _create_meeting(
        self, request: AppointmentRequest, contact_id: str, deal_id: str, extra: Mapping[str, str]
    ) -> dict[str, Any]:
        start = hubspot_time(request.start)
        properties = {
            "hs_timestamp": start,
            "hs_meeting_title": request.title,
            "hs_meeting_start_time": start,
            "hs_meeting_end_time": hubspot_time(request.end_time),
            "hs_meeting_body": self._meeting_body(request),
            "hs_meeting_outcome": "SCHEDULED",
        }
        if request.location:
            properties["hs_meeting_location"] = request.location
        if request.notes:
            properties["hs_internal_meeting_notes"] = request.notes
        properties.update(extra)
        payload = {
            "properties": properties,
            "associations": [
                self._association(contact_id, MEETING_TO_CONTACT),
                self._association(deal_id, MEETING_TO_DEAL),
            ],
        }
        resp = self.transport.request(
            "POST", self.paths.objects("meetings"), operation="book", json=payload, reference=request.reference
        )
        return self._created(resp, "book", "meeting", request.reference)

    def _find_associated(
        self,
        from_type: str,
        from_id: str,
        to_type: str,
        keys: tuple[str, ...],
        properties: list[str],
        property_name: str,
        marker: str,
    ) -> dict[str, Any] | None:
        """Among a record's associated ``to_type`` records (newest first), the one carrying ``marker``.

        Reads by id are consistent, unlike search, so this finds a record created moments ago.
        At most :data:`MAX_MEETINGS_CHECKED` of the newest associated records are read.
        """
        operation = "push_report" if to_type == "notes" else "book"
        resp = self.transport.request(
            "GET",
            self.paths.objects(from_type, from_id),
            operation=operation,
            params={"associations": to_type},
            expect=(404,),
        )
        if resp.status == 404:
            return None
        ids = sorted(_associated_ids(self._json_object(resp, operation), keys), key=int, reverse=True)
        for record_id in ids[:MAX_MEETINGS_CHECKED]:
            got = self.transport.request(
                "GET",
                self.paths.objects(to_type, record_id),
                operation=operation,
                params={"properties": ",".join(properties)},
                expect=(404,),
            )
            if got.status == 404:
                continue
            record = self._json_object(got, operation)
            if _has_marker(record, property_name, marker):
                return record
        return None

    def _find_meeting(self, deal_id: str, reference: str) -> dict[str, Any] | None:
        """The booking's meeting: first among the deal's associated meetings, then by search."""
        marker = self._meeting_marker(reference)
        resp = self.transport.request(
            "GET",
            self.paths.objects("deals", deal_id),
            operation="book",
            params={"associations": "meetings", "properties": "dealname"},
        )
        deal = self._json_object(resp, "book")
        for meeting_id in _associated_ids(deal, ("meetings", "meeting", "0-47"))[:MAX_MEETINGS_CHECKED]:
            got = self.transport.request(
                "GET",
                self.paths.objects("meetings", meeting_id),
                operation="book",
                params={"properties": ",".join(_MEETING_PROPERTIES)},
                expect=(404,),
            )
            if got.status == 404:
                continue
            meeting = self._json_object(got, "book")
            if _has_marker(meeting, "hs_meeting_body", marker):
                return meeting
        return self._search_marked(
            "meetings",
            _search_filters("hs_meeting_body", reference),
            list(_MEETING_PROPERTIES),
            "book",
            "hs_meeting_body",
            marker,
            settle=True,
        )

    # -- notes ------------------------------------------------------------------------------

    @staticmethod
    def _note_marker(report_id: str) -> str:
        return f"[pms-report-id: {report_id}]"

    def _note_body(self, report: PerformanceReport) -> str:
        tail = f"\n\nMetrics (JSON): {report.metrics_json()}\n{self._note_marker(report.id)}"
        text = report.render_text()
        room = NOTE_BODY_LIMIT - len(tail)
        if len(text) > room:
            text = text[: max(room - 1, 0)] + "…"
        return (text + tail)[:NOTE_BODY_LIMIT]

    @staticmethod
    def _note_timestamp(report: PerformanceReport) -> str:
        """The start of the day after the period (UTC): stable, so a re-push does not move it."""
        day_after = report.period_end + _dt.timedelta(days=1)
        return hubspot_time(_dt.datetime(day_after.year, day_after.month, day_after.day, tzinfo=_UTC))

    def _find_note(self, report_id: str, *, settle: bool = False) -> dict[str, Any] | None:
        marker = self._note_marker(report_id)
        return self._search_marked(
            "notes",
            _search_filters("hs_note_body", report_id),
            ["hs_note_body", "hs_timestamp"],
            "push_report",
            "hs_note_body",
            marker,
            settle=settle,
        )

    def _reports_company_id(self) -> str:
        """Where report notes go: the configured company, else the "pms-integration reports" company.

        That company is looked up by its exact name once per adapter (and created on a portal that
        has none), so the notes appear on a company record that anyone can open in HubSpot.
        """
        with self._company_lock:
            if self._reports_company is None:
                self._reports_company = self._find_or_create_reports_company()
            return self._reports_company

    def _find_reports_company(self, *, settle: bool = False) -> dict[str, Any] | None:
        groups = [{"filters": [{"propertyName": "name", "operator": "EQ", "value": REPORTS_COMPANY_NAME}]}]
        return self._search_marked(
            "companies", groups, ["name"], "push_report", "name", REPORTS_COMPANY_NAME, settle=settle, exact=True
        )

    def _find_or_create_reports_company(self) -> str:
        found = self._find_reports_company()
        if found is None:

            def create_company() -> dict[str, Any]:
                resp = self.transport.request(
                    "POST",
                    self.paths.objects("companies"),
                    operation="push_report",
                    json={"properties": {"name": REPORTS_COMPANY_NAME}, "associations": []},
                    reference=REPORTS_COMPANY_NAME,
                )
                return self._created(resp, "push_report", "company", REPORTS_COMPANY_NAME)

            found = self._create_once(
                create_company,
                lambda: self._find_reports_company(settle=True),
                operation="push_report",
                reference=REPORTS_COMPANY_NAME,
            )
        return self._object_id(found, "push_report", "company")

    def _remember_note(self, report_id: str, note_id: str) -> None:
        with self._notes_lock:
            self._notes[report_id] = note_id
            self._notes.move_to_end(report_id)
            while len(self._notes) > 1000:
                self._notes.popitem(last=False)

    def _receipt(self, resp: HttpResponse, report_id: str, *, created: bool) -> ReportReceipt:
        body = self._json_object(resp, "push_report")
        note_id = self._object_id(body, "push_report", "note")
        self._remember_note(report_id, note_id)
        return ReportReceipt(provider=PROVIDER, id=note_id, report_id=report_id, created=created, raw=body)

    # -- shared plumbing --------------------------------------------------------------------

    @staticmethod
    def _association(to_id: str, type_id: int) -> dict[str, Any]:
        return {
            "to": {"id": to_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
        }

    def _split_id(self, appointment_id: str) -> tuple[str, str]:
        match = _APPOINTMENT_ID.fullmatch(appointment_id) if isinstance(appointment_id, str) else None
        if match is None:
            raise ValidationError.single(
                "appointment_id", "must be a HubSpot booking id '<dealId>:<meetingId>' (two numeric ids)"
            )
        return match.group(1), match.group(2)

    @staticmethod
    def _split_extra(extra: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """``extra``: flat keys and ``extra["deal"]`` go to the deal, ``extra["meeting"]`` to the meeting."""
        deal: dict[str, str] = {}
        meeting: dict[str, str] = {}
        for key, value in extra.items():
            if key in ("deal", "meeting") and isinstance(value, Mapping):
                target = deal if key == "deal" else meeting
                for sub, sub_value in value.items():
                    target[str(sub)] = _property_value(f"extra.{key}.{sub}", sub_value)
            else:
                deal[key] = _property_value(f"extra.{key}", value)
        # These carry the booking reference that the reconcile look-ups search for.
        for path, target, reserved in (("extra", deal, "dealname"), ("extra.meeting", meeting, "hs_meeting_body")):
            if reserved in target:
                raise ValidationError.single(
                    f"{path}.{reserved}",
                    "is written by the adapter (it carries the booking reference); use title/reason",
                )
        return deal, meeting

    def _patch(self, object_type: str, object_id: str, properties: Mapping[str, str], operation: str) -> dict[str, Any]:
        resp = self.transport.request(
            "PATCH", self.paths.objects(object_type, object_id), operation=operation, json={"properties": properties}
        )
        return self._json_object(resp, operation)

    def _search_pages(
        self, object_type: str, filter_groups: list[dict[str, Any]], properties: list[str], operation: str
    ) -> Iterator[dict[str, Any]]:
        """Every search result, oldest first, page by page (``after``), within the deadline.

        Each body is a complete ``PublicObjectSearchRequest`` (``filterGroups``, ``properties``,
        ``sorts``, ``limit``, ``after``: the published spec requires all five). Sorting by
        ``hs_object_id`` keeps the pages stable and puts the oldest record first. A look-up that
        cannot read every page (past HubSpot's 10,000-result cap, or out of time) fails instead of
        answering "not found", because a miss would lead the caller to create a duplicate.
        """
        after = "0"
        seen = 0
        while True:
            body = {
                "filterGroups": filter_groups,
                "properties": properties,
                "sorts": ["hs_object_id"],
                "limit": SEARCH_LIMIT,
                "after": after,
            }
            resp = self.transport.request(
                "POST", self.paths.search(object_type), operation=operation, json=body, idempotent=True
            )
            data = self._json_object(resp, operation)
            results = data.get("results")
            if not isinstance(results, list):
                raise unexpected(PROVIDER, operation, "a search response without results")
            for record in results:
                if isinstance(record, dict) and _ID.fullmatch(str(record.get("id", ""))):
                    yield record
            seen += len(results)
            paging = data.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            cursor = following.get("after") if isinstance(following, dict) else None
            if not isinstance(cursor, str) or not cursor or not results:
                return
            deadline = current_deadline()
            if seen >= SEARCH_MAX_RESULTS or (deadline is not None and deadline.remaining() < self.settings.timeout):
                raise UnexpectedResponseError(
                    f"HubSpot's search for {object_type} returned more results than could be checked "
                    f"({seen} read) within the limits; the record may exist",
                    provider=PROVIDER.value,
                    operation=operation,
                )
            after = cursor

    def _search_marked(
        self,
        object_type: str,
        filter_groups: list[dict[str, Any]],
        properties: list[str],
        operation: str,
        property_name: str,
        marker: str,
        *,
        settle: bool,
        exact: bool = False,
    ) -> dict[str, Any] | None:
        """The oldest search result whose ``property_name`` contains ``marker`` exactly.

        Every page is read (the filters only narrow the search; the exact check is done here),
        so a match on page two is found. With ``exact`` the property must equal ``marker``.

        With ``settle`` (the reconcile path, right after a create whose outcome is unknown) a
        miss is searched again after :data:`SETTLE_SECONDS`, because HubSpot's search index
        lags behind writes. When the operation's deadline cannot afford that wait, a miss
        proves nothing - the record may simply not be indexed yet - so the look-up fails
        ("cannot tell") instead of answering "not found", and the caller's create is not
        repeated.
        """
        waits = (0.0, SETTLE_SECONDS) if settle else (0.0,)
        for wait in waits:
            if wait:
                deadline = current_deadline()
                if deadline is not None and deadline.remaining() < wait + self.settings.timeout:
                    raise UnexpectedResponseError(
                        "HubSpot's search index may not show a record created moments ago, and the "
                        "operation's deadline leaves no time to wait for it",
                        provider=PROVIDER.value,
                        operation=operation,
                    )
                self.transport.sleep(wait)
            for record in self._search_pages(object_type, filter_groups, properties, operation):
                value = _props(record).get(property_name)
                if isinstance(value, str) and (value == marker if exact else marker in value):
                    # Oldest first: several can only come from an earlier race; the oldest wins.
                    return record
        return None

    @staticmethod
    def _json_object(resp: HttpResponse, operation: str) -> dict[str, Any]:
        """The body of a successful read or update as a JSON object, else an unexpected-response error."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise unexpected(
                PROVIDER, operation, f"HTTP {resp.status} from {resp.method} {resp.path} is not a JSON object"
            )
        return body

    @staticmethod
    def _created(resp: HttpResponse, operation: str, what: str, reference: str) -> dict[str, Any]:
        """The body of a successful create; one we cannot read means "created, id unknown"."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not _ID.fullmatch(str(body.get("id", ""))):
            raise _UnreadableCreate(
                f"HubSpot answered {operation} with an unreadable response: the new {what}'s id is missing",
                provider=PROVIDER.value,
                operation=operation,
                reference=reference,
            )
        return body

    @staticmethod
    def _object_id(body: Mapping[str, Any], operation: str, what: str) -> str:
        value = body.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise unexpected(PROVIDER, operation, f"the {what} has no numeric id")
        return value

    def _create_once(
        self, create: Callable[[], T], find: Callable[[], T | None], *, operation: str, reference: str
    ) -> T:
        """:func:`create_once`, plus: a 2xx we cannot read is a create that happened.

        Such a create is never repeated (a second one would double-book); the record is looked up
        once, and when the look-up cannot find it the error says the outcome is unknown.
        """
        try:
            return create_once(create, find, provider=PROVIDER, operation=operation, reference=reference)
        except _UnreadableCreate as exc:
            try:
                found = find()
            except PMSError:
                found = None
            if found is not None:
                return found
            exc.outcome_unknown = True
            exc.reference = reference
            raise

    def _appointment(
        self,
        appointment_id: str,
        meeting: Mapping[str, Any],
        deal: Mapping[str, Any] | None,
        status: AppointmentStatus,
        changes: AppointmentUpdate | None,
    ) -> Appointment:
        props = meeting.get("properties")
        props = props if isinstance(props, dict) else {}
        start = parse_hubspot_time(props.get("hs_meeting_start_time")) or parse_hubspot_time(props.get("hs_timestamp"))
        end = parse_hubspot_time(props.get("hs_meeting_end_time"))
        title = props.get("hs_meeting_title") if isinstance(props.get("hs_meeting_title"), str) else None
        if changes is not None:
            start = changes.start or start
            end = changes.end or end
            title = changes.title or title
        body = props.get("hs_meeting_body")
        match = _BODY_REFERENCE.search(body) if isinstance(body, str) else None
        zone = _meeting_zone(meeting)
        named = named_timezone(changes.timezone, changes.start) if changes is not None else None
        if named:
            zone = _zone_from_label(named) or zone
        if start is None:
            raise unexpected(PROVIDER, "update" if changes is not None else "cancel", "the meeting has no start time")
        if end is None:
            end = start
        return Appointment(
            provider=PROVIDER,
            id=appointment_id,
            status=status,
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            reference=match.group(1) if match else None,
            title=title,
            raw={"meeting": dict(meeting), "deal": dict(deal) if deal is not None else None},
        )


class _UnreadableCreate(UnexpectedResponseError):
    """A create answered 2xx with a body we cannot read. Raised with ``outcome_unknown`` false so
    that :func:`create_once` passes it through instead of creating again; the adapter then sets it."""


def _associated_ids(record: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Ids under ``associations.<key>.results[].id`` of a record read with ``?associations=``."""
    associations = record.get("associations")
    if not isinstance(associations, dict):
        return []
    ids: list[str] = []
    for key in keys:
        group = associations.get(key)
        results = group.get("results") if isinstance(group, dict) else None
        for item in results if isinstance(results, list) else []:
            value = item.get("id") if isinstance(item, dict) else None
            value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if isinstance(value, str) and _ID.fullmatch(value) and value not in ids:
                ids.append(value)
    return ids


def _props(record: Mapping[str, Any]) -> dict[str, Any]:
    props = record.get("properties")
    return props if isinstance(props, dict) else {}


def _outcome(meeting: Mapping[str, Any]) -> str | None:
    value = _props(meeting).get("hs_meeting_outcome")
    return value.upper() if isinstance(value, str) else None


def _merged(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH answer on top of the record read before it (HubSpot may answer with fewer properties)."""
    out = dict(after)
    out["properties"] = {**_props(before), **{k: v for k, v in _props(after).items() if v is not None}}
    return out


def _has_marker(record: Mapping[str, Any], property_name: str, marker: str) -> bool:
    props = record.get("properties")
    value = props.get(property_name) if isinstance(props, dict) else None
    return isinstance(value, str) and marker in value


def create(settings: HubSpotSettings, runtime: Runtime) -> Provider:
    """Build the HubSpot adapter (called by the client on first use)."""
    return HubSpotAdapter(settings, runtime)
