"""What the GoHighLevel sandbox accepts: the spec's body DTOs and the contact search filters
(v2), v1's required fields, ISO-8601 instants and IANA zones. Pure: problems come back as text.

v2 bodies are whitelisted like the API's class-validator pipe: an unknown property is ``property
X should not exist``, and wrong types, enum values and missing required fields get that library's
wording. A field kind is ``"string"``, ``"boolean"``, ``"object"``, ``"array"``,
``"array<string>"``, ``"any"`` or a tuple of enum values; a trailing ``?`` allows null.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..._time import parse_iso

__all__ = [
    "CALENDARS_VERSION",
    "CONTACTS_VERSION",
    "CREATE_FIELDS",
    "CREATE_REQUIRED",
    "EDIT_FIELDS",
    "KNOWN_VERSIONS",
    "NOTE_FIELDS",
    "UPSERT_FIELDS",
    "V1_REQUIRED",
    "V1_STATUSES",
    "contact_filter",
    "instant",
    "is_zone",
    "problems",
]

#: the Version the spec names for the calendars and the contacts endpoints
CALENDARS_VERSION = "2021-04-15"
CONTACTS_VERSION = "2021-07-28"
#: like the live API, any supported version is accepted on any endpoint
KNOWN_VERSIONS = frozenset({CALENDARS_VERSION, CONTACTS_VERSION, "2023-02-21", "v3"})

Kind = str | tuple[str, ...]

_APPOINTMENT_STATUSES = ("new", "confirmed", "cancelled", "showed", "noshow", "invalid")
V1_STATUSES = ("confirmed", "cancelled", "showed", "noshow", "invalid")
_MEETING_TYPES = ("custom", "zoom", "gmeet", "phone", "address", "ms_teams", "google")

EDIT_FIELDS: dict[str, Kind] = {
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
CREATE_FIELDS: dict[str, Kind] = {**EDIT_FIELDS, "locationId": "string", "contactId": "string"}
CREATE_REQUIRED = ("calendarId", "locationId", "contactId", "startTime")
UPSERT_FIELDS: dict[str, Kind] = {
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
NOTE_FIELDS: dict[str, Kind] = {
    "userId": "string",
    "body": "string",
    "title": "string",
    "color": "string",
    "pinned": "boolean",
}
#: v1's required fields and its messages for them (rule ``required``)
V1_REQUIRED = {
    "calendarId": "The calendar id field is mandatory.",
    "selectedSlot": "The selected slot field is mandatory.",
    "selectedTimezone": "The selected timezone field is mandatory.",
    "status": "The status field is mandatory.",
}
_TYPES: dict[str, type] = {"string": str, "boolean": bool, "object": dict, "array": list, "array<string>": list}
_SEARCHABLE = ("email", "phone", "firstName", "lastName", "id")
_CASELESS = ("email", "firstName", "lastName")


def problems(body: Mapping[str, Any], fields: Mapping[str, Kind], required: tuple[str, ...] = ()) -> list[str]:
    """class-validator style messages for ``body`` against a DTO (empty when valid)."""
    messages = [f"property {key} should not exist" for key in body if key not in fields]
    messages += [f"{key} should not be empty" for key in required if body.get(key) in (None, "")]
    for key, kind in fields.items():
        if key not in body or (key in required and body.get(key) in (None, "")):
            continue
        value = body[key]
        nullable = isinstance(kind, str) and kind.endswith("?")
        base = kind[:-1] if isinstance(kind, str) and nullable else kind
        if value is None:
            if not nullable and base != "any":
                messages.append(f"{key} must be {_describe(base)}")
        elif isinstance(base, tuple):
            if value not in base:
                messages.append(f"{key} must be {_describe(base)}")
        elif base == "array<string>" and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                messages.append(f"each value in {key} must be a string")
        elif base != "any" and not isinstance(value, _TYPES[base]):
            messages.append(f"{key} must be {_describe(base)}")
    return messages


def _describe(kind: Kind) -> str:
    if isinstance(kind, tuple):
        return "one of the following values: " + ", ".join(kind)
    return {"string": "a string", "boolean": "a boolean value", "object": "an object"}.get(kind, "an array")


def contact_filter(condition: object) -> Callable[[Mapping[str, Any]], bool]:
    """A contact search filter (or group of them) as a test on a contact; ``ValueError`` (the
    422 message) for one the sandbox does not take: it knows ``eq`` on a few fields, AND/OR groups."""
    if not isinstance(condition, dict):
        raise ValueError("each value in filters must be an object")
    if "group" in condition:
        group, members = condition.get("group"), condition.get("filters")
        if group not in ("AND", "OR") or not isinstance(members, list):
            raise ValueError("group must be one of the following values: AND, OR, with a filters array")
        tests = [contact_filter(member) for member in members]
        combine = all if group == "AND" else any
        return lambda contact: combine(test(contact) for test in tests)
    field, operator, value = condition.get("field"), condition.get("operator"), condition.get("value")
    if field not in _SEARCHABLE or operator != "eq":
        raise ValueError(f"filter {field!r} with operator {operator!r} is not supported by the sandbox")
    if not isinstance(value, str):
        raise ValueError("value must be a string")
    caseless = field in _CASELESS

    def test(contact: Mapping[str, Any]) -> bool:
        actual = contact.get(str(field))
        if not isinstance(actual, str):
            return False
        return actual.lower() == value.lower() if caseless else actual == value

    return test


def instant(value: object) -> _dt.datetime | None:
    """ISO-8601 text with an offset (or ``Z``) as an aware datetime, else None."""
    parsed = parse_iso(value)
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def is_zone(value: object) -> bool:
    """Whether ``value`` names an IANA time zone."""
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
