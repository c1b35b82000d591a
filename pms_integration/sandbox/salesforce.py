"""An in-memory Salesforce org for the sandbox: REST sObject API for Event and Task, SOQL, OAuth.

Mounted under ``/salesforce``; the adapter's base URL is ``http://127.0.0.1:<port>/salesforce``.

Endpoints (paths below the prefix):

* ``GET /services/data/`` - the versions list (no auth, not counted against the limit);
* ``POST /services/data/vXX.X/sobjects/{Event|Task}/`` - create, ``201 {"id", "success", "errors"}``;
* ``GET|PATCH|DELETE /services/data/vXX.X/sobjects/{Event|Task}/{id}`` - read (``?fields=``), update
  (``204``), delete (``204``; the record goes to the recycle bin);
* ``GET /services/data/vXX.X/query/?q=`` (and ``queryAll``, which includes deleted records) - the
  common SOQL: fields, relationship fields (``Who.Name``) or ``COUNT()``; ``FROM`` Event, Task,
  Contact, Lead or User; ``WHERE`` with ``=, !=, <, <=, >, >=, LIKE, IN, NOT IN``, ``AND``/``OR``/
  ``NOT`` and parentheses, date literals (``TODAY``, ``LAST_N_DAYS:n``, ...); ``ORDER BY``,
  ``LIMIT``, ``OFFSET``. Results page at 2,000 records with ``nextRecordsUrl``
  (``GET .../query/01g...-2000``);
* ``POST /services/oauth2/token`` - the refresh-token grant (with ``rotate_refresh_tokens``, each
  refresh issues a new refresh token and invalidates the old one).

Any other route answers ``501 NOT_EMULATED`` naming it, never a 404 a caller would read as
"record not found".

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
#: Contacts and Leads (the patients the org knows) and Users (the owner): readable by SOQL only
PERSON_FIELDS: dict[str, FieldSpec] = {
    "Id": _read_only("reference", "Record ID"),
    "Name": _read_only("string", "Full Name"),
    "FirstName": FieldSpec("string", "First Name", length=40),
    "LastName": FieldSpec("string", "Last Name", length=80),
    "Email": FieldSpec("string", "Email", length=80),
    "Phone": FieldSpec("string", "Phone", length=40),
    "IsDeleted": _read_only("bool", "Deleted"),
    "CreatedDate": _read_only("datetime", "Created Date"),
}
USER_FIELDS: dict[str, FieldSpec] = {
    "Id": _read_only("reference", "User ID"),
    "Name": _read_only("string", "Full Name"),
    "Username": _read_only("string", "Username"),
    "IsActive": _read_only("bool", "Active"),
}
#: the polymorphic "Name" object behind Who and Owner
NAME_FIELDS: dict[str, FieldSpec] = {
    "Id": _read_only("reference", "ID"),
    "Name": _read_only("string", "Name"),
    "FirstName": _read_only("string", "First Name"),
    "LastName": _read_only("string", "Last Name"),
    "Email": _read_only("string", "Email"),
    "Phone": _read_only("string", "Phone"),
    "Type": _read_only("string", "Type"),
}
QUERYABLE: dict[str, dict[str, FieldSpec]] = {
    "Event": EVENT_FIELDS,
    "Task": TASK_FIELDS,
    "Contact": PERSON_FIELDS,
    "Lead": PERSON_FIELDS,
    "User": USER_FIELDS,
}
#: relationship name -> the id field it follows (Event and Task)
RELATIONSHIPS = {"Who": "WhoId", "Owner": "OwnerId"}
#: standard objects a real org has but this sandbox does not emulate through /sobjects: 501, not 404
NOT_EMULATED_SOBJECTS = frozenset(
    {
        "Account", "Contact", "Lead", "User", "Opportunity", "Case", "Campaign", "Note", "ContentNote",
        "ContentVersion", "Attachment", "EventRelation", "EventWhoRelation", "TaskRelation", "RecordType",
        "Calendar", "FeedItem", "Organization", "Group",
    }
)  # fmt: skip
QUERY_BATCH = 2000  # records per query page, as the REST API answers by default

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
# SOQL: the common subset - SELECT fields (relationship fields such as Who.Name too) or COUNT(),
# FROM one object, WHERE with AND / OR / NOT and parentheses, =, !=, <, <=, >, >=, LIKE, IN,
# NOT IN, date literals (TODAY, LAST_N_DAYS:n, ...), ORDER BY, LIMIT and OFFSET.

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>)|(?P<comma>,)"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<colon>:)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<bad>\S))"
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_LIT_PERCENT, _LIT_UNDERSCORE = "\x01", "\x02"

#: date literals without a number, and those that take one (``LAST_N_DAYS:7``)
DATE_LITERALS = frozenset(
    {
        "YESTERDAY", "TODAY", "TOMORROW", "LAST_WEEK", "THIS_WEEK", "NEXT_WEEK", "LAST_MONTH",
        "THIS_MONTH", "NEXT_MONTH", "LAST_90_DAYS", "NEXT_90_DAYS", "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR",
    }
)  # fmt: skip
DATE_LITERALS_N = frozenset(
    {"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "LAST_N_WEEKS", "NEXT_N_WEEKS", "LAST_N_MONTHS", "NEXT_N_MONTHS"}
)


class _SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class _Cond:
    field: str
    op: str  # =, !=, <, <=, >, >=, LIKE, IN, NOT IN
    kind: str  # str, dt, date, num, bool, null, range (a date literal), list (IN)
    value: Any


@attrs.frozen
class _Bool:
    op: str  # AND, OR, NOT
    items: tuple[Any, ...]


@attrs.frozen
class _Query:
    sobject: str
    fields: list[str]
    where: _Cond | _Bool | None
    order: list[tuple[str, bool, bool]]  # (field, descending, nulls last)
    limit: int | None
    offset: int | None = None
    count: str | None = None  # "COUNT()" or the field of COUNT(field)


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


def _where_fields(node: _Cond | _Bool | None) -> list[str]:
    if node is None:
        return []
    if isinstance(node, _Cond):
        return [node.field]
    return [f for item in node.items for f in _where_fields(item)]


def _conditions(node: _Cond | _Bool | None) -> list[_Cond]:
    if node is None:
        return []
    if isinstance(node, _Cond):
        return [node]
    return [c for item in node.items for c in _conditions(item)]


def parse_soql(soql: str) -> _Query:
    """Parse the supported SOQL; raises ``_SoqlError`` like the org would."""
    toks = _tokens(soql)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        return toks[i + offset] if i + offset < len(toks) else ("end", "")

    def fail() -> _SoqlError:
        return _SoqlError("MALFORMED_QUERY", f"unexpected token: '{peek()[1] or '<EOF>'}'")

    def is_word(*words: str, offset: int = 0) -> bool:
        kind, text = peek(offset)
        return kind == "word" and text.upper() in words

    def take(kind: str) -> str:
        nonlocal i
        if peek()[0] != kind:
            raise fail()
        i += 1
        return toks[i - 1][1]

    def take_word(*words: str) -> str:
        if words and not is_word(*words):
            raise fail()
        return take("word")

    def literal() -> tuple[str, Any]:
        nonlocal i
        vkind, vtext = peek()
        i += 1
        if vkind == "str":
            return "str", _unquote_soql(vtext)
        if vkind == "dt":
            parsed = _parse_datetime(vtext)
            if parsed is None:
                raise _SoqlError("MALFORMED_QUERY", f"line 1: invalid date-time literal {vtext}")
            return "dt", parsed
        if vkind == "date":
            try:
                return "date", _dt.date.fromisoformat(vtext)
            except ValueError:
                raise _SoqlError("MALFORMED_QUERY", f"line 1: invalid date literal {vtext}") from None
        if vkind == "num":
            return "num", float(vtext)
        if vkind == "word" and vtext.lower() in ("true", "false"):
            return "bool", vtext.lower() == "true"
        if vkind == "word" and vtext.lower() == "null":
            return "null", None
        if vkind == "word" and vtext.upper() in DATE_LITERALS:
            return "range", (vtext.upper(), 0)
        if vkind == "word" and vtext.upper() in DATE_LITERALS_N:
            take("colon")
            number = take("num")
            if not number.isdigit():
                raise _SoqlError("MALFORMED_QUERY", f"invalid integer for {vtext.upper()}: {number}")
            return "range", (vtext.upper(), int(number))
        i -= 1
        raise fail()

    def condition() -> _Cond:
        nonlocal i
        field = take_word()
        if is_word("NOT") and is_word("IN", offset=1):
            i += 2
            op = "NOT IN"
        elif is_word("IN", "LIKE"):
            op = take_word().upper()
        elif peek()[0] == "op":
            op = take("op")
        else:
            raise fail()
        if op in ("IN", "NOT IN"):
            take("lp")
            values = [literal()]
            while peek()[0] == "comma":
                i += 1
                values.append(literal())
            take("rp")
            return _Cond(field, op, "list", tuple(values))
        kind, value = literal()
        return _Cond(field, op, kind, value)

    def unary() -> _Cond | _Bool:
        nonlocal i
        if is_word("NOT") and not is_word("IN", offset=1):
            i += 1
            return _Bool("NOT", (unary(),))
        if peek()[0] == "lp":
            i += 1
            inner = expression()
            take("rp")
            return inner
        return condition()

    def expression() -> _Cond | _Bool:
        nonlocal i
        items = [unary()]
        joiner: str | None = None
        while is_word("AND", "OR"):
            word = peek()[1].upper()
            if joiner is not None and word != joiner:
                # SOQL needs parentheses to mix AND and OR
                raise fail()
            joiner = word
            i += 1
            items.append(unary())
        return items[0] if joiner is None else _Bool(joiner, tuple(items))

    take_word("SELECT")
    count: str | None = None
    fields: list[str] = []
    if is_word("COUNT") and peek(1)[0] == "lp":
        i += 2
        count = "COUNT()" if peek()[0] == "rp" else take_word()
        take("rp")
    else:
        fields.append(take_word())
        while peek()[0] == "comma":
            i += 1
            fields.append(take_word())
    take_word("FROM")
    sobject = take_word()
    where: _Cond | _Bool | None = None
    order: list[tuple[str, bool, bool]] = []
    limit: int | None = None
    offset: int | None = None
    if is_word("WHERE"):
        i += 1
        where = expression()
    if is_word("ORDER"):
        i += 1
        take_word("BY")
        while True:
            field = take_word()
            descending = False
            if is_word("ASC", "DESC"):
                descending = take_word().upper() == "DESC"
            nulls_last = descending  # Salesforce: nulls first ascending, last descending
            if is_word("NULLS"):
                i += 1
                nulls_last = take_word("FIRST", "LAST").upper() == "LAST"
            order.append((field, descending, nulls_last))
            if peek()[0] != "comma":
                break
            i += 1
    for keyword in ("LIMIT", "OFFSET"):
        if is_word(keyword):
            i += 1
            number = take("num")
            if not number.isdigit():
                raise _SoqlError("MALFORMED_QUERY", f"unexpected token: '{number}'")
            if keyword == "LIMIT":
                limit = int(number)
            else:
                offset = int(number)
    if i != len(toks):
        raise fail()
    if offset is not None and offset > 2000:
        raise _SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is 2000, not {offset}")
    return _Query(sobject, fields, where, order, limit, offset, count)


def _sort_key(value: Any) -> Any:
    """ORDER BY: text ignores case; other values compare as they are."""
    return value.lower() if isinstance(value, str) else value


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


def _month_start(day: _dt.date, months: int) -> _dt.date:
    total = day.year * 12 + day.month - 1 + months
    return _dt.date(total // 12, total % 12 + 1, 1)


def date_literal_range(name: str, n: int, today: _dt.date) -> tuple[_dt.date, _dt.date]:
    """The days a date literal covers, as ``[first, end)`` (the org's zone is UTC here)."""
    day = _dt.timedelta(days=1)
    week = today - _dt.timedelta(days=(today.weekday() + 1) % 7)  # weeks start on Sunday
    month = _month_start(today, 0)
    year = _dt.date(today.year, 1, 1)
    fixed = {
        "YESTERDAY": (today - day, today),
        "TODAY": (today, today + day),
        "TOMORROW": (today + day, today + 2 * day),
        "LAST_WEEK": (week - 7 * day, week),
        "THIS_WEEK": (week, week + 7 * day),
        "NEXT_WEEK": (week + 7 * day, week + 14 * day),
        "LAST_MONTH": (_month_start(today, -1), month),
        "THIS_MONTH": (month, _month_start(today, 1)),
        "NEXT_MONTH": (_month_start(today, 1), _month_start(today, 2)),
        "LAST_90_DAYS": (today - 90 * day, today + day),
        "NEXT_90_DAYS": (today + day, today + 91 * day),
        "THIS_YEAR": (year, _dt.date(today.year + 1, 1, 1)),
        "LAST_YEAR": (_dt.date(today.year - 1, 1, 1), year),
        "NEXT_YEAR": (_dt.date(today.year + 1, 1, 1), _dt.date(today.year + 2, 1, 1)),
    }
    if name in fixed:
        return fixed[name]
    counted = {
        "LAST_N_DAYS": (today - n * day, today + day),
        "NEXT_N_DAYS": (today + day, today + (n + 1) * day),
        "N_DAYS_AGO": (today - n * day, today - (n - 1) * day),
        "LAST_N_WEEKS": (week - 7 * n * day, week),
        "NEXT_N_WEEKS": (week + 7 * day, week + 7 * (n + 1) * day),
        "LAST_N_MONTHS": (_month_start(today, -n), month),
        "NEXT_N_MONTHS": (_month_start(today, 1), _month_start(today, n + 1)),
    }
    return counted[name]


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
        #: open query cursors: locator -> (the serialised records, page size)
        self.cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
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
            Route(
                "GET",
                rf"{ver}/query(?:All)?/(?P<locator>01g[0-9A-Za-z]{{15}})-(?P<offset>\d{{1,7}})/?",
                self._api(self._query_more),
                "query.more",
            ),
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
        self.cursors.clear()
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
        return self._not_emulated(req)

    def _not_emulated(self, req: SandboxRequest, what: str = "") -> SandboxResponse:
        """501: a real org may well serve this, but the sandbox does not (never a "not found")."""
        text = (
            f"Not emulated: the pms-integration sandbox does not implement {req.method} {self.prefix}{req.path}"
            + (f" ({what})" if what else "")
            + ". It emulates the versions list, create/read/update/delete of Event and Task, query and "
            "queryAll (Event, Task, Contact, Lead, User) and the OAuth refresh-token grant."
        )
        return json_response(501, _errors("NOT_EMULATED", text))

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

    def _sobject(self, name: str, req: SandboxRequest | None = None) -> tuple[str, dict[str, FieldSpec]]:
        if name not in SOBJECTS:
            if name in NOT_EMULATED_SOBJECTS and req is not None:
                raise Reply(self._not_emulated(req, f"the sObject {name} is only readable through SOQL here"))
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
        prefix, fields = self._sobject(sobject, req)
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
        _, fields = self._sobject(sobject, req)
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
        _, fields = self._sobject(sobject, req)
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
        self._sobject(params["sobject"], req)
        record = self._record(params["sobject"], params["record_id"])
        record["IsDeleted"] = True
        return SandboxResponse(204)

    def _query_all(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """``queryAll``: like ``query``, but deleted records (the recycle bin) are included."""
        return self._query(req, params, include_deleted=True)

    def _query(self, req: SandboxRequest, params: dict[str, str], *, include_deleted: bool = False) -> SandboxResponse:
        soql = req.arg("q")
        if not soql:
            raise _fail(400, "MALFORMED_QUERY", "A query string must be provided with the q parameter")
        version = params["version"]
        try:
            query = parse_soql(soql)
            sobject = next((name for name in QUERYABLE if name.lower() == query.sobject.lower()), None)
            standard = next((name for name in NOT_EMULATED_SOBJECTS if name.lower() == query.sobject.lower()), None)
            if sobject is None and standard is not None:
                # every real org has it: "no such object" would mislead a caller's code
                raise Reply(self._not_emulated(req, f"SOQL on {standard} is not emulated by the sandbox"))
            if sobject is None:
                raise _SoqlError(
                    "INVALID_TYPE",
                    f"sObject type '{query.sobject}' is not supported. If you are attempting to use a custom "
                    "object, be sure to append the '__c' after the entity name.",
                )
            fields = QUERYABLE[sobject]
            selected = [self._resolve(sobject, fields, name) for name in query.fields]
            resolved = {name: self._resolve(sobject, fields, name) for name in _where_fields(query.where)}
            order = [(self._resolve(sobject, fields, name), desc, last) for name, desc, last in query.order]
            if query.count not in (None, "COUNT()"):
                counted = self._resolve(sobject, fields, query.count)
            for cond in _conditions(query.where):
                self._check_condition(resolved[cond.field][1], cond)
        except _SoqlError as exc:
            raise _fail(400, exc.code, exc.message) from None
        today = _dt.datetime.now(_dt.timezone.utc).date()
        rows = [
            r
            for r in self._rows(sobject, version)
            if (include_deleted or not r.get("IsDeleted"))
            and (query.where is None or self._holds(query.where, r, resolved, today))
        ]
        if query.count == "COUNT()":
            return json_response(200, {"totalSize": len(rows), "done": True, "records": []})
        if query.count is not None:
            number = sum(1 for r in rows if counted[2](r) is not None)
            aggregate = {"attributes": {"type": "AggregateResult"}, "expr0": number}
            return json_response(200, {"totalSize": 1, "done": True, "records": [aggregate]})
        for (_, _, getter), descending, nulls_last in reversed(order):
            present = [r for r in rows if getter(r) is not None]
            missing = [r for r in rows if getter(r) is None]
            present.sort(key=lambda r, g=getter: _sort_key(g(r)), reverse=descending)  # type: ignore[misc]
            rows = present + missing if nulls_last else missing + present
        if query.offset:
            rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        records = [self._shape(r, selected, version) for r in rows]
        return self._page(records, self._batch_size(req), 0, version)

    def _query_more(self, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """The next page of a query (the ``nextRecordsUrl`` of the previous one)."""
        cursor = self.cursors.get(params["locator"])
        offset = int(params["offset"])
        if cursor is None or offset > len(cursor[0]):
            raise _fail(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, batch = cursor
        return self._page(records, batch, offset, params["version"], locator=params["locator"])

    def _page(
        self, records: list[dict[str, Any]], batch: int, offset: int, version: str, *, locator: str | None = None
    ) -> SandboxResponse:
        body: dict[str, Any] = {"totalSize": len(records), "done": True, "records": records[offset : offset + batch]}
        following = offset + batch
        if following < len(records):
            if locator is None:
                locator = "01g" + "".join(secrets.choice(_BASE62) for _ in range(15))
                self.cursors[locator] = (records, batch)
                while len(self.cursors) > 50:  # the org keeps a bounded number of open cursors
                    self.cursors.pop(next(iter(self.cursors)))
            body["done"] = False
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{following}"
        return json_response(200, body)

    @staticmethod
    def _batch_size(req: SandboxRequest) -> int:
        """``Sforce-Query-Options: batchSize=n`` (200 to 2,000; a hint, as in the real API)."""
        options = req.header("Sforce-Query-Options") or ""
        m = re.search(r"batchSize\s*=\s*(\d{1,6})", options)
        if m is None:
            return QUERY_BATCH
        return min(max(int(m.group(1)), 200), QUERY_BATCH)

    def _rows(self, sobject: str, version: str) -> list[dict[str, Any]]:
        if sobject in SOBJECTS:
            return [r for r in self.records.values() if r["attributes"]["type"] == sobject]
        if sobject == "User":
            return [self._user(version)]
        return [self._person(c, version) for c in self.contacts.values() if c["type"] == sobject]

    def _person(self, contact: dict[str, Any], version: str) -> dict[str, Any]:
        name = str(contact["Name"])
        first, _, last = name.partition(" ")
        kind = contact["type"]
        return {
            "Id": contact["Id"],
            "Name": name,
            "FirstName": first if last else None,
            "LastName": last or first,
            "Email": contact.get("Email"),
            "Phone": contact.get("Phone"),
            "IsDeleted": False,
            "CreatedDate": None,
            "Type": kind,
            "attributes": {"type": kind, "url": f"/services/data/v{version}/sobjects/{kind}/{contact['Id']}"},
        }

    def _user(self, version: str) -> dict[str, Any]:
        return {
            "Id": self.owner_id,
            "Name": "Sandbox Receptionist",
            "FirstName": "Sandbox",
            "LastName": "Receptionist",
            "Email": "receptionist@sandbox.invalid",
            "Phone": None,
            "Username": "receptionist@sandbox.invalid",
            "IsActive": True,
            "Type": "User",
            "attributes": {"type": "User", "url": f"/services/data/v{version}/sobjects/User/{self.owner_id}"},
        }

    def _related(self, relationship: str, record: dict[str, Any], version: str) -> dict[str, Any] | None:
        target = record.get(RELATIONSHIPS[relationship])
        if not isinstance(target, str):
            return None
        if _id15(target) == _id15(self.owner_id):
            return self._user(version)
        contact = next((c for c in self.contacts.values() if _id15(c["Id"]) == _id15(target)), None)
        return None if contact is None else self._person(contact, version)

    def _resolve(
        self, sobject: str, fields: dict[str, FieldSpec], name: str
    ) -> tuple[str, FieldSpec, Callable[[dict[str, Any]], Any]]:
        """A field path's canonical spelling, spec and value getter (names ignore case, as in SOQL)."""
        head, dot, rest = name.partition(".")
        if dot:
            relationship = next((r for r in RELATIONSHIPS if r.lower() == head.lower()), None)
            if relationship is None or sobject not in SOBJECTS or "." in rest:
                raise _SoqlError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{head}' in field path. If you are attempting to use a "
                    "custom relationship, be sure to append the '__r' after the custom relationship name.",
                )
            sub = next((f for f in NAME_FIELDS if f.lower() == rest.lower()), None)
            if sub is None:
                raise _SoqlError("INVALID_FIELD", f"No such column '{rest}' on entity 'Name'.")
            version = self.api_version

            def related(record: dict[str, Any]) -> Any:
                row = self._related(relationship, record, version)
                return None if row is None else row.get(sub)

            return f"{relationship}.{sub}", NAME_FIELDS[sub], related
        canonical = next((f for f in fields if f.lower() == name.lower()), None)
        if canonical is None:
            raise _SoqlError(
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom field, "
                "be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        return canonical, fields[canonical], lambda record: record.get(canonical)

    def _shape(
        self,
        row: dict[str, Any],
        selected: list[tuple[str, FieldSpec, Callable[[dict[str, Any]], Any]]],
        version: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": dict(row["attributes"])}
        for name, _, getter in selected:
            relationship, dot, sub = name.partition(".")
            if not dot:
                out[name] = _wire(getter(row))
                continue
            related = self._related(relationship, row, version)
            if related is None:
                out[relationship] = None
                continue
            holder = out.get(relationship) or {"attributes": {"type": "Name", "url": related["attributes"]["url"]}}
            holder[sub] = _wire(related.get(sub))
            out[relationship] = holder
        return out

    def _check_condition(self, spec: FieldSpec, cond: _Cond) -> None:
        if not spec.filterable:
            raise _SoqlError("INVALID_FIELD", f"field '{cond.field}' can not be filtered in a query call")
        values = cond.value if cond.kind == "list" else ((cond.kind, cond.value),)
        for kind, value in values:
            self._check_value(spec, cond.field, cond.op, kind, value)

    def _check_value(self, spec: FieldSpec, field: str, op: str, kind: str, value: Any) -> None:
        if kind == "null":
            if op not in ("=", "!=", "IN", "NOT IN"):
                raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on null for {field}")
            return
        expected = {"datetime": "dt", "date": "date", "int": "num", "bool": "bool"}.get(spec.kind, "str")
        if kind == "range":
            if expected not in ("dt", "date") or op in ("LIKE", "IN", "NOT IN"):
                raise _SoqlError(
                    "INVALID_FIELD", f"value of filter criterion for field '{field}' must be of the field's type"
                )
            return
        if kind != expected:
            if expected in ("dt", "date") and kind == "str":
                type_name = "dateTime" if expected == "dt" else "date"
                raise _SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{field}' must be of type {type_name} "
                    "and should not be enclosed in quotes",
                )
            raise _SoqlError(
                "INVALID_FIELD", f"value of filter criterion for field '{field}' must be of the field's type"
            )
        if op == "LIKE" and expected != "str":
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{field}': LIKE")
        if spec.kind == "reference" and op != "LIKE" and not _valid_id(_plain(value)):
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {_plain(value)}")

    def _holds(
        self,
        node: _Cond | _Bool,
        record: dict[str, Any],
        resolved: dict[str, tuple[str, FieldSpec, Callable[[dict[str, Any]], Any]]],
        today: _dt.date,
    ) -> bool:
        if isinstance(node, _Bool):
            if node.op == "NOT":
                return not self._holds(node.items[0], record, resolved, today)
            results = (self._holds(item, record, resolved, today) for item in node.items)
            return all(results) if node.op == "AND" else any(results)
        _, spec, getter = resolved[node.field]
        actual = getter(record)
        if node.kind == "list":
            found = any(self._matches(spec, "=", kind, value, actual, today) for kind, value in node.value)
            return found if node.op == "IN" else not found
        return self._matches(spec, node.op, node.kind, node.value, actual, today)

    @staticmethod
    def _matches(spec: FieldSpec, op: str, kind: str, value: Any, actual: Any, today: _dt.date) -> bool:
        if kind == "null":
            return (actual is None) == (op == "=")
        if op == "LIKE":
            return isinstance(actual, str) and bool(_like(value).fullmatch(actual))
        if kind == "range":
            first, end = date_literal_range(value[0], value[1], today)
            if actual is None:
                return op == "!="
            low: Any = first
            high: Any = end
            if spec.kind == "datetime":
                low = _dt.datetime(first.year, first.month, first.day, tzinfo=_dt.timezone.utc)
                high = _dt.datetime(end.year, end.month, end.day, tzinfo=_dt.timezone.utc)
            inside = bool(low <= actual < high)
            return {
                "=": inside,
                "!=": not inside,
                "<": bool(actual < low),
                "<=": bool(actual < high),
                ">": bool(actual >= high),
                ">=": bool(actual >= low),
            }[op]
        if kind == "str":
            text = _plain(value)
            if spec.kind == "reference":
                return _compare(op, _id15(actual) if actual else None, _id15(text))
            # SOQL text comparisons ignore case.
            return _compare(op, actual.lower() if isinstance(actual, str) else None, text.lower())
        return _compare(op, actual, value)

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
