"""Changes made to appointments in the CRM: the neutral events and the feed's raw material.

An adapter reports what it saw (:class:`Observed`, in a :class:`FeedPage` for the polled feed or
a list for a webhook); the core turns each into an :class:`AppointmentChange` by comparing it
with the snapshot it keeps per appointment in the state store (:func:`classify`), and the
client hands them out as a :class:`ChangeBatch` with an opaque cursor (``PMSClient.changes``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

import attrs

from ._render import html_table, text_table
from ._time import UTC, parse_instant
from .errors import StateStoreError, ValidationError
from .models import Appointment, AppointmentStatus, ProviderName
from .state import StateStore

__all__ = [
    "ChangeKind",
    "AppointmentChange",
    "ChangeBatch",
    "Observed",
    "FeedPage",
    "classify",
    "record_snapshot",
    "SnapshotView",
    "commit_snapshots",
    "Cursor",
    "CURSOR_VERSION",
    "SEEN_WINDOW",
    "SEEN_LIMIT",
]

log = logging.getLogger("pms_integration.changes")

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


# -- classification against per-appointment snapshots ----------------------------------------

#: a record created at most this long before its modification counts as just created
CREATED_WITHIN = _dt.timedelta(seconds=2)


def snapshot_key(provider: ProviderName, account: str, appointment_id: str) -> str:
    """``snap:<provider>:<account>:<id>``: what the core last knew of one appointment."""
    return f"snap:{provider.value}:{account}:{appointment_id}"


def _text(value: _dt.datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _snapshot_value(
    appointment: Appointment | None,
    *,
    version: str,
    at: _dt.datetime | None,
    deleted: bool = False,
    pending: ChangeKind | None = None,
    reference: str | None = None,
    prev: str | None = None,
) -> str:
    body: dict[str, Any] = {"version": version, "at": _text(at), "deleted": deleted}
    if prev is not None:
        body["prev"] = prev
    if appointment is not None:
        body.update(
            start=_text(appointment.start),
            end=_text(appointment.end),
            status=appointment.status.value,
            ref=appointment.reference,
            fp=_fingerprint(appointment),
        )
    elif reference is not None:
        body["ref"] = reference
    if pending is not None:
        body["pending"] = pending.value
    return json.dumps(body, separators=(",", ":"))


def _read_snapshot(store: SnapshotStore, key: str) -> dict[str, Any] | None:
    raw = store.get(key)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def record_snapshot(
    store: StateStore,
    provider: ProviderName,
    account: str,
    appointment: Appointment,
    *,
    kind: ChangeKind,
    ttl: float,
) -> None:
    """After the library's own book/update/cancel: remember what it made, so a later staff
    change is classified against it and the feed reports the library's own write once, as
    ``kind``. Never raises (a booking must not fail because the store hiccuped)."""
    key = snapshot_key(provider, account, appointment.id)
    try:
        existing = _read_snapshot(store, key)
        if kind is ChangeKind.CREATED and existing is not None:
            return  # a replayed booking: the feed already knows it
        prev: Any = None
        if existing is not None:
            unseen = existing.get("pending")
            # the start before this write: before the library's earlier writes the feed has not
            # reported yet, else the one last reported
            prev = existing.get("prev") if unseen else existing.get("start")
            if unseen == ChangeKind.CREATED.value and kind is not ChangeKind.CANCELLED:
                kind = ChangeKind.CREATED  # booked and moved before the feed saw it: one creation
        value = _snapshot_value(
            appointment, version="", at=_at(existing), pending=kind, prev=prev if isinstance(prev, str) else None
        )
        store.put(key, value, ttl)
    except Exception:  # best effort: a booking must not fail here
        log.debug("%s: could not record the snapshot of %s", provider.value, appointment.id, exc_info=True)


def _fingerprint(appointment: Appointment) -> str:
    """What else a caller can see of the appointment (title, contact, reference), hashed."""
    seen = json.dumps([appointment.title, appointment.contact_id, appointment.reference])
    return hashlib.sha256(seen.encode("utf-8")).hexdigest()[:16]


def _same(appointment: Appointment, snap: dict[str, Any]) -> bool:
    """Nothing a caller can see differs from the snapshot (times, status, title, contact, reference)."""
    return (
        not _differs(appointment, snap)
        and snap.get("status") == appointment.status.value
        and snap.get("fp") == _fingerprint(appointment)
    )


def _differs(appointment: Appointment, snap: dict[str, Any]) -> bool:
    return _text(appointment.start) != snap.get("start") or _text(appointment.end) != snap.get("end")


def _pick_kind(
    observed: Observed, snap: dict[str, Any] | None, feed_start: _dt.datetime | None
) -> ChangeKind | None:
    appt = observed.appointment
    if observed.deleted:
        if snap is not None and snap.get("deleted"):
            return None
        return ChangeKind.DELETED
    if snap is not None and snap.get("deleted") and snap.get("version") == observed.version:
        return None
    cancelled = appt is not None and appt.status is AppointmentStatus.CANCELLED
    pending = snap.get("pending") if snap is not None else None
    if snap is not None and isinstance(pending, str) and appt is not None and not _differs(appt, snap):
        was_cancelled = snap.get("status") == AppointmentStatus.CANCELLED.value
        if cancelled == was_cancelled:
            return ChangeKind(pending)  # the library's own write, seen by the feed for the first time
    if snap is not None and appt is not None and pending is None and not snap.get("deleted") and _same(appt, snap):
        # nothing visible changed: the same change seen through the other source (a webhook,
        # then the feed), a vendor reading back its latest state for each of several events,
        # or an edit to something the Appointment does not show
        return None
    if cancelled and (snap is None or snap.get("status") != AppointmentStatus.CANCELLED.value):
        return ChangeKind.CANCELLED
    if snap is None:
        created = observed.created_at
        if created is not None and (
            abs(observed.modified_at - created) <= CREATED_WITHIN or (feed_start is not None and created >= feed_start)
        ):
            return ChangeKind.CREATED
        return ChangeKind.UPDATED
    if appt is not None and _differs(appt, snap):
        return ChangeKind.RESCHEDULED
    return ChangeKind.UPDATED


class SnapshotStore(Protocol):
    """What :func:`classify` needs of a store: a :class:`StateStore`, or a :class:`SnapshotView`."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None) -> None: ...


class SnapshotView:
    """The snapshots of ``store`` as seen through writes not made yet: :func:`classify` against
    it reads the store (and its own earlier writes) and keeps what it would write in ``writes``
    instead of writing it. For a read-only feed (drop the writes) and for a webhook delivery
    (:func:`commit_snapshots` the writes once its callbacks ran)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.writes: dict[str, tuple[str, float | None]] = {}

    def get(self, key: str) -> str | None:
        held = self.writes.get(key)
        return held[0] if held is not None else self.store.get(key)

    def put(self, key: str, value: str, ttl: float | None) -> None:
        self.writes[key] = (value, ttl)


def _at(snap: dict[str, Any] | None) -> _dt.datetime | None:
    """The modification time a snapshot reflects (None: unknown)."""
    if snap is None or not isinstance(snap.get("at"), str):
        return None
    try:
        return parse_instant(snap["at"])
    except (ValueError, TypeError, ValidationError):
        return None


def _older(modified_at: _dt.datetime | None, snap: dict[str, Any] | None) -> bool:
    """``modified_at`` is before what ``snap`` already reflects (a late, out-of-order sighting)."""
    known = _at(snap)
    return modified_at is not None and known is not None and modified_at < known


def commit_snapshots(store: StateStore, writes: dict[str, tuple[str, float | None]]) -> None:
    """Write the snapshots a :class:`SnapshotView` held back, except where the store meanwhile
    reflects a later modification (another delivery or the feed got there first)."""
    for key, (value, ttl) in writes.items():
        mine = json.loads(value)
        when = parse_instant(mine["at"]) if isinstance(mine.get("at"), str) else None
        current = _read_snapshot(store, key)
        if current is not None and (_older(when, current) or (when is not None and _at(current) == when)):
            continue
        store.put(key, value, ttl)


def classify(
    store: SnapshotStore,
    observed: Observed,
    *,
    provider: ProviderName,
    account: str,
    source: ChangeSource,
    ttl: float,
    feed_start: _dt.datetime | None = None,
) -> AppointmentChange | None:
    """The change ``observed`` stands for, or None when it was already reported.

    Compares with the snapshot kept at ``snap:<provider>:<account>:<id>`` and then replaces it
    (for ``ttl`` seconds): the same version as the snapshot is None; an observation older than
    what the snapshot reflects (a vendor's late retry) is None and leaves the snapshot as it is
    (its modification time is kept for that); a deletion is ``deleted``;
    a status now cancelled that was not is ``cancelled``; no snapshot and created within 2 s of
    the modification (or after ``feed_start``) is ``created``; start or end moved is
    ``rescheduled``; anything else is ``updated``.
    """
    key = snapshot_key(provider, account, observed.appointment_id)
    snap = _read_snapshot(store, key)
    if snap is not None and snap.get("version") == observed.version and observed.version:
        return None
    if _older(observed.modified_at, snap):
        # a late delivery (a vendor's retry) of a state the snapshot has already moved past:
        # reporting it would undo the newer change, so it is neither reported nor recorded
        return None
    kind = _pick_kind(observed, snap, feed_start)
    appt = observed.appointment
    reference = appt.reference if appt is not None else (snap or {}).get("ref")
    value = _snapshot_value(
        appt,
        version=observed.version,
        at=observed.modified_at,
        deleted=observed.deleted,
        reference=reference if isinstance(reference, str) else None,
    )
    store.put(key, value, ttl)
    if kind is None:
        return None
    previous = None
    if snap is not None and kind is ChangeKind.RESCHEDULED:
        # the library's own move, seen now: the start before it; else the one last known
        own = bool(snap.get("pending")) and appt is not None and not _differs(appt, snap)
        previous = parse_instant(snap.get("prev") if own else snap.get("start"))
    event_id = observed.version if source == "webhook" else f"{observed.appointment_id}@{observed.version}"
    return AppointmentChange(
        provider=provider,
        kind=kind,
        appointment_id=observed.appointment_id,
        appointment=appt,
        changed_at=observed.modified_at.astimezone(UTC),
        event_id=event_id,
        by_library=isinstance(reference, str) and bool(reference),
        source=source,
        previous_start=previous,
    )


# -- cursors --------------------------------------------------------------------------------

CURSOR_VERSION = 1
#: how far behind the newest change the cursor remembers what it reported (the overlap)
SEEN_WINDOW = _dt.timedelta(minutes=15)
#: at most this many remembered ids per cursor (the newest kept)
SEEN_LIMIT = 2000
_BAD_CURSOR = "is not a cursor from changes() (pass the cursor string a ChangeBatch returned, or a datetime)"


def account_digest(account: str) -> str:
    return hashlib.sha256(account.encode("utf-8")).hexdigest()[:16]


_DIGEST = 12


def seen_digest(event_id: str) -> str:
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:_DIGEST]


def _pack_seen(seen: dict[str, float]) -> dict[str, str]:
    """Compact for the cursor: whole epoch seconds -> the digests seen then, concatenated."""
    packed: dict[str, list[str]] = {}
    for digest, at in seen.items():
        packed.setdefault(str(int(at)), []).append(digest)
    return {second: "".join(sorted(digests)) for second, digests in packed.items()}


def _unpack_seen(packed: object) -> dict[str, float]:
    if not isinstance(packed, dict):
        raise ValueError("seen")
    seen: dict[str, float] = {}
    for second, digests in packed.items():
        if not isinstance(digests, str) or len(digests) % _DIGEST:
            raise ValueError("seen")
        for i in range(0, len(digests), _DIGEST):
            seen[digests[i : i + _DIGEST]] = float(int(second))
    return seen


@attrs.frozen
class Cursor:
    """What a cursor string holds: the provider and account it belongs to, the adapter's
    position, the feed's start, and the changes already reported in the overlap window."""

    provider: ProviderName
    account: str  # the digest
    position: dict[str, Any]
    start: _dt.datetime | None = None
    #: digest of "<appointment_id>@<version>" -> epoch seconds of its modification
    seen: dict[str, float] = attrs.field(factory=dict)

    def encode(self) -> str:
        body = {
            "v": CURSOR_VERSION,
            "provider": self.provider.value,
            "account": self.account,
            "position": self.position,
            "start": _text(self.start),
            "seen": _pack_seen(self.seen),
        }
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        check = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        raw = json.dumps({"c": check, "b": body}, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: object) -> Cursor:
        """The cursor ``text`` encodes; a ValidationError naming ``since`` for anything else."""
        if not isinstance(text, str) or not 8 <= len(text) <= 1_000_000:
            raise ValidationError([("since", _BAD_CURSOR)])
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            outer = json.loads(raw)
            body = outer["b"]
            check = hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).hexdigest()[:12]
            if outer["c"] != check or body["v"] != CURSOR_VERSION:
                raise ValueError("checksum or version")
            position = body["position"]
            seen = _unpack_seen(body["seen"])
            if not isinstance(position, dict) or not isinstance(body["account"], str):
                raise ValueError("shape")
            start = parse_instant(body["start"]) if body.get("start") else None
            return cls(
                provider=ProviderName(body["provider"]),
                account=body["account"],
                position=position,
                start=start,
                seen=seen,
            )
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError([("since", _BAD_CURSOR)]) from None

    def check_for(self, provider: ProviderName, account: str) -> None:
        if self.provider is not provider or self.account != account_digest(account):
            raise ValidationError(
                [("since", f"belongs to another provider or account, not {provider.label} as configured now")]
            )


def remember_seen(seen: dict[str, float], reported: Iterable[tuple[str, _dt.datetime]]) -> dict[str, float]:
    """``seen`` plus the newly reported ids, less those older than the overlap window (bounded)."""
    merged = dict(seen)
    for event_id, at in reported:
        merged[seen_digest(event_id)] = float(int(at.timestamp()))
    if not merged:
        return merged
    newest = max(merged.values())
    floor = newest - SEEN_WINDOW.total_seconds()
    kept = sorted(((at, k) for k, at in merged.items() if at >= floor), reverse=True)[:SEEN_LIMIT]
    return {k: at for at, k in kept}


def feed_key(name: str, provider: ProviderName, account: str) -> str:
    """Where a named feed's cursor lives in the state store."""
    return f"feed:{provider.value}:{account_digest(account)}:{name}"


def poll(
    store: StateStore,
    observe: Any,
    *,
    provider: ProviderName,
    account: str,
    cursor: Cursor | None,
    start: _dt.datetime | None,
    now: _dt.datetime,
    ttl: float,
    record: bool = True,
) -> ChangeBatch:
    """One poll of the feed: the adapter's ``observe(position, now)`` from ``cursor`` (or from
    ``start``, or from ``now`` when neither), classified, de-duplicated, with the next cursor.
    ``record=False``: classified against the snapshots without writing them (a read-only look
    that takes no change away from other feeds or webhooks)."""
    view: SnapshotStore = store if record else SnapshotView(store)
    if cursor is None:
        first = observe(None, start if start is not None else now)
        cursor = Cursor(provider, account_digest(account), dict(first.position), start=start or now)
        if start is None:
            return ChangeBatch((), cursor.encode())
    page = observe(cursor.position, now)
    events: list[AppointmentChange] = []
    reported: list[tuple[str, _dt.datetime]] = []
    taken: set[str] = set()
    for item in sorted(page.observed, key=lambda o: o.modified_at):
        feed_id = f"{item.appointment_id}@{item.version}"
        digest = seen_digest(feed_id)
        if digest in cursor.seen or digest in taken:
            continue
        taken.add(digest)
        reported.append((feed_id, item.modified_at))
        change = classify(
            view, item, provider=provider, account=account, source="feed", ttl=ttl, feed_start=cursor.start
        )
        if change is not None:
            events.append(change)
    nxt = Cursor(
        provider, cursor.account, dict(page.position), start=cursor.start, seen=remember_seen(cursor.seen, reported)
    )
    return ChangeBatch(tuple(events), nxt.encode())


def store_error(what: str, exc: Exception) -> StateStoreError:
    return StateStoreError(f"the change feed could not {what} in the state store ({type(exc).__name__})")
