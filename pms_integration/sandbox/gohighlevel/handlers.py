"""The GoHighLevel sandbox's handlers: a request in, the vendor's answer out.

Each takes the store, the request and the path parameters; the emulator has checked the
``Version`` header (v2) and the token first. Errors take v2's NestJS shape (``statusCode``,
``message``, ``error``, ``traceId``; ``message`` is a list for a 422) or v1's (``{"msg": ...}``,
and ``{field: {"message", "rule"}}`` for a 422); :func:`refusal` answers what the store refuses.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from ..._time import UTC, utc_text
from .._core import REASONS, Reply, SandboxRequest, SandboxResponse, json_response
from .state import CalendarStore, Refused
from .validation import (
    CREATE_FIELDS,
    CREATE_REQUIRED,
    EDIT_FIELDS,
    NOTE_FIELDS,
    UPSERT_FIELDS,
    V1_REQUIRED,
    V1_STATUSES,
    Kind,
    contact_filter,
    instant,
    is_zone,
    problems,
)

Params = dict[str, str]

SLOT_TAKEN = "The slot you have selected is no longer available."
_V2_MESSAGES = {401: "Invalid token: access token is invalid", 429: "Too Many Requests", 500: "Internal server error"}
#: what the store refuses, as v2 answers it (v1 answers the same status with ``{"msg"}``, or ...)
_REFUSED = {
    "location": (403, "The token does not have access to this location."),
    "calendar": (400, "Calendar not found"),
    "contact": (404, "Contact not found"),
    "note": (404, "Note not found"),
    "appointment": (404, "Appointment not found"),
    "slot": (400, SLOT_TAKEN),
}
#: ... a 422 on the field at fault
_V1_REFUSED = {
    "calendar": {"calendarId": ("The calendar id is invalid.", "exists")},
    "slot": {"selectedSlot": (SLOT_TAKEN, "slot")},
}
_EDITABLE = ("title", "description", "address", "appointmentStatus", "assignedUserId", "meetingLocationType")
_V1_CONTACT = ("email", "phone", "firstName", "lastName", "name", "address1", "city", "state", "website")


# -- answers -------------------------------------------------------------------------------


def is_v1(req: SandboxRequest) -> bool:
    return req.path == "/v1" or req.path.startswith("/v1/")


def error(status: int, message: str | list[str] | None = None, *, v1: bool = False) -> SandboxResponse:
    """The error body of v2 (or v1) for ``status``."""
    if v1:
        return json_response(status, {"msg": message or REASONS.get(status, "Error")})
    if message is None:
        message = _V2_MESSAGES.get(status, REASONS.get(status, "Error"))
    body = {
        "statusCode": status,
        "message": message,
        "error": REASONS.get(status, "Error"),
        "traceId": str(uuid.uuid4()),
    }
    return json_response(status, body)


def refusal(reason: str, *, v1: bool) -> SandboxResponse:
    if v1 and reason in _V1_REFUSED:
        return v1_invalid(_V1_REFUSED[reason]).response
    return error(*_REFUSED[reason], v1=v1)


def invalid(messages: list[str]) -> Reply:
    """v2's 422 (class-validator messages)."""
    return Reply(error(422, messages))


def v1_invalid(fields: Mapping[str, tuple[str, str]]) -> Reply:
    """v1's 422: field -> (message, rule)."""
    return Reply(
        json_response(422, {field: {"message": message, "rule": rule} for field, (message, rule) in fields.items()})
    )


def appointment_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """``AppointmentSchemaResponse``."""
    keys = ("id", "calendarId", "locationId", "contactId", "startTime", "endTime", "title")
    more = ("meetingLocationType", "appointmentStatus", "assignedUserId", "address")
    return {**{k: event[k] for k in keys + more}, "isRecurring": False}


def calendar_event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """``CalendarEventDTO``."""
    keys = ("id", "address", "title", "calendarId", "locationId", "contactId", "appointmentStatus", "assignedUserId")
    more = ("notes", "description", "startTime", "endTime", "dateAdded", "dateUpdated")
    return {
        **{k: event[k] for k in keys + more},
        "groupId": "",
        "users": [event["assignedUserId"]],
        "isRecurring": False,
        "createdBy": {"source": event["source"], "userId": ""},
    }


def webhook_body(change: Mapping[str, Any], location_id: str) -> dict[str, Any]:
    """The body GoHighLevel posts for a logged change (highlevel-api-docs ``docs/webhook
    events/AppointmentCreate.md``, ``...Update.md``, ``...Delete.md``: ``type``, ``locationId``
    and the ``appointment``; ``docs/oauth/WebhookAuthentication.md``: ``webhookId`` and
    ``timestamp`` on every body). The appointment has no ``description``, as documented."""
    event = change["event"]
    keys = ("id", "address", "title", "calendarId", "contactId", "appointmentStatus", "assignedUserId", "notes")
    appointment = {
        **{k: event[k] for k in keys},
        "groupId": "",
        "users": [event["assignedUserId"]],
        "source": event["source"],
        "startTime": event["startTime"],
        "endTime": event["endTime"],
        "dateAdded": event["dateAdded"],
        "dateUpdated": event["dateUpdated"],
    }
    return {
        "type": change["type"],
        "locationId": location_id,
        "appointment": appointment,
        "webhookId": change["webhookId"],
        "timestamp": change["timestamp"],
    }


def v1_view(event: Mapping[str, Any], contact: dict[str, Any] | None = None) -> dict[str, Any]:
    view = {
        **{k: event[k] for k in ("id", "calendarId", "contactId")},
        "status": "booked",
        "appoinmentStatus": event["appointmentStatus"],  # sic: v1 spells it so
        **{k: event[k] for k in ("title", "notes", "address")},
        "startTime": utc_text(event["start"], milliseconds=True),
        "endTime": utc_text(event["end"], milliseconds=True),
        "selectedTimezone": event["selectedTimezone"],
    }
    return view if contact is None else {**view, "contact": contact}


# -- reading requests ----------------------------------------------------------------------


def read_body(req: SandboxRequest) -> dict[str, Any]:
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise Reply(error(400, "Unexpected token in JSON body", v1=is_v1(req))) from None
    if not isinstance(body, dict):
        raise Reply(error(400, "The request body must be a JSON object", v1=is_v1(req)))
    return body


def check(body: Mapping[str, Any], fields: Mapping[str, Kind], required: tuple[str, ...] = ()) -> None:
    messages = problems(body, fields, required)
    if messages:
        raise invalid(messages)


def times(store: CalendarStore, start_text: object, end_text: object) -> tuple[_dt.datetime, _dt.datetime]:
    """v2's start and end (the calendar's slot length when there is no end)."""
    start = instant(start_text)
    if start is None:
        raise invalid(["startTime must be a valid ISO 8601 date string with an offset"])
    if end_text is None:
        return start, store.slot_end(start)
    end = instant(end_text)
    if end is None:
        raise invalid(["endTime must be a valid ISO 8601 date string with an offset"])
    if end <= start:
        raise Reply(error(400, "endTime must be after startTime"))
    return start, end


def window(req: SandboxRequest, start_key: str, end_key: str) -> tuple[_dt.datetime, _dt.datetime] | None:
    """Two query parameters in epoch milliseconds, else None."""
    try:
        start_ms, end_ms = int(req.arg(start_key) or ""), int(req.arg(end_key) or "")
    except ValueError:
        return None
    return _dt.datetime.fromtimestamp(start_ms / 1000, UTC), _dt.datetime.fromtimestamp(end_ms / 1000, UTC)


def v1_required(body: Mapping[str, Any], *keys: str) -> None:
    missing = {k: (V1_REQUIRED[k], "required") for k in keys if not isinstance(body.get(k), str) or not body.get(k)}
    if missing:
        raise v1_invalid(missing)


def v1_slot(body: Mapping[str, Any]) -> _dt.datetime:
    start = instant(body["selectedSlot"])
    if start is None:
        raise v1_invalid({"selectedSlot": ("The selected slot must be a date with an offset.", "date")})
    return start


def v1_zone(body: Mapping[str, Any]) -> str:
    if not is_zone(body.get("selectedTimezone")):
        raise v1_invalid({"selectedTimezone": ("The selected timezone is invalid.", "timezone")})
    return str(body["selectedTimezone"])


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _contact_of(store: CalendarStore, event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return store.contact(event["contactId"])
    except Refused:
        return {}


# -- v2: contacts and notes ----------------------------------------------------------------


def upsert_contact(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    check(body, UPSERT_FIELDS, ("locationId",))
    store.check_location(body["locationId"])
    contact, created = store.upsert_contact(body)
    return json_response(200, {"new": created, "contact": contact, "traceId": str(uuid.uuid4())})


def search_contacts(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """The advanced search: ``filters`` (``eq`` on a few fields, AND/OR groups), ``page``, ``pageLimit``."""
    body = read_body(req)
    messages = (
        [] if isinstance(body.get("locationId"), str) and body["locationId"] else ["locationId should not be empty"]
    )
    for key in ("page", "pageLimit"):
        value = body.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            messages.append(f"{key} must be a positive number")
    filters = body.get("filters", [])
    if not isinstance(filters, list):
        messages.append("filters must be an array")
    if messages:
        raise invalid(messages)
    store.check_location(body["locationId"])
    try:
        tests = [contact_filter(f) for f in filters]
    except ValueError as exc:
        raise invalid([str(exc)]) from None
    page, limit = int(body.get("page", 1)), min(int(body.get("pageLimit", 20)), 500)
    found = store.search_contacts(lambda contact: all(test(contact) for test in tests))
    return json_response(200, {"contacts": found[(page - 1) * limit : page * limit], "total": len(found)})


def list_notes(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    store.contact(params["contact_id"])
    notes = sorted(store.notes_of(params["contact_id"]), key=lambda n: n["dateAdded"], reverse=True)
    return json_response(200, {"notes": notes})


def create_note(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    check(body, NOTE_FIELDS, ("body",))
    defaults = {"userId": "", "title": "", "color": "", "pinned": False}
    note = store.add_note(params["contact_id"], body["body"], **{k: body.get(k, v) for k, v in defaults.items()})
    return json_response(201, {"note": note})


def get_note(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    return json_response(200, {"note": store.note(params["contact_id"], params["note_id"])})


def update_note(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    check(body, NOTE_FIELDS)
    return json_response(200, {"note": store.note(params["contact_id"], params["note_id"], **body)})


# -- v2: appointments ----------------------------------------------------------------------


def create_event(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    check(body, CREATE_FIELDS, CREATE_REQUIRED)
    store.check_location(body["locationId"])
    store.check_calendar(body["calendarId"])
    store.contact(body["contactId"])
    start, end = times(store, body["startTime"], body.get("endTime"))
    event = store.book(
        start,
        end,
        contact=body["contactId"],
        check_slot=not body.get("ignoreFreeSlotValidation"),
        startTime=body["startTime"],
        endTime=body.get("endTime") or end.isoformat(),
        title=body.get("title", ""),
        description=body.get("description", ""),
        address=body.get("address", ""),
        meetingLocationType=body.get("meetingLocationType", "custom" if body.get("address") else "default"),
        appointmentStatus=body.get("appointmentStatus", "confirmed"),
        assignedUserId=body.get("assignedUserId", store.user_id),
    )
    return json_response(200, appointment_view(event))


def get_event(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    return json_response(200, {"event": calendar_event_view(store.event(params["event_id"]))})


def edit_event(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    check(body, EDIT_FIELDS)
    changes: dict[str, Any] = {k: body[k] for k in _EDITABLE if k in body}
    check_slot = True
    with store.lock:  # the new times depend on the stored ones
        event = store.event(params["event_id"])
        if "calendarId" in body:
            store.check_calendar(body["calendarId"])
        if "startTime" in body or "endTime" in body:
            start_text, end_text = body.get("startTime", event["startTime"]), body.get("endTime")
            if end_text is None:  # keep the length when only the start moves
                moved = instant(start_text)
                end_text = (moved + (event["end"] - event["start"])).isoformat() if moved else None
            start, end = times(store, start_text, end_text)
            status = body.get("appointmentStatus", event["appointmentStatus"])
            check_slot = status != "cancelled" and not body.get("ignoreFreeSlotValidation")
            changes.update(start=start, end=end, startTime=start_text, endTime=end_text)
        event = store.update_event(params["event_id"], check_slot=check_slot, **changes)
    return json_response(200, appointment_view(event))


def list_events(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    messages = [f"{key} should not be empty" for key in ("locationId", "startTime", "endTime") if not req.arg(key)]
    if not any(req.arg(k) for k in ("calendarId", "userId", "groupId")):
        messages.append("Either of calendarId, userId or groupId is required")
    if messages:
        raise invalid(messages)
    store.check_location(req.arg("locationId"))
    between = window(req, "startTime", "endTime")
    if between is None:
        raise invalid(["startTime and endTime must be epoch milliseconds"])
    events = store.events_between(*between, calendarId=req.arg("calendarId"), assignedUserId=req.arg("userId"))
    return json_response(200, {"events": [calendar_event_view(e) for e in events]})


def contact_appointments(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """``GetEventsSuccessfulResponseDto``: the contact's events, cancelled ones included, with
    times as the spec's example writes them (``2021-07-16 11:00:00``, the calendar's wall clock)."""
    store.contact(params["contact_id"])
    zone = ZoneInfo(store.calendar_timezone)
    with store.lock:
        events = sorted(
            (dict(e) for e in store.events.values() if e["contactId"] == params["contact_id"]), key=lambda e: e["start"]
        )

    def wall(value: _dt.datetime) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    views = [
        {
            **{k: e[k] for k in ("id", "calendarId", "title", "assignedUserId", "notes", "address", "locationId")},
            **{k: e[k] for k in ("contactId", "appointmentStatus", "dateAdded", "dateUpdated")},
            "status": "cancelled" if e["appointmentStatus"] == "cancelled" else "booked",
            "startTime": wall(e["start"]),
            "endTime": wall(e["end"]),
            "users": [e["assignedUserId"]],
        }
        for e in events
    ]
    return json_response(200, {"events": views})


def slots_answer(
    store: CalendarStore, between: tuple[_dt.datetime, _dt.datetime], zone_name: str | None
) -> dict[str, Any]:
    """``{"<date>": {"slots": [<ISO start with offset>, ...]}, ...}`` in ``zone_name`` (else the
    calendar's); days without a free slot are left out."""
    zone = ZoneInfo(zone_name or store.calendar_timezone)
    answer: dict[str, Any] = {}
    for start in store.free_starts(*between):
        local = start.astimezone(zone)
        answer.setdefault(local.date().isoformat(), {"slots": []})["slots"].append(local.isoformat())
    return answer


_MAX_SLOT_RANGE = _dt.timedelta(days=31)


def free_slots(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """``GET /calendars/{calendarId}/free-slots``: epoch-ms ``startDate``/``endDate`` at most 31 days apart."""
    messages = [f"{key} should not be empty" for key in ("startDate", "endDate") if not req.arg(key)]
    if messages:
        raise invalid(messages)
    between = window(req, "startDate", "endDate")
    if between is None:
        raise invalid(["startDate and endDate must be numbers (epoch milliseconds)"])
    if req.arg("timezone") and not is_zone(req.arg("timezone")):
        raise invalid(["timezone must be a valid IANA time zone"])
    store.check_calendar(params["calendar_id"])
    if between[1] - between[0] > _MAX_SLOT_RANGE:
        raise Reply(error(400, "Date range cannot be more than 31 days"))
    return json_response(200, slots_answer(store, between, req.arg("timezone")))


def delete_event(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    store.delete_event(params["event_id"])
    return json_response(201, {"succeeded": True})


# -- v1 ------------------------------------------------------------------------------------


def v1_create(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """A booking with the patient's details: the contact is matched or made once the slot is free."""
    body = read_body(req)
    v1_required(body, "calendarId", "selectedSlot", "selectedTimezone")
    if not body.get("email") and not body.get("phone"):
        raise v1_invalid({"email or phone": ("The email or phone field is mandatory.", "required")})
    zone = v1_zone(body)
    store.check_calendar(body["calendarId"])
    start = v1_slot(body)
    end = store.slot_end(start)
    event = store.book(
        start,
        end,
        contact={k: body[k] for k in _V1_CONTACT if isinstance(body.get(k), str) and body[k]},
        startTime=start.isoformat(),
        endTime=end.isoformat(),
        title=_text(body, "title"),
        notes=_text(body, "calendarNotes"),
        selectedTimezone=zone,
        source="public_api_v1",
    )
    contact = _contact_of(store, event)
    return json_response(200, {"id": event["id"], "contactId": event["contactId"], "contact": contact})


def v1_list(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    labels = {"startDate": "start date", "endDate": "end date"}
    missing = {k: (f"The {label} field is mandatory.", "required") for k, label in labels.items() if not req.arg(k)}
    if missing:
        raise v1_invalid(missing)
    if not any(req.arg(k) for k in ("calendarId", "userId", "teamId")):
        raise v1_invalid({"calendarId": ("One of calendarId, userId or teamId is mandatory.", "required")})
    between = window(req, "startDate", "endDate")
    if between is None:
        raise v1_invalid({"startDate": ("The start date must be epoch milliseconds.", "integer")})
    with_contact = req.arg("includeAll") == "true"
    events = store.events_between(*between, calendarId=req.arg("calendarId"))
    views = [v1_view(e, _contact_of(store, e) if with_contact else None) for e in events]
    return json_response(200, {"appointments": views})


def v1_slots(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """``GET /v1/appointments/slots``: the same availability map as v2."""
    labels = {"calendarId": "calendar id", "startDate": "start date", "endDate": "end date"}
    missing = {k: (f"The {label} field is mandatory.", "required") for k, label in labels.items() if not req.arg(k)}
    if missing:
        raise v1_invalid(missing)
    between = window(req, "startDate", "endDate")
    if between is None:
        raise v1_invalid({"startDate": ("The start date must be epoch milliseconds.", "integer")})
    if req.arg("timezone") and not is_zone(req.arg("timezone")):
        raise v1_invalid({"timezone": ("The timezone is invalid.", "timezone")})
    store.check_calendar(req.arg("calendarId"))
    if between[1] - between[0] > _MAX_SLOT_RANGE:
        raise v1_invalid({"endDate": ("The date range cannot be more than 31 days.", "range")})
    return json_response(200, slots_answer(store, between, req.arg("timezone")))


def v1_get(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    event = store.event(params["event_id"])
    return json_response(200, v1_view(event, _contact_of(store, event)))


def v1_update(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    """Only the slot and zone change; the length stays."""
    body = read_body(req)
    v1_required(body, "selectedSlot", "selectedTimezone")
    zone = v1_zone(body)
    with store.lock:  # the new end depends on the stored length
        event = store.event(params["event_id"])
        start = v1_slot(body)
        end = start + (event["end"] - event["start"])
        changes = {"start": start, "end": end, "startTime": start.isoformat(), "endTime": end.isoformat()}
        event = store.update_event(params["event_id"], **changes, selectedTimezone=zone)
    return json_response(
        200, {"id": event["id"], "contactId": event["contactId"], "contact": _contact_of(store, event)}
    )


def v1_status(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    body = read_body(req)
    v1_required(body, "status")
    if body["status"] not in V1_STATUSES:
        raise v1_invalid({"status": (f"The status must be one of {', '.join(V1_STATUSES)}.", "in")})
    store.update_event(params["event_id"], appointmentStatus=body["status"])
    return SandboxResponse(200, None)


def v1_delete(store: CalendarStore, req: SandboxRequest, params: Params) -> SandboxResponse:
    store.delete_event(params["event_id"])
    return SandboxResponse(200, None)
