"""An in-memory Salesforce org for the sandbox: REST sObject API for Event and Task, SOQL, OAuth.

Mounted under ``/salesforce``; the adapter's base URL is ``http://127.0.0.1:<port>/salesforce``.

Endpoints (paths below the prefix):

* ``GET /services/data/`` - the versions list (no auth, not counted against the limit);
* ``POST /services/data/vXX.X/sobjects/{Event|Task}/`` - create, ``201 {"id", "success", "errors"}``;
* ``GET|PATCH|DELETE /services/data/vXX.X/sobjects/{Event|Task}/{id}`` - read (``?fields=``), update
  (``204``), delete (``204``; the record goes to the recycle bin);
* ``GET /services/data/vXX.X/query/?q=`` - the SOQL subset ``SELECT f, ... FROM o [WHERE a op v
  [AND|OR ...]] [ORDER BY f [ASC|DESC]] [LIMIT n]`` with ``=, !=, <, <=, >, >=, LIKE``;
* ``POST /services/oauth2/token`` - the refresh-token grant.

Strict like a real org: a bearer token on every API call (``401 INVALID_SESSION_ID`` as a JSON
array), unknown fields ``400 INVALID_FIELD``, read-only fields
``INVALID_FIELD_FOR_INSERT_UPDATE``, missing start/end ``REQUIRED_FIELD_MISSING``, bad values
(``STRING_TOO_LONG``, ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``, ``JSON_PARSER_ERROR``), record ids
of the wrong type or with a bad checksum ``MALFORMED_ID``, deleted records ``404
ENTITY_IS_DELETED``, non-filterable fields in ``WHERE`` and quoted date-times refused, ids that
look like Salesforce's (``00U``/``00T`` key prefix, 18 characters with a valid checksum), and
``Sforce-Limit-Info: api-usage=n/15000`` on every counted response (``403
REQUEST_LIMIT_EXCEEDED`` once the daily allowance is spent).
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import string
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import attrs

from ..models import ProviderName
from ._core import Emulator, Reply, Route, Sandbox, SandboxRequest, SandboxResponse, json_response

__all__ = ["SalesforceEmulator", "EMULATOR", "salesforce_id", "id_suffix"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_VERSIONS = [f"{v}.0" for v in range(31, 68)]
_SEASONS = ("Winter", "Spring", "Summer")
API_LIMIT = 15_000  # a Developer Edition org's rolling 24-hour allocation


def id_suffix(id15: str) -> str:
    """The 3-character case checksum of a 15-character id."""
    out = ""
    for block in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[block * 5 : block * 5 + 5]) if "A" <= c <= "Z")
        out += _ALPHABET[bits]
    return out


def salesforce_id(prefix: str) -> str:
    """A fresh, realistic 18-character id with the given 3-character key prefix."""
    body = prefix + "Hs" + "".join(secrets.choice(_BASE62) for _ in range(10))
    return body + id_suffix(body)


def _valid_id(value: str) -> bool:
    return bool(_ID_SHAPE.fullmatch(value)) and (len(value) == 15 or value[15:] == id_suffix(value[:15]))


def _id15(value: str) -> str:
    return value[:15]


def _version_label(version: str) -> str:
    # 31.0 was Summer '14; three releases a year.
    n = int(float(version)) - 31
    season = _SEASONS[(n + 2) % 3]
    year = 14 + (n + 2) // 3
    return f"{season} '{year:02d}"


# ---------------------------------------------------------------------------------------------
# the field model


@attrs.frozen
class FieldSpec:
    kind: str  # datetime, date, bool, int, string, textarea, picklist, reference
    label: str
    createable: bool = True
    updateable: bool = True
    filterable: bool = True
    length: int | None = None
    restricted: tuple[str, ...] = ()
    refers_to: tuple[str, ...] = ()  # key prefixes a reference accepts (empty: any valid id)


def _read_only(kind: str, label: str) -> FieldSpec:
    return FieldSpec(kind, label, createable=False, updateable=False)


_COMMON: dict[str, FieldSpec] = {
    "Id": _read_only("reference", "Record ID"),
    "CreatedDate": _read_only("datetime", "Created Date"),
    "LastModifiedDate": _read_only("datetime", "Last Modified Date"),
    "CreatedById": _read_only("reference", "Created By ID"),
    "IsDeleted": _read_only("bool", "Deleted"),
    "Subject": FieldSpec("string", "Subject", length=255),
    "Description": FieldSpec("textarea", "Description", filterable=False, length=32_000),
    "ActivityDate": FieldSpec("date", "Due Date Only"),
    "WhoId": FieldSpec("reference", "Name ID", refers_to=("003", "00Q")),
    "WhatId": FieldSpec("reference", "Related To ID"),
    "Type": FieldSpec("picklist", "Type", length=40),
}
EVENT_FIELDS: dict[str, FieldSpec] = {
    **_COMMON,
    "StartDateTime": FieldSpec("datetime", "Start Date Time"),
    "EndDateTime": FieldSpec("datetime", "End Date Time"),
    "DurationInMinutes": FieldSpec("int", "Duration"),
    "IsAllDayEvent": FieldSpec("bool", "All-Day Event"),
    "ActivityDateTime": FieldSpec("datetime", "Due Date Time"),
    "EndDate": _read_only("date", "End Date"),
    "Location": FieldSpec("string", "Location", length=255),
    "OwnerId": FieldSpec("reference", "Assigned To ID", refers_to=("005", "023")),
    "ShowAs": FieldSpec("picklist", "Show Time As", restricted=("Busy", "OutOfOffice", "Free")),
    "IsPrivate": FieldSpec("bool", "Private"),
    "IsReminderSet": FieldSpec("bool", "Reminder Set"),
    "ReminderDateTime": FieldSpec("datetime", "Reminder Date/Time"),
    "RecordTypeId": FieldSpec("reference", "Record Type ID", refers_to=("012",)),
}
TASK_FIELDS: dict[str, FieldSpec] = {
    **_COMMON,
    "Status": FieldSpec(
        "picklist",
        "Status",
        restricted=("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
    ),
    "Priority": FieldSpec("picklist", "Priority", restricted=("High", "Normal", "Low")),
    "OwnerId": FieldSpec("reference", "Assigned To ID", refers_to=("005",)),
    "IsClosed": _read_only("bool", "Closed"),
}
SOBJECTS: dict[str, tuple[str, dict[str, FieldSpec]]] = {"Event": ("00U", EVENT_FIELDS), "Task": ("00T", TASK_FIELDS)}

_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_datetime(text: str) -> _dt.datetime | None:
    m = _DATETIME.fullmatch(text)
    if m is None:
        return None
    zone = m.group(3)
    offset = "+0000" if zone == "Z" else zone.replace(":", "")
    try:
        return _dt.datetime.strptime(m.group(1) + offset, "%Y-%m-%dT%H:%M:%S%z").astimezone(_dt.timezone.utc)
    except ValueError:
        return None


def _format_datetime(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _wire(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return _format_datetime(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def _errors(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return [entry]


def _fail(status: int, code: str, message: str, fields: list[str] | None = None) -> Reply:
    return Reply(json_response(status, _errors(code, message, fields)))


# ---------------------------------------------------------------------------------------------
# SOQL (the subset the library and simple tooling use)

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>)|(?P<comma>,)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))"
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_LIT_PERCENT, _LIT_UNDERSCORE = "\x01", "\x02"


class _SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class _Cond:
    field: str
    op: str
    kind: str  # str, dt, date, num, bool, null
    value: Any


@attrs.frozen
class _Query:
    sobject: str
    fields: list[str]
    where: list[list[_Cond]]  # OR of ANDs
    order: tuple[str, bool] | None
    limit: int | None


def _unquote_soql(literal: str) -> str:
    out = []
    i = 1
    while i < len(literal) - 1:
        c = literal[i]
        if c == "\\":
            nxt = literal[i + 1]
            if nxt == "%":
                out.append(_LIT_PERCENT)
            elif nxt == "_":
                out.append(_LIT_UNDERSCORE)
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            else:
                raise _SoqlError(
                    "MALFORMED_QUERY", f"Invalid string literal '{literal}'. Illegal character sequence '\\{nxt}'"
                )
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(soql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(soql):
        m = _TOKEN.match(soql, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup or "bad"
        text = m.group(kind)
        if kind == "bad":
            raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{text}'")
        out.append((kind, text))
    return out


def parse_soql(soql: str) -> _Query:
    """Parse the supported SOQL subset; raises ``_SoqlError`` like the org would."""
    toks = _tokens(soql)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        return toks[i + offset] if i + offset < len(toks) else ("end", "")

    def take_word(*words: str) -> str:
        nonlocal i
        kind, text = peek()
        if kind != "word" or (words and text.upper() not in words):
            raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{text or '<EOF>'}'")
        i += 1
        return text

    take_word("SELECT")
    fields = [take_word()]
    while peek()[0] == "comma":
        i += 1
        fields.append(take_word())
    take_word("FROM")
    sobject = take_word()
    where: list[list[_Cond]] = []
    order: tuple[str, bool] | None = None
    limit: int | None = None
    if peek()[0] == "word" and peek()[1].upper() == "WHERE":
        i += 1
        group: list[_Cond] = []
        while True:
            field = take_word()
            kind, text = peek()
            if kind == "op":
                op = text
            elif kind == "word" and text.upper() == "LIKE":
                op = "LIKE"
            else:
                raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{text or '<EOF>'}'")
            i += 1
            vkind, vtext = peek()
            i += 1
            if vkind == "str":
                cond = _Cond(field, op, "str", _unquote_soql(vtext))
            elif vkind == "dt":
                parsed = _parse_datetime(vtext)
                if parsed is None:
                    raise _SoqlError("MALFORMED_QUERY", f"line 1: invalid date-time literal {vtext}")
                cond = _Cond(field, op, "dt", parsed)
            elif vkind == "date":
                cond = _Cond(field, op, "date", _dt.date.fromisoformat(vtext))
            elif vkind == "num":
                cond = _Cond(field, op, "num", float(vtext))
            elif vkind == "word" and vtext.lower() in ("true", "false"):
                cond = _Cond(field, op, "bool", vtext.lower() == "true")
            elif vkind == "word" and vtext.lower() == "null":
                cond = _Cond(field, op, "null", None)
            else:
                raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{vtext or '<EOF>'}'")
            group.append(cond)
            kind, text = peek()
            if kind == "word" and text.upper() == "AND":
                i += 1
            elif kind == "word" and text.upper() == "OR":
                i += 1
                where.append(group)
                group = []
            else:
                break
        where.append(group)
    if peek()[0] == "word" and peek()[1].upper() == "ORDER":
        i += 1
        take_word("BY")
        field = take_word()
        descending = False
        if peek()[0] == "word" and peek()[1].upper() in ("ASC", "DESC"):
            descending = peek()[1].upper() == "DESC"
            i += 1
        order = (field, descending)
    if peek()[0] == "word" and peek()[1].upper() == "LIMIT":
        i += 1
        kind, text = peek()
        if kind != "num" or not text.isdigit():
            raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{text or '<EOF>'}'")
        i += 1
        limit = int(text)
    if i != len(toks):
        raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{peek()[1]}'")
    return _Query(sobject, fields, where, order, limit)


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    for c in pattern:
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == _LIT_PERCENT:
            out.append("%")
        elif c == _LIT_UNDERSCORE:
            out.append("_")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _plain(text: str) -> str:
    return text.replace(_LIT_PERCENT, "%").replace(_LIT_UNDERSCORE, "_")


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except TypeError:
        return False


# ---------------------------------------------------------------------------------------------
# the emulator


class SalesforceEmulator(Emulator):
    """An in-memory Salesforce org with one API user (the owner), a Contact and a Lead."""

    provider = ProviderName.SALESFORCE
    prefix = "/salesforce"
    api_version = "67.0"

    def __init__(self, sandbox: Sandbox) -> None:
        self.org_id = salesforce_id("00D")
        self.owner_id = salesforce_id("005")
        self.event_record_type = salesforce_id("012")
        self.client_id = "3MVG9sandbox" + secrets.token_hex(12)
        self.client_secret = secrets.token_hex(16)
        self.refresh_token = "5Aep861sandbox" + secrets.token_hex(16)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.api_usage = 0
        self.api_limit = API_LIMIT
        self.token_refreshes = 0
        #: refresh-token rotation (an option of the connected app): each refresh answers with a
        #: new refresh token and the one it used stops working at once
        self.rotate_refresh_tokens = False
        super().__init__(sandbox)
        self._seed_people()

    def _seed_people(self) -> None:
        for prefix, name in (("003", "Jane Doe"), ("00Q", "John Roe")):
            record_id = salesforce_id(prefix)
            self.contacts[record_id] = {"Id": record_id, "Name": name, "type": "Contact" if prefix == "003" else "Lead"}

    # -- Emulator API ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        ver = r"/services/data/v(?P<version>\d{2,3}\.\d)"
        obj = r"(?P<sobject>[^/]+)"
        rid = r"(?P<record_id>[^/]+)"
        return [
            Route("GET", r"/services/data/?", self._versions, "versions"),
            Route("GET", rf"{ver}/query/?", self._api(self._query), "query"),
            Route("GET", rf"{ver}/queryAll/?", self._api(self._query_all), "queryAll"),
            Route("POST", rf"{ver}/sobjects/{obj}/?", self._api(self._create), "sobjects.create", True),
            Route("GET", rf"{ver}/sobjects/{obj}/{rid}/?", self._api(self._read), "sobjects.get"),
            Route("PATCH", rf"{ver}/sobjects/{obj}/{rid}/?", self._api(self._update), "sobjects.update", True),
            Route("DELETE", rf"{ver}/sobjects/{obj}/{rid}/?", self._api(self._delete), "sobjects.delete", True),
            Route("POST", r"/services/oauth2/token", self._token, "oauth.token", True),
        ]

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_SALESFORCE_BASE_URL": base_url,
            "PMS_SALESFORCE_TOKEN": self.token,
            "PMS_SALESFORCE_OWNER_ID": self.owner_id,
            "PMS_SALESFORCE_API_VERSION": self.api_version,
        }

    def refresh_environ(self) -> dict[str, str]:
        """The three variables that let the adapter refresh an expired token here."""
        return {
            "PMS_SALESFORCE_CLIENT_ID": self.client_id,
            "PMS_SALESFORCE_CLIENT_SECRET": self.client_secret,
            "PMS_SALESFORCE_REFRESH_TOKEN": self.refresh_token,
        }

    def state(self) -> dict[str, Any]:
        live = [r for r in self.records.values() if not r["IsDeleted"]]
        return {
            "owner_id": self.owner_id,
            "event_record_type": self.event_record_type,
            "contacts": [dict(c) for c in self.contacts.values()],
            "bookings": [self._public(r) for r in live if r["attributes"]["type"] == "Event"],
            "tasks": [self._public(r) for r in live if r["attributes"]["type"] == "Task"],
            "deleted": [r["Id"] for r in self.records.values() if r["IsDeleted"]],
            "api_usage": self.api_usage,
            "token_refreshes": self.token_refreshes,
        }

    def reset(self) -> None:
        self.rotate_refresh_tokens = False
        self.records.clear()
        self.api_usage = 0
        self.api_limit = API_LIMIT
        self.token_refreshes = 0

    def expire_token(self) -> str:
        """Invalidate the current access token (as a session timeout would); return the new one."""
        with self.lock:
            self.token = "00D" + self.org_id[3:15] + "!AQ" + secrets.token_urlsafe(24)
            return self.token

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        # Salesforce never sends Retry-After; its rate limit is a 403.
        if status == 401:
            return json_response(
                401,
                _errors("INVALID_SESSION_ID", message or "Session expired or invalid"),
                {"WWW-Authenticate": "Token"},
            )
        if status == 429:
            return json_response(403, _errors("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
        if status == 404:
            return json_response(404, _errors("NOT_FOUND", message or "The requested resource does not exist"))
        if status == 500:
            ref = f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**6)} ({secrets.randbelow(10**9)})"
            text = f"An unexpected error occurred. Please include this ErrorId if you contact support: {ref}"
            return json_response(500, _errors("UNKNOWN_EXCEPTION", text))
        if status >= 500:
            reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
            html = f"<html><head><title>{reason}</title></head><body><h1>{reason}</h1></body></html>"
            return SandboxResponse(status, html, {}, "text/html;charset=UTF-8")
        return json_response(status, _errors("BAD_REQUEST" if status == 400 else "ERROR", message or "error"))

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        allowed = sorted({r.method for r, rx in self._compiled if rx.fullmatch(req.path)})
        if allowed:
            text = f"HTTP Method '{req.method}' not allowed. Allowed are {','.join(['HEAD', *allowed])}"
            return json_response(405, _errors("METHOD_NOT_ALLOWED", text))
        return self.error_response(404)

    # -- plumbing ----------------------------------------------------------------------------

    def _api(self, handler: Callable[[SandboxRequest, dict[str, str]], SandboxResponse]) -> Callable[..., Any]:
        """Auth, version and daily-limit checks around an API handler; adds Sforce-Limit-Info."""

        def run(req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
            denied = self.check_auth(req)
            if denied is not None:
                return denied
            if params.get("version") not in _VERSIONS:
                return self.error_response(404)
            with self.lock:
                if self.api_usage >= self.api_limit:
                    response = json_response(403, _errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
                else:
                    self.api_usage += 1
                    try:
                        response = handler(req, params)
                    except Reply as reply:
                        response = reply.response
                response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.api_limit}"
            return response

        return run

    def _sobject(self, name: str) -> tuple[str, dict[str, FieldSpec]]:
        if name not in SOBJECTS:
            raise _fail(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'")
        return SOBJECTS[name]

    def _record(self, sobject: str, raw_id: str) -> dict[str, Any]:
        prefix, _ = self._sobject(sobject)
        if not _ID_SHAPE.fullmatch(raw_id):
            raise _fail(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {raw_id}")
        if not _valid_id(raw_id) or not raw_id.startswith(prefix):
            raise _fail(400, "MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {raw_id}", ["Id"])
        record = next((r for r in self.records.values() if _id15(r["Id"]) == _id15(raw_id)), None)
        if record is None or record["attributes"]["type"] != sobject:
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise _fail(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _body(self, req: SandboxRequest) -> dict[str, Any]:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _fail(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content-Type header specified in HTTP request is not supported: {ctype or '(none)'}",
            )
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            raise _fail(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON object") from None
        if not isinstance(body, dict):
            raise _fail(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
        return body

    def _coerce(
        self, sobject: str, fields: dict[str, FieldSpec], body: dict[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        """Validate a create/update body field by field, as the org does; return typed values."""
        if "Id" in body:
            raise _fail(400, "INVALID_FIELD", "The Id field should not be specified in the sobject data.")
        out: dict[str, Any] = {}
        for name, value in body.items():
            spec = fields.get(name)
            if spec is None:
                raise _fail(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
            if (creating and not spec.createable) or (not creating and not spec.updateable):
                raise _fail(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings of this field and "
                    "verify that it is read/write for your profile or permission set.",
                    [name],
                )
            out[name] = self._value(name, spec, value)
        return out

    def _value(self, name: str, spec: FieldSpec, value: Any) -> Any:
        if value is None:
            return None

        def cannot(type_name: str) -> Reply:
            return _fail(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of {type_name} from VALUE_{type(value).__name__.upper()} value "
                f"{str(value)[:60]} or request may be missing a required field",
            )

        if spec.kind == "datetime":
            parsed = _parse_datetime(value) if isinstance(value, str) else None
            if parsed is None:
                raise cannot("datetime")
            return parsed
        if spec.kind == "date":
            if not (isinstance(value, str) and _DATE.fullmatch(value)):
                raise cannot("date")
            try:
                return _dt.date.fromisoformat(value)
            except ValueError:
                raise cannot("date") from None
        if spec.kind == "bool":
            if not isinstance(value, bool):
                raise cannot("boolean")
            return value
        if spec.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise cannot("int")
            return value
        if not isinstance(value, str):
            raise cannot("string")
        if spec.length is not None and len(value) > spec.length:
            raise _fail(
                400,
                "STRING_TOO_LONG",
                f"{spec.label}: data value too large: {value[:40]}... (max length={spec.length})",
                [name],
            )
        if spec.restricted and value not in spec.restricted:
            raise _fail(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.label}: bad value for restricted picklist field: {value}",
                [name],
            )
        if spec.kind == "reference":
            if not _valid_id(value):
                raise _fail(400, "MALFORMED_ID", f"{spec.label}: id value of incorrect type: {value}", [name])
            if spec.refers_to and not value.startswith(spec.refers_to):
                raise _fail(
                    400, "FIELD_INTEGRITY_EXCEPTION", f"{spec.label}: id value of incorrect type: {value}", [name]
                )
            if not self._exists(name, value):
                raise _fail(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name])
            return self._canonical(value)
        return value

    def _exists(self, field: str, value: str) -> bool:
        key = _id15(value)
        if field == "OwnerId":
            return key == _id15(self.owner_id)
        if field == "RecordTypeId":
            return key == _id15(self.event_record_type)
        if field == "WhoId":
            return any(_id15(c) == key for c in self.contacts)
        return True

    def _canonical(self, value: str) -> str:
        body = value[:15]
        return body + id_suffix(body)

    # -- handlers ----------------------------------------------------------------------------

    def _versions(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        body = [{"label": _version_label(v), "url": f"/services/data/v{v}", "version": v} for v in _VERSIONS]
        return json_response(200, body)

    def _create(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        sobject = params["sobject"]
        prefix, fields = self._sobject(sobject)
        values = self._coerce(sobject, fields, self._body(req), creating=True)
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        record: dict[str, Any] = {name: None for name in fields}
        record.update(
            {
                "OwnerId": self.owner_id,
                "CreatedById": self.owner_id,
                "CreatedDate": now,
                "LastModifiedDate": now,
                "IsDeleted": False,
            }
        )
        if sobject == "Event":
            record.update({"IsAllDayEvent": False, "ShowAs": "Busy", "IsPrivate": False, "IsReminderSet": False})
            record.update(values)
            self._settle_event(record, values, creating=True)
        else:
            record.update({"Status": "Not Started", "Priority": "Normal"})
            record.update(values)
            record["IsClosed"] = record["Status"] == "Completed"
        record_id = salesforce_id(prefix)
        while any(_id15(r) == _id15(record_id) for r in self.records):
            record_id = salesforce_id(prefix)
        record["Id"] = record_id
        record["attributes"] = {
            "type": sobject,
            "url": f"/services/data/v{params['version']}/sobjects/{sobject}/{record_id}",
        }
        self.records[record_id] = record
        return json_response(201, {"id": record_id, "success": True, "errors": []})

    def _settle_event(self, record: dict[str, Any], changed: dict[str, Any], *, creating: bool) -> None:
        """Keep start, end and duration consistent, as the org does; raise on contradictions."""
        if record.get("IsAllDayEvent"):
            if record.get("ActivityDate") is None and record.get("StartDateTime") is None:
                raise _fail(
                    400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ActivityDate]", ["ActivityDate"]
                )
            return
        start = record.get("StartDateTime")
        if start is None:
            raise _fail(
                400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ActivityDateTime]", ["ActivityDateTime"]
            )
        end = record.get("EndDateTime")
        duration = record.get("DurationInMinutes")
        if creating:
            if end is None and duration is None:
                raise _fail(
                    400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [EndDateTime]", ["EndDateTime"]
                )
            if end is not None and duration is not None and start + _dt.timedelta(minutes=duration) != end:
                raise _fail(
                    400,
                    "FIELD_INTEGRITY_EXCEPTION",
                    "End Date Time: Duration and end time don't match",
                    ["EndDateTime"],
                )
        elif "StartDateTime" in changed and "EndDateTime" not in changed and "DurationInMinutes" not in changed:
            end = None  # a moved start keeps the duration
        elif "DurationInMinutes" in changed and "EndDateTime" not in changed:
            end = None
        if end is None:
            end = start + _dt.timedelta(minutes=int(duration or 0))
        if end < start:
            raise _fail(
                400, "FIELD_INTEGRITY_EXCEPTION", "End Date Time: End time can't be before start time", ["EndDateTime"]
            )
        minutes = int((end - start).total_seconds() // 60)
        if minutes > 1440:
            raise _fail(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                "Duration must be between 0 and 1440 minutes: Duration",
                ["DurationInMinutes"],
            )
        record.update(
            {
                "EndDateTime": end,
                "DurationInMinutes": minutes,
                "ActivityDateTime": start,
                "ActivityDate": start.date(),
                "EndDate": end.date(),
            }
        )

    def _read(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        sobject = params["sobject"]
        _, fields = self._sobject(sobject)
        record = self._record(sobject, params["record_id"])
        wanted = req.arg("fields")
        names = list(fields) if not wanted else [f.strip() for f in wanted.split(",") if f.strip()]
        for name in names:
            if name not in fields:
                raise _fail(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'")
        body: dict[str, Any] = {"attributes": dict(record["attributes"])}
        body.update({name: _wire(record.get(name)) for name in names})
        body.setdefault("Id", record["Id"])
        return json_response(200, body)

    def _update(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        sobject = params["sobject"]
        _, fields = self._sobject(sobject)
        record = self._record(sobject, params["record_id"])
        values = self._coerce(sobject, fields, self._body(req), creating=False)
        candidate = dict(record)
        candidate.update(values)
        if sobject == "Event":
            self._settle_event(candidate, values, creating=False)
        else:
            candidate["IsClosed"] = candidate.get("Status") == "Completed"
        candidate["LastModifiedDate"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        record.update(candidate)
        return SandboxResponse(204)

    def _delete(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        record = self._record(params["sobject"], params["record_id"])
        record["IsDeleted"] = True
        return SandboxResponse(204)

    def _query_all(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """``queryAll``: like ``query``, but deleted records (the recycle bin) are included."""
        return self._query(req, params, include_deleted=True)

    def _query(
        self, req: SandboxRequest, params: dict[str, str], *, include_deleted: bool = False
    ) -> SandboxResponse:
        soql = req.arg("q")
        if not soql:
            raise _fail(400, "MALFORMED_QUERY", "A query string must be provided with the q parameter")
        try:
            query = parse_soql(soql)
            sobject = query.sobject
            if sobject not in SOBJECTS:
                raise _SoqlError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            _, fields = SOBJECTS[sobject]
            for name in (
                query.fields + [c.field for g in query.where for c in g] + ([query.order[0]] if query.order else [])
            ):
                if name not in fields:
                    raise _SoqlError(
                        "INVALID_FIELD",
                        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom field, "
                        "be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                        "describe call for the appropriate names.",
                    )
            for group in query.where:
                for cond in group:
                    self._check_condition(fields, cond)
        except _SoqlError as exc:
            raise _fail(400, exc.code, exc.message) from None
        rows = [
            r
            for r in self.records.values()
            if r["attributes"]["type"] == sobject
            and (include_deleted or not r["IsDeleted"])
            and (not query.where or any(all(self._holds(r, fields, c) for c in g) for g in query.where))
        ]
        if query.order:
            name, descending = query.order
            rows.sort(key=lambda r: (r.get(name) is None, str(_wire(r.get(name)))), reverse=descending)
        if query.limit is not None:
            rows = rows[: query.limit]
        records = [{"attributes": dict(r["attributes"]), **{f: _wire(r.get(f)) for f in query.fields}} for r in rows]
        return json_response(200, {"totalSize": len(records), "done": True, "records": records})

    def _check_condition(self, fields: dict[str, FieldSpec], cond: _Cond) -> None:
        spec = fields[cond.field]
        if not spec.filterable:
            raise _SoqlError("INVALID_FIELD", f"field '{cond.field}' can not be filtered in a query call")
        if cond.kind == "null":
            if cond.op not in ("=", "!="):
                raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on null for {cond.field}")
            return
        expected = {"datetime": "dt", "date": "date", "int": "num", "bool": "bool"}.get(spec.kind, "str")
        if cond.kind != expected:
            if expected in ("dt", "date") and cond.kind == "str":
                type_name = "dateTime" if expected == "dt" else "date"
                raise _SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{cond.field}' must be of type {type_name} "
                    "and should not be enclosed in quotes",
                )
            raise _SoqlError(
                "INVALID_FIELD", f"value of filter criterion for field '{cond.field}' must be of the field's type"
            )
        if cond.op == "LIKE" and expected != "str":
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{cond.field}': LIKE")
        if spec.kind == "reference" and cond.op != "LIKE" and not _valid_id(_plain(cond.value)):
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {_plain(cond.value)}")

    def _holds(self, record: dict[str, Any], fields: dict[str, FieldSpec], cond: _Cond) -> bool:
        actual = record.get(cond.field)
        spec = fields[cond.field]
        if cond.kind == "null":
            return (actual is None) == (cond.op == "=")
        if cond.op == "LIKE":
            return isinstance(actual, str) and bool(_like(cond.value).fullmatch(actual))
        value = cond.value
        if cond.kind == "str":
            value = _plain(value)
            if spec.kind == "reference":
                return _compare(cond.op, _id15(actual) if actual else None, _id15(value))
            # SOQL text comparisons ignore case.
            return _compare(cond.op, actual.lower() if isinstance(actual, str) else None, value.lower())
        if cond.kind == "num":
            return _compare(cond.op, actual, value)
        return _compare(cond.op, actual, value)

    def _token(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        form = req.form() if ctype == "application/x-www-form-urlencoded" else {}

        def oauth_error(error: str, description: str) -> SandboxResponse:
            return json_response(400, {"error": error, "error_description": description})

        grant = form.get("grant_type")
        if grant != "refresh_token":
            return oauth_error("unsupported_grant_type", "grant type not supported")
        with self.lock:
            if form.get("client_id") != self.client_id:
                return oauth_error("invalid_client_id", "client identifier invalid")
            if form.get("client_secret") != self.client_secret:
                return oauth_error("invalid_client", "invalid client credentials")
            if form.get("refresh_token") != self.refresh_token:
                return oauth_error("invalid_grant", "expired access/refresh token")
            self.token = "00D" + self.org_id[3:15] + "!AQ" + secrets.token_urlsafe(24)
            self.token_refreshes += 1
            base = self.sandbox.base_url(self.provider)
            body: dict[str, Any] = {
                "access_token": self.token,
                "signature": secrets.token_urlsafe(32),
                "scope": "api refresh_token",
                "instance_url": base,
                "id": f"https://login.salesforce.com/id/{self.org_id}/{self.owner_id}",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
            }
            if self.rotate_refresh_tokens:
                self.refresh_token = "5Aep861sandbox" + secrets.token_hex(16)
                body["refresh_token"] = self.refresh_token
        return json_response(200, body)

    # -- helpers -----------------------------------------------------------------------------

    def _public(self, record: dict[str, Any]) -> dict[str, Any]:
        return {k: _wire(v) for k, v in record.items() if k != "attributes"}

    def record(self, record_id: str) -> dict[str, Any] | None:
        """A record's fields (deleted ones too), for tests; None if unknown."""
        with self.lock:
            found = next((r for r in self.records.values() if _id15(r["Id"]) == _id15(unquote(record_id))), None)
            return None if found is None else self._public(found)

    def set_api_usage(self, used: int, limit: int = API_LIMIT) -> None:
        """Set the daily counter (to test the org's 403 REQUEST_LIMIT_EXCEEDED)."""
        with self.lock:
            self.api_usage = used
            self.api_limit = limit


EMULATOR = SalesforceEmulator
