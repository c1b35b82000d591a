"""The shape every vendor adapter shares.

:class:`BaseAdapter` owns what is the same on every vendor (the transport, reading JSON objects,
the duplicate-safe create, read-before-write update and cancel, the report push); a vendor module
writes only the hooks listed, with a complete example, in ``docs/adding-a-provider.md``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs

from .._http import Auth, BearerAuth, ErrorInfo, HttpResponse, Runtime, Transport, default_error_parser
from .._once import BoundedCache, create_once
from .._ratelimit import RateLimitInfo
from ..changes import FeedPage, Observed
from ..config import Secret
from ..errors import AppointmentCancelledError, ConflictError, UnexpectedResponseError, UnsupportedOperationError
from ..models import (
    Appointment,
    AppointmentQuery,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PatientQuery,
    PatientRecord,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
    Slot,
    SlotQuery,
)
from ..provider import WRITE_CAPABILITIES, Capability
from ..scheduling import Busy, OpenHours, fit_slots
from ..tokens import TokenStore

__all__ = ["BaseAdapter", "text", "unexpected"]

T = TypeVar("T")


def text(value: object) -> str | None:
    """``value`` when it is a non-empty string, else None (vendors send nulls, numbers, "")."""
    return value if isinstance(value, str) and value else None


def unexpected(
    provider: ProviderName, operation: str, what: str, *, outcome_unknown: bool = False, reference: str | None = None
) -> UnexpectedResponseError:
    """An error for a 2xx response the adapter cannot read."""
    return UnexpectedResponseError(
        f"{provider.label} answered {operation} with an unreadable response: {what}",
        provider=provider.value,
        operation=operation,
        outcome_unknown=outcome_unknown,
        reference=reference,
    )


class BaseAdapter:
    """The common part of every adapter. Thread-safe; one per client and provider."""

    provider: ClassVar[ProviderName]
    #: the variable holding the credential, named in authentication errors
    token_variable: ClassVar[str]
    #: what the adapter can do; an adapter adds the scheduling reads it implements
    capabilities: frozenset[Capability] = WRITE_CAPABILITIES
    #: whether ``book`` first checks that the slot is free (vendors that accept two bookings in
    #: one slot); ``settings.conflict_check`` turns it off for practices that double-book on purpose
    checks_conflicts: ClassVar[bool] = False
    default_headers: ClassVar[Mapping[str, str]] = {"Content-Type": "application/json"}
    #: the vendor's rate-limit window in seconds, when a 429 without Retry-After should wait it out
    rate_limit_window: ClassVar[float | None] = None
    parse_error: ClassVar[Callable[[HttpResponse], ErrorInfo]] = staticmethod(default_error_parser)
    parse_rate_headers: ClassVar[Callable[[Mapping[str, str]], RateLimitInfo | None] | None] = None

    def __init__(self, settings: Any, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.transport: Transport = runtime.transport(
            provider=self.provider,
            base_url=settings.base_url,
            auth=self.make_auth(),
            timeout=settings.timeout,
            token_variable=self.token_variable,
            error_parser=type(self).parse_error,
            rate_header_parser=type(self).parse_rate_headers,
            rate_limit=settings.rate_limit,
            default_headers=self.default_headers,
            rate_limit_window=self.rate_limit_window,
            account=settings.account,
        )
        #: report id -> the vendor record it was pushed to (saves the look-up on a re-push)
        self.report_records: BoundedCache[str, str] = BoundedCache(1000)

    # -- identity and lifecycle ---------------------------------------------------------------

    @property
    def name(self) -> ProviderName:
        return self.provider

    @property
    def account(self) -> str:
        """Which account the adapter points at (host plus location/owner/pipeline; no secret)."""
        return str(self.settings.account)

    @property
    def rate_limit_info(self) -> RateLimitInfo | None:
        """The vendor's last word on the remaining quota (None before the first answer)."""
        return self.transport.rate_limit_info

    def make_auth(self) -> Auth:
        """The credential for every request; Bearer ``settings.token`` unless overridden."""
        token: Secret = self.settings.token
        return BearerAuth(token)

    def unsupported_reason(self, capability: Capability) -> str | None:
        """Why ``capability`` is missing, in the user's terms (None: the generic message)."""
        return None

    def use_token_store(self, store: TokenStore | None) -> None:
        """Keep rotated credentials in ``store`` (adapters with refreshable tokens override)."""

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.base_url} {self.settings.api_version}>"

    # -- reading answers ----------------------------------------------------------------------

    def unexpected(
        self, operation: str, what: str, *, outcome_unknown: bool = False, reference: str | None = None
    ) -> UnexpectedResponseError:
        return unexpected(self.provider, operation, what, outcome_unknown=outcome_unknown, reference=reference)

    def json_object(
        self, resp: HttpResponse, operation: str, what: str, *, creates: bool = False, reference: str | None = None
    ) -> dict[str, Any]:
        """The body as a JSON object; an unexpected-response error naming ``what`` otherwise.

        With ``creates``, the error says the outcome is unknown: a 2xx to a create may have
        made the record even when its answer cannot be read.
        """
        body = resp.json_or_none()
        if not isinstance(body, dict):
            raise self.unexpected(
                operation, f"{what} is not a JSON object", outcome_unknown=creates, reference=reference
            )
        return body

    # -- duplicate safety ---------------------------------------------------------------------

    def create_once(
        self, create: Callable[[], T], find: Callable[[], T | None], *, operation: str, reference: str
    ) -> T:
        """``create``, never twice: after an ambiguous failure ``find`` decides (see ``_once``)."""
        return create_once(create, find, provider=self.provider, operation=operation, reference=reference)

    # -- bookings -----------------------------------------------------------------------------

    def book(self, request: AppointmentRequest) -> Appointment:
        mine = self.check_slot_free(request)
        if mine is not None:
            return mine
        return self.create_once(
            lambda: self.create_booking(request),
            lambda: self.find_booking(request),
            operation="book",
            reference=request.reference,
        )

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        return self.find_booking(request)

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        # Read first: a cancelled booking is never written to, and the answer carries the
        # booking's times and zone even when only the title changes.
        current = self.read_booking(self.check_id(appointment_id), "update")
        if current.status is AppointmentStatus.CANCELLED:
            raise self.cancelled_error(current.id)
        return self.write_update(current, changes)

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        current = self.read_booking(self.check_id(appointment_id), "cancel")
        if current.status is AppointmentStatus.CANCELLED:
            return attrs.evolve(current, raw={"already_cancelled": True, **current.raw})
        return self.write_cancel(current, reason)

    def cancelled_error(self, appointment_id: str) -> AppointmentCancelledError:
        return AppointmentCancelledError(
            f"{self.provider.label} appointment {appointment_id} was cancelled; it cannot be moved or changed. "
            "Book a new appointment instead.",
            status_code=409,
            code="APPOINTMENT_CANCELLED",
            provider=self.provider.value,
            operation="update",
        )

    def check_id(self, appointment_id: str) -> str:
        """The vendor's own id check, before the id goes into a URL (ValidationError if wrong)."""
        return appointment_id

    def create_booking(self, request: AppointmentRequest) -> Appointment:
        raise NotImplementedError

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        raise NotImplementedError

    def read_booking(self, appointment_id: str, operation: str) -> Appointment:
        raise NotImplementedError

    def write_update(self, current: Appointment, changes: AppointmentUpdate) -> Appointment:
        raise NotImplementedError

    def write_cancel(self, current: Appointment, reason: str | None) -> Appointment:
        raise NotImplementedError

    def check_slot_free(self, request: AppointmentRequest) -> Appointment | None:
        """Before a create, on vendors that accept double bookings: ``ConflictError`` naming the
        clash, with nothing written. When the slot holds this very booking (an earlier attempt
        at the same reference, from any process), that booking is returned instead.

        The check and the create are separate requests, so a booking made by someone else in
        between is not caught: the window is one round trip.
        """
        if not (self.checks_conflicts and self.settings.conflict_check):
            return None
        return self.judge_slot(request, self.busy_times(request.start, request.end_time))

    def judge_slot(self, request: AppointmentRequest, busy: list[Busy]) -> Appointment | None:
        """What ``busy`` means for booking ``request``: None (free), this very booking (the slot
        holds its reference and the look-up finds it), or ``ConflictError`` naming the clash."""
        start, end = request.start, request.end_time
        clashes = [b for b in busy if b.overlaps(start, end)]
        if any(b.reference == request.reference for b in clashes):
            found = self.find_booking(request)
            if found is not None:
                return found
        others = [b for b in clashes if b.reference != request.reference]
        if others:
            raise self.slot_taken(request, others[0])
        return None

    def slot_taken(self, request: AppointmentRequest, busy: Busy) -> ConflictError:
        zone = request.start.tzinfo
        span = f"{busy.start.astimezone(zone):%Y-%m-%d %H:%M}-{busy.end.astimezone(zone):%H:%M}"
        what = f"appointment {busy.appointment_id}" if busy.appointment_id else "blocked time"
        return ConflictError(
            f"The slot at {request.start:%Y-%m-%d %H:%M} is taken in {self.provider.label}: {what} runs {span}. "
            "Nothing was booked; free_slots lists the times still open.",
            status_code=409,
            code="SLOT_TAKEN",
            provider=self.provider.value,
            operation="book",
        )

    # -- scheduling reads ---------------------------------------------------------------------

    def get_appointment(self, appointment_id: str) -> Appointment:
        return self.read_booking(self.check_id(appointment_id), "get_appointment")

    def free_slots(self, query: SlotQuery) -> list[Slot]:
        """Opening hours less busy time (vendors that compute slots themselves override this)."""
        zone = self.practice_zone()
        ranges = self.open_hours().intervals(query.start, query.end, zone)
        busy = self.busy_times(query.start, query.end) if ranges else []
        step = _dt.timedelta(minutes=self.settings.slot_step)
        fitted = fit_slots(
            ranges, busy, start=query.start, end=query.end, duration=query.duration, step=step, zone=zone
        )
        return [Slot(self.provider, a, b) for a, b in fitted]

    def practice_zone(self) -> _dt.tzinfo:
        """The zone opening hours are in and slots come back in."""
        raise NotImplementedError

    def open_hours(self) -> OpenHours:
        raise NotImplementedError

    def busy_times(self, start: _dt.datetime, end: _dt.datetime) -> list[Busy]:
        """Time taken between ``start`` and ``end``: live bookings and blocked time (not cancelled ones)."""
        raise NotImplementedError

    def find_patients(self, query: PatientQuery) -> list[PatientRecord]:
        raise NotImplementedError

    def find_appointments(self, query: AppointmentQuery) -> list[Appointment]:
        raise NotImplementedError

    # -- performance reports ------------------------------------------------------------------

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        """Update the record of an earlier push of the same report, else create it once."""
        payload = self.report_payload(report)
        cached = self.report_records.get(report.id)
        if cached is not None and self.update_report(cached, report, payload):
            return ReportReceipt(self.provider, cached, report.id, created=False, raw={"update": payload})
        self.report_records.pop(report.id)  # unknown, or gone since we saw it: look it up
        found = self.find_report(report)
        if found is not None and self.update_report(found, report, payload):
            self.report_records.put(report.id, found)
            return ReportReceipt(self.provider, found, report.id, created=False, raw={"update": payload})
        record_id = self.create_once(
            lambda: self.create_report(report, payload),
            lambda: self.recover_report(report),
            operation="push_report",
            reference=report.id,
        )
        self.report_records.put(report.id, record_id)
        return ReportReceipt(self.provider, record_id, report.id, created=True, raw={"create": payload})

    def report_payload(self, report: PerformanceReport) -> Mapping[str, Any]:
        raise NotImplementedError

    def find_report(self, report: PerformanceReport) -> str | None:
        raise NotImplementedError

    def recover_report(self, report: PerformanceReport) -> str | None:
        """After a create whose outcome is unknown, the record it may have made (``find_report``
        unless the vendor has a read that sees a fresh record sooner)."""
        return self.find_report(report)

    def update_report(self, record_id: str, report: PerformanceReport, payload: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def create_report(self, report: PerformanceReport, payload: Mapping[str, Any]) -> str:
        raise NotImplementedError

    # -- hearing about changes (issue 18; docs/changes.md) ------------------------------------

    def observe_changes(self, position: Mapping[str, Any] | None, now: _dt.datetime) -> FeedPage:
        """Every appointment on the practice's calendar that changed after ``position`` up to
        ``now`` (None: start at ``now``: nothing observed, only a position). Overlap at the window
        edges is fine (the core de-duplicates by appointment id and version); a miss is not: go
        back a margin for clock and index lag, page fully, respect the vendor's windows."""
        raise UnsupportedOperationError(
            self.unsupported_reason(Capability.CHANGES)
            or f"{self.provider.label} ({self.settings.api_version}) offers no change feed."
        )

    def observe_webhook(self, payload: Any) -> list[Observed]:
        """The vendor's parsed webhook body as :class:`Observed` (each appointment fetched by id
        when the payload is partial; ``version`` is the vendor's event id)."""
        raise UnsupportedOperationError(
            self.unsupported_reason(Capability.WEBHOOKS)
            or f"{self.provider.label} ({self.settings.api_version}) sends no webhooks this library reads."
        )
