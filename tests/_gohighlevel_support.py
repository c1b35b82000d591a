"""Shared by the GoHighLevel tests: settings, spec-shaped response bodies, and the OpenAPI checker.

The checker validates a request (path, method, ``Version`` and ``Authorization`` headers, JSON
body) against the official v2 specs (CC0) copied into ``tests/vendor_specs/gohighlevel`` with openapi-core.
Two deliberate adjustments, both made in memory (the spec files stay untouched):

* Request-body schemas get ``additionalProperties: false``. The live API validates bodies with a
  whitelist and answers an unknown property with 422 ``property X should not exist`` (HighLevel
  issues #262, #313); the spec just does not say so.
* Date fields that the spec types as ``object`` (``CalendarEventDTO.startTime`` and friends, an
  artefact of how the spec is generated from ``Date`` members) also accept strings, which is what
  the API sends.

The specs are not strictly valid OpenAPI 3.0 (``examples`` inside schemas, extra keys in
``securitySchemes``), so spec validation is switched off; request/response validation works.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import requests

SPEC_DIR = Path(__file__).resolve().parent / "vendor_specs" / "gohighlevel"
SPEC_FILES = {
    "calendars": SPEC_DIR / "apps" / "calendars.json",
    "contacts": SPEC_DIR / "apps" / "contacts.json",
}
SKIP_REASON = (
    f"the GoHighLevel OpenAPI specs are not available at {SPEC_DIR} "
    "(tests/vendor_specs/gohighlevel, part of the repository); contract checks need them"
)
OFFICIAL_HOST = "https://services.leadconnectorhq.com"

TOKEN = "pit-0a1b2c3d-4e5f-6789-abcd-ef0123456789"
LOCATION_ID = "ve9EPM428h8vShlRW1KT"
CALENDAR_ID = "BqTwX8QFwXzpegMve9EQ"
CONTACT_ID = "sx6wyHhbFdRXh302LLNR"
EVENT_ID = "ocQHyuzHvysMo5N5VsXc"
NOTE_ID = "HGPcayliwcdoUFzvbTok"
REPORT_CONTACT_ID = "TUcmRxWrjqzJS8EjkxNK"
USER_ID = "CVokAlI8fgw4WYWoCtQz"

ENV_V2 = {
    "PMS_GHL_API_KEY": TOKEN,
    "PMS_GHL_LOCATION_ID": LOCATION_ID,
    "PMS_GHL_CALENDAR_ID": CALENDAR_ID,
    "PMS_GHL_RATE_LIMIT": "off",
}
V1_BASE = "https://rest.gohighlevel.com/v1"
ENV_V1 = {**ENV_V2, "PMS_GHL_BASE_URL": V1_BASE, "PMS_GHL_API_KEY": "v1-location-api-key-0123456789"}


def booking(**over: Any) -> dict[str, Any]:
    """A booking request as a caller writes it (``over`` replaces fields)."""
    base: dict[str, Any] = {
        "start": "2037-03-10T10:00:00-04:00",
        "duration_minutes": 30,
        "timezone": "America/New_York",
        "title": "Cleaning",
        "reason": "Six-month check-up",
        "notes": "Prefers Dr. Lee",
        "reference": "bk-test",
        "patient": {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+1 555 555 0123"},
    }
    return {**base, **over}


def report(**over: Any) -> dict[str, Any]:
    """A week's performance report (its report id: ``pms-report-2037-03-01-2037-03-07``)."""
    metrics = {"calls handled": 142, "bookings made": 37, "conversion rate %": 26.1}
    return {"period_start": "2037-03-01", "period_end": "2037-03-07", "metrics": metrics, **over}


def specs_available() -> bool:
    return all(p.is_file() for p in SPEC_FILES.values()) and (SPEC_DIR / "common" / "common-schemas.json").is_file()


# ---------------------------------------------------------------------------------------------
# response bodies in the shapes the spec documents


def upsert_response(contact_id: str = CONTACT_ID, *, new: bool = True) -> dict[str, Any]:
    """``UpsertContactsSuccessfulResponseDto``."""
    return {
        "new": new,
        "contact": {
            "id": contact_id,
            "locationId": LOCATION_ID,
            "firstName": "jane",
            "lastName": "doe",
            "email": "jane.doe@example.com",
            "phone": "+15555550123",
            "dateAdded": "2037-03-01T10:00:00.000Z",
        },
        "traceId": "9f3c2d4e-0b1a-4c5d-8e7f-001122334455",
    }


def _event(
    *,
    event_id: str = EVENT_ID,
    start: str = "2037-03-10T10:00:00-04:00",
    end: str = "2037-03-10T10:30:00-04:00",
    title: str = "Cleaning (ref bk-test)",
    status: str = "confirmed",
    contact_id: str = CONTACT_ID,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "calendarId": CALENDAR_ID,
        "locationId": LOCATION_ID,
        "contactId": contact_id,
        "startTime": start,
        "endTime": end,
        "title": title,
        "appointmentStatus": status,
        "assignedUserId": USER_ID,
        "isRecurring": False,
    }


def appointment_response(**fields: Any) -> dict[str, Any]:
    """``AppointmentSchemaResponse`` (create and update); ``fields`` as :func:`_event` names them."""
    return {**_event(**fields), "meetingLocationType": "default", "address": ""}


def calendar_event(*, description: str = "", **fields: Any) -> dict[str, Any]:
    """``CalendarEventDTO`` (an item of ``GET /calendars/events``, and the event a read returns)."""
    stamps = {"dateAdded": "2037-03-01T10:00:00.000Z", "dateUpdated": "2037-03-01T10:00:00.000Z"}
    extra = {"groupId": "", "users": [USER_ID], "notes": "", "description": description, **stamps}
    return {**_event(**fields), **extra}


def note(body: str, *, note_id: str = NOTE_ID, contact_id: str = REPORT_CONTACT_ID, title: str = "") -> dict[str, Any]:
    """``GetNoteSchema``."""
    return {
        "id": note_id,
        "body": body,
        "userId": "",
        "dateAdded": "2037-03-08T09:00:00.000Z",
        "contactId": contact_id,
        "title": title,
        "color": "",
        "pinned": False,
    }


# ---------------------------------------------------------------------------------------------
# the checker


def _tighten(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    schemas = spec.get("components", {}).get("schemas", {})
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            if not isinstance(op, dict):
                continue
            content = (op.get("requestBody") or {}).get("content", {}).get("application/json", {})
            ref = (content.get("schema") or {}).get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                target = schemas.get(ref.rsplit("/", 1)[1])
                if isinstance(target, dict) and target.get("properties"):
                    target["additionalProperties"] = False
    for schema in schemas.values():
        for prop in (schema.get("properties") or {}).values():
            if isinstance(prop, dict) and prop.get("type") == "object" and "properties" not in prop:
                # Date members generated as "object"; the API sends ISO strings
                prop.pop("type")
    return spec


@cache
def _apis() -> dict[str, Any]:
    from openapi_core import OpenAPI
    from openapi_core.configurations import Config

    apis = {}
    for name, path in SPEC_FILES.items():
        spec = _tighten(json.loads(path.read_text()))
        # base_uri makes "../common/common-schemas.json#/..." resolve next to the file
        apis[name] = OpenAPI.from_dict(spec, base_uri=path.as_uri(), config=Config(spec_validator_cls=None))
    return apis


def _api_for(path: str) -> Any:
    family = "calendars" if path.startswith("/calendars") else "contacts" if path.startswith("/contacts") else None
    if family is None:
        raise AssertionError(f"no GoHighLevel v2 spec covers {path}")
    return _apis()[family]


def on_official_host(request: requests.PreparedRequest, base_url: str) -> requests.PreparedRequest:
    """The same request addressed to the official host (for requests sent to an emulator)."""
    assert request.url is not None
    moved = request.copy()
    rest = request.url[len(base_url.rstrip("/")) :]
    moved.url = OFFICIAL_HOST + rest
    return moved


def validate_request(request: requests.PreparedRequest) -> None:
    """Raise if ``request`` does not conform to the v2 spec (strict about unknown properties)."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    assert request.url is not None
    path = urllib.parse.urlsplit(request.url).path
    _api_for(path).validate_request(RequestsOpenAPIRequest(request))


def validate_response(request: requests.PreparedRequest, response: requests.Response) -> None:
    """Raise if ``response`` does not match the spec's schema for its status."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    assert request.url is not None
    path = urllib.parse.urlsplit(request.url).path
    _api_for(path).validate_response(RequestsOpenAPIRequest(request), RequestsOpenAPIResponse(response))


def make_response(status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    return resp


def prepared(
    method: str,
    path: str,
    *,
    body: Any = None,
    version: str | None = None,
    token: str | None = TOKEN,
    params: dict[str, str] | None = None,
    base: str = OFFICIAL_HOST,
) -> requests.PreparedRequest:
    headers = {"Accept": "application/json"}
    if version is not None:
        headers["Version"] = version
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.Request(
        method, base + path, headers=headers, json=body if body is not None else None, params=params
    ).prepare()


# Requests the contract checker must reject. The sandbox must reject each of them too.
CAL = "2021-04-15"
CON = "2021-07-28"
GOOD_CREATE = {
    "calendarId": CALENDAR_ID,
    "locationId": LOCATION_ID,
    "contactId": CONTACT_ID,
    "startTime": "2037-03-10T10:00:00-04:00",
    "endTime": "2037-03-10T10:30:00-04:00",
    "title": "Cleaning",
}
BAD_REQUESTS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    (
        "create without Version header",
        lambda: {"method": "POST", "path": "/calendars/events/appointments", "body": GOOD_CREATE, "version": None},
    ),
    (
        "create with the contacts Version",
        lambda: {"method": "POST", "path": "/calendars/events/appointments", "body": GOOD_CREATE, "version": CON},
    ),
    (
        "create without contactId",
        lambda: {
            "method": "POST",
            "path": "/calendars/events/appointments",
            "body": {k: v for k, v in GOOD_CREATE.items() if k != "contactId"},
            "version": CAL,
        },
    ),
    (
        "create with a v1 field (selectedSlot)",
        lambda: {
            "method": "POST",
            "path": "/calendars/events/appointments",
            "body": {**GOOD_CREATE, "selectedSlot": "2037-03-10T10:00:00-04:00"},
            "version": CAL,
        },
    ),
    (
        "create with a numeric startTime",
        lambda: {
            "method": "POST",
            "path": "/calendars/events/appointments",
            "body": {**GOOD_CREATE, "startTime": 1773151200000},
            "version": CAL,
        },
    ),
    (
        "update with an unknown appointmentStatus",
        lambda: {
            "method": "PUT",
            "path": f"/calendars/events/appointments/{EVENT_ID}",
            "body": {"appointmentStatus": "canceled"},
            "version": CAL,
        },
    ),
    (
        "update with locationId (not editable)",
        lambda: {
            "method": "PUT",
            "path": f"/calendars/events/appointments/{EVENT_ID}",
            "body": {"locationId": LOCATION_ID},
            "version": CAL,
        },
    ),
    (
        "upsert without locationId",
        lambda: {"method": "POST", "path": "/contacts/upsert", "body": {"email": "a@example.com"}, "version": CON},
    ),
    (
        "upsert with the calendars Version",
        lambda: {
            "method": "POST",
            "path": "/contacts/upsert",
            "body": {"locationId": LOCATION_ID, "email": "a@example.com"},
            "version": CAL,
        },
    ),
    (
        "note without body",
        lambda: {"method": "POST", "path": f"/contacts/{CONTACT_ID}/notes", "body": {"title": "x"}, "version": CON},
    ),
    (
        "note with a string pinned",
        lambda: {
            "method": "POST",
            "path": f"/contacts/{CONTACT_ID}/notes",
            "body": {"body": "x", "pinned": "no"},
            "version": CON,
        },
    ),
    (
        "free slots without a date range",
        lambda: {"method": "GET", "path": f"/calendars/{CALENDAR_ID}/free-slots", "version": CAL},
    ),
    (
        "create without a bearer token",
        lambda: {
            "method": "POST",
            "path": "/calendars/events/appointments",
            "body": GOOD_CREATE,
            "version": CAL,
            "token": None,
        },
    ),
]
