"""The one HTTP transport every adapter uses.

One :class:`Transport` per provider per client wraps one ``requests.Session`` (keep-alive, a
connection pool sized for many concurrent callers). It adds the timeout and auth header to
every request, logs one redacted line per request, turns error responses into the exception
hierarchy (each adapter only parses its vendor's error *body*), honours ``Retry-After``, and
applies the retry table:

==========================================  ====================  ============================
failure                                     idempotent request    create (non-idempotent POST)
==========================================  ====================  ============================
never sent (connection refused, DNS)        retry                 retry
read timeout, reset after send              retry                 raise, ``outcome_unknown``
429 (or the vendor's equivalent)            wait, retry           wait, retry (not applied)
500 / 502 / 503 / 504                       retry with backoff    raise, ``outcome_unknown``
other 4xx                                   raise                 raise
==========================================  ====================  ============================

"Raise, outcome_unknown" is where the adapter's reconcile step takes over: it looks the booking
up by its reference before anything is sent again (see :func:`create_once`).
"""

from __future__ import annotations

import json as _json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import attrs
import requests
import requests.adapters
import requests.utils
import tenacity
import urllib3.exceptions

from ._ratelimit import LimiterTimeout, RateLimiter, RateLimitInfo
from ._redact import excerpt
from ._retry import RetryPolicy, current_deadline, parse_retry_after
from ._version import __version__
from .config import RateLimit, Secret
from .errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PMSError,
    ProviderError,
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from .models import ProviderName

__all__ = [
    "Transport",
    "Runtime",
    "HttpResponse",
    "ErrorInfo",
    "BearerAuth",
    "Auth",
    "create_once",
    "USER_AGENT",
]

log = logging.getLogger("pms_integration.http")
USER_AGENT = f"pms-integration/{__version__} python-requests/{requests.__version__}"
POOL_SIZE = 64
_EMAILISH = re.compile(r"[^/]*(?:@|%40)[^/]*", re.IGNORECASE)
_REQUEST_ID_HEADERS = ("x-request-id", "x-hubspot-correlation-id", "sforce-call-id", "x-trace-id", "traceid")
T = TypeVar("T")


@attrs.frozen
class HttpResponse:
    """A finished response: status, headers and body text, with lazy JSON."""

    status: int
    headers: Mapping[str, str]
    text: str
    method: str
    path: str

    def json(self) -> Any:
        """The body as JSON, or ``None`` for an empty body. Raises ``ValueError`` otherwise."""
        if not self.text.strip():
            return None
        return _json.loads(self.text)

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@attrs.frozen
class ErrorInfo:
    """What an adapter's error parser read out of a vendor error response.

    ``error_class`` overrides the status-based class (Salesforce's 403
    ``REQUEST_LIMIT_EXCEEDED`` is a :class:`RateLimitError`); ``retryable`` overrides the table
    (a HubSpot DAILY 429 is not worth retrying; a 423 lock is); ``retry_after`` is a wait the
    body asked for when the headers did not.
    """

    message: str
    code: str | None = None
    fields: tuple[str, ...] = ()
    request_id: str | None = None
    error_class: type[APIError] | None = None
    retryable: bool | None = None
    retry_after: float | None = None


ErrorParser = Callable[[HttpResponse], ErrorInfo]
RateHeaderParser = Callable[[Mapping[str, str]], RateLimitInfo | None]


class Auth(Protocol):
    """Adds credentials to a request and, optionally, refreshes them after a 401."""

    def apply(self, headers: dict[str, str]) -> object:
        """Set the auth header; return a marker of the credential used."""
        ...

    def refresh(self, used: object) -> bool:
        """The credential ``used`` was rejected: refresh it; True means "replay the request"."""
        ...


class BearerAuth:
    """``Authorization: Bearer <token>`` from a :class:`Secret`; no refresh."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def apply(self, headers: dict[str, str]) -> object:
        headers["Authorization"] = "Bearer " + self._token.reveal()
        return self._token

    def refresh(self, used: object) -> bool:
        return False

    def __repr__(self) -> str:
        return "BearerAuth(Secret('**********'))"


_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: NotFoundError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def default_error_parser(resp: HttpResponse) -> ErrorInfo:
    """A fallback parser: a ``message`` key if the body is JSON, else the reason phrase."""
    body = resp.json_or_none()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ErrorInfo(body["message"])
    return ErrorInfo(f"HTTP {resp.status}")


class _Retry(Exception):
    """Internal: this attempt failed in a way the table says may be retried."""

    def __init__(self, error: PMSError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before any byte of the request left."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError)):
            return True
        if isinstance(cause, urllib3.exceptions.MaxRetryError):
            cause = cause.reason
            continue
        nxt = cause.__cause__ or cause.__context__
        if nxt is None and cause.args and isinstance(cause.args[0], BaseException):
            nxt = cause.args[0]
        cause = nxt
    return False


def _log_path(url: str) -> str:
    """The URL path for logs: no query string, and e-mail-like segments masked (PII)."""
    path = urlsplit(url).path or "/"
    return _EMAILISH.sub("{email}", path)


class Transport:
    """HTTP for one provider. Thread-safe; share it between threads."""

    def __init__(
        self,
        *,
        provider: ProviderName,
        base_url: str,
        auth: Auth,
        timeout: float,
        token_variable: str,
        error_parser: ErrorParser = default_error_parser,
        rate_header_parser: RateHeaderParser | None = None,
        rate_limit: RateLimit | None = None,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.token_variable = token_variable
        self.error_parser = error_parser
        self.rate_header_parser = rate_header_parser
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.limiter = (
            RateLimiter(rate_limit.requests, rate_limit.per_seconds, clock=clock, sleep=sleep) if rate_limit else None
        )
        self.session = session or requests.Session()
        # requests re-reads proxy variables and ~/.netrc on every call when trust_env is on -
        # about as costly as the rest of a loopback request - and a netrc entry for the vendor
        # host would silently replace our Authorization header. Read the environment once here.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self.session.verify = ca_bundle
        self.session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        # Session defaults, proxies and CA settings merged once: each request is prepared here
        # and handed to Session.send, skipping Session.request's per-call merging (about a
        # tenth of a millisecond of CPU per request in requests 2.3x).
        self._base_headers: dict[str, str] = {
            k: v if isinstance(v, str) else v.decode("latin-1") for k, v in self.session.headers.items()
        }
        self._base_headers.update(default_headers or {})
        self._send_options: dict[str, Any] = {
            "proxies": dict(self.session.proxies),
            "verify": self.session.verify,
            "cert": self.session.cert,
            "stream": False,
            # API calls are never redirected: a redirect could replay a create elsewhere, and
            # requests would drop the Authorization header on the way anyway
            "allow_redirects": False,
        }
        self.default_headers = dict(default_headers or {})
        self._info_lock = threading.Lock()
        self._rate_info: RateLimitInfo | None = None
        self.request_count = 0

    # -- public -----------------------------------------------------------------------------

    @property
    def rate_limit_info(self) -> RateLimitInfo | None:
        """What the vendor's headers last said about the remaining quota."""
        return self._rate_info

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect: tuple[int, ...] = (),
        reference: str | None = None,
        absolute_url: str | None = None,
    ) -> HttpResponse:
        """Send a request with retries; return the response or raise a :class:`ProviderError`.

        ``idempotent`` defaults to true for every method but POST. ``expect`` lists error
        statuses the caller handles itself (returned instead of raised, never retried).
        ``reference`` is quoted in errors whose outcome is unknown.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method != "POST"
        url = absolute_url or self.url(path)

        def attempt(number: int) -> HttpResponse:
            return self._attempt(
                method,
                url,
                operation=operation,
                json=json,
                params=params,
                headers=headers,
                data=data,
                idempotent=idempotent,
                expect=expect,
                reference=reference,
                number=number,
            )

        try:
            return attempt(1)  # the common case: no retry machinery at all
        except _Retry as exc:
            first = exc
        retrying = tenacity.Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for state in retrying:
                with state:
                    number = state.retry_state.attempt_number
                    if number == 1:
                        raise first  # tenacity decides on the failure that already happened
                    return attempt(number)
        except _Retry as exc:
            raise exc.error from exc.error.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.session.close()

    # -- retry plumbing ---------------------------------------------------------------------

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.policy.max_attempts:
            return True
        deadline = current_deadline()
        if deadline is None:
            return False
        return self._next_delay(state) >= deadline.remaining()

    def _next_delay(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Retry) and exc.delay is not None:
            return exc.delay
        return self.policy.backoff(state.attempt_number)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        delay = self._next_delay(state)
        log.debug("%s: retrying in %.2f s (attempt %d)", self.provider.value, delay, state.attempt_number)
        return delay

    # -- one attempt ------------------------------------------------------------------------

    def _timeout(self) -> float:
        deadline = current_deadline()
        if deadline is None:
            return self.timeout
        remaining = deadline.remaining()
        if remaining <= 0:
            raise TransportError(
                "the operation's deadline passed before the request could be sent",
                provider=self.provider.value,
            )
        return max(0.05, min(self.timeout, remaining))

    def _acquire_slot(self) -> None:
        if self.limiter is None:
            return
        deadline = current_deadline()
        try:
            self.limiter.acquire(None if deadline is None else max(deadline.remaining(), 0.0))
        except LimiterTimeout as exc:
            raise RateLimitError(
                "the client-side rate limit has no free slot before the operation's deadline",
                status_code=429,
                code="CLIENT_RATE_LIMIT",
                retry_after=round(exc.wait, 3),
                provider=self.provider.value,
            ) from None

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        json: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
        idempotent: bool,
        expect: tuple[int, ...],
        reference: str | None,
        number: int,
    ) -> HttpResponse:
        replayed = False
        while True:
            timeout = self._timeout()
            self._acquire_slot()
            hdrs = dict(self._base_headers)
            if headers:
                hdrs.update(headers)
            marker = self.auth.apply(hdrs)
            started = time.perf_counter()
            with self._info_lock:
                self.request_count += 1
            try:
                prepared = requests.Request(
                    method, url, headers=hdrs, json=json, params=params, data=data, hooks=self.session.hooks
                ).prepare()
                raw = self.session.send(prepared, timeout=timeout, **self._send_options)
            except requests.RequestException as exc:
                self._raise_transport(exc, method, url, operation, idempotent, reference, number, started)
            resp = HttpResponse(raw.status_code, raw.headers, raw.text, method, _log_path(url))
            request_id: str | None = None
            if resp.status >= 300 or log.isEnabledFor(logging.INFO):
                request_id = next((raw.headers[h] for h in _REQUEST_ID_HEADERS if h in raw.headers), None)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s -> %d in %.0f ms (attempt %d%s)",
                    self.provider.value,
                    method,
                    resp.path,
                    resp.status,
                    (time.perf_counter() - started) * 1000,
                    number,
                    f", request id {request_id}" if request_id else "",
                )
            self._observe(resp)
            if resp.status < 300 or resp.status in expect:
                return resp
            if resp.status == 401 and not replayed and self.auth.refresh(marker):
                replayed = True
                continue
            raise self._error(resp, operation, idempotent, reference, request_id)

    def _raise_transport(
        self,
        exc: requests.RequestException,
        method: str,
        url: str,
        operation: str,
        idempotent: bool,
        reference: str | None,
        number: int,
        started: float,
    ) -> Any:
        elapsed = (time.perf_counter() - started) * 1000
        kind = type(exc).__name__
        # requests keeps the prepared request - Authorization header included - on the
        # exception; it will travel as our error's __cause__, so drop it
        exc.request = None
        exc.response = None
        path = _log_path(url)
        log.info("%s %s %s -> %s after %.0f ms (attempt %d)", self.provider.value, method, path, kind, elapsed, number)
        label = self.provider.label
        if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.ReadTimeout):
            if _never_sent(exc):
                err = TransportError(
                    f"{label} could not be reached ({kind}) for {operation}",
                    provider=self.provider.value,
                    operation=operation,
                )
                err.__cause__ = exc
                raise _Retry(err)
            sent = True
        elif isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError)):
            sent = True
        else:
            err = TransportError(
                f"{label} request for {operation} failed before sending ({kind})",
                provider=self.provider.value,
                operation=operation,
            )
            raise err from exc
        what = "timed out waiting for" if isinstance(exc, requests.Timeout) else "lost the connection during"
        err = TransportError(
            f"{label} {what} {operation}",
            provider=self.provider.value,
            operation=operation,
            outcome_unknown=sent and not idempotent,
            reference=reference,
        )
        err.__cause__ = exc
        if idempotent:
            raise _Retry(err)
        raise err

    def _observe(self, resp: HttpResponse) -> None:
        if self.rate_header_parser is None:
            return
        try:
            info = self.rate_header_parser(resp.headers)
        except Exception:  # noqa: BLE001 - odd quota headers must not fail a good response
            info = None
        if info is None:
            return
        with self._info_lock:
            self._rate_info = info
        if self.limiter is not None:
            self.limiter.observe(info)

    def _error(
        self,
        resp: HttpResponse,
        operation: str,
        idempotent: bool,
        reference: str | None,
        request_id: str | None,
    ) -> Exception:
        try:
            info = self.error_parser(resp)
        except Exception:  # noqa: BLE001 - a parser must never turn an error into a crash
            info = default_error_parser(resp)
        status = resp.status
        cls = info.error_class or _STATUS_CLASSES.get(status)
        if cls is None:
            cls = ServerError if status >= 500 else APIError
        label = self.provider.label
        message = f"{label} {operation} failed with HTTP {status}"
        if info.code:
            message += f" {info.code}"
        if info.message:
            message += f": {excerpt(info.message, 300)}"
        if cls is AuthenticationError:
            message += f". Check {self.token_variable}"
        retry_after = parse_retry_after(resp.header("Retry-After"))
        if info.retry_after is not None:
            # the vendor's documented minimum (HubSpot: >= 2 s after a 423) wins over a shorter header
            retry_after = max(retry_after or 0.0, info.retry_after)
        ambiguous = cls is ServerError and not idempotent
        common: dict[str, Any] = dict(
            status_code=status,
            code=info.code,
            request_id=info.request_id or request_id,
            body_excerpt=resp.text if status >= 500 else None,
            fields=info.fields,
            provider=self.provider.value,
            operation=operation,
            outcome_unknown=ambiguous,
            reference=reference if ambiguous else None,
        )
        if issubclass(cls, RateLimitError):
            error: APIError = cls(message, retry_after=retry_after, **common)
        else:
            error = cls(message, **common)
        if isinstance(error, RateLimitError):
            wait = retry_after if retry_after is not None else None
            if self.limiter is not None and wait is not None:
                self.limiter.pause(min(wait, self.policy.max_retry_after))
            if info.retryable is False or (wait is not None and wait > self.policy.max_retry_after):
                return error
            return _Retry(error, wait)
        if info.retryable is True:
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                return error
            return _Retry(error, retry_after)
        if info.retryable is None and cls is ServerError and idempotent:
            return _Retry(error, retry_after)
        return error


@attrs.frozen
class Runtime:
    """What the client hands every adapter: shared policy and the injectable clock and sleep."""

    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    session_factory: Callable[[], requests.Session] = requests.Session

    def transport(
        self,
        *,
        provider: ProviderName,
        base_url: str,
        auth: Auth,
        timeout: float,
        token_variable: str,
        error_parser: ErrorParser = default_error_parser,
        rate_header_parser: RateHeaderParser | None = None,
        rate_limit: RateLimit | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> Transport:
        return Transport(
            provider=provider,
            base_url=base_url,
            auth=auth,
            timeout=timeout,
            token_variable=token_variable,
            error_parser=error_parser,
            rate_header_parser=rate_header_parser,
            rate_limit=rate_limit,
            policy=self.policy,
            session=self.session_factory(),
            sleep=self.sleep,
            clock=self.clock,
            default_headers=default_headers,
        )


def create_once(
    create: Callable[[], T],
    find: Callable[[], T | None],
    *,
    provider: ProviderName,
    operation: str,
    reference: str,
    attempts: int = 2,
) -> T:
    """Create a record without ever creating it twice.

    ``create`` sends the non-idempotent request; ``find`` looks the record up by its reference
    (with idempotent requests only). After a failure whose outcome is unknown (a timeout or a
    reset after the request went out, a 5xx), ``find`` runs first: a record that exists is
    returned as the result; otherwise the create is tried again, up to ``attempts`` times in
    all. If the look-up itself fails, the original error is raised with ``outcome_unknown``
    and the reference in its message, because nobody can tell whether the record exists.
    """
    last: ProviderError | None = None
    for _ in range(max(attempts, 1)):
        try:
            return create()
        except ProviderError as exc:
            if not exc.outcome_unknown:
                raise
            last = exc
            log.warning(
                "%s %s: outcome unknown (%s); looking up reference %s before any retry",
                provider.value,
                operation,
                type(exc).__name__,
                reference,
            )
        deadline = current_deadline()
        if deadline is not None and deadline.expired():
            break
        try:
            found = find()
        except PMSError as lookup_error:
            log.warning(
                "%s %s: look-up of %s failed (%s)", provider.value, operation, reference, type(lookup_error).__name__
            )
            break
        if found is not None:
            log.info("%s %s: reference %s already exists; not creating again", provider.value, operation, reference)
            return found
    assert last is not None
    last.reference = reference
    last.outcome_unknown = True
    raise last


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
