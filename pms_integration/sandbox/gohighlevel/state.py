"""The GoHighLevel sandbox's records: one location and calendar, its contacts, events and notes.

Plain dictionaries in the vendor's field names; events also keep ``start``/``end`` as aware
datetimes. Every operation holds the store's lock and hands out copies. No HTTP here: what the
records forbid raises :class:`Refused`, which the handlers answer in v1's or v2's shape.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from ..._time import UTC, parse_instant, utc_text
from .._core import Store, now_text

__all__ = ["DEFAULT_OPEN_HOURS", "CalendarStore", "OpenHours", "Refused", "new_id"]

#: weekday (Monday = 0) -> (opening, closing) in the calendar's zone; a missing day is closed
OpenHours = dict[int, tuple[_dt.time, _dt.time]]
#: every day 07:00-20:00: wide enough for the dates the docs, examples and tests book
DEFAULT_OPEN_HOURS: OpenHours = {day: (_dt.time(7), _dt.time(20)) for day in range(7)}
_ID_ALPHABET = string.ascii_letters + string.digits


def new_id() -> str:
    """A 20-character id like GoHighLevel's (``ocQHyuzHvysMo5N5VsXc``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


class Refused(Exception):
    """What the records do not allow: ``reason`` is ``location``, ``calendar``, ``contact``,
    ``note``, ``appointment`` (unknown ids) or ``slot`` (closed or taken)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CalendarStore(Store):
    """One location with one calendar (open hours, slot length) and its records."""

    #: the calendar's slot length, used when a booking has no end (v1 never has one)
    slot_minutes = 30
    #: the zone the calendar's open hours are in
    calendar_timezone = "America/New_York"

    def __init__(self) -> None:
        super().__init__()
        #: ``None``: always open (no open-hours check at all)
        self.open_hours: OpenHours | None = dict(DEFAULT_OPEN_HOURS)
        self.location_id = new_id()
        self.calendar_id = new_id()
        self.user_id = new_id()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        #: block slots (time staff made unbookable): id -> {"id", "title", "start", "end"}
        self.blocks: dict[str, dict[str, Any]] = {}
        #: every change to an event, oldest first: ``{"type": "AppointmentCreate" | "AppointmentUpdate"
        #: | "AppointmentDelete", "event": <the event after it>, "webhookId", "timestamp"}`` (the
        #: webhook bodies are built from it; ``clear()`` empties it)
        self.changes: list[dict[str, Any]] = []
        #: what "now" is for the records' stamps (None: the wall clock; ``clear()`` restores it);
        #: tests set it to put a change exactly where they want it
        self.clock: Callable[[], _dt.datetime] | None = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "location_id": self.location_id,
                "calendar_id": self.calendar_id,
                "bookings": [public(e) for e in self.events.values()],
                "contacts": [dict(c) for c in self.contacts.values()],
                "notes": [dict(n) for n in self.notes.values()],
                "blocks": [public(b) for b in self.blocks.values()],
            }

    def clear(self) -> None:
        with self.lock:
            self.contacts.clear()
            self.events.clear()
            self.notes.clear()
            self.blocks.clear()
            self.changes.clear()
            self.clock = None

    # -- ids the token and the calendar own --------------------------------------------------

    def check_location(self, location_id: object) -> None:
        if location_id != self.location_id:
            raise Refused("location")

    def check_calendar(self, calendar_id: object) -> None:
        if calendar_id != self.calendar_id:
            raise Refused("calendar")

    # -- contacts ----------------------------------------------------------------------------

    def contact(self, contact_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self._get(self.contacts, contact_id, "contact"))

    def upsert_contact(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Match on e-mail, then phone; update the match or create a contact. (contact, created)"""
        with self.lock:
            contact, created = self._upsert_contact(fields)
            return dict(contact), created

    def search_contacts(self, keep: Callable[[Mapping[str, Any]], bool]) -> list[dict[str, Any]]:
        """The contacts ``keep`` accepts, newest first."""
        with self.lock:
            found = [dict(c) for c in self.contacts.values() if keep(c)]
        return sorted(found, key=lambda c: str(c.get("dateAdded", "")), reverse=True)

    def _upsert_contact(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        existing = self._match(fields.get("email"), fields.get("phone"))
        stamp = now_text()
        created = existing is None
        if existing is None:
            existing = {"id": new_id(), "locationId": self.location_id, "dateAdded": stamp}
            self.contacts[existing["id"]] = existing
        for key, value in fields.items():
            if key not in ("locationId", "createNewIfDuplicateAllowed") and value is not None:
                existing[key] = value
        if isinstance(existing.get("email"), str):
            existing["email"] = existing["email"].lower()
        names = [n for n in (existing.get("firstName"), existing.get("lastName")) if isinstance(n, str) and n]
        if names and "name" not in fields:
            existing["name"] = " ".join(names)
        existing["dateUpdated"] = stamp
        return existing, created

    def _match(self, email: object, phone: object) -> dict[str, Any] | None:
        if isinstance(email, str) and email:
            for contact in self.contacts.values():
                if contact.get("email", "").lower() == email.lower():
                    return contact
        if isinstance(phone, str) and phone:
            for contact in self.contacts.values():
                if contact.get("phone") == phone:
                    return contact
        return None

    # -- notes -------------------------------------------------------------------------------

    def notes_of(self, contact_id: str) -> list[dict[str, Any]]:
        """The contact's notes, oldest first (an unknown contact has none)."""
        with self.lock:
            return [dict(n) for n in self.notes.values() if n["contactId"] == contact_id]

    def add_note(self, contact_id: str, body: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            self._get(self.contacts, contact_id, "contact")
            note = {"id": new_id(), "body": body, "dateAdded": now_text(), "contactId": contact_id, **fields}
            self.notes[note["id"]] = note
            return dict(note)

    def note(self, contact_id: str, note_id: str, **changes: Any) -> dict[str, Any]:
        """One of the contact's notes, after applying ``changes`` (if any)."""
        with self.lock:
            self._get(self.contacts, contact_id, "contact")
            note = self._get(self.notes, note_id, "note")
            if note["contactId"] != contact_id:
                raise Refused("note")
            note.update(changes)
            return dict(note)

    # -- events ------------------------------------------------------------------------------

    def event(self, event_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self._get(self.events, event_id, "appointment"))

    def slot_end(self, start: _dt.datetime) -> _dt.datetime:
        return start + _dt.timedelta(minutes=self.slot_minutes)

    def is_open(self, start: _dt.datetime, end: _dt.datetime) -> bool:
        """Whether ``start``-``end`` lies within one day's open hours of the calendar."""
        if self.open_hours is None:
            return True
        zone = ZoneInfo(self.calendar_timezone)
        local_start, local_end = start.astimezone(zone), end.astimezone(zone)
        hours = self.open_hours.get(local_start.weekday())
        if hours is None:
            return False
        opening = _dt.datetime.combine(local_start.date(), hours[0])
        closing = _dt.datetime.combine(local_start.date(), hours[1])
        return opening <= local_start.replace(tzinfo=None) and local_end.replace(tzinfo=None) <= closing

    def book(
        self,
        start: _dt.datetime,
        end: _dt.datetime,
        *,
        contact: str | Mapping[str, Any],
        check_slot: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """A new event for ``contact``: an id that must exist, or fields to upsert a contact with
        (only once the slot is known to be free)."""
        with self.lock:
            if isinstance(contact, str):
                self._get(self.contacts, contact, "contact")
            if check_slot:
                self._check_free(start, end)
            contact_id = contact if isinstance(contact, str) else self._upsert_contact(contact)[0]["id"]
            stamp = self.stamp()
            event = {
                "id": new_id(),
                "calendarId": self.calendar_id,
                "locationId": self.location_id,
                "title": "",
                "description": "",
                "notes": "",
                "address": "",
                "meetingLocationType": "default",
                "appointmentStatus": "confirmed",
                "assignedUserId": self.user_id,
                "selectedTimezone": "",
                "dateAdded": stamp,
                "dateUpdated": stamp,
                "source": "third_party",
                "contactId": contact_id,
                "start": start,
                "end": end,
                **fields,
            }
            self.events[event["id"]] = event
            self._record("AppointmentCreate", event)
            return dict(event)

    def update_event(self, event_id: str, *, check_slot: bool = True, **changes: Any) -> dict[str, Any]:
        """Apply ``changes``; a new ``start``/``end`` must be free unless not ``check_slot``."""
        with self.lock:
            event = self._get(self.events, event_id, "appointment")
            if check_slot and "start" in changes:
                self._check_free(changes["start"], changes["end"], ignore=event_id)
            event.update(changes, dateUpdated=self.stamp(event["dateUpdated"]))
            self._record("AppointmentUpdate", event)
            return dict(event)

    def delete_event(self, event_id: str) -> None:
        with self.lock:
            event = self._get(self.events, event_id, "appointment")
            del self.events[event_id]
            self._record("AppointmentDelete", event)

    def stamp(self, previous: str | None = None) -> str:
        """Now (``clock``'s, else the wall clock's) as the records are stamped, UTC with
        milliseconds; always later than ``previous``, so every change has its own ``dateUpdated``."""
        moment = self.clock() if self.clock is not None else _dt.datetime.now(UTC)
        text = utc_text(moment.astimezone(UTC), milliseconds=True)
        before = parse_instant(previous)
        if before is not None and text <= utc_text(before.astimezone(UTC), milliseconds=True):
            text = utc_text(before.astimezone(UTC) + _dt.timedelta(milliseconds=1), milliseconds=True)
        return text

    def _record(self, kind: str, event: Mapping[str, Any]) -> None:
        """Log a change (the caller holds the lock)."""
        stamp = utc_text(_dt.datetime.now(UTC), milliseconds=True)
        self.changes.append({"type": kind, "event": dict(event), "webhookId": str(uuid.uuid4()), "timestamp": stamp})

    def events_between(self, start: _dt.datetime, end: _dt.datetime, **equal: str | None) -> list[dict[str, Any]]:
        """Events overlapping ``start``-``end`` by start time, whose fields match ``equal`` (None: any)."""
        with self.lock:
            events = [
                dict(e)
                for e in self.events.values()
                if e["start"] < end and start < e["end"] and all(v is None or e[k] == v for k, v in equal.items())
            ]
        return sorted(events, key=lambda e: e["start"])

    def bookings(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            return [public(e) for e in self.events.values() if not active_only or e["appointmentStatus"] != "cancelled"]

    def booking(self, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            event = self.events.get(event_id)
            return None if event is None else public(event)

    def _check_free(self, start: _dt.datetime, end: _dt.datetime, *, ignore: str | None = None) -> None:
        if not self.is_open(start, end) or any(a < end and start < b for a, b in self._taken(ignore)):
            raise Refused("slot")

    def _taken(self, ignore: str | None = None) -> list[tuple[_dt.datetime, _dt.datetime]]:
        """Live bookings (not cancelled ones) and block slots, as (start, end)."""
        live = [
            (e["start"], e["end"])
            for e in self.events.values()
            if e["id"] != ignore and e["appointmentStatus"] != "cancelled"
        ]
        return live + [(b["start"], b["end"]) for b in self.blocks.values()]

    # -- availability ------------------------------------------------------------------------

    def block(self, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked") -> dict[str, Any]:
        """A block slot: the calendar offers nothing that overlaps it."""
        with self.lock:
            block: dict[str, Any] = {
                "id": new_id(),
                "title": title,
                "calendarId": self.calendar_id,
                "start": start,
                "end": end,
            }
            self.blocks[block["id"]] = block
            return dict(block)

    def free_starts(
        self, start: _dt.datetime, end: _dt.datetime, now: _dt.datetime | None = None
    ) -> list[_dt.datetime]:
        """Starts of free slots in ``start``-``end``, as GoHighLevel computes them: every
        ``slot_minutes`` from each day's opening (in the calendar's zone) while a slot of that
        length fits before closing, on absolute time (so a DST night shifts nothing), leaving out
        past starts and any slot that overlaps a live booking or a block slot."""
        zone = ZoneInfo(self.calendar_timezone)
        length = _dt.timedelta(minutes=self.slot_minutes)
        now = now or _dt.datetime.now(_dt.timezone.utc)
        with self.lock:
            taken = self._taken()
            hours = None if self.open_hours is None else dict(self.open_hours)
        found: list[_dt.datetime] = []
        day = start.astimezone(zone).date() - _dt.timedelta(days=1)
        while day <= end.astimezone(zone).date():
            if hours is None:
                ranges = [(_at(day, _dt.time(0), zone), _at(day + _dt.timedelta(days=1), _dt.time(0), zone))]
            else:
                opening = hours.get(day.weekday())
                ranges = [] if opening is None else [(_at(day, opening[0], zone), _at(day, opening[1], zone))]
            for opens, closes in ranges:
                at = opens
                while at + length <= closes:
                    free = not any(a < at + length and at < b for a, b in taken)
                    if free and start <= at < end and at >= now:
                        found.append(at)
                    at += length
            day += _dt.timedelta(days=1)
        return found

    def staff_move(self, event_id: str, start: _dt.datetime, end: _dt.datetime) -> None:
        """Move the event as staff would in GoHighLevel's calendar (no slot check)."""
        times = {"startTime": start.isoformat(), "endTime": end.isoformat()}
        self.update_event(event_id, check_slot=False, start=start, end=end, **times)

    def staff_cancel(self, event_id: str) -> None:
        self.update_event(event_id, check_slot=False, appointmentStatus="cancelled")

    def staff_delete(self, event_id: str) -> None:
        """Delete the event as staff would in GoHighLevel's calendar."""
        self.delete_event(event_id)

    @staticmethod
    def _get(records: dict[str, dict[str, Any]], record_id: str, kind: str) -> dict[str, Any]:
        record = records.get(record_id)
        if record is None:
            raise Refused(kind)
        return record


def _at(day: _dt.date, time: _dt.time, zone: ZoneInfo) -> _dt.datetime:
    """``day`` at the wall-clock ``time`` in ``zone``, as a UTC instant (a skipped time moves forward)."""
    return _dt.datetime.combine(day, time, tzinfo=zone).astimezone(_dt.timezone.utc)


def public(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event, JSON-ready: ``start``/``end`` as ISO text."""
    view = {k: v for k, v in event.items() if k not in ("start", "end")}
    return {**view, "start": event["start"].isoformat(), "end": event["end"].isoformat()}
