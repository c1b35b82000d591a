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
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from ._retry import current_deadline
from .errors import PMSError, ProviderError, UnexpectedResponseError, ValidationError
from .models import Appointment, AppointmentRequest, ProviderName

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
    """What a process remembers about its bookings, shared by a client and its reloads.

    * finished bookings by reference: booking the same reference again returns the first
      result without a second create;
    * references whose last attempt ended with ``outcome_unknown``: the next attempt looks the
      booking up before it creates anything;
    * one lock per reference in flight, so concurrent attempts at one booking run one at a time.

    Keys include the account a provider points at (host plus location, owner or pipeline), so a
    reload that points a provider elsewhere does not reuse another account's bookings. Both
    stores are bounded (oldest forgotten first).
    """

    def __init__(self, size: int = _DEDUPE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._booked: BoundedCache[_Key, tuple[AppointmentRequest, Appointment]] = BoundedCache(size)
        self._uncertain: BoundedCache[_Key, bool] = BoundedCache(size)
        self._key_locks: dict[_Key, list[Any]] = {}  # key -> [lock, holders]

    def book(
        self,
        key: _Key,
        request: AppointmentRequest,
        create: Callable[[], Appointment],
        recover: Callable[[], Appointment | None],
    ) -> Appointment:
        """``create`` the booking once per key: a finished one is returned again (the same
        request only), an uncertain one is ``recover``-ed before anything is created."""
        with self._hold(key):
            done = self._booked.get(key)
            if done is not None:
                if done[0] != request:
                    raise ValidationError.single(
                        "reference",
                        f"{request.reference!r} was already used for a different booking; use a new reference",
                    )
                return done[1]
            try:
                appointment = recover() if key in self._uncertain else None
                if appointment is None:
                    appointment = create()
            except ProviderError as exc:
                if exc.outcome_unknown:
                    self._uncertain.put(key, True)
                raise
            self._uncertain.pop(key)
            self._booked.put(key, (request, appointment))
            return appointment

    def forget_appointment(self, provider: ProviderName, appointment_id: str) -> None:
        self._booked.drop_where(lambda k, v: k[0] == provider and v[1].id == appointment_id)

    # -- the pieces book() used to be assembled from (deprecated: call book()) --------------

    def booked(self, key: _Key) -> tuple[AppointmentRequest, Appointment] | None:
        _deprecated("BookingMemory.booked()")
        return self._booked.get(key)

    def is_uncertain(self, key: _Key) -> bool:
        _deprecated("BookingMemory.is_uncertain()")
        return key in self._uncertain

    def remember(self, key: _Key, request: AppointmentRequest, appointment: Appointment) -> None:
        _deprecated("BookingMemory.remember()")
        self._uncertain.pop(key)
        self._booked.put(key, (request, appointment))

    def mark_uncertain(self, key: _Key) -> None:
        _deprecated("BookingMemory.mark_uncertain()")
        self._uncertain.put(key, True)

    def hold(self, key: _Key) -> contextlib.AbstractContextManager[None]:
        _deprecated("BookingMemory.hold()")
        return self._hold(key)

    @contextlib.contextmanager
    def _hold(self, key: _Key) -> Iterator[None]:
        """Serialise attempts at one booking (the lock is dropped when nobody holds it)."""
        with self._lock:
            entry = self._key_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._key_locks[key]


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
