"""Salesforce adapter: a booking is a standard ``Event``, a performance report a completed ``Task``.

Requests, fields, ids, errors and the token refresh (``salesforce_auth``): ``docs/providers/salesforce.md``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .._http import Auth, ErrorInfo, HttpResponse, Runtime
from .._ratelimit import RateLimitInfo
from .._time import UTC, parse_instant, utc_text
from ..changes import FeedPage
from ..config import SalesforceSettings
from ..errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from ..models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
)
from ..provider import Capability
from ..tokens import TokenStore
from . import salesforce_changes
from ._base import text
from .salesforce_auth import TokenRefreshAuth
from .salesforce_reads import SalesforceReads

__all__ = [
    "SalesforceAdapter",
    "TokenRefreshAuth",
    "create",
    "parse_error",
    "parse_rate_headers",
    "id_checksum",
    "is_salesforce_id",
    "soql_string",
    "soql_like_contains",
    "EVENT_PREFIX",
    "TASK_PREFIX",
    "CANCELLED_PREFIX",
]

log = logging.getLogger("pms_integration.providers.salesforce")

PROVIDER = ProviderName.SALESFORCE
BOOKED, CANCELLED = AppointmentStatus.BOOKED, AppointmentStatus.CANCELLED

#: Key prefixes of the standard objects this adapter touches (the first three id characters).
EVENT_PREFIX = "00U"
TASK_PREFIX = "00T"
CONTACT_PREFIX = "003"
LEAD_PREFIX = "00Q"
USER_PREFIX = "005"

SUBJECT_MAX = 255
DESCRIPTION_MAX = 32_000
LOCATION_MAX = 255
CANCELLED_PREFIX = "CANCELLED: "
DETAILS_MARKER = "--- booking details (pms-integration) ---"
REPORT_DATA_MARKER = "--- machine-readable ---"
REPORT_SCHEMA = "pms_integration.performance_report/1"

# Fields the adapter fills itself; ``request.extra`` may not override them, because the
# reconcile look-up depends on them (Subject carries the reference; start and owner narrow it).
_PROTECTED_EXTRA = frozenset({"Id", "Subject", "StartDateTime", "OwnerId"})
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_REFERENCE_IN_SUBJECT = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})\]\s*$")
_EVENT_FIELDS = "Id,Subject,Description,StartDateTime,EndDateTime,WhoId,ShowAs"
_ZONE_LINE = re.compile(r"^Time zone: (\S{1,64})\s*$", re.MULTILINE)
_OFFSET_ZONE = re.compile(r"^(?:UTC)?([+-])(\d{2}):(\d{2})$")
_ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_SOQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


@functools.lru_cache(maxsize=4096)
def id_checksum(id15: str) -> str:
    """The suffix of the case-safe 18-character id: which of each five characters are upper case."""
    if len(id15) != 15:
        raise ValueError("the checksum is computed over exactly 15 characters")
    blocks = (id15[i : i + 5] for i in range(0, 15, 5))
    return "".join(_CHECKSUM_ALPHABET[sum(1 << n for n, c in enumerate(b) if "A" <= c <= "Z")] for b in blocks)


def is_salesforce_id(value: object) -> bool:
    """True for a well-formed 15- or 18-character id (18: the case checksum must match)."""
    if not isinstance(value, str) or not _ID_SHAPE.fullmatch(value):
        return False
    return len(value) == 15 or value[15:] == id_checksum(value[:15])


def _check_id(value: object, field: str, prefixes: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is a valid id of the expected object, else raise ValidationError."""
    if not isinstance(value, str) or not _ID_SHAPE.fullmatch(value):
        raise ValidationError.single(field, f"must be {what}: 15 or 18 letters and digits")
    if len(value) == 18 and value[15:] != id_checksum(value[:15]):
        raise ValidationError.single(
            field,
            f"is not a valid 18-character Salesforce id: its last three characters should be "
            f"{id_checksum(value[:15])!r} (mistyped, or its upper/lower case was changed)",
        )
    if not value.startswith(prefixes):
        raise ValidationError.single(field, f"must be {what} (an id starting with {' or '.join(prefixes)})")
    return value


def soql_string(value: str) -> str:
    """A SOQL string literal (quoted, with backslash escapes)."""
    return "'" + "".join(_SOQL_ESCAPES.get(c, c) for c in value) + "'"


def soql_like_contains(value: str) -> str:
    """A SOQL ``LIKE`` pattern matching any text that contains ``value`` literally."""
    escaped = "".join(_SOQL_ESCAPES.get(c, c) for c in value).replace("%", "\\%").replace("_", "\\_")
    return "'%" + escaped + "%'"


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """Read ``Sforce-Limit-Info: api-usage=18/15000`` into the daily fields of RateLimitInfo."""
    raw = headers.get("Sforce-Limit-Info") or next(
        (v for k, v in headers.items() if k.lower() == "sforce-limit-info"), ""
    )
    for part in raw.split(";"):
        key, sep, value = part.partition("=")
        if not sep or key.strip().lower() != "api-usage":
            continue
        m = re.fullmatch(r"\s*(\d{1,12})\s*/\s*(\d{1,12})\s*", value)
        if not m:
            return None
        used, total = int(m.group(1)), int(m.group(2))
        log.info("salesforce API usage: %d of %d daily requests used", used, total)
        return RateLimitInfo(daily_remaining=max(total - used, 0), daily_limit=total)
    return None


_CODE_CLASSES: dict[str, type[APIError]] = {
    "INVALID_SESSION_ID": AuthenticationError,
    "REQUEST_LIMIT_EXCEEDED": RateLimitError,
    "ENTITY_IS_DELETED": NotFoundError,
    "NOT_FOUND": NotFoundError,
    "INSUFFICIENT_ACCESS_OR_READONLY": PermissionDeniedError,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": PermissionDeniedError,
    "DUPLICATES_DETECTED": ConflictError,
}
_RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
_HTML_TITLE = re.compile(r"<title[^>]*>([^<]{1,120})</title>", re.IGNORECASE)


def parse_error(resp: HttpResponse) -> ErrorInfo:
    """Read a Salesforce error response. Never raises, whatever the body holds.

    REST errors are ``[{"message", "errorCode", "fields"}]`` (``fields`` optional); the OAuth
    endpoint answers ``{"error", "error_description"}``; Salesforce's edge may send HTML.
    """
    try:
        body = resp.json_or_none()
    except Exception:  # noqa: BLE001 - a parser must never raise
        body = None
    if isinstance(body, list):
        body = next((e for e in body if isinstance(e, Mapping)), None)
    # 420: Salesforce Edge had no route to the instance, a transient server-side failure
    edge = ServerError if resp.status == 420 else None
    if not isinstance(body, Mapping):
        title = _HTML_TITLE.search(resp.text or "")
        what = (
            f"HTML page {title.group(1).strip()!r}" if title else "non-JSON body" if resp.text.strip() else "empty body"
        )
        return ErrorInfo(f"HTTP {resp.status} ({what})", error_class=edge)
    code = text(body.get("errorCode")) or text(body.get("statusCode")) or text(body.get("error"))
    message = text(body.get("message")) or text(body.get("error_description")) or f"HTTP {resp.status}"
    raw_fields = body.get("fields")
    fields = tuple(f for f in raw_fields if isinstance(f, str)) if isinstance(raw_fields, list) else ()
    retryable: bool | None = None
    if code in _RETRYABLE_CODES:
        retryable = True
    elif code == "REQUEST_LIMIT_EXCEEDED" and "totalrequests" in message.lower():
        retryable = False  # the org's rolling 24-hour allowance is spent: retrying in seconds cannot help
    error_class = _CODE_CLASSES.get(code or "") or edge
    return ErrorInfo(message, code=code, fields=fields, error_class=error_class, retryable=retryable)


class SalesforceAdapter(SalesforceReads):
    """The Salesforce adapter. Thread-safe; one per client."""

    provider = PROVIDER
    token_variable = "PMS_SALESFORCE_TOKEN"  # noqa: S105 - a variable name, not a secret
    parse_error: ClassVar[Callable[[HttpResponse], ErrorInfo]] = staticmethod(parse_error)
    parse_rate_headers: ClassVar[Callable[[Mapping[str, str]], RateLimitInfo | None] | None] = staticmethod(
        parse_rate_headers
    )
    settings: SalesforceSettings
    auth: TokenRefreshAuth

    def __init__(self, settings: SalesforceSettings, runtime: Runtime) -> None:
        super().__init__(settings, runtime)
        self.auth.bind(self.transport)
        self.api = f"/services/data/v{settings.api_version}"
        # Tasks belong to users; a public calendar owner (023...) cannot own one
        self.task_owner = settings.owner_id if settings.owner_id.startswith(USER_PREFIX) else None
        for name in ("owner_id", "event_record_type"):
            if getattr(settings, name) and not is_salesforce_id(getattr(settings, name)):
                log.warning("PMS_SALESFORCE_%s does not look like a valid Salesforce id (bad checksum)", name.upper())

    def make_auth(self) -> Auth:
        self.auth = TokenRefreshAuth(self.settings, clock=self.runtime.clock)
        return self.auth

    def use_token_store(self, store: TokenStore | None) -> None:
        self.auth.use_store(store)

    def available_versions(self) -> list[str]:
        """The API versions the org serves (``GET /services/data/``), oldest first."""
        body = self.transport.request("GET", "/services/data/", operation="versions").json_or_none()
        if not isinstance(body, list):
            raise self.unexpected("versions", "the versions list is not a JSON array")
        return [str(v["version"]) for v in body if isinstance(v, Mapping) and isinstance(v.get("version"), str)]

    def unsupported_reason(self, capability: Capability) -> str | None:
        if capability is Capability.WEBHOOKS:
            return (
                "Salesforce sends no simple signed webhook for Event changes (Outbound Messages and Change "
                "Data Capture need setup in the org and are not read by this library): poll changes() instead."
            )
        return super().unsupported_reason(capability)

    def observe_changes(self, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
        """The owner's changed and deleted Events since ``position`` (``salesforce_changes``)."""
        return salesforce_changes.observe_changes(self, position, now)

    def check_id(self, appointment_id: str) -> str:
        return _check_id(appointment_id, "appointment_id", (EVENT_PREFIX,), "a Salesforce Event id")

    def create_booking(self, request: AppointmentRequest) -> Appointment:
        payload = self.event_payload(request)
        body = self._create("Event", payload, "book", request.reference)
        zone = _request_zone(request)
        return Appointment(
            provider=PROVIDER,
            id=body["id"],
            status=BOOKED,
            start=request.start.astimezone(zone),
            end=request.end_time.astimezone(zone),
            reference=request.reference,
            contact_id=payload.get("WhoId"),
            title=payload["Subject"],
            raw={"create": body},
        )

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The Event an earlier attempt at ``request`` created, by owner, start and ``[reference]``."""
        where = (
            f"OwnerId = {soql_string(self.settings.owner_id)} AND StartDateTime = {utc_text(request.start)} "
            f"AND Subject LIKE {soql_like_contains(f'[{request.reference}]')}"
        )
        fields = "Id, Subject, Description, StartDateTime, EndDateTime, WhoId"
        records = self.query_all(f"SELECT {fields} FROM Event WHERE {where} LIMIT 2", "book")  # noqa: S608 - escaped
        if not records:
            return None
        if len(records) > 1:
            log.warning("salesforce book: reference %s matches several Events; using the first", request.reference)
        record = records[0]
        record_id = record.get("Id")
        if not isinstance(record_id, str) or not is_salesforce_id(record_id):
            raise self.unexpected("book", "the look-up returned an Event without a valid Id")
        status = CANCELLED if str(record.get("Subject") or "").startswith(CANCELLED_PREFIX) else BOOKED
        return _event(record_id, record, status, _zone_of(record, _request_zone(request)), {"found": record}, request)

    def read_booking(self, appointment_id: str, operation: str) -> Appointment:
        """The Event (NotFoundError if it never existed); cancelled when deleted or soft-cancelled.

        For ``cancel``, a deleted Event's times come from the recycle bin (``queryAll``), and a
        soft-cancelled one still shown as busy is cancelled again (or deleted, in delete mode).
        """
        url = f"{self.api}/sobjects/Event/{appointment_id}"
        resp = self.transport.request("GET", url, operation=operation, params={"fields": _EVENT_FIELDS}, expect=(404,))
        cancelled: str | None = None
        if resp.status == 404:
            cancelled = self._gone(resp, operation)  # NotFoundError unless it is in the recycle bin
            record: dict[str, Any] = {"Id": appointment_id, "IsDeleted": True}
            if operation == "cancel":
                where = f"FROM Event WHERE Id = {soql_string(appointment_id)}"
                rows = self.query_all(
                    f"SELECT {_EVENT_FIELDS.replace(',', ', ')} {where}", operation, resource="queryAll"
                )
                record.update(rows[0] if rows else {})
        else:
            record = self.json_object(resp, operation, "the Event record")
            marked = str(record.get("Subject") or "").startswith(CANCELLED_PREFIX)
            done = operation != "cancel" or (self.settings.cancel_mode == "soft" and record.get("ShowAs") == "Free")
            cancelled = "SOFT_CANCELLED" if marked and done else None
        raw = {"already_cancelled": cancelled, "read": record} if cancelled else {"read": record}
        return _event(appointment_id, record, CANCELLED if cancelled else BOOKED, _zone_of(record), raw)

    def write_update(self, current: Appointment, changes: AppointmentUpdate) -> Appointment:
        record = current.raw["read"]
        subject, description = str(record.get("Subject") or ""), str(record.get("Description") or "")
        fields = {
            "StartDateTime": utc_text(changes.start) if changes.start else None,
            "EndDateTime": utc_text(changes.end) if changes.end else None,
            "Location": None if changes.location is None else changes.location[:LOCATION_MAX],
            "Subject": None if changes.title is None else _retitle(subject, changes.title),
            "Description": None if changes.notes is None else _renote(description, changes.notes),
        }
        patch = {key: value for key, value in fields.items() if value is not None}
        if self._write("PATCH", f"Event/{current.id}", "update", patch):
            raise self.cancelled_error(current.id)  # deleted since the read
        start, end = changes.start or current.start, changes.end or current.end
        if start is None or end is None:
            raise self.unexpected("update", "the Event has no StartDateTime or EndDateTime")
        change_zone = _parse_zone(changes.timezone) if changes.timezone else None
        zone = _zone_of(record, change_zone, changes.start.tzinfo if changes.start else None)
        new_subject = patch.get("Subject") or subject
        return attrs.evolve(
            current,
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            reference=_reference_in(new_subject),
            title=new_subject or None,
            raw={"patch": patch, "read": record},
        )

    def write_cancel(self, current: Appointment, reason: str | None) -> Appointment:
        record, title = current.raw["read"], current.title
        done: dict[str, Any]
        if self.settings.cancel_mode != "soft":
            gone, done = self._write("DELETE", f"Event/{current.id}", "cancel"), {"deleted": True}
        else:  # keep the Event: mark its Subject, free its slot, note why
            subject = str(record.get("Subject") or "")
            when = _dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
            line = f"Cancelled by the AI receptionist at {when}." + (f" Reason: {reason}" if reason else "")
            description = str(record.get("Description") or "")
            description = (description[: DESCRIPTION_MAX - len(line) - 2] + "\n\n" + line) if description else line
            head, tail = _split(subject)
            title = subject if subject.startswith(CANCELLED_PREFIX) else _fit(CANCELLED_PREFIX + head, tail)
            patch = {"Subject": title, "ShowAs": "Free", "Description": description}
            gone, done = self._write("PATCH", f"Event/{current.id}", "cancel", patch), {"patch": patch}
        raw = {"already_cancelled": gone} if gone else done
        return attrs.evolve(
            current, status=CANCELLED, title=current.title if gone else title, raw={**raw, "read": record}
        )

    def event_payload(self, request: AppointmentRequest) -> dict[str, Any]:
        """The ``Event`` create body for ``request``. Raises ValidationError on unusable input."""
        who_id = _who_id(request)
        payload: dict[str, Any] = {
            "Subject": _fit(f"{request.title} - {request.patient.display_name}", f" [{request.reference}]"),
            "StartDateTime": utc_text(request.start),
            "EndDateTime": utc_text(request.end_time),
            "IsAllDayEvent": False,
            "ShowAs": "Busy",
            "OwnerId": self.settings.owner_id,
            "Description": _event_description(request, who_id),
        }
        if self.settings.event_record_type:
            payload["RecordTypeId"] = self.settings.event_record_type
        if who_id:
            payload["WhoId"] = who_id
        if request.location:
            payload["Location"] = request.location[:LOCATION_MAX]
        errors = [
            (f"extra.{key[:40]}", "is not a Salesforce field API name")
            if not _FIELD_NAME.fullmatch(key)
            else (f"extra.{key}", "is set by the adapter and cannot be overridden")
            for key in request.extra
            if key in _PROTECTED_EXTRA or not _FIELD_NAME.fullmatch(key)
        ]
        if errors:
            raise ValidationError(errors)
        return {**payload, **request.extra}

    def report_payload(self, report: PerformanceReport) -> dict[str, Any]:
        """The ``Task`` body for ``report`` (the same for create and update)."""
        data: dict[str, object] = {"schema": REPORT_SCHEMA, "report_id": report.id, "metrics": dict(report.metrics)}
        data.update(period_start=report.period_start.isoformat(), period_end=report.period_end.isoformat())
        machine = json.dumps(data, sort_keys=True, separators=(",", ":"))
        rendered = report.render_text()
        room = DESCRIPTION_MAX - len(machine) - len(REPORT_DATA_MARKER) - 4
        if len(rendered) > room:
            rendered = rendered[: max(room - 1, 0)] + "…"
        payload: dict[str, Any] = {
            "Subject": _fit(str(report.title), f" [{report.id}]"),
            "Status": "Completed",
            "Priority": "Normal",
            "ActivityDate": report.period_end.isoformat(),
            "Description": f"{rendered}\n\n{REPORT_DATA_MARKER}\n{machine}",
        }
        if self.task_owner:
            payload["OwnerId"] = self.task_owner
        return payload

    def find_report(self, report: PerformanceReport) -> str | None:
        where = f"Subject LIKE {soql_like_contains(f'[{report.id}]')}"
        if self.task_owner:
            where = f"OwnerId = {soql_string(self.task_owner)} AND {where}"
        records = self.query_all(f"SELECT Id, Subject FROM Task WHERE {where} LIMIT 2", "push_report")  # noqa: S608
        if not records:
            return None
        record_id = records[0].get("Id")
        if not isinstance(record_id, str) or not is_salesforce_id(record_id):
            raise self.unexpected("push_report", "the look-up returned a Task without a valid Id")
        return record_id

    def update_report(self, record_id: str, report: PerformanceReport, payload: Mapping[str, Any]) -> bool:
        if not is_salesforce_id(record_id) or not record_id.startswith(TASK_PREFIX):
            raise self.unexpected("push_report", "the report's Task id is not a Task id")
        return self._write("PATCH", f"Task/{record_id}", "push_report", dict(payload)) is None

    def create_report(self, report: PerformanceReport, payload: Mapping[str, Any]) -> str:
        return str(self._create("Task", payload, "push_report", report.id)["id"])

    def _create(self, sobject: str, payload: Mapping[str, Any], operation: str, reference: str) -> dict[str, Any]:
        """POST a record; the result, whose ``id`` is valid (else the outcome is unknown)."""
        resp = self.transport.request(
            "POST", f"{self.api}/sobjects/{sobject}/", operation=operation, json=payload, reference=reference
        )
        body = resp.json_or_none()
        record_id = body.get("id") if isinstance(body, dict) and body.get("success") is not False else None
        if not isinstance(record_id, str) or not is_salesforce_id(record_id):
            what = f"no {sobject} id in the create result"
            raise self.unexpected(operation, what, outcome_unknown=True, reference=reference)
        return dict(body)

    def _write(self, method: str, path: str, operation: str, patch: dict[str, Any] | None = None) -> str | None:
        """PATCH or DELETE ``sobjects/{path}``; ``ENTITY_IS_DELETED`` if it went to the recycle bin meanwhile."""
        resp = self.transport.request(
            method, f"{self.api}/sobjects/{path}", operation=operation, json=patch, expect=(404,)
        )
        return self._gone(resp, operation) if resp.status == 404 else None

    def _gone(self, resp: HttpResponse, operation: str) -> str:
        """For a 404 on a record: ``ENTITY_IS_DELETED`` if it is in the recycle bin, else NotFoundError."""
        info = parse_error(resp)
        if info.code == "ENTITY_IS_DELETED":
            return info.code
        code = f" {info.code}" if info.code else ""
        raise NotFoundError(
            f"Salesforce {operation} failed with HTTP 404{code}: {info.message}",
            status_code=404,
            code=info.code,
            provider=PROVIDER.value,
            operation=operation,
        )


def create(settings: SalesforceSettings, runtime: Runtime) -> SalesforceAdapter:
    """The adapter factory the client calls."""
    return SalesforceAdapter(settings, runtime)


def _event(
    event_id: str,
    record: Mapping[str, Any],
    status: AppointmentStatus,
    zone: _dt.tzinfo,
    raw: dict[str, Any],
    request: AppointmentRequest | None = None,
) -> Appointment:
    """An Appointment from an Event record, its times in ``zone`` (a look-up's request fills gaps)."""
    subject = text(record.get("Subject"))
    start = parse_instant(record.get("StartDateTime")) or (request.start if request else None)
    end = parse_instant(record.get("EndDateTime")) or (request.end_time if request else None)
    return Appointment(
        provider=PROVIDER,
        id=event_id,
        status=status,
        start=start.astimezone(zone) if start else None,
        end=end.astimezone(zone) if end else None,
        reference=request.reference if request else _reference_in(subject),
        contact_id=text(record.get("WhoId")),
        title=subject,
        raw=raw,
    )


def _fit(head: str, tail: str, limit: int = SUBJECT_MAX) -> str:
    """``head + tail`` within ``limit`` characters, shortening ``head`` (``tail`` is kept whole)."""
    if len(head) + len(tail) <= limit:
        return head + tail
    return head[: max(limit - len(tail) - 1, 0)].rstrip() + "…" + tail


def _who_id(request: AppointmentRequest) -> str | None:
    """The patient's Contact (003) or Lead (00Q) id, when the caller passed one."""
    contact_id = request.patient.contact_id
    prefixes = (CONTACT_PREFIX, LEAD_PREFIX)
    if not contact_id or not contact_id.startswith(prefixes) or not _ID_SHAPE.fullmatch(contact_id):
        return None
    return _check_id(contact_id, "patient.contact_id", prefixes, "a Salesforce Contact or Lead id")


def _event_description(request: AppointmentRequest, who_id: str | None) -> str:
    patient = request.patient
    lines = [
        *([request.notes, ""] if request.notes else []),
        DETAILS_MARKER,
        *([f"Reason: {request.reason}"] if request.reason else []),
        f"Patient: {patient.display_name}",
        *([f"Email: {patient.email}"] if patient.email else []),
        *([f"Phone: {patient.phone}"] if patient.phone else []),
        *([f"Patient id: {patient.contact_id}"] if patient.contact_id and not who_id else []),
        f"Time zone: {_zone_label(request)}",
        f"Booking reference: {request.reference}",
        "Booked by the AI receptionist (pms-integration).",
    ]
    return _cut("\n".join(lines))


def _cut(description: str) -> str:
    return description if len(description) <= DESCRIPTION_MAX else description[: DESCRIPTION_MAX - 1] + "…"


def _reference_in(subject: str | None) -> str | None:
    m = _REFERENCE_IN_SUBJECT.search(subject or "")
    return m.group(1) if m else None


def _split(subject: str) -> tuple[str, str]:
    """``subject`` as its text and its `` [reference]`` marker ("" when it has none)."""
    m = _REFERENCE_IN_SUBJECT.search(subject)
    return (subject[: m.start()].rstrip(), f" [{m.group(1)}]") if m else (subject, "")


def _retitle(current: str, title: str) -> str:
    """A new Subject with ``title`` in front, keeping the patient name and reference marker."""
    prefix = CANCELLED_PREFIX if current.startswith(CANCELLED_PREFIX) else ""
    rest, tail = _split(current[len(prefix) :])
    _, sep, name = rest.rpartition(" - ")
    return _fit(prefix + (f"{title} - {name}" if sep and name else title), tail)


def _renote(current: str, notes: str) -> str:
    """A new Description with ``notes`` replacing the free-text part above the details block."""
    index = current.find(DETAILS_MARKER)
    rest = current[index:] if index >= 0 else current
    return _cut(f"{notes}\n\n{rest}" if rest else notes)


def _zone_label(request: AppointmentRequest) -> str:
    """The booking's zone as written on the Event: an IANA name, else the start's UTC offset."""
    if request.timezone:
        return request.timezone
    minutes = int((request.start.utcoffset() or _dt.timedelta(0)).total_seconds() // 60)
    return f"UTC{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _parse_zone(label: str) -> _dt.tzinfo | None:
    """An IANA name or a ``UTC-05:00`` offset as a tzinfo; None if it is neither."""
    try:
        if _OFFSET_ZONE.fullmatch(label):
            return _dt.datetime.strptime(label.removeprefix("UTC"), "%z").tzinfo
        return ZoneInfo(label)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _request_zone(request: AppointmentRequest) -> _dt.tzinfo:
    return _parse_zone(_zone_label(request)) or request.start.tzinfo or UTC


def _zone_of(record: Mapping[str, Any], *fallbacks: _dt.tzinfo | None) -> _dt.tzinfo:
    """The zone on the Event's ``Time zone:`` line; else the first fallback given; else UTC."""
    description = record.get("Description")
    index = description.find(DETAILS_MARKER) if isinstance(description, str) else -1
    m = _ZONE_LINE.search(str(description), index) if index >= 0 else None
    recorded = _parse_zone(m.group(1)) if m else None
    return next((z for z in (recorded, *fallbacks) if z is not None), UTC)


_RENAMED: dict[str, Any] = {
    "SalesforceProvider": SalesforceAdapter,
    "parse_limit_info": parse_rate_headers,
    "wire_datetime": utc_text,
    "soql_datetime": utc_text,
    "parse_salesforce_datetime": parse_instant,
}


def __getattr__(name: str) -> Any:
    if name not in _RENAMED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = _RENAMED[name]
    warnings.warn(f"{name} is deprecated; use {new.__module__}.{new.__name__}", DeprecationWarning, stacklevel=2)
    return new
