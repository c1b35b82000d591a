"""A minimal adapter used to test the client layer without any vendor's wire format.

It sends one POST per booking to ``<base_url>/book`` carrying the configured location id, so a
test can tell which configuration served a call.
"""

from __future__ import annotations

from typing import Any

from pms_integration._http import BearerAuth, Runtime
from pms_integration._once import create_once
from pms_integration.config import GoHighLevelSettings
from pms_integration.models import (
    Appointment,
    AppointmentRequest,
    AppointmentStatus,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
    ReportReceipt,
)
from pms_integration.provider import ALL_CAPABILITIES, Capability


class FakeAdapter:
    def __init__(self, settings: GoHighLevelSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.transport = runtime.transport(
            provider=ProviderName.GOHIGHLEVEL,
            base_url=settings.base_url,
            auth=BearerAuth(settings.api_key),
            timeout=settings.timeout,
            token_variable="PMS_GHL_API_KEY",
            rate_limit=settings.rate_limit,
        )
        self.closed = False

    @property
    def name(self) -> ProviderName:
        return ProviderName.GOHIGHLEVEL

    @property
    def capabilities(self) -> frozenset[Capability]:
        return ALL_CAPABILITIES

    def _appointment(self, body: Any, req: AppointmentRequest) -> Appointment:
        return Appointment(
            ProviderName.GOHIGHLEVEL, body["id"], AppointmentStatus.BOOKED, req.start, req.end, req.reference, raw=body
        )

    def book(self, request: AppointmentRequest) -> Appointment:
        def create() -> Appointment:
            resp = self.transport.request(
                "POST",
                "/book",
                operation="book",
                json={"location": self.settings.location_id, "reference": request.reference},
                reference=request.reference,
            )
            return self._appointment(resp.json(), request)

        return create_once(create, lambda: self.recover_booking(request), provider=self.name, operation="book", reference=request.reference)

    def recover_booking(self, request: AppointmentRequest) -> Appointment | None:
        resp = self.transport.request("GET", "/find", operation="find", params={"reference": request.reference}, expect=(404,))
        return None if resp.status == 404 else self._appointment(resp.json(), request)

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        resp = self.transport.request("PUT", f"/appointments/{appointment_id}", operation="update", json={})
        body = resp.json()
        return Appointment(ProviderName.GOHIGHLEVEL, body["id"], AppointmentStatus.BOOKED, changes.start, changes.end)

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        self.transport.request("DELETE", f"/appointments/{appointment_id}", operation="cancel")
        return Appointment(ProviderName.GOHIGHLEVEL, appointment_id, AppointmentStatus.CANCELLED, None, None)

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        resp = self.transport.request("POST", "/reports", operation="push_report", json={"id": report.report_id})
        return ReportReceipt(ProviderName.GOHIGHLEVEL, resp.json()["id"], report.id)

    def close(self) -> None:
        self.closed = True
        self.transport.close()


def create(settings: GoHighLevelSettings, runtime: Runtime) -> FakeAdapter:
    return FakeAdapter(settings, runtime)
