"""The Salesforce emulator: the org's state served through the route table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

from ...models import ProviderName
from .._core import Emulator, Route, Sandbox, SandboxRequest, SandboxResponse, json_response
from . import handlers
from .handlers import VERSIONS
from .routes import ROUTES, Endpoint
from .state import Org
from .validation import API_LIMIT, NotEmulated, OrgError, errors

T = TypeVar("T")


class _OnOrg(Generic[T]):
    """An attribute of the emulator that lives on its :class:`Org` (the names tests and docs use)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, emulator: SalesforceEmulator, owner: type | None = None) -> T:
        value: T = getattr(emulator.org, self.name)
        return value

    def __set__(self, emulator: SalesforceEmulator, value: T) -> None:
        setattr(emulator.org, self.name, value)


class SalesforceEmulator(Emulator):
    """An in-memory Salesforce org (:class:`Org`) with one API user (the owner), a Contact and a Lead."""

    provider = ProviderName.SALESFORCE
    prefix = "/salesforce"
    api_version = "67.0"

    token = _OnOrg[str]()
    org_id = _OnOrg[str]()
    owner_id = _OnOrg[str]()
    event_record_type = _OnOrg[str]()
    client_id = _OnOrg[str]()
    client_secret = _OnOrg[str]()
    refresh_token = _OnOrg[str]()
    rotate_refresh_tokens = _OnOrg[bool]()
    token_refreshes = _OnOrg[int]()
    api_usage = _OnOrg[int]()
    api_limit = _OnOrg[int]()
    contacts = _OnOrg[dict[str, dict[str, Any]]]()
    records = _OnOrg[dict[str, dict[str, Any]]]()

    def __init__(self, sandbox: Sandbox) -> None:
        self.org = Org()
        super().__init__(sandbox)
        self.lock = self.org.lock

    # -- Emulator API ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [Route(e.method, e.pattern, self._serve(e), e.operation, e.mutating) for e in ROUTES]

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

    def state(self) -> dict[str, Any]:
        return self.org.snapshot()

    def reset(self) -> None:
        self.org.reset()

    def expire_token(self) -> str:
        """Invalidate the current access token (as a session timeout would); return the new one."""
        return self.org.new_session()

    def record(self, record_id: str) -> dict[str, Any] | None:
        """A record's fields (deleted ones too), for tests; None if unknown."""
        return self.org.record(unquote(record_id))

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

    # -- plumbing ----------------------------------------------------------------------------

    def _serve(self, endpoint: Endpoint) -> Callable[[SandboxRequest, dict[str, str]], SandboxResponse]:
        """The route's handler with the org's checks: auth, version, daily allowance, errors."""

        def run(req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
            if endpoint.api:
                denied = self.check_auth(req)
                if denied is not None:
                    return denied
                if params.get("version") not in VERSIONS:
                    return self.error_response(404)
            with self.lock:
                try:
                    if endpoint.api:
                        self.org.count_call()
                    response = endpoint.handler(self, req, params)
                except NotEmulated as exc:
                    response = handlers.not_emulated(req, self.prefix, exc.message)
                except OrgError as exc:
                    response = json_response(exc.status, exc.body())
                if endpoint.api:
                    response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.api_limit}"
            return response

        return run
