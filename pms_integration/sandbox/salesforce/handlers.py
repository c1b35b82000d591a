"""Thin handlers: read the request, check it, call the org, answer in Salesforce's format.

A handler takes the emulator, the request and the route's path parameters; it raises
:class:`OrgError` for the org's refusals, which the emulator renders as Salesforce's error list.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from .._core import SandboxRequest, SandboxResponse, json_response
from .soql import QUERY_BATCH, parse_soql
from .state import OAuthError
from .validation import (
    PEOPLE,
    SOBJECTS,
    OrgError,
    coerce,
    coerce_person,
    errors,
    invalid,
    parse_datetime,
    sobject,
    wire,
)

if TYPE_CHECKING:
    from .emulator import SalesforceEmulator

VERSIONS = [f"{v}.0" for v in range(31, 68)]
_SEASONS = ("Winter", "Spring", "Summer")


def versions(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """The versions list (31.0 was Summer '14; three releases a year)."""
    body = []
    for version in VERSIONS:
        n = int(float(version)) - 31
        label = f"{_SEASONS[(n + 2) % 3]} '{14 + (n + 2) // 3:02d}"
        body.append({"label": label, "url": f"/services/data/v{version}", "version": version})
    return json_response(200, body)


def create(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    name = params["sobject"]
    if name in PEOPLE:
        record_id = sf.store.create_person(name, coerce_person(name, _json_body(req)))
        return json_response(201, {"id": record_id, "success": True, "errors": []})
    sobject(name)
    values = coerce(name, _json_body(req), creating=True, exists=sf.store.exists)
    record_id = sf.store.create(name, values, params["version"])
    return json_response(201, {"id": record_id, "success": True, "errors": []})


def read(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    name = params["sobject"]
    record = sf.store.find(name, params["record_id"])
    fields = SOBJECTS[name][1]
    wanted = req.arg("fields")
    names = list(fields) if not wanted else [f.strip() for f in wanted.split(",") if f.strip()]
    for field in names:
        if field not in fields:
            raise invalid("INVALID_FIELD", f"No such column '{field}' on entity '{name}'")
    body: dict[str, Any] = {"attributes": dict(record["attributes"])}
    body.update({field: wire(record.get(field)) for field in names})
    body.setdefault("Id", record["Id"])
    return json_response(200, body)


def update(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    name = params["sobject"]
    record = sf.store.find(name, params["record_id"])
    sf.store.update(record, coerce(name, _json_body(req), creating=False, exists=sf.store.exists))
    return SandboxResponse(204)


def delete(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    sf.store.delete(sf.store.find(params["sobject"], params["record_id"]))
    return SandboxResponse(204)


def updated(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``sobjects/{name}/updated/?start=&end=`` (getUpdated): ids changed in the window."""
    name = params["sobject"]
    sobject(name)
    ids, covered = sf.store.updated(name, *_replication_dates(req))
    return json_response(200, {"ids": ids, "latestDateCovered": wire(covered)})


def deleted(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``sobjects/{name}/deleted/?start=&end=`` (getDeleted): records deleted in the window."""
    name = params["sobject"]
    sobject(name)
    found, earliest, covered = sf.store.deleted(name, *_replication_dates(req))
    body = {
        "deletedRecords": [{"id": record_id, "deletedDate": wire(when)} for record_id, when in found],
        "earliestDateAvailable": wire(earliest),
        "latestDateCovered": wire(covered),
    }
    return json_response(200, body)


def _replication_dates(req: SandboxRequest) -> tuple[Any, Any]:
    """The ``start`` and ``end`` of a replication call (ISO 8601 with an offset, URL-encoded)."""
    out = []
    for key in ("start", "end"):
        raw = req.arg(key)
        if not raw:
            raise invalid("MISSING_ARGUMENT", f"{key} parameter must be specified")
        moment = parse_datetime(raw)
        if moment is None:
            raise invalid(
                "INVALID_REPLICATION_DATE", f"{key} must be an ISO 8601 date and time (YYYY-MM-DDThh:mm:ss+hh:mm)"
            )
        out.append(moment)
    return out[0], out[1]


def query(
    sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str], *, include_deleted: bool = False
) -> SandboxResponse:
    soql = req.arg("q")
    if not soql:
        raise invalid("MALFORMED_QUERY", "A query string must be provided with the q parameter")
    parsed = parse_soql(soql)
    result = sf.store.query(parsed, params["version"], include_deleted=include_deleted)
    if parsed.count == "COUNT()":
        return json_response(200, {"totalSize": result, "done": True, "records": []})
    if isinstance(result, int):
        aggregate = {"attributes": {"type": "AggregateResult"}, "expr0": result}
        return json_response(200, {"totalSize": 1, "done": True, "records": [aggregate]})
    resource = "queryAll" if include_deleted else "query"
    return _page(sf, params, result, _batch_size(sf, req), 0, resource)


def query_all(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``queryAll``: like ``query``, but deleted records (the recycle bin) are included."""
    return query(sf, req, params, include_deleted=True)


def query_more(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """The next page of a query (the ``nextRecordsUrl`` of the previous one)."""
    cursor = sf.store.cursors.get(params["locator"])
    offset = int(params["offset"])
    if cursor is None or offset > len(cursor[0]):
        raise invalid("INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(sf, params, *cursor, offset, "queryAll" if "/queryAll/" in req.path else "query")


def token(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """The OAuth refresh-token grant."""
    form = req.form() if _content_type(req) == "application/x-www-form-urlencoded" else {}
    if form.get("grant_type") != "refresh_token":
        return json_response(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
    try:
        rotated = sf.store.refresh(form.get("client_id"), form.get("client_secret"), form.get("refresh_token"))
    except OAuthError as exc:
        return json_response(400, {"error": exc.error, "error_description": exc.description})
    body: dict[str, Any] = {
        "access_token": sf.store.token,
        "signature": secrets.token_urlsafe(32),
        "scope": "api refresh_token",
        "instance_url": sf.sandbox.base_url(sf.provider),
        "id": f"https://login.salesforce.com/id/{sf.store.org_id}/{sf.store.owner_id}",
        "token_type": "Bearer",
        "issued_at": str(int(time.time() * 1000)),
    }
    if rotated is not None:
        body["refresh_token"] = rotated
    return json_response(200, body)


# ---------------------------------------------------------------------------------------------
# the Composite API: several subrequests in one call, later ones using earlier results

COMPOSITE_MAX = 25  # subrequests per call
COMPOSITE_QUERIES_MAX = 5  # of which queries
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])+)\}")
_HALTED = "The transaction was rolled back since another operation in the same transaction failed."


class _Unresolved(Exception):
    pass


def composite(sf: SalesforceEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``POST /composite``: query and sObject subrequests in order, ``@{ref.field}`` references,
    ``allOrNone`` (one failure rolls every change back). Counts as one API call."""
    body = _json_body(req)
    subs = body.get("compositeRequest")
    if not isinstance(subs, list) or not subs or not all(isinstance(s, dict) for s in subs):
        raise invalid("JSON_PARSER_ERROR", "compositeRequest must be a non-empty array of subrequests")
    if len(subs) > COMPOSITE_MAX:
        raise invalid(
            "LIMIT_EXCEEDED", f"Limit Exceeded: a composite request takes at most {COMPOSITE_MAX} subrequests"
        )
    if sum("/query" in str(s.get("url", "")) for s in subs) > COMPOSITE_QUERIES_MAX:
        raise invalid("LIMIT_EXCEEDED", f"Limit Exceeded: at most {COMPOSITE_QUERIES_MAX} query subrequests")
    all_or_none = body.get("allOrNone") is True
    # only a composite that writes can need rolling back (copying the org is not free)
    writes = any(str(s.get("method") or "").upper() != "GET" for s in subs)
    saved = sf.store.save() if all_or_none and writes else None
    results: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    failed = False
    for sub in subs:
        ref = str(sub.get("referenceId") or "")
        if failed and all_or_none:
            out.append(_sub_answer(ref, 400, errors("PROCESSING_HALTED", _HALTED)))
            continue
        try:
            url = _resolve(str(sub.get("url") or ""), results, in_url=True)
            sub_body = _resolve(sub.get("body"), results, in_url=False)
            answer = _subrequest(sf, str(sub.get("method") or "").upper(), url, sub_body, params["version"])
        except _Unresolved as exc:
            text = f"Invalid reference specified. No value for {exc} found in {str(exc).split('.')[0]}."
            answer = json_response(400, errors("PROCESSING_HALTED", text))
        out.append(_sub_answer(ref, answer.status, answer.body))
        if answer.status < 300:
            results[ref] = answer.body
        else:
            failed = True
    if failed and all_or_none:
        if saved is not None:
            sf.store.restore(saved)
        out = [
            a
            if a["httpStatusCode"] >= 300
            else _sub_answer(a["referenceId"], 400, errors("PROCESSING_HALTED", _HALTED))
            for a in out
        ]
    return json_response(200, {"compositeResponse": out})


def _sub_answer(ref: str, status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": ref}


def _resolve(value: Any, results: dict[str, Any], *, in_url: bool) -> Any:
    """``value`` with every ``@{ref.path}`` replaced by the earlier result's value."""
    if isinstance(value, dict):
        return {k: _resolve(v, results, in_url=in_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results, in_url=in_url) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        found: Any = results.get(m.group(1), _Unresolved)
        for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", m.group(2)):
            if step[0] and isinstance(found, dict):
                found = found.get(step[0], _Unresolved)
            elif step[1] and isinstance(found, list) and int(step[1]) < len(found):
                found = found[int(step[1])]
            else:
                found = _Unresolved
        if found is _Unresolved or found is None:
            raise _Unresolved(m.group(1) + m.group(2))
        return quote(str(found), safe="") if in_url else str(found)

    return _REFERENCE.sub(one, value)


def _subrequest(sf: SalesforceEmulator, method: str, url: str, body: Any, version: str) -> SandboxResponse:
    """Run one subrequest through the route table (no auth or call counting: the composite did)."""
    from .routes import ROUTES

    parts = urlsplit(url)
    path = parts.path
    for endpoint in ROUTES:
        if endpoint.method != method or endpoint.operation in ("composite", "oauth.token"):
            continue
        m = re.fullmatch(endpoint.pattern, path)
        if m is None:
            continue
        sub_params = {k: v for k, v in m.groupdict().items() if v is not None}
        if sub_params.get("version") != version:
            return json_response(400, errors("INVALID_INPUT", "subrequests must use the composite call's API version"))
        headers = Message()
        headers["Content-Type"] = "application/json"
        raw = b"" if body is None else json.dumps(body).encode()
        sub = SandboxRequest(
            method, path, parse_qs(parts.query, keep_blank_values=True), headers, raw, endpoint.operation
        )
        try:
            return endpoint.handler(sf, sub, sub_params)
        except OrgError as exc:
            return json_response(exc.status, exc.body())
    return json_response(404, errors("NOT_FOUND", f"The requested resource does not exist: {method} {path}"))


# ---------------------------------------------------------------------------------------------
# reading requests, writing answers


def _content_type(req: SandboxRequest) -> str:
    return (req.header("Content-Type") or "").split(";")[0].strip().lower()


def _json_body(req: SandboxRequest) -> dict[str, Any]:
    ctype = _content_type(req)
    if ctype != "application/json":
        raise OrgError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type header specified in HTTP request is not supported: {ctype or '(none)'}",
        )
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise invalid("JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object") from None
    if not isinstance(body, dict):
        raise invalid("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
    return body


def _batch_size(sf: SalesforceEmulator, req: SandboxRequest) -> int:
    """``Sforce-Query-Options: batchSize=n`` (200 to 2,000; a hint, as in the real API)."""
    m = re.search(r"batchSize\s*=\s*(\d{1,6})", req.header("Sforce-Query-Options") or "")
    if sf.store.page_size:
        return sf.store.page_size
    return QUERY_BATCH if m is None else min(max(int(m.group(1)), 200), QUERY_BATCH)


def _page(
    sf: SalesforceEmulator,
    params: dict[str, str],
    records: list[dict[str, Any]],
    batch: int,
    offset: int,
    resource: str = "query",
) -> SandboxResponse:
    """One page of a result; a result with more keeps a cursor (``params`` has its locator, if any).
    A ``queryAll`` result's next pages are under ``queryAll`` too."""
    body: dict[str, Any] = {"totalSize": len(records), "done": True, "records": records[offset : offset + batch]}
    following = offset + batch
    if following < len(records):
        locator = params.get("locator") or sf.store.open_cursor(records, batch)
        body["done"] = False
        body["nextRecordsUrl"] = f"/services/data/v{params['version']}/{resource}/{locator}-{following}"
    return json_response(200, body)


def error_response(status: int, message: str | None = None) -> SandboxResponse:
    """The org's answer for a bare status (also what the core sends for injected faults)."""
    # Salesforce never sends Retry-After; its rate limit is a 403.
    if status == 401:
        body = errors("INVALID_SESSION_ID", message or "Session expired or invalid")
        return json_response(401, body, {"WWW-Authenticate": "Token"})
    if status == 429:
        return json_response(403, errors("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
    if status == 404:
        return json_response(404, errors("NOT_FOUND", message or "The requested resource does not exist"))
    if status == 500:
        ref = f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**6)} ({secrets.randbelow(10**9)})"
        text = f"An unexpected error occurred. Please include this ErrorId if you contact support: {ref}"
        return json_response(500, errors("UNKNOWN_EXCEPTION", text))
    if status >= 500:
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
        html = f"<html><head><title>{reason}</title></head><body><h1>{reason}</h1></body></html>"
        return SandboxResponse(status, html, {}, "text/html;charset=UTF-8")
    return json_response(status, errors("BAD_REQUEST" if status == 400 else "ERROR", message or "error"))


def not_emulated(req: SandboxRequest, prefix: str, what: str = "") -> SandboxResponse:
    """501: a real org may well serve this, but the sandbox does not (never a "not found")."""
    text = (
        f"Not emulated: the pms-integration sandbox does not implement {req.method} {prefix}{req.path}"
        + (f" ({what})" if what else "")
        + ". It emulates the versions list, create/read/update/delete of Event and Task, create of "
        "Contact and Lead, query and queryAll (Event, Task, Contact, Lead, User, BusinessHours), "
        "getUpdated and getDeleted of Event and Task, composite and the OAuth refresh-token grant."
    )
    return json_response(501, errors("NOT_EMULATED", text))
