"""The Salesforce change feed: which of the owner's Events changed, from the replication resources.

One poll sends ``GET sobjects/Event/updated/?start=&end=`` (getUpdated: ids whose
``SystemModstamp`` falls in the window) and ``GET sobjects/Event/deleted/?start=&end=``
(getDeleted: ids and ``deletedDate``), then reads the Events named in one ``queryAll`` per 200 ids
(``WHERE Id IN (...)``: record ids only, no patient data in the URL; ``queryAll`` so that the
recycle bin's deleted Events come back with their times). Only the configured owner's Events are
reported. Decisions and limits: ``docs/providers/salesforce.md`` ("Changes").

The two resources read whole minutes (seconds are dropped) and report ``latestDateCovered``, the
start to use next: each stream keeps its own position, and the next poll starts one minute before
it (a change stamped late by a long transaction, or on the minute edge, is seen again rather than
missed; the core drops what it already reported, by id and version). getUpdated answers for 30
days back and getDeleted for 15 (less after Salesforce purges its delete log): an older position
is an error that says to start a new feed.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .._time import UTC, parse_instant
from ..changes import FeedPage, Observed
from ..errors import APIError, InvalidRequestError, ValidationError
from ..models import AppointmentStatus
from . import salesforce as _sf
from ._base import text

if TYPE_CHECKING:
    from .salesforce import SalesforceAdapter

__all__ = ["observe_changes", "UPDATED_WINDOW", "DELETED_WINDOW", "OVERLAP", "IDS_PER_QUERY"]

log = logging.getLogger("pms_integration.providers.salesforce")

#: how far back getUpdated answers ("Results are returned for no more than 30 days previous")
UPDATED_WINDOW = _dt.timedelta(days=30)
#: how far back getDeleted answers at most (the delete log may be purged sooner)
DELETED_WINDOW = _dt.timedelta(days=15)
#: each poll starts this much before the last ``latestDateCovered``
OVERLAP = _dt.timedelta(minutes=1)
#: Event ids per ``queryAll`` (about 5,600 characters of URL; Salesforce takes 16,384)
IDS_PER_QUERY = 200
#: window halvings one poll makes at most after EXCEEDED_ID_LIMIT (600,000 ids in one window)
MAX_SPLITS = 12
_MINUTE = _dt.timedelta(minutes=1)
_FIELDS = (
    "Id, Subject, Description, StartDateTime, EndDateTime, WhoId, ShowAs, OwnerId, IsDeleted, "
    "CreatedDate, SystemModstamp"
)
_STREAMS = ("updated", "deleted")
#: the version of a deletion: a record is deleted once (an undelete gives it a new SystemModstamp)
DELETED_VERSION = "deleted"


def observe_changes(adapter: SalesforceAdapter, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
    """The owner's Events changed or deleted since ``position`` (see the module docstring)."""
    now = now.astimezone(UTC)
    if position is None:
        start = _minute(now)
        return FeedPage((), {stream: _wire(start) for stream in _STREAMS})
    updated_from = _read_position(position, "updated")
    deleted_from = _read_position(position, "deleted")
    _check_age(updated_from, now, UPDATED_WINDOW, "changed Events")
    _check_age(deleted_from, now, DELETED_WINDOW, "deleted Events")
    # the window runs to the end of the current minute, so a change made seconds ago is seen now
    end = _minute(now) + _MINUTE
    # a position past this minute (a clock behind the one that wrote it) waits: nothing to ask yet
    updated_ids, updated_to = (
        _updated(adapter, updated_from, end, MAX_SPLITS) if updated_from < end else ([], updated_from)
    )
    deleted, deleted_to = _deleted(adapter, deleted_from, end) if deleted_from < end else ({}, deleted_from)
    observed = _observe(adapter, updated_ids, deleted)
    next_position = {
        "updated": _wire(_next_start(updated_from, updated_to, now)),
        "deleted": _wire(_next_start(deleted_from, deleted_to, now)),
    }
    return FeedPage(tuple(observed), next_position)


# -- the replication resources ----------------------------------------------------------------


def _updated(
    adapter: SalesforceAdapter, start: _dt.datetime, end: _dt.datetime, splits: int
) -> tuple[list[str], _dt.datetime]:
    """getUpdated over [start, end): the ids and latestDateCovered. A window holding more ids
    than Salesforce returns at once is read in halves (the later half waits for the next poll
    when the first is not covered yet)."""
    try:
        body = _replication(adapter, "updated", start, end)
    except APIError as exc:
        if exc.code != "EXCEEDED_ID_LIMIT" or splits <= 0 or end - start <= _MINUTE:
            raise
        middle = start + _dt.timedelta(minutes=(end - start) // _MINUTE // 2)
        first, covered = _updated(adapter, start, middle, splits - 1)
        if covered < middle:
            return first, covered
        second, covered = _updated(adapter, middle, end, splits - 1)
        return first + second, covered
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise adapter.unexpected("changes", "the getUpdated result has no ids list")
    return [i for i in ids if _sf.is_salesforce_id(i)], _covered(adapter, body, start, end)


def _deleted(
    adapter: SalesforceAdapter, start: _dt.datetime, end: _dt.datetime
) -> tuple[dict[str, _dt.datetime], _dt.datetime]:
    """getDeleted over [start, end): id -> deletedDate, and latestDateCovered."""
    body = _replication(adapter, "deleted", start, end)
    earliest = parse_instant(body.get("earliestDateAvailable"))
    if earliest is not None and earliest > start:
        raise _expired(start, "deleted Events", f"Salesforce's delete log now starts at {_wire(earliest)}")
    records = body.get("deletedRecords")
    if not isinstance(records, list):
        raise adapter.unexpected("changes", "the getDeleted result has no deletedRecords list")
    found: dict[str, _dt.datetime] = {}
    for entry in records:
        record_id = entry.get("id") if isinstance(entry, Mapping) else None
        if _sf.is_salesforce_id(record_id):
            found[str(record_id)] = parse_instant(entry.get("deletedDate")) or start
    return found, _covered(adapter, body, start, end)


def _replication(adapter: SalesforceAdapter, resource: str, start: _dt.datetime, end: _dt.datetime) -> dict[str, Any]:
    url = f"{adapter.api}/sobjects/Event/{resource}/"
    try:
        resp = adapter.transport.request(
            "GET", url, operation="changes", params={"start": _wire(start), "end": _wire(end)}
        )
    except APIError as exc:
        if exc.code == "INVALID_REPLICATION_DATE":
            what = "changed Events" if resource == "updated" else "deleted Events"
            raise _expired(start, what, f"Salesforce refused the window: {exc.message}") from None
        raise
    return adapter.json_object(resp, "changes", f"the get{resource.capitalize()} result")


def _covered(
    adapter: SalesforceAdapter, body: Mapping[str, Any], start: _dt.datetime, end: _dt.datetime
) -> _dt.datetime:
    covered = parse_instant(body.get("latestDateCovered"))
    if covered is None:
        raise adapter.unexpected("changes", "the replication result has no latestDateCovered")
    return min(max(covered.astimezone(UTC), start), end)


# -- the Events themselves --------------------------------------------------------------------


def _observe(adapter: SalesforceAdapter, updated: list[str], deleted: dict[str, _dt.datetime]) -> list[Observed]:
    """Read the Events named (live and recycle bin) and keep the owner's, in SystemModstamp order."""
    wanted = list(dict.fromkeys([*updated, *deleted]))
    rows = {str(row["Id"])[:15]: row for row in _read(adapter, wanted)}
    owner = adapter.settings.owner_id[:15]
    zone = ZoneInfo(adapter.settings.timezone) if adapter.settings.timezone else None
    out: list[Observed] = []
    for record_id in wanted:
        row = rows.get(record_id[:15])
        gone_at = deleted.get(record_id)
        if row is None:
            if gone_at is not None:  # purged from the recycle bin: whose it was is unknown
                out.append(Observed(record_id, None, gone_at, DELETED_VERSION, deleted=True))
            continue
        if str(row.get("OwnerId") or "")[:15] != owner:
            continue  # another user's calendar (or moved off the practice's)
        out.append(_observed(str(row["Id"]), row, gone_at, zone))
    out.sort(key=lambda o: o.modified_at)
    return out


def _observed(
    record_id: str, row: Mapping[str, Any], gone_at: _dt.datetime | None, zone: _dt.tzinfo | None
) -> Observed:
    stamp = parse_instant(row.get("SystemModstamp"))
    deleted = row.get("IsDeleted") is True or gone_at is not None
    cancelled = deleted or str(row.get("Subject") or "").startswith(_sf.CANCELLED_PREFIX)
    status = AppointmentStatus.CANCELLED if cancelled else AppointmentStatus.BOOKED
    appointment = _sf._event(record_id, row, status, _sf._zone_of(row, zone), {"read": dict(row)})
    modified = (gone_at if deleted and gone_at is not None else stamp) or _dt.datetime.now(UTC)
    version = (
        DELETED_VERSION
        if deleted
        else (stamp.astimezone(UTC).isoformat() if stamp else text(row.get("SystemModstamp")) or "")
    )
    return Observed(
        appointment_id=record_id,
        appointment=appointment,
        modified_at=modified.astimezone(UTC),
        version=version,
        deleted=deleted,
        created_at=parse_instant(row.get("CreatedDate")),
    )


def _read(adapter: SalesforceAdapter, ids: list[str]) -> Iterator[Mapping[str, Any]]:
    for i in range(0, len(ids), IDS_PER_QUERY):
        chunk = ", ".join(_sf.soql_string(x) for x in ids[i : i + IDS_PER_QUERY])
        soql = f"SELECT {_FIELDS} FROM Event WHERE Id IN ({chunk})"  # noqa: S608 - ids checked and quoted
        for row in adapter.query_all(soql, "changes", resource="queryAll"):
            if _sf.is_salesforce_id(row.get("Id")):
                yield row


# -- positions -------------------------------------------------------------------------------


def _minute(moment: _dt.datetime) -> _dt.datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _wire(moment: _dt.datetime) -> str:
    """A replication date as the REST guide spells it: ``YYYY-MM-DDThh:mm:ss+hh:mm`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _next_start(start: _dt.datetime, covered: _dt.datetime, now: _dt.datetime) -> _dt.datetime:
    """One minute before what the call covered (never past this minute, never backwards)."""
    return max(start, min(covered, _minute(now)) - OVERLAP)


def _read_position(position: Mapping[str, Any], stream: str) -> _dt.datetime:
    moment = parse_instant(position.get(stream))
    if moment is None:
        raise ValidationError.single("since", "is not a position of the Salesforce change feed")
    return _minute(moment)


def _check_age(start: _dt.datetime, now: _dt.datetime, window: _dt.timedelta, what: str) -> None:
    if start < _minute(now) - window:
        days = window.days
        raise _expired(start, what, f"Salesforce lists {what} for {days} days back only")


def _expired(start: _dt.datetime, what: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The Salesforce change feed cannot be read from {_wire(start)} ({why}), so {what} since then "
        "may be missed. Start a new feed (changes() without since, or a new feed name) and re-read the "
        "calendar (find_appointments) to catch up.",
        status_code=400,
        code="INVALID_REPLICATION_DATE",
        provider=_sf.PROVIDER.value,
        operation="changes",
    )
