"""The org's rules for records: errors, ids, field specs, typed values and consistent Events."""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import string
from collections.abc import Callable
from typing import Any

import attrs

from ..._time import parse_iso

API_LIMIT = 15_000  # a Developer Edition org's rolling 24-hour allocation
#: how far back getUpdated and getDeleted answer (REST API guide, "sObject Get Updated" and
#: "sObject Get Deleted"), and the ids one call may return before EXCEEDED_ID_LIMIT
UPDATED_WINDOW = _dt.timedelta(days=30)
DELETED_WINDOW = _dt.timedelta(days=15)
REPLICATION_ID_LIMIT = 600_000


class OrgError(Exception):
    """An answer the org gives instead of a result: a status and one entry of its error list."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def body(self) -> list[dict[str, Any]]:
        return errors(self.code, self.message, self.fields)


class NotEmulated(OrgError):
    """A resource a real org serves but the sandbox does not: ``501``, never a "not found"."""

    def __init__(self, what: str = "") -> None:
        super().__init__(501, "NOT_EMULATED", what)


def errors(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    """Salesforce's error body: a JSON array of ``{message, errorCode[, fields]}``."""
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return [entry]


def invalid(code: str, message: str, fields: list[str] | None = None) -> OrgError:
    """A ``400`` with ``code``."""
    return OrgError(400, code, message, fields)


# ---------------------------------------------------------------------------------------------
# record ids

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def id_suffix(id15: str) -> str:
    """The 3-character case checksum of a 15-character id."""
    out = ""
    for block in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[block * 5 : block * 5 + 5]) if "A" <= c <= "Z")
        out += _ALPHABET[bits]
    return out


def salesforce_id(prefix: str) -> str:
    """A fresh, realistic 18-character id with the given 3-character key prefix."""
    body = prefix + "Hs" + "".join(secrets.choice(BASE62) for _ in range(10))
    return body + id_suffix(body)


def valid_id(value: str) -> bool:
    return bool(ID_SHAPE.fullmatch(value)) and (len(value) == 15 or value[15:] == id_suffix(value[:15]))


def id15(value: str) -> str:
    """The case-sensitive 15-character form two spellings of one id share."""
    return value[:15]


def canonical_id(value: str) -> str:
    return value[:15] + id_suffix(value[:15])


# ---------------------------------------------------------------------------------------------
# wire values

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?[0-5]\d)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime(text: str) -> _dt.datetime | None:
    """A date-time in one of the shapes the org accepts, in UTC to the second; else None."""
    parsed = parse_iso(text) if _DATETIME.fullmatch(text) else None
    return None if parsed is None else parsed.astimezone(_dt.timezone.utc).replace(microsecond=0)


def wire(value: Any) -> Any:
    """A stored value as the org writes it (``2037-03-09T13:00:00.000+0000``, ``2037-03-09``)."""
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


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
    "SystemModstamp": _read_only("datetime", "System Modstamp"),
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
#: the writable sObjects: name -> (key prefix, fields)
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
#: a Lead also needs a Company (the org refuses a Lead without one)
LEAD_FIELDS: dict[str, FieldSpec] = {
    **PERSON_FIELDS,
    "Company": FieldSpec("string", "Company", length=255),
    "IsConverted": _read_only("bool", "Converted"),
}
#: the people a create through ``/sobjects`` may make: name -> (key prefix, required fields)
PEOPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "Contact": ("003", ("LastName",)),
    "Lead": ("00Q", ("LastName", "Company")),
}
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: the org's opening hours (read-only here, as through the API): times on the wire as ``08:00:00.000Z``
BUSINESS_HOURS_FIELDS: dict[str, FieldSpec] = {
    "Id": _read_only("reference", "Business Hours ID"),
    "Name": _read_only("string", "Business Hours Name"),
    "IsActive": _read_only("bool", "Active"),
    "IsDefault": _read_only("bool", "Default Business Hours"),
    "TimeZoneSidKey": _read_only("picklist", "Time Zone"),
    **{f"{day}{edge}Time": _read_only("time", f"{day} {edge}") for day in _DAY_NAMES for edge in ("Start", "End")},
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
    "Lead": LEAD_FIELDS,
    "User": USER_FIELDS,
    "BusinessHours": BUSINESS_HOURS_FIELDS,
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


def coerce_person(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Check a Contact or Lead create body as the org does (text fields, lengths, required ones)."""
    fields = QUERYABLE[name]
    out: dict[str, Any] = {}
    for field, value in body.items():
        spec = fields.get(field)
        if spec is None:
            raise invalid("INVALID_FIELD", f"No such column '{field}' on sobject of type {name}")
        if not spec.createable:
            raise invalid("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {field}.", [field])
        if value is not None and not isinstance(value, str):
            raise invalid("JSON_PARSER_ERROR", f"Cannot deserialize instance of string from {field}")
        if isinstance(value, str) and spec.length is not None and len(value) > spec.length:
            raise invalid("STRING_TOO_LONG", f"{spec.label}: data value too large (max length={spec.length})", [field])
        if field == "Email" and value and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise invalid("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {value}", ["Email"])
        out[field] = value
    for field in PEOPLE[name][1]:
        if not out.get(field):
            raise _missing(field)
    return out


def sobject(name: str) -> tuple[str, dict[str, FieldSpec]]:
    """The key prefix and fields of a writable sObject, or the org's answer for another name."""
    if name in SOBJECTS:
        return SOBJECTS[name]
    if name in NOT_EMULATED_SOBJECTS:
        raise NotEmulated(f"the sObject {name} is only readable through SOQL here")
    raise OrgError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'")


# ---------------------------------------------------------------------------------------------
# create and update bodies


def coerce(name: str, body: dict[str, Any], *, creating: bool, exists: Callable[[str, str], bool]) -> dict[str, Any]:
    """Check a create/update body of sObject ``name`` field by field, as the org does; typed values.

    ``exists(field, id)`` tells whether a reference points at a record the org has.
    """
    fields = SOBJECTS[name][1]
    if "Id" in body:
        raise invalid("INVALID_FIELD", "The Id field should not be specified in the sobject data.")
    out: dict[str, Any] = {}
    for field, value in body.items():
        spec = fields.get(field)
        if spec is None:
            raise invalid("INVALID_FIELD", f"No such column '{field}' on sobject of type {name}")
        if not (spec.createable if creating else spec.updateable):
            raise invalid(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {field}. Please check the security settings of this field and "
                "verify that it is read/write for your profile or permission set.",
                [field],
            )
        out[field] = _value(field, spec, value, exists)
    return out


def _value(name: str, spec: FieldSpec, value: Any, exists: Callable[[str, str], bool]) -> Any:
    if value is None:
        return None

    def cannot(type_name: str) -> OrgError:
        return invalid(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {type_name} from VALUE_{type(value).__name__.upper()} value "
            f"{str(value)[:60]} or request may be missing a required field",
        )

    if spec.kind == "datetime":
        parsed = parse_datetime(value) if isinstance(value, str) else None
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
        raise invalid(
            "STRING_TOO_LONG", f"{spec.label}: data value too large: {value[:40]}... (max length={spec.length})", [name]
        )
    if spec.restricted and value not in spec.restricted:
        raise invalid(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{spec.label}: bad value for restricted picklist field: {value}",
            [name],
        )
    if spec.kind == "reference":
        if not valid_id(value):
            raise invalid("MALFORMED_ID", f"{spec.label}: id value of incorrect type: {value}", [name])
        if spec.refers_to and not value.startswith(spec.refers_to):
            raise invalid("FIELD_INTEGRITY_EXCEPTION", f"{spec.label}: id value of incorrect type: {value}", [name])
        if not exists(name, value):
            raise invalid("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name])
        return canonical_id(value)
    return value


def _missing(field: str) -> OrgError:
    return invalid("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field}]", [field])


def _integrity(message: str, field: str) -> OrgError:
    return invalid("FIELD_INTEGRITY_EXCEPTION", message, [field])


def settle_event(record: dict[str, Any], changed: dict[str, Any], *, creating: bool) -> None:
    """Keep an Event's start, end and duration consistent, as the org does; raise on contradictions."""
    if record.get("IsAllDayEvent"):
        if record.get("ActivityDate") is None and record.get("StartDateTime") is None:
            raise _missing("ActivityDate")
        return
    start = record.get("StartDateTime")
    if start is None:
        raise _missing("ActivityDateTime")
    end = record.get("EndDateTime")
    duration = record.get("DurationInMinutes")
    if creating:
        if end is None and duration is None:
            raise _missing("EndDateTime")
        if end is not None and duration is not None and start + _dt.timedelta(minutes=duration) != end:
            raise _integrity("End Date Time: Duration and end time don't match", "EndDateTime")
    elif "EndDateTime" not in changed and ("StartDateTime" in changed or "DurationInMinutes" in changed):
        end = None  # a moved start keeps the duration; a new duration moves the end
    if end is None:
        end = start + _dt.timedelta(minutes=int(duration or 0))
    if end < start:
        raise _integrity("End Date Time: End time can't be before start time", "EndDateTime")
    minutes = int((end - start).total_seconds() // 60)
    if minutes > 1440:
        raise _integrity("Duration must be between 0 and 1440 minutes: Duration", "DurationInMinutes")
    record.update(
        EndDateTime=end,
        DurationInMinutes=minutes,
        ActivityDateTime=start,
        ActivityDate=start.date(),
        EndDate=end.date(),
    )
