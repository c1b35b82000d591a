"""``PMSClient``: configuration plus the enabled adapters, and the four operations."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

from ._once import BookingMemory
from ._ratelimit import RateLimitInfo
from ._retry import RetryPolicy, deadline_scope
from .config import PMSConfig, load_config
from .errors import (
    ConfigurationError,
    PMSError,
    ProviderError,
    ProviderNotConfiguredError,
    UnexpectedResponseError,
    UnsupportedOperationError,
    ValidationError,
)
from .models import (
    Appointment,
    AppointmentRequest,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
    ProviderStatusList,
    ReportReceipt,
    check_not_past,
    structure,
    validate_appointment_id,
)
from .provider import Capability, Provider
from .providers import load_factory
from .reports import ReportSource, current_report
from .tokens import TokenStore, check_token_store

if TYPE_CHECKING:
    import requests

    from ._http import Runtime

__all__ = ["BookingMemory", "PMSClient"]

log = logging.getLogger("pms_integration")
T = TypeVar("T")


class _InFlight:
    """Counts a call in and out of a client (what ``retire()`` waits for)."""

    __slots__ = ("_client",)

    def __init__(self, client: PMSClient) -> None:
        self._client = client

    def __enter__(self) -> None:
        client = self._client
        with client._lock:
            if client._closed:
                raise ConfigurationError("This client is closed; create a new one.")
            client._inflight += 1

    def __exit__(self, *exc: object) -> None:
        self._client.release()


def _check_arguments(
    *,
    config: object,
    environ: object,
    report_source: object,
    retry_policy: object,
    sleep: object,
    clock: object,
    session_factory: object,
    memory: object,
) -> None:
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
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        problems.append(f"retry_policy must be a RetryPolicy, not {type(retry_policy).__name__}")
    if memory is not None and not isinstance(memory, BookingMemory):
        problems.append(f"memory must be a BookingMemory, not {type(memory).__name__}")
    for name, value, optional in (
        ("report_source", report_source, True),
        ("session_factory", session_factory, True),
        ("sleep", sleep, False),
        ("clock", clock, False),
    ):
        if (value is not None or not optional) and not callable(value):
            problems.append(f"{name} must be a callable, not {type(value).__name__}")
    if problems:
        raise ConfigurationError("PMSClient: " + "; ".join(problems) + ".", problems=problems)


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
    ) -> None:
        _check_arguments(
            config=config,
            environ=environ,
            report_source=report_source,
            retry_policy=retry_policy,
            sleep=sleep,
            clock=clock,
            session_factory=session_factory,
            memory=memory,
        )
        self.config = config if config is not None else load_config(environ, env_file)
        self.report_source = report_source
        self._policy = retry_policy or RetryPolicy(max_attempts=self.config.max_attempts)
        self._sleep = sleep
        self._session_factory = session_factory
        self._runtime_cache: Runtime | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._adapters: dict[ProviderName, Provider] = {}
        #: duplicate-booking memory; reload() hands it to the next client
        self.memory = memory if memory is not None else BookingMemory()
        #: where adapters keep rotated refresh tokens (see pms_integration.tokens)
        self.token_store = check_token_store(token_store)
        self._inflight = 0
        self._retired = False
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

            extra: dict[str, Any] = {}
            if self._session_factory is not None:
                extra["session_factory"] = self._session_factory
            self._runtime_cache = Runtime(policy=self._policy, sleep=self._sleep, clock=self._clock, **extra)
        return self._runtime_cache

    # -- introspection ----------------------------------------------------------------------

    def providers(self) -> ProviderStatusList:
        """Each provider's status: enabled, or the variables to set and the problems to fix."""
        return self.config.statuses()

    def enabled_providers(self) -> list[ProviderName]:
        return self.config.enabled()

    def rate_limit_info(self, provider: str | ProviderName) -> RateLimitInfo | None:
        """The vendor's last word on the remaining quota (``None`` before the first request)."""
        adapter = self.adapter(provider)
        transport = getattr(adapter, "transport", None)
        return getattr(transport, "rate_limit_info", None)

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
                use_store = getattr(existing, "use_token_store", None)
                if self.token_store is not None and callable(use_store):
                    use_store(self.token_store)
                self._adapters[name] = existing
            return existing

    # -- operations -------------------------------------------------------------------------

    def book_appointment(
        self,
        request: AppointmentRequest | Mapping[str, Any],
        *,
        provider: str | ProviderName | None = None,
    ) -> Appointment:
        """Book an appointment. Returns the vendor's :class:`Appointment`.

        Booking the same ``reference`` again in this process returns the first result without
        a second create (a retried conversation turn never double-books).
        """
        req, name = self._prepare(request, AppointmentRequest, "request", provider)
        check_not_past(req.start)
        adapter = self._adapter_for(name, Capability.BOOK)
        key = (name, self._account(name), req.reference)
        with self._call(), self.memory.hold(key):
            done = self.memory.booked(key)
            if done is not None:
                if done[0] != req:
                    raise ValidationError.single(
                        "reference",
                        f"{req.reference!r} was already used for a different booking; use a new reference",
                    )
                return done[1]
            try:
                appointment = self._recover(name, adapter, req) if self.memory.is_uncertain(key) else None
                if appointment is None:
                    appointment = self._run(name, "book", True, lambda: adapter.book(req), req.reference)
            except ProviderError as exc:
                if exc.outcome_unknown:
                    self.memory.mark_uncertain(key)
                raise
            self.memory.remember(key, req, appointment)
            return appointment

    def recover_booking(
        self,
        request: AppointmentRequest | Mapping[str, Any],
        *,
        provider: str | ProviderName | None = None,
    ) -> Appointment | None:
        """Look up the booking an earlier attempt at ``request`` left behind, by its reference.

        Use it after an ``outcome_unknown`` error from another process (in this process,
        booking the same reference again already does this first). Returns the booking, or
        ``None`` when no attempt reached the vendor - then booking again is safe.
        """
        req, name = self._prepare(request, AppointmentRequest, "request", provider)
        adapter = self._adapter_for(name, Capability.BOOK)
        with self._call():
            return self._recover(name, adapter, req)

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
        errors: list[tuple[str, str]] = []
        try:
            validate_appointment_id(appointment_id)
        except ValidationError as exc:
            errors += exc.errors
        try:
            upd, name = self._prepare(changes, AppointmentUpdate, "changes", provider)
        except ValidationError as exc:
            raise ValidationError(errors + exc.errors) from None
        try:
            check_not_past(upd.start)
        except ValidationError as exc:
            errors += exc.errors
        if errors:
            raise ValidationError(errors)
        adapter = self._adapter_for(name, Capability.UPDATE)
        with self._call():
            return self._run(name, "update", False, lambda: adapter.update(appointment_id, upd), None)

    def cancel_appointment(
        self,
        appointment_id: str,
        *,
        reason: str | None = None,
        provider: str | ProviderName | None = None,
    ) -> Appointment:
        """Cancel an appointment. Cancelling one that is already cancelled succeeds."""
        errors: list[tuple[str, str]] = []
        try:
            validate_appointment_id(appointment_id)
        except ValidationError as exc:
            errors += exc.errors
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            errors.append(("reason", "must be a string of at most 500 characters"))
        try:
            name = self.resolve(provider)
        except ValidationError as exc:
            errors += exc.errors
        if errors:
            raise ValidationError(errors)
        adapter = self._adapter_for(name, Capability.CANCEL)
        with self._call():
            result = self._run(name, "cancel", False, lambda: adapter.cancel(appointment_id, reason=reason), None)
        self.memory.forget_appointment(name, appointment_id)
        return result

    def push_performance_report(
        self,
        report: PerformanceReport | Mapping[str, Any] | None = None,
        *,
        provider: str | ProviderName | None = None,
    ) -> ReportReceipt:
        """Push a report; with none given, the registered report source's current report."""
        if report is None:
            name = self.resolve(provider)
            rep = current_report(self.report_source)
        else:
            rep, name = self._prepare(report, PerformanceReport, "report", provider)
        adapter = self._adapter_for(name, Capability.PUSH_REPORT)
        with self._call():
            return self._run(name, "push_report", True, lambda: adapter.push_report(rep), rep.report_id)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every adapter's connections. Calls already running may fail."""
        with self._lock:
            self._closed = True
            adapters = list(self._adapters.values())
            self._adapters.clear()
        for adapter in adapters:
            try:
                adapter.close()
            except Exception:  # closing must not raise
                log.debug("error while closing an adapter", exc_info=True)

    def retire(self) -> None:
        """Close once the calls now running have finished (used by ``reload()``)."""
        with self._lock:
            self._retired = True
            idle = self._inflight == 0
        if idle:
            self.close()

    def __enter__(self) -> PMSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        enabled = ", ".join(p.value for p in self.config.enabled()) or "none"
        return f"<PMSClient enabled: {enabled}>"

    # -- internals --------------------------------------------------------------------------

    def _prepare(
        self,
        value: Any,
        cls: type[T],
        field: str,
        provider: str | ProviderName | None,
    ) -> tuple[T, ProviderName]:
        """Validate the input and the provider together, so one error lists both."""
        errors: list[tuple[str, str]] = []
        result: T | None = None
        name: ProviderName | None = None
        try:
            result = structure(value, cls, path="" if isinstance(value, Mapping) else field)
        except ValidationError as exc:
            errors += exc.errors
        try:
            name = self.resolve(provider)
        except ValidationError as exc:
            errors += exc.errors
        if errors:
            raise ValidationError(errors)
        assert result is not None and name is not None
        return result, name

    def _account(self, name: ProviderName) -> str:
        """Which account a provider points at (never a secret): the key's middle part."""
        settings = self.config.get(name).settings
        if settings is None:
            return ""
        parts = [settings.base_url]
        for attribute in ("location_id", "calendar_id", "owner_id", "pipeline_id"):
            value = getattr(settings, attribute, None)
            if value:
                parts.append(str(value))
        return "|".join(parts)

    def _adapter_for(self, name: ProviderName, capability: Capability) -> Provider:
        adapter = self.adapter(name)
        if capability not in adapter.capabilities:
            # an adapter may explain itself (GoHighLevel v1: "v2 can do this")
            explain = getattr(adapter, "unsupported_reason", None)
            reason = explain(capability) if callable(explain) else None
            if not (isinstance(reason, str) and reason):
                reason = f"{name.label} as configured cannot {capability.value.replace('_', ' ')}."
            raise UnsupportedOperationError(reason)
        return adapter

    def _run(
        self,
        name: ProviderName,
        operation: str,
        creates: bool,
        call: Callable[[], T],
        reference: str | None,
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
                raise UnexpectedResponseError(
                    f"{name.label} {operation} failed inside the library ({type(exc).__name__})",
                    provider=name.value,
                    operation=operation,
                    outcome_unknown=creates,
                    reference=reference,
                ) from exc

    @property
    def usable(self) -> bool:
        """False once the client is closed or retired (the module-level calls then move on)."""
        with self._lock:
            return not (self._closed or self._retired)

    def acquire(self) -> bool:
        """Count a caller in; False once the client is retired or closed (take a newer one)."""
        with self._lock:
            if self._retired or self._closed:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        """Count a caller out; the last one out of a retired client closes it."""
        with self._lock:
            self._inflight -= 1
            close_now = self._retired and self._inflight == 0 and not self._closed
        if close_now:
            self.close()

    def _call(self) -> _InFlight:
        return _InFlight(self)
