"""The contract every vendor adapter fulfils, and the names shared by adapters and client."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .models import (
    Appointment,
    AppointmentQuery,
    AppointmentRequest,
    AppointmentUpdate,
    PatientQuery,
    PatientRecord,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
    Slot,
    SlotQuery,
)

if TYPE_CHECKING:
    from ._ratelimit import RateLimitInfo
    from .tokens import TokenStore

__all__ = [
    "Capability",
    "Provider",
    "ProviderName",
    "ALL_CAPABILITIES",
    "READ_CAPABILITIES",
    "WRITE_CAPABILITIES",
    "CHANGE_CAPABILITIES",
]


class Capability(str, enum.Enum):
    """What an adapter can do (some API versions cannot do everything)."""

    BOOK = "book"
    UPDATE = "update"
    CANCEL = "cancel"
    PUSH_REPORT = "push_report"
    FREE_SLOTS = "free_slots"
    FIND_PATIENT = "find_patient"
    GET_APPOINTMENT = "get_appointment"
    FIND_APPOINTMENTS = "find_appointments"
    #: ``observe_changes``: a polled feed of the calendar's changes (``PMSClient.changes``)
    CHANGES = "changes"
    #: ``observe_webhook``: the vendor pushes signed change events (``pms_integration.webhooks``)
    WEBHOOKS = "webhooks"

    def __str__(self) -> str:
        return self.value


ALL_CAPABILITIES = frozenset(Capability)
#: The writes every adapter had before the scheduling reads, and the reads themselves.
WRITE_CAPABILITIES = frozenset({Capability.BOOK, Capability.UPDATE, Capability.CANCEL, Capability.PUSH_REPORT})
READ_CAPABILITIES = ALL_CAPABILITIES - WRITE_CAPABILITIES - {Capability.CHANGES, Capability.WEBHOOKS}
#: Hearing about changes made in the CRM (issue 18); an adapter adds the ones it implements.
CHANGE_CAPABILITIES = frozenset({Capability.CHANGES, Capability.WEBHOOKS})


@runtime_checkable
class Provider(Protocol):
    """A vendor adapter.

    Inputs arrive validated (the client structures and checks them first); ids arrive checked
    against the generic safe-id pattern, and adapters check their vendor's own id format before
    building a URL. Every method either returns its result or raises a
    :class:`~pms_integration.errors.PMSError`.
    """

    @property
    def name(self) -> ProviderName: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def account(self) -> str:
        """Which vendor account the adapter points at (never a secret); keys booking memory."""
        ...

    @property
    def rate_limit_info(self) -> RateLimitInfo | None:
        """The vendor's last word on the remaining quota (None before the first answer)."""
        ...

    def unsupported_reason(self, capability: Capability) -> str | None:
        """Why ``capability`` is missing, in the user's terms (None: a generic message)."""
        ...

    def use_token_store(self, store: TokenStore | None) -> None:
        """Keep rotated credentials in ``store`` (a no-op for adapters without refresh)."""
        ...

    def book(self, request: AppointmentRequest) -> Appointment:
        """Create the booking. Never creates a duplicate for the same ``request.reference``."""
        ...

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        """The booking an earlier attempt at ``request`` left behind (matched by its
        reference), or None. Sends only look-ups, except where a half-made booking is completed
        (a HubSpot deal whose meeting was never created)."""
        ...

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        """Apply ``changes`` (only the fields that are set) to the booking."""
        ...

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        """Cancel the booking; cancelling an already cancelled booking succeeds."""
        ...

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        """Record the report; pushing the same ``report_id`` again updates the first record."""
        ...

    def free_slots(self, query: SlotQuery) -> list[Slot]:
        """Bookable slots of ``query.duration_minutes`` in the window, in the practice's zone, ordered."""
        ...

    def find_patients(self, query: PatientQuery) -> list[PatientRecord]:
        """The vendor's patient records matching the e-mail and/or phone (e-mail and phone
        travel in request bodies, never in URLs, wherever the vendor offers that)."""
        ...

    def get_appointment(self, appointment_id: str) -> Appointment:
        """The booking as the vendor holds it now (a change staff made shows)."""
        ...

    def find_appointments(self, query: AppointmentQuery) -> list[Appointment]:
        """A patient's appointments (or the one with ``query.reference``) in the window, earliest first."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
