"""``PMSClient``: configuration plus the enabled adapters, and the four operations."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

from ._once import BookingMemory
from ._ratelimit import RateLimitInfo
from ._retry import RetryPolicy, deadline_scope
from .changes import (
    AppointmentChange,
    ChangeBatch,
    ChangeKind,
    ChangeSource,
    Cursor,
    Observed,
    classify,
    feed_key,
    poll,
    record_snapshot,
)
from .config import PMSConfig, load_config
from .errors import (
    ConfigurationError,
    PMSError,
    ProviderError,
    ProviderNotConfiguredError,
    StateStoreError,
    UnexpectedResponseError,
    UnsupportedOperationError,
    ValidationError,
)
from .models import (
    DEFAULT_DURATION_MINUTES,
    Appointment,
    AppointmentList,
    AppointmentQuery,
    AppointmentRequest,
    AppointmentUpdate,
    PatientList,
    PatientQuery,
    PerformanceReport,
    ProviderName,
    ProviderStatusList,
    ReportReceipt,
    SlotList,
    SlotQuery,
    check_not_past,
    structure,
    validate_appointment_id,
)
from .provider import Capability, Provider
from .providers import load_factory
from .reports import ReportSource, current_report
from .state import StateCheck, StateStore, StoreTokens, check_state, hold, open_state
from .tokens import TokenStore, check_token_store

if TYPE_CHECKING:
    import requests

    from ._http import Runtime
    from .webhooks import WebhookDelivery

__all__ = ["BookingMemory", "PMSClient"]

log = logging.getLogger("pms_integration")
T = TypeVar("T")


def _check_arguments(config: object, environ: object, **given: object) -> None:
    """PMSClient's arguments, checked up front so misuse is a ConfigurationError that names
    the argument (not an AttributeError on first use)."""
    problems: list[str] = []
    if config is not None and not isinstance(config, PMSConfig):
        hint = " (to pass variables, use environ=...)" if isinstance(config, Mapping) else ""
        problems.append(f"config must be a PMSConfig from load_config(), not {type(config).__name__}{hint}")
    if config is not None and environ is not None:
        problems.append("give config or environ, not both")
    if environ is not None and not isinstance(environ, Mapping):
        problems.append(f"environ must be a mapping of variable names to strings, not {type(environ).__name__}")
    for name, value in given.items():
        cls = {"retry_policy": RetryPolicy, "memory": BookingMemory}.get(name)
        if value is None and name not in ("sleep", "clock"):
            continue
        if cls is not None and not isinstance(value, cls):
            problems.append(f"{name} must be a {cls.__name__}, not {type(value).__name__}")
        elif cls is None and not callable(value):
            problems.append(f"{name} must be a callable, not {type(value).__name__}")
    if problems:
        raise ConfigurationError("PMSClient: " + "; ".join(problems) + ".", problems=problems)


def _open_state(state: object, config: PMSConfig) -> StateStore:
    """The store ``state`` names (a store, or a URL), else the configured ``PMS_STATE_URL``.
    A misconfigured URL is an error here, never a quiet fall-back to this process's memory."""
    if state is not None and not isinstance(state, str):
        if not isinstance(state, StateStore):
            raise ConfigurationError(
                f"PMSClient: state must be a URL or a store from pms_integration.state.open_state(), "
                f"not {type(state).__name__}",
                problems=["state"],
            )
        return state
    bad = [p for p in config.problems if p.startswith("PMS_STATE_URL")]
    if state is None and bad:
        raise ConfigurationError(
            f"{bad[0]}; refusing to fall back to this process's memory (it would not stop a second worker "
            "from booking the same reference)",
            problems=bad,
        )
    return open_state(state if state is not None else config.state_url.reveal())


def _gather(*checks: Callable[[], Any]) -> list[Any]:
    """Every check's result; one ValidationError listing every failed check's fields."""
    errors: list[tuple[str, str]] = []
    results: list[Any] = []
    for check in checks:
        try:
            results.append(check())
        except ValidationError as exc:
            errors += exc.errors
    if errors:
        raise ValidationError(errors)
    return results


def _check_reason(reason: object) -> None:
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise ValidationError.single("reason", "must be a string of at most 500 characters")


class PMSClient:
    """A configured set of providers. Thread-safe: share one client between threads.

    Most code uses the module-level functions, which run on a default client built from the
    environment. Build a client yourself to serve several practices in one process, or to
    inject a configuration in tests::

        with PMSClient(environ={...}) as client:
            client.book_appointment({...}, provider="hubspot")
    """

    def __init__(
        self,
        config: PMSConfig | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | EllipsisType | None = ...,
        report_source: ReportSource | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[[], requests.Session] | None = None,
        memory: BookingMemory | None = None,
        token_store: TokenStore | None = None,
        state: StateStore | str | None = None,
    ) -> None:
        _check_arguments(
            config,
            environ,
            retry_policy=retry_policy,
            memory=memory,
            report_source=report_source,
            session_factory=session_factory,
            sleep=sleep,
            clock=clock,
        )
        self.config = config if config is not None else load_config(environ, env_file)
        self.report_source = report_source
        self._policy = retry_policy or RetryPolicy(max_attempts=self.config.max_attempts)
        self._sleep = sleep
        self._session_factory = session_factory
        self._runtime_cache: Runtime | None = None
        #: Runtime fields a wrapper sets before the first adapter is built (pms_integration.aio)
        self._runtime_options: dict[str, Any] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._adapters: dict[ProviderName, Provider] = {}
        #: where booking memory, rate budgets and rotated tokens live (PMS_STATE_URL; docs/deployment.md)
        self.state: StateStore = _open_state(state, self.config)
        #: duplicate-booking memory, kept in ``state``; reload() hands it to the next client
        self.memory = memory if memory is not None else BookingMemory(store=self.state, remember=self.config.state_remember)
        #: where adapters keep rotated refresh tokens: the given store, else ``state``
        self.token_store = check_token_store(token_store) or StoreTokens(self.state)
        #: the wall clock the change feed reads "now" from (aware UTC; tests may replace it)
        self._utcnow: Callable[[], _dt.datetime] = _utc_now
        self._closed = False
        for problem in self.config.problems:
            # a general variable that is wrong (PMS_MAX_ATTEMPTS=², a weak PMS_SERVER_TOKEN):
            # its default applies; say so once (the message names the variable, not its value)
            log.warning("configuration problem: %s", problem)
        for name in ProviderName:
            pc = self.config.get(name)
            if pc.partially_configured:
                log.warning("%s is disabled: missing %s", name.label, ", ".join(pc.missing))
            elif pc.problems:
                log.warning("%s is disabled: %s", name.label, "; ".join(pc.problems))

    @property
    def _runtime(self) -> Runtime:
        if self._runtime_cache is None:
            from ._http import Runtime  # requests loads here, on first use, not at import

            fields: dict[str, Any] = {"policy": self._policy, "sleep": self._sleep, "clock": self._clock}
            fields["state"] = self.state
            if self._session_factory is not None:
                fields["session_factory"] = self._session_factory
            fields.update(self._runtime_options)  # a wrapper's choices win (pms_integration.aio)
            self._runtime_cache = Runtime(**fields)
        return self._runtime_cache

    # -- introspection ----------------------------------------------------------------------

    def providers(self) -> ProviderStatusList:
        """Each provider's status: enabled, or the variables to set and the problems to fix."""
        return self.config.statuses()

    def enabled_providers(self) -> list[ProviderName]:
        return self.config.enabled()

    def check_state(self) -> StateCheck:
        """Check that the state store (``PMS_STATE_URL``) can be used: a probe key is written,
        read, locked and deleted within the client's deadline (``PMS_DEADLINE_MS``, and at most
        5 s a step). Returns the :class:`~pms_integration.state.StateCheck` (kind, URL without a
        password, namespace, round trip); :class:`StateStoreError` when the store cannot be used."""
        with deadline_scope(self.config.deadline, self._clock):
            try:
                return check_state(self.state)
            except StateStoreError as exc:
                # a health check booked nothing: its advice is about the store alone
                exc.hint = "Check that the state store is running, reachable and writable from this host."
                raise
            except PMSError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store bug: typed, never its text (may hold a URL)
                log.debug("state check: unexpected %s from the %s store", type(exc).__name__, self.state.kind)
                raise StateStoreError(
                    f"the state check failed inside the library ({type(exc).__name__})", store=self.state.url
                ) from None

    def rate_limit_info(self, provider: str | ProviderName) -> RateLimitInfo | None:
        """The vendor's last word on the remaining quota (``None`` before the first request)."""
        return self.adapter(provider).rate_limit_info

    def resolve(self, provider: str | ProviderName | None) -> ProviderName:
        """The provider a call goes to: explicit, else PMS_DEFAULT_PROVIDER, else the only one."""
        if provider is not None:
            try:
                return ProviderName.parse(provider)
            except ValueError as exc:
                raise ValidationError.single("provider", str(exc)) from None
        if self.config.default_provider is not None:
            return self.config.default_provider
        enabled = self.config.enabled()
        if len(enabled) == 1:
            return enabled[0]
        if not enabled:
            missing = [m for s in self.providers() for m in s.missing]
            raise ConfigurationError(
                "No provider is configured. Set the variables of at least one provider "
                "(see `pms-integration providers`).",
                missing=missing,
            )
        names = ", ".join(p.value for p in enabled)
        raise ConfigurationError(
            f"Several providers are enabled ({names}); pass provider=... or set PMS_DEFAULT_PROVIDER."
        )

    def adapter(self, provider: str | ProviderName | None = None) -> Provider:
        """The adapter for ``provider``, built on first use."""
        name = self.resolve(provider)
        existing = self._adapters.get(name)
        if existing is not None:
            return existing
        pc = self.config.get(name)
        if pc.settings is None:
            raise ProviderNotConfiguredError(name.value, missing=pc.missing, problems=pc.problems)
        factory = load_factory(name)
        with self._lock:
            if self._closed:
                raise ConfigurationError("This client is closed.")
            existing = self._adapters.get(name)
            if existing is None:
                existing = factory(pc.settings, self._runtime)
                if self.token_store is not None:
                    existing.use_token_store(self.token_store)
                self._adapters[name] = existing
            return existing

    # -- operations -------------------------------------------------------------------------

    def book_appointment(
        self, request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
    ) -> Appointment:
        """Book an appointment. Returns the vendor's :class:`Appointment`.

        Booking the same ``reference`` again returns the first result without a second create,
        from any client, process or machine sharing the state store (``PMS_STATE_URL``), so a
        retried conversation turn never double-books.
        """
        req, name = self._prepare(request, AppointmentRequest, "request", provider, future=True)
        adapter = self._adapter_for(name, Capability.BOOK)
        # one deadline for the whole booking: waiting for another worker's attempt at this
        # reference, the look-up and the create all come out of it
        with deadline_scope(self.config.deadline, self._clock):
            booked = self.memory.book(
                (name, adapter.account, req.reference),
                req,
                create=lambda: self._run(name, "book", True, lambda: adapter.book(req), req.reference),
                recover=lambda: self._recover(name, adapter, req),
            )
        self._snapshot(name, adapter, booked, ChangeKind.CREATED)
        return booked

    def recover_booking(
        self, request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
    ) -> Appointment | None:
        """Look up the booking an earlier attempt at ``request`` left behind, by its reference.

        Use it after an ``outcome_unknown`` error from another process (in this process,
        booking the same reference again already does this first). Returns the booking, or
        ``None`` when no attempt reached the vendor - then booking again is safe.
        """
        req, name = self._prepare(request, AppointmentRequest, "request", provider)
        return self._recover(name, self._adapter_for(name, Capability.BOOK), req)

    def _recover(self, name: ProviderName, adapter: Provider, req: AppointmentRequest) -> Appointment | None:
        try:
            return self._run(name, "book", True, lambda: adapter.recover_booking(req), req.reference)
        except ProviderError as exc:
            # still undecidable: say so, with the reference, whatever the look-up's own error
            exc.outcome_unknown = True
            exc.reference = req.reference
            raise

    def update_appointment(
        self,
        appointment_id: str,
        changes: AppointmentUpdate | Mapping[str, Any],
        *,
        provider: str | ProviderName | None = None,
    ) -> Appointment:
        """Change an appointment's time, title, notes or location."""
        _, (upd, name) = _gather(
            lambda: validate_appointment_id(appointment_id),
            lambda: self._prepare(changes, AppointmentUpdate, "changes", provider, future=True),
        )
        adapter = self._adapter_for(name, Capability.UPDATE)
        updated = self._run(name, "update", False, lambda: adapter.update(appointment_id, upd), None)
        moved = upd.start is not None or upd.end is not None or upd.duration_minutes is not None
        self._snapshot(name, adapter, updated, ChangeKind.RESCHEDULED if moved else ChangeKind.UPDATED)
        return updated

    def cancel_appointment(
        self, appointment_id: str, *, reason: str | None = None, provider: str | ProviderName | None = None
    ) -> Appointment:
        """Cancel an appointment. Cancelling one that is already cancelled succeeds."""
        *_, name = _gather(
            lambda: validate_appointment_id(appointment_id),
            lambda: _check_reason(reason),
            lambda: self.resolve(provider),
        )
        adapter = self._adapter_for(name, Capability.CANCEL)
        result = self._run(name, "cancel", False, lambda: adapter.cancel(appointment_id, reason=reason), None)
        self.memory.forget_appointment(name, appointment_id)
        if not result.raw.get("already_cancelled"):
            self._snapshot(name, adapter, result, ChangeKind.CANCELLED)
        return result

    def push_performance_report(
        self, report: PerformanceReport | Mapping[str, Any] | None = None, *, provider: str | ProviderName | None = None
    ) -> ReportReceipt:
        """Push a report; with none given, the registered report source's current report."""
        if report is None:
            name = self.resolve(provider)
            rep = current_report(self.report_source)
        else:
            rep, name = self._prepare(report, PerformanceReport, "report", provider)
        adapter = self._adapter_for(name, Capability.PUSH_REPORT)
        # the vendors keep no report id: pushes of one report run one at a time wherever they come
        # from (threads, clients, processes sharing the state store), so a retry finds the record
        # the push before it made instead of making a second one
        with deadline_scope(self.config.deadline, self._clock) as deadline:
            left = max(deadline.remaining(), 0.0)
            key = f"report-push:{name.value}:{adapter.account}:{rep.report_id}"
            with hold(self.state, key, lease=left + 5.0, wait=left, what=f"a push of report {rep.report_id!r}"):
                return self._run(name, "push_report", True, lambda: adapter.push_report(rep), rep.report_id)

    # -- scheduling reads ---------------------------------------------------------------------

    def free_slots(
        self,
        start: _dt.datetime | str,
        end: _dt.datetime | str,
        *,
        duration_minutes: int = DEFAULT_DURATION_MINUTES,
        provider: str | ProviderName | None = None,
    ) -> SlotList:
        """Bookable slots of ``duration_minutes`` between ``start`` and ``end`` (aware datetimes
        or ISO-8601 text, at most 31 days apart), in the practice's time zone, earliest first."""
        query, name = self._prepare(
            {"start": start, "end": end, "duration_minutes": duration_minutes}, SlotQuery, "", provider
        )
        adapter = self._adapter_for(name, Capability.FREE_SLOTS)
        return SlotList(self._run(name, "free_slots", False, lambda: adapter.free_slots(query), None))

    def find_patient(
        self, *, email: str | None = None, phone: str | None = None, provider: str | ProviderName | None = None
    ) -> PatientList:
        """The vendor's patient records with this e-mail address and/or phone number."""
        query, name = self._prepare({"email": email, "phone": phone}, PatientQuery, "", provider)
        adapter = self._adapter_for(name, Capability.FIND_PATIENT)
        return PatientList(self._run(name, "find_patient", False, lambda: adapter.find_patients(query), None))

    def get_appointment(self, appointment_id: str, *, provider: str | ProviderName | None = None) -> Appointment:
        """The appointment as the vendor holds it now, including changes staff made in the CRM."""
        _, name = _gather(lambda: validate_appointment_id(appointment_id), lambda: self.resolve(provider))
        adapter = self._adapter_for(name, Capability.GET_APPOINTMENT)
        return self._run(name, "get_appointment", False, lambda: adapter.get_appointment(appointment_id), None)

    def find_appointments(
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
        ``reference``): upcoming ones, or those in ``start``-``end``; earliest first. Their ids
        work with :meth:`update_appointment` and :meth:`cancel_appointment`."""
        fields = {"email": email, "phone": phone, "reference": reference, "start": start, "end": end}
        query, name = self._prepare({**fields, "include_cancelled": include_cancelled}, AppointmentQuery, "", provider)
        adapter = self._adapter_for(name, Capability.FIND_APPOINTMENTS)
        found = self._run(name, "find_appointments", False, lambda: adapter.find_appointments(query), None)
        return AppointmentList(sorted(found, key=_earliest))

    # -- hearing about changes (docs/changes.md) ------------------------------------------------

    def changes(
        self,
        since: str | _dt.datetime | None = None,
        *,
        provider: str | ProviderName | None = None,
        feed: str | None = None,
        record: bool = True,
    ) -> ChangeBatch:
        """The appointments changed on the practice's calendar since ``since``, once each.

        ``since`` is the ``cursor`` of the previous :class:`~pms_integration.changes.ChangeBatch`
        (opaque; store it), an aware datetime to start from, or None: start now (the first batch
        is empty and only carries a cursor). With ``feed="name"`` the state store keeps the cursor
        under that name, so a restarted consumer resumes where it stopped (``since`` then
        overrides the stored one). Changes made by the library itself are reported too, with
        ``by_library`` set.

        ``record=False`` looks without taking: the changes are classified against the
        per-appointment snapshots without writing them, so other feeds and the webhooks on the
        same account still report them (``pms-integration watch`` without ``--feed`` does this).
        """
        if not isinstance(record, bool):
            raise ValidationError([("record", "must be True or False")])
        cursor, start = _read_since(since, self._utcnow())
        feed_name = _check_feed(feed)
        if provider is None and cursor is not None:
            provider = cursor.provider
        name = self.resolve(provider)
        adapter = self._adapter_for(name, Capability.CHANGES)
        account = adapter.account
        key = feed_key(feed_name, name, account) if feed_name is not None else None
        if key is not None and since is None:
            stored = self.state.get(key)
            if stored is not None:
                try:
                    cursor = Cursor.decode(stored)
                except ValidationError:
                    raise ValidationError(
                        [("feed", "its stored cursor is unreadable; pass since= to start it again")]
                    ) from None
        if cursor is not None:
            cursor.check_for(name, account)
        observe = getattr(adapter, "observe_changes", None)
        if observe is None:
            raise UnsupportedOperationError(f"{name.label} as configured offers no change feed.")
        now = self._utcnow()
        batch = self._run(
            name,
            "changes",
            False,
            lambda: poll(
                self.state,
                observe,
                provider=name,
                account=account,
                cursor=cursor,
                start=start,
                now=now,
                ttl=self.config.state_remember,
                record=record,
            ),
            None,
        )
        if key is not None:
            self.state.put(key, batch.cursor, None)
        return batch

    def classify_observed(
        self, observed: list[Observed], *, provider: str | ProviderName, source: str = "webhook"
    ) -> list[AppointmentChange]:
        """What an adapter's ``observe_webhook`` saw, as changes (those already reported dropped)."""
        name = self.resolve(provider)
        account = self.adapter(name).account
        kind: ChangeSource = "feed" if source == "feed" else "webhook"
        found = []
        for item in observed:
            change = classify(
                self.state, item, provider=name, account=account, source=kind, ttl=self.config.state_remember
            )
            if change is not None:
                found.append(change)
        return found

    def _snapshot(
        self, name: ProviderName, adapter: Provider, appointment: Appointment, kind: ChangeKind
    ) -> None:
        record_snapshot(
            self.state, name, adapter.account, appointment, kind=kind, ttl=self.config.state_remember
        )

    # -- webhooks (pms_integration.webhooks; docs/webhooks.md) ---------------------------------

    def parse_webhook(
        self,
        provider: str | ProviderName,
        *,
        method: str,
        url: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | str,
    ) -> WebhookDelivery:
        """Verify a vendor's webhook request (signature, timestamp window, event ids already
        received) and return the changes it reports, to ``commit()`` once handled. See
        :func:`pms_integration.webhooks.parse`."""
        from .webhooks import parse_for

        return parse_for(self, provider, method=method, url=url, headers=headers, body=body)

    def on_change(self, callback: Callable[[AppointmentChange], object]) -> Callable[[AppointmentChange], object]:
        """Call ``callback(change)`` for each change a webhook delivers to this client (the HTTP
        endpoint runs it after answering the vendor). Returns ``callback``: usable as a decorator."""
        from .webhooks import on_change

        return on_change(callback, client=self)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every adapter's connections; calls already running may fail. A client nothing refers
        to needs none: its pools close when it is collected (how ``reload()`` retires one)."""
        with self._lock:
            self._closed = True
            adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            try:
                adapter.close()
            except Exception:  # closing must not raise
                log.debug("error while closing an adapter", exc_info=True)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- deprecated: the reference-counted lifecycle is gone (reload() drops old clients) -----

    @property
    def usable(self) -> bool:
        _deprecated("PMSClient.usable", "use `not client.closed`")
        return not self._closed

    def acquire(self) -> bool:
        _deprecated("PMSClient.acquire()", "calls need no counting any more")
        return not self._closed

    def release(self) -> None:
        _deprecated("PMSClient.release()", "calls need no counting any more")

    def retire(self) -> None:
        """Formerly: close once running calls finished. A client nobody uses is collected with its
        connections, so this does nothing now."""
        _deprecated("PMSClient.retire()", "drop the client; its connections close when it is collected")

    def __enter__(self) -> PMSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        enabled = ", ".join(p.value for p in self.config.enabled()) or "none"
        return f"<PMSClient enabled: {enabled}>"

    # -- internals --------------------------------------------------------------------------

    def _prepare(
        self, value: Any, cls: type[T], field: str, provider: str | ProviderName | None, *, future: bool = False
    ) -> tuple[T, ProviderName]:
        """Validate the input and the provider together, so one error lists both; with
        ``future``, then check that the (booking's) start is not in the past."""
        path = "" if isinstance(value, Mapping) else field
        result, name = _gather(lambda: structure(value, cls, path=path), lambda: self.resolve(provider))
        if future:
            check_not_past(result.start)
        return result, name

    def _adapter_for(self, name: ProviderName, capability: Capability) -> Provider:
        adapter = self.adapter(name)
        if capability not in adapter.capabilities:
            # an adapter may explain itself (GoHighLevel v1: "v2 can do this")
            generic = f"{name.label} as configured cannot {capability.value.replace('_', ' ')}."
            raise UnsupportedOperationError(adapter.unsupported_reason(capability) or generic)
        return adapter

    def _run(
        self, name: ProviderName, operation: str, creates: bool, call: Callable[[], T], reference: str | None
    ) -> T:
        with deadline_scope(self.config.deadline, self._clock):
            try:
                return call()
            except PMSError:
                raise
            except Exception as exc:
                log.error(
                    "%s %s: unexpected %s in the adapter", name.value, operation, type(exc).__name__, exc_info=True
                )
                what = f"{name.label} {operation} failed inside the library ({type(exc).__name__})"
                raise UnexpectedResponseError(
                    what, provider=name.value, operation=operation, outcome_unknown=creates, reference=reference
                ) from exc


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


#: the earliest ``since`` a feed starts from (no vendor holds appointments modified before it)
_EARLIEST_SINCE = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: how far ahead of now a ``since`` may be (a clock a little ahead; further is a mistake)
_SINCE_AHEAD = _dt.timedelta(days=1)


def _read_since(since: object, now: _dt.datetime) -> tuple[Cursor | None, _dt.datetime | None]:
    if since is None:
        return None, None
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValidationError([("since", "must be an aware datetime (with a time zone) or a cursor")])
        try:
            start = since.astimezone(_dt.timezone.utc)
        except (OverflowError, ValueError):  # datetime.min/max with an offset
            start = None
        if start is None or start < _EARLIEST_SINCE:
            raise ValidationError([("since", "must be a time from 1970 on (the feed starts from it)")])
        if start > now + _SINCE_AHEAD:
            raise ValidationError([("since", "is in the future: pass a time up to now, or a cursor")])
        return None, start
    return Cursor.decode(since), None


_FEED_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _check_feed(feed: object) -> str | None:
    if feed is None:
        return None
    if not isinstance(feed, str) or not 1 <= len(feed) <= 100 or not set(feed) <= _FEED_CHARS:
        raise ValidationError([("feed", "must be 1-100 letters, digits, '.', '_' or '-'")])
    return feed


def _earliest(appointment: Appointment) -> tuple[bool, _dt.datetime]:
    """Sort key: by start, appointments without one last."""
    start = appointment.start
    return (start is None, start or _dt.datetime.max.replace(tzinfo=_dt.timezone.utc))


def _deprecated(what: str, instead: str) -> None:
    warnings.warn(f"{what} is deprecated: {instead}", DeprecationWarning, stacklevel=3)
