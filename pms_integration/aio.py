"""The asyncio API: the same operations, awaited, with the same models, errors and configuration.

::

    from pms_integration import aio

    appointment = await aio.book_appointment({...}, provider="hubspot")

    async with aio.AsyncPMSClient(environ={...}) as client:
        slots = await client.free_slots(start, end)

Needs the ``[aio]`` extra (aiohttp and greenlet). ``import pms_integration`` never imports this
module; importing it imports neither aiohttp nor greenlet (the first client does).

How it works
------------
There is one implementation. Each awaited call runs the ordinary sync core (the adapters, the
booking memory, the retries, the rate limiter, the token refresh) in a greenlet on the event
loop's thread (``pms_integration._green``); wherever that code would block - a request on the
wire, a retry's backoff, a rate-limit pause, a wait for another booking of the same reference -
the greenlet hands the wait to the loop and the call is suspended, awaited. HTTP goes through
aiohttp; a SQLite or Redis state store (``PMS_STATE_URL``) is reached from a worker thread,
awaited. Nothing blocks the loop.

Cancellation and deadlines
--------------------------
* **Every call is bounded by its deadline** (``PMS_DEADLINE_MS``), as in the sync API: the
  retries, waits and requests of one operation all come out of it. As a safety net, a call
  that is still running a few seconds (``DEADLINE_GRACE``) after its deadline is stopped and
  raises :class:`~pms_integration.TransportError` (``outcome_unknown`` for a create).
* **Creates are never orphaned, never duplicated.** ``book_appointment`` and
  ``push_performance_report`` run in a task of their own, which the caller awaits through
  ``asyncio.shield``. When the caller's await is cancelled (``task.cancel()``,
  ``asyncio.wait_for`` or ``asyncio.timeout`` running out), the caller gets its
  ``CancelledError`` (or ``TimeoutError``) at once, and the create goes on in the background -
  bounded by its deadline - until its outcome is settled in the booking memory under its
  reference. Retry with the **same request and reference**: a retry that arrives while the
  create is still in flight waits for it (the per-reference claim) and returns its booking; one
  that arrives after returns the remembered booking; if the create failed, the retry books
  afresh (or, when that failure left the outcome unknown, looks the booking up at the vendor
  first). Never retry with a new reference: that is a new booking.
* A report push goes on in the same way. The vendors keep no reference for a report, so pushes
  of one report run one at a time wherever they come from (a lock per report in the state store,
  as in the sync API): a retry waits for the push still in flight, then finds the record it made
  and updates it. A registered report source is called on the loop: keep it quick.
* The client keeps a strong reference to those background creates; ``aclose()`` (and leaving
  ``async with``) waits for them, for at most the deadline plus ``DEADLINE_GRACE``; one still
  running after that is cancelled where it waits, and its reference is marked uncertain, so the
  next attempt looks the booking up before creating anything. A create whose caller was
  cancelled logs its outcome (``pms_integration`` logger, with the reference: INFO when it
  succeeded, WARNING when it failed).
* **Reads, updates and cancels** are simply cancelled: the cancellation is thrown into the sync
  core at the point where it waits (an in-flight request is abandoned). An update or cancel that
  was already on the wire may or may not have been applied - they are idempotent: repeat them.
* When the event loop itself shuts down (the end of ``asyncio.run``), asyncio cancels every task
  still running, background creates included: their references are marked uncertain as above.
  Await ``aclose()`` (or use ``async with``) before the loop ends to let them finish.

The default client (the module-level functions)
-----------------------------------------------
The module functions run on a default :class:`AsyncPMSClient` per event loop (an aiohttp
session belongs to the loop that made it), built on first use in that loop from the
environment (and ``./.env``) - or from the configuration :func:`reload` last applied, which then
holds for every loop until the next :func:`reload`. It is closed when its loop shuts down through
``asyncio.run`` (or ``loop.shutdown_asyncgens()``). It is independent of the sync API's default
client (``pms_integration.reload()`` does not touch it, nor :func:`reload` the sync one); both
keep their booking memory in the same state store, so a reference books once across both.
:func:`get_client` (awaited) returns the running loop's default client.

Where the methods differ from :class:`~pms_integration.PMSClient`
------------------------------------------------------------------
Every operation is a coroutine function with the same parameters, including ``providers()``
(it does no I/O, but every operation of this API is awaited, so there is one rule to remember).
The cheap look-ups with no I/O stay plain methods: ``enabled_providers()``, ``resolve()``,
``adapter()``, ``rate_limit_info()``. ``close()`` is ``aclose()``. A ``memory=`` you pass keeps
the store it was built on; to share a SQLite or Redis store, pass ``state=`` instead (the
client then reaches it off the loop).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import importlib.util
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _green, models
from ._once import BookingMemory
from ._ratelimit import RateLimitInfo
from ._retry import RetryPolicy
from .changes import AppointmentChange, ChangeBatch, Observed
from .client import PMSClient, _check_arguments, _open_state
from .config import PMSConfig, load_config
from .errors import ConfigurationError, TransportError
from .models import (
    DEFAULT_DURATION_MINUTES,
    Appointment,
    AppointmentList,
    AppointmentRequest,
    AppointmentUpdate,
    PatientList,
    PerformanceReport,
    ProviderName,
    ProviderStatusList,
    ReportReceipt,
    SlotList,
)
from .provider import Provider
from .reports import ReportSource
from .state import StateCheck, StateStore
from .state._offloop import off_loop
from .tokens import TokenStore

if TYPE_CHECKING:
    from ._http import Transport
    from .webhooks import WebhookDelivery

__all__ = [
    "AsyncPMSClient",
    "get_client",
    "reload",
    "providers",
    "book_appointment",
    "update_appointment",
    "cancel_appointment",
    "push_performance_report",
    "free_slots",
    "find_patient",
    "get_appointment",
    "find_appointments",
    "check_state",
    "changes",
    "parse_webhook",
    "on_change",
    "bookAppointment",
    "updateAppointment",
    "cancelAppointment",
    "pushPerformanceReport",
    "getFreeSlots",
    "findPatient",
    "getAppointment",
    "findAppointments",
    "checkState",
    "getChanges",
    "parseWebhook",
    "onChange",
]

log = logging.getLogger("pms_integration")
T = TypeVar("T")

#: Seconds a call may run past its deadline (``PMS_DEADLINE_MS``) before it is stopped.
DEADLINE_GRACE = 5.0

_EXTRA_HINT = (
    "pms_integration.aio needs the [aio] extra (aiohttp and greenlet): pip install 'pms-integration[aio]' "
    "(from a checkout: pip install -e '.[aio]')"
)


def _require_extra() -> None:
    missing = [name for name in ("greenlet", "aiohttp") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(f"{_EXTRA_HINT}; missing: {', '.join(missing)}.", missing=missing)


def _transport_class() -> type[Transport]:
    """The transport whose requests are awaited (imported here: it imports aiohttp)."""
    from ._aio_http import AioTransport

    return AioTransport


class AsyncPMSClient:
    """A configured set of providers for asyncio code: :class:`~pms_integration.PMSClient`'s
    operations as coroutines. Share one client between the tasks of one event loop::

        async with AsyncPMSClient(environ={...}) as client:
            await client.book_appointment({...}, provider="hubspot")

    The arguments are :class:`~pms_integration.PMSClient`'s. Cancelling an awaited
    booking never leaves a silent orphan nor makes a duplicate (see the module documentation).
    """

    def __init__(
        self,
        config: PMSConfig | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | EllipsisType | None = ...,
        report_source: ReportSource | None = None,
        retry_policy: RetryPolicy | None = None,
        memory: BookingMemory | None = None,
        token_store: TokenStore | None = None,
        state: StateStore | str | None = None,
    ) -> None:
        _check_arguments(config, environ, retry_policy=retry_policy, memory=memory, report_source=report_source)
        _require_extra()
        config = config if config is not None else load_config(environ, env_file)
        # SQLite and Redis do blocking I/O: each step runs in a worker thread, awaited
        store = off_loop(_open_state(state, config))
        self._sync = PMSClient(
            config,
            report_source=report_source,
            retry_policy=retry_policy,
            sleep=_green.sleep,
            memory=memory,
            token_store=token_store,
            state=store,
        )
        self._sync._runtime_options["transport_class"] = _transport_class()
        #: creates running in tasks of their own (their callers may be gone): aclose() waits for them
        self._creates: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._active = 0  # calls running (the default client is closed once idle after a reload)
        self._retiring = False
        self._keeper: Any = None  # the default client's hook on its loop's shutdown

    # -- what the sync client holds --------------------------------------------------------

    @property
    def config(self) -> PMSConfig:
        return self._sync.config

    @property
    def report_source(self) -> ReportSource | None:
        return self._sync.report_source

    @property
    def state(self) -> StateStore:
        """Where booking memory, rate budgets and rotated tokens live (``PMS_STATE_URL``)."""
        return self._sync.state

    @property
    def memory(self) -> BookingMemory:
        """The duplicate-booking memory (kept in :attr:`state`)."""
        return self._sync.memory

    @property
    def token_store(self) -> TokenStore | None:
        return self._sync.token_store

    @property
    def closed(self) -> bool:
        return self._closed

    # -- introspection (no I/O: plain methods, except providers(), awaited like every operation)

    async def providers(self) -> ProviderStatusList:
        """Each provider's status: enabled, or the variables to set and the problems to fix."""
        return self._sync.providers()

    def enabled_providers(self) -> list[ProviderName]:
        return self._sync.enabled_providers()

    def resolve(self, provider: str | ProviderName | None) -> ProviderName:
        """The provider a call goes to: explicit, else PMS_DEFAULT_PROVIDER, else the only one."""
        return self._sync.resolve(provider)

    def adapter(self, provider: str | ProviderName | None = None) -> Provider:
        """The adapter for ``provider``, built on first use: for its ``capabilities`` and
        ``unsupported_reason()``. Call operations through this client, not on the adapter."""
        self._check_open()
        return self._sync.adapter(provider)

    def rate_limit_info(self, provider: str | ProviderName) -> RateLimitInfo | None:
        """The vendor's last word on the remaining quota (``None`` before the first request)."""
        return self._sync.rate_limit_info(provider)

    async def check_state(self) -> StateCheck:
        """Check that the state store (``PMS_STATE_URL``) can be used (a probe key written, read,
        locked and deleted within the deadline); :class:`StateStoreError` when it cannot."""
        return await self._call(False, self._sync.check_state)

    # -- operations ----------------------------------------------------------------------------

    async def book_appointment(
        self, request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
    ) -> Appointment:
        """Book an appointment. Returns the vendor's :class:`Appointment`.

        Booking the same ``reference`` again returns the first result without a second create,
        from any client, process or machine sharing the state store (``PMS_STATE_URL``). A
        cancelled await lets the booking finish in the background: retry with the same request
        to get it (module documentation, "Cancellation and deadlines").
        """
        return await self._create(self._sync.book_appointment, request, provider=provider)

    async def recover_booking(
        self, request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
    ) -> Appointment | None:
        """Look up the booking an earlier attempt at ``request`` left behind, by its reference;
        ``None`` when no attempt reached the vendor (then booking again is safe)."""
        return await self._call(False, self._sync.recover_booking, request, provider=provider)

    async def update_appointment(
        self,
        appointment_id: str,
        changes: AppointmentUpdate | Mapping[str, Any],
        *,
        provider: str | ProviderName | None = None,
    ) -> Appointment:
        """Change an appointment's time, title, notes or location."""
        return await self._call(False, self._sync.update_appointment, appointment_id, changes, provider=provider)

    async def cancel_appointment(
        self, appointment_id: str, *, reason: str | None = None, provider: str | ProviderName | None = None
    ) -> Appointment:
        """Cancel an appointment. Cancelling one that is already cancelled succeeds."""
        return await self._call(False, self._sync.cancel_appointment, appointment_id, reason=reason, provider=provider)

    async def push_performance_report(
        self, report: PerformanceReport | Mapping[str, Any] | None = None, *, provider: str | ProviderName | None = None
    ) -> ReportReceipt:
        """Push a report; with none given, the registered report source's current report. Like a
        booking, a cancelled await lets the push finish in the background; this client's pushes
        run one at a time, so a retry updates the record the push before it made."""
        return await self._create(self._sync.push_performance_report, report, provider=provider)

    # -- scheduling reads ----------------------------------------------------------------------

    async def free_slots(
        self,
        start: _dt.datetime | str,
        end: _dt.datetime | str,
        *,
        duration_minutes: int = DEFAULT_DURATION_MINUTES,
        provider: str | ProviderName | None = None,
    ) -> SlotList:
        """Bookable slots of ``duration_minutes`` between ``start`` and ``end`` (aware datetimes
        or ISO-8601 text, at most 31 days apart), in the practice's time zone, earliest first."""
        return await self._call(
            False, self._sync.free_slots, start, end, duration_minutes=duration_minutes, provider=provider
        )

    async def find_patient(
        self, *, email: str | None = None, phone: str | None = None, provider: str | ProviderName | None = None
    ) -> PatientList:
        """The vendor's patient records with this e-mail address and/or phone number."""
        return await self._call(False, self._sync.find_patient, email=email, phone=phone, provider=provider)

    async def get_appointment(self, appointment_id: str, *, provider: str | ProviderName | None = None) -> Appointment:
        """The appointment as the vendor holds it now, including changes staff made in the CRM."""
        return await self._call(False, self._sync.get_appointment, appointment_id, provider=provider)

    async def find_appointments(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        reference: str | None = None,
        start: _dt.datetime | str | None = None,
        end: _dt.datetime | str | None = None,
        include_cancelled: bool = False,
        provider: str | ProviderName | None = None,
    ) -> AppointmentList:
        """A patient's appointments (by e-mail or phone), or the one a conversation booked (by
        ``reference``): upcoming ones, or those in ``start``-``end``; earliest first."""
        return await self._call(
            False,
            self._sync.find_appointments,
            email=email,
            phone=phone,
            reference=reference,
            start=start,
            end=end,
            include_cancelled=include_cancelled,
            provider=provider,
        )

    # -- hearing about changes (docs/changes.md) --------------------------------------------------

    async def changes(
        self,
        since: str | _dt.datetime | None = None,
        *,
        provider: str | ProviderName | None = None,
        feed: str | None = None,
        record: bool = True,
    ) -> ChangeBatch:
        """The appointments changed on the practice's calendar since ``since`` (a cursor, an aware
        datetime, or None: start now), once each; ``feed`` keeps the cursor in the state store;
        ``record=False`` looks without writing the snapshots (see :meth:`PMSClient.changes`)."""
        return await self._call(False, self._sync.changes, since, provider=provider, feed=feed, record=record)

    async def classify_observed(
        self, observed: list[Observed], *, provider: str | ProviderName, source: str = "webhook"
    ) -> list[AppointmentChange]:
        """What an adapter's ``observe_webhook`` saw, as changes (those already reported dropped)."""
        return await self._call(False, self._sync.classify_observed, observed, provider=provider, source=source)

    async def parse_webhook(
        self,
        provider: str | ProviderName,
        *,
        method: str,
        url: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | str,
    ) -> WebhookDelivery:
        """Verify a vendor's webhook request and return the changes it reports (see
        :meth:`PMSClient.parse_webhook`); reading a partial payload's appointment is awaited.
        Its ``commit()`` is a short state-store write (call it once the changes are handled)."""
        return await self._call(
            False, self._sync.parse_webhook, provider, method=method, url=url, headers=headers, body=body
        )

    def on_change(self, callback: Callable[[AppointmentChange], object]) -> Callable[[AppointmentChange], object]:
        """Call ``callback(change)`` for each change a webhook delivers to this client (a plain
        method: registering does no I/O). Returns ``callback``: usable as a decorator."""
        return self._sync.on_change(callback)

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for creates still running in the background (at most the deadline plus
        ``DEADLINE_GRACE``; then they are cancelled and their references marked uncertain), then
        close every adapter's connections. Calls made afterwards raise ConfigurationError."""
        first = not self._closed
        self._closed = True
        running = [task for task in self._creates if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.config.deadline + DEADLINE_GRACE)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if first:
            await _green.run_sync(self._sync.close)

    async def __aenter__(self) -> AsyncPMSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        enabled = ", ".join(p.value for p in self.config.enabled()) or "none"
        closed = ", closed" if self._closed else ""
        return f"<AsyncPMSClient enabled: {enabled}{closed}>"

    # -- internals -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("This client is closed.")

    async def _call(self, creates: bool, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function`` (a method of the sync client) run on a greenlet, awaited, bounded by the
        deadline plus DEADLINE_GRACE. A cancellation reaches it where it waits."""
        self._check_open()
        self._active += 1
        try:
            limit = self.config.deadline + DEADLINE_GRACE
            try:
                return await asyncio.wait_for(_green.run_sync(function, *args, **kwargs), limit)
            except asyncio.TimeoutError:
                # only the safety net raises this (the sync core raises PMSErrors)
                raise TransportError(
                    f"the call did not finish within its deadline (PMS_DEADLINE_MS) and {DEADLINE_GRACE:g} s "
                    "more; it was stopped",
                    operation=getattr(function, "__name__", "call").lstrip("_"),
                    outcome_unknown=creates,
                ) from None
        finally:
            self._active -= 1
            if self._retiring and self._active == 0:
                _retire_now(self)

    async def _create(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A create, in a task of its own that a cancelled caller leaves running (see the module
        documentation): its outcome is settled under its reference either way."""
        self._check_open()
        task = asyncio.get_running_loop().create_task(self._call(True, function, *args, **kwargs))
        self._creates.add(task)
        task.add_done_callback(self._creates.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_report_orphan)  # its outcome is logged (and retrieved) there
            raise


def _report_orphan(task: asyncio.Task[Any]) -> None:
    """Log how a create whose caller was cancelled ended (its outcome is in the booking memory)."""
    if task.cancelled():
        log.warning("a create whose caller was cancelled was itself cancelled; its reference is marked uncertain")
        return
    error = task.exception()  # retrieved here: nobody else awaits it any more
    if error is None:
        result = task.result()
        what = getattr(result, "reference", None) or getattr(result, "report_id", None)
        log.info("a create whose caller was cancelled finished (reference %s); retry it to get the result", what)
    else:
        reference = getattr(error, "reference", None)
        log.warning(
            "a create whose caller was cancelled failed with %s (reference %s)",
            type(error).__name__,
            reference if reference is not None else "unknown",
        )


# -- the default client, one per event loop ---------------------------------------------------------

_lock = threading.Lock()
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPMSClient] = weakref.WeakKeyDictionary()
_config: PMSConfig | None = None  # what reload() applied (None: each loop reads the environment)
_generation = 0  # bumped by reload(): each loop's default client is replaced on its next use
_made_in: weakref.WeakKeyDictionary[AsyncPMSClient, int] = weakref.WeakKeyDictionary()
_retiring: set[asyncio.Task[Any]] = set()


def _retire_now(client: AsyncPMSClient) -> None:
    task = asyncio.get_running_loop().create_task(client.aclose())
    _retiring.add(task)
    task.add_done_callback(_retiring.discard)


async def _close_with_loop(client: AsyncPMSClient) -> AsyncIterator[None]:
    """An async generator the loop closes when it shuts down (``asyncio.run`` does): it closes
    the loop's default client then, so no aiohttp session is left open."""
    try:
        yield
    finally:
        await client.aclose()


async def get_client() -> AsyncPMSClient:
    """This event loop's default client, built on first use (see the module documentation)."""
    loop = asyncio.get_running_loop()
    client = _defaults.get(loop)
    if client is not None and not client.closed and _made_in.get(client) == _generation:
        return client
    with _lock:
        old = _defaults.get(loop)
        config = _config if _config is not None else load_config()
        # the old client's memory and token store go on when the state store is the same one
        keep = old is not None and config.state_url.reveal() == old.config.state_url.reveal()
        fresh = AsyncPMSClient(
            config,
            memory=old.memory if old is not None and keep else None,
            token_store=old.token_store if old is not None and keep else None,
        )
        _made_in[fresh] = _generation
        _defaults[loop] = fresh
    if old is not None and not old.closed:
        # calls still running on it finish; then it is closed
        old._retiring = True
        if old._active == 0:
            _retire_now(old)
    keeper = _close_with_loop(fresh)
    await keeper.__anext__()
    fresh._keeper = keeper
    return fresh


async def reload(
    environ: Mapping[str, str] | None = None, *, env_file: str | os.PathLike[str] | EllipsisType | None = ...
) -> AsyncPMSClient:
    """Re-read the configuration and swap the default async client (of every event loop, each on
    its next use); the configuration holds for every loop until the next reload. :class:`ConfigurationError`, keeping the current configuration, when the new
    one has a problem (as :func:`pms_integration.reload`); the sync API's default is untouched."""
    global _config, _generation
    config = load_config(environ, env_file)
    problems = config.all_problems()
    if problems:
        raise ConfigurationError(
            "The new configuration was not applied: " + "; ".join(problems) + ".", problems=problems
        )
    if config.default_provider is not None and not config.get(config.default_provider).enabled:
        pc = config.get(config.default_provider)
        raise ConfigurationError(
            f"PMS_DEFAULT_PROVIDER is {config.default_provider.value}, which is not configured "
            f"(missing {', '.join(pc.missing)}); the new configuration was not applied.",
            missing=pc.missing,
        )
    with _lock:
        _config = config
        _generation += 1
    return await get_client()


# -- module-level operations on the default client ------------------------------------------------


async def providers() -> models.ProviderStatusList:
    """Each provider's status: enabled, or which variables are missing and what is wrong."""
    return await (await get_client()).providers()


async def book_appointment(
    request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
) -> Appointment:
    """Book an appointment with the default client. See :meth:`AsyncPMSClient.book_appointment`."""
    return await (await get_client()).book_appointment(request, provider=provider)


async def update_appointment(
    appointment_id: str, changes: AppointmentUpdate | Mapping[str, Any], *, provider: str | ProviderName | None = None
) -> Appointment:
    """Reschedule or edit an appointment. See :meth:`AsyncPMSClient.update_appointment`."""
    return await (await get_client()).update_appointment(appointment_id, changes, provider=provider)


async def cancel_appointment(
    appointment_id: str, *, reason: str | None = None, provider: str | ProviderName | None = None
) -> Appointment:
    """Cancel an appointment. See :meth:`AsyncPMSClient.cancel_appointment`."""
    return await (await get_client()).cancel_appointment(appointment_id, reason=reason, provider=provider)


async def push_performance_report(
    report: PerformanceReport | Mapping[str, Any] | None = None, *, provider: str | ProviderName | None = None
) -> models.ReportReceipt:
    """Push a performance report (the registered source's when ``report`` is None)."""
    return await (await get_client()).push_performance_report(report, provider=provider)


async def free_slots(
    start: _dt.datetime | str,
    end: _dt.datetime | str,
    *,
    duration_minutes: int = models.DEFAULT_DURATION_MINUTES,
    provider: str | ProviderName | None = None,
) -> models.SlotList:
    """Bookable slots in a window. See :meth:`AsyncPMSClient.free_slots`."""
    return await (await get_client()).free_slots(start, end, duration_minutes=duration_minutes, provider=provider)


async def find_patient(
    *, email: str | None = None, phone: str | None = None, provider: str | ProviderName | None = None
) -> models.PatientList:
    """The vendor's patient records by e-mail or phone. See :meth:`AsyncPMSClient.find_patient`."""
    return await (await get_client()).find_patient(email=email, phone=phone, provider=provider)


async def get_appointment(appointment_id: str, *, provider: str | ProviderName | None = None) -> Appointment:
    """An appointment as the vendor holds it now. See :meth:`AsyncPMSClient.get_appointment`."""
    return await (await get_client()).get_appointment(appointment_id, provider=provider)


async def find_appointments(
    *,
    email: str | None = None,
    phone: str | None = None,
    reference: str | None = None,
    start: _dt.datetime | str | None = None,
    end: _dt.datetime | str | None = None,
    include_cancelled: bool = False,
    provider: str | ProviderName | None = None,
) -> models.AppointmentList:
    """A patient's (or a reference's) appointments. See :meth:`AsyncPMSClient.find_appointments`."""
    return await (await get_client()).find_appointments(
        email=email,
        phone=phone,
        reference=reference,
        start=start,
        end=end,
        include_cancelled=include_cancelled,
        provider=provider,
    )


async def check_state() -> StateCheck:
    """Check the default async client's state store (``PMS_STATE_URL``): reachable and writable."""
    return await (await get_client()).check_state()


async def changes(
    since: str | _dt.datetime | None = None,
    *,
    provider: str | ProviderName | None = None,
    feed: str | None = None,
    record: bool = True,
) -> ChangeBatch:
    """Appointments changed in the CRM since the cursor ``since``. See :meth:`AsyncPMSClient.changes`."""
    return await (await get_client()).changes(since, provider=provider, feed=feed, record=record)


# The camelCase names of the sync API: the very same function objects.
bookAppointment = book_appointment
updateAppointment = update_appointment
cancelAppointment = cancel_appointment
pushPerformanceReport = push_performance_report
getFreeSlots = free_slots
findPatient = find_patient
getAppointment = get_appointment
findAppointments = find_appointments
checkState = check_state
async def parse_webhook(
    provider: str | ProviderName,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str,
) -> WebhookDelivery:
    """Verify a webhook request with the default async client; see :meth:`AsyncPMSClient.parse_webhook`."""
    return await (await get_client()).parse_webhook(provider, method=method, url=url, headers=headers, body=body)


def on_change(callback: Callable[[AppointmentChange], object]) -> Callable[[AppointmentChange], object]:
    """Call ``callback(change)`` for each change any client's webhook delivers (the same registry
    as :func:`pms_integration.on_change`). Returns ``callback``: usable as a decorator."""
    from .webhooks import on_change as register

    return register(callback)


getChanges = changes
parseWebhook = parse_webhook
onChange = on_change
