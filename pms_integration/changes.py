"""Changes made to appointments in the CRM: the neutral events and the feed's raw material.

An adapter reports what it saw (:class:`Observed`, in a :class:`FeedPage` for the polled feed or
a list for a webhook); the core turns each into an :class:`AppointmentChange` by comparing it
with the snapshot it keeps per appointment in the state store (:func:`classify`), and the
client hands them out as a :class:`ChangeBatch` with an opaque cursor (``PMSClient.changes``).
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Iterator
from typing import Any, Literal

import attrs

from ._render import html_table, text_table
from .models import Appointment, ProviderName

__all__ = [
    "ChangeKind",
    "AppointmentChange",
    "ChangeBatch",
    "Observed",
    "FeedPage",
]

ChangeSource = Literal["webhook", "feed"]


class ChangeKind(str, enum.Enum):
    """What happened to an appointment."""

    CREATED = "created"
    UPDATED = "updated"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


def _stamp(value: _dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


@attrs.frozen
class AppointmentChange:
    """One change to one appointment, the same shape for every vendor and for webhook or feed.

    ``appointment`` is the booking as now known (fetched when the vendor's payload was partial);
    it is None only for a deletion whose record is gone. ``event_id`` de-duplicates: the vendor's
    event id for a webhook, ``"<appointment_id>@<version>"`` for the feed. ``by_library`` says the
    appointment carries a booking reference this library wrote (the change itself may still be
    staff's: compare with what you did). ``previous_start`` is set for ``rescheduled`` when known.
    """

    provider: ProviderName
    kind: ChangeKind
    appointment_id: str
    appointment: Appointment | None
    changed_at: _dt.datetime
    event_id: str
    by_library: bool
    source: ChangeSource
    previous_start: _dt.datetime | None = None

    def _rows(self) -> list[tuple[str, str]]:
        appt = self.appointment
        when = ""
        if appt is not None and appt.start is not None:
            when = appt.start.isoformat()
        return [
            ("provider", self.provider.value),
            ("kind", self.kind.value),
            ("appointment", self.appointment_id),
            ("changed at", _stamp(self.changed_at)),
            ("starts", when),
            ("was", _stamp(self.previous_start)),
            ("status", appt.status.value if appt is not None else ""),
            ("reference", (appt.reference or "") if appt is not None else ""),
            ("by library", "yes" if self.by_library else "no"),
            ("source", self.source),
            ("event", self.event_id),
        ]

    def line(self) -> str:
        """One line for a log or a terminal (what ``pms-integration watch`` prints)."""
        rows = dict(self._rows())
        parts = [rows["changed at"], rows["provider"], rows["kind"], self.appointment_id]
        if rows["starts"]:
            parts.append(f"starts {rows['starts']}")
        if rows["was"]:
            parts.append(f"(was {rows['was']})")
        if rows["reference"]:
            parts.append(f"ref={rows['reference']}")
        parts.append("library" if self.by_library else "staff/other")
        parts.append(f"via {self.source}")
        return " ".join(parts)

    def __str__(self) -> str:
        return text_table([(k, v) for k, v in self._rows() if v])

    def __repr__(self) -> str:
        return (
            f"<AppointmentChange {self.provider.value} {self.kind.value} {self.appointment_id} "
            f"at {_stamp(self.changed_at)} via {self.source}>"
        )

    def _repr_html_(self) -> str:
        return html_table(["Change", ""], [(k, v) for k, v in self._rows() if v])


@attrs.frozen
class ChangeBatch:
    """The changes one poll found, and the cursor to pass as ``since`` next time."""

    events: tuple[AppointmentChange, ...]
    cursor: str = attrs.field(repr=False)

    def __iter__(self) -> Iterator[AppointmentChange]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __bool__(self) -> bool:
        return bool(self.events)

    def __str__(self) -> str:
        if not self.events:
            return "no changes"
        return "\n".join(e.line() for e in self.events)

    def __repr__(self) -> str:
        return f"<ChangeBatch {len(self.events)} change(s)>"

    def _repr_html_(self) -> str:
        rows = [
            (e.provider.value, e.kind.value, e.appointment_id, _stamp(e.changed_at), e.source) for e in self.events
        ]
        return html_table(["provider", "kind", "appointment", "changed at", "source"], rows, caption=repr(self))


@attrs.frozen
class Observed:
    """What an adapter saw of one appointment: raw material for :func:`classify`.

    ``version`` is the vendor's change marker (Salesforce SystemModstamp, HubSpot
    hs_lastmodifieddate, GoHighLevel dateUpdated, or a webhook's event id); the same appointment
    seen twice with the same version is one change. ``modified_at`` is an aware UTC datetime.
    """

    appointment_id: str
    appointment: Appointment | None
    modified_at: _dt.datetime
    version: str
    deleted: bool = False
    created_at: _dt.datetime | None = None


@attrs.frozen
class FeedPage:
    """Everything an adapter's ``observe_changes`` saw, and where to look from next time.

    ``position`` is the adapter's own, JSON-able; the core stores it inside the cursor and hands
    it back unchanged.
    """

    observed: tuple[Observed, ...]
    position: dict[str, Any] = attrs.field(factory=dict)
