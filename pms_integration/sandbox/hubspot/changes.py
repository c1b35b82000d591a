"""The meetings' change log, and the webhook bodies HubSpot would send for it.

Every write to a meeting (a library route or a staff hook) appends one :class:`Change`; a
change's events are what a generic webhook subscription on meetings (``objectTypeId`` ``0-47``)
delivers: ``object.creation``, one ``object.propertyChange`` per changed property, or
``object.deletion``. Field names follow HubSpot's webhooks guide ("Parse generic webhook
payloads", https://developers.hubspot.com/docs/guides/webhooks/create-generic-webhook-subscriptions).
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from ..._time import parse_instant

#: The sandbox portal and app the events name (HubSpot account and app ids are plain numbers).
PORTAL_ID = 46_200_117
APP_ID = 3_310_551
MEETING_TYPE_ID = "0-47"
#: The first event id (HubSpot's are large numbers; each event gets the next one).
FIRST_EVENT_ID = 4_100_000_001
#: One subscription id per event type (and per property, as HubSpot subscribes per property).
_SUBSCRIPTIONS = {"object.creation": 2_870_101, "object.deletion": 2_870_102}
_PROPERTY_SUBSCRIPTION_BASE = 2_870_200


@attrs.frozen
class Change:
    """One write to one meeting: when (HubSpot's stamp), by whom, and its events' ids."""

    kind: str  # "creation", "propertyChange" or "deletion"
    object_id: str
    at: str  # the record's stamp (createdAt, updatedAt or archivedAt)
    source: str  # HubSpot's changeSource: "INTEGRATION" (an API call) or "CRM_UI" (staff)
    properties: tuple[tuple[str, str], ...] = ()
    first_event_id: int = 0


class ChangeLog:
    """The meetings' changes in the order they were made (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: list[Change] = []
        self._next_event = FIRST_EVENT_ID
        self._subscriptions: dict[str, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._changes)

    def clear(self) -> None:
        with self._lock:
            self._changes.clear()
            self._next_event = FIRST_EVENT_ID

    def created(self, object_id: str, at: str, source: str) -> None:
        self._add(Change("creation", object_id, at, source))

    def changed(self, object_id: str, at: str, properties: dict[str, str], source: str) -> None:
        self._add(Change("propertyChange", object_id, at, source, tuple(sorted(properties.items()))))

    def deleted(self, object_id: str, at: str, source: str) -> None:
        self._add(Change("deletion", object_id, at, source))

    def entries(self, since_index: int = 0) -> list[Change]:
        with self._lock:
            return list(self._changes[max(since_index, 0) :])

    def payloads(self, since_index: int = 0) -> list[list[dict[str, Any]]]:
        """One webhook body (a JSON array of events) per change from ``since_index`` on, so the
        next index is ``since_index + len(result)``. The same change always gives the same event
        ids (a redelivery is recognisable)."""
        return [self._events(change) for change in self.entries(since_index)]

    def _add(self, change: Change) -> None:
        with self._lock:
            count = max(len(change.properties), 1)
            self._changes.append(attrs.evolve(change, first_event_id=self._next_event))
            self._next_event += count

    def _subscription(self, kind: str, name: str | None) -> int:
        if name is None:
            return _SUBSCRIPTIONS[f"object.{kind}"]
        with self._lock:
            return self._subscriptions.setdefault(name, _PROPERTY_SUBSCRIPTION_BASE + len(self._subscriptions))

    def _events(self, change: Change) -> list[dict[str, Any]]:
        instant = parse_instant(change.at)
        occurred = int(instant.timestamp() * 1000) if instant is not None else 0
        common: dict[str, Any] = {
            "portalId": PORTAL_ID,
            "appId": APP_ID,
            "occurredAt": occurred,
            "subscriptionType": f"object.{change.kind}",
            "attemptNumber": 0,
            "objectId": int(change.object_id),
            "changeSource": change.source,
            "sourceId": "userId:8120331" if change.source == "CRM_UI" else f"{APP_ID}",
            "objectTypeId": MEETING_TYPE_ID,
        }
        if change.kind != "propertyChange":
            event = {"eventId": change.first_event_id, "subscriptionId": self._subscription(change.kind, None), **common}
            if change.kind == "creation":
                event["changeFlag"] = "CREATED"
            return [event]
        return [
            {
                "eventId": change.first_event_id + i,
                "subscriptionId": self._subscription(change.kind, name),
                **common,
                "propertyName": name,
                "propertyValue": _wire_value(name, value),
            }
            for i, (name, value) in enumerate(change.properties)
        ]


def _wire_value(name: str, value: str) -> str:
    """A date-time property's new value as events carry it (epoch milliseconds); others as stored."""
    if name not in _DATETIMES or not value:
        return value
    instant = parse_instant(value)
    return str(int(instant.timestamp() * 1000)) if instant is not None else value


_DATETIMES = {"hs_timestamp", "hs_meeting_start_time", "hs_meeting_end_time"}
