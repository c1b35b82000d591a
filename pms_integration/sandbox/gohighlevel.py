"""GoHighLevel emulator: API v2 (LeadConnector) under ``/ghl``, legacy API v1 under ``/ghl/v1``.

State is in memory: one location, one calendar, its contacts, events and contact notes; v1 and v2
share it (a v1 booking shows up in a v2 event list and the other way round).

v2, as the official OpenAPI spec and the observed API behave:

* ``Version`` header first (NestJS middleware runs before the auth guard): missing gives
  401 ``version header was not found.``, a value that is not a supported API version gives 401
  ``version header is invalid``. Like the live API, any supported version (``2021-04-15``,
  ``2021-07-28``, ``2023-02-21``, ``v3``) is accepted on any endpoint; the spec's per-endpoint
  value is what the library sends, and the contract tests check that.
* Bearer token, else 401 ``UnauthorizedDTO``.
* Bodies are whitelisted like the API's validation pipe: an unknown property gives 422
  ``property X should not exist``; wrong types, enum values and missing required fields give
  422 with class-validator style messages (``message`` is a list).
* ``locationId`` must be the sandbox location (403 otherwise); ids must exist (404).
* The calendar has open hours (``open_hours``, in ``calendar_timezone``; by default every day
  07:00-20:00 America/New_York). A booking or move outside them gives 400 ``The slot you have
  selected is no longer available.``, as does one overlapping an active event of the calendar;
  ``ignoreFreeSlotValidation: true`` skips both checks. Cancelled events free their slot. Set
  ``open_hours = None`` on the emulator for a calendar that is always open (stress tests that
  book round the clock).
* 429 answers carry the ``X-RateLimit-*`` headers and no ``Retry-After`` (GoHighLevel documents
  none); the window to wait is ``X-RateLimit-Interval-Milliseconds``. An injected
  ``Fault.rate_limit(retry_after=s)`` becomes an interval of ``s`` seconds.
* A route the emulator does not implement answers 501 ``not emulated: <METHOD> <path>``, so it
  is never mistaken for a record that does not exist.
* ``POST /contacts/search`` (the advanced search) understands ``filters`` of
  ``{"field", "operator": "eq", "value"}`` on ``email``, ``phone``, ``firstName``,
  ``lastName`` and ``id``, groups ``{"group": "AND" | "OR", "filters": [...]}``, ``page`` and
  ``pageLimit``; it answers ``{"contacts": [...], "total": n}``.

v1: bearer token (401 ``{"msg": "Unauthorized"}``), 422 field maps
(``{"selectedSlot": {"message": ..., "rule": "required"}}``), ``selectedTimezone`` must be an
IANA zone, the slot length is the calendar's (``slot_minutes``), status changes through
``PUT /appointments/{id}/status``.

Operation names for fault injection: ``contacts.search``, ``contacts.upsert``, ``notes.list``, ``notes.create``,
``notes.update``, ``appointments.create``, ``appointments.update``, ``appointments.get``,
``appointments.list``, ``appointments.delete``, and ``v1.appointments.create`` / ``.list`` /
``.get`` / ``.update`` / ``.status`` / ``.delete``.
"""

from __future__ import annotations

import collections
import datetime as _dt
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..models import ProviderName, parse_iso_datetime
from ._core import Emulator, Reply, Route, Sandbox, SandboxRequest, SandboxResponse, json_response

__all__ = ["GoHighLevelEmulator", "EMULATOR", "CALENDARS_VERSION", "CONTACTS_VERSION", "DEFAULT_OPEN_HOURS"]

CALENDARS_VERSION = "2021-04-15"
CONTACTS_VERSION = "2021-07-28"
KNOWN_VERSIONS = frozenset({"2021-04-15", "2021-07-28", "2023-02-21", "v3"})
SLOT_TAKEN = "The slot you have selected is no longer available."
#: every day 07:00-20:00: wide enough for the dates the docs, examples and tests book
DEFAULT_OPEN_HOURS: dict[int, tuple[_dt.time, _dt.time]] = {day: (_dt.time(7), _dt.time(20)) for day in range(7)}
#: the burst window GoHighLevel documents (100 requests per 10 s)
BURST_WINDOW_MS = 10_000
_ID_ALPHABET = string.ascii_letters + string.digits
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_APPOINTMENT_STATUSES = ("new", "confirmed", "cancelled", "showed", "noshow", "invalid")
_V1_STATUSES = ("confirmed", "cancelled", "showed", "noshow", "invalid")
_MEETING_TYPES = ("custom", "zoom", "gmeet", "phone", "address", "ms_teams", "google")

# -- body schemas (the spec's DTOs) -----------------------------------------------------------
# kind: "string", "boolean", "object", "array<string>", "array", "any", or a tuple of enum values;
# a trailing "?" on the kind allows null (the spec's ``nullable: true``).
_Field = str | tuple[str, ...]

_EDIT_FIELDS: dict[str, _Field] = {
    "title": "string",
    "meetingLocationType": _MEETING_TYPES,
    "meetingLocationId": "string",
    "overrideLocationConfig": "boolean",
    "appointmentStatus": _APPOINTMENT_STATUSES,
    "assignedUserId": "string",
    "description": "string",
    "address": "string",
    "ignoreDateRange": "boolean",
    "toNotify": "boolean",
    "ignoreFreeSlotValidation": "boolean",
    "rrule": "string",
    "calendarId": "string",
    "startTime": "string",
    "endTime": "string",
}
_CREATE_FIELDS: dict[str, _Field] = {**_EDIT_FIELDS, "locationId": "string", "contactId": "string"}
_CREATE_REQUIRED = ("calendarId", "locationId", "contactId", "startTime")
_UPSERT_FIELDS: dict[str, _Field] = {
    "firstName": "string?",
    "lastName": "string?",
    "name": "string?",
    "email": "string?",
    "locationId": "string",
    "gender": "string",
    "phone": "string?",
    "address1": "string?",
    "city": "string?",
    "state": "string?",
    "postalCode": "string",
    "website": "string?",
    "timezone": "string?",
    "dnd": "boolean",
    "dndSettings": "object",
    "inboundDndSettings": "object",
    "tags": "array<string>",
    "customFields": "array",
    "source": "string",
    "dateOfBirth": "any",
    "country": "string",
    "companyName": "string?",
    "assignedTo": "string",
    "createNewIfDuplicateAllowed": "boolean",
}
_NOTE_FIELDS: dict[str, _Field] = {
    "userId": "string",
    "body": "string",
    "title": "string",
    "color": "string",
    "pinned": "boolean",
}
_V1_CREATE_REQUIRED = {
    "calendarId": "The calendar id field is mandatory.",
    "selectedSlot": "The selected slot field is mandatory.",
    "selectedTimezone": "The selected timezone field is mandatory.",
}


def _new_id() -> str:
    """A 20-character id like GoHighLevel's (``ocQHyuzHvysMo5N5VsXc``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: object) -> _dt.datetime | None:
    parsed = parse_iso_datetime(value)
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _check_fields(body: Mapping[str, Any], fields: Mapping[str, _Field], required: tuple[str, ...]) -> list[str]:
    """class-validator style messages for ``body`` against a DTO (empty when valid)."""
    messages = [f"property {key} should not exist" for key in body if key not in fields]
    for key in required:
        if body.get(key) in (None, ""):
            messages.append(f"{key} should not be empty")
    for key, kind in fields.items():
        if key not in body or (key in required and body.get(key) in (None, "")):
            continue
        value = body[key]
        nullable = isinstance(kind, str) and kind.endswith("?")
        base = kind[:-1] if isinstance(kind, str) and nullable else kind
        if value is None:
            if not nullable and base != "any":
                messages.append(f"{key} must be {_describe(base)}")
            continue
        if isinstance(base, tuple):
            if value not in base:
                messages.append(f"{key} must be one of the following values: {', '.join(base)}")
        elif base == "string" and not isinstance(value, str):
            messages.append(f"{key} must be a string")
        elif base == "boolean" and not isinstance(value, bool):
            messages.append(f"{key} must be a boolean value")
        elif base == "object" and not isinstance(value, dict):
            messages.append(f"{key} must be an object")
        elif base in ("array", "array<string>") and not isinstance(value, list):
            messages.append(f"{key} must be an array")
        elif base == "array<string>" and not all(isinstance(v, str) for v in value):
            messages.append(f"each value in {key} must be a string")
    return messages


def _describe(kind: _Field) -> str:
    if isinstance(kind, tuple):
        return "one of the following values: " + ", ".join(kind)
    return {"string": "a string", "boolean": "a boolean value", "object": "an object"}.get(kind, "an array")


class GoHighLevelEmulator(Emulator):
    """In-memory GoHighLevel location with one calendar (see the module docstring)."""

    provider = ProviderName.GOHIGHLEVEL
    prefix = "/ghl"
    #: the calendar's slot length, used when a booking has no end (v1 never has one)
    slot_minutes = 30
    #: the zone the calendar's open hours are in
    calendar_timezone = "America/New_York"

    def __init__(self, sandbox: Sandbox) -> None:
        #: weekday (Monday = 0) -> (opening, closing) in ``calendar_timezone``; a missing day is
        #: closed. ``None``: always open (no open-hours check at all).
        self.open_hours: dict[int, tuple[_dt.time, _dt.time]] | None = dict(DEFAULT_OPEN_HOURS)
        self.location_id = _new_id()
        self.calendar_id = _new_id()
        self.user_id = _new_id()
        self._local = threading.local()
        self._seen: collections.deque[float] = collections.deque()
        self._daily = 0
        self.contacts: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        super().__init__(sandbox)

    # -- Emulator API ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        cid, nid, eid = r"(?P<contact_id>[^/]+)", r"(?P<note_id>[^/]+)", r"(?P<event_id>[^/]+)"
        cal, con = self._v2(CALENDARS_VERSION), self._v2(CONTACTS_VERSION)
        return [
            Route("POST", r"/contacts/upsert", con(self._upsert), "contacts.upsert", True),
            Route("POST", r"/contacts/search", con(self._search_contacts), "contacts.search"),
            Route("GET", rf"/contacts/{cid}/notes", con(self._list_notes), "notes.list"),
            Route("POST", rf"/contacts/{cid}/notes", con(self._create_note), "notes.create", True),
            Route("GET", rf"/contacts/{cid}/notes/{nid}", con(self._get_note), "notes.get"),
            Route("PUT", rf"/contacts/{cid}/notes/{nid}", con(self._update_note), "notes.update", True),
            Route("POST", r"/calendars/events/appointments", cal(self._create_event), "appointments.create", True),
            Route("GET", rf"/calendars/events/appointments/{eid}", cal(self._get_event), "appointments.get"),
            Route("PUT", rf"/calendars/events/appointments/{eid}", cal(self._edit_event), "appointments.update", True),
            Route("GET", r"/calendars/events", cal(self._list_events), "appointments.list"),
            Route("DELETE", rf"/calendars/events/{eid}", cal(self._delete_event), "appointments.delete", True),
            Route("POST", r"/v1/appointments/?", self._v1(self._v1_create), "v1.appointments.create", True),
            Route("GET", r"/v1/appointments/?", self._v1(self._v1_list), "v1.appointments.list"),
            Route("GET", rf"/v1/appointments/{eid}", self._v1(self._v1_get), "v1.appointments.get"),
            Route("PUT", rf"/v1/appointments/{eid}", self._v1(self._v1_update), "v1.appointments.update", True),
            Route("PUT", rf"/v1/appointments/{eid}/status", self._v1(self._v1_status), "v1.appointments.status", True),
            Route("DELETE", rf"/v1/appointments/{eid}", self._v1(self._v1_delete), "v1.appointments.delete", True),
        ]

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_GHL_API_KEY": self.token,
            "PMS_GHL_LOCATION_ID": self.location_id,
            "PMS_GHL_CALENDAR_ID": self.calendar_id,
            "PMS_GHL_BASE_URL": base_url,
            "PMS_GHL_API_VERSION": "v2",
        }

    def state(self) -> dict[str, Any]:
        return {
            "location_id": self.location_id,
            "calendar_id": self.calendar_id,
            "bookings": [self._public(e) for e in self.events.values()],
            "contacts": [dict(c) for c in self.contacts.values()],
            "notes": [dict(n) for n in self.notes.values()],
        }

    def reset(self) -> None:
        self.contacts.clear()
        self.events.clear()
        self.notes.clear()
        self._seen.clear()
        self._daily = 0

    def match(self, method: str, path: str) -> Any:
        # remember which API generation the request speaks, so error bodies take its shape
        self._local.v1 = path == "/v1" or path.startswith("/v1/")
        return super().match(method, path)

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        headers: dict[str, str] = {}
        if status == 429:
            # GoHighLevel sends no Retry-After: the quota headers say how long the window is
            interval_ms = BURST_WINDOW_MS if retry_after is None else max(int(retry_after * 1000), 1)
            headers = self.rate_limit_headers(0, 100, interval_ms)
        elif retry_after is not None:
            headers = {"Retry-After": f"{retry_after:g}"}
        if getattr(self._local, "v1", False):
            return json_response(status, {"msg": message or _REASONS.get(status, "Error")}, headers)
        if message is None:
            message = {
                401: "Invalid token: access token is invalid",
                429: "Too Many Requests",
                500: "Internal server error",
            }.get(status, _REASONS.get(status, "Error"))
        body: dict[str, Any] = {
            "statusCode": status,
            "message": message,
            "error": _REASONS.get(status, "Error"),
            "traceId": str(uuid.uuid4()),
        }
        return json_response(status, body, headers)

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        """501 for a route the emulator lacks: not a 404 that reads as "no such record"."""
        route = f"{req.method} {self.prefix}{req.path.split('?')[0]}"
        return self.error_response(
            501,
            message=f"not emulated: {route} is not implemented by the pms-integration GoHighLevel sandbox",
        )

    def rate_limit_headers(self, remaining: int, limit: int, interval_ms: int) -> dict[str, str]:
        return {
            "X-RateLimit-Remaining": str(max(remaining, 0)),
            "X-RateLimit-Max": str(limit),
            "X-RateLimit-Interval-Milliseconds": str(interval_ms),
            "X-RateLimit-Limit-Daily": "200000",
            "X-RateLimit-Daily-Remaining": str(max(200_000 - self._daily, 0)),
        }

    # -- plumbing ----------------------------------------------------------------------------

    def _quota_headers(self) -> dict[str, str]:
        """The burst and daily quota headers GoHighLevel sends on every response (100 / 10 s)."""
        now = time.monotonic()
        with self.lock:
            self._daily += 1
            self._seen.append(now)
            while self._seen and self._seen[0] <= now - 10:
                self._seen.popleft()
            used = len(self._seen)
        return self.rate_limit_headers(100 - used, 100, 10_000)

    def _v2(
        self, version: str
    ) -> Callable[[Callable[[SandboxRequest, dict[str, str]], SandboxResponse]], Callable[..., SandboxResponse]]:
        def wrap(
            handler: Callable[[SandboxRequest, dict[str, str]], SandboxResponse],
        ) -> Callable[[SandboxRequest, dict[str, str]], SandboxResponse]:
            def run(req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
                self._local.v1 = False
                sent = req.header("Version")
                if sent is None:
                    return self.error_response(401, message="version header was not found.")
                if sent.strip() not in KNOWN_VERSIONS:  # the live API takes any supported version
                    return self.error_response(401, message="version header is invalid")
                denied = self.check_auth(req)
                if denied is not None:
                    return denied
                response = handler(req, params)
                response.headers = {**self._quota_headers(), **response.headers}
                return response

            return run

        return wrap

    def _v1(
        self, handler: Callable[[SandboxRequest, dict[str, str]], SandboxResponse]
    ) -> Callable[[SandboxRequest, dict[str, str]], SandboxResponse]:
        def run(req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
            self._local.v1 = True
            if req.bearer() != self.token:
                return json_response(401, {"msg": "Unauthorized"})
            response = handler(req, params)
            response.headers = {**self._quota_headers(), **response.headers}
            return response

        return run

    def _body(self, req: SandboxRequest) -> dict[str, Any]:
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            raise Reply(self.error_response(400, message="Unexpected token in JSON body")) from None
        if not isinstance(body, dict):
            raise Reply(self.error_response(400, message="The request body must be a JSON object"))
        return body

    def _invalid(self, messages: list[str]) -> Reply:
        return Reply(
            json_response(
                422,
                {
                    "statusCode": 422,
                    "message": messages,
                    "error": "Unprocessable Entity",
                    "traceId": str(uuid.uuid4()),
                },
            )
        )

    def _validate(self, body: Mapping[str, Any], fields: Mapping[str, _Field], required: tuple[str, ...]) -> None:
        messages = _check_fields(body, fields, required)
        if messages:
            raise self._invalid(messages)

    def _check_location(self, location_id: object) -> None:
        if location_id != self.location_id:
            raise Reply(self.error_response(403, message="The token does not have access to this location."))

    def _contact(self, contact_id: str) -> dict[str, Any]:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise Reply(self.error_response(404, message="Contact not found"))
        return contact

    # -- contacts and notes ------------------------------------------------------------------

    def _find_contact(self, email: object, phone: object) -> dict[str, Any] | None:
        for contact in self.contacts.values():
            if isinstance(email, str) and email and contact.get("email", "").lower() == email.lower():
                return contact
        for contact in self.contacts.values():
            if isinstance(phone, str) and phone and contact.get("phone") == phone:
                return contact
        return None

    def _store_contact(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Match on e-mail, then phone; update the match or create a contact."""
        existing = self._find_contact(fields.get("email"), fields.get("phone"))
        stamp = _now()
        if existing is None:
            existing = {"id": _new_id(), "locationId": self.location_id, "dateAdded": stamp}
            self.contacts[existing["id"]] = existing
            new = True
        else:
            new = False
        for key, value in fields.items():
            if key not in ("locationId", "createNewIfDuplicateAllowed") and value is not None:
                existing[key] = value
        if isinstance(existing.get("email"), str):
            existing["email"] = existing["email"].lower()
        names = [existing.get("firstName"), existing.get("lastName")]
        if any(isinstance(n, str) and n for n in names) and "name" not in fields:
            existing["name"] = " ".join(n for n in names if isinstance(n, str) and n)
        existing["dateUpdated"] = stamp
        return existing, new

    def _upsert(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._validate(body, _UPSERT_FIELDS, ("locationId",))
        self._check_location(body["locationId"])
        with self.lock:
            contact, new = self._store_contact(body)
            return json_response(200, {"new": new, "contact": dict(contact), "traceId": str(uuid.uuid4())})

    def _search_contacts(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        messages = []
        if not isinstance(body.get("locationId"), str) or not body.get("locationId"):
            messages.append("locationId should not be empty")
        for key in ("page", "pageLimit"):
            value = body.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                messages.append(f"{key} must be a positive number")
        filters = body.get("filters", [])
        if not isinstance(filters, list):
            messages.append("filters must be an array")
            filters = []
        if messages:
            raise self._invalid(messages)
        self._check_location(body["locationId"])
        page, limit = int(body.get("page", 1)), min(int(body.get("pageLimit", 20)), 500)
        with self.lock:
            found = [dict(c) for c in self.contacts.values() if all(self._matches(c, f) for f in filters)]
        found.sort(key=lambda c: str(c.get("dateAdded", "")), reverse=True)
        return json_response(200, {"contacts": found[(page - 1) * limit : page * limit], "total": len(found)})

    def _matches(self, contact: Mapping[str, Any], condition: object) -> bool:
        """One search filter (or filter group) against a contact; a bad filter is a 422."""
        if not isinstance(condition, dict):
            raise self._invalid(["each value in filters must be an object"])
        if "group" in condition:
            group, members = condition.get("group"), condition.get("filters")
            if group not in ("AND", "OR") or not isinstance(members, list):
                raise self._invalid(["group must be one of the following values: AND, OR, with a filters array"])
            results = [self._matches(contact, member) for member in members]
            return all(results) if group == "AND" else any(results)
        field, operator, value = condition.get("field"), condition.get("operator"), condition.get("value")
        if field not in ("email", "phone", "firstName", "lastName", "id") or operator != "eq":
            raise self._invalid([f"filter {field!r} with operator {operator!r} is not supported by the sandbox"])
        if not isinstance(value, str):
            raise self._invalid(["value must be a string"])
        actual = contact.get(str(field))
        if not isinstance(actual, str):
            return False
        if field in ("email", "firstName", "lastName"):
            return actual.lower() == value.lower()
        return actual == value

    def _list_notes(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            self._contact(params["contact_id"])
            notes = [n for n in self.notes.values() if n["contactId"] == params["contact_id"]]
            notes.sort(key=lambda n: n["dateAdded"], reverse=True)
            return json_response(200, {"notes": [dict(n) for n in notes]})

    def _create_note(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._validate(body, _NOTE_FIELDS, ("body",))
        with self.lock:
            self._contact(params["contact_id"])
            note = {
                "id": _new_id(),
                "body": body["body"],
                "userId": body.get("userId", ""),
                "dateAdded": _now(),
                "contactId": params["contact_id"],
                "title": body.get("title", ""),
                "color": body.get("color", ""),
                "pinned": body.get("pinned", False),
            }
            self.notes[note["id"]] = note
            return json_response(201, {"note": dict(note)})

    def _note(self, params: dict[str, str]) -> dict[str, Any]:
        self._contact(params["contact_id"])
        note = self.notes.get(params["note_id"])
        if note is None or note["contactId"] != params["contact_id"]:
            raise Reply(self.error_response(404, message="Note not found"))
        return note

    def _get_note(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            return json_response(200, {"note": dict(self._note(params))})

    def _update_note(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._validate(body, _NOTE_FIELDS, ())
        with self.lock:
            note = self._note(params)
            note.update(body)
            return json_response(200, {"note": dict(note)})

    # -- events ------------------------------------------------------------------------------

    def _times(self, start_text: object, end_text: object, *, v1: bool = False) -> tuple[_dt.datetime, _dt.datetime]:
        start = _parse_iso(start_text)
        if start is None and v1:
            raise self._v1_invalid("selectedSlot", "The selected slot must be a date with an offset.", "date")
        if start is None:
            raise self._invalid(["startTime must be a valid ISO 8601 date string with an offset"])
        if end_text is None:
            return start, start + _dt.timedelta(minutes=self.slot_minutes)
        end = _parse_iso(end_text)
        if end is None:
            raise self._invalid(["endTime must be a valid ISO 8601 date string with an offset"])
        if end <= start:
            raise Reply(self.error_response(400, message="endTime must be after startTime"))
        return start, end

    def is_open(self, start: _dt.datetime, end: _dt.datetime) -> bool:
        """Whether ``start``-``end`` lies within one day's open hours of the calendar."""
        if self.open_hours is None:
            return True
        zone = ZoneInfo(self.calendar_timezone)
        local_start, local_end = start.astimezone(zone), end.astimezone(zone)
        hours = self.open_hours.get(local_start.weekday())
        if hours is None:
            return False
        opening = _dt.datetime.combine(local_start.date(), hours[0])
        closing = _dt.datetime.combine(local_start.date(), hours[1])
        return opening <= local_start.replace(tzinfo=None) and local_end.replace(tzinfo=None) <= closing

    def _check_free(self, start: _dt.datetime, end: _dt.datetime, *, ignore: str | None = None, v1: bool) -> None:
        if not self.is_open(start, end):
            if v1:
                raise self._v1_invalid("selectedSlot", SLOT_TAKEN, "slot")
            raise Reply(self.error_response(400, message=SLOT_TAKEN))
        for event in self.events.values():
            if event["id"] == ignore or event["appointmentStatus"] == "cancelled":
                continue
            if event["start"] < end and start < event["end"]:
                if v1:
                    raise self._v1_invalid("selectedSlot", SLOT_TAKEN, "slot")
                raise Reply(self.error_response(400, message=SLOT_TAKEN))

    def _check_calendar(self, calendar_id: object, *, v1: bool = False) -> None:
        if calendar_id != self.calendar_id:
            if v1:
                raise self._v1_invalid("calendarId", "The calendar id is invalid.", "exists")
            raise Reply(self.error_response(400, message="Calendar not found"))

    def _response_view(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``AppointmentSchemaResponse``."""
        return {
            "id": event["id"],
            "calendarId": event["calendarId"],
            "locationId": event["locationId"],
            "contactId": event["contactId"],
            "startTime": event["startTime"],
            "endTime": event["endTime"],
            "title": event["title"],
            "meetingLocationType": event["meetingLocationType"],
            "appointmentStatus": event["appointmentStatus"],
            "assignedUserId": event["assignedUserId"],
            "address": event["address"],
            "isRecurring": False,
        }

    def _event_view(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``CalendarEventDTO``."""
        return {
            "id": event["id"],
            "address": event["address"],
            "title": event["title"],
            "calendarId": event["calendarId"],
            "locationId": event["locationId"],
            "contactId": event["contactId"],
            "groupId": "",
            "appointmentStatus": event["appointmentStatus"],
            "assignedUserId": event["assignedUserId"],
            "users": [event["assignedUserId"]],
            "notes": event["notes"],
            "description": event["description"],
            "isRecurring": False,
            "startTime": event["startTime"],
            "endTime": event["endTime"],
            "dateAdded": event["dateAdded"],
            "dateUpdated": event["dateUpdated"],
            "createdBy": {"source": event["source"], "userId": ""},
        }

    def _v1_view(self, event: Mapping[str, Any], *, with_contact: bool) -> dict[str, Any]:
        view = {
            "id": event["id"],
            "calendarId": event["calendarId"],
            "contactId": event["contactId"],
            "status": "booked",
            "appoinmentStatus": event["appointmentStatus"],  # sic: v1 spells it so
            "title": event["title"],
            "notes": event["notes"],
            "address": event["address"],
            "startTime": event["start"]
            .astimezone(_dt.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "endTime": event["end"]
            .astimezone(_dt.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "selectedTimezone": event["selectedTimezone"],
        }
        if with_contact:
            view["contact"] = dict(self.contacts.get(event["contactId"], {}))
        return view

    def _public(self, event: Mapping[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in event.items() if k not in ("start", "end")}
        view["start"] = event["start"].isoformat()
        view["end"] = event["end"].isoformat()
        return view

    def _event(self, event_id: str, *, v1: bool = False) -> dict[str, Any]:
        event = self.events.get(event_id)
        if event is None:
            if v1:
                raise Reply(json_response(404, {"msg": "Appointment not found"}))
            raise Reply(self.error_response(404, message="Appointment not found"))
        return event

    def _new_event(self, **fields: Any) -> dict[str, Any]:
        stamp = _now()
        event = {
            "id": _new_id(),
            "calendarId": self.calendar_id,
            "locationId": self.location_id,
            "title": "",
            "description": "",
            "notes": "",
            "address": "",
            "meetingLocationType": "default",
            "appointmentStatus": "confirmed",
            "assignedUserId": self.user_id,
            "selectedTimezone": "",
            "dateAdded": stamp,
            "dateUpdated": stamp,
            "source": "third_party",
        }
        event.update(fields)
        self.events[event["id"]] = event
        return event

    def _create_event(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._validate(body, _CREATE_FIELDS, _CREATE_REQUIRED)
        self._check_location(body["locationId"])
        with self.lock:
            self._check_calendar(body["calendarId"])
            self._contact(body["contactId"])
            start, end = self._times(body["startTime"], body.get("endTime"))
            if not body.get("ignoreFreeSlotValidation"):
                self._check_free(start, end, v1=False)
            event = self._new_event(
                contactId=body["contactId"],
                start=start,
                end=end,
                startTime=body["startTime"],
                endTime=body.get("endTime") or end.isoformat(),
                title=body.get("title", ""),
                description=body.get("description", ""),
                address=body.get("address", ""),
                meetingLocationType=body.get("meetingLocationType", "custom" if body.get("address") else "default"),
                appointmentStatus=body.get("appointmentStatus", "confirmed"),
                assignedUserId=body.get("assignedUserId", self.user_id),
            )
            return json_response(200, self._response_view(event))

    def _edit_event(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._validate(body, _EDIT_FIELDS, ())
        with self.lock:
            event = self._event(params["event_id"])
            if "calendarId" in body:
                self._check_calendar(body["calendarId"])
            if "startTime" in body or "endTime" in body:
                start_text = body.get("startTime", event["startTime"])
                end_text = body.get("endTime")
                if end_text is None:
                    # keep the length when only the start moves
                    moved = _parse_iso(start_text)
                    end_text = (moved + (event["end"] - event["start"])).isoformat() if moved else None
                start, end = self._times(start_text, end_text)
                status = body.get("appointmentStatus", event["appointmentStatus"])
                if status != "cancelled" and not body.get("ignoreFreeSlotValidation"):
                    self._check_free(start, end, ignore=event["id"], v1=False)
                event.update(start=start, end=end, startTime=start_text, endTime=end_text)
            for key in (
                "title",
                "description",
                "address",
                "appointmentStatus",
                "assignedUserId",
                "meetingLocationType",
            ):
                if key in body:
                    event[key] = body[key]
            event["dateUpdated"] = _now()
            return json_response(200, self._response_view(event))

    def _get_event(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            return json_response(200, {"event": self._event_view(self._event(params["event_id"]))})

    def _delete_event(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            self._event(params["event_id"])
            del self.events[params["event_id"]]
            return json_response(201, {"succeeded": True})

    def _window(self, req: SandboxRequest, start_key: str, end_key: str) -> tuple[_dt.datetime, _dt.datetime] | None:
        try:
            start_ms, end_ms = int(req.arg(start_key) or ""), int(req.arg(end_key) or "")
        except ValueError:
            return None
        to_dt = _dt.datetime.fromtimestamp
        return to_dt(start_ms / 1000, _dt.timezone.utc), to_dt(end_ms / 1000, _dt.timezone.utc)

    def _list_events(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        messages = [f"{key} should not be empty" for key in ("locationId", "startTime", "endTime") if not req.arg(key)]
        if not any(req.arg(k) for k in ("calendarId", "userId", "groupId")):
            messages.append("Either of calendarId, userId or groupId is required")
        if messages:
            raise self._invalid(messages)
        self._check_location(req.arg("locationId"))
        window = self._window(req, "startTime", "endTime")
        if window is None:
            raise self._invalid(["startTime and endTime must be epoch milliseconds"])
        calendar_id, user_id = req.arg("calendarId"), req.arg("userId")
        with self.lock:
            events = [
                self._event_view(e)
                for e in sorted(self.events.values(), key=lambda e: e["start"])
                if e["start"] < window[1]
                and window[0] < e["end"]
                and (calendar_id is None or e["calendarId"] == calendar_id)
                and (user_id is None or e["assignedUserId"] == user_id)
            ]
        return json_response(200, {"events": events})

    # -- v1 ----------------------------------------------------------------------------------

    def _v1_invalid(self, field: str, message: str, rule: str) -> Reply:
        return Reply(json_response(422, {field: {"message": message, "rule": rule}}))

    def _v1_zone(self, body: Mapping[str, Any]) -> str:
        zone = body.get("selectedTimezone")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise self._v1_invalid("selectedTimezone", "The selected timezone is invalid.", "timezone") from None
        return str(zone)

    def _v1_required(self, body: Mapping[str, Any], required: Mapping[str, str]) -> None:
        missing = {
            key: {"message": message, "rule": "required"}
            for key, message in required.items()
            if not isinstance(body.get(key), str) or not body.get(key)
        }
        if missing:
            raise Reply(json_response(422, missing))

    def _v1_create(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._v1_required(body, _V1_CREATE_REQUIRED)
        if not body.get("email") and not body.get("phone"):
            raise self._v1_invalid("email or phone", "The email or phone field is mandatory.", "required")
        zone = self._v1_zone(body)
        with self.lock:
            self._check_calendar(body["calendarId"], v1=True)
            start, end = self._times(body["selectedSlot"], None, v1=True)
            self._check_free(start, end, v1=True)
            fields = {
                k: body[k]
                for k in ("email", "phone", "firstName", "lastName", "name", "address1", "city", "state", "website")
                if isinstance(body.get(k), str) and body[k]
            }
            contact, _ = self._store_contact(fields)
            event = self._new_event(
                contactId=contact["id"],
                start=start,
                end=end,
                startTime=start.isoformat(),
                endTime=end.isoformat(),
                title=body.get("title", "") if isinstance(body.get("title"), str) else "",
                notes=body.get("calendarNotes", "") if isinstance(body.get("calendarNotes"), str) else "",
                selectedTimezone=zone,
                source="public_api_v1",
            )
            return json_response(200, {"id": event["id"], "contactId": contact["id"], "contact": dict(contact)})

    def _v1_list(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        missing = {
            key: {"message": f"The {label} field is mandatory.", "rule": "required"}
            for key, label in (("startDate", "start date"), ("endDate", "end date"))
            if not req.arg(key)
        }
        if missing:
            raise Reply(json_response(422, missing))
        if not any(req.arg(k) for k in ("calendarId", "userId", "teamId")):
            raise self._v1_invalid("calendarId", "One of calendarId, userId or teamId is mandatory.", "required")
        window = self._window(req, "startDate", "endDate")
        if window is None:
            raise self._v1_invalid("startDate", "The start date must be epoch milliseconds.", "integer")
        calendar_id = req.arg("calendarId")
        with_contact = req.arg("includeAll") == "true"
        with self.lock:
            items = [
                self._v1_view(e, with_contact=with_contact)
                for e in sorted(self.events.values(), key=lambda e: e["start"])
                if e["start"] < window[1] and window[0] < e["end"] and calendar_id in (None, e["calendarId"])
            ]
        return json_response(200, {"appointments": items})

    def _v1_get(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            return json_response(200, self._v1_view(self._event(params["event_id"], v1=True), with_contact=True))

    def _v1_update(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._v1_required(
            body,
            {
                "selectedSlot": _V1_CREATE_REQUIRED["selectedSlot"],
                "selectedTimezone": _V1_CREATE_REQUIRED["selectedTimezone"],
            },
        )
        zone = self._v1_zone(body)
        with self.lock:
            event = self._event(params["event_id"], v1=True)
            start, _ = self._times(body["selectedSlot"], None, v1=True)
            end = start + (event["end"] - event["start"])
            self._check_free(start, end, ignore=event["id"], v1=True)
            event.update(
                start=start,
                end=end,
                startTime=start.isoformat(),
                endTime=end.isoformat(),
                selectedTimezone=zone,
                dateUpdated=_now(),
            )
            contact = self.contacts.get(event["contactId"], {})
            return json_response(200, {"id": event["id"], "contactId": event["contactId"], "contact": dict(contact)})

    def _v1_status(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = self._body(req)
        self._v1_required(body, {"status": "The status field is mandatory."})
        if body["status"] not in _V1_STATUSES:
            raise self._v1_invalid("status", f"The status must be one of {', '.join(_V1_STATUSES)}.", "in")
        with self.lock:
            event = self._event(params["event_id"], v1=True)
            event["appointmentStatus"] = body["status"]
            event["dateUpdated"] = _now()
        return SandboxResponse(200, None)

    def _v1_delete(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        with self.lock:
            self._event(params["event_id"], v1=True)
            del self.events[params["event_id"]]
        return SandboxResponse(200, None)

    # -- inspection helpers ------------------------------------------------------------------

    def bookings(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """The events (JSON-ready), optionally without the cancelled ones."""
        with self.lock:
            return [
                self._public(e)
                for e in self.events.values()
                if not active_only or e["appointmentStatus"] != "cancelled"
            ]

    def booking(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            event = self.events.get(event_id)
            return None if event is None else self._public(event)

    def notes_of(self, contact_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(n) for n in self.notes.values() if n["contactId"] == contact_id]

    def add_contact(self, **fields: Any) -> str:
        """Create a contact directly (as if made in the GoHighLevel UI); returns its id."""
        with self.lock:
            contact, _ = self._store_contact(fields)
            return str(contact["id"])


EMULATOR = GoHighLevelEmulator
