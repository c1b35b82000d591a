"""The org's records and the operations on them: thread-safe (one re-entrant lock), no HTTP."""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import secrets
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._core import Store
from .soql import Column, Query, SoqlError, check_condition, conditions, holds, sort_key
from .validation import (
    API_LIMIT,
    BASE62,
    DELETED_WINDOW,
    ID_SHAPE,
    NAME_FIELDS,
    NOT_EMULATED_SOBJECTS,
    PEOPLE,
    QUERYABLE,
    RELATIONSHIPS,
    REPLICATION_ID_LIMIT,
    SOBJECTS,
    UPDATED_WINDOW,
    NotEmulated,
    OrgError,
    id15,
    id_suffix,
    invalid,
    salesforce_id,
    settle_event,
    sobject,
    valid_id,
    wire,
)

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[Org, P], R]) -> Callable[Concatenate[Org, P], R]:
    @functools.wraps(method)
    def run(self: Org, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)

    return run


class OAuthError(Exception):
    """A refused token request: the OAuth ``error`` and ``error_description``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


class Org(Store):
    """An in-memory Salesforce org with one API user (the owner), a Contact and a Lead."""

    def __init__(self) -> None:
        super().__init__()
        self.org_id = salesforce_id("00D")
        self.owner_id = salesforce_id("005")
        self.event_record_type = salesforce_id("012")
        self.client_id = "3MVG9sandbox" + secrets.token_hex(12)
        self.client_secret = secrets.token_hex(16)
        self.refresh_token = _refresh_token()
        self.token = ""  # the valid access token (the sandbox sets it)
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
        for prefix, name, kind in (("003", "Jane Doe", "Contact"), ("00Q", "John Roe", "Lead")):
            record_id = salesforce_id(prefix)
            self.contacts[record_id] = {"Id": record_id, "Name": name, "type": kind}
        self._seeded = {k: dict(v) for k, v in self.contacts.items()}
        #: records per query page when set (tests: paging beyond the first page); else the API's rule
        self.page_size: int | None = None
        #: the org's BusinessHours records (a new org has one default record; here a practice's week)
        self.business_hours: list[dict[str, Any]] = [_default_hours()]
        #: the org's clock (UTC, to the second): stamps SystemModstamp and answers the
        #: replication resources; tests set it to cross minute boundaries and window limits
        self.clock: Callable[[], _dt.datetime] = _utc_now
        #: the delete log getDeleted reads: (id, sObject name, deletedDate), oldest first
        self.delete_log: list[tuple[str, str, _dt.datetime]] = []
        #: the delete log holds nothing older than this (None: the API's 15 days); tests set it
        #: to imitate a purge of the log
        self.delete_log_start: _dt.datetime | None = None
        #: ids getUpdated/getDeleted return at most before EXCEEDED_ID_LIMIT (the API's 600,000)
        self.replication_id_limit = REPLICATION_ID_LIMIT

    @_locked
    def clear(self) -> None:
        """Forget records, cursors, usage and refreshes (people, ids and credentials stay)."""
        self.rotate_refresh_tokens = False
        self.cursors.clear()
        self.records.clear()
        self.contacts = {k: dict(v) for k, v in self._seeded.items()}
        self.page_size = None
        self.business_hours = [_default_hours()]
        self.clock = _utc_now
        self.delete_log = []
        self.delete_log_start = None
        self.replication_id_limit = REPLICATION_ID_LIMIT
        self.api_usage = 0
        self.api_limit = API_LIMIT
        self.token_refreshes = 0

    @_locked
    def snapshot(self) -> dict[str, Any]:
        live = [r for r in self.records.values() if not r["IsDeleted"]]
        return {
            "owner_id": self.owner_id,
            "event_record_type": self.event_record_type,
            "contacts": [{k: wire(v) for k, v in c.items()} for c in self.contacts.values()],
            "bookings": [_public(r) for r in live if r["attributes"]["type"] == "Event"],
            "tasks": [_public(r) for r in live if r["attributes"]["type"] == "Task"],
            "deleted": [r["Id"] for r in self.records.values() if r["IsDeleted"]],
            "api_usage": self.api_usage,
            "token_refreshes": self.token_refreshes,
        }

    # -- sessions and the daily allowance ------------------------------------------------------

    @_locked
    def new_session(self) -> str:
        """Issue a new access token; the previous one stops working."""
        self.token = "00D" + self.org_id[3:15] + "!AQ" + secrets.token_urlsafe(24)
        return self.token

    @_locked
    def refresh(self, client_id: str | None, client_secret: str | None, refresh_token: str | None) -> str | None:
        """The refresh-token grant: a new session; returns the new refresh token when rotating."""
        if client_id != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if client_secret != self.client_secret:
            raise OAuthError("invalid_client", "invalid client credentials")
        if refresh_token != self.refresh_token:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        self.new_session()
        self.token_refreshes += 1
        if not self.rotate_refresh_tokens:
            return None
        self.refresh_token = _refresh_token()
        return self.refresh_token

    @_locked
    def count_call(self) -> None:
        """Count one API call against the daily allowance; refused once it is spent."""
        if self.api_usage >= self.api_limit:
            raise OrgError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1

    # -- records -------------------------------------------------------------------------------

    def _lookup(self, raw_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records.values() if id15(r["Id"]) == id15(raw_id)), None)

    @_locked
    def record(self, raw_id: str) -> dict[str, Any] | None:
        """A record's fields as the org writes them (deleted ones too); None if unknown."""
        found = self._lookup(raw_id)
        return None if found is None else _public(found)

    def exists(self, field: str, value: str) -> bool:
        """Whether a reference field's id points at something the org has."""
        key = id15(value)
        if field == "OwnerId":
            return key == id15(self.owner_id)
        if field == "RecordTypeId":
            return key == id15(self.event_record_type)
        if field == "WhoId":
            return any(id15(c) == key for c in self.contacts)
        return True

    @_locked
    def find(self, name: str, raw_id: str) -> dict[str, Any]:
        """The live record of sObject ``name`` with that id, or the org's refusal."""
        prefix, _ = sobject(name)
        if not ID_SHAPE.fullmatch(raw_id):
            raise OrgError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {raw_id}"
            )
        if not valid_id(raw_id) or not raw_id.startswith(prefix):
            raise OrgError(400, "MALFORMED_ID", f"{name} ID: id value of incorrect type: {raw_id}", ["Id"])
        record = self._lookup(raw_id)
        if record is None or record["attributes"]["type"] != name:
            raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise OrgError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    @_locked
    def create(self, name: str, values: dict[str, Any], version: str) -> str:
        """A new record of sObject ``name`` with the org's defaults; its id."""
        prefix, fields = SOBJECTS[name]
        now = self.now()
        record: dict[str, Any] = dict.fromkeys(fields)
        record.update(
            OwnerId=self.owner_id,
            CreatedById=self.owner_id,
            CreatedDate=now,
            LastModifiedDate=now,
            SystemModstamp=now,
            IsDeleted=False,
        )
        if name == "Event":
            record.update(IsAllDayEvent=False, ShowAs="Busy", IsPrivate=False, IsReminderSet=False)
        else:
            record.update(Status="Not Started", Priority="Normal")
        record.update(values)
        _settle(name, record, values, creating=True)
        record_id = salesforce_id(prefix)
        while any(id15(r) == id15(record_id) for r in self.records):
            record_id = salesforce_id(prefix)
        record["Id"] = record_id
        record["attributes"] = {"type": name, "url": f"/services/data/v{version}/sobjects/{name}/{record_id}"}
        self.records[record_id] = record
        return record_id

    @_locked
    def create_person(self, name: str, values: dict[str, Any]) -> str:
        """A new Contact or Lead (checked by ``coerce_person``); its id."""
        record_id = salesforce_id(PEOPLE[name][0])
        full = " ".join(v for v in (values.get("FirstName"), values.get("LastName")) if v)
        now = self.now()
        self.contacts[record_id] = {**values, "Id": record_id, "Name": full, "type": name, "CreatedDate": now}
        return record_id

    @_locked
    def save(self) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, _dt.datetime]]]:
        """A copy of the records and people, for :meth:`restore` (a rolled-back composite)."""
        return copy.deepcopy(self.records), copy.deepcopy(self.contacts), list(self.delete_log)

    @_locked
    def restore(self, saved: tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, _dt.datetime]]]) -> None:
        self.records, self.contacts = copy.deepcopy(saved[0]), copy.deepcopy(saved[1])
        self.delete_log = list(saved[2])

    @_locked
    def update(self, record: dict[str, Any], values: dict[str, Any]) -> None:
        """Apply checked ``values`` to a record :meth:`find` returned (all or nothing)."""
        candidate = {**record, **values}
        _settle(record["attributes"]["type"], candidate, values, creating=False)
        candidate["LastModifiedDate"] = candidate["SystemModstamp"] = self.now()
        record.update(candidate)

    @_locked
    def delete(self, record: dict[str, Any]) -> None:
        """Move a record :meth:`find` returned to the recycle bin (and into the delete log)."""
        now = self.now()
        record.update(IsDeleted=True, SystemModstamp=now)
        self.delete_log.append((record["Id"], record["attributes"]["type"], now))

    def now(self) -> _dt.datetime:
        """The org's time, in UTC to the second."""
        return self.clock().astimezone(_dt.timezone.utc).replace(microsecond=0)

    # -- replication: getUpdated and getDeleted --------------------------------------------------

    def _replication_window(self, start: _dt.datetime, end: _dt.datetime, earliest: _dt.datetime) -> _dt.datetime:
        """Check a window (seconds already dropped); the latest date it covers."""
        if start >= end:
            raise invalid("INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
        if start < earliest:
            raise invalid(
                "INVALID_REPLICATION_DATE",
                f"startDate {wire(start)} is before the earliest date available, {wire(earliest)}",
            )
        # nothing after the org's current minute is covered yet
        return min(end, _minute(self.now()))

    @_locked
    def updated(self, name: str, start: _dt.datetime, end: _dt.datetime) -> tuple[list[str], _dt.datetime]:
        """Ids of the live records whose SystemModstamp is in [start, end] (both ends included, as
        the SOAP guide's "Polling for Changes" says), and latestDateCovered."""
        start, end = _minute(start), _minute(end)
        covered = self._replication_window(start, end, _minute(self.now()) - UPDATED_WINDOW)
        ids = [
            r["Id"]
            for r in self.records.values()
            if r["attributes"]["type"] == name and not r["IsDeleted"] and start <= r["SystemModstamp"] <= end
        ]
        if len(ids) > self.replication_id_limit:
            raise invalid("EXCEEDED_ID_LIMIT", "record limit reached. Narrow the date range.")
        return ids, covered

    @_locked
    def deleted(
        self, name: str, start: _dt.datetime, end: _dt.datetime
    ) -> tuple[list[tuple[str, _dt.datetime]], _dt.datetime, _dt.datetime]:
        """(id, deletedDate) of the records deleted in [start, end], earliestDateAvailable and
        latestDateCovered."""
        start, end = _minute(start), _minute(end)
        earliest = _minute(self.now()) - DELETED_WINDOW
        if self.delete_log_start is not None:
            earliest = max(earliest, _minute(self.delete_log_start))
        covered = self._replication_window(start, end, earliest)
        found = [(i, when) for i, kind, when in self.delete_log if kind == name and start <= when <= end]
        if len(found) > self.replication_id_limit:
            raise invalid("EXCEEDED_ID_LIMIT", "record limit reached. Narrow the date range.")
        return found, earliest, covered

    # -- queries -------------------------------------------------------------------------------

    @_locked
    def query(self, query: Query, version: str, *, include_deleted: bool) -> list[dict[str, Any]] | int:
        """The records a parsed query selects, shaped as the API returns them; a number for COUNT."""
        name = next((n for n in QUERYABLE if n.lower() == query.sobject.lower()), None)
        if name is None:
            standard = next((n for n in NOT_EMULATED_SOBJECTS if n.lower() == query.sobject.lower()), None)
            if standard is not None:  # every real org has it: "no such object" would mislead a caller
                raise NotEmulated(f"SOQL on {standard} is not emulated by the sandbox")
            raise SoqlError(
                "INVALID_TYPE",
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name.",
            )
        selected = [self._resolve(name, field) for field in query.fields]
        where = {c.field: self._resolve(name, c.field) for c in conditions(query.where)}
        order = [(self._resolve(name, field), desc, last) for field, desc, last in query.order]
        counted = None if query.count in (None, "COUNT()") else self._resolve(name, query.count)
        for cond in conditions(query.where):
            check_condition(where[cond.field][1], cond)
        today = _dt.datetime.now(_dt.timezone.utc).date()
        rows = [
            r
            for r in self._rows(name, version)
            if (include_deleted or not r.get("IsDeleted"))
            and (query.where is None or holds(query.where, r, where, today))
        ]
        if query.count is not None:
            return len(rows) if counted is None else sum(1 for r in rows if counted[2](r) is not None)
        for (_, _, getter), descending, nulls_last in reversed(order):
            present = [r for r in rows if getter(r) is not None]
            missing = [r for r in rows if getter(r) is None]
            present.sort(key=lambda r, g=getter: sort_key(g(r)), reverse=descending)  # type: ignore[misc]
            rows = present + missing if nulls_last else missing + present
        if query.offset:
            rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        return [self._shape(r, selected, version) for r in rows]

    @_locked
    def open_cursor(self, records: list[dict[str, Any]], batch: int) -> str:
        """Keep a result for its next pages; its locator (the org keeps a bounded number)."""
        locator = "01g" + "".join(secrets.choice(BASE62) for _ in range(15))
        self.cursors[locator] = (records, batch)
        while len(self.cursors) > 50:
            self.cursors.pop(next(iter(self.cursors)))
        return locator

    def _rows(self, name: str, version: str) -> list[dict[str, Any]]:
        if name in SOBJECTS:
            return [r for r in self.records.values() if r["attributes"]["type"] == name]
        if name == "User":
            return [self._user(version)]
        if name == "BusinessHours":
            url = f"/services/data/v{version}/sobjects/BusinessHours/"
            return [
                {**h, "IsDeleted": False, "attributes": {"type": name, "url": url + h["Id"]}}
                for h in self.business_hours
            ]
        return [self._person(c, version) for c in self.contacts.values() if c["type"] == name]

    def _person(self, contact: dict[str, Any], version: str) -> dict[str, Any]:
        name = str(contact["Name"])
        first, _, last = name.partition(" ")
        kind = contact["type"]
        return {
            "Id": contact["Id"],
            "Name": name,
            "FirstName": contact.get("FirstName", first if last else None),
            "LastName": contact.get("LastName", last or first),
            "Email": contact.get("Email"),
            "Phone": contact.get("Phone"),
            "Company": contact.get("Company") if kind == "Lead" else None,
            "IsConverted": False if kind == "Lead" else None,
            "IsDeleted": False,
            "CreatedDate": contact.get("CreatedDate"),
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
        if id15(target) == id15(self.owner_id):
            return self._user(version)
        contact = next((c for c in self.contacts.values() if id15(c["Id"]) == id15(target)), None)
        return None if contact is None else self._person(contact, version)

    def _resolve(self, name: str, path: str) -> Column:
        """A field path's canonical spelling, spec and value getter (names ignore case, as in SOQL)."""
        fields = QUERYABLE[name]
        head, dot, rest = path.partition(".")
        if dot:
            relationship = next((r for r in RELATIONSHIPS if r.lower() == head.lower()), None)
            if relationship is None or name not in SOBJECTS or "." in rest:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{head}' in field path. If you are attempting to use a "
                    "custom relationship, be sure to append the '__r' after the custom relationship name.",
                )
            sub = next((f for f in NAME_FIELDS if f.lower() == rest.lower()), None)
            if sub is None:
                raise SoqlError("INVALID_FIELD", f"No such column '{rest}' on entity 'Name'.")

            def related(record: dict[str, Any]) -> Any:
                row = self._related(relationship, record, "")
                return None if row is None else row.get(sub)

            return f"{relationship}.{sub}", NAME_FIELDS[sub], related
        canonical = next((f for f in fields if f.lower() == path.lower()), None)
        if canonical is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{path}' on entity '{name}'. If you are attempting to use a custom field, "
                "be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        return canonical, fields[canonical], lambda record: record.get(canonical)

    def _shape(self, row: dict[str, Any], selected: list[Column], version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": dict(row["attributes"])}
        for path, _, getter in selected:
            relationship, dot, sub = path.partition(".")
            if not dot:
                out[path] = wire(getter(row))
                continue
            related = self._related(relationship, row, version)
            if related is None:
                out[relationship] = None
                continue
            holder = out.get(relationship) or {"attributes": {"type": "Name", "url": related["attributes"]["url"]}}
            holder[sub] = wire(related.get(sub))
            out[relationship] = holder
        return out


def _settle(name: str, record: dict[str, Any], changed: dict[str, Any], *, creating: bool) -> None:
    """The derived fields of a record: an Event's times, a Task's ``IsClosed``."""
    if name == "Event":
        settle_event(record, changed, creating=creating)
    else:
        record["IsClosed"] = record.get("Status") == "Completed"


def _default_hours() -> dict[str, Any]:
    """The seeded default BusinessHours: a dental practice's week in New York, Mon-Fri 08:00-17:00."""
    week = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}
    hours: dict[str, Any] = {
        "Id": "01mHs0000000001" + id_suffix("01mHs0000000001"),
        "Name": "Default",
        "IsActive": True,
        "IsDefault": True,
        "TimeZoneSidKey": "America/New_York",
    }
    for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
        open_ = day in week
        hours[f"{day}StartTime"] = "08:00:00.000Z" if open_ else None
        hours[f"{day}EndTime"] = "17:00:00.000Z" if open_ else None
    return hours


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _minute(moment: _dt.datetime) -> _dt.datetime:
    """``moment`` with its seconds dropped, as the replication resources read a date."""
    return moment.astimezone(_dt.timezone.utc).replace(second=0, microsecond=0)


def _refresh_token() -> str:
    return "5Aep861sandbox" + secrets.token_hex(16)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: wire(v) for k, v in record.items() if k != "attributes"}
