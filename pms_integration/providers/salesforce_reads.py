"""Salesforce scheduling reads, patient linking and the conflict check (mixed into the adapter).

Opening hours come from the org's ``BusinessHours`` (cached ten minutes), busy time from the
owner's Events (SOQL, paged with ``nextRecordsUrl``), patients from Contact (and Lead) by e-mail
or phone. A query that carries an e-mail address or phone number travels in the body of a
Composite API call, never in a URL. Requests and reasons: ``docs/providers/salesforce.md``
("Scheduling reads").
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .._time import UTC, parse_instant, utc_text
from ..config import SalesforceSettings
from ..errors import APIError, ConfigurationError, InvalidRequestError, ServerError
from ..models import (
    Appointment,
    AppointmentQuery,
    AppointmentRequest,
    AppointmentStatus,
    PatientQuery,
    PatientRecord,
)
from ..provider import WRITE_CAPABILITIES, Capability
from ..scheduling import Busy, OpenHours
from . import salesforce as _sf
from ._base import BaseAdapter, text

__all__ = ["SalesforceReads", "BUSINESS_HOURS_TTL", "MAX_PAGES"]

log = logging.getLogger("pms_integration.providers.salesforce")

#: seconds the org's business hours are kept before they are read again
BUSINESS_HOURS_TTL = 600.0
#: pages of one query followed at most (2,000 records each by default)
MAX_PAGES = 50
#: patients a look-up returns at most (per object)
MAX_PATIENTS = 20
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_HOURS_FIELDS = "Id, Name, TimeZoneSidKey, " + ", ".join(f"{d}StartTime, {d}EndTime" for d in _DAYS)
_PERSON_FIELDS = "Id, Name, Email, Phone"
_EVENT_READ = "Id, Subject, Description, StartDateTime, EndDateTime, WhoId, ShowAs"
_END_OF_DAY = _dt.time(23, 59, 59, 999999)


@attrs.frozen
class _Hours:
    """The org's BusinessHours record as the adapter uses it."""

    hours: OpenHours | None
    zone: _dt.tzinfo | None


class SalesforceReads(BaseAdapter):
    """Scheduling reads and the checks before a booking; the adapter class inherits them."""

    capabilities = WRITE_CAPABILITIES | {
        Capability.FREE_SLOTS,
        Capability.FIND_PATIENT,
        Capability.GET_APPOINTMENT,
        Capability.FIND_APPOINTMENTS,
        Capability.CHANGES,  # getUpdated/getDeleted (salesforce_changes); no webhooks
    }
    checks_conflicts = True
    settings: SalesforceSettings
    api: str

    def __init__(self, settings: SalesforceSettings, runtime: Any) -> None:
        super().__init__(settings, runtime)
        self._hours_lock = threading.Lock()
        self._hours: tuple[float, _Hours] | None = None

    # -- the adapter's own hooks (salesforce.py) -------------------------------------------------

    def event_payload(self, request: AppointmentRequest) -> dict[str, Any]:
        raise NotImplementedError

    # -- booking: one read (busy time and the patient), then the create ---------------------------

    def book(self, request: AppointmentRequest) -> Appointment:
        """Check the slot and find the patient in one call, then create the Event (with a new
        Contact or Lead in the same all-or-nothing call when the patient is new)."""
        mine, who = self.prepare(request)
        if mine is not None:
            return mine
        if who is None and self.links_patient(request):
            return self.create_once(
                lambda: self.create_with_patient(request),
                lambda: self.find_booking(request),
                operation="book",
                reference=request.reference,
            )
        linked = (
            request if who is None else attrs.evolve(request, patient=attrs.evolve(request.patient, contact_id=who))
        )
        return self.create_once(
            lambda: self.create_booking(linked),
            lambda: self.find_booking(request),
            operation="book",
            reference=request.reference,
        )

    def links_patient(self, request: AppointmentRequest) -> bool:
        """Whether the booking looks its patient up (linking is on and the caller gave no id)."""
        return self.settings.patient_record != "off" and _sf._who_id(request) is None

    def check_slot_free(self, request: AppointmentRequest) -> Appointment | None:
        return self.prepare(request)[0]

    def prepare(self, request: AppointmentRequest) -> tuple[Appointment | None, str | None]:
        """Before a create: (the earlier booking at this reference, if the slot holds it; the
        patient's Contact/Lead id, if found). ``ConflictError`` SLOT_TAKEN on a clash.

        One composite call: busy time and, when linking, the patient look-up (its e-mail or
        phone in the body). A single query goes the same way, so the check before a create is
        never confused with the look-up after an ambiguous one (``GET /query``).
        """
        check = self.settings.conflict_check
        link = self.links_patient(request)
        queries: dict[str, str] = {}
        if check:
            queries["busy"] = self.busy_soql(request.start, request.end_time)
        if link:
            queries.update(self.patient_soql(request.patient.email, request.patient.phone, booking=True))
        if not queries:
            return None, None
        found = self.composite_query(queries, "book")
        if check:
            mine = self.judge_slot(request, self.to_busy(found["busy"]))
            if mine is not None:
                return mine, None
        who = next((str(r["Id"]) for key in ("contacts", "leads") for r in found.get(key, []) if _valid(r)), None)
        return None, who

    def create_with_patient(self, request: AppointmentRequest) -> Appointment:
        """One all-or-nothing composite: the Contact (or Lead), then the Event whose ``WhoId``
        refers to it. Either both exist afterwards or neither, so a retry never makes a second."""
        kind = "Lead" if self.settings.patient_record == "lead" else "Contact"
        patient = request.patient
        # LastName is required; a patient known only by e-mail or phone gets Salesforce's placeholder
        last = patient.family_name or patient.name or patient.first_name or "[not provided]"
        person: dict[str, Any] = {"LastName": last[:80]}
        if patient.family_name and patient.given_name:
            person["FirstName"] = patient.given_name[:40]
        person.update({k: v for k, v in (("Email", patient.email), ("Phone", patient.phone)) if v})
        if kind == "Lead":
            person["Company"] = "[not provided]"  # required on a Lead; Salesforce's own placeholder
        event = {**self.event_payload(request), "WhoId": "@{patient.id}"}
        body = {
            "allOrNone": True,
            "compositeRequest": [
                {"method": "POST", "url": f"{self.api}/sobjects/{kind}/", "referenceId": "patient", "body": person},
                {"method": "POST", "url": f"{self.api}/sobjects/Event/", "referenceId": "event", "body": event},
            ],
        }
        answers = self.composite(body, "book", creates=True, reference=request.reference)
        created = answers.get("event")
        who = answers.get("patient")
        if not (isinstance(created, Mapping) and _sf.is_salesforce_id(created.get("id"))):
            raise self.unexpected(
                "book", "no Event id in the composite result", outcome_unknown=True, reference=request.reference
            )
        zone = _sf._request_zone(request)
        return Appointment(
            provider=self.provider,
            id=str(created["id"]),
            status=AppointmentStatus.BOOKED,
            start=request.start.astimezone(zone),
            end=request.end_time.astimezone(zone),
            reference=request.reference,
            contact_id=str(who["id"]) if isinstance(who, Mapping) and who.get("id") else None,
            title=event["Subject"],
            raw={"create": dict(created), "patient": dict(who) if isinstance(who, Mapping) else None},
        )

    # -- free slots ----------------------------------------------------------------------------

    def practice_zone(self) -> _dt.tzinfo:
        if self.settings.timezone:
            return ZoneInfo(self.settings.timezone)
        return self.business_hours().zone or UTC

    def open_hours(self) -> OpenHours:
        if self.settings.open_hours is not None:
            return self.settings.open_hours
        hours = self.business_hours().hours
        if hours is None:
            which = f"named {self.settings.business_hours!r}" if self.settings.business_hours else "marked default"
            raise ConfigurationError(
                f"Salesforce has no active BusinessHours record {which}: set PMS_SALESFORCE_OPEN_HOURS "
                "(e.g. 'Mon-Fri 08:00-17:00') or PMS_SALESFORCE_BUSINESS_HOURS to an existing record's name.",
                problems=["PMS_SALESFORCE_BUSINESS_HOURS"],
            )
        return hours

    def business_hours(self) -> _Hours:
        """The org's BusinessHours record (the default, or the one named in configuration),
        read at most once every :data:`BUSINESS_HOURS_TTL` seconds."""
        now = self.runtime.clock()
        cached = self._hours
        if cached is not None and now - cached[0] < BUSINESS_HOURS_TTL:
            return cached[1]
        name = self.settings.business_hours
        which = f"Name = {_sf.soql_string(name)}" if name else "IsDefault = true"
        soql = f"SELECT {_HOURS_FIELDS} FROM BusinessHours WHERE IsActive = true AND {which} LIMIT 1"  # noqa: S608
        rows = self.query_all(soql, "free_slots")
        hours = _read_hours(rows[0]) if rows else _Hours(None, None)
        with self._hours_lock:
            self._hours = (now, hours)
        return hours

    def busy_soql(self, start: _dt.datetime, end: _dt.datetime) -> str:
        """The owner's Events shown as busy or out of office that overlap ``start``-``end``."""
        owner = _sf.soql_string(self.settings.owner_id)
        return (
            f"SELECT Id, Subject, StartDateTime, EndDateTime, ShowAs, WhoId FROM Event WHERE OwnerId = {owner} "  # noqa: S608
            f"AND StartDateTime < {utc_text(end)} AND EndDateTime > {utc_text(start)} "
            "AND ShowAs IN ('Busy', 'OutOfOffice') ORDER BY StartDateTime"
        )

    def busy_times(self, start: _dt.datetime, end: _dt.datetime) -> list[Busy]:
        return self.to_busy(self.query_all(self.busy_soql(start, end), "free_slots"))

    def to_busy(self, rows: list[Mapping[str, Any]]) -> list[Busy]:
        out = []
        for row in rows:
            a, b = parse_instant(row.get("StartDateTime")), parse_instant(row.get("EndDateTime"))
            subject = str(row.get("Subject") or "")
            if a is None or b is None or subject.startswith(_sf.CANCELLED_PREFIX):
                continue  # soft-cancelled: its slot is free again
            reference = _sf._reference_in(subject)
            # an Event for a patient (ours, or one staff made) is a booking; any other is blocked time
            booking = reference is not None or text(row.get("WhoId")) is not None
            out.append(Busy(a, b, text(row.get("Id")) if booking else None, reference))
        return out

    # -- patients and appointments ---------------------------------------------------------------

    def patient_soql(self, email: str | None, phone: str | None, *, booking: bool = False) -> dict[str, str]:
        """Contact (and, in lead mode, Lead) queries by e-mail or phone. A booking matches on the
        e-mail when it has one (family members share phones); a search matches either."""
        tests = [f"Email = {_sf.soql_string(email)}"] if email else []
        if phone and not (booking and email):
            tests.append(f"Phone = {_sf.soql_string(phone)}")
        match = tests[0] if len(tests) == 1 else f"({' OR '.join(tests)})"
        order = f"ORDER BY CreatedDate LIMIT {MAX_PATIENTS}"
        queries = {"contacts": f"SELECT {_PERSON_FIELDS} FROM Contact WHERE {match} {order}"}  # noqa: S608
        if self.settings.patient_record == "lead":
            where = f"IsConverted = false AND {match}"
            queries["leads"] = f"SELECT {_PERSON_FIELDS} FROM Lead WHERE {where} {order}"  # noqa: S608
        return queries

    def find_patients(self, query: PatientQuery) -> list[PatientRecord]:
        found = self.composite_query(self.patient_soql(query.email, query.phone), "find_patient")
        return [
            PatientRecord(
                self.provider,
                str(row["Id"]),
                name=text(row.get("Name")),
                email=text(row.get("Email")),
                phone=text(row.get("Phone")),
                kind=kind,
                raw=dict(row),
            )
            for key, kind in (("contacts", "contact"), ("leads", "lead"))
            for row in found.get(key, [])
            if _valid(row)
        ]

    def find_appointments(self, query: AppointmentQuery) -> list[Appointment]:
        """The owner's Events linked to the patient (``WhoId``) or carrying ``[reference]``, in
        the window; soft-cancelled and deleted ones (``queryAll``) only with ``include_cancelled``."""
        start, end = query.window()
        where = [
            f"OwnerId = {_sf.soql_string(self.settings.owner_id)}",
            f"StartDateTime >= {utc_text(start)}",
            f"StartDateTime < {utc_text(end)}",
        ]
        if query.email or query.phone:
            ids = [p.id for p in self.find_patients(PatientQuery(email=query.email, phone=query.phone))]
            if not ids:
                return []
            where.append(f"WhoId IN ({', '.join(_sf.soql_string(i) for i in ids)})")
        if query.reference:
            where.append(f"Subject LIKE {_sf.soql_like_contains(f'[{query.reference}]')}")
        fields = _EVENT_READ + (", IsDeleted" if query.include_cancelled else "")
        soql = f"SELECT {fields} FROM Event WHERE {' AND '.join(where)} ORDER BY StartDateTime"  # noqa: S608
        resource = "queryAll" if query.include_cancelled else "query"
        zone = ZoneInfo(self.settings.timezone) if self.settings.timezone else None
        out = []
        for row in self.query_all(soql, "find_appointments", resource=resource):
            if not _valid(row):
                continue
            cancelled = row.get("IsDeleted") is True or str(row.get("Subject") or "").startswith(_sf.CANCELLED_PREFIX)
            if cancelled and not query.include_cancelled:
                continue
            status = AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.BOOKED
            out.append(_sf._event(str(row["Id"]), row, status, _sf._zone_of(row, zone), {"read": dict(row)}))
        return out

    # -- the wire: queries (paged) and composite calls ---------------------------------------------

    def query_all(self, soql: str, operation: str, *, resource: str = "query") -> list[Mapping[str, Any]]:
        """Every record of a SOQL query (``GET /query``), following ``nextRecordsUrl``."""
        resp = self.transport.request("GET", f"{self.api}/{resource}/", operation=operation, params={"q": soql})
        return self.follow(self.json_object(resp, operation, "the query result"), operation)

    def follow(self, page: Mapping[str, Any], operation: str) -> list[Mapping[str, Any]]:
        """The records of a query result and of its next pages (at most :data:`MAX_PAGES`)."""
        records: list[Mapping[str, Any]] = []
        for _ in range(MAX_PAGES):
            rows = page.get("records")
            if not isinstance(rows, list):
                raise self.unexpected(operation, "the query result has no records list")
            records += [r for r in rows if isinstance(r, Mapping)]
            following = page.get("nextRecordsUrl")
            if page.get("done") is not False or not isinstance(following, str):
                return records
            if not following.startswith(f"{self.api}/query"):
                raise self.unexpected(operation, "nextRecordsUrl is not a query locator of this API version")
            page = self.json_object(
                self.transport.request("GET", following, operation=operation), operation, "the query page"
            )
        log.warning("salesforce %s: stopped after %d pages of one query", operation, MAX_PAGES)
        return records

    def composite_query(self, queries: Mapping[str, str], operation: str) -> dict[str, list[Mapping[str, Any]]]:
        """Several SOQL queries in one ``POST /composite`` (the SOQL in the body); each one's records."""
        subs = [
            {"method": "GET", "url": f"{self.api}/query/?{urlencode({'q': soql})}", "referenceId": ref}
            for ref, soql in queries.items()
        ]
        answers = self.composite({"allOrNone": False, "compositeRequest": subs}, operation)
        out = {}
        for ref in queries:
            page = answers.get(ref)
            if not isinstance(page, Mapping):
                raise self.unexpected(operation, f"the composite result has no answer for {ref}")
            out[ref] = self.follow(page, operation)
        return out

    def composite(
        self, body: Mapping[str, Any], operation: str, *, creates: bool = False, reference: str | None = None
    ) -> dict[str, Any]:
        """Send a composite call; each subrequest's body by reference id. A failed subrequest
        raises the error it carries (in an all-or-nothing call, nothing was written)."""
        resp = self.transport.request(
            "POST",
            f"{self.api}/composite/",
            operation=operation,
            json=body,
            idempotent=not creates,
            reference=reference,
        )
        result = self.json_object(resp, operation, "the composite result", creates=creates, reference=reference)
        items = result.get("compositeResponse")
        if not isinstance(items, list):
            what = "the composite result has no compositeResponse list"
            raise self.unexpected(operation, what, outcome_unknown=creates, reference=reference)
        answers: dict[str, Any] = {}
        failures = []
        for item in items:
            if not isinstance(item, Mapping):
                continue
            status = item.get("httpStatusCode")
            if isinstance(status, int) and status >= 300:
                failures.append(item)
            answers[str(item.get("referenceId"))] = item.get("body")
        if failures:
            raise self.subrequest_error(failures, operation)
        return answers

    def subrequest_error(self, failures: list[Mapping[str, Any]], operation: str) -> APIError:
        """The error of the subrequest that failed (not the ones halted because of it)."""

        def entry(item: Mapping[str, Any]) -> Mapping[str, Any]:
            body = item.get("body")
            first = body[0] if isinstance(body, list) and body else body
            return first if isinstance(first, Mapping) else {}

        cause = next((f for f in failures if entry(f).get("errorCode") != "PROCESSING_HALTED"), failures[0])
        info, status = entry(cause), int(cause.get("httpStatusCode") or 500)
        code = text(info.get("errorCode"))
        fields = tuple(f for f in info.get("fields") or () if isinstance(f, str))
        fallback = ServerError if status >= 500 else InvalidRequestError if status == 400 else APIError
        cls = _sf._CODE_CLASSES.get(code or "") or fallback
        message = f"Salesforce {operation} failed with HTTP {status}{f' {code}' if code else ''}: {text(info.get('message')) or 'error'}"
        return cls(
            message, status_code=status, code=code, fields=fields, provider=self.provider.value, operation=operation
        )


def _valid(row: Mapping[str, Any]) -> bool:
    return _sf.is_salesforce_id(row.get("Id"))


def _read_hours(row: Mapping[str, Any]) -> _Hours:
    """OpenHours and zone from a BusinessHours record (null times: closed; 00:00-00:00: all day)."""
    days = []
    for day in _DAYS:
        opens, closes = _clock(row.get(f"{day}StartTime")), _clock(row.get(f"{day}EndTime"))
        if closes == _dt.time(0):
            closes = _END_OF_DAY  # midnight closes at the end of the day (00:00-00:00: open all day)
        days.append(((opens, closes),) if opens is not None and closes is not None and closes > opens else ())
    try:
        zone: _dt.tzinfo | None = ZoneInfo(str(row.get("TimeZoneSidKey"))) if row.get("TimeZoneSidKey") else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return _Hours(OpenHours(tuple(days)), zone)


def _clock(value: object) -> _dt.time | None:
    """``08:00:00.000Z`` (how the API writes a time field) as a time; None when unset."""
    if not isinstance(value, str) or len(value) < 5:
        return None
    try:
        return _dt.time(int(value[0:2]), int(value[3:5]))
    except ValueError:
        return None
