"""GoHighLevel's changes (API v2): the polled feed and the appointment webhooks, as
:class:`~pms_integration.changes.Observed` for the change core (``pms_integration.changes``).

The feed. ``GET /calendars/events`` (``Version: 2021-04-15``; ``locationId``, ``calendarId``,
``startTime``/``endTime`` in epoch milliseconds) lists the calendar's events whose time overlaps
a window; it has no "modified since" filter, no paging and no deleted records. So each poll lists
the window of appointments a receptionist cares about (:data:`WINDOW_BEHIND` before now to
:data:`WINDOW_AHEAD` after it, in pieces of at most :data:`MAX_SPAN`) and compares every event's
``dateUpdated`` with what the previous poll saw:

* the position keeps the ids in the window with their ``dateUpdated`` (bounded by
  :data:`MAX_KNOWN`, the soonest-ending kept) and the instant of the poll;
* the first poll (no position) observes nothing: it notes the events as they were at ``now``
  (one changed later is left out, so a feed started from a past instant reports it);
* a known id whose ``dateUpdated`` changed is observed; an id not known is observed when its
  ``dateUpdated`` is later than the previous poll less :data:`MARGIN` (clock and index lag),
  so an old appointment that the window slides onto is not a change;
* a known id missing from the listing is read by id (``GET /calendars/events/appointments/{id}``):
  a 404 is a deletion, a record is observed if its ``dateUpdated`` moved (it was moved out of the
  window, or the listing leaves it out), else it is dropped; one that ended before the window
  began aged out and is dropped unread.

``cancelled`` shows as ``appointmentStatus``. The change core classifies, and de-duplicates by
(appointment id, version), so the overlap this leaves at the edges is never reported twice.

The webhooks. ``AppointmentCreate``, ``AppointmentUpdate`` and ``AppointmentDelete`` bodies
(``type``, ``locationId``, ``appointment{...}``, ``webhookId``, ``timestamp``; highlevel-api-docs
``docs/webhook events/Appointment*.md`` and ``docs/oauth/WebhookAuthentication.md``). Their
appointment has no ``description``, where this library writes the booking reference, so a create
or an update without the reference in its title or notes is read by id, and the record fills in
what the body lacks (the body's own fields win: they are what that event did, and the record may
already show a later one); a delete is kept as sent.
Other event types are ignored; events of another location or calendar too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._time import UTC, epoch_ms, parse_instant, utc_text
from ..changes import FeedPage, Observed
from ..errors import NotFoundError, WebhookPayloadError
from ._base import text
from .gohighlevel import PROVIDER, reference_in

if TYPE_CHECKING:
    from .gohighlevel_v2 import GoHighLevelV2Adapter

__all__ = [
    "MARGIN",
    "MAX_KNOWN",
    "MAX_SPAN",
    "WEBHOOK_TYPES",
    "WINDOW_AHEAD",
    "WINDOW_BEHIND",
    "observe_changes",
    "observe_webhook",
]

_log = logging.getLogger("pms_integration.providers.gohighlevel")

#: the feed watches appointments from a day ago ...
WINDOW_BEHIND = _dt.timedelta(days=1)
#: ... to thirty days ahead (one request: the whole window is MAX_SPAN)
WINDOW_AHEAD = _dt.timedelta(days=30)
#: the longest window one listing asks for (GoHighLevel's documented range for free slots; the
#: events listing documents none, so the feed stays within the one it does)
MAX_SPAN = _dt.timedelta(days=31)
#: how far before the previous poll an unknown event's ``dateUpdated`` still counts as new
MARGIN = _dt.timedelta(minutes=5)
#: the most event ids (with their ``dateUpdated``) the position keeps; beyond it, the
#: latest-ending are not tracked: their changes are still seen by time, their deletions are not
MAX_KNOWN = 2000
#: the webhook event types about appointments
WEBHOOK_TYPES = ("AppointmentCreate", "AppointmentUpdate", "AppointmentDelete")
_OPERATION = "changes"
_POSITION_VERSION = 1


def observe_changes(adapter: GoHighLevelV2Adapter, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
    """The feed's page (see the module docstring): what changed since ``position`` up to ``now``."""
    now = now.astimezone(UTC)
    start, end = now - WINDOW_BEHIND, now + WINDOW_AHEAD
    events = _list_window(adapter, start, end)
    listed = {event_id: (_version(event, now), event) for event_id, event in events.items()}
    known = _known(position)
    if known is None or position is None:
        # a first poll (or a position not ours) starts at ``now``, which may be in the past (a
        # feed started from a datetime): an event changed after it is left unknown, so the next
        # poll reports it
        before = {k: v for k, v in listed.items() if v[0][1] is None or v[0][1] <= now}
        return FeedPage((), _position(now, before))
    since = _instant_ms(position.get("upto"))
    floor = (since or now) - MARGIN
    observed: list[Observed] = []
    for event_id, ((version, modified), event) in listed.items():
        prior = known.get(event_id)
        if prior is not None and prior[0] == version:
            continue
        if prior is None and modified is not None and modified < floor:
            continue  # an old appointment the window slid onto, or one beyond MAX_KNOWN
        observed.append(_observed(adapter, event, version, modified or now))
    start_ms = epoch_ms(start)
    for event_id, (version, end_ms) in known.items():
        if event_id in listed or (end_ms is not None and end_ms <= start_ms):
            continue  # still listed, or ended before the window: aged out
        seen = _vanished(adapter, event_id, version, now)
        if seen is not None:
            observed.append(seen)
    return FeedPage(tuple(observed), _position(now, listed))


def observe_webhook(adapter: GoHighLevelV2Adapter, payload: Any) -> list[Observed]:
    """``AppointmentCreate``/``Update``/``Delete`` bodies (one, or a list of them) as Observed."""
    bodies = payload if isinstance(payload, list) else [payload]
    found: list[Observed] = []
    for body in bodies:
        if not isinstance(body, Mapping):
            raise _bad("the body is not a JSON object")
        kind = body.get("type")
        if kind not in WEBHOOK_TYPES:
            _log.debug("webhook: ignoring a %r event", kind)
            continue
        record = body.get("appointment")
        appointment_id = text(record.get("id")) if isinstance(record, Mapping) else None
        if (
            not isinstance(record, Mapping)
            or appointment_id is None
            or not adapter.id_pattern.fullmatch(appointment_id)
        ):
            raise _bad(f"a {kind} event without a usable appointment")
        if not _ours(adapter, body.get("locationId"), record.get("calendarId")):
            _log.debug("webhook: %s %s is for another location or calendar", kind, appointment_id)
            continue
        record = dict(record)
        record.setdefault("locationId", body.get("locationId"))
        deleted = kind == "AppointmentDelete"
        edited, sent = _instant(record.get("dateUpdated")), _instant(body.get("timestamp"))
        # a deletion leaves dateUpdated at the last edit: the body's timestamp is when it happened
        modified = ((sent or edited) if deleted else (edited or sent)) or _dt.datetime.now(UTC)
        version = text(body.get("webhookId")) or f"{kind}:{utc_text(modified, milliseconds=True)}"
        if not deleted and _partial(record):
            try:
                current = adapter.read_booking(appointment_id, "webhook").raw
            except NotFoundError:
                current = {}  # deleted since: the body is all there is
            # the body says what this event did (a later event may have changed the record
            # since); the record adds what the body lacks: the description with the reference
            record = {**current, **{k: v for k, v in record.items() if v not in (None, "")}}
        appointment = adapter.appointment(record, "webhook", zone=adapter.booking_zone(record))
        found.append(
            Observed(
                appointment_id,
                appointment,
                modified,
                version,
                deleted=deleted,
                created_at=_instant(record.get("dateAdded")),
            )
        )
    return found


# -- the feed's pieces -----------------------------------------------------------------------


def _list_window(adapter: GoHighLevelV2Adapter, start: _dt.datetime, end: _dt.datetime) -> dict[str, dict[str, Any]]:
    """The calendar's events overlapping ``start``-``end`` by id, one request per MAX_SPAN."""
    events: dict[str, dict[str, Any]] = {}
    piece = start
    while piece < end:
        upto = min(piece + MAX_SPAN, end)
        params = {
            "locationId": adapter.settings.location_id,
            "calendarId": adapter.settings.calendar_id,
            "startTime": str(epoch_ms(piece)),
            "endTime": str(epoch_ms(upto)),
        }
        resp = adapter.send("GET", "/calendars/events", operation=_OPERATION, params=params)
        for event in adapter.records(resp, _OPERATION, "events"):
            event_id = text(event.get("id"))
            if event_id is None or not adapter.id_pattern.fullmatch(event_id):
                _log.warning("changes: skipping a listed GoHighLevel event without a usable id")
                continue
            events[event_id] = event
        piece = upto
    return events


def _version(event: Mapping[str, Any], now: _dt.datetime) -> tuple[str, _dt.datetime | None]:
    """The event's change marker (``dateUpdated`` in UTC, milliseconds) and when it changed;
    without a readable ``dateUpdated``, a digest of the fields that matter and no time."""
    modified = _instant(event.get("dateUpdated"))
    if modified is not None:
        return utc_text(modified, milliseconds=True), modified
    fields = {k: event.get(k) for k in ("startTime", "endTime", "appointmentStatus", "title", "contactId")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"h:{digest}", None


def _observed(
    adapter: GoHighLevelV2Adapter, event: Mapping[str, Any], version: str, modified: _dt.datetime
) -> Observed:
    appointment = adapter.appointment(event, _OPERATION, zone=adapter.booking_zone(event))
    return Observed(appointment.id, appointment, modified, version, created_at=_instant(event.get("dateAdded")))


def _vanished(adapter: GoHighLevelV2Adapter, event_id: str, version: str, now: _dt.datetime) -> Observed | None:
    """A known event the listing no longer shows: deleted (404), changed (observed) or neither."""
    try:
        appointment = adapter.read_booking(event_id, _OPERATION)
    except NotFoundError:
        return Observed(event_id, None, now, f"deleted:{version}", deleted=True)
    current, modified = _version(appointment.raw, now)
    if current == version:
        return None  # left the window unchanged
    return Observed(
        event_id, appointment, modified or now, current, created_at=_instant(appointment.raw.get("dateAdded"))
    )


def _position(now: _dt.datetime, listed: Mapping[str, tuple[tuple[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """``{"v", "upto": epoch ms, "known": {id: [version, end epoch ms | None]}}``, bounded."""
    rows: list[tuple[int, str, str, int | None]] = []
    for event_id, ((version, _), event) in listed.items():
        ends = _instant(event.get("endTime")) or _instant(event.get("startTime"))
        end_ms = None if ends is None else epoch_ms(ends)
        rows.append((end_ms if end_ms is not None else 2**62, event_id, version, end_ms))
    rows.sort()
    known = {event_id: [version, end_ms] for _, event_id, version, end_ms in rows[:MAX_KNOWN]}
    return {"v": _POSITION_VERSION, "upto": epoch_ms(now), "known": known}


def _known(position: Mapping[str, Any] | None) -> dict[str, tuple[str, int | None]] | None:
    """The position's known events, or None for no position (or one this module did not write)."""
    if not isinstance(position, Mapping) or position.get("v") != _POSITION_VERSION:
        return None
    raw = position.get("known")
    if not isinstance(raw, Mapping) or _instant_ms(position.get("upto")) is None:
        return None
    known: dict[str, tuple[str, int | None]] = {}
    for event_id, row in raw.items():
        if isinstance(row, list) and len(row) == 2 and isinstance(row[0], str):
            known[str(event_id)] = (row[0], row[1] if isinstance(row[1], int) else None)
    return known


# -- small readers ---------------------------------------------------------------------------


def _instant(value: object) -> _dt.datetime | None:
    parsed = parse_instant(value)
    return None if parsed is None else parsed.astimezone(UTC)


def _instant_ms(value: object) -> _dt.datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return _dt.datetime.fromtimestamp(value / 1000, UTC)


def _ours(adapter: GoHighLevelV2Adapter, location_id: object, calendar_id: object) -> bool:
    settings = adapter.settings
    same_location = location_id in (None, "") or location_id == settings.location_id
    same_calendar = calendar_id in (None, "") or calendar_id == settings.calendar_id
    return same_location and same_calendar


def _partial(record: Mapping[str, Any]) -> bool:
    """Whether a webhook's appointment lacks what an Appointment needs: its times, or the
    booking reference (written in the description, which webhooks leave out)."""
    if not all(record.get(k) for k in ("startTime", "endTime", "appointmentStatus")):
        return True
    return reference_in(record) is None and "description" not in record


def _bad(detail: str) -> WebhookPayloadError:
    _log.debug("webhook: unreadable GoHighLevel body: %s", detail)
    return WebhookPayloadError(f"{PROVIDER.label} webhook body could not be read")
