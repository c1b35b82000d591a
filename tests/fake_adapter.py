"""A minimal adapter used to test the client layer without any vendor's wire format.

It sends one POST per booking to ``<base_url>/book`` carrying the configured location id, so a
test can tell which configuration served a call.
"""

from __future__ import annotations

from typing import Any

from pms_integration._http import Auth, BearerAuth, Runtime
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
from pms_integration.providers._base import BaseAdapter

GHL = ProviderName.GOHIGHLEVEL


class FakeAdapter(BaseAdapter):
    provider = GHL
    token_variable = "PMS_GHL_API_KEY"

    def make_auth(self) -> Auth:
        return BearerAuth(self.settings.api_key)

    def _appointment(self, body: Any, req: AppointmentRequest) -> Appointment:
        return Appointment(GHL, body["id"], AppointmentStatus.BOOKED, req.start, req.end, req.reference, raw=body)

    def create_booking(self, request: AppointmentRequest) -> Appointment:
        body = {"location": self.settings.location_id, "reference": request.reference}
        resp = self.transport.request("POST", "/book", operation="book", json=body, reference=request.reference)
        return self._appointment(resp.json(), request)

    def find_booking(self, request: AppointmentRequest) -> Appointment | None:
        resp = self.transport.request(
            "GET", "/find", operation="find", params={"reference": request.reference}, expect=(404,)
        )
        return None if resp.status == 404 else self._appointment(resp.json(), request)

    def update(self, appointment_id: str, changes: AppointmentUpdate) -> Appointment:
        body = self.transport.request("PUT", f"/appointments/{appointment_id}", operation="update", json={}).json()
        return Appointment(GHL, body["id"], AppointmentStatus.BOOKED, changes.start, changes.end)

    def cancel(self, appointment_id: str, *, reason: str | None = None) -> Appointment:
        self.transport.request("DELETE", f"/appointments/{appointment_id}", operation="cancel")
        return Appointment(GHL, appointment_id, AppointmentStatus.CANCELLED, None, None)

    def push_report(self, report: PerformanceReport) -> ReportReceipt:
        resp = self.transport.request("POST", "/reports", operation="push_report", json={"id": report.report_id})
        return ReportReceipt(GHL, resp.json()["id"], report.id)


def create(settings: GoHighLevelSettings, runtime: Runtime) -> FakeAdapter:
    return FakeAdapter(settings, runtime)
