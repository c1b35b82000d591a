"""HubSpot's scheduling reads: busy time (the calendar owner's meetings), patients (contacts) and
a patient's appointments (contacts -> meetings -> deals through associations).

Every request here is a read: retried like a GET, bounded by the deadline, and e-mail and phone
only ever travel in request bodies. What is sent and why: ``docs/providers/hubspot.md``,
"Scheduling reads".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._http import STALE_SLACK, HttpResponse, acquire_within_deadline
from .._ratelimit import Limiter
from .._retry import current_deadline
from ..errors import ConfigurationError, PMSError, UnexpectedResponseError
from ..models import Appointment, AppointmentQuery, AppointmentRequest, PatientQuery, PatientRecord
from ..scheduling import Busy, zone_named
from . import hubspot_wire as wire
from ._base import text

if TYPE_CHECKING:
    from .hubspot import HubSpotAdapter

__all__ = ["booked_deal", "busy_times", "find_appointments", "find_patients", "named_busy", "practice_zone"]

#: Results per search page (HubSpot allows 200) and per batch read (HubSpot allows 100).
PAGE_SIZE = 200
BATCH_SIZE = 100
#: Pages one read follows before it gives up with an error (HubSpot stops at 10,000 results).
MAX_PAGES = 50
#: A returning patient's newest deals a booking reads for its reference (search lags; these do not).
NEWEST_DEALS = 10
#: Contacts one patient look-up returns (a phone shared by a family), oldest first.
MAX_PATIENTS = 20
BUSY_PROPERTIES = ["hs_meeting_start_time", "hs_meeting_end_time", "hs_meeting_outcome", "hs_meeting_body"]
#: HubSpot's search endpoints take 5 requests a second per account, whatever the app's limit.
SEARCHES_PER_SECOND = 5


def practice_zone(adapter: HubSpotAdapter) -> _dt.tzinfo:
    zone = zone_named(adapter.settings.timezone)
    if zone is None:
        raise ConfigurationError(
            "HubSpot free slots need the practice's time zone (opening hours are local times): set "
            "PMS_HUBSPOT_TIMEZONE, e.g. America/New_York, and call reload().",
            missing=("PMS_HUBSPOT_TIMEZONE",),
        )
    return zone


def search_limiter(adapter: HubSpotAdapter) -> Limiter | None:
    """Paces searches to HubSpot's search limit: every booking searches once (the conflict check),
    so a burst of bookings would otherwise meet 429s. The limit is the account's, so it is a
    budget of its own in the state store, ``budget:hubspot:<account>:search``, like the general
    one: every client of this process on the account (and clock) shares it with a memory store,
    every process with SQLite or Redis (``Runtime.budget``). Off, like the general client-side
    limit, with ``PMS_HUBSPOT_RATE_LIMIT=off``."""
    if adapter.settings.rate_limit is None:
        return None
    return adapter.runtime.budget(
        f"budget:hubspot:{adapter.account}:search",
        SEARCHES_PER_SECOND,
        1.0,
        stale=adapter.transport.timeout + STALE_SLACK,
    )


def send_search(adapter: HubSpotAdapter, path: str, body: Mapping[str, Any], operation: str) -> HttpResponse:
    """One search request (a read: retried, e-mail and phone in the body), inside the search limit."""
    limiter = adapter.search_limiter
    slot = (
        None
        if limiter is None
        else acquire_within_deadline(limiter, "HubSpot's search limit (5 a second)", adapter.provider, operation)
    )
    try:
        return adapter.transport.request("POST", path, operation=operation, json=body, idempotent=True)
    finally:
        if limiter is not None and slot is not None:
            limiter.release(slot)


def _millis(value: _dt.datetime) -> str:
    return str(int(value.timestamp() * 1000))


def _filter(name: str, operator: str, value: str) -> dict[str, str]:
    return {"propertyName": name, "operator": operator, "value": value}


def search(
    adapter: HubSpotAdapter,
    object_type: str,
    groups: list[dict[str, Any]],
    properties: list[str],
    operation: str,
    *,
    sorts: list[str],
    most: int | None = None,
    page_size: int | None = None,
    too_many: str = "ask for a shorter window",
) -> Iterator[dict[str, Any]]:
    """Every result of a CRM search, following ``paging.next.after`` (one request per page).

    Stops quietly after ``most`` results; otherwise a search with more results than one call
    reads (:data:`MAX_PAGES` pages of :data:`PAGE_SIZE`: HubSpot's own paging cap), or than the deadline leaves time for, fails
    rather than answer with a part (free slots from half the busy time would offer taken slots;
    a look-up that missed a page would say "not found" and lead to a duplicate). ``too_many``
    ends that error's message: what the caller should make of it."""
    path, after, read, yielded = adapter.paths.search(object_type), "0", 0, 0
    body = {"filterGroups": groups, "properties": properties, "sorts": sorts, "limit": page_size or PAGE_SIZE}
    while True:
        resp = send_search(adapter, path, {**body, "after": after}, operation)
        data = adapter.json_object(resp, operation, "the search answer")
        results = data.get("results")
        if not isinstance(results, list):
            raise adapter.unexpected(operation, "a search response without results")
        for record in results:
            if isinstance(record, dict) and wire.ID.fullmatch(str(record.get("id", ""))):
                yield record
                yielded += 1
                if most is not None and yielded >= most:
                    return
        read += len(results)
        paging = data.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        cursor = following.get("after") if isinstance(following, dict) else None
        if not isinstance(cursor, str) or not cursor or not results:
            return
        deadline = current_deadline()
        if read >= MAX_PAGES * PAGE_SIZE or (deadline is not None and deadline.remaining() < adapter.settings.timeout):
            raise UnexpectedResponseError(
                f"HubSpot's {object_type} search has more results than one call reads ({read} read within "
                f"the limits); {too_many}",
                provider=adapter.provider.value,
                operation=operation,
            )
        after = cursor


# -- busy time and the conflict check --------------------------------------------------------


def busy_times(adapter: HubSpotAdapter, start: _dt.datetime, end: _dt.datetime) -> list[Busy]:
    """Meetings overlapping ``start``-``end`` (the owner's, when ``PMS_HUBSPOT_OWNER_ID`` is set),
    not cancelled. HubSpot does not say whether ``NEQ`` matches a meeting without an outcome (busy
    time all the same), so a second filter group asks for those explicitly; the outcome is checked
    again here."""
    window = [
        _filter("hs_meeting_start_time", "LT", _millis(end)),
        _filter("hs_meeting_end_time", "GT", _millis(start)),
    ]
    if adapter.settings.owner_id:
        window.append(_filter("hubspot_owner_id", "EQ", adapter.settings.owner_id))
    groups = [
        {"filters": [*window, _filter("hs_meeting_outcome", "NEQ", "CANCELED")]},
        {"filters": [*window, {"propertyName": "hs_meeting_outcome", "operator": "NOT_HAS_PROPERTY"}]},
    ]
    found = []
    for record in search(adapter, "meetings", groups, BUSY_PROPERTIES, "busy_times", sorts=["hs_meeting_start_time"]):
        values = wire.props(record)
        begins = wire.read_time(values, "hs_meeting_start_time")
        ends = wire.read_time(values, "hs_meeting_end_time")
        if begins is None or ends is None or str(values.get("hs_meeting_outcome") or "").upper() == "CANCELED":
            continue
        body = values.get("hs_meeting_body")
        reference = wire.BODY_REFERENCE.search(body) if isinstance(body, str) else None
        found.append(Busy(begins, ends, str(record["id"]), reference.group(1) if reference else None))
    return found


def named_busy(adapter: HubSpotAdapter, busy: Busy) -> Busy:
    """The clash with its booking id (``<dealId>:<meetingId>``) when its meeting has a deal, for
    the ``ConflictError`` message (one association read, made only when a slot is taken)."""
    meeting_id = busy.appointment_id
    if meeting_id is None or ":" in meeting_id:
        return busy
    try:
        deals = associated(adapter, "meetings", "deals", [meeting_id], "book").get(meeting_id)
    except PMSError:  # the slot is taken either way; the message names the meeting alone
        return busy
    return attrs.evolve(busy, appointment_id=f"{deals[0]}:{meeting_id}") if deals else busy


# -- patients ---------------------------------------------------------------------------------


def _national(phone: str) -> str | None:
    """The number without its country code, as HubSpot's calculated phone properties hold it
    (North American numbers only: elsewhere the country code's length is not known here)."""
    digits = phone.lstrip("+")
    return digits[1:] if phone.startswith("+1") and len(digits) == 11 else None


def patient_filters(query: PatientQuery) -> list[dict[str, Any]]:
    """OR-ed filter groups: the e-mail, and the phone as stored and as HubSpot's calculated
    search properties hold it (HubSpot: search phones without the country code)."""
    groups: list[list[dict[str, str]]] = []
    if query.email:
        groups.append([_filter("email", "EQ", query.email)])
    if query.phone:
        groups += [[_filter("phone", "EQ", query.phone)], [_filter("mobilephone", "EQ", query.phone)]]
        national = _national(query.phone)
        if national:
            groups.append([_filter("hs_searchable_calculated_phone_number", "EQ", national)])
            groups.append([_filter("hs_searchable_calculated_mobile_number", "EQ", national)])
    return [{"filters": g} for g in groups]


def find_patients(adapter: HubSpotAdapter, query: PatientQuery, operation: str = "find_patient") -> list[PatientRecord]:
    records = search(
        adapter, "contacts", patient_filters(query), wire.CONTACT_PROPERTIES, operation,
        sorts=["hs_object_id"], most=MAX_PATIENTS,
    )  # fmt: skip
    out = []
    for record in records:
        values = wire.props(record)
        name = " ".join(n for n in (text(values.get("firstname")), text(values.get("lastname"))) if n)
        phone = text(values.get("phone")) or text(values.get("mobilephone"))
        out.append(
            PatientRecord(
                adapter.provider, str(record["id"]), name or None, text(values.get("email")), phone, raw=record
            )
        )
    return out


# -- a patient's appointments -----------------------------------------------------------------


def associated(
    adapter: HubSpotAdapter, from_type: str, to_type: str, ids: list[str], operation: str
) -> dict[str, list[str]]:
    """Each record's associated ``to_type`` ids, by the v4 batch read (ids in the body), following
    each record's ``paging.next.after``."""
    path = adapter.paths.association_batch_read(from_type, to_type)
    found: dict[str, list[str]] = {i: [] for i in ids}
    pending: list[dict[str, str]] = [{"id": i} for i in ids]
    pages = 0
    while pending:
        chunk, pending = pending[:BATCH_SIZE], pending[BATCH_SIZE:]
        resp = adapter.transport.request("POST", path, operation=operation, json={"inputs": chunk}, idempotent=True)
        results = adapter.json_object(resp, operation, "the associations answer").get("results")
        for result in results if isinstance(results, list) else []:
            source = result.get("from") if isinstance(result, dict) else None
            from_id = str(source.get("id")) if isinstance(source, dict) else ""
            if from_id not in found:
                continue
            for item in result.get("to") or []:
                to_id = str(item.get("toObjectId")) if isinstance(item, dict) else ""
                if wire.ID.fullmatch(to_id) and to_id not in found[from_id]:
                    found[from_id].append(to_id)
            paging = result.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            after = following.get("after") if isinstance(following, dict) else None
            if isinstance(after, str) and after:
                pending.append({"id": from_id, "after": after})
        pages += 1
        if pending and pages >= MAX_PAGES:
            raise UnexpectedResponseError(
                f"HubSpot lists more {to_type} for these {from_type} than one call reads ({pages} pages)",
                provider=adapter.provider.value,
                operation=operation,
            )
    return found


def read_meetings(adapter: HubSpotAdapter, ids: list[str], operation: str) -> list[dict[str, Any]]:
    """The meetings by id (a batch read, consistent unlike search); deleted ones are left out."""
    path, out = adapter.paths.batch_read("meetings"), []
    for at in range(0, len(ids), BATCH_SIZE):
        inputs = [{"id": i} for i in ids[at : at + BATCH_SIZE]]
        body = {"inputs": inputs, "properties": wire.MEETING_PROPERTIES, "propertiesWithHistory": []}
        resp = adapter.transport.request("POST", path, operation=operation, json=body, idempotent=True)
        results = adapter.json_object(resp, operation, "the meetings read").get("results")
        out += [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
    return out


def _in_window(record: Mapping[str, Any], start: _dt.datetime, end: _dt.datetime, cancelled: bool) -> bool:
    values = wire.props(record)
    begins = wire.read_time(values, "hs_meeting_start_time", "hs_timestamp")
    ends = wire.read_time(values, "hs_meeting_end_time") or begins
    if begins is None or ends is None or not (begins < end and start < ends):
        return False
    return cancelled or str(values.get("hs_meeting_outcome") or "").upper() != "CANCELED"


def find_appointments(adapter: HubSpotAdapter, query: AppointmentQuery) -> list[Appointment]:
    """By reference: the deal, then its meetings. By e-mail or phone: the contacts, their meetings
    (associations), the meetings (a batch read), and the meetings' deals (associations): only a
    meeting with a deal is a booking whose id works with update and cancel."""
    operation = "find_appointments"
    start, end = query.window()
    if query.reference is not None:
        pairs = _by_reference(adapter, query.reference, operation)
    else:
        patients = find_patients(adapter, PatientQuery(email=query.email, phone=query.phone), operation)
        contact_meetings = associated(adapter, "contacts", "meetings", [p.id for p in patients], operation)
        meeting_ids = list(dict.fromkeys(m for ids in contact_meetings.values() for m in ids))
        pairs = [(None, m) for m in read_meetings(adapter, meeting_ids, operation)]
    pairs = [(d, m) for d, m in pairs if _in_window(m, start, end, query.include_cancelled)]
    missing = [str(m["id"]) for d, m in pairs if d is None]
    deals = associated(adapter, "meetings", "deals", missing, operation) if missing else {}
    found = []
    for deal_id, meeting in pairs:
        deal_id = deal_id or next(iter(deals.get(str(meeting["id"])) or []), None)
        if deal_id is not None:
            found.append(adapter._appointment(f"{deal_id}:{meeting['id']}", meeting, operation))
    return sorted(found, key=lambda a: (a.start, a.id))


def _by_reference(adapter: HubSpotAdapter, reference: str, operation: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The booking's deal (a consistent read by the unique property when one is configured, else
    a search of deal names), then those of its meetings whose body carries the reference."""
    prop = adapter.settings.reference_property
    if prop is not None:
        params = {"idProperty": prop, "properties": "dealname", "associations": "meetings"}
        path = adapter.paths.objects("deals", reference)
        resp = adapter.transport.request("GET", path, operation=operation, params=params, expect=(404,))
        deal = None if resp.status == 404 else adapter.json_object(resp, operation, "the deal")
    else:
        kind = wire.DEALS._replace(operation=operation)
        deal = adapter._search_marked(kind, wire.search_filters("dealname", reference), f"[{reference}]", settle=False)
        if deal is not None:
            path = adapter.paths.objects("deals", adapter._id(deal, operation, "deal"))
            resp = adapter.transport.request("GET", path, operation=operation, params={"associations": "meetings"})
            deal = adapter.json_object(resp, operation, "the deal")
    if deal is None:
        return []
    deal_id = adapter._id(deal, operation, "deal")
    marker = f"Booking reference: [{reference}]"
    meetings = read_meetings(adapter, wire.associated_ids(deal, wire.MEETINGS.association_keys), operation)
    return [(deal_id, m) for m in meetings if marker in str(wire.props(m).get("hs_meeting_body") or "")]


def booked_deal(adapter: HubSpotAdapter, contact_id: str, request: AppointmentRequest) -> dict[str, Any] | None:
    """This booking's live deal among the contact's, read consistently: the contact's deal
    associations (v4), then one batch read of its newest deals. The conflict check's search lags
    writes (seconds on HubSpot), so a retry moments after a booking whose answer was lost would
    not see it there; this does. One request when the contact has no deals, two otherwise. Only
    the newest :data:`NEWEST_DEALS` are read: a retry within the lag finds its deal among them,
    and a later one is seen by the conflict check's search."""
    ids = associated(adapter, "contacts", "deals", [contact_id], "book").get(contact_id) or []
    newest = sorted(ids, key=int, reverse=True)[:NEWEST_DEALS]
    if not newest:
        return None
    body = {"inputs": [{"id": i} for i in newest], "properties": wire.DEALS.properties, "propertiesWithHistory": []}
    resp = adapter.transport.request(
        "POST", adapter.paths.batch_read("deals"), operation="book", json=body, idempotent=True
    )
    results = adapter.json_object(resp, "book", "the deals read").get("results")
    marker, stage = f"[{request.reference}]", adapter.settings.cancel_stage_id
    hits = [
        r
        for r in (results if isinstance(results, list) else [])
        if isinstance(r, dict)
        and wire.ID.fullmatch(str(r.get("id", "")))
        and marker in str(wire.props(r).get("dealname") or "")
        and wire.props(r).get("dealstage") != stage  # a cancelled booking is not busy time either
        and wire.read_time(wire.props(r), "closedate") == request.start  # same reference, same slot
    ]
    return min(hits, key=lambda r: int(r["id"]), default=None)  # oldest first, as the search look-ups
