"""An in-memory HubSpot CRM for the sandbox: contacts, deals, meetings, notes and companies.

It serves the object API under both path styles (``/crm/v3/objects/...`` and the date-versioned
``/crm/objects/2026-09/...``) plus the default-association ``PUT`` (``/crm/v4/objects/...`` and
its date-versioned twin), and it is strict where HubSpot is:

* a bearer token is required; anything else gets HubSpot's 401 body (``INVALID_AUTHENTICATION``);
* unknown properties, read-only properties, values that are not strings (the spec's type), bad
  enumeration values (meeting outcome; a deal stage outside its pipeline, which for a PATCH
  without ``pipeline`` is the deal's stored one, as in HubSpot), date-times that are neither
  epoch milliseconds nor UTC ISO-8601, and missing required properties are a 400 ``VALIDATION_ERROR``
  whose message embeds the per-property list (``PROPERTY_DOESNT_EXIST``, ``INVALID_OPTION``, ...);
* unrecognised JSON fields (``associations`` on a batch upsert input, say) are a 400;
* inline associations must use a documented HUBSPOT_DEFINED type id for the pair of objects
  (deal->contact 3, meeting->contact 200, meeting->deal 212, note->company 190, ...) and point
  at a record that exists;
* e-mail is unique on contacts (409 ``Contact already exists. Existing ID: n``) and the deal
  property ``pms_booking_id`` is a unique-value property usable as ``idProperty``;
* ids are numeric strings; search is limited to 5 requests a second and is **eventually
  consistent**: a write becomes visible to search only ``search_lag`` seconds later (1 s by
  default; HubSpot's index lags "a few moments"), while reads by id see it at once;
* search honours ``sorts``, the free-text ``query``, paging with ``after``, and compares
  date-time filters as instants (epoch milliseconds or ISO-8601); without ``properties`` it
  answers with the default property set, as HubSpot does;
* repeated query parameters (``?properties=a&properties=b``, as the official SDK sends lists)
  count as one list, like the comma-separated form;
* the private-app burst limit, 100 requests per rolling 10 s, is on by default
  (``burst_limit``; ``None`` turns it off, and an explicit ``Sandbox.set_rate_limit`` replaces it);
* a route it does not emulate answers 501 ``NOT_EMULATED`` naming the route, never a 404 that a
  caller would read as "record not found".

Options (attributes of the emulator, ``sandbox.emulator("hubspot")``): ``search_lag`` (seconds,
0 turns the lag off), ``burst_limit`` (``(requests, seconds)`` or ``None``), ``search_rate``
(searches a second, or ``None``) and ``clock`` (a ``time.monotonic``-like function the lag and
limits are measured with, injectable in tests). :meth:`HubSpotEmulator.settle` makes every write
so far visible to search at once, so a test need not wait for the lag.

State is inspected with :meth:`HubSpotEmulator.state` (``bookings`` joins each meeting to its
deal), :meth:`HubSpotEmulator.records` and :meth:`HubSpotEmulator.associations_of`.
"""

from __future__ import annotations

import collections
import datetime as _dt
import fnmatch
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..models import ProviderName
from ._core import Emulator, Reply, Route, Sandbox, SandboxRequest, SandboxResponse, json_response

__all__ = [
    "HubSpotEmulator",
    "EMULATOR",
    "REFERENCE_PROPERTY",
    "ASSOCIATION_TYPES",
    "DEFAULT_PIPELINE_STAGES",
    "DEFAULT_SEARCH_LAG",
    "DEFAULT_BURST_LIMIT",
]

#: Seconds before a write shows in search results (HubSpot: "a few moments").
DEFAULT_SEARCH_LAG = 1.0
#: The private-app burst limit of the Free/Starter tiers: 100 requests per rolling 10 seconds.
DEFAULT_BURST_LIMIT: tuple[int, float] = (100, 10.0)

#: The unique-value custom deal property the sandbox defines (``hasUniqueValue: true``).
REFERENCE_PROPERTY = "pms_booking_id"

#: HUBSPOT_DEFINED default association type ids, (from, to) -> id.
ASSOCIATION_TYPES: dict[tuple[str, str], int] = {
    ("deals", "contacts"): 3,
    ("contacts", "deals"): 4,
    ("deals", "companies"): 5,
    ("deals", "meetings"): 211,
    ("deals", "notes"): 213,
    ("meetings", "contacts"): 200,
    ("meetings", "companies"): 188,
    ("meetings", "deals"): 212,
    ("contacts", "meetings"): 199,
    ("contacts", "notes"): 201,
    ("notes", "contacts"): 202,
    ("notes", "companies"): 190,
    ("notes", "deals"): 214,
    ("companies", "notes"): 189,
    ("companies", "meetings"): 187,
    ("companies", "deals"): 342,
    ("contacts", "companies"): 279,
    ("companies", "contacts"): 280,
}
_EXTRA_VALID: dict[tuple[str, str], set[int]] = {("deals", "companies"): {5, 341}, ("contacts", "companies"): {1, 279}}

DEFAULT_PIPELINE_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
MEETING_OUTCOMES = ("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED")
NOTE_BODY_LIMIT = 65_536

_OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "notes": "0-46", "meetings": "0-47"}
_ALIASES = {
    "contact": "contacts",
    "company": "companies",
    "deal": "deals",
    "meeting": "meetings",
    "note": "notes",
    **{t: t for t in _OBJECT_TYPE_IDS},
    **{v: k for k, v in _OBJECT_TYPE_IDS.items()},
}
_FIRST_IDS = {
    "contacts": 75_100_000_001,
    "companies": 31_200_000_001,
    "deals": 20_450_000_001,
    "meetings": 61_300_000_001,
    "notes": 82_700_000_001,
}
_READ_ONLY = {"hs_object_id", "createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate"}
_STRING = "string"
_DATETIME = "datetime"
_ENUM = "enumeration"
_NUMBER = "number"
_PROPERTIES: dict[str, dict[str, str]] = {
    "contacts": {
        **dict.fromkeys(
            (
                "email",
                "firstname",
                "lastname",
                "phone",
                "mobilephone",
                "company",
                "website",
                "address",
                "city",
                "state",
                "zip",
                "country",
                "jobtitle",
                "lifecyclestage",
                "hs_lead_status",
                "hubspot_owner_id",
            ),
            _STRING,
        ),
    },
    "companies": dict.fromkeys(("name", "domain", "phone", "city", "hubspot_owner_id"), _STRING),
    "deals": {
        **dict.fromkeys(
            (
                "dealname",
                "pipeline",
                "dealtype",
                "description",
                "closed_lost_reason",
                "closed_won_reason",
                "hubspot_owner_id",
                "hs_priority",
                REFERENCE_PROPERTY,
            ),
            _STRING,
        ),
        "dealstage": _ENUM,
        "closedate": _DATETIME,
        "amount": _NUMBER,
    },
    "meetings": {
        **dict.fromkeys(
            (
                "hs_meeting_title",
                "hs_meeting_body",
                "hs_internal_meeting_notes",
                "hubspot_owner_id",
                "hs_meeting_external_url",
                "hs_meeting_location",
                "hs_activity_type",
                "hs_attachment_ids",
            ),
            _STRING,
        ),
        "hs_timestamp": _DATETIME,
        "hs_meeting_start_time": _DATETIME,
        "hs_meeting_end_time": _DATETIME,
        "hs_meeting_outcome": _ENUM,
    },
    "notes": {
        "hs_timestamp": _DATETIME,
        "hs_note_body": _STRING,
        "hubspot_owner_id": _STRING,
        "hs_attachment_ids": _STRING,
    },
}
_UNIQUE = {"contacts": {"email", "hs_object_id"}, "deals": {REFERENCE_PROPERTY, "hs_object_id"}}
#: What a GET without ``?properties=`` returns (HubSpot answers with a small default set).
_DEFAULT_READ = {
    "contacts": ("email", "firstname", "lastname"),
    "companies": ("name", "domain"),
    "deals": ("dealname", "dealstage", "pipeline", "closedate", "amount"),
    "meetings": ("hs_timestamp",),
    "notes": ("hs_timestamp",),
}
_CREATED_PROPERTY = {"contacts": "createdate", "companies": "createdate", "deals": "createdate"}
#: Properties the free-text ``query`` of a search looks in (HubSpot's default searchable ones).
_QUERY_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "phone", "company", "website"),
    "companies": ("name", "domain", "website", "phone"),
    "deals": ("dealname",),
    "meetings": ("hs_meeting_title", "hs_meeting_body"),
    "notes": ("hs_note_body",),
}
_SYSTEM_DATETIMES = {"createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate"}
_SEARCH_OPERATORS = {
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
}  # fmt: skip
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NUMERIC_ID = re.compile(r"^\d{1,20}$")
_TOKEN = re.compile(r"[A-Za-z0-9*]+")
_V = r"/crm/(?:v3/objects|objects/(?P<version>20\d\d-(?:0[1-9]|1[0-2])))"
_ASSOC_TYPE = r"[a-z0-9-]+"
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
    "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normalise_time(value: str) -> str | None:
    """A HubSpot date-time as UTC ISO, or ``None`` if invalid.

    The docs accept "Unix timestamp in milliseconds or UTC format": epoch milliseconds, or an
    ISO-8601 time in UTC ending in ``Z``. Offsets other than UTC are refused here.
    """
    text = value.strip()
    try:
        if text.isdigit():
            parsed = _dt.datetime.fromtimestamp(int(text) / 1000, tz=_dt.timezone.utc)
        elif text.endswith("Z") and "T" in text:
            parsed = _dt.datetime.fromisoformat(text[:-1] + "+00:00")
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(value: str) -> float | None:
    """A date-time filter value or property as epoch milliseconds (None if it is not one)."""
    text = value.strip()
    if not text:
        return None
    try:
        if text.lstrip("-").isdigit():
            return float(int(text))
        parsed = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp() * 1000


def _list_arg(req: SandboxRequest, name: str) -> list[str]:
    """A list query parameter: repeated (``a=1&a=2``, as the SDK sends it), comma-separated, or both."""
    out: list[str] = []
    for value in req.query.get(name, []):
        out += [v.strip() for v in value.split(",") if v.strip() and v.strip() not in out]
    return out


def _system_value(record: dict[str, Any], name: str) -> str:
    if name == "hs_object_id":
        return str(record["id"])
    if name in ("createdate", "hs_createdate"):
        return str(record["createdAt"])
    return str(record["updatedAt"])


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _contains_token(haystack: str, needle: str) -> bool:
    """HubSpot-like CONTAINS_TOKEN: the needle's tokens appear in order (``*`` is a wildcard)."""
    words = _tokens(haystack)
    wanted = _tokens(needle)
    if not wanted:
        return False
    for start in range(len(words) - len(wanted) + 1):
        if all(fnmatch.fnmatchcase(words[start + i], w) for i, w in enumerate(wanted)):
            return True
    return False


class HubSpotEmulator(Emulator):
    """HubSpot's CRM object API, in memory (see the module docstring)."""

    provider = ProviderName.HUBSPOT
    prefix = "/hubspot"

    def __init__(self, sandbox: Sandbox) -> None:
        #: Seconds before a write is visible to search (HubSpot's index lag); 0 = immediately.
        self.search_lag = DEFAULT_SEARCH_LAG
        #: Search requests allowed per second per account (None: unlimited).
        self.search_rate: int | None = 5
        #: Requests allowed per rolling window, ``(requests, seconds)``; None: unlimited.
        self.burst_limit: tuple[int, float] | None = DEFAULT_BURST_LIMIT
        #: The clock the search lag and the limits are measured with (injectable in tests).
        self.clock: Callable[[], float] = time.monotonic
        self._burst: collections.deque[float] = collections.deque()
        #: Deal pipelines: id -> stage ids.
        self.pipelines: dict[str, tuple[str, ...]] = {"default": DEFAULT_PIPELINE_STAGES}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in _OBJECT_TYPE_IDS}
        self.links: list[dict[str, Any]] = []
        self._next: dict[str, int] = dict(_FIRST_IDS)
        self._searches: collections.deque[float] = collections.deque()
        self._daily = 0
        super().__init__(sandbox)
        self.company_id = self._seed_company()

    # -- Emulator API ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        assoc = (
            rf"(?P<from>{_ASSOC_TYPE})/(?P<from_id>[^/]+)/associations/default/(?P<to>{_ASSOC_TYPE})/(?P<to_id>[^/]+)"
        )
        routes: list[Route] = []
        for name, type_id in _OBJECT_TYPE_IDS.items():
            # One set of routes per object type, so faults can target e.g. "deals.create".
            objects = f"{_V}/(?P<type>{name}|{type_id})"
            routes += [
                Route("POST", objects + "/search", self._search, f"{name}.search"),
                Route("POST", objects + "/batch/upsert", self._upsert, f"{name}.upsert", mutating=True),
                Route("POST", objects + "/batch/read", self._batch_read, f"{name}.batch_read"),
                Route("POST", objects, self._create, f"{name}.create", mutating=True),
                Route("GET", objects + r"/(?P<id>[^/]+)", self._read, f"{name}.read"),
                Route("PATCH", objects + r"/(?P<id>[^/]+)", self._update, f"{name}.update", mutating=True),
                Route("DELETE", objects + r"/(?P<id>[^/]+)", self._archive, f"{name}.archive", mutating=True),
            ]
        routes += [
            Route("PUT", "/crm/v4/objects/" + assoc, self._associate, "associations.put", mutating=True),
            Route(
                "PUT",
                r"/crm/objects/(?P<version>20\d\d-(?:0[1-9]|1[0-2]))/" + assoc,
                self._associate,
                "associations.put",
                mutating=True,
            ),
        ]
        return routes

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_HUBSPOT_PRIVATE_APP_TOKEN": self.token,
            "PMS_HUBSPOT_BASE_URL": base_url,
            "PMS_HUBSPOT_PIPELINE_ID": "default",
            "PMS_HUBSPOT_STAGE_ID": "appointmentscheduled",
            "PMS_HUBSPOT_REPORT_COMPANY_ID": self.company_id,
        }

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "company_id": self.company_id,
                "bookings": self._bookings(),
                "contacts": self.records("contacts"),
                "deals": self.records("deals"),
                "meetings": self.records("meetings"),
                "notes": self.records("notes"),
                "companies": self.records("companies"),
                "associations": [dict(link) for link in self.links],
            }

    def reset(self) -> None:
        with self.lock:
            for store in self.objects.values():
                store.clear()
            self.links.clear()
            self._next = dict(_FIRST_IDS)
            self._searches.clear()
            self._burst.clear()
            self._daily = 0
            # search_lag, burst_limit, search_rate and clock are configuration: they stay.
            self.company_id = self._seed_company()

    def check_auth(self, req: SandboxRequest) -> SandboxResponse | None:
        if req.bearer() == self.token:
            return None
        return self._error(401, _AUTH_MESSAGE, "INVALID_AUTHENTICATION")

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        """A route this emulator does not implement: 501, so nobody mistakes it for "no such record"."""
        return self._error(
            501,
            f"The HubSpot sandbox does not emulate {req.method} {req.path.split('?')[0][:200]}",
            "NOT_EMULATED",
        )

    def settle(self) -> None:
        """Make every write so far visible to search now (as if the index lag had passed)."""
        with self.lock:
            for store in self.objects.values():
                for record in store.values():
                    record["index"] = [(float("-inf"), props) for _, props in record["index"][-1:]]

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        if status == 401:
            response = self._error(401, message or _AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        elif status == 429:
            response = self._rate_limited("TEN_SECONDLY_ROLLING", message)
        elif status == 404:
            response = self._error(404, message or "Not Found", "OBJECT_NOT_FOUND")
        elif status >= 500:
            response = self._error(status, message or "internal error", "INTERNAL_ERROR")
        else:
            response = self._error(status, message or "error", "VALIDATION_ERROR")
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def rate_limit_headers(self, remaining: int, limit: int, interval_ms: int) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
        }

    # -- inspection helpers ------------------------------------------------------------------

    def records(self, object_type: str, *, include_archived: bool = False) -> list[dict[str, Any]]:
        """Every record of ``object_type`` as ``{"id", "properties", "archived"}`` (a copy)."""
        with self.lock:
            return [
                {"id": r["id"], "properties": dict(r["properties"]), "archived": r["archived"]}
                for r in self.objects[_ALIASES[object_type]].values()
                if include_archived or not r["archived"]
            ]

    def associations_of(self, object_type: str, object_id: str, to_type: str) -> list[str]:
        """Ids of the ``to_type`` records associated with the given record (either direction)."""
        src, dst = _ALIASES[object_type], _ALIASES[to_type]
        with self.lock:
            out: list[str] = []
            for link in self.links:
                if (link["from_type"], link["from_id"], link["to_type"]) == (src, object_id, dst):
                    other = link["to_id"]
                elif (link["to_type"], link["to_id"], link["from_type"]) == (src, object_id, dst):
                    other = link["from_id"]
                else:
                    continue
                if other not in out:
                    out.append(other)
            return out

    def seed(self, object_type: str, properties: dict[str, str]) -> str:
        """Add a record directly (e.g. an existing patient contact); returns its id."""
        with self.lock:
            return str(self._insert(_ALIASES[object_type], {k: str(v) for k, v in properties.items()})["id"])

    # -- handlers ----------------------------------------------------------------------------

    def _create(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        body = self._body(req, {"properties", "associations"})
        properties = self._properties(object_type, body.get("properties"), creating=True)
        with self.lock:
            self._check_unique(object_type, properties)
            self._check_stage(object_type, None, properties)
            links = self._inline_associations(object_type, body.get("associations"))
            record = self._insert(object_type, properties)
            for to_type, to_id, type_id, category in links:
                self._link(object_type, record["id"], to_type, to_id, type_id, category)
            return self._reply(201, self._public(record, None))

    def _upsert(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        body = self._body(req, {"inputs"})
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise Reply(self._error(400, "inputs must be a non-empty list", "VALIDATION_ERROR"))
        if len(inputs) > 100:
            raise Reply(self._error(400, "Batch input cannot exceed 100 inputs", "VALIDATION_ERROR"))
        started = _now_iso()
        checked: list[tuple[str, str, dict[str, str]]] = []
        for item in inputs:
            if not isinstance(item, dict):
                raise Reply(self._error(400, "Invalid input JSON: inputs[] must be objects", "VALIDATION_ERROR"))
            unknown = set(item) - {"id", "idProperty", "properties", "objectWriteTraceId"}
            if unknown:
                raise Reply(self._unrecognised(sorted(unknown)[0]))
            id_property, value = item.get("idProperty"), item.get("id")
            if not isinstance(id_property, str) or not isinstance(value, str) or not value:
                raise Reply(self._error(400, "Each input needs 'idProperty' and 'id'", "VALIDATION_ERROR"))
            if id_property not in _PROPERTIES[object_type] and id_property != "hs_object_id":
                raise Reply(
                    self._invalid([(id_property, "PROPERTY_DOESNT_EXIST", f'Property "{id_property}" does not exist')])
                )
            if id_property not in _UNIQUE.get(object_type, set()):
                raise Reply(
                    self._error(
                        400,
                        f"Unable to perform update/upsert by non-unique {_OBJECT_TYPE_IDS[object_type]} property",
                        "VALIDATION_ERROR",
                    )
                )
            checked.append((id_property, value, self._properties(object_type, item.get("properties"), creating=False)))
        results = []
        with self.lock:
            for id_property, value, properties in checked:  # all checked before any is written
                self._check_stage(object_type, self._find_by(object_type, id_property, value), properties)
            for id_property, value, properties in checked:
                existing = self._find_by(object_type, id_property, value)
                if existing is None:
                    missing = self._missing_required(object_type, properties)
                    if missing:
                        raise Reply(self._invalid(missing))
                    record = self._insert(object_type, {**properties, id_property: value})
                    new = True
                else:
                    self._write(existing, properties)
                    record, new = existing, False
                results.append({**self._public(record, None), "new": new})
            return self._reply(
                200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now_iso()}
            )

    def _batch_read(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """``batch/read``: records by id or by a unique property (``idProperty``), read consistently."""
        object_type = self._begin(req, params)
        body = self._body(req, {"inputs", "properties", "propertiesWithHistory", "idProperty"})
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or len(inputs) > 100:
            raise Reply(self._error(400, "inputs must be a list of at most 100 {id} objects", "VALIDATION_ERROR"))
        keys: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or set(item) != {"id"} or not isinstance(item["id"], str):
                raise Reply(self._error(400, 'Each input is {"id": "..."}', "VALIDATION_ERROR"))
            keys.append(item["id"])
        id_property = body.get("idProperty")
        if id_property is not None and (
            not isinstance(id_property, str) or id_property not in _UNIQUE.get(object_type, set())
        ):
            raise Reply(
                self._error(
                    400,
                    f"Unable to read by non-unique {_OBJECT_TYPE_IDS[object_type]} property {id_property}",
                    "VALIDATION_ERROR",
                )
            )
        wanted = [p for p in body.get("properties") or [] if isinstance(p, str)]
        started = _now_iso()
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        with self.lock:
            for key in keys:
                if id_property:
                    found = self._find_by(object_type, id_property, key)
                else:
                    record = self.objects[object_type].get(key) if _NUMERIC_ID.fullmatch(key) else None
                    found = record if record is not None and not record["archived"] else None
                if found is None:
                    missing.append(key)
                else:
                    results.append(self._public(found, wanted or list(_DEFAULT_READ[object_type])))
        out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": _now_iso(),
        }
        if missing:
            out["numErrors"] = 1
            out["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {object_type[:-1].upper()} objects, they may be deleted or not exist.",
                    "context": {"ids": missing},
                }
            ]
        return self._reply(207 if missing else 200, out)

    def _read(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        with self.lock:
            record = self._lookup(object_type, params["id"], req.arg("idProperty"))
            wanted = _list_arg(req, "properties")
            out = self._public(record, wanted or list(_DEFAULT_READ[object_type]))
            associations: dict[str, Any] = {}
            for to_type in _list_arg(req, "associations"):
                target = _ALIASES.get(to_type)
                if target is None:
                    raise Reply(self._error(400, f"Unknown object type {to_type}", "VALIDATION_ERROR"))
                ids = self.associations_of(object_type, record["id"], target)
                if ids:
                    kind = f"{object_type[:-1]}_to_{target[:-1]}".replace("companie_", "company_")
                    associations[target] = {"results": [{"id": i, "type": kind} for i in ids]}
            if associations:
                out["associations"] = associations
            return self._reply(200, out)

    def _update(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        body = self._body(req, {"properties"})
        properties = self._properties(object_type, body.get("properties"), creating=False)
        with self.lock:
            record = self._lookup(object_type, params["id"], req.arg("idProperty"))
            self._check_unique(object_type, properties, exclude=record["id"])
            self._check_stage(object_type, record, properties)
            self._write(record, properties)
            return self._reply(200, self._public(record, None))

    def _archive(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        with self.lock:
            record = self._lookup(object_type, params["id"], None)
            record["archived"] = True
            return SandboxResponse(204)

    def _associate(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        self._auth(req)
        src, dst = _ALIASES.get(params["from"]), _ALIASES.get(params["to"])
        if src is None or dst is None:
            raise Reply(self._error(400, "Unknown object type", "VALIDATION_ERROR"))
        if (src, dst) not in ASSOCIATION_TYPES:
            raise Reply(self._error(400, f"No default association between {src} and {dst}", "VALIDATION_ERROR"))
        with self.lock:
            for object_type, object_id in ((src, params["from_id"]), (dst, params["to_id"])):
                self._lookup(object_type, object_id, None)
            type_id = ASSOCIATION_TYPES[(src, dst)]
            self._link(src, params["from_id"], dst, params["to_id"], type_id, "HUBSPOT_DEFINED")
            spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
            now = _now_iso()
            return self._reply(
                200,
                {
                    "status": "COMPLETE",
                    "results": [
                        {"from": {"id": params["from_id"]}, "to": {"id": params["to_id"]}, "associationSpec": spec}
                    ],
                    "startedAt": now,
                    "completedAt": now,
                },
            )

    def _search(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        object_type = self._begin(req, params)
        self._search_slot()
        body = self._body(req, {"filterGroups", "properties", "limit", "after", "sorts", "query"})
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list):
            raise Reply(self._error(400, "filterGroups must be a list", "VALIDATION_ERROR"))
        if len(groups) > 5:
            raise Reply(self._error(400, "Too many filter groups (max 5)", "VALIDATION_ERROR"))
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise Reply(self._error(400, "Each filter group needs 'filters'", "VALIDATION_ERROR"))
            if len(filters) > 6:
                raise Reply(self._error(400, "Too many filters in a group (max 6)", "VALIDATION_ERROR"))
            total_filters += len(filters)
            for f in filters:
                if not isinstance(f, dict) or f.get("operator") not in _SEARCH_OPERATORS:
                    raise Reply(self._error(400, f"Invalid operator {f.get('operator')!r}", "VALIDATION_ERROR"))
                name = f.get("propertyName")
                if name not in _PROPERTIES[object_type] and name not in _READ_ONLY:
                    raise Reply(
                        self._invalid([(str(name), "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')])
                    )
        if total_filters > 18:
            raise Reply(self._error(400, "Too many filters (max 18)", "VALIDATION_ERROR"))
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 200:
            raise Reply(self._error(400, "limit must be between 1 and 200", "VALIDATION_ERROR"))
        after = body.get("after") or "0"
        if not isinstance(after, str) or not after.isdigit():
            raise Reply(self._error(400, "after must be a paging cursor from an earlier answer", "VALIDATION_ERROR"))
        offset = int(after)
        if offset + limit > 10_000:
            raise Reply(self._error(400, "Search results are limited to 10,000 records per query", "VALIDATION_ERROR"))
        wanted = [p for p in body.get("properties") or [] if isinstance(p, str)]
        sorts = self._sorts(object_type, body.get("sorts"))
        query = body.get("query")
        if query is not None and (not isinstance(query, str) or len(query) > 3000):
            raise Reply(self._error(400, "query must be a string of at most 3000 characters", "VALIDATION_ERROR"))
        cutoff = self.clock() - self.search_lag
        with self.lock:
            found: list[tuple[dict[str, Any], dict[str, str]]] = []
            for record in sorted(self.objects[object_type].values(), key=lambda r: int(r["id"])):
                visible = self._indexed(record, cutoff)
                if visible is None:
                    continue
                if groups and not any(self._matches(object_type, record, visible, g["filters"]) for g in groups):
                    continue
                if query and not self._query_matches(object_type, visible, query):
                    continue
                found.append((record, visible))
            for name, descending in reversed(sorts):

                def key(pair: tuple[dict[str, Any], dict[str, str]], n: str = name) -> tuple[int, int, Any]:
                    return self._sort_key(object_type, pair[0], pair[1], n)

                found.sort(key=key, reverse=descending)
            hits = [
                self._public({**record, "properties": visible}, wanted or list(_DEFAULT_READ[object_type]))
                for record, visible in found
            ]
        page = hits[offset : offset + limit]
        out: dict[str, Any] = {"total": len(hits), "results": page}
        if offset + limit < len(hits):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return self._reply(200, out)

    def _sorts(self, object_type: str, value: Any) -> list[tuple[str, bool]]:
        """``sorts`` as (property, descending) pairs.

        The published spec types each entry as a string (a property name, ascending; a leading
        ``-`` sorts descending); HubSpot's guides show ``{"propertyName", "direction"}`` objects.
        Both are accepted.
        """
        if value is None:
            return []
        if not isinstance(value, list):
            raise Reply(self._error(400, "sorts must be a list", "VALIDATION_ERROR"))
        out: list[tuple[str, bool]] = []
        for item in value:
            if isinstance(item, str):
                name, descending = item.lstrip("-"), item.startswith("-")
            elif isinstance(item, dict) and isinstance(item.get("propertyName"), str):
                direction = item.get("direction", "ASCENDING")
                if direction not in ("ASCENDING", "DESCENDING"):
                    raise Reply(self._error(400, f"Invalid sort direction {direction!r}", "VALIDATION_ERROR"))
                name, descending = item["propertyName"], direction == "DESCENDING"
            else:
                raise Reply(
                    self._error(400, "Each sort is a property name or {propertyName, direction}", "VALIDATION_ERROR")
                )
            if name not in _PROPERTIES[object_type] and name not in _READ_ONLY:
                raise Reply(self._invalid([(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')]))
            out.append((name, descending))
        return out

    @staticmethod
    def _sort_key(object_type: str, record: dict[str, Any], props: dict[str, str], name: str) -> tuple[int, int, Any]:
        value = _system_value(record, name) if name in _READ_ONLY else props.get(name)
        if not value:
            return (1, 0, 0.0)  # records without the property sort last
        if name in _SYSTEM_DATETIMES or _PROPERTIES[object_type].get(name) == _DATETIME:
            instant = _instant(value)
            if instant is not None:
                return (0, 0, instant)
        try:
            return (0, 0, float(value))
        except ValueError:
            return (0, 1, value.lower())

    @staticmethod
    def _query_matches(object_type: str, props: dict[str, str], query: str) -> bool:
        """The free-text query: every word of it starts a word of a default searchable property."""
        words = [w for p in _QUERY_PROPERTIES[object_type] for w in _tokens(props.get(p) or "")]
        wanted = _tokens(query)
        return bool(wanted) and all(any(w.startswith(q) for w in words) for q in wanted)

    # -- request checks ----------------------------------------------------------------------

    def _auth(self, req: SandboxRequest) -> None:
        denied = self.check_auth(req)
        if denied is not None:
            raise Reply(denied)
        self._burst_slot()
        with self.lock:
            self._daily += 1

    def _burst_slot(self) -> None:
        """HubSpot's rolling burst window (private apps: 100 requests per 10 s)."""
        limit = self.burst_limit
        # An explicit window set with Sandbox.set_rate_limit replaces this one.
        if limit is None or self.provider in self.sandbox._limits:
            return
        allowed, per = limit
        with self.lock:
            now = self.clock()
            while self._burst and self._burst[0] <= now - per:
                self._burst.popleft()
            if len(self._burst) >= allowed:
                limited = self._rate_limited("TEN_SECONDLY_ROLLING", None)
                limited.headers.update(self.rate_limit_headers(0, allowed, int(per * 1000)))
                raise Reply(limited)
            self._burst.append(now)

    def _begin(self, req: SandboxRequest, params: dict[str, str]) -> str:
        self._auth(req)
        return _ALIASES[params["type"]]

    def _body(self, req: SandboxRequest, allowed: set[str]) -> dict[str, Any]:
        content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Reply(self._error(415, f"Content type '{content_type or 'none'}' not supported", "VALIDATION_ERROR"))
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise Reply(
                self._error(400, f"Invalid input JSON on line 1, column 1: {exc}", "VALIDATION_ERROR")
            ) from None
        if not isinstance(body, dict):
            raise Reply(
                self._error(400, "Invalid input JSON on line 1, column 1: expected an object", "VALIDATION_ERROR")
            )
        unknown = set(body) - allowed
        if unknown:
            raise Reply(self._unrecognised(sorted(unknown)[0]))
        return body

    def _properties(self, object_type: str, value: Any, *, creating: bool) -> dict[str, str]:
        if not isinstance(value, dict):
            raise Reply(self._error(400, "'properties' must be an object", "VALIDATION_ERROR"))
        known = _PROPERTIES[object_type]
        problems: list[tuple[str, str, str]] = []
        out: dict[str, str] = {}
        for name, raw in value.items():
            if name in _READ_ONLY:
                problems.append(
                    (name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
                )
                continue
            if name not in known:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
                continue
            if raw is not None and not isinstance(raw, str):
                # The spec types every property value as a string (or null to clear it).
                problems.append((name, "INVALID_VALUE", f"{name} must be a string value"))
                continue
            text = raw or ""
            problem = self._check_value(object_type, name, text, value)
            if problem is not None:
                problems.append(problem)
                continue
            kind = known[name]
            out[name] = _normalise_time(text) or text if kind == _DATETIME and text else text
        if creating:
            problems += self._missing_required(object_type, out)
        if problems:
            raise Reply(self._invalid(problems))
        return out

    def _check_value(
        self, object_type: str, name: str, text: str, given: dict[str, Any]
    ) -> tuple[str, str, str] | None:
        kind = _PROPERTIES[object_type][name]
        if not text:
            return None
        if kind == _DATETIME and _normalise_time(text) is None:
            return (name, "INVALID_DATE", f"{text} is not a valid datetime or date for {name}")
        if kind == _NUMBER:
            try:
                float(text)
            except ValueError:
                return (name, "INVALID_DOUBLE", f"{text} was not a valid number")
        if name == "hs_meeting_outcome" and text not in MEETING_OUTCOMES:
            return (name, "INVALID_OPTION", f"{text} was not one of the allowed options: {list(MEETING_OUTCOMES)}")
        if name == "dealstage" and given.get("pipeline"):
            # A stage sent without its pipeline is checked once the deal is known (_check_stage).
            return self._stage_problem(text, str(given["pipeline"]))
        if name == "email" and not _EMAIL.fullmatch(text):
            return (name, "INVALID_EMAIL", f"Email address {text} is invalid")
        if name == "hs_note_body" and len(text) > NOTE_BODY_LIMIT:
            return (name, "INVALID_VALUE", f"hs_note_body is limited to {NOTE_BODY_LIMIT} characters")
        return None

    def _stage_problem(self, stage: str, pipeline: str) -> tuple[str, str, str] | None:
        stages = self.pipelines.get(pipeline)
        if stages is None:
            return ("pipeline", "INVALID_OPTION", f"{pipeline} was not one of the allowed options")
        if stage not in stages:
            message = f"{stage} was not one of the allowed options for pipeline {pipeline}"
            return ("dealstage", "INVALID_OPTION", message)
        return None

    def _check_stage(self, object_type: str, record: dict[str, Any] | None, properties: dict[str, str]) -> None:
        """A deal stage given without ``pipeline`` belongs to the deal's stored pipeline.

        HubSpot checks such a stage against the pipeline the deal is in (``default`` only for a
        new deal, or one that never had a pipeline), not against ``default`` regardless.
        """
        stage = properties.get("dealstage")
        if object_type != "deals" or not stage or properties.get("pipeline"):
            return
        stored = record["properties"].get("pipeline") if record is not None else None
        problem = self._stage_problem(stage, str(stored or "default"))
        if problem is not None:
            raise Reply(self._invalid([problem]))

    @staticmethod
    def _missing_required(object_type: str, properties: dict[str, str]) -> list[tuple[str, str, str]]:
        required = {"deals": ("dealname", "dealstage"), "notes": ("hs_timestamp",)}.get(object_type, ())
        missing = [(n, "REQUIRED_FIELD", f"{n} is required") for n in required if not properties.get(n)]
        if object_type == "meetings" and not (
            properties.get("hs_timestamp") or properties.get("hs_meeting_start_time")
        ):
            missing.append(("hs_timestamp", "REQUIRED_FIELD", "hs_timestamp is required"))
        if object_type == "contacts" and not any(properties.get(n) for n in ("email", "firstname", "lastname")):
            missing.append(("email", "REQUIRED_FIELD", "one of email, firstname or lastname is required"))
        return missing

    def _inline_associations(self, object_type: str, value: Any) -> list[tuple[str, str, int, str]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise Reply(self._error(400, "'associations' must be a list", "VALIDATION_ERROR"))
        links: list[tuple[str, str, int, str]] = []
        for item in value:
            to = item.get("to") if isinstance(item, dict) else None
            to_id = to.get("id") if isinstance(to, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            if (
                not isinstance(to_id, (str, int))
                or not _NUMERIC_ID.fullmatch(str(to_id))
                or not isinstance(types, list)
                or not types
            ):
                raise Reply(self._error(400, "Each association needs 'to.id' and 'types'", "VALIDATION_ERROR"))
            to_type = next((t for t, store in self.objects.items() if str(to_id) in store), None)
            if to_type is None:
                raise Reply(
                    self._error(
                        400, f"One or more associations are invalid: object {to_id} does not exist", "VALIDATION_ERROR"
                    )
                )
            for spec in types:
                category = spec.get("associationCategory") if isinstance(spec, dict) else None
                type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
                valid = {ASSOCIATION_TYPES.get((object_type, to_type))} | _EXTRA_VALID.get(
                    (object_type, to_type), set()
                )
                if category != "HUBSPOT_DEFINED" or not isinstance(type_id, int) or type_id not in valid:
                    raise Reply(
                        self._error(
                            400,
                            f"{category} association type id {type_id} is not valid from "
                            f"{_OBJECT_TYPE_IDS[object_type]} to {_OBJECT_TYPE_IDS[to_type]}",
                            "VALIDATION_ERROR",
                            subCategory="crm.associations.INVALID_ASSOCIATION_TYPE",
                        )
                    )
                links.append((to_type, str(to_id), type_id, category))
        return links

    def _check_unique(self, object_type: str, properties: dict[str, str], exclude: str | None = None) -> None:
        for name in _UNIQUE.get(object_type, set()) - {"hs_object_id"}:
            value = properties.get(name)
            if not value:
                continue
            existing = self._find_by(object_type, name, value)
            if existing is not None and existing["id"] != exclude:
                if object_type == "contacts":
                    message = f"Contact already exists. Existing ID: {existing['id']}"
                else:
                    message = f"A {object_type[:-1]} with {name}={value} already exists. Existing ID: {existing['id']}"
                raise Reply(self._error(409, message, "CONFLICT"))

    def _search_slot(self) -> None:
        if self.search_rate is None:
            return
        with self.lock:
            now = self.clock()
            while self._searches and self._searches[0] <= now - 1.0:
                self._searches.popleft()
            if len(self._searches) >= self.search_rate:
                limited = self._rate_limited(None, "You have reached your secondly limit.")
                limited.headers["Retry-After"] = "1"
                raise Reply(limited)
            self._searches.append(now)

    # -- storage -----------------------------------------------------------------------------

    def _seed_company(self) -> str:
        record = self._insert("companies", {"name": "Sandbox Dental Practice", "domain": "sandbox-dental.example"})
        return str(record["id"])

    def _insert(self, object_type: str, properties: dict[str, str]) -> dict[str, Any]:
        record_id = str(self._next[object_type])
        self._next[object_type] += 7  # HubSpot ids are sparse
        now = _now_iso()
        record: dict[str, Any] = {
            "id": record_id,
            "type": object_type,
            "properties": dict(properties),
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
            "index": [],
        }
        self.objects[object_type][record_id] = record
        self._reindex(record)
        return record

    def _write(self, record: dict[str, Any], properties: dict[str, str]) -> None:
        record["properties"].update(properties)
        record["updatedAt"] = _now_iso()
        self._reindex(record)

    def _reindex(self, record: dict[str, Any]) -> None:
        """Queue the record's new properties for search: visible ``search_lag`` seconds from now."""
        index: list[tuple[float, dict[str, str]]] = record["index"]
        index.append((self.clock(), dict(record["properties"])))
        del index[:-20]

    @staticmethod
    def _indexed(record: dict[str, Any], cutoff: float) -> dict[str, str] | None:
        """The record's properties as the search index saw them at ``cutoff``."""
        if record["archived"]:
            return None
        seen = None
        for written, props in record["index"]:
            if written <= cutoff:
                seen = props
        return seen

    def _link(self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int, category: str) -> None:
        link = {
            "from_type": from_type,
            "from_id": from_id,
            "to_type": to_type,
            "to_id": to_id,
            "type_id": type_id,
            "category": category,
        }
        if link not in self.links:
            self.links.append(link)

    def _find_by(self, object_type: str, name: str, value: str) -> dict[str, Any] | None:
        for record in self.objects[object_type].values():
            if record["archived"]:
                continue
            current = record["id"] if name == "hs_object_id" else record["properties"].get(name)
            if current is not None and (current.lower() == value.lower() if name == "email" else current == value):
                return record
        return None

    def _lookup(self, object_type: str, key: str, id_property: str | None) -> dict[str, Any]:
        if id_property:
            if id_property not in _UNIQUE.get(object_type, set()):
                raise Reply(
                    self._error(
                        400,
                        f"Unable to perform update/upsert by non-unique {_OBJECT_TYPE_IDS[object_type]} property",
                        "VALIDATION_ERROR",
                    )
                )
            found = self._find_by(object_type, id_property, key)
        else:
            record = self.objects[object_type].get(key) if _NUMERIC_ID.fullmatch(key) else None
            found = record if record is not None and not record["archived"] else None
        if found is None:
            raise Reply(
                self._error(
                    404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND", context={"id": [key]}
                )
            )
        return found

    def _matches(
        self, object_type: str, record: dict[str, Any], props: dict[str, str], filters: list[dict[str, Any]]
    ) -> bool:
        for f in filters:
            name, op = f["propertyName"], f["operator"]
            current = (_system_value(record, name) if name in _READ_ONLY else props.get(name)) or ""
            value = str(f.get("value", ""))
            if name in _SYSTEM_DATETIMES or _PROPERTIES[object_type].get(name) == _DATETIME:
                if not self._time_matches(op, current, value, str(f.get("highValue", ""))):
                    return False
                continue
            values = [str(v).lower() for v in f.get("values") or []]
            if op == "HAS_PROPERTY":
                ok = bool(current)
            elif op == "NOT_HAS_PROPERTY":
                ok = not current
            elif op == "EQ":
                ok = current.lower() == value.lower()
            elif op == "NEQ":
                ok = current.lower() != value.lower()
            elif op == "IN":
                ok = current.lower() in values
            elif op == "NOT_IN":
                ok = current.lower() not in values
            elif op == "CONTAINS_TOKEN":
                ok = _contains_token(current, value)
            elif op == "NOT_CONTAINS_TOKEN":
                ok = not _contains_token(current, value)
            else:
                ok = self._compare(op, current, value, str(f.get("highValue", "")))
            if not ok:
                return False
        return True

    @staticmethod
    def _time_matches(op: str, current: str, value: str, high: str) -> bool:
        """Date-time filters compare instants: epoch milliseconds and ISO-8601 alike."""
        if op == "HAS_PROPERTY":
            return bool(current)
        if op == "NOT_HAS_PROPERTY":
            return not current
        a, b = _instant(current), _instant(value)
        if a is None or b is None:
            return False
        if op == "EQ":
            return a == b
        if op == "NEQ":
            return a != b
        if op == "BETWEEN":
            c = _instant(high)
            return c is not None and b <= a <= c
        if op in ("LT", "LTE", "GT", "GTE"):
            return bool({"LT": a < b, "LTE": a <= b, "GT": a > b, "GTE": a >= b}[op])
        return False

    @staticmethod
    def _compare(op: str, current: str, value: str, high: str) -> bool:
        def key(text: str) -> Any:
            try:
                return float(text)
            except ValueError:
                return text

        a, b = key(current), key(value)
        if type(a) is not type(b):
            a, b = str(a), str(b)
        if op == "BETWEEN":
            c = key(high)
            return bool(b <= a <= (c if type(c) is type(a) else str(c)))
        return bool({"LT": a < b, "LTE": a <= b, "GT": a > b, "GTE": a >= b}[op])

    def _public(self, record: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        props: dict[str, Any] = dict(record["properties"])
        created = _CREATED_PROPERTY.get(record["type"], "hs_createdate")
        system = {"hs_object_id": record["id"], created: record["createdAt"]}
        if wanted is None:
            shown: dict[str, Any] = {**props, **system}
        else:
            shown = {name: props.get(name) for name in wanted if name in _PROPERTIES[record["type"]]}
            shown.update(system)
        out: dict[str, Any] = {
            "id": record["id"],
            "properties": shown,
            "createdAt": record["createdAt"],
            "updatedAt": record["updatedAt"],
            "archived": record["archived"],
        }
        return out

    def _bookings(self) -> list[dict[str, Any]]:
        out = []
        for meeting in self.objects["meetings"].values():
            deals = self.associations_of("meetings", meeting["id"], "deals")
            contacts = self.associations_of("meetings", meeting["id"], "contacts")
            deal = self.objects["deals"].get(deals[0]) if deals else None
            props = meeting["properties"]
            body = props.get("hs_meeting_body") or ""
            match = re.search(r"Booking reference: \[([^\]]+)\]", body)
            out.append(
                {
                    "id": f"{deal['id']}:{meeting['id']}" if deal else None,
                    "deal_id": deal["id"] if deal else None,
                    "meeting_id": meeting["id"],
                    "contact_id": contacts[0] if contacts else None,
                    "reference": match.group(1) if match else None,
                    "title": props.get("hs_meeting_title"),
                    "start": props.get("hs_meeting_start_time"),
                    "end": props.get("hs_meeting_end_time"),
                    "outcome": props.get("hs_meeting_outcome"),
                    "dealstage": deal["properties"].get("dealstage") if deal else None,
                    "dealname": deal["properties"].get("dealname") if deal else None,
                }
            )
        return out

    # -- responses ---------------------------------------------------------------------------

    def _reply(self, status: int, body: Any) -> SandboxResponse:
        response = json_response(status, body)
        response.headers.update(self._common_headers())
        return response

    def _common_headers(self) -> dict[str, str]:
        headers = {
            "X-HubSpot-Correlation-Id": str(uuid.uuid4()),
            "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(250_000 - self._daily, 0)),
        }
        limit = self.burst_limit
        if limit is not None and self.provider not in self.sandbox._limits:
            headers.update(self.rate_limit_headers(limit[0] - len(self._burst), limit[0], int(limit[1] * 1000)))
        return headers

    def _error(self, status: int, message: str, category: str, **extra: Any) -> SandboxResponse:
        correlation = str(uuid.uuid4())
        body: dict[str, Any] = {
            "status": "error",
            "message": message,
            "correlationId": correlation,
            "category": category,
        }
        body.update(extra)
        return json_response(status, body, {"X-HubSpot-Correlation-Id": correlation})

    def _invalid(self, problems: list[tuple[str, str, str]]) -> SandboxResponse:
        """HubSpot's 400 for property values: the per-property list is embedded in the message."""
        items = [
            {"isValid": False, "message": msg, "error": code, "name": name, "localizedErrorMessage": msg}
            for name, code, msg in problems
        ]
        message = "Property values were not valid: " + json.dumps(items, separators=(",", ":"))
        return self._error(400, message, "VALIDATION_ERROR")

    def _unrecognised(self, field: str) -> SandboxResponse:
        return self._error(
            400,
            f'Invalid input JSON on line 1, column 2: Unrecognized field "{field}" (class '
            "com.hubspot.inbounddb.publicobject.core.v2.SimplePublicObjectInput), not marked as ignorable",
            "VALIDATION_ERROR",
        )

    def _rate_limited(self, policy: str | None, message: str | None) -> SandboxResponse:
        correlation = str(uuid.uuid4())
        body: dict[str, Any] = {
            "status": "error",
            "message": message or "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation,
        }
        if policy:
            body["policyName"] = policy
            body["groupName"] = "publicapi:private-app-api-calls-ten-secondly:sandbox"
        return json_response(429, body, {"X-HubSpot-Correlation-Id": correlation})


EMULATOR = HubSpotEmulator
