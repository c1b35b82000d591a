"""HubSpot's wire format: paths, error bodies, quota headers, and how a booking's meeting body and
properties are written and read back (see ``docs/providers/hubspot.md``)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._http import ErrorInfo, HttpResponse
from .._ratelimit import RateLimitInfo
from .._retry import parse_retry_after
from .._time import UTC, parse_instant, utc_text
from ..errors import InvalidRequestError, PMSError, ProviderError, ValidationError
from ..models import AppointmentRequest
from ._base import BaseAdapter, text

__all__ = ["HubSpotPaths", "parse_error", "parse_rate_headers"]

# HUBSPOT_DEFINED association type ids (vendor note section 3.5).
DEAL_TO_CONTACT = 3
MEETING_TO_CONTACT = 200
MEETING_TO_DEAL = 212
NOTE_TO_COMPANY = 190
#: ``hs_note_body`` is "limited to 65,536 characters" (vendor note section 3.4).
NOTE_BODY_LIMIT = 65_536

ID = re.compile(r"^\d{1,20}$")
APPOINTMENT_ID = re.compile(r"^\d{1,20}:\d{1,20}$")
EXISTING_ID = re.compile(r"Existing ID:\s*(\d{1,20})")
BODY_REFERENCE = re.compile(r"Booking reference: \[([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})\]")
_BODY_ZONE = re.compile(r"Booking time zone: \[([A-Za-z0-9_+:/-]{1,64})\]")
_BODY_LOCAL_ZONE = re.compile(r"^Local time: .* \(([A-Za-z0-9_+/-]{1,64})\)$", re.MULTILINE)
_BODY_LOCAL_LINE = re.compile(r"^Local time: .*$", re.MULTILINE)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")


class Kind(NamedTuple):
    """An object the adapter looks records up in: the property that carries the marker, the
    properties a look-up reads, the keys its associations come under, and the operation."""

    object_type: str
    marker_property: str
    properties: list[str]
    association_keys: tuple[str, ...]
    operation: str


MEETING_PROPERTIES = ["hs_timestamp", "hs_meeting_title", "hs_meeting_body", "hs_meeting_start_time"]
MEETING_PROPERTIES += ["hs_meeting_end_time", "hs_meeting_outcome"]
DEALS = Kind("deals", "dealname", ["dealname", "pipeline", "dealstage", "closedate"], ("deals", "deal", "0-3"), "book")
MEETINGS = Kind("meetings", "hs_meeting_body", MEETING_PROPERTIES, ("meetings", "meeting", "0-47"), "book")
NOTES = Kind("notes", "hs_note_body", ["hs_note_body", "hs_timestamp"], ("notes", "note", "0-46"), "push_report")
COMPANIES = Kind("companies", "name", ["name"], (), "push_report")
#: What a patient look-up reads of a contact.
CONTACT_PROPERTIES = ["email", "firstname", "lastname", "phone", "mobilephone"]


class HubSpotPaths:
    """URL paths for one API version: ``v3`` (``/crm/v3/objects/...``, v4 associations) or a date
    version such as ``2026-09`` (``/crm/objects/2026-09/...`` for both)."""

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

    def batch_read(self, object_type: str) -> str:
        return self.objects(object_type, "batch", "read")

    def association_batch_read(self, from_type: str, to_type: str) -> str:
        """``POST`` target reading the associations of many records at once (ids in the body)."""
        if self.dated:
            return f"/crm/associations/{self.api_version}/{from_type}/{to_type}/batch/read"
        return f"/crm/v4/associations/{from_type}/{to_type}/batch/read"

    def default_association(self, from_type: str, from_id: str, to_type: str, to_id: str) -> str:
        """``PUT`` target that creates the unlabelled (default) association between two records."""
        if self.dated:
            return self.objects(from_type, from_id, "associations", "default", to_type, to_id)
        return f"/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}"


# ---------------------------------------------------------------------------------------------
# error bodies and rate-limit headers


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name].strip())
    except (KeyError, ValueError):
        return None


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """``X-HubSpot-RateLimit-*`` as a :class:`RateLimitInfo`; None when none are present (search
    answers omit them, so the last value seen stays in force)."""
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    limit = _int_header(h, "x-hubspot-ratelimit-max")
    remaining = _int_header(h, "x-hubspot-ratelimit-remaining")
    interval_ms = _int_header(h, "x-hubspot-ratelimit-interval-milliseconds")
    if limit is None and remaining is None:  # older answers carry a per-second pair instead
        limit = _int_header(h, "x-hubspot-ratelimit-secondly")
        remaining = _int_header(h, "x-hubspot-ratelimit-secondly-remaining")
        interval_ms = 1000 if limit is not None or remaining is not None else interval_ms
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


def parse_error(resp: HttpResponse) -> ErrorInfo:
    """HubSpot's error body ``{status, message, errors[], category, correlationId}`` (every field
    optional; HTML or empty bodies still give an :class:`ErrorInfo`). The per-status rules (429
    ``DAILY`` not retried, 423 after >= 2 s, 477 migration) are in ``docs/providers/hubspot.md``."""
    body = resp.json_or_none()
    body = body if isinstance(body, dict) else {}
    message = text(body.get("message")) or f"HTTP {resp.status}"
    headers = {str(k).lower(): str(v) for k, v in resp.headers.items()}
    details: list[str] = []
    fields: list[str] = []
    items = body.get("errors")
    for item in items[:20] if isinstance(items, list) else []:
        detail = text(item.get("message")) if isinstance(item, dict) else None
        if detail and detail not in message and len(details) < 3:
            details.append(detail)
        context = item.get("context") if isinstance(item, dict) else None
        names = context.get("propertyName") if isinstance(context, dict) else None
        names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
        fields.extend(n for n in names if isinstance(n, str))
    if "not valid" in message and "[" in message:  # the legacy "Property values were not valid: [...]"
        fields.extend(re.findall(r'"name"\s*:\s*"([A-Za-z0-9_.-]{1,100})"', message[message.find("[") :]))
    if details:
        message = message.rstrip(". ") + ". " + "; ".join(details)
    code = text(body.get("category")) or text(body.get("errorType"))
    retryable: bool | None = None
    retry_after: float | None = None
    if resp.status == 429:
        # the windows' lengths, for when HubSpot sends no Retry-After (a header is the better guide)
        policy = text(body.get("policyName"))
        code, no_header = policy or code, "retry-after" not in headers
        if policy == "DAILY":
            retryable = False
        elif policy == "TEN_SECONDLY_ROLLING" and no_header:
            retry_after = 10.0
        elif "secondly limit" in message.lower() and no_header:
            retry_after = 1.0
    elif resp.status == 423:  # locked for about 2 s; nothing was applied, so even a create retries
        code, retryable, retry_after = code or "LOCKED", True, 2.0
    elif resp.status == 477:  # retried when the transport may wait that long (max_retry_after)
        code = code or "MIGRATION_IN_PROGRESS"
        wait = parse_retry_after(headers.get("retry-after"))
        retryable, retry_after = wait is not None, None if wait is None else max(wait, 0.0)
        when = f"{wait:g} s" if wait is not None else "a while (HubSpot says up to 24 hours)"
        message = f"the HubSpot account is being migrated; retry after {when}. {message}"
    return ErrorInfo(
        message,
        code=code,
        fields=tuple(dict.fromkeys(fields)),
        request_id=text(body.get("correlationId")) or headers.get("x-hubspot-correlation-id"),
        retryable=retryable,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------------------------------------
# records, properties and meeting bodies


def wire_time(value: _dt.datetime) -> str:
    """HubSpot's UTC form: ``2026-10-05T13:00:00.000Z``."""
    return utc_text(value, milliseconds=True)


def read_time(props: Mapping[str, Any], *names: str) -> _dt.datetime | None:
    """The first of ``names`` that holds a HubSpot time (ISO text in UTC, or epoch milliseconds)."""
    return next((t for t in (parse_instant(props.get(n), naive_as_utc=True) for n in names) if t), None)


def props(record: Mapping[str, Any]) -> dict[str, Any]:
    found = record.get("properties")
    return found if isinstance(found, dict) else {}


def merged(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH answer on top of the record read before it (HubSpot may answer with fewer properties)."""
    return {**after, "properties": {**props(before), **{k: v for k, v in props(after).items() if v is not None}}}


def _property_value(path: str, value: object) -> str:
    """HubSpot property values are strings; None clears a property (empty string)."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValidationError.single(path, "must be a string, number, boolean or null (HubSpot properties are flat)")


def split_extra(extra: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Flat keys and ``extra["deal"]`` go to the deal, ``extra["meeting"]`` to the meeting."""
    deal: dict[str, str] = {}
    meeting: dict[str, str] = {}
    for key, value in extra.items():
        if key in ("deal", "meeting") and isinstance(value, Mapping):
            target = deal if key == "deal" else meeting
            target.update((str(k), _property_value(f"extra.{key}.{k}", v)) for k, v in value.items())
        else:
            deal[key] = _property_value(f"extra.{key}", value)
    # these carry the booking reference that the reconcile look-ups search for
    for path, target, reserved in (("extra", deal, "dealname"), ("extra.meeting", meeting, "hs_meeting_body")):
        if reserved in target:
            raise ValidationError.single(
                f"{path}.{reserved}", "is written by the adapter (it carries the booking reference); use title/reason"
            )
    return deal, meeting


def search_filters(property_name: str, token: str) -> list[dict[str, Any]]:
    """OR-ed filter groups that find ``token`` in a text property: the whole value, and its longest
    alphanumeric run (HubSpot's tokenising is undocumented); callers check the exact marker."""
    groups = [{"filters": [{"propertyName": property_name, "operator": "CONTAINS_TOKEN", "value": token}]}]
    runs = sorted(_ALNUM_RUN.findall(token), key=len, reverse=True)
    if runs and runs[0] != token:
        groups.append({"filters": [{"propertyName": property_name, "operator": "CONTAINS_TOKEN", "value": runs[0]}]})
    return groups


def association(to_id: str, type_id: int) -> dict[str, Any]:
    return {"to": {"id": to_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}


def associated_ids(record: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Ids under ``associations.<key>.results[].id`` of a record read with ``?associations=``."""
    found = record.get("associations")
    groups = [found.get(key) for key in keys] if isinstance(found, dict) else []
    ids: list[str] = []
    for group in groups:
        results = group.get("results") if isinstance(group, dict) else None
        for item in results if isinstance(results, list) else []:
            value = str(item.get("id")) if isinstance(item, dict) else ""
            if ID.fullmatch(value) and value not in ids:
                ids.append(value)
    return ids


def zone_label(zone: str | None, start: _dt.datetime) -> str:
    """The booking's own zone as written on the meeting: an IANA name, else the start's offset."""
    offset = start.strftime("%z") or "+0000"
    return zone or f"{offset[:3]}:{offset[3:5]}"


def zone(label: str | None) -> _dt.tzinfo | None:
    """The tzinfo a :func:`zone_label` names, or None when it names none we know."""
    try:
        if label and label[0] in "+-":
            return _dt.datetime.strptime(label, "%z").tzinfo
        return ZoneInfo(label) if label else None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def body_zone_label(body: str) -> str | None:
    """The booking's zone as its meeting body records it (zone line, else the local-time line)."""
    for pattern in (_BODY_ZONE, _BODY_LOCAL_ZONE):
        match = pattern.search(body)
        if match and zone(match.group(1)) is not None:
            return match.group(1)
    return None


def meeting_body(request: AppointmentRequest) -> str:
    lines = ["Booked by the AI receptionist.", f"Patient: {request.patient.display_name}"]
    if request.timezone:
        local = request.start.astimezone(ZoneInfo(request.timezone))
        lines.append(f"Local time: {local:%Y-%m-%d %H:%M} ({request.timezone})")
    if request.reason:
        lines.append(f"Reason: {request.reason}")
    lines.append(f"Booking reference: [{request.reference}]")
    lines.append(f"Booking time zone: [{zone_label(request.timezone, request.start)}]")
    return "\n".join(lines)


def moved_body(body: str, named: str | None, start: _dt.datetime | None) -> str:
    """The meeting body after an update: the zone line changes only when the update names a zone;
    the ``Local time:`` line is rewritten (or added) on every move, in the booking's zone."""
    if named is not None:
        line = f"Booking time zone: [{named}]"
        body = _BODY_ZONE.sub(lambda _m: line, body, count=1) if _BODY_ZONE.search(body) else f"{body}\n{line}"
    if start is None:
        return body
    label = named or body_zone_label(body)
    tz = zone(label)
    if tz is None:
        tz, label = UTC, "UTC"
    line = f"Local time: {start.astimezone(tz):%Y-%m-%d %H:%M} ({label})"
    if _BODY_LOCAL_LINE.search(body):
        return _BODY_LOCAL_LINE.sub(lambda _m: line, body, count=1)
    lines = body.split("\n")  # where a booking made with a named zone has it: before the reference
    at = next((i for i, row in enumerate(lines) if BODY_REFERENCE.fullmatch(row)), len(lines))
    return "\n".join([*lines[:at], line, *lines[at:]])


def mark_outcome_unknown(exc: PMSError, reference: str) -> None:
    """A failure after a committed write: the booking may (partly) exist, so say so."""
    if isinstance(exc, ProviderError):
        exc.outcome_unknown = True
        exc.reference = exc.reference or reference


def say_half_cancelled(exc: PMSError, deal_id: str, meeting_id: str) -> None:
    """Put what is already done, and what to do, in front of the error of a cancel's second write."""
    state = "may not have been" if isinstance(exc, ProviderError) and exc.outcome_unknown else "could not be"
    note = (
        f"The booking is half cancelled: deal {deal_id} is already in the cancel stage, but meeting "
        f"{meeting_id} {state} marked CANCELED. Call cancel again with the same id to finish it "
        "(repeating a cancel is safe)."
    )
    exc.args = (f"{note} {exc.message}", *exc.args[1:])


def upsert_result(adapter: BaseAdapter, resp: HttpResponse, reference: str) -> dict[str, Any]:
    """The deal a batch upsert answered with; its per-input error as an ``InvalidRequestError``."""
    body = adapter.json_object(resp, "book", "the deal upsert", creates=True, reference=reference)
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0] if isinstance(errors[0], dict) else {}
        category = text(first.get("category"))
        message = text(first.get("message")) or "the deal upsert reported an error"
        raise InvalidRequestError(
            f"HubSpot book failed with HTTP {resp.status} {category or ''}: {message}".replace("  ", " "),
            status_code=resp.status,
            code=category,
            request_id=text(body.get("correlationId")),
            provider=adapter.provider.value,
            operation="book",
        )
    results = body.get("results")
    result = results[0] if isinstance(results, list) and results else None
    if not isinstance(result, dict) or not ID.fullmatch(str(result.get("id", ""))):
        raise adapter.unexpected(
            "book", "the deal upsert returned no deal id", outcome_unknown=True, reference=reference
        )
    return result
