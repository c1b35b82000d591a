"""Never double-book: the one module that owns duplicate safety.

Three layers, from the outside in:

* :class:`BookingMemory` (used by the client): what this process booked, or left uncertain,
  by reference; ``BookingMemory.book`` runs one attempt per reference at a time.
* :func:`create_once` (used by every adapter through ``BaseAdapter.create_once``): a create that
  failed ambiguously is followed by a look-up by reference, never by a blind second create.
* :class:`BoundedCache`: the one bounded, thread-safe map behind the memory and the adapters'
  id caches (oldest entry forgotten first).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from . import _green
from ._retry import current_deadline
from .errors import (
    BookingInProgressError,
    PMSError,
    ProviderError,
    StateStoreError,
    UnexpectedResponseError,
    ValidationError,
)
from .models import Appointment, AppointmentRequest, AppointmentStatus, ProviderName
from .state import DEFAULT_REMEMBER_SECONDS, PENDING, Claim, StateStore

__all__ = ["BookingMemory", "BoundedCache", "create_once"]

log = logging.getLogger("pms_integration")
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
_DEDUPE_SIZE = 10_000
_Key = tuple[ProviderName, str, str]  # provider, the account it points at, booking reference


class BoundedCache(Generic[K, V]):
    """A thread-safe map that keeps at most ``size`` entries, forgetting the oldest first."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[K, V] = collections.OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._items.pop(key, None)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if predicate(k, v)]:
                del self._items[key]


class BookingMemory:
    """What the library remembers about bookings, kept in a state store so that every client,
    process and machine sharing the store makes one booking per reference.

    * finished bookings by reference: booking the same reference again returns the first
      result without a second create (the same request only: a reference reused for another
      booking is a ValidationError);
    * references whose outcome is unknown (an attempt failed ambiguously, or its worker died
      mid-attempt): the next attempt looks the booking up before it creates anything;
    * one lock per reference in flight, across processes (a lease, so a crashed holder never
      blocks the reference for longer than one operation's deadline, with fencing so a late
      holder cannot overwrite the result of the one after it).

    Keys include the account a provider points at (host plus location, owner or pipeline), so a
    reload that points a provider elsewhere does not reuse another account's bookings. Entries
    expire after ``remember`` seconds. ``BookingMemory()`` with no store keeps its own private
    memory (tests); clients share the store named by ``PMS_STATE_URL``.
    """

    def __init__(
        self,
        size: int = _DEDUPE_SIZE,
        *,
        store: StateStore | None = None,
        remember: float = DEFAULT_REMEMBER_SECONDS,
    ) -> None:
        from .state._memory import MemoryStore

        self.size = size
        self.store: StateStore = store if store is not None else MemoryStore(size=size)
        self.keep_for = remember
        self._lock = threading.Lock()
        self._key_locks: dict[_Key, list[Any]] = {}  # key -> [lock, holders]
        self._requests: BoundedCache[str, AppointmentRequest] = BoundedCache(size)  # deprecated booked() only
        # what this process booked: a replay of the same record returns the same object (raw included)
        self._objects: BoundedCache[str, tuple[str, Appointment]] = BoundedCache(min(size, 1000))

    def __repr__(self) -> str:
        return f"BookingMemory({self.store.url})"

    def book(
        self,
        key: _Key,
        request: AppointmentRequest,
        create: Callable[[], Appointment],
        recover: Callable[[], Appointment | None],
    ) -> Appointment:
        """``create`` the booking once per key: a finished one is returned again (the same
        request only), an uncertain one is ``recover``-ed before anything is created.

        Waits for another attempt at the same key (in this process or another) for at most
        the operation's deadline; :class:`BookingInProgressError` after that. The state store
        failing before the create is a :class:`StateStoreError` (nothing was sent)."""
        name = _name(key)
        with self._hold(key):
            claim = self._claim(name, key)
            if claim.result is not None:
                return self._replay(name, claim.result, request)
            marked = False
            try:
                appointment = recover() if claim.pending else None
                if appointment is None:
                    if not self.store.mark(claim, self.keep_for):
                        raise StateStoreError(
                            f"the lock on reference {key[2]!r} expired before the booking was sent; nothing was "
                            "booked by this attempt",
                            code="STATE_LEASE_LOST",
                            store=self.store.url,
                        )
                    marked = True
                    appointment = create()
            except BaseException as exc:
                unknown = isinstance(exc, ProviderError) and exc.outcome_unknown
                self._settle(claim, None, claim.pending or unknown or (marked and not isinstance(exc, PMSError)))
                raise
            record = _record(request, appointment)
            self._settle(claim, record, False)
            self._objects.put(name, (record, appointment))
            with contextlib.suppress(StateStoreError):
                self.store.put(_id_key(key[0], appointment.id), name, self.keep_for)
            return appointment

    def _replay(self, name: str, record: str, request: AppointmentRequest) -> Appointment:
        appointment = _replay(record, request)
        mine = self._objects.get(name)
        return mine[1] if mine is not None and mine[0] == record else appointment

    def _claim(self, name: str, key: _Key) -> Claim:
        """The reference's result, or its lock; waits (with backoff) while another holds it."""
        deadline = current_deadline()
        # a real-time bound as well: a test's fake clock must not make the wait endless
        give_up = time.monotonic() + (_NO_DEADLINE if deadline is None else max(deadline.remaining(), 0.0))
        pause = 0.005
        busy_for = 0.0
        while True:
            left = min(give_up - time.monotonic(), _NO_DEADLINE if deadline is None else deadline.remaining())
            # the deadline went on waiting for another attempt (in this process or another): say
            # so, rather than ask a store that is given no time (a StateStoreError would blame it)
            lease = max(left, 0.0) + _LEASE_MARGIN
            claim = None if deadline is not None and left <= 0 else self.store.claim(name, lease, self.keep_for)
            if claim is not None and (claim.result is not None or claim.held):
                return claim
            busy_for = busy_for if claim is None else claim.busy_for
            if claim is None or left <= min(pause, claim.busy_for):
                raise BookingInProgressError(
                    f"reference {key[2]!r} is held by another attempt for up to {busy_for:.1f} s more (another "
                    "worker's booking, or an earlier attempt whose state-store step did not answer in time) and was "
                    "not released within this call's deadline",
                    provider=key[0].value,
                    reference=key[2],
                    retry_after=round(busy_for, 3),
                )
            _green.sleep(min(pause, max(busy_for, 0.001), left))  # awaited inside an async call
            pause = min(pause * 2, 0.1)

    def _settle(self, claim: Claim, record: str | None, pending: bool) -> None:
        """Store the outcome and let the reference go; a store failure here is logged (the
        pending mark, set before the create, makes the next attempt look the booking up)."""
        try:
            if not self.store.settle(claim, record, pending, self.keep_for):
                log.warning("booking %s: a later attempt took the reference over; its outcome stands", claim.key)
        except StateStoreError as exc:
            log.error(
                "booking %s: the outcome could not be recorded in the state store (%s); the next attempt at this "
                "reference looks it up at the vendor first",
                claim.key,
                exc.code,
            )

    def forget_appointment(self, provider: ProviderName, appointment_id: str) -> None:
        """A cancelled appointment's reference may be booked afresh."""
        try:
            name = self.store.get(_id_key(provider, appointment_id))
            if name is not None:
                self.store.delete(name)
                self.store.delete(_id_key(provider, appointment_id))
        except StateStoreError as exc:
            log.warning("could not forget cancelled appointment in the state store (%s)", exc.code)

    # -- the pieces book() used to be assembled from (deprecated: call book()) --------------

    def booked(self, key: _Key) -> tuple[AppointmentRequest, Appointment] | None:
        _deprecated("BookingMemory.booked()")
        record, request = self.store.get(_name(key)), self._requests.get(_name(key))
        return None if record is None or request is None else (request, self._replay(_name(key), record, request))

    def is_uncertain(self, key: _Key) -> bool:
        _deprecated("BookingMemory.is_uncertain()")
        return self.store.get(_name(key) + PENDING) is not None

    def remember(self, key: _Key, request: AppointmentRequest, appointment: Appointment) -> None:
        _deprecated("BookingMemory.remember()")
        self._requests.put(_name(key), request)
        record = _record(request, appointment)
        self.store.put(_name(key), record, self.keep_for)
        self._objects.put(_name(key), (record, appointment))
        self.store.delete(_name(key) + PENDING)

    def mark_uncertain(self, key: _Key) -> None:
        _deprecated("BookingMemory.mark_uncertain()")
        self.store.put(_name(key) + PENDING, "1", self.keep_for)

    def hold(self, key: _Key) -> contextlib.AbstractContextManager[None]:
        _deprecated("BookingMemory.hold()")
        return self._hold(key)

    @contextlib.contextmanager
    def _hold(self, key: _Key) -> Iterator[None]:
        """Serialise this process's attempts at one booking (so only one of its threads asks
        the store), within the operation's deadline; the lock is dropped when nobody holds it.
        It is held across the booking's requests, so it is a :class:`_green.Lock` (an async call
        awaits it); ``self._lock`` guards the map only and stays a ``threading.Lock``."""
        with self._lock:
            entry = self._key_locks.setdefault(key, [_green.Lock(), 0])
            entry[1] += 1
        try:
            deadline = current_deadline()
            if not entry[0].acquire(timeout=-1 if deadline is None else max(deadline.remaining(), 0.0)):
                raise BookingInProgressError(
                    f"another call in this process is booking reference {key[2]!r} and did not finish within "
                    "this call's deadline",
                    provider=key[0].value,
                    reference=key[2],
                )
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._key_locks[key]


#: Seconds a lease outlives the operation's deadline (clock drift, the last answer's handling).
_LEASE_MARGIN = 5.0
#: The lease of an attempt that runs without a deadline (tests calling BookingMemory directly).
_NO_DEADLINE = 60.0


def _name(key: _Key) -> str:
    provider, account, reference = key
    return f"booking:{provider.value}:{account}:{reference}"


def _id_key(provider: ProviderName, appointment_id: str) -> str:
    return f"booked-id:{provider.value}:{appointment_id}"


def _fingerprint(request: AppointmentRequest) -> str:
    """A digest of the request (the store keeps no patient details, only this)."""
    from .models import get_converter

    text = json.dumps(get_converter().unstructure(request), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _record(request: AppointmentRequest, appointment: Appointment) -> str:
    return json.dumps(
        {
            "request": _fingerprint(request),
            "provider": appointment.provider.value,
            "id": appointment.id,
            "status": appointment.status.value,
            "start": appointment.start.isoformat() if appointment.start else None,
            "end": appointment.end.isoformat() if appointment.end else None,
            "reference": appointment.reference,
            "contact_id": appointment.contact_id,
            "title": appointment.title,
        }
    )


def _replay(record: str, request: AppointmentRequest) -> Appointment:
    """The remembered booking, if ``request`` is the one it was made for."""
    try:
        data = json.loads(record)
        same = data["request"] == _fingerprint(request)
        appointment = Appointment(
            ProviderName(data["provider"]),
            data["id"],
            AppointmentStatus(data["status"]),
            _dt.datetime.fromisoformat(data["start"]) if data["start"] else None,
            _dt.datetime.fromisoformat(data["end"]) if data["end"] else None,
            reference=data["reference"],
            contact_id=data["contact_id"],
            title=data["title"],
            raw={"remembered": True},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StateStoreError(
            f"the state store holds an unreadable record for reference {request.reference!r} ({type(exc).__name__})",
            code="STATE_CORRUPT",
        ) from None
    if not same:
        raise ValidationError.single(
            "reference", f"{request.reference!r} was already used for a different booking; use a new reference"
        )
    return appointment


def _deprecated(what: str) -> None:
    warnings.warn(f"{what} is deprecated; use BookingMemory.book()", DeprecationWarning, stacklevel=3)


def create_once(
    create: Callable[[], T],
    find: Callable[[], T | None],
    *,
    provider: ProviderName,
    operation: str,
    reference: str,
    attempts: int = 2,
) -> T:
    """Create a record without ever creating it twice.

    ``create`` sends the non-idempotent request; ``find`` looks the record up by its reference
    (with idempotent requests only). After a failure whose outcome is unknown (a timeout or a
    reset after the request went out, a 5xx), ``find`` runs first: a record that exists is
    returned as the result; otherwise the create is tried again, up to ``attempts`` times in
    all. If the look-up itself fails, the original error is raised with ``outcome_unknown``
    and the reference in its message, because nobody can tell whether the record exists.

    A create answered with success that could not be read (``UnexpectedResponseError``) did
    make its record: it is looked up, but never sent again when the look-up misses.
    """
    last: ProviderError | None = None
    for _ in range(max(attempts, 1)):
        try:
            return create()
        except ProviderError as exc:
            if not exc.outcome_unknown:
                raise
            last = exc
            log.warning(
                "%s %s: outcome unknown (%s); looking up reference %s before any retry",
                provider.value,
                operation,
                type(exc).__name__,
                reference,
            )
        deadline = current_deadline()
        if deadline is not None and deadline.expired():
            break
        try:
            found = find()
        except PMSError as lookup_error:
            log.warning(
                "%s %s: look-up of %s failed (%s)", provider.value, operation, reference, type(lookup_error).__name__
            )
            break
        if found is not None:
            log.info("%s %s: reference %s already exists; not creating again", provider.value, operation, reference)
            return found
        if isinstance(last, UnexpectedResponseError):
            break
    assert last is not None
    last.reference = reference
    last.outcome_unknown = True
    raise last
