"""Contract tests: every request the HubSpot adapter sends is checked against the shapes in the
vendor note (``shared/notes/hubspot.md``; HubSpot's own spec files are not redistributable, so the
note carries the paths, property names and association type ids). The tables below encode the
note; section numbers (§) point into it. One test sends deliberately wrong requests through the
same checker to show that it fails them.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from pms_integration.errors import ConflictError
from pms_integration.models import AppointmentUpdate, Patient
from pms_integration.sandbox import Sandbox

from ._hubspot_support import BASE, TOKEN, fake_hubspot, make_adapter, sandbox_client, sandbox_emulator
from .test_hubspot_adapter import booking, report

NOTE = Path(__file__).resolve().parents[2] / "shared" / "notes" / "hubspot.md"

# ---------------------------------------------------------------------------------------------
# The contract, from the vendor note


#: §1.1 date-based versions (``/crm/objects/2026-09/...``) and §2 (``/crm/v3/objects/...``).
OBJECT_PREFIX = {"v3": "/crm/v3/objects/", "dated": "/crm/objects/{version}/"}
#: §3.5 default association PUT on v4 (``/crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}``);
#: §1.1 gives the date-versioned equivalent under the objects prefix.
ASSOCIATION_PREFIX = {"v3": "/crm/v4/objects/", "dated": "/crm/objects/{version}/"}

#: Routes the adapter may use: method, path below the prefix, kind (§ of the note).
ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"contacts/(?P<email>[^/]+@[^/]+)", "read_by_email"),  # §3.3, ?idProperty=email
    ("GET", r"(?P<type>deals|meetings|contacts|notes|companies)/(?P<id>\d+)", "read"),  # §2 Read
    ("POST", r"(?P<type>contacts|deals|meetings|notes|companies)", "create"),  # §2 Create, §3.1-§3.4
    ("PATCH", r"(?P<type>contacts|deals|meetings|notes)/(?P<id>\d+)", "update"),  # §2 Update
    ("POST", r"(?P<type>contacts|deals|meetings|notes|companies)/search", "search"),  # §2 Search
    ("POST", r"(?P<type>deals)/batch/upsert", "upsert"),  # §3.1 idempotent variant
    # the published spec's contacts batch read (BatchReadInputSimplePublicObjectId): the e-mail goes
    # in the body with idProperty, never in the URL; meetings are batch read by id (scheduling reads),
    # and a returning patient's deals by id (a booking's same-reference check, consistent unlike search)
    ("POST", r"(?P<type>contacts|deals|meetings)/batch/read", "batch_read"),
    # §3.1: a deal by the configured unique property (``?idProperty=``), the booking reference
    ("GET", r"(?P<type>deals)/(?P<unique>[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})", "read_by_unique"),
]
#: The scheduling reads' associations batch read, checked by hand against HubSpot's spec collection
#: (PublicApiSpecs/CRM/Associations/Rollouts/130902/v4/associations.json and .../2026-09/associations.json:
#: ``POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read``, body
#: BatchInputPublicFetchAssociationsBatchRequest ``{"inputs": [{"id", "after"?}]}``, 1,000 inputs at most).
ASSOCIATION_BATCH_PREFIX = {"v3": "/crm/v4/associations/", "dated": "/crm/associations/{version}/"}
ASSOCIATION_BATCH_ROUTE = r"(?P<from>contacts|meetings)/(?P<to>meetings|deals)/batch/read"
ASSOCIATION_ROUTE = (
    "PUT",
    r"(?P<from>deals?|meetings?|notes?|contacts?)/(?P<from_id>\d+)/associations/default/"
    r"(?P<to>contacts?|deals?|compan(?:y|ies)|meetings?|notes?)/(?P<to_id>\d+)",
    "associate",
)  # §3.5 (and §1.1)

#: Property names per object: §3.1 deals, §3.2 meetings (property table), §3.3 contacts, §3.4 notes.
PROPERTIES: dict[str, set[str]] = {
    "contacts": {"email", "firstname", "lastname", "phone"},
    "deals": {"dealname", "pipeline", "dealstage", "closedate", "amount", "closed_lost_reason", "hubspot_owner_id"},
    "meetings": {
        "hs_timestamp",
        "hs_meeting_title",
        "hs_meeting_body",
        "hs_internal_meeting_notes",
        "hubspot_owner_id",
        "hs_meeting_external_url",
        "hs_meeting_location",
        "hs_meeting_start_time",
        "hs_meeting_end_time",
        "hs_meeting_outcome",
        "hs_activity_type",
        "hs_attachment_ids",
    },
    "notes": {"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"},
    # the company report notes go to when no company is configured (TL;DR 3: a "practice" company)
    "companies": {"name"},
}
#: What a create must carry: §3.1 ("include dealname, dealstage, and ... pipeline"), §3.2 and §3.4
#: (``hs_timestamp`` required), §3.3 (at least one of email, firstname, lastname).
REQUIRED_ON_CREATE = {
    "deals": {"dealname", "dealstage", "pipeline"},
    "meetings": {"hs_timestamp"},
    "notes": {"hs_timestamp"},
}
CONTACT_IDENTITY = {"email", "firstname", "lastname"}

#: §3.5, HUBSPOT_DEFINED default association type ids, (from, to) -> id.
ASSOCIATION_TYPE_IDS: dict[tuple[str, str], int] = {
    ("deals", "contacts"): 3,
    ("contacts", "deals"): 4,
    ("deals", "companies"): 5,
    ("deals", "meetings"): 211,
    ("deals", "notes"): 213,
    ("meetings", "contacts"): 200,
    ("meetings", "companies"): 188,
    ("meetings", "deals"): 212,
    ("contacts", "meetings"): 199,
    ("notes", "contacts"): 202,
    ("notes", "companies"): 190,
    ("notes", "deals"): 214,
}
#: Properties the scheduling reads use that the note does not list, from HubSpot's own pages:
#: ``mobilephone`` is a default contact property (https://knowledge.hubspot.com/properties/hubspots-default-contact-properties),
#: and the calculated phone properties are how search matches phone numbers (§2; the search guide,
#: https://developers.hubspot.com/docs/api-reference/latest/crm/search-the-crm). Search filters only.
READ_ONLY_PROPERTIES = {
    "contacts": {"mobilephone", "hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number"}
}
#: §2 ``associationCategory`` values.
ASSOCIATION_CATEGORIES = {"HUBSPOT_DEFINED", "INTEGRATOR_DEFINED", "USER_DEFINED", "WORK"}
#: §3.2 outcome values (``SCHEDULED`` from the doc example; the others observed).
MEETING_OUTCOMES = {"SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"}
#: Date-time properties (§3.1 closedate, §3.2 meeting times, §3.4 hs_timestamp): UTC ISO-8601.
TIME_PROPERTIES = {"closedate", "hs_timestamp", "hs_meeting_start_time", "hs_meeting_end_time"}
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,3})?Z$")
#: §2 search limits and the operators the note names (§3.3 EQ, §7.4 CONTAINS_TOKEN, §2 IN/NOT_IN); LT, GT,
#: NEQ and NOT_HAS_PROPERTY (busy time in a window, not cancelled) from the Filter schema's operator
#: enum in the spec collection (PublicApiSpecs/CRM/Meetings/Rollouts/424/v3/meetings.json); LT/GT
#: with epoch-millisecond values; the Filter schema requires only operator and propertyName.
SEARCH_OPERATORS = {"EQ", "CONTAINS_TOKEN", "IN", "NOT_IN", "LT", "GT", "NEQ", "NOT_HAS_PROPERTY"}
VALUELESS_OPERATORS = {"NOT_HAS_PROPERTY"}
EPOCH_MS = re.compile(r"^\d{12,14}$")
MAX_FILTER_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS, MAX_SEARCH_LIMIT = 5, 6, 18, 200
#: §3.4 ``hs_note_body`` length limit.
NOTE_BODY_LIMIT = 65_536
NUMERIC_ID = re.compile(r"^\d{1,20}$")


def _singular(name: str) -> str:
    return {"company": "companies"}.get(name, name if name.endswith("s") else name + "s")


def check_request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any,
    *,
    api_version: str = "v3",
    reference_property: str | None = None,
) -> list[str]:
    """Every way ``method url body`` departs from the note's contract (empty: it conforms)."""
    problems: list[str] = []
    if "@" in unquote(url) or re.search(r"\d{7,}", urlsplit(url).query):
        problems.append("a patient identifier (e-mail or phone) in the URL: use a search body")
    parts = urlsplit(url)
    path = unquote(parts.path) if "@" in unquote(parts.path) else parts.path
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if headers.get("Authorization") != f"Bearer {TOKEN}":
        problems.append("Authorization must be 'Bearer <token>' (§1.2)")
    if method == "DELETE":
        problems.append("DELETE is never used: cancel moves stages (§7.3)")
    dated = api_version != "v3"
    objects = OBJECT_PREFIX["dated" if dated else "v3"].format(version=api_version)
    assoc = ASSOCIATION_PREFIX["dated" if dated else "v3"].format(version=api_version)
    match: tuple[str, dict[str, str]] | None = None
    batch_assoc = ASSOCIATION_BATCH_PREFIX["dated" if dated else "v3"].format(version=api_version)
    if method == "POST" and path.startswith(batch_assoc):
        m = re.fullmatch(ASSOCIATION_BATCH_ROUTE, path[len(batch_assoc) :])
        if m:
            match = ("association_batch_read", m.groupdict())
    if match is None and method == ASSOCIATION_ROUTE[0] and path.startswith(assoc):
        m = re.fullmatch(ASSOCIATION_ROUTE[1], path[len(assoc) :])
        if m:
            match = (ASSOCIATION_ROUTE[2], m.groupdict())
    if match is None and path.startswith(objects):
        rest = path[len(objects) :]
        for route_method, pattern, kind in ROUTES:
            m = re.fullmatch(pattern, rest)
            if route_method == method and m:
                match = (kind, m.groupdict())
                break
    if match is None:
        return [*problems, f"no such route in the note: {method} {path}"]
    kind, params = match
    if kind == "read_by_email":
        if query.get("idProperty") != "email":
            problems.append("reading a contact by e-mail needs ?idProperty=email (§3.3)")
        if body:
            problems.append("GET has no body")
    elif kind == "read_by_unique":
        if reference_property is None or query.get("idProperty") != reference_property:
            problems.append("a deal is read by the reference only with ?idProperty=<the unique property> (§3.1)")
    elif kind == "association_batch_read":
        problems += _check_association_batch_read(params["from"], params["to"], body)
    if kind in ("read", "read_by_unique"):
        for name in (query.get("properties") or "").split(","):
            if name and name not in PROPERTIES[params["type"]]:
                problems.append(f"unknown {params['type']} property {name!r} in ?properties")
        if query.get("associations") and query["associations"] not in PROPERTIES:
            problems.append(f"unknown association type {query['associations']!r}")
    elif kind == "associate":
        if body:
            problems.append("the default association PUT has no body (§3.5)")
        pair = (_singular(params["from"]), _singular(params["to"]))
        if pair not in ASSOCIATION_TYPE_IDS:
            problems.append(f"no documented association {pair} (§3.5)")
    elif kind == "create":
        problems += _check_create(params["type"], body)
    elif kind == "update":
        problems += _check_properties(params["type"], body, where="PATCH")
        if isinstance(body, dict) and set(body) - {"properties"}:
            problems.append("PATCH bodies carry only 'properties' (§2)")
    elif kind == "search":
        problems += _check_search(params["type"], body)
    elif kind == "upsert":
        problems += _check_upsert(body, reference_property)
    elif kind == "batch_read":
        problems += _check_batch_read(body, params["type"])
    return problems


def _check_association_batch_read(from_type: str, to_type: str, body: Any) -> list[str]:
    if (from_type, to_type) not in ASSOCIATION_TYPE_IDS:
        return [f"no documented association {(from_type, to_type)} (§3.5)"]
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"inputs"} or not isinstance(inputs, list) or not inputs:
        return ["the associations batch read body is {inputs: [...]} (BatchInputPublicFetchAssociationsBatchRequest)"]
    problems = ["more than 1,000 inputs"] if len(inputs) > 1000 else []
    for item in inputs:
        if not isinstance(item, dict) or "id" not in item or set(item) - {"id", "after"}:
            problems.append("each input is {id, after?} (PublicFetchAssociationsBatchRequest)")
        elif not isinstance(item["id"], str) or not NUMERIC_ID.fullmatch(item["id"]):
            problems.append("input ids are numeric strings")
    return problems


def _check_properties(object_type: str, body: Any, *, where: str, extra: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    problems: list[str] = []
    props = body.get("properties") if isinstance(body, dict) else None
    if not isinstance(props, dict) or not props:
        return [f"{where} needs a non-empty 'properties' object (§2)"]
    for name, value in props.items():
        if name not in PROPERTIES[object_type] | extra:
            problems.append(f"unknown {object_type} property {name!r} (§3)")
        if not isinstance(value, str):
            problems.append(f"property {name!r} must be a string value (§2)")
            continue
        if name in TIME_PROPERTIES and not UTC_TIME.fullmatch(value):
            problems.append(f"{name} must be a UTC ISO time, got {value!r}")
        if name == "hs_meeting_outcome" and value not in MEETING_OUTCOMES:
            problems.append(f"hs_meeting_outcome {value!r} is not one of {sorted(MEETING_OUTCOMES)} (§3.2)")
        if name == "hs_note_body" and len(value) > NOTE_BODY_LIMIT:
            problems.append("hs_note_body exceeds 65,536 characters (§3.4)")
    return problems


def _check_create(object_type: str, body: Any) -> list[str]:
    problems = _check_properties(object_type, body, where="create")
    if not isinstance(body, dict):
        return problems
    props = body.get("properties") or {}
    missing = REQUIRED_ON_CREATE.get(object_type, set()) - set(props)
    if missing:
        problems.append(f"{object_type} create lacks {sorted(missing)}")
    if object_type == "contacts" and not CONTACT_IDENTITY & set(props):
        problems.append("a contact needs one of email, firstname, lastname (§3.3)")
    if set(body) - {"properties", "associations"}:
        problems.append(f"unknown create keys {sorted(set(body) - {'properties', 'associations'})} (§2)")
    allowed = {tid for (src, _), tid in ASSOCIATION_TYPE_IDS.items() if src == object_type}
    for assoc in body.get("associations") or []:
        to = assoc.get("to") if isinstance(assoc, dict) else None
        if not isinstance(to, dict) or not NUMERIC_ID.fullmatch(str(to.get("id", ""))) or not isinstance(to["id"], str):
            problems.append("association 'to.id' must be a numeric string id (§2)")
        types = assoc.get("types") if isinstance(assoc, dict) else None
        if not isinstance(types, list) or not types:
            problems.append("association needs 'types' (§2)")
            continue
        for t in types:
            if t.get("associationCategory") not in ASSOCIATION_CATEGORIES:
                problems.append(f"bad associationCategory {t.get('associationCategory')!r} (§2)")
            if t.get("associationTypeId") not in allowed:
                problems.append(
                    f"associationTypeId {t.get('associationTypeId')!r} is not a documented type from {object_type} (§3.5)"
                )
    return problems


def _check_search(object_type: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["search needs a JSON body (§2)"]
    problems: list[str] = []
    groups = body.get("filterGroups") or []
    if len(groups) > MAX_FILTER_GROUPS:
        problems.append("more than 5 filterGroups (§2)")
    total = 0
    for group in groups:
        filters = group.get("filters") or []
        total += len(filters)
        if len(filters) > MAX_FILTERS_PER_GROUP:
            problems.append("more than 6 filters in a group (§2)")
        for f in filters:
            if f.get("operator") not in SEARCH_OPERATORS:
                problems.append(f"operator {f.get('operator')!r} not in the note")
            if f.get("propertyName") not in PROPERTIES[object_type] | READ_ONLY_PROPERTIES.get(object_type, set()):
                problems.append(f"search on unknown property {f.get('propertyName')!r}")
            if f.get("operator") in VALUELESS_OPERATORS:
                if set(f) != {"propertyName", "operator"}:
                    problems.append(f"{f.get('operator')} takes no value")
            elif not isinstance(f.get("value"), str):
                problems.append("filter values are strings")
            elif f.get("operator") in ("LT", "GT") and not (
                f.get("propertyName") in TIME_PROPERTIES and EPOCH_MS.fullmatch(f["value"])
            ):
                problems.append("LT/GT compare a time property with epoch milliseconds")
    if total > MAX_FILTERS:
        problems.append("more than 18 filters (§2)")
    limit = body.get("limit")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        problems.append("search limit must be 1..200 (§2)")
    # The published spec's PublicObjectSearchRequest requires these five.
    missing = {"filterGroups", "properties", "sorts", "limit", "after"} - set(body)
    if missing:
        problems.append(f"search body lacks {sorted(missing)} (required by PublicObjectSearchRequest)")
    if not isinstance(body.get("after", ""), str):
        problems.append("'after' is a string cursor")
    sorts = body.get("sorts", [])
    if not isinstance(sorts, list) or not all(isinstance(x, str) for x in sorts):
        problems.append("'sorts' is a list of property names (strings) in the spec")
    for name in body.get("properties") or []:
        if name not in PROPERTIES[object_type] | READ_ONLY_PROPERTIES.get(object_type, set()):
            problems.append(f"unknown {object_type} property {name!r} requested")
    if set(body) - {"filterGroups", "properties", "limit", "after", "sorts", "query"}:
        problems.append("unknown search keys")
    return problems


def _check_batch_read(body: Any, object_type: str = "contacts") -> list[str]:
    if not isinstance(body, dict):
        return ["batch/read needs a JSON body"]
    problems: list[str] = []
    missing = {"inputs", "properties", "propertiesWithHistory"} - set(body)
    if missing:
        problems.append(f"batch/read lacks {sorted(missing)} (required by BatchReadInputSimplePublicObjectId)")
    if set(body) - {"inputs", "properties", "propertiesWithHistory", "idProperty"}:
        problems.append("unknown batch/read keys")
    if object_type == "contacts" and body.get("idProperty") != "email":
        problems.append("contacts are read by their unique e-mail (idProperty: email)")
    if object_type in ("deals", "meetings") and "idProperty" in body:
        problems.append(f"{object_type} are read by id here")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and set(i) == {"id"} for i in inputs):
        problems.append("batch/read inputs are [{id}]")
    elif len(inputs) > 100:
        problems.append("at most 100 inputs per batch read")
    for name in body.get("properties") or []:
        if name not in PROPERTIES[object_type]:
            problems.append(f"unknown {object_type} property {name!r} requested")
    return problems


def _check_upsert(body: Any, reference_property: str | None) -> list[str]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        return ["batch/upsert needs 'inputs' (§3.1)"]
    problems: list[str] = []
    for item in inputs:
        if "associations" in item:
            problems.append("the upsert input has no associations field (§2)")
        if set(item) - {"id", "idProperty", "properties", "objectWriteTraceId"}:
            problems.append("unknown upsert input keys (§2)")
        if reference_property is None or item.get("idProperty") != reference_property:
            problems.append("idProperty must be the configured unique property (§3.1, §6)")
        if not isinstance(item.get("id"), str):
            problems.append("upsert 'id' is the unique value, a string")
        problems += _check_properties("deals", item, where="upsert", extra={reference_property or ""})
    return problems


# ---------------------------------------------------------------------------------------------
# Exercise every operation and path, record the requests


def _record(rsps: Any, out: list[tuple[str, str, dict[str, str], Any]]) -> None:
    for call in rsps.calls:
        req = call.request
        out.append((str(req.method), str(req.url), dict(req.headers), json.loads(req.body) if req.body else None))


def scenario(api_version: str, reference_property: str | None) -> list[tuple[str, str, dict[str, str], Any]]:
    env: dict[str, str] = {"PMS_HUBSPOT_API_VERSION": api_version, "PMS_HUBSPOT_REPORT_COMPANY_ID": "3001"}
    if reference_property:
        env["PMS_HUBSPOT_REFERENCE_PROPERTY"] = reference_property
    requests_seen: list[tuple[str, str, dict[str, str], Any]] = []
    with fake_hubspot() as (fake, rsps):
        adapter = make_adapter(None, **env)
        new = adapter.book(booking(reference="bk-new-contact"))
        adapter.book(booking(reference="bk-existing-contact", location="Main St", notes="first visit"))
        adapter.book(booking(Patient(phone="+15555550199"), reference="bk-phone-only"))
        adapter.book(booking(Patient(email="x@example.com", contact_id="4242"), reference="bk-known-id"))
        adapter.update(new.id, AppointmentUpdate(start=booking().start + dt.timedelta(days=1), duration_minutes=30))
        adapter.update(new.id, AppointmentUpdate(title="Cleaning", notes="n", location="Room 2"))
        adapter.cancel(new.id, reason="patient called")
        adapter.push_report(report())
        adapter.push_report(report())
        make_adapter(None, **env).push_report(report())
        no_company = {k: v for k, v in env.items() if k != "PMS_HUBSPOT_REPORT_COMPANY_ID"}
        make_adapter(None, **no_company).push_report(report(report_id="pms-report-contract"))
        # reconcile paths
        fake.fail("POST", "/deals$", exception=requests.exceptions.ReadTimeout("t"), commit=True)
        fake.fail("POST", "/meetings$", exception=requests.exceptions.ReadTimeout("t"), commit=True)
        adapter.book(booking(reference="bk-reconcile-1"))
        fake.hide_associations = True
        fake.fail("POST", "/meetings$", status=503, body={}, commit=True)
        adapter.book(booking(reference="bk-reconcile-2"))
        _record(rsps, requests_seen)
    return requests_seen


CONFIGS = [("v3", None), ("v3", "pms_booking_id"), ("2026-09", None), ("2026-09", "pms_booking_id")]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}-{c[1] or 'search'}")
def recorded(request: pytest.FixtureRequest) -> tuple[str, str | None, list[tuple[str, str, dict[str, str], Any]]]:
    api_version, ref = request.param
    return api_version, ref, scenario(api_version, ref)


def test_every_request_matches_the_note(
    recorded: tuple[str, str | None, list[tuple[str, str, dict[str, str], Any]]],
) -> None:
    api_version, ref, seen = recorded
    failures = []
    for method, url, headers, body in seen:
        problems = check_request(method, url, headers, body, api_version=api_version, reference_property=ref)
        if problems:
            failures.append(f"{method} {url}: {problems}")
    assert not failures, "\n".join(failures)
    assert len(seen) > 25


def test_the_scenario_covers_every_route(
    recorded: tuple[str, str | None, list[tuple[str, str, dict[str, str], Any]]],
) -> None:
    _api_version, ref, seen = recorded
    kinds = set()
    for method, url, _, _ in seen:
        path = urlsplit(url).path
        if method == "PUT":
            kinds.add("associate")
        elif method == "GET":
            kinds.add("read_by_email" if "@" in path else "read")
        elif method == "PATCH":
            kinds.add("update")
        elif path.endswith("/search"):
            kinds.add("search")
        elif path.endswith("/batch/upsert"):
            kinds.add("upsert")
        elif path.endswith("/batch/read"):
            kinds.add("batch_read")
        else:
            kinds.add("create")
    expected = {"read", "create", "update", "search", "batch_read"}
    if ref:
        expected |= {"upsert", "associate"}
    assert expected <= kinds
    assert "read_by_email" not in kinds, "patients are looked up with a search body, not by e-mail in the URL"


def test_inline_associations_use_the_documented_ids_per_target() -> None:
    """The type id must match the *target* object too, not only be valid from the source."""
    with fake_hubspot() as (fake, _):
        contact = fake.add("contacts", {"email": "jane@example.com"})
        appt = make_adapter(PMS_HUBSPOT_REPORT_COMPANY_ID="3001").book(booking())
    deal_id, meeting_id = appt.id.split(":")
    for src, src_id, dst, dst_id, type_id in fake.associations:
        assert ASSOCIATION_TYPE_IDS[(src, dst)] == type_id, (src, dst, type_id)
    assert {(s, d) for s, _, d, _, _ in fake.associations} == {
        ("deals", "contacts"),
        ("meetings", "contacts"),
        ("meetings", "deals"),
    }
    assert contact and deal_id and meeting_id


# ---------------------------------------------------------------------------------------------
# The checker fails wrong requests


def _good_requests() -> dict[str, tuple[str, str, dict[str, str], Any]]:
    seen = scenario("v3", None)
    by_kind: dict[str, tuple[str, str, dict[str, str], Any]] = {}
    for item in seen:
        method, url, _, _body = item
        path = urlsplit(url).path
        key = method + " " + re.sub(r"/\d+", "/{id}", path)
        by_kind.setdefault(key, item)
    return by_kind


def _mutations() -> Iterator[tuple[str, str, Any]]:
    """(request key, description, mutate function)."""
    deal = "POST /crm/v3/objects/deals"
    meeting = "POST /crm/v3/objects/meetings"

    def set_type(body: Any, index: int, value: Any) -> None:
        body["associations"][index]["types"][0]["associationTypeId"] = value

    yield deal, "deal->contact association id 4 (that is contact->deal)", lambda r: set_type(r[3], 0, 4)
    yield meeting, "meeting->deal association id 211 (that is deal->meeting)", lambda r: set_type(r[3], 1, 211)
    yield meeting, "unknown meeting property", lambda r: r[3]["properties"].__setitem__("hs_meeting_start", "x")
    yield (
        meeting,
        "outcome CANCELLED (two Ls)",
        lambda r: r[3]["properties"].__setitem__("hs_meeting_outcome", "CANCELLED"),
    )
    yield (
        deal,
        "closedate with an offset",
        lambda r: r[3]["properties"].__setitem__("closedate", "2026-10-05T09:00:00-04:00"),
    )
    yield deal, "numeric property value", lambda r: r[3]["properties"].__setitem__("amount", 150)
    yield deal, "deal without dealstage", lambda r: r[3]["properties"].pop("dealstage")
    yield (
        deal,
        "association category typo",
        lambda r: r[3]["associations"][0]["types"][0].__setitem__("associationCategory", "HUBSPOT"),
    )
    yield deal, "missing bearer", lambda r: r[2].pop("Authorization")


def _apply(request: tuple[str, str, dict[str, str], Any], mutate: Any) -> tuple[str, str, dict[str, str], Any]:
    copied = (request[0], request[1], dict(request[2]), copy.deepcopy(request[3]))
    mutate(copied)
    return copied


def test_deliberately_wrong_requests_fail_the_contract() -> None:
    good = _good_requests()
    for key, what, mutate in _mutations():
        request = good[key]
        assert check_request(*request) == [], key
        method, url, headers, body = _apply(request, mutate)
        assert check_request(method, url, headers, body), f"the checker accepted: {what}"
    # wrong paths and methods
    deal_url = BASE + "/crm/v3/objects/deals"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = good["POST /crm/v3/objects/deals"][3]
    assert check_request("POST", BASE + "/crm/v3/object/deals", headers, body)
    assert check_request("POST", BASE + "/crm/objects/v3/deals", headers, body)
    assert check_request("DELETE", deal_url + "/987654321", headers, None)
    assert check_request("POST", deal_url, headers, body, api_version="2026-09")
    assert check_request("GET", BASE + "/crm/v3/objects/contacts/jane%40example.com", headers, None)  # no idProperty
    upsert = {
        "inputs": [
            {
                "idProperty": "pms_booking_id",
                "id": "bk-1",
                "properties": body["properties"],
                "associations": body["associations"],
            }
        ]
    }
    assert check_request("POST", deal_url + "/batch/upsert", headers, upsert, reference_property="pms_booking_id")
    search = {
        "filterGroups": [{"filters": [{"propertyName": "dealname", "operator": "LIKE", "value": "x"}]}],
        "limit": 500,
    }
    assert len(check_request("POST", deal_url + "/search", headers, search)) == 3  # LIKE, limit, missing keys
    spec_valid = {"filterGroups": [], "properties": ["dealname"], "sorts": ["hs_object_id"], "limit": 10, "after": "0"}
    assert check_request("POST", deal_url + "/search", headers, spec_valid) == []
    assert check_request("POST", deal_url + "/search", headers, {**spec_valid, "sorts": [{"propertyName": "x"}]})
    assert check_request("PUT", BASE + "/crm/v4/objects/deals/1/associations/default/notes/2", headers, None) == []
    assert check_request("PUT", BASE + "/crm/v4/objects/meetings/1/associations/default/notes/2", headers, None)


# ---------------------------------------------------------------------------------------------
# The tables above agree with the note itself


_NOTE_NAMES = {"Deal": "deals", "Contact": "contacts", "Meeting": "meetings", "Note": "notes"}


@pytest.mark.skipif(not NOTE.exists(), reason=f"vendor note not found at {NOTE} (the shared folder is absent)")
def test_tables_agree_with_the_vendor_note() -> None:
    text = NOTE.read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*(\w+) → (\w+)(?: \(primary\))?\s*\|\s*\**(\d+)\**\s*\|", text, flags=re.M)
    documented: dict[tuple[str, str], int] = {}
    for src, dst, type_id in rows:
        key = (_NOTE_NAMES.get(src, src.lower()), _NOTE_NAMES.get(dst.capitalize(), dst.lower()))
        key = (key[0], {"company": "companies"}.get(key[1], key[1] if key[1].endswith("s") else key[1] + "s"))
        documented.setdefault(key, int(type_id))
    for pair, type_id in ASSOCIATION_TYPE_IDS.items():
        assert documented.get(pair) == type_id, (pair, type_id, documented.get(pair))
    for object_type, names in PROPERTIES.items():
        if object_type == "companies":
            continue  # only the company's standard "name" is used (TL;DR 3 names the company record)
        for name in names:
            assert f"`{name}`" in text or f'"{name}"' in text, f"{object_type}.{name} is not in the note"
    for outcome in MEETING_OUTCOMES:
        assert outcome in text
    assert "65,536" in text and "/crm/objects/2026-09/" in text and "idProperty=email" in text


# ---------------------------------------------------------------------------------------------
# The scheduling reads, recorded over the wire against the sandbox's emulator


READ_DAY = "2030-03-05"  # a Tuesday


def read_scenario(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, api_version: str, reference_property: str | None
) -> list[tuple[str, str, dict[str, str], Any]]:
    """Book, a refused clash, free slots, patients and appointments by e-mail, phone and reference,
    and a read by id: every request the client sent, as the checker sees them."""
    seen: list[tuple[str, str, dict[str, str], Any]] = []
    dispatch = sb._dispatch
    token = sandbox_emulator(sb).token

    def recording(method: str, target: str, headers: Any, body: bytes) -> Any:
        if target.startswith("/hubspot/"):
            sent_headers = dict(headers.items())
            if sent_headers.get("Authorization") == f"Bearer {token}":
                sent_headers["Authorization"] = f"Bearer {TOKEN}"  # the checker knows the test token
            seen.append((method, BASE + target[len("/hubspot") :], sent_headers, json.loads(body) if body else None))
        return dispatch(method, target, headers, body)

    monkeypatch.setattr(sb, "_dispatch", recording)
    monkeypatch.setattr(
        sandbox_emulator(sb), "search_rate", None
    )  # this client does not really sleep out HubSpot's 5 searches/s
    env = {"PMS_HUBSPOT_API_VERSION": api_version, "PMS_HUBSPOT_OWNER_ID": "7001"}
    if reference_property:
        env["PMS_HUBSPOT_REFERENCE_PROPERTY"] = reference_property
    patient = {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+15555550123"}
    with sandbox_client(sb, **env) as c:
        booked = c.book_appointment(
            {"start": f"{READ_DAY}T10:00:00-05:00", "duration_minutes": 45, "title": "Cleaning", "patient": patient,
             "reference": "contract-read-1"},
            provider="hubspot",
        )  # fmt: skip
        sandbox_emulator(sb).settle()
        with pytest.raises(ConflictError):
            c.book_appointment(
                {"start": f"{READ_DAY}T10:15:00-05:00", "duration_minutes": 30, "title": "Exam",
                 "patient": {"name": "Joe Roe", "email": "joe@example.com"}, "reference": "contract-read-2"},
                provider="hubspot",
            )  # fmt: skip
        assert c.free_slots(f"{READ_DAY}T08:00:00-05:00", f"{READ_DAY}T18:00:00-05:00", provider="hubspot")
        assert c.find_patient(email=patient["email"], provider="hubspot")
        assert c.find_patient(phone=patient["phone"], provider="hubspot")
        window = {"start": f"{READ_DAY}T00:00:00-05:00", "end": f"{READ_DAY}T23:00:00-05:00"}
        for by in ({"email": patient["email"]}, {"phone": patient["phone"]}, {"reference": "contract-read-1"}):
            assert [a.id for a in c.find_appointments(**by, **window, provider="hubspot")] == [booked.id]
        assert c.get_appointment(booked.id, provider="hubspot").id == booked.id
    return seen


@pytest.mark.parametrize(("api_version", "ref"), CONFIGS, ids=lambda c: str(c))
def test_every_scheduling_read_matches_the_contract(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, api_version: str, ref: str | None
) -> None:
    seen = read_scenario(sb, monkeypatch, api_version, ref)
    failures = []
    for method, url, headers, body in seen:
        problems = check_request(method, url, headers, body, api_version=api_version, reference_property=ref)
        if problems:
            failures.append(f"{method} {url}: {problems}")
    assert not failures, "\n".join(failures)
    paths = {urlsplit(url).path for _, url, _, _ in seen}
    for route in ("meetings/search", "contacts/search", "meetings/batch/read"):
        assert any(p.endswith("objects/" + route) or p.endswith(f"{api_version}/{route}") for p in paths), route
    assert any(p.endswith("contacts/meetings/batch/read") for p in paths)  # the patient's meetings
    assert any(p.endswith("meetings/deals/batch/read") for p in paths)  # their deals (the booking ids)
    if ref:
        assert any("deals/contract-read-1" in url and "idProperty=" in url for _, url, _, _ in seen)


def test_wrong_scheduling_reads_fail_the_contract() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    good = {"inputs": [{"id": "61300000001"}]}
    url = BASE + "/crm/v4/associations/contacts/meetings/batch/read"
    assert check_request("POST", url, headers, good) == []
    assert check_request("POST", url, headers, {"inputs": [{"id": "1", "after": "2"}]}) == []
    assert check_request("POST", url, headers, {"inputs": [{"id": "1", "limit": 5}]})
    assert check_request("POST", url, headers, {"inputs": [{"id": "1"}] * 1001})
    assert check_request("POST", BASE + "/crm/v4/associations/contacts/deal/batch/read", headers, good)
    assert check_request("POST", BASE + "/crm/associations/2026-09/contacts/meetings/batch/read", headers, good)
    assert check_request(
        "POST", BASE + "/crm/associations/2026-09/contacts/meetings/batch/read", headers, good, api_version="2026-09"
    ) == []  # fmt: skip
    search = {"properties": ["hs_meeting_start_time"], "sorts": ["hs_meeting_start_time"], "limit": 200, "after": "0"}
    window = [{"propertyName": "hs_meeting_start_time", "operator": "LT", "value": "1899100800000"}]
    meetings = BASE + "/crm/v3/objects/meetings/search"
    assert check_request("POST", meetings, headers, {**search, "filterGroups": [{"filters": window}]}) == []
    iso = [{**window[0], "value": "2030-03-05T00:00:00Z"}]
    assert check_request("POST", meetings, headers, {**search, "filterGroups": [{"filters": iso}]})
    on_title = [{**window[0], "propertyName": "hs_meeting_title"}]
    assert check_request("POST", meetings, headers, {**search, "filterGroups": [{"filters": on_title}]})
    valued = [{"propertyName": "hs_meeting_outcome", "operator": "NOT_HAS_PROPERTY", "value": "x"}]
    assert check_request("POST", meetings, headers, {**search, "filterGroups": [{"filters": valued}]})
    valueless = [{"propertyName": "hs_meeting_outcome", "operator": "NOT_HAS_PROPERTY"}]
    assert check_request("POST", meetings, headers, {**search, "filterGroups": [{"filters": valueless}]}) == []
    read = {"inputs": [{"id": "1"}], "properties": ["hs_meeting_title"], "propertiesWithHistory": []}
    assert check_request("POST", BASE + "/crm/v3/objects/meetings/batch/read", headers, read) == []
    with_email = {**read, "idProperty": "email"}
    assert check_request("POST", BASE + "/crm/v3/objects/meetings/batch/read", headers, with_email)
    assert check_request("GET", BASE + "/crm/v3/objects/deals/bk-1?idProperty=pms_booking_id", headers, None)
    assert (
        check_request(
            "GET", BASE + "/crm/v3/objects/deals/bk-1?idProperty=pms_booking_id", headers, None,
            reference_property="pms_booking_id",
        )
        == []
    )  # fmt: skip
    assert check_request("POST", BASE + "/crm/v3/objects/contacts/search?email=jane%40example.com", headers, {})
