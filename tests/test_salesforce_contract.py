"""Contract tests: every request the Salesforce adapter sends, checked against Salesforce's own
REST request collection (forcedotcom/postman-salesforce-apis, CC0, copied into tests/vendor_specs) for
URL pattern, method and headers, and against allow-lists of the Event and Task standard fields
taken from the field tables in /work/shared/notes/salesforce.md.

The Postman files hold no field schema, so the field allow-lists below are written by hand
from the research note (Event: section 1.2; Task: section 3.1). A field not listed fails.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
import requests
import responses

from pms_integration.models import (
    AppointmentQuery,
    AppointmentRequest,
    AppointmentUpdate,
    PatientQuery,
    PerformanceReport,
    SlotQuery,
    structure,
)
from pms_integration.providers.salesforce import SalesforceAdapter, is_salesforce_id

from ._salesforce_support import (
    CONTACT,
    EVENT_ID,
    NY,
    RECORD_TYPE,
    REFRESH_ENV,
    TASK_ID,
    adapter,
    booking,
    created,
    query_result,
    report,
    sf_error,
    sf_id,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
COLLECTION = Path(__file__).resolve().parent / "vendor_specs" / "salesforce" / "rest"

pytestmark = pytest.mark.skipif(
    not COLLECTION.is_dir(),
    reason=f"Salesforce request collection not found at {COLLECTION} (tests/vendor_specs/salesforce, part of the repository)",
)

# ---------------------------------------------------------------------------------------------
# field allow-lists (from the note's field tables)

DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@attrs.frozen
class Field:
    kind: str  # datetime, date, bool, int, string, textarea, picklist, reference
    createable: bool = True
    updateable: bool = True
    filterable: bool = True
    length: int | None = None
    values: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()


EVENT_FIELDS: dict[str, Field] = {
    "Id": Field("reference", createable=False, updateable=False, prefixes=("00U",)),
    "StartDateTime": Field("datetime"),
    "EndDateTime": Field("datetime"),
    "DurationInMinutes": Field("int"),
    "IsAllDayEvent": Field("bool"),
    "ActivityDateTime": Field("datetime"),
    "ActivityDate": Field("date"),
    "EndDate": Field("date", createable=False, updateable=False),
    "Subject": Field("string", length=255),
    "Description": Field("textarea", filterable=False, length=32_000),
    "Location": Field("string", length=255),
    "OwnerId": Field("reference", prefixes=("005", "023")),
    "WhoId": Field("reference", prefixes=("003", "00Q")),
    "WhatId": Field("reference"),
    "ShowAs": Field("picklist", values=frozenset({"Busy", "OutOfOffice", "Free"})),
    "Type": Field("picklist"),
    "IsPrivate": Field("bool"),
    "IsReminderSet": Field("bool"),
    "ReminderDateTime": Field("datetime"),
    "RecordTypeId": Field("reference", prefixes=("012",)),
    "ClientGuid": Field("string", createable=False, updateable=False),
    "IsDeleted": Field("bool", createable=False, updateable=False),
}
TASK_FIELDS: dict[str, Field] = {
    "Id": Field("reference", createable=False, updateable=False, prefixes=("00T",)),
    "Subject": Field("string", length=255),
    "ActivityDate": Field("date"),
    "Status": Field(
        "picklist", values=frozenset({"Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"})
    ),
    "Priority": Field("picklist", values=frozenset({"High", "Normal", "Low"})),
    "OwnerId": Field("reference", prefixes=("005",)),
    "Description": Field("textarea", filterable=False, length=32_000),
}
# Contact and Lead: the standard person fields (Salesforce Object Reference, "Contact" and "Lead":
# https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_contact.htm
# .../sforce_api_objects_lead.htm); a Lead needs Company, and IsConverted tells converted ones
CONTACT_FIELDS: dict[str, Field] = {
    "Id": Field("reference", createable=False, updateable=False, prefixes=("003",)),
    "Name": Field("string", createable=False, updateable=False),
    "FirstName": Field("string", length=40),
    "LastName": Field("string", length=80),
    "Email": Field("string", length=80),
    "Phone": Field("string", length=40),
    "CreatedDate": Field("datetime", createable=False, updateable=False),
}
LEAD_FIELDS: dict[str, Field] = {
    **CONTACT_FIELDS,
    "Id": Field("reference", createable=False, updateable=False, prefixes=("00Q",)),
    "Company": Field("string", length=255),
    "IsConverted": Field("bool", createable=False, updateable=False),
}
# BusinessHours (Object Reference, "BusinessHours": .../sforce_api_objects_businesshours.htm):
# read-only through the API here; one start and end time per weekday
_WEEK = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
BUSINESS_HOURS_FIELDS: dict[str, Field] = {
    "Id": Field("reference", createable=False, updateable=False, prefixes=("01m",)),
    "Name": Field("string", createable=False, updateable=False),
    "IsActive": Field("bool", createable=False, updateable=False),
    "IsDefault": Field("bool", createable=False, updateable=False),
    "TimeZoneSidKey": Field("picklist", createable=False, updateable=False),
    **{f"{d}{e}Time": Field("time", createable=False, updateable=False) for d in _WEEK for e in ("Start", "End")},
}
SOBJECTS = {
    "Event": EVENT_FIELDS,
    "Task": TASK_FIELDS,
    "Contact": CONTACT_FIELDS,
    "Lead": LEAD_FIELDS,
    "BusinessHours": BUSINESS_HOURS_FIELDS,
}
KEY_PREFIX = {"Event": "00U", "Task": "00T", "Contact": "003", "Lead": "00Q", "BusinessHours": "01m"}

# ---------------------------------------------------------------------------------------------
# request shapes from the Postman collection


@attrs.frozen
class Shape:
    name: str
    method: str
    path: re.Pattern[str]
    query_keys: frozenset[str]
    headers: dict[str, str]
    body: bool


def _shape(file: str) -> Shape:
    return _shape_at(COLLECTION / f"{file}.json", file)


def _shape_at(path: Path, file: str) -> Shape:
    data = json.loads(path.read_text())
    url: str = data["url"]
    path, _, query = url.partition("?")
    pattern = re.escape(path.replace("{{_endpoint}}", ""))
    pattern = pattern.replace(re.escape("{{version}}"), r"(?P<version>\d{2,3}\.\d)")
    pattern = pattern.replace(re.escape("<SOBJECT_API_NAME>"), r"(?P<sobject>[A-Za-z][A-Za-z0-9_]*)")
    pattern = pattern.replace(re.escape("<RECORD_ID>"), r"(?P<record>[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?)")
    if not pattern.endswith("/"):
        pattern += "/?"  # Salesforce serves the same resource with and without the slash
    keys = frozenset(q["key"] for q in data.get("queryParams") or [] if q.get("enabled", True))
    if query and not keys:
        keys = frozenset(k for k in parse_qs(query))
    headers = {h["key"]: h["value"] for h in data.get("headerData") or []}
    return Shape(file, data["method"], re.compile(pattern), keys, headers, data.get("dataMode") == "raw")


SHAPE_FILES = ("sobject_create", "sobject_rows_update", "sobject_rows_delete", "sobject_rows", "query", "versions")


@pytest.fixture(scope="module")
def shapes() -> list[Shape]:
    loaded = [_shape(f) for f in SHAPE_FILES]
    # The collection has no template for queryAll, which Salesforce documents as the query
    # resource under another name (same method, headers and ``q`` parameter, deleted records
    # included): derived from the query template, so its SOQL is checked the same way.
    query = next(s for s in loaded if s.name == "query")
    all_rows = re.compile(query.path.pattern.replace("/query/", "/queryAll/"))
    # Nor for the next page of a result: its nextRecordsUrl, the query resource plus a locator
    # (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm)
    more = re.compile(query.path.pattern.replace("/query/", r"/query(?:All)?/01g[0-9A-Za-z]{15}-\d{1,7}"))
    composite = _shape_at(COLLECTION.parent / "composite" / "composite.json", "composite")
    return [
        *loaded,
        attrs.evolve(query, name="queryAll", path=all_rows),
        attrs.evolve(query, name="query_more", path=more, query_keys=frozenset()),
        composite,
    ]


# ---------------------------------------------------------------------------------------------
# the checker


@attrs.frozen
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


SOQL = re.compile(
    r"^SELECT (?P<fields>[A-Za-z][A-Za-z0-9_]*(?:, [A-Za-z][A-Za-z0-9_]*)*) FROM (?P<sobject>[A-Za-z]+)"
    r"(?: WHERE (?P<where>.+?))?(?: ORDER BY (?P<order>[A-Za-z][A-Za-z0-9_]*)(?: ASC| DESC)?)?(?: LIMIT (?P<limit>\d+))?$"
)
SOQL_LITERAL = re.compile(r"'(?:[^'\\]|\\[\\'\"nrtbf%_])*'")
_SOQL_VALUE = r"(?:'(?:[^'\\]|\\[\\'\"nrtbf%_])*'|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z|\d+|true|false|null)"
SOQL_CONDITION = re.compile(
    rf"^(?P<field>[A-Za-z][A-Za-z0-9_]*) (?:(?P<op>=|!=|<|>|<=|>=|LIKE) (?P<value>{_SOQL_VALUE})"
    rf"|IN \((?P<list>{_SOQL_VALUE}(?:, {_SOQL_VALUE})*)\))$"
)


def _check_value(sobject: str, name: str, field: Field, value: Any) -> list[str]:
    where = f"{sobject}.{name}"
    if value is None:
        return []
    if field.kind == "datetime" and not (isinstance(value, str) and DATETIME.fullmatch(value)):
        return [f"{where} must be an ISO-8601 dateTime with Z or an offset, got {value!r}"]
    if field.kind == "date" and not (isinstance(value, str) and DATE.fullmatch(value)):
        return [f"{where} must be a yyyy-MM-dd date, got {value!r}"]
    if field.kind == "bool" and not isinstance(value, bool):
        return [f"{where} must be a boolean"]
    if field.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{where} must be an integer"]
    if field.kind in ("string", "textarea", "picklist", "reference") and not isinstance(value, str):
        return [f"{where} must be a string"]
    if field.length is not None and len(value) > field.length:
        return [f"{where} is longer than {field.length}"]
    if field.values and value not in field.values:
        return [f"{where} value {value!r} is not one of {sorted(field.values)}"]
    if field.kind == "reference":
        if not is_salesforce_id(value):
            return [f"{where} is not a valid Salesforce id: {value!r}"]
        if field.prefixes and not value.startswith(field.prefixes):
            return [f"{where} must start with {field.prefixes}"]
    return []


def _check_body(sobject: str, body: Any, *, creating: bool) -> list[str]:
    fields = SOBJECTS[sobject]
    if not isinstance(body, dict) or not body:
        return [f"{sobject} body must be a non-empty JSON object"]
    problems = []
    for name, value in body.items():
        field = fields.get(name)
        if field is None:
            problems.append(f"unknown {sobject} field {name!r}")
            continue
        if creating and not field.createable:
            problems.append(f"{sobject}.{name} cannot be set on create")
        if not creating and not field.updateable:
            problems.append(f"{sobject}.{name} cannot be updated")
        problems += _check_value(sobject, name, field, value)
    if creating and sobject == "Event":
        if "StartDateTime" not in body:
            problems.append("Event create needs StartDateTime")
        if body.get("IsAllDayEvent") is not True and not ({"EndDateTime", "DurationInMinutes"} & set(body)):
            problems.append("a timed Event needs EndDateTime or DurationInMinutes")
    return problems


def _check_soql(soql: str) -> list[str]:
    m = SOQL.fullmatch(soql)
    if m is None:
        return [f"SOQL not understood: {soql!r}"]
    sobject = m.group("sobject")
    fields = SOBJECTS.get(sobject)
    if fields is None:
        return [f"query on an unexpected object {sobject!r}"]
    problems = [f"unknown {sobject} field {f!r} in SELECT" for f in m.group("fields").split(", ") if f not in fields]
    if m.group("order") and m.group("order") not in fields:
        problems.append(f"unknown {sobject} field {m.group('order')!r} in ORDER BY")
    where = m.group("where") or ""
    # Split on AND outside string literals.
    masked = SOQL_LITERAL.sub(lambda lit: "\x00" * len(lit.group(0)), where)
    if "'" in masked:
        problems.append(f"unbalanced or badly escaped string literal in {where!r}")
        return problems
    start = 0
    for part in re.finditer(r" AND ", masked):
        problems += _check_group(sobject, fields, where[start : part.start()], masked[start : part.start()])
        start = part.end()
    if where:
        problems += _check_group(sobject, fields, where[start:], masked[start:])
    return problems


def _check_group(sobject: str, fields: dict[str, Field], text: str, masked: str) -> list[str]:
    """A condition, or a parenthesised OR of conditions (SOQL needs the brackets to mix them)."""
    if not (masked.startswith("(") and masked.endswith(")") and " OR " in masked):
        return _check_condition(sobject, fields, text)
    problems: list[str] = []
    start = 1
    for part in re.finditer(r" OR ", masked):
        problems += _check_condition(sobject, fields, text[start : part.start()])
        start = part.end()
    return problems + _check_condition(sobject, fields, text[start:-1])


def _check_condition(sobject: str, fields: dict[str, Field], text: str) -> list[str]:
    c = SOQL_CONDITION.fullmatch(text)
    if c is None:
        return [f"SOQL condition not understood: {text!r}"]
    field = fields.get(c.group("field"))
    if field is None:
        return [f"unknown {sobject} field {c.group('field')!r} in WHERE"]
    if not field.filterable:
        return [f"{sobject}.{c.group('field')} is not filterable"]
    return []


def check(sent: Sent, shapes: list[Shape]) -> list[str]:
    """Every way ``sent`` departs from the collection's request shapes and the field lists."""
    parts = urlsplit(sent.url)
    matches = [s for s in shapes if s.method == sent.method and s.path.fullmatch(parts.path)]
    if len(matches) != 1:
        return [f"{sent.method} {parts.path} matches {len(matches)} request shapes of the collection"]
    shape = matches[0]
    m = shape.path.fullmatch(parts.path)
    assert m is not None
    problems: list[str] = []
    for key, value in shape.headers.items():
        if sent.headers.get(key, "").split(";")[0].strip() != value:
            problems.append(f"header {key}: {value} missing (collection {shape.name})")
    if not sent.headers.get("Authorization", "").startswith("Bearer "):
        problems.append("no bearer Authorization header")
    params = parse_qs(parts.query)
    if shape.query_keys and set(params) != set(shape.query_keys):
        problems.append(f"query parameters {sorted(params)} != {sorted(shape.query_keys)}")
    groups = m.groupdict()
    sobject = groups.get("sobject")
    if sobject is not None and sobject not in SOBJECTS:
        problems.append(f"unexpected sObject {sobject!r}")
        return problems
    record = groups.get("record")
    if record is not None:
        if not is_salesforce_id(record):
            problems.append(f"record id {record!r} is malformed or fails its checksum")
        elif sobject and not record.startswith(KEY_PREFIX[sobject]):
            problems.append(f"record id {record!r} is not a {sobject} id")
    body = json.loads(sent.body) if sent.body else None
    if shape.name == "composite":
        return problems + _check_composite(sent, body, shapes)
    if shape.name == "sobject_create":
        problems += _check_body(str(sobject), body, creating=True)
    elif shape.name == "sobject_rows_update":
        problems += _check_body(str(sobject), body, creating=False)
    elif body is not None:
        problems.append(f"{shape.name} must not carry a body")
    if shape.name == "sobject_rows" and "fields" in params:
        fields = SOBJECTS[str(sobject)]
        problems += [
            f"unknown {sobject} field {f!r} in ?fields" for f in params["fields"][0].split(",") if f not in fields
        ]
    elif shape.name == "sobject_rows" and set(params) - {"fields"}:
        problems.append(f"unexpected parameters {sorted(params)}")
    if shape.name in ("query", "queryAll"):
        problems += _check_soql(params["q"][0])
    return problems


COMPOSITE_MAX, COMPOSITE_QUERIES_MAX = 25, 5  # the note's section 2.5 (Salesforce's limits)
REFERENCE = re.compile(r"^@\{([A-Za-z0-9_]+)\.id\}$")


def _check_composite(sent: Sent, body: Any, shapes: list[Shape]) -> list[str]:
    """The Composite API body (``allOrNone``, ``compositeRequest``), and each subrequest as if it
    were sent on its own: its URL, method and body against the collection's shapes."""
    if not isinstance(body, dict) or set(body) - {"allOrNone", "collateSubrequests", "compositeRequest"}:
        return [f"composite body keys {sorted(body) if isinstance(body, dict) else body!r}"]
    problems = [] if isinstance(body.get("allOrNone", False), bool) else ["allOrNone must be a boolean"]
    subs = body.get("compositeRequest")
    if not isinstance(subs, list) or not 0 < len(subs) <= COMPOSITE_MAX:
        return [*problems, f"compositeRequest must hold 1 to {COMPOSITE_MAX} subrequests"]
    if sum("/query" in str(s.get("url")) for s in subs if isinstance(s, dict)) > COMPOSITE_QUERIES_MAX:
        problems.append(f"more than {COMPOSITE_QUERIES_MAX} query subrequests")
    made: dict[str, str] = {}  # referenceId -> sObject it creates
    base = sent.url[: sent.url.index("/services/")]
    for sub in subs:
        if not isinstance(sub, dict) or set(sub) - {"method", "url", "referenceId", "body", "httpHeaders"}:
            problems.append(f"subrequest keys {sorted(sub) if isinstance(sub, dict) else sub!r}")
            continue
        ref, url = str(sub.get("referenceId") or ""), str(sub.get("url") or "")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,79}", ref) or ref in made:
            problems.append(f"referenceId {ref!r} is missing, malformed or used twice")
        inner = sub.get("body")
        if isinstance(inner, dict):
            for key, value in list(inner.items()):
                m = REFERENCE.fullmatch(value) if isinstance(value, str) else None
                if m is not None:
                    if m.group(1) not in made:
                        problems.append(f"{key} refers to {m.group(1)!r}, no earlier create")
                        continue
                    inner = {**inner, key: sf_id(KEY_PREFIX[made[m.group(1)]], 999)}  # the id it will have
        one = Sent(
            str(sub.get("method")), base + url, sent.headers, None if inner is None else json.dumps(inner).encode()
        )
        found = [s for s in shapes if s.name != "composite"]
        problems += [f"subrequest {ref}: {p}" for p in check(one, found)]
        target = re.search(r"/sobjects/([A-Za-z]+)/?$", url)
        if sub.get("method") == "POST" and target:
            made[ref] = target.group(1)
    return problems


def check_token_request(sent: Sent) -> list[str]:
    """The OAuth refresh request (not in the collection): a form POST with exactly four keys."""
    problems = []
    if sent.method != "POST" or urlsplit(sent.url).path != "/services/oauth2/token":
        problems.append("token refresh must be POST /services/oauth2/token")
    if not sent.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        problems.append("token refresh must be form-encoded")
    form = parse_qs((sent.body or b"").decode())
    if set(form) != {"grant_type", "client_id", "client_secret", "refresh_token"}:
        problems.append(f"token refresh form keys {sorted(form)}")
    if form.get("grant_type") != ["refresh_token"]:
        problems.append("grant_type must be refresh_token")
    if "Authorization" in sent.headers:
        problems.append("token refresh must not carry the expired bearer token")
    return problems


# ---------------------------------------------------------------------------------------------
# recording what the adapter sends


class Recorder:
    """A ``responses`` mock that answers like Salesforce and records every request."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.sent: list[Sent] = []
        self.mock = mock
        self.find: list[dict[str, Any]] = []
        self.expired = 0
        self.deleted = False  # the Event is in the recycle bin
        self.patients: list[dict[str, Any]] = []  # Contacts (and Leads) a look-up finds
        self.paged = False  # an Event query answers in two pages
        any_url = re.compile(r"https://example\.my\.salesforce\.com/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            mock.add_callback(method, any_url, callback=self._answer)

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        self.sent.append(Sent(str(request.method), str(request.url), dict(request.headers), body))
        path = urlsplit(str(request.url)).path
        if path.endswith("/oauth2/token"):
            return 200, {}, json.dumps({"access_token": "00Dfresh!token-after-refresh"})
        if self.expired and request.method != "GET":
            self.expired -= 1
            return 401, {}, json.dumps(sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
        if self.deleted and request.method == "GET" and "/sobjects/Event/" in path:
            return 404, {}, json.dumps(sf_error("ENTITY_IS_DELETED", "entity is deleted", []))
        if path.endswith("/composite/"):
            subs = json.loads(body or b"{}")["compositeRequest"]
            answers = [self._sub(sub) for sub in subs]
            return 200, {}, json.dumps({"compositeResponse": answers})
        if "/query/01g" in path:
            return 200, {}, json.dumps(query_result(self.find[1:], "Event"))
        if path.endswith(("/query/", "/queryAll/")):
            return 200, {}, json.dumps(self._rows(parse_qs(urlsplit(str(request.url)).query)["q"][0]))
        if path == "/services/data/":
            return 200, {}, json.dumps([{"label": "Summer '26", "url": "/services/data/v67.0", "version": "67.0"}])
        if request.method == "POST":
            new_id = TASK_ID if "/Task/" in path else EVENT_ID
            return 201, {}, json.dumps(created(new_id))
        if request.method == "GET":
            record = {
                "Id": EVENT_ID,
                "Subject": "Cleaning - Jane Doe [bk-0123456789abcdef0123]",
                "Description": "notes\n\n--- booking details (pms-integration) ---\nPatient: Jane Doe",
                "StartDateTime": "2037-03-09T13:00:00.000+0000",
                "EndDateTime": "2037-03-09T13:45:00.000+0000",
                "WhoId": None,
                "ShowAs": "Busy",
            }
            return 200, {}, json.dumps(record)
        return 204, {}, ""

    def _rows(self, soql: str) -> dict[str, Any]:
        if "FROM BusinessHours" in soql:
            hours = {f"{d}{e}Time": None for d in _WEEK for e in ("Start", "End")}
            hours.update(MondayStartTime="08:00:00.000Z", MondayEndTime="17:00:00.000Z")
            return query_result(
                [{"Id": sf_id("01m", 1), "Name": "Default", "TimeZoneSidKey": "America/New_York", **hours}],
                "BusinessHours",
            )
        if "FROM Contact" in soql or "FROM Lead" in soql:
            kind = "Lead" if "FROM Lead" in soql else "Contact"
            return query_result([p for p in self.patients if p["Id"].startswith(KEY_PREFIX[kind])], kind)
        result = query_result(self.find[:1] if self.paged else self.find, "Task" if "FROM Task" in soql else "Event")
        if self.paged:
            result.update(done=False, nextRecordsUrl="/services/data/v67.0/query/01gHs0000000Locat0-1")
        return result

    def _sub(self, sub: dict[str, Any]) -> dict[str, Any]:
        url = sub["url"]
        if "/query/" in url:
            answer = (200, self._rows(parse_qs(urlsplit(url).query)["q"][0]))
        else:
            kind = url.rstrip("/").rsplit("/", 1)[-1]
            answer = (201, created(sf_id(KEY_PREFIX[kind], 300)))
        return {"body": answer[1], "httpHeaders": {}, "httpStatusCode": answer[0], "referenceId": sub["referenceId"]}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Recorder(mock)


def _req(**overrides: Any) -> AppointmentRequest:
    return structure(booking(**overrides), AppointmentRequest)


def _rep() -> PerformanceReport:
    return structure(report(report_id="weekly_2026-10"), PerformanceReport)


SCENARIOS: dict[str, Callable[[SalesforceAdapter, Recorder], Any]] = {
    "book": lambda a, r: a.book(
        _req(patient={"name": "Jane Doe", "email": "j@example.com", "contact_id": CONTACT}, location="Chair 2")
    ),
    "book with extra": lambda a, r: a.book(_req(extra={"Type": "Meeting", "IsReminderSet": True})),
    "reconcile": lambda a, r: a.find_booking(_req(reference="bk-a_b.c:d")),
    "reschedule": lambda a, r: a.update(
        EVENT_ID, AppointmentUpdate(start=dt.datetime(2037, 11, 2, 9, tzinfo=NY), duration_minutes=30)
    ),
    "extend": lambda a, r: a.update(EVENT_ID, AppointmentUpdate(end=dt.datetime(2037, 3, 9, 10, tzinfo=NY))),
    "retitle": lambda a, r: a.update(
        EVENT_ID, AppointmentUpdate(title="Check-up", notes="Bring X-rays", location="Chair 1")
    ),
    "cancel": lambda a, r: a.cancel(EVENT_ID, reason="called"),
    "cancel again": lambda a, r: (setattr(r, "deleted", True), a.cancel(EVENT_ID)),
    "report": lambda a, r: a.push_report(_rep()),
    "versions": lambda a, r: a.available_versions(),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_request_matches_the_collection(recorder: Recorder, shapes: list[Shape], scenario: str) -> None:
    SCENARIOS[scenario](adapter(PMS_SALESFORCE_EVENT_RECORD_TYPE=RECORD_TYPE), recorder)
    assert recorder.sent
    for sent in recorder.sent:
        assert check(sent, shapes) == [], (sent.method, sent.url)


def test_soft_cancel_and_report_repush_match(recorder: Recorder, shapes: list[Shape]) -> None:
    adapter(PMS_SALESFORCE_CANCEL_MODE="soft").cancel(EVENT_ID, reason="better")
    recorder.find = [{"Id": TASK_ID, "Subject": "x [weekly_2026-10]"}]
    adapter().push_report(_rep())
    assert [s.method for s in recorder.sent] == ["GET", "PATCH", "GET", "PATCH"]
    for sent in recorder.sent:
        assert check(sent, shapes) == [], (sent.method, sent.url)


def test_token_refresh_request(recorder: Recorder, shapes: list[Shape]) -> None:
    recorder.expired = 1
    adapter(**REFRESH_ENV).cancel(EVENT_ID)
    read, api, token, replay = recorder.sent
    assert check(read, shapes) == [] and check(api, shapes) == [] and check(replay, shapes) == []
    assert check_token_request(token) == []


# ---------------------------------------------------------------------------------------------
# the scheduling reads, patient linking and the conflict check

LINKING = {"PMS_SALESFORCE_PATIENT_RECORD": "contact", "PMS_SALESFORCE_CONFLICT_CHECK": "on"}
PATIENT_ROW = {"Id": CONTACT, "Name": "Jane Doe", "Email": "jane@example.com", "Phone": "+15555550123"}
BOOKED_ROW = {
    "Id": EVENT_ID,
    "Subject": "Cleaning - Jane Doe [bk-0123456789abcdef0123]",
    "StartDateTime": "2037-03-09T13:00:00.000+0000",
    "EndDateTime": "2037-03-09T13:45:00.000+0000",
    "WhoId": CONTACT,
    "ShowAs": "Busy",
}
WINDOW = {"start": "2037-03-09T08:00:00-04:00", "end": "2037-03-09T17:00:00-04:00"}


def _reads(**env: str) -> SalesforceAdapter:
    return adapter(**{**LINKING, **env})


READ_SCENARIOS: dict[str, Callable[[Recorder], Any]] = {
    "book, new patient": lambda r: _reads().book(_req()),
    "book, new patient as a lead": lambda r: _reads(PMS_SALESFORCE_PATIENT_RECORD="lead").book(_req()),
    "book, returning patient": lambda r: (r.patients.append(PATIENT_ROW), _reads().book(_req())),
    "book, phone only": lambda r: _reads().book(_req(patient={"name": "Jane Doe", "phone": "+15555550123"})),
    "book with contact_id": lambda r: _reads().book(
        _req(patient={"name": "J", "email": "j@x.io", "contact_id": CONTACT})
    ),
    "free slots": lambda r: _reads().free_slots(structure(WINDOW, SlotQuery)),
    "free slots, named hours, paged": lambda r: (
        setattr(r, "paged", True),
        r.find.extend([BOOKED_ROW, {**BOOKED_ROW, "Id": sf_id("00U", 101)}]),
        _reads(PMS_SALESFORCE_BUSINESS_HOURS="Main surgery").free_slots(structure(WINDOW, SlotQuery)),
    ),
    "find patient": lambda r: _reads(PMS_SALESFORCE_PATIENT_RECORD="lead").find_patients(
        PatientQuery(email="jane@example.com", phone="+15555550123")
    ),
    "find appointments by e-mail": lambda r: (
        r.patients.append(PATIENT_ROW),
        r.find.append(BOOKED_ROW),
        _reads().find_appointments(
            AppointmentQuery(email="jane@example.com", start=dt.datetime(2037, 3, 9, tzinfo=NY))
        ),
    ),
    "find appointments with cancelled": lambda r: (
        r.patients.append(PATIENT_ROW),
        _reads().find_appointments(AppointmentQuery(phone="+15555550123", include_cancelled=True)),
    ),
    "find appointments by reference": lambda r: _reads().find_appointments(AppointmentQuery(reference="bk-a_b.c:d")),
    "get appointment": lambda r: _reads().get_appointment(EVENT_ID),
}


@pytest.mark.parametrize("scenario", list(READ_SCENARIOS))
def test_every_read_and_linking_request_matches_the_collection(
    recorder: Recorder, shapes: list[Shape], scenario: str
) -> None:
    READ_SCENARIOS[scenario](recorder)
    assert recorder.sent
    for sent in recorder.sent:
        assert check(sent, shapes) == [], (sent.method, sent.url, sent.body)
        seen = sent.url.lower()
        assert "example.com" not in seen and "5550123" not in seen and "x.io" not in seen, sent.url


def test_a_new_patient_is_created_with_the_event_in_one_all_or_nothing_call(recorder: Recorder) -> None:
    booked = _reads().book(_req())
    check_call, create_call = recorder.sent
    checks = json.loads(check_call.body or b"")
    assert checks["allOrNone"] is False
    assert [s["referenceId"] for s in checks["compositeRequest"]] == ["busy", "contacts"]
    assert all(s["method"] == "GET" for s in checks["compositeRequest"])
    made = json.loads(create_call.body or b"")
    assert made["allOrNone"] is True
    contact, event = made["compositeRequest"]
    assert contact["body"] == {
        "LastName": "Doe",
        "FirstName": "Jane",
        "Email": "jane@example.com",
        "Phone": "+15555550123",
    }
    assert event["body"]["WhoId"] == "@{patient.id}"
    assert booked.contact_id == sf_id("003", 300)


def test_the_composite_checker_catches_wrong_bodies(shapes: list[Shape]) -> None:
    sub = {"method": "POST", "url": "/services/data/v67.0/sobjects/Event/", "referenceId": "e"}
    cases = {
        "unknown key": ({"compositeRequests": []}, "composite body keys"),
        "no subrequests": ({"compositeRequest": []}, "1 to 25 subrequests"),
        "dangling reference": (
            {"compositeRequest": [{**sub, "body": {**GOOD_EVENT, "WhoId": "@{nobody.id}"}}]},
            "no earlier create",
        ),
        "bad subrequest body": (
            {"compositeRequest": [{**sub, "body": {**GOOD_EVENT, "Foo": 1}}]},
            "unknown Event field",
        ),
        "too many queries": (
            {
                "compositeRequest": [
                    {
                        "method": "GET",
                        "url": "/services/data/v67.0/query/?q=SELECT+Id+FROM+Event",
                        "referenceId": f"q{i}",
                    }
                    for i in range(6)
                ]
            },
            "more than 5 query",
        ),
        "wrong lead field": (
            {
                "compositeRequest": [
                    {**sub, "url": "/services/data/v67.0/sobjects/Lead/", "body": {"LastName": "x", "Status__x": "y"}}
                ]
            },
            "unknown Lead field",
        ),
    }
    for name, (body, why) in cases.items():
        problems = check(_sent("POST", "/composite/", body), shapes)
        assert any(why in p for p in problems), (name, problems)


def test_the_composite_template_copy_is_unmodified() -> None:
    import hashlib

    data = (COLLECTION.parent / "composite" / "composite.json").read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    assert f"| `composite.json` | `{blob}` |" in (COLLECTION.parents[1] / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# the checker itself must be able to fail


GOOD_EVENT = {"Subject": "x [bk-1]", "StartDateTime": "2037-03-09T13:00:00Z", "EndDateTime": "2037-03-09T13:30:00Z"}
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer t"}
API = "https://example.my.salesforce.com/services/data/v67.0"


def _sent(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Sent:
    raw = None if body is None else json.dumps(body).encode()
    return Sent(method, API + path, dict(HEADERS if headers is None else headers), raw)


WRONG = {
    "unknown field": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "StartTime": "2037-03-09T13:00:00Z"}),
    "read-only field": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "EndDate": "2037-03-09"}),
    "no end": _sent("POST", "/sobjects/Event/", {"Subject": "x", "StartDateTime": "2037-03-09T13:00:00Z"}),
    "naive time": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "StartDateTime": "2037-03-09T13:00:00"}),
    "subject too long": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "Subject": "x" * 256}),
    "bad picklist": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "ShowAs": "Maybe"}),
    "bad who id": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "WhoId": EVENT_ID}),
    "task field on event": _sent("POST", "/sobjects/Event/", {**GOOD_EVENT, "Status": "Completed"}),
    "wrong sobject": _sent("POST", "/sobjects/Appointment/", GOOD_EVENT),
    "put instead of patch": _sent("PUT", f"/sobjects/Event/{EVENT_ID}", {"Location": "x"}),
    "bad checksum": _sent("PATCH", f"/sobjects/Event/{EVENT_ID[:15]}AAB", {"Location": "x"}),
    "task id on event": _sent("DELETE", f"/sobjects/Event/{TASK_ID}"),
    "delete with body": _sent("DELETE", f"/sobjects/Event/{EVENT_ID}", {"x": 1}),
    "no content type": _sent("PATCH", f"/sobjects/Event/{EVENT_ID}", {"Location": "x"}, {"Authorization": "Bearer t"}),
    "no auth": _sent("DELETE", f"/sobjects/Event/{EVENT_ID}", headers={"Content-Type": "application/json"}),
    "unfilterable": _sent("GET", "/query/?q=SELECT+Id+FROM+Event+WHERE+Description+LIKE+%27%25x%25%27"),
    "unescaped quote": _sent("GET", "/query/?q=SELECT+Id+FROM+Event+WHERE+Subject+LIKE+%27%25it%27s%25%27"),
    "unknown select": _sent("GET", "/query/?q=SELECT+Id,+Foo__x+FROM+Task"),
    "unversioned": Sent("POST", "https://example.my.salesforce.com/services/data/sobjects/Event/", HEADERS, b"{}"),
}


WHY = {
    "unknown field": "unknown Event field 'StartTime'",
    "read-only field": "EndDate cannot be set",
    "no end": "needs EndDateTime",
    "naive time": "StartDateTime must be an ISO-8601",
    "subject too long": "longer than 255",
    "bad picklist": "ShowAs value 'Maybe'",
    "bad who id": "WhoId must start with",
    "task field on event": "unknown Event field 'Status'",
    "wrong sobject": "unexpected sObject",
    "put instead of patch": "matches 0 request shapes",
    "bad checksum": "fails its checksum",
    "task id on event": "is not a Event id",
    "delete with body": "must not carry a body",
    "no content type": "header Content-Type",
    "no auth": "no bearer",
    "unfilterable": "Description is not filterable",
    "unescaped quote": "badly escaped string literal",
    "unknown select": "unknown Task field 'Foo__x'",
    "unversioned": "matches 0 request shapes",
}


@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_request_fails_the_contract(shapes: list[Shape], name: str) -> None:
    problems = check(WRONG[name], shapes)
    assert any(WHY[name] in p for p in problems), problems


def test_a_deliberately_wrong_adapter_request_fails(
    recorder: Recorder, shapes: list[Shape], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SalesforceAdapter.event_payload

    def wrong(self: SalesforceAdapter, request: AppointmentRequest) -> dict[str, Any]:
        payload = real(self, request)
        payload["StartTime"] = payload.pop("StartDateTime")  # a plausible but non-existent name
        return payload

    monkeypatch.setattr(SalesforceAdapter, "event_payload", wrong)
    adapter().book(_req())
    problems = check(recorder.sent[0], shapes)
    assert "unknown Event field 'StartTime'" in problems
    assert "Event create needs StartDateTime" in problems


def test_the_collection_shapes_are_what_the_checker_expects(shapes: list[Shape]) -> None:
    by_name = {s.name: s for s in shapes}
    assert by_name["sobject_create"].method == "POST"
    assert by_name["sobject_rows_update"].method == "PATCH"
    assert by_name["sobject_rows_delete"].method == "DELETE"
    assert by_name["query"].query_keys == {"q"}
    assert by_name["sobject_create"].headers == {"Content-Type": "application/json"}
    assert by_name["sobject_rows_update"].path.fullmatch(f"/services/data/v67.0/sobjects/Event/{EVENT_ID}")


@pytest.mark.skipif(
    not (SHARED / "notes/salesforce.md").is_file(),
    reason="the team's vendor note (../shared/notes) is not beside the clone",
)
def test_classified_error_codes_are_documented_codes() -> None:
    # the error codes the adapter classifies appear in the note's tables (guards against typos)
    note = (SHARED / "notes/salesforce.md").read_text()
    from pms_integration.providers import salesforce

    for code in (*salesforce._CODE_CLASSES, *salesforce._RETRYABLE_CODES - {"SERVER_UNAVAILABLE"}):
        if code.startswith("INSUFFICIENT_ACCESS_ON"):
            continue
        assert code in note, code


def test_cancelling_a_deleted_event_reads_the_recycle_bin_within_the_contract(
    recorder: Recorder, shapes: list[Shape]
) -> None:
    recorder.deleted = True
    adapter().cancel(EVENT_ID)
    assert [urlsplit(s.url).path.rsplit("/", 2)[-2] for s in recorder.sent] == ["Event", "queryAll"]
    for sent in recorder.sent:
        assert check(sent, shapes) == [], (sent.method, sent.url)
    wrong = Sent("GET", API + "/queryAll/?q=SELECT+Id+FROM+Event+WHERE+Description+LIKE+%27%25x%25%27", HEADERS, None)
    assert any("not filterable" in p for p in check(wrong, shapes))
