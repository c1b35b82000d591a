"""HTTP endpoints for frontends: ``/api/integrations/pms/...`` as a Starlette (ASGI) app.

:func:`create_app` builds the app, :func:`run` serves it with uvicorn (the server extra:
``pip install starlette uvicorn``). Routes, bodies, errors (problem+json, redacted) and
authentication: docs/http-api.md. Library calls block, so each runs in Starlette's thread pool.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import EllipsisType, ModuleType
from typing import Any, NoReturn

import attrs

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    from ._extras import server_extra_hint

    raise ImportError(f"pms_integration.server needs Starlette and uvicorn. {server_extra_hint()}") from _exc

from . import _default, webhooks
from ._extras import server_extra_hint
from ._redact import redact, redact_data, redact_path, redact_raw
from .client import PMSClient
from .config import Secret, is_loopback_host, read_variables
from .errors import (
    APIError,
    BookingInProgressError,
    ConfigurationError,
    PMSError,
    ProviderError,
    ProviderNotConfiguredError,
    RateLimitError,
    StateStoreError,
    ValidationError,
    WebhookReplayError,
    _end_sentence,
)
from .models import PerformanceReport, ProviderName, ReportReceipt, structure, unstructure

__all__ = [
    "create_app",
    "run",
    "check_exposure",
    "is_loopback",
    "Problem",
    "problem_for",
    "server_extra_hint",
    "UnprotectedServerError",
    "PREFIX",
    "DEFAULT_MAX_BODY_BYTES",
    "TOKEN_VARIABLE",
    "PathOnly",
    "DEFAULT_WEBHOOK_QUEUE",
    "WebhookQueue",
]

log = logging.getLogger("pms_integration.server")

#: Where the routes live; absolute, so mounting needs no prefix.
PREFIX = "/api/integrations/pms"
#: The largest request body accepted (64 KiB); a booking is well under 8 KiB.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: The environment variable holding the bearer token the endpoints require.
TOKEN_VARIABLE = "PMS_SERVER_TOKEN"  # noqa: S105 - a variable name, not a secret

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "urn:pms-integration:problem:"
# How long a client is told to wait after a 429 whose vendor did not say.
_DEFAULT_RETRY_AFTER = 5
# After the body limit is passed, keep reading (and discarding) this much more before
# answering, so a moderately oversized upload gets a clean 413 rather than a reset connection.
_DRAIN_BYTES = 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]
#: How many verified webhook deliveries may wait for their callbacks; past it, 503 (the vendor retries).
DEFAULT_WEBHOOK_QUEUE = 1000


# ---------------------------------------------------------------------------------------------
# problems


class Problem(Exception):
    """An RFC 9457 problem: HTTP status, a type slug, title, detail, extension members, headers.

    Raised anywhere below an endpoint and rendered by the guard; :func:`problem_for` builds one
    from a library error, and :meth:`response` renders it (redacted) for your own endpoints.
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions
        #: True when ``detail`` was composed by the library from parts redacted already (an
        #: error's ``str()``): it is then sent as it is, so a field path in it stays intact.
        self.detail_is_redacted = False

    @property
    def type(self) -> str:
        return "about:blank" if self.slug == "about:blank" else _TYPE_BASE + self.slug

    def to_dict(self) -> dict[str, Any]:
        """The JSON members (not yet redacted; :meth:`response` redacts)."""
        data: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        data.update((k, v) for k, v in self.extensions.items() if v is not None)
        return data

    def redacted_dict(self) -> dict[str, Any]:
        """The JSON members with every string passed through the redactor.

        Free text (``title``, ``detail``, vendor codes and request ids, anything you add) is
        redacted as text; a field path in ``errors`` and the ``reference`` are the caller's
        own data, so only a part that *is* a registered secret is masked there.
        """
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key == "detail" and self.detail_is_redacted and isinstance(value, str):
                out[key] = value
            elif key == "errors" and isinstance(value, (list, tuple)):
                out[key] = [_redacted_field_error(e) for e in value]
            elif key == "reference" and isinstance(value, str):
                out[key] = redact_path(value)
            else:
                out[key] = redact_data(value)
        return out

    def response(self) -> Response:
        """An ``application/problem+json`` response, every string passed through the redactor."""
        return _json_response(self.status, self.redacted_dict(), media_type=PROBLEM_JSON, headers=self.headers)


def _redacted_field_error(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return redact_data(entry)
    return {
        redact(str(k)): redact_path(v) if k == "field" and isinstance(v, str) else redact_data(v)
        for k, v in entry.items()
    }


def _model_json(model: object) -> Any:
    """A model as JSON, as it is: only the vendor's ``raw`` response in it is redacted."""
    return redact_raw(unstructure(model))


def _json_response(
    status: int, data: Any, *, media_type: str = "application/json", headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as JSON. The caller redacts what needs it (see :func:`_model_json`, :class:`Problem`)."""
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # WWW-Authenticate is built from constants here; the redactor's "Bearer <value>" pattern
    # would otherwise eat its realm parameter.
    safe_headers = {k: v if k.lower() == "www-authenticate" else redact(v) for k, v in (headers or {}).items()}
    safe_headers.setdefault("Cache-Control", "no-store")
    return Response(body.encode("utf-8"), status_code=status, media_type=media_type, headers=safe_headers)


def _retry_after_seconds(value: float | None) -> int:
    if value is None or not math.isfinite(value) or value < 0:
        return _DEFAULT_RETRY_AFTER
    return max(1, math.ceil(value))


def problem_for(exc: PMSError) -> Problem:
    """Map a library error to its HTTP problem: status, type and title from its class's
    :class:`~pms_integration.errors.Outcome`, its ``str()`` as detail, its fields as extensions.

    Public so an application that calls the library itself can answer the same way.
    """
    extensions: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        extensions["errors"] = [{"field": path, "message": message} for path, message in exc.errors]
    if isinstance(exc, ProviderNotConfiguredError):
        extensions["provider"] = exc.provider
    if isinstance(exc, ConfigurationError):
        extensions.update(missing=list(exc.missing), problems=list(exc.problems))
    if isinstance(exc, ProviderError):
        extensions.update(
            provider=exc.provider, operation=exc.operation, outcome_unknown=exc.outcome_unknown, reference=exc.reference
        )
    if isinstance(exc, APIError):
        extensions.update(vendor_status=exc.status_code, code=exc.code, request_id=exc.request_id)
    if isinstance(exc, RateLimitError):
        extensions["retry_after"] = _retry_after_seconds(exc.retry_after)
        headers["Retry-After"] = str(extensions["retry_after"])
    if isinstance(exc, BookingInProgressError) and exc.retry_after is not None:
        extensions["retry_after"] = _retry_after_seconds(exc.retry_after)
        headers["Retry-After"] = str(extensions["retry_after"])
    if isinstance(exc, StateStoreError):
        extensions["code"] = exc.code  # the store's URL is in the detail, without a password
    status, slug, title = exc.outcome.http_status, exc.outcome.slug, exc.outcome.title
    problem = Problem(status, slug, title, str(exc), headers=headers, **extensions)
    # str() of a library error is safe to show (errors.py redacts when the error is built).
    problem.detail_is_redacted = True
    return problem


# ---------------------------------------------------------------------------------------------
# request helpers


def _provider_from(request: Request) -> ProviderName:
    raw = str(request.path_params.get("provider", ""))
    try:
        return ProviderName.parse(raw)
    except ValueError as exc:
        detail = str(exc).strip()
        detail = _end_sentence(detail[:1].upper() + detail[1:])
        raise Problem(
            404, "unknown-provider", "Unknown provider", detail, known=[p.value for p in ProviderName]
        ) from None


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, never holding more than ``limit`` bytes; 413 past it."""
    declared = request.headers.get("content-length")
    too_large = Problem(
        413,
        "payload-too-large",
        "Request body too large",
        f"The request body exceeds the limit of {limit} bytes.",
        headers={"Connection": "close"},
        limit=limit,
    )
    if declared is not None and declared.strip().isdigit() and int(declared) > limit + _DRAIN_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + _DRAIN_BYTES:
                raise too_large
            if size <= limit:
                chunks.append(chunk)
            else:
                chunks.clear()  # over the limit: keep draining, hold nothing
    except ClientDisconnect:
        raise Problem(400, "client-disconnect", "Client disconnected", "The request body was not received.") from None
    if size > limit:
        raise too_large
    return b"".join(chunks)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, or ``None`` for an empty body. 400 for malformed JSON, 415 for non-JSON."""
    body = await _read_body(request, limit)
    if not body.strip():
        return None
    content_type = request.headers.get("content-type")
    # A JSON media type is required for a body: it also forces a CORS preflight, so a foreign
    # web page cannot submit a booking through a visitor's browser as a "simple" request.
    if content_type is None or not _is_json_type(content_type):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the body as JSON with the header Content-Type: application/json.",
        )
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            message = "the body nests too deeply"
        elif isinstance(exc, UnicodeDecodeError):
            message = "the body is not valid UTF-8"
        else:
            message = str(exc) or "the body is not valid JSON"
        raise Problem(
            400,
            "malformed-json",
            "Malformed JSON",
            f"The request body is not valid JSON: {message}.",
            errors=[{"field": "", "message": message}],
        ) from None


def _only_member(data: Any, member: str, *, shape: str, unknown: str) -> Any:
    """``data[member]`` from an optional JSON object body that may hold nothing else."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValidationError.single("", f"the body must be a JSON object{shape}")
    if extra := [(str(k), unknown) for k in data if k != member]:
        raise ValidationError(extra)
    return data.get(member)


def _query(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters, every unknown or repeated one a ValidationError at once.

    A ``+`` that was not percent-encoded arrives as a space; a phone number that starts with
    one is read as starting with ``+`` (send ``%2B``, as HTTP clients do with their params).
    """
    problems = [(k, "is not a known parameter") for k in dict.fromkeys(request.query_params) if k not in known]
    problems += [(k, "is given more than once") for k in known if len(request.query_params.getlist(k)) > 1]
    if problems:
        raise ValidationError(problems)
    query = {k: v for k, v in request.query_params.items() if v != ""}
    if query.get("phone", "").startswith(" "):
        query["phone"] = "+" + query["phone"].lstrip()
    return query


def _whole_number(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ValidationError.single(name, "must be a whole number of minutes, such as 30")
    return int(text)


def _list_json(items: Any) -> list[Any]:
    """A list of models as JSON (slots, patients, appointments), each one's ``raw`` redacted."""
    return [_model_json(item) for item in items]


def _object_body(data: Any, *, what: str) -> Mapping[str, Any]:
    if data is None:
        raise ValidationError.single("", f"a JSON object body ({what}) is required")
    if not isinstance(data, Mapping):
        raise ValidationError.single("", f"the body must be a JSON object ({what})")
    return data


# ---------------------------------------------------------------------------------------------
# the app


class WebhookQueue:
    """Where the webhook endpoint leaves verified changes for the callbacks: one worker thread
    runs them in arrival order after the vendor has had its answer. Bounded: a delivery that finds
    it full is answered 503 before anything is verified or remembered, so the vendor's retry is
    handled like a first delivery. ``join()`` waits until every queued delivery has run."""

    def __init__(self, size: int = DEFAULT_WEBHOOK_QUEUE) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._jobs: queue.Queue[Callable[[], object]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def reserve(self) -> bool:
        """Take a place for one delivery, without waiting; False when the queue is full."""
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back a place :meth:`reserve` took for a delivery that queued nothing."""
        self._slots.release()

    def put(self, job: Callable[[], object]) -> None:
        """Queue ``job`` in the place :meth:`reserve` took; the worker starts on first use."""
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="pms-webhook-callbacks", daemon=True)
                self._worker.start()
        self._jobs.put(job)

    def join(self) -> None:
        """Wait until every queued delivery's callbacks have run."""
        self._jobs.join()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:
                log.exception("webhook callbacks failed")
            finally:
                self._slots.release()
                self._jobs.task_done()


class _Api:
    def __init__(self, client: PMSClient | None, token: Secret | None, max_body_bytes: int) -> None:
        self.client = client
        # A fixed client, or the module-level functions (the default client, looked up per call;
        # they take the same arguments as the client's methods).
        self.calls: PMSClient | ModuleType = client if client is not None else _default
        self.token = token
        self.max_body = max_body_bytes
        self.webhook_queue = WebhookQueue()

    # -- guard -----------------------------------------------------------------------------

    def _check_auth(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        realm = 'Bearer realm="pms-integration"'
        if not header:
            detail = 'Send the server token in the Authorization header with the scheme "Bearer".'
            raise Problem(401, "unauthorized", "Authentication required", detail, headers={"WWW-Authenticate": realm})
        expected = self.token.reveal().encode("utf-8")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode("utf-8"), expected):
            detail = "The token in the Authorization header is not valid for this server."
            challenge = {"WWW-Authenticate": realm + ', error="invalid_token"'}
            raise Problem(401, "unauthorized", "Invalid token", detail, headers=challenge)

    def _check_token_configured(self) -> None:
        """The read endpoints return patient data: without a server token they are not served,
        not even on loopback, where the write endpoints may go without one."""
        if self.token is None:
            raise Problem(
                403,
                "token-required",
                "Server token required",
                f"This endpoint returns patient data and is served only when the server has a token: set "
                f'{TOKEN_VARIABLE} to a long random value and send it in the Authorization header with the scheme "Bearer".',
            )

    def guard(self, endpoint: Endpoint, *, patient_data: bool = False, authenticate: bool = True) -> Endpoint:
        """Authenticate, run, and turn every failure into a problem response. On a
        ``patient_data`` endpoint a read (GET) is refused outright when the server has no token.
        ``authenticate=False``: no bearer token (the webhook endpoint: the signature is the check)."""

        async def wrapped(request: Request) -> Response:
            try:
                if patient_data and request.method in ("GET", "HEAD"):
                    self._check_token_configured()
                if authenticate:
                    self._check_auth(request)
                return await endpoint(request)
            except Problem as problem:
                return self._answer(request, problem)
            except PMSError as exc:
                return self._answer(request, problem_for(exc))
            except Exception:
                log.exception("%s %s failed inside the server", request.method, redact(request.url.path))
                return self._answer(
                    request,
                    Problem(500, "internal", "Internal error", "The server failed to handle the request; see its log."),
                )

        wrapped.__name__ = endpoint.__name__
        wrapped.__doc__ = endpoint.__doc__
        return wrapped

    def _answer(self, request: Request, problem: Problem) -> Response:
        level = logging.WARNING if problem.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", request.method, redact(request.url.path), problem.status, problem.slug)
        return problem.response()

    # -- endpoints -------------------------------------------------------------------------

    def _providers(self) -> dict[str, Any]:
        client = self.client if self.client is not None else _default.get_client()
        default = client.config.default_provider
        return {
            # Statuses never hold a secret; a problem's text is redacted all the same.
            "providers": [
                {**status, "problems": redact_data(status.get("problems", []))}
                for status in (unstructure(s) for s in client.providers())
            ],
            "default_provider": default.value if default is not None else None,
        }

    async def providers(self, request: Request) -> Response:
        """Every provider's status: enabled, or the variables to set. Never a secret."""
        return _json_response(200, await run_in_threadpool(self._providers))

    async def state(self, request: Request) -> Response:
        """The state store's check: kind, URL (never a password), namespace, round trip; 503 if unusable."""
        _query(request, ())
        check = await run_in_threadpool(self.calls.check_state)
        return _json_response(200, attrs.asdict(check))

    async def book(self, request: Request) -> Response:
        name = _provider_from(request)
        body = _object_body(await _read_json(request, self.max_body), what="an AppointmentRequest")
        appointment = await run_in_threadpool(self.calls.book_appointment, body, provider=name)
        return _json_response(201, _model_json(appointment))

    async def booking(self, request: Request) -> Response:
        """GET reads the appointment as the vendor holds it now; PATCH reschedules or edits; DELETE cancels."""
        handler = {"GET": self.get_booking, "DELETE": self.cancel}.get(request.method, self.update)
        return await handler(request)

    async def get_booking(self, request: Request) -> Response:
        name = _provider_from(request)
        _query(request, ())
        appointment = await run_in_threadpool(self.calls.get_appointment, str(request.path_params["id"]), provider=name)
        return _json_response(200, _model_json(appointment))

    async def slots(self, request: Request) -> Response:
        name = _provider_from(request)
        query = _query(request, ("start", "end", "duration"))
        duration = _whole_number(query.get("duration"), "duration")
        extra = {} if duration is None else {"duration_minutes": duration}

        start: Any = query.get("start")  # None: the library reports it missing, with end
        end: Any = query.get("end")

        def search() -> Any:
            try:
                return self.calls.free_slots(start, end, provider=name, **extra)
            except ValidationError as exc:  # the library's field is the query's duration
                raise ValidationError(
                    [("duration" if path == "duration_minutes" else path, why) for path, why in exc.errors]
                ) from None

        return _json_response(200, _list_json(await run_in_threadpool(search)))

    async def bookings(self, request: Request) -> Response:
        name = _provider_from(request)
        query = _query(request, ("email", "phone", "reference", "start", "end", "include_cancelled"))
        flag = query.pop("include_cancelled", None)
        if flag is not None and flag.lower() not in ("true", "false"):
            raise ValidationError.single("include_cancelled", "must be true or false")
        found = await run_in_threadpool(
            lambda: self.calls.find_appointments(
                **query, include_cancelled=flag is not None and flag.lower() == "true", provider=name
            )
        )
        return _json_response(200, _list_json(found))

    async def patients(self, request: Request) -> Response:
        name = _provider_from(request)
        query = _query(request, ("email", "phone"))
        found = await run_in_threadpool(lambda: self.calls.find_patient(**query, provider=name))
        return _json_response(200, _list_json(found))

    async def changes(self, request: Request) -> Response:
        """The change feed (docs/changes.md): ``since`` a cursor or an ISO-8601 time, ``provider``, ``feed``."""
        query = _query(request, ("since", "provider", "feed"))
        since: Any = query.get("since")
        if since is not None and since[:1].isdigit():
            try:
                since = _dt.datetime.fromisoformat(since.replace("Z", "+00:00").replace(" ", "+"))
            except ValueError:
                raise ValidationError.single("since", "is neither a cursor nor an ISO-8601 time") from None
        batch = await run_in_threadpool(
            lambda: self.calls.changes(since, provider=query.get("provider"), feed=query.get("feed"))
        )
        events = [unstructure(change) for change in batch]
        for event in events:  # the appointment's vendor response, redacted like every model's
            if isinstance(event.get("appointment"), dict):
                event["appointment"] = redact_raw(event["appointment"])
        return _json_response(200, {"events": events, "cursor": batch.cursor})

    async def update(self, request: Request) -> Response:
        name = _provider_from(request)
        appointment_id = str(request.path_params["id"])
        body = _object_body(await _read_json(request, self.max_body), what="an AppointmentUpdate")
        appointment = await run_in_threadpool(self.calls.update_appointment, appointment_id, body, provider=name)
        return _json_response(200, _model_json(appointment))

    async def cancel(self, request: Request) -> Response:
        name = _provider_from(request)
        appointment_id = str(request.path_params["id"])
        data = await _read_json(request, self.max_body)
        in_body = _only_member(data, "reason", shape=' such as {"reason": "..."}', unknown="is not a known field")
        # the body wins over the query string
        reason: Any = in_body if in_body is not None else request.query_params.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValidationError.single("reason", "must be a string")
        appointment = await run_in_threadpool(
            self.calls.cancel_appointment, appointment_id, reason=reason, provider=name
        )
        return _json_response(200, _model_json(appointment))

    async def performance(self, request: Request) -> Response:
        name = _provider_from(request)
        data = await _read_json(request, self.max_body)
        shape, unknown = ': {"report": {...}} or {}', 'is not a known field; send the report inside {"report": {...}}'
        report = _only_member(data, "report", shape=shape, unknown=unknown)

        def push() -> ReportReceipt:
            # Structured here (in the worker thread) so field paths read "report.metrics", as
            # the body's shape; None means "the registered report source's current report".
            rep = None if report is None else structure(report, PerformanceReport, path="report")
            return self.calls.push_performance_report(rep, provider=name)

        return _json_response(200, _model_json(await run_in_threadpool(push)))


    async def webhook(self, request: Request) -> Response:
        """A vendor's signed webhook: verified, de-duplicated, answered at once; the changes go to
        the ``on_change`` callbacks on the worker queue afterwards."""
        name = _provider_from(request)
        if not self.webhook_queue.reserve():
            raise Problem(
                503,
                "webhook-queue-full",
                "Too many webhooks waiting",
                "The server is still handling earlier webhooks; retry later.",
                headers={"Retry-After": str(_DEFAULT_RETRY_AFTER)},
            )
        queued = False
        try:
            body = await _read_body(request, self.max_body)
            client = self.client if self.client is not None else _default.get_client()
            headers = list(request.headers.items())
            url, method = str(request.url), request.method

            def parse() -> webhooks.WebhookDelivery:
                return webhooks.parse_for(client, name, method=method, url=url, headers=headers, body=body)

            try:
                changes = await run_in_threadpool(parse)
            except WebhookReplayError:
                log.info("%s webhook: a redelivery, nothing new (answered 200)", name.value)
                return _json_response(200, {"received": 0, "duplicate": True})


            def deliver() -> None:
                # callbacks first, then the commit: a crash in between loses nothing (the feed
                # reports the change; the vendor's retry is accepted once the lease expired)
                try:
                    webhooks.dispatch(changes, client=client)
                except BaseException:
                    changes.release()
                    raise
                changes.commit()

            self.webhook_queue.put(deliver)
            queued = True
            return _json_response(200, {"received": len(changes), "duplicate": False})
        finally:
            if not queued:
                self.webhook_queue.release()


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method) as problem+json too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    title = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "HTTP error")
    detail = {
        404: f"No endpoint at {request.url.path}; the endpoints live under {PREFIX}/.",
        405: f"{request.method} is not allowed here.",
    }.get(status, title)
    return Problem(status, "about:blank", title, detail, headers=headers).response()


def _resolve_token(
    token: str | EllipsisType | None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
) -> Secret | None:
    """The server's token (a weak one is a ConfigurationError); ``token=...`` reads ``PMS_SERVER_TOKEN``
    from the configuration's sources (:func:`pms_integration.config.read_variables`)."""
    if token is ...:
        value = read_variables(environ, env_file).get(TOKEN_VARIABLE, "").strip()
        return Secret.checked(value, name=TOKEN_VARIABLE) if value else None
    if environ is not None or env_file not in (..., None):
        read_variables(environ, env_file)  # unused with an explicit token, but a bad one is still misuse
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip():
        raise ValidationError.single("token", "must be a non-empty string, or None to disable authentication")
    return Secret.checked(token.strip(), name="token")


def _check_arguments(client: object, max_body_bytes: object) -> None:
    """Misuse of create_app/run is a ConfigurationError naming the argument, before anything runs."""
    if client is not None and not isinstance(client, PMSClient):
        raise ConfigurationError(
            f"client must be a PMSClient (or None for the default client), not {type(client).__name__}.",
            problems=["client must be a PMSClient or None"],
        )
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValidationError.single("max_body_bytes", "must be a positive integer")


def create_app(
    client: PMSClient | None = None,
    *,
    token: str | EllipsisType | None = ...,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
    environ: Mapping[str, str] | None = None,
    webhook_queue: WebhookQueue | None = None,
) -> Starlette:
    """The ASGI app serving the ``/api/integrations/pms`` endpoints.

    ``client``: the :class:`PMSClient` to use; ``None``: the default client, looked up on every
    request (so :func:`pms_integration.reload` takes effect at once). ``token``: the bearer token
    every request must carry; left out, ``PMS_SERVER_TOKEN`` read now as the configuration is
    (``env_file``, ``environ``); unset or empty, or ``None``: no authentication.
    ``max_body_bytes``: larger request bodies are refused with 413. ``webhook_queue``: where the
    webhook endpoint queues changes for the callbacks (default: a :class:`WebhookQueue` of
    :data:`DEFAULT_WEBHOOK_QUEUE` deliveries); also at ``app.state.pms_webhook_queue``.
    """
    _check_arguments(client, max_body_bytes)
    secret = _resolve_token(token, environ=environ, env_file=env_file)
    if secret is None:
        log.info(
            "pms_integration.server: no %s set; the write endpoints accept unauthenticated requests and the "
            "read endpoints (patient data) are refused",
            TOKEN_VARIABLE,
        )
    if webhook_queue is not None and not isinstance(webhook_queue, WebhookQueue):
        raise ValidationError.single("webhook_queue", "must be a pms_integration.server.WebhookQueue, or None")
    api = _Api(client, secret, max_body_bytes)
    if webhook_queue is not None:
        api.webhook_queue = webhook_queue
    each = f"{PREFIX}/{{provider}}"
    booking = api.guard(api.booking, patient_data=True)  # its GET reads; PATCH and DELETE write
    routes = [
        Route(f"{PREFIX}/providers", api.guard(api.providers), methods=["GET"], name="pms_providers"),
        # says where bookings are remembered: served with a token only, like the reads
        Route(f"{PREFIX}/state", api.guard(api.state, patient_data=True), methods=["GET"], name="pms_state"),
        Route(f"{each}/book", api.guard(api.book), methods=["POST"], name="pms_book"),
        # One route for every method, so a 405 there lists them all in Allow.
        Route(f"{each}/booking/{{id}}", booking, methods=["GET", "PATCH", "DELETE"], name="pms_booking"),
        Route(f"{each}/performance", api.guard(api.performance), methods=["POST"], name="pms_performance"),
        # the scheduling reads return patient data: served only with a token (see _check_token_configured)
        Route(f"{each}/slots", api.guard(api.slots, patient_data=True), methods=["GET"], name="pms_slots"),
        Route(f"{each}/bookings", api.guard(api.bookings, patient_data=True), methods=["GET"], name="pms_bookings"),
        Route(f"{each}/patients", api.guard(api.patients, patient_data=True), methods=["GET"], name="pms_patients"),
        # the change feed carries appointments (patient data): a token, like the reads
        Route(f"{PREFIX}/changes", api.guard(api.changes, patient_data=True), methods=["GET"], name="pms_changes"),
        # no bearer token: the vendor's signature authenticates (docs/webhooks.md)
        Route(f"{each}/webhook", api.guard(api.webhook, authenticate=False), methods=["POST"], name="pms_webhook"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    app.state.pms_webhook_queue = api.webhook_queue
    return app


class UnprotectedServerError(ConfigurationError):
    """Serving the endpoints beyond loopback without a token was refused."""

    hint = ""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``, ``[::1]``)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return bool(name) and is_loopback_host(name)


def check_exposure(host: str, token: Secret | None, *, insecure_no_auth: bool = False) -> None:
    """Refuse (:class:`UnprotectedServerError`, before anything is bound) to serve beyond loopback
    without a token, since anyone reaching the address could book and cancel; ``insecure_no_auth=True``
    allows it, for when another layer (an authenticating proxy, say) guards the endpoints."""
    if token is not None or is_loopback(host):
        return
    if insecure_no_auth:
        log.warning(
            "serving the booking endpoints on %s WITHOUT authentication (insecure_no_auth): anyone who can "
            "reach this address can book and cancel appointments",
            host,
        )
        return
    raise UnprotectedServerError(
        f"Refusing to serve on {host!r} without a token: anyone who can reach that address could book and "
        f"cancel appointments. Set {TOKEN_VARIABLE} to a long random value (your frontend sends it in "
        "the Authorization header as a bearer token), or serve on 127.0.0.1 only. If another layer already guards "
        "the endpoints, pass insecure_no_auth=True."
    )


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    client: PMSClient | None = None,
    token: str | EllipsisType | None = ...,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    insecure_no_auth: bool = False,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Serve :func:`create_app` with uvicorn until interrupted (127.0.0.1 by default). Any other
    ``host`` needs a token (``token=`` or ``PMS_SERVER_TOKEN``) or ``insecure_no_auth=True``
    (see :func:`check_exposure`)."""
    if not isinstance(host, str):
        raise ValidationError.single("host", "must be a host name or an IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError.single("port", "must be a whole number from 0 to 65535")
    if not isinstance(insecure_no_auth, bool):
        raise ValidationError.single("insecure_no_auth", "must be True or False")
    _check_arguments(client, max_body_bytes)
    secret = _resolve_token(token, environ=environ, env_file=env_file)
    check_exposure(host, secret, insecure_no_auth=insecure_no_auth)
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"pms_integration.server.run needs uvicorn. {server_extra_hint()}") from exc
    app = create_app(client, token=secret.reveal() if secret is not None else None, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info", log_config=_log_config())


class PathOnly(logging.Filter):
    """Drops the query string from uvicorn's access-log lines: the read endpoints take a
    patient's e-mail or phone there, and a log is no place for them. The server's own log
    lines name the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with :class:`PathOnly` on its access log."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["path_only"] = {"()": PathOnly}
    config["handlers"]["access"].setdefault("filters", []).append("path_only")
    return config
