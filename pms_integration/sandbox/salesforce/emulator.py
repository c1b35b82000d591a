"""The Salesforce emulator: the org's state served through the route table."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ...models import ProviderName
from .._core import Emulator, Forwarded, Sandbox, SandboxRequest, SandboxResponse, json_response
from . import handlers
from .handlers import VERSIONS
from .routes import ROUTES
from .state import Org
from .validation import API_LIMIT, NotEmulated, OrgError, errors


class SalesforceEmulator(Emulator):
    """An in-memory Salesforce org (:class:`Org`) with one API user (the owner), a Contact and a Lead."""

    provider = ProviderName.SALESFORCE
    prefix = "/salesforce"
    endpoints = ROUTES
    api_version = "67.0"
    store: Org

    token: Forwarded[str] = Forwarded()
    org_id: Forwarded[str] = Forwarded()
    owner_id: Forwarded[str] = Forwarded()
    event_record_type: Forwarded[str] = Forwarded()
    client_id: Forwarded[str] = Forwarded()
    client_secret: Forwarded[str] = Forwarded()
    refresh_token: Forwarded[str] = Forwarded()
    rotate_refresh_tokens: Forwarded[bool] = Forwarded()
    token_refreshes: Forwarded[int] = Forwarded()
    api_usage: Forwarded[int] = Forwarded()
    api_limit: Forwarded[int] = Forwarded()
    contacts: Forwarded[dict[str, dict[str, Any]]] = Forwarded()
    records: Forwarded[dict[str, dict[str, Any]]] = Forwarded()
    #: records per query page (None: the API's 2,000); small values exercise ``nextRecordsUrl``
    page_size: Forwarded[int | None] = Forwarded()
    #: the org's BusinessHours records (seeded: "Default", Mon-Fri 08:00-17:00 America/New_York)
    business_hours: Forwarded[list[dict[str, Any]]] = Forwarded()
    #: the org's clock (returns an aware datetime): stamps SystemModstamp, bounds getUpdated/getDeleted
    clock: Forwarded[Callable[[], _dt.datetime]] = Forwarded()
    #: the delete log starts here (None: 15 days back), as after Salesforce purged it
    delete_log_start: Forwarded[_dt.datetime | None] = Forwarded()
    #: ids one getUpdated/getDeleted call may return (EXCEEDED_ID_LIMIT past it)
    replication_id_limit: Forwarded[int] = Forwarded()

    def __init__(self, sandbox: Sandbox) -> None:
        self.store = Org()
        super().__init__(sandbox)

    def handle(self, handler: Any, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
        """Every route below ``/services/data/vXX.X`` is an API call: token, version, daily allowance."""
        api = "version" in params
        if api:
            denied = self.check_auth(req)
            if denied is not None:
                return denied
            if params["version"] not in VERSIONS:
                return self.error_response(404)
        with self.lock:
            try:
                if api:
                    self.store.count_call()
                response: SandboxResponse = handler(self, req, params)
            except NotEmulated as exc:
                response = handlers.not_emulated(req, self.prefix, exc.message)
            except OrgError as exc:
                response = json_response(exc.status, exc.body())
            if api:
                response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.api_limit}"
        return response

    # -- Emulator API ------------------------------------------------------------------------

    def environ(self, base_url: str) -> dict[str, str]:
        return {
            "PMS_SALESFORCE_BASE_URL": base_url,
            "PMS_SALESFORCE_TOKEN": self.token,
            "PMS_SALESFORCE_OWNER_ID": self.owner_id,
            "PMS_SALESFORCE_API_VERSION": self.api_version,
        }

    def refresh_environ(self) -> dict[str, str]:
        """The three variables that let the adapter refresh an expired token here."""
        return {
            "PMS_SALESFORCE_CLIENT_ID": self.client_id,
            "PMS_SALESFORCE_CLIENT_SECRET": self.client_secret,
            "PMS_SALESFORCE_REFRESH_TOKEN": self.refresh_token,
        }

    def expire_token(self) -> str:
        """Invalidate the current access token (as a session timeout would); return the new one."""
        return self.store.new_session()

    def record(self, record_id: str) -> dict[str, Any] | None:
        """A record's fields (deleted ones too), for tests; None if unknown."""
        return self.store.record(unquote(record_id))

    # -- what staff do in Salesforce's own screens -----------------------------------------------

    def staff_move(self, appointment_id: str, start: _dt.datetime, end: _dt.datetime) -> None:
        with self.lock:
            record = self.store.find("Event", appointment_id)
            self.store.update(record, {"StartDateTime": _utc(start), "EndDateTime": _utc(end)})

    def staff_cancel(self, appointment_id: str) -> None:
        """Staff delete the Event (Salesforce has no cancelled state): it goes to the recycle bin."""
        self.staff_delete(appointment_id)

    def staff_delete(self, appointment_id: str) -> None:
        """Staff delete the Event: recycle bin and delete log (what ``staff_cancel`` does too)."""
        with self.lock:
            self.store.delete(self.store.find("Event", appointment_id))

    def staff_edit(self, appointment_id: str, **values: Any) -> None:
        """Change any of an Event's fields as staff would (``Subject="..."``, ``ShowAs="Free"``)."""
        with self.lock:
            record = self.store.find("Event", appointment_id)
            self.store.update(record, {k: _utc(v) if isinstance(v, _dt.datetime) else v for k, v in values.items()})

    def block_time(self, start: _dt.datetime, end: _dt.datetime, title: str = "Blocked") -> str:
        """A busy Event of the owner's that is no booking (no ``[reference]`` in its Subject)."""
        values = {"Subject": title, "StartDateTime": _utc(start), "EndDateTime": _utc(end), "ShowAs": "Busy"}
        return self.store.create("Event", values, self.api_version)

    def add_person(self, kind: str, first: str, last: str, email: str | None = None, phone: str | None = None) -> str:
        """A Contact or Lead the org already has (a returning patient); its id."""
        values = {"FirstName": first, "LastName": last, "Email": email, "Phone": phone}
        return self.store.create_person(kind, {**values, **({"Company": "[not provided]"} if kind == "Lead" else {})})

    def set_api_usage(self, used: int, limit: int = API_LIMIT) -> None:
        """Set the daily counter (to test the org's 403 REQUEST_LIMIT_EXCEEDED)."""
        with self.lock:
            self.api_usage, self.api_limit = used, limit

    def error_response(
        self, status: int, *, message: str | None = None, retry_after: float | None = None
    ) -> SandboxResponse:
        return handlers.error_response(status, message)

    def not_found(self, req: SandboxRequest) -> SandboxResponse:
        allowed = sorted({r.method for r, rx in self._compiled if rx.fullmatch(req.path)})
        if allowed:
            text = f"HTTP Method '{req.method}' not allowed. Allowed are {','.join(['HEAD', *allowed])}"
            return json_response(405, errors("METHOD_NOT_ALLOWED", text))
        return handlers.not_emulated(req, self.prefix)


def _utc(moment: _dt.datetime) -> _dt.datetime:
    return moment.astimezone(_dt.timezone.utc).replace(microsecond=0)
