"""Where the library keeps what must outlive a call or be shared between processes.

One setting, ``PMS_STATE_URL`` (or ``PMSClient(state=...)``), picks the store:

* ``memory://`` (the default): this process only, shared by every client in it;
* ``sqlite:///path/to/state.db``: every process on one host, no server;
* ``redis://host:port/db`` (or ``rediss://``): a fleet of machines (``pip install
  'pms-integration[redis]'``).

Three things live there (docs/deployment.md says which URL suits which deployment):

* **booking memory** (:class:`pms_integration.client.BookingMemory`): finished references, the
  references whose outcome is unknown, and a lock per reference in flight, so one booking is
  made per reference however many workers retry it;
* **rate budgets**: one request budget per vendor account, shared by every process;
* **rotated OAuth tokens**, refreshed by one process at a time.

Every store offers the same few atomic steps (:class:`StateStore`); what the library builds
from them lives beside their users (``_once.py``, ``state/_budget.py``, the token refresh).
A store that cannot be reached raises :class:`~pms_integration.errors.StateStoreError`; a
booking then fails closed (nothing is sent to the vendor).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import attrs

from .. import _green
from ..errors import ConfigurationError, StateStoreError

__all__ = [
    "Claim",
    "StateStore",
    "StateCheck",
    "open_state",
    "default_state",
    "check_state",
    "hold",
    "StoreTokens",
    "DEFAULT_STATE_URL",
    "DEFAULT_REMEMBER_SECONDS",
    "PENDING",
]

DEFAULT_STATE_URL = "memory://"
#: A claim's pending mark is the value at ``key + PENDING`` (readable with ``get``).
PENDING = "#pending"
#: How long a finished booking (and an unknown outcome) is remembered: three days.
DEFAULT_REMEMBER_SECONDS = 3 * 24 * 3600.0


@attrs.frozen
class Claim:
    """What :meth:`StateStore.claim` found for a key.

    * ``result``: the key's finished result (nothing else was done: no lock was taken);
    * else ``token``: the lock is ours, with this fencing token (larger than every earlier
      holder's); ``pending`` tells whether an earlier holder left the outcome unknown;
    * else the lock is someone else's, for ``busy_for`` more seconds at most.
    """

    key: str
    token: int | None = None
    result: str | None = None
    pending: bool = False
    busy_for: float = 0.0

    @property
    def held(self) -> bool:
        return self.token is not None


@runtime_checkable
class StateStore(Protocol):
    """The atomic steps every store offers. Every method is thread-safe and bounded: it either
    answers within a few seconds (less when the caller's deadline is nearer) or raises
    :class:`~pms_integration.errors.StateStoreError`.

    Keys are plain text; the store puts its namespace in front of them. ``ttl`` is in seconds
    (``None``: kept until deleted).
    """

    #: ``memory``, ``sqlite`` or ``redis``
    kind: str
    #: the URL without any password (safe to log)
    url: str
    namespace: str

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None) -> None: ...

    def delete(self, key: str) -> None: ...

    def claim(self, key: str, lease: float, ttl: float) -> Claim:
        """Atomically: the key's result if it has one; else its lock, taken for ``lease``
        seconds with a new fencing token, if nobody holds it; else how long it stays held.
        The fencing counter is kept ``ttl`` seconds."""
        ...

    def mark(self, claim: Claim, ttl: float) -> bool:
        """Mark the key pending (outcome unknown) for ``ttl`` seconds if ``claim``'s lock is still
        held and not expired (the lease is not extended); False (nothing changed) otherwise."""
        ...

    def settle(self, claim: Claim, result: str | None, pending: bool, ttl: float) -> bool:
        """If no later claim took the key (fencing): store ``result`` (unless None), set or clear
        the pending mark, release the lock; True. False, changing nothing, otherwise."""
        ...

    def take_slot(self, budget: str, limit: int, window: float, stale: float) -> tuple[str | None, float]:
        """A slot of ``budget`` if fewer than ``limit`` slots are in flight or finished within
        the last ``window`` seconds: ``(slot id, 0.0)``. Otherwise ``(None, seconds)``: try
        again after at most that long. A slot never finished counts as finished ``stale``
        seconds after it was taken. Times are the store's own clock."""
        ...

    def finish_slot(self, budget: str, slot: str) -> None:
        """The request of ``slot`` is back: it keeps counting for one window from now."""
        ...

    def close(self) -> None: ...


# -- opening a store by URL --------------------------------------------------------------------


def open_state(url: str = DEFAULT_STATE_URL, *, namespace: str = "") -> StateStore:
    """The store at ``url`` (``memory://``, ``sqlite:///path``, ``redis://host:port/db``).

    ``namespace`` keeps several practices (or environments) apart in one store; it may also be
    given in the URL as ``?namespace=...``. ``memory://`` with no namespace is the process-wide
    store every client shares by default.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            "PMS_STATE_URL must be memory://, sqlite:///path/to/file.db or redis://host:port/db",
            problems=["PMS_STATE_URL"],
        )
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    rest, namespace = _namespace_from(rest, namespace)
    if scheme == "memory":
        if rest.strip("/?"):
            raise ConfigurationError("PMS_STATE_URL memory:// takes no host or path", problems=["PMS_STATE_URL"])
        return default_state() if not namespace else _memory_store(namespace)
    if scheme in ("sqlite", "redis", "rediss"):
        url = f"{scheme}://{rest}"  # the namespace travels separately, never in the store's URL
        # one store (one connection pool) per URL and namespace in a process, shared by every
        # client and reload that names it; it lives as long as the process
        with _default_lock:
            store = _opened.get((url, namespace))
            if store is None:
                store = _opened[(url, namespace)] = _open_server_store(scheme, url, namespace)
            return store
    raise ConfigurationError(
        f"PMS_STATE_URL has an unknown scheme {scheme!r}: use memory://, sqlite:/// or redis://",
        problems=["PMS_STATE_URL"],
    )


def _open_server_store(scheme: str, url: str, namespace: str) -> StateStore:
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return SQLiteStore.from_url(url, namespace=namespace)
    from ._redis import RedisStore

    return RedisStore.from_url(url, namespace=namespace)


def _namespace_from(rest: str, given: str) -> tuple[str, str]:
    """Take ``namespace=`` out of the URL's query (other options, such as Redis TLS settings,
    stay); the argument wins when both are given."""
    from urllib.parse import parse_qsl, urlencode

    path, _, query = rest.partition("?")
    options = parse_qsl(query, keep_blank_values=True)
    named = [value for key, value in options if key == "namespace"]
    others = urlencode([(key, value) for key, value in options if key != "namespace"])
    namespace = given or (named[-1] if named else "")
    if namespace and not all(c.isalnum() or c in "-_." for c in namespace):
        raise ConfigurationError(
            "the state namespace may hold letters, digits, '-', '_' and '.' only", problems=["PMS_STATE_URL"]
        )
    return path + (f"?{others}" if others else ""), namespace


_default_lock = threading.Lock()
_default: StateStore | None = None
_named: dict[str, StateStore] = {}
_opened: dict[tuple[str, str], StateStore] = {}


def _memory_store(namespace: str) -> StateStore:
    """One memory store per namespace in this process (so two clients naming it share it)."""
    from ._memory import MemoryStore

    with _default_lock:
        store = _named.get(namespace)
        if store is None:
            store = _named[namespace] = MemoryStore(namespace=namespace)
        return store


def default_state() -> StateStore:
    """The process-wide memory store every client uses unless told otherwise."""
    global _default
    with _default_lock:
        if _default is None:
            from ._memory import MemoryStore

            _default = MemoryStore()
        return _default


def reset_memory_state() -> None:
    """Forget everything the process-wide memory stores hold (tests start from a clean slate)."""
    global _default
    with _default_lock:
        _default = None
        _named.clear()


# -- what the library builds on the steps -------------------------------------------------------


@contextlib.contextmanager
def hold(
    store: StateStore, key: str, *, lease: float, wait: float, what: str, sleep_until_free: float = 0.05
) -> Iterator[Claim]:
    """Hold ``key``'s lock across processes while the block runs (one holder at a time).

    Waits at most ``wait`` seconds for another holder; ``StateStoreError`` (code
    ``STATE_LOCK_BUSY``) after that. ``what`` names the work for that message.
    """
    give_up = time.monotonic() + max(wait, 0.0)
    pause = 0.005
    while True:
        claim = store.claim(key, lease, lease)
        if claim.held:
            break
        left = give_up - time.monotonic()
        if left <= 0:
            raise StateStoreError(
                f"{what} is held by another process for up to {claim.busy_for:.1f} s more",
                code="STATE_LOCK_BUSY",
                store=store.url,
            )
        _green.sleep(min(pause, left, max(claim.busy_for, 0.001)))  # awaited inside an async call
        pause = min(pause * 2, sleep_until_free)
    try:
        yield claim
    finally:
        with contextlib.suppress(StateStoreError):
            store.settle(claim, None, False, lease)


@attrs.frozen
class StateCheck:
    """What :func:`check_state` found: the store answered a write, a read, a lock and a delete."""

    kind: str
    url: str
    namespace: str
    round_trip_ms: float

    def __str__(self) -> str:
        where = f"{self.url} (namespace {self.namespace!r})" if self.namespace else self.url
        return f"state store {self.kind} at {where}: reachable and writable ({self.round_trip_ms:.1f} ms a step)"


def check_state(store: StateStore) -> StateCheck:
    """Write, read, lock and delete a probe key; :class:`StateStoreError` if any step fails."""
    key = f"check:{uuid.uuid4().hex}"
    started = time.perf_counter()
    store.put(key, "ok", 60.0)
    if store.get(key) != "ok":
        raise StateStoreError("the state store did not return the value just written", store=store.url)
    claim = store.claim(key + ":lock", 5.0, 60.0)
    if not claim.held or not store.settle(claim, None, False, 60.0):
        raise StateStoreError("the state store could not take and release a lock", store=store.url)
    store.delete(key)
    elapsed = (time.perf_counter() - started) * 1000 / 5
    return StateCheck(store.kind, store.url, store.namespace, round(elapsed, 2))


class StoreTokens:
    """A :class:`~pms_integration.tokens.TokenStore` kept in a state store (no expiry), so rotated
    refresh tokens reach every process that shares the store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def load(self, key: str) -> str | None:
        return self.store.get(f"token:{key}")

    def save(self, key: str, value: str) -> None:
        self.store.put(f"token:{key}", value, None)

    def __repr__(self) -> str:
        return f"StoreTokens({self.store.url})"
