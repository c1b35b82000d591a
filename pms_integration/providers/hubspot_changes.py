"""HubSpot's changes: the polled feed (CRM search on ``hs_lastmodifieddate``, plus the archived
meetings list for deletions) and the generic ``object.*`` webhook events on meetings.

What is sent and why: ``docs/providers/hubspot.md``, "Changes". A booking's appointment id is
``"<dealId>:<meetingId>"``; a meeting without a deal (time staff blocked, a meeting made in
HubSpot) is reported under its meeting id alone.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._time import UTC, parse_instant
from ..changes import FeedPage, Observed
from ..errors import PMSError, UnexpectedResponseError, ValidationError, WebhookPayloadError
from ..models import Appointment
from . import hubspot_reads as reads
from . import hubspot_wire as wire

if TYPE_CHECKING:
    from .hubspot import HubSpotAdapter

__all__ = ["observe_changes", "observe_webhook"]

log = logging.getLogger("pms_integration.providers.hubspot")

#: How far each poll looks back before the last one: HubSpot's search shows a write "after a few
#: moments" and the two clocks may differ, so a change stamped just before the last poll but
#: indexed after it is still found. Re-read changes are dropped by the core (same version).
LAG_MARGIN = _dt.timedelta(seconds=60)
#: Results per search page (HubSpot allows 200) and HubSpot's cap on the results of one query.
SEARCH_PAGE = 200
SEARCH_CAP = 10_000
#: Results one poll reads at most; past it, the poll returns what it read and the next one
#: continues from there (the position says where).
MAX_PER_POLL = 20_000
#: Records per page of the archived list (HubSpot allows 100) and the pages one poll reads.
LIST_PAGE = 100
MAX_ARCHIVED_PAGES = 200
#: What the feed reads of a meeting: the booking's fields and the change markers.
FEED_PROPERTIES = [*wire.MEETING_PROPERTIES, "hs_lastmodifieddate", "hs_createdate", "hubspot_owner_id"]
MEETING_TYPE_ID = "0-47"
#: The generic events on meetings this library reads (others in a body are ignored).
EVENT_TYPES = ("object.creation", "object.propertyChange", "object.deletion", "object.restore")
OPERATION = "changes"
WEBHOOK_OPERATION = "parse_webhook"


def _ms(value: _dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def _from_ms(value: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(value / 1000, UTC)


def _stamp(record: Mapping[str, Any], prop: str, field: str) -> _dt.datetime | None:
    """A record's time: the property when read, else the record field (``updatedAt``...)."""
    found = wire.read_time(wire.props(record), prop)
    if found is None:
        found = parse_instant(record.get(field), naive_as_utc=True) if isinstance(record.get(field), str) else None
    return found.astimezone(UTC) if found is not None else None


# -- the position ------------------------------------------------------------------------------


def _position(position: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(start, modified_from, archived_from)`` in epoch milliseconds, checked."""
    try:
        values = tuple(int(position[k]) for k in ("start", "modified_from", "archived_from"))
    except (KeyError, TypeError, ValueError):
        raise ValidationError.single(
            "since", "is not a HubSpot change-feed cursor (start a new feed without one)"
        ) from None
    start, modified_from, archived_from = values
    return start, modified_from, archived_from


def observe_changes(adapter: HubSpotAdapter, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
    """The meetings changed (search on ``hs_lastmodifieddate``) and deleted (the archived list,
    by ``archivedAt``) since ``position``; None starts the feed at ``now`` and reads nothing.

    Each poll looks :data:`LAG_MARGIN` further back than the previous one reached, so a change
    the search index showed late is still found; the core drops what it already reported.
    """
    now_ms = _ms(now)
    if position is None:
        return FeedPage((), {"v": 1, "start": now_ms, "modified_from": now_ms, "archived_from": now_ms})
    start, modified_from, archived_from = _position(position)
    next_from = max(now_ms - int(LAG_MARGIN.total_seconds() * 1000), start)
    records, reached = _modified(adapter, modified_from)
    observed = _observe(adapter, records, start, deleted=False)
    # a poll that stopped early (MAX_PER_POLL) continues from the last time it read
    modified_next = next_from if reached is None else reached
    archived = [r for r in _archived(adapter) if (_archived_ms(r) or -1) >= max(archived_from, start)]
    observed += _observe(adapter, archived, start, deleted=True)
    position_out = {"v": 1, "start": start, "modified_from": modified_next, "archived_from": next_from}
    return FeedPage(tuple(observed), position_out)


def _archived_ms(record: Mapping[str, Any]) -> int | None:
    value = record.get("archivedAt")
    stamp = parse_instant(value, naive_as_utc=True) if isinstance(value, str) else None
    return _ms(stamp) if stamp is not None else None


def _modified(adapter: HubSpotAdapter, lower: int) -> tuple[list[dict[str, Any]], int | None]:
    """Every meeting with ``hs_lastmodifieddate >= lower``, oldest change first, and None; or,
    past :data:`MAX_PER_POLL`, those read and the time to continue from."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    total = 0
    while True:
        last: int | None = None
        records, capped = _search_window(adapter, lower)
        for record in records:
            total += 1
            modified = _stamp(record, "hs_lastmodifieddate", "updatedAt")
            stamp = _ms(modified) if modified is not None else lower
            found.setdefault((str(record["id"]), stamp), record)
            last = stamp
        if not capped or last is None:
            return list(found.values()), None  # the window ended before HubSpot's cap
        if last <= lower:
            raise UnexpectedResponseError(
                f"HubSpot lists more than {SEARCH_CAP:,} meetings changed within one millisecond; the "
                "change feed cannot page past them",
                provider=adapter.provider.value,
                operation=OPERATION,
            )
        if total >= MAX_PER_POLL:
            return list(found.values()), last
        lower = last  # HubSpot's cap reached: a new query from the last time read (its ties again)


def _search_window(adapter: HubSpotAdapter, lower: int) -> tuple[list[dict[str, Any]], bool]:
    """One query's results, ascending by ``hs_lastmodifieddate``, and whether HubSpot's cap
    (:data:`SEARCH_CAP` results per query) stopped it before the last page."""
    filters = [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(lower)}]
    if adapter.settings.owner_id:  # the practice's calendar is the owner's meetings
        filters.append({"propertyName": "hubspot_owner_id", "operator": "EQ", "value": adapter.settings.owner_id})
    body = {
        "filterGroups": [{"filters": filters}],
        "properties": FEED_PROPERTIES,
        "sorts": ["hs_lastmodifieddate"],
        "limit": SEARCH_PAGE,
    }
    path, after, read = adapter.paths.search("meetings"), "0", 0
    out: list[dict[str, Any]] = []
    while True:
        resp = reads.send_search(adapter, path, {**body, "after": after}, OPERATION)
        data = adapter.json_object(resp, OPERATION, "the search answer")
        results = data.get("results")
        if not isinstance(results, list):
            raise adapter.unexpected(OPERATION, "a search response without results")
        out += [r for r in results if isinstance(r, dict) and wire.ID.fullmatch(str(r.get("id", "")))]
        read += len(results)
        cursor = _next_after(data)
        if cursor is None or not results:
            return out, False
        if read + SEARCH_PAGE > SEARCH_CAP:
            return out, True
        after = cursor


def _next_after(data: Mapping[str, Any]) -> str | None:
    paging = data.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    cursor = following.get("after") if isinstance(following, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _archived(adapter: HubSpotAdapter) -> list[dict[str, Any]]:
    """Every archived meeting (HubSpot has no filter on ``archivedAt``: the caller filters)."""
    path = adapter.paths.objects("meetings")
    params = {
        "archived": "true",
        "limit": str(LIST_PAGE),
        "properties": ",".join(FEED_PROPERTIES),
        "associations": "deals",
    }
    out: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(MAX_ARCHIVED_PAGES):
        resp = adapter.transport.request(
            "GET", path, operation=OPERATION, params={**params, **({"after": after} if after else {})}
        )
        data = adapter.json_object(resp, OPERATION, "the archived meetings")
        results = data.get("results")
        if not isinstance(results, list):
            raise adapter.unexpected(OPERATION, "an archived list without results")
        out += [r for r in results if isinstance(r, dict) and wire.ID.fullmatch(str(r.get("id", "")))]
        after = _next_after(data)
        if after is None or not results:
            return out
    raise UnexpectedResponseError(
        f"HubSpot lists more than {MAX_ARCHIVED_PAGES * LIST_PAGE:,} deleted meetings; the change feed "
        "reads deletions from that list and cannot read it whole",
        provider=adapter.provider.value,
        operation=OPERATION,
    )


# -- records -> Observed -------------------------------------------------------------------------


def _deal_ids(
    adapter: HubSpotAdapter, records: list[dict[str, Any]], operation: str, *, asked: bool
) -> dict[str, str]:
    """Each meeting's deal: from the records' own ``associations`` when they were read with them
    (``asked``), else by one associations batch read per 100 meetings."""
    if asked:
        found = {str(r["id"]): wire.associated_ids(r, wire.DEALS.association_keys) for r in records}
    else:
        ids = list(dict.fromkeys(str(r["id"]) for r in records))
        found = reads.associated(adapter, "meetings", "deals", ids, operation) if ids else {}
    return {meeting_id: deals[0] for meeting_id, deals in found.items() if deals}


def _deal_by_reference(adapter: HubSpotAdapter, record: Mapping[str, Any], operation: str) -> str | None:
    """A deleted booking's deal, when HubSpot no longer lists the association: the live deal
    whose name carries the meeting's booking reference (one search)."""
    body = wire.props(record).get("hs_meeting_body")
    match = wire.BODY_REFERENCE.search(body) if isinstance(body, str) else None
    if match is None:
        return None
    reference = match.group(1)
    kind = wire.DEALS._replace(operation=operation)
    deal = adapter._search_marked(kind, wire.search_filters("dealname", reference), f"[{reference}]", settle=False)
    return str(deal["id"]) if deal is not None else None


def _appointment(
    adapter: HubSpotAdapter, appointment_id: str, record: Mapping[str, Any], operation: str
) -> Appointment | None:
    try:
        return adapter._appointment(appointment_id, record, operation)
    except PMSError as exc:  # a meeting without a start time: nothing to report about a slot
        log.warning("HubSpot meeting %s skipped by the change feed: %s", record.get("id"), exc.message)
        return None


def _observe(adapter: HubSpotAdapter, records: list[dict[str, Any]], start: int, *, deleted: bool) -> list[Observed]:
    operation = OPERATION
    deals = _deal_ids(adapter, records, operation, asked=deleted)  # the archived list is read with them
    out: list[Observed] = []
    for record in records:
        meeting_id = str(record["id"])
        if deleted:
            archived_ms = _archived_ms(record)
            if archived_ms is None:
                continue
            modified, version = _from_ms(archived_ms), f"archived-{archived_ms}"
        else:
            stamp = _stamp(record, "hs_lastmodifieddate", "updatedAt")
            if stamp is None or _ms(stamp) < start:
                continue  # changed before the feed started
            modified, version = stamp, str(_ms(stamp))
        deal_id = deals.get(meeting_id) or (_deal_by_reference(adapter, record, operation) if deleted else None)
        appointment_id = f"{deal_id}:{meeting_id}" if deal_id else meeting_id
        appointment = _appointment(adapter, appointment_id, record, operation)
        if appointment is None and not deleted:
            continue
        created = _stamp(record, "hs_createdate", "createdAt")
        out.append(Observed(appointment_id, appointment, modified, version, deleted=deleted, created_at=created))
    return out


# -- webhooks ----------------------------------------------------------------------------------


def _unreadable(detail: str) -> WebhookPayloadError:
    log.debug("HubSpot webhook body refused: %s", detail)  # the sender sees only the generic message
    return WebhookPayloadError("The webhook body is not one this library reads.")


def _events(payload: Any) -> list[Mapping[str, Any]]:
    """The meeting events of a body (HubSpot posts a JSON array; one object is read as one event)."""
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise _unreadable("not a JSON array of events")
    events: list[Mapping[str, Any]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("subscriptionType"), str):
            raise _unreadable("an event is not a JSON object with a subscriptionType")
        if item.get("subscriptionType") not in EVENT_TYPES or str(item.get("objectTypeId")) != MEETING_TYPE_ID:
            continue  # another object type or event: not an appointment change
        event_id, object_id, occurred = item.get("eventId"), item.get("objectId"), item.get("occurredAt")
        if (
            not wire.ID.fullmatch(str(object_id))
            or not str(event_id).isdigit()
            or isinstance(occurred, bool)
            or not isinstance(occurred, (int, float))
        ):
            raise _unreadable("a meeting event lacks a numeric eventId, objectId or occurredAt")
        events.append(item)
    return events


def observe_webhook(adapter: HubSpotAdapter, payload: Any) -> list[Observed]:
    """Generic ``object.*`` events on meetings (``objectTypeId`` ``0-47``) as :class:`Observed`:
    one per meeting (its latest event: a move fires one ``propertyChange`` per property), read by
    id for the whole record; ``version`` is that event's ``eventId``, ``modified_at`` the record's
    ``hs_lastmodifieddate`` (``archivedAt`` for a deletion) as the feed would read it."""
    latest: dict[str, Mapping[str, Any]] = {}
    for event in _events(payload):
        key = str(event["objectId"])
        rank = (int(event["occurredAt"]), int(str(event["eventId"])))
        seen = latest.get(key)
        if seen is None or rank > (int(seen["occurredAt"]), int(str(seen["eventId"]))):
            latest[key] = event
    out: list[Observed] = []
    for meeting_id, event in latest.items():
        deleted = event["subscriptionType"] == "object.deletion"
        record = _read_meeting(adapter, meeting_id, archived=deleted)
        if record is None and not deleted:  # deleted since the event: the archived record
            record, deleted = _read_meeting(adapter, meeting_id, archived=True), True
        occurred = _from_ms(int(event["occurredAt"]))
        version = str(event["eventId"])
        if record is None:
            out.append(Observed(meeting_id, None, occurred, version, deleted=True))
            continue
        deal_id = _deal_ids(adapter, [record], WEBHOOK_OPERATION, asked=True).get(meeting_id)
        if deal_id is None and deleted:
            deal_id = _deal_by_reference(adapter, record, WEBHOOK_OPERATION)
        appointment_id = f"{deal_id}:{meeting_id}" if deal_id else meeting_id
        appointment = _appointment(adapter, appointment_id, record, WEBHOOK_OPERATION)
        created = _stamp(record, "hs_createdate", "createdAt")
        # the record's own change time, as the feed reads it, so a change reported by one is
        # recognised by the other; the event's occurredAt when the record has none
        archived = _archived_ms(record) if deleted else None
        if archived is not None:
            modified = _from_ms(archived)
        else:
            modified = (None if deleted else _stamp(record, "hs_lastmodifieddate", "updatedAt")) or occurred
        out.append(Observed(appointment_id, appointment, modified, version, deleted=deleted, created_at=created))
    return out


def _read_meeting(adapter: HubSpotAdapter, meeting_id: str, *, archived: bool) -> dict[str, Any] | None:
    path = adapter.paths.objects("meetings", meeting_id)
    params = {"properties": ",".join(FEED_PROPERTIES), "associations": "deals"}
    if archived:
        params["archived"] = "true"
    resp = adapter.transport.request("GET", path, operation=WEBHOOK_OPERATION, params=params, expect=(404,))
    return None if resp.status == 404 else adapter.json_object(resp, WEBHOOK_OPERATION, "the meeting")
