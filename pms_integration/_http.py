"""The one HTTP transport every adapter uses.

One :class:`Transport` per provider per client: a pooled ``requests.Session``, every request cut
off by a watchdog at its time limit, bodies read under a size cap, error answers typed, and
retries run by tenacity under the table :func:`should_retry` encodes. What is retried, the waits
and the limits: docs/errors.md ("What the library retries for you") and docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.client
import itertools
import json as _json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Container, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import attrs
import requests
import requests.adapters
import requests.utils
import tenacity
import urllib3
import urllib3.connection
import urllib3.exceptions
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._ratelimit import Limiter, LimiterTimeout, RateLimiter, RateLimitInfo, Slot
from ._redact import excerpt, redact
from ._retry import RetryPolicy, current_deadline, parse_retry_after
from ._version import __version__
from .config import RateLimit, Secret
from .errors import (
    APIError,
    AuthenticationError,
    PMSError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
    error_class_for_status,
)
from .models import ProviderName
from .state import StateStore

__all__ = ["Transport", "Runtime", "HttpResponse", "ErrorInfo", "BearerAuth", "Auth", "USER_AGENT", "should_retry"]

log = logging.getLogger("pms_integration.http")
USER_AGENT = f"pms-integration/{__version__} python-requests/{requests.__version__}"
POOL_SIZE = 64
_EMAILISH = re.compile(r"[^/]*(?:@|%40)[^/]*", re.IGNORECASE)
_REQUEST_ID_HEADERS = ("x-request-id", "x-hubspot-correlation-id", "sforce-call-id", "x-trace-id", "traceid")
#: A vendor's request id is vendor text: scrubbed, cut to this length, printable ASCII only.
REQUEST_ID_MAX_CHARS = 128
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
#: Waits longer than this many seconds are logged as a WARNING, with the reason.
WARN_WAITS_OVER = 1.0
#: A shared budget's slot never released counts as finished this long after the request's
#: timeout (a process killed mid-request must not hold its slots for long)
STALE_SLACK = 30.0
_CHUNK = 64 * 1024
_ANY_STATUS = range(1000)


def clean_request_id(value: object) -> str | None:
    """A vendor-echoed request id fit for logs and errors: printable, short and redacted."""
    if not isinstance(value, str):
        return None
    text = _NOT_PRINTABLE.sub("?", value.strip())[: REQUEST_ID_MAX_CHARS * 4]
    text = redact(text)[:REQUEST_ID_MAX_CHARS]
    return text or None


def _request_id(headers: Mapping[str, str]) -> str | None:
    return clean_request_id(next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None))


# -- the watchdog: a whole request, not each socket read, is bounded ---------------------------


@attrs.define(eq=False)
class _Watch:
    """One request's cut-off (on ``time.monotonic``) and the connection it is using."""

    at: float
    conn: Any = None
    fired: bool = False
    closed: bool = False


def _cut(conn: Any) -> None:
    """Shut a connection's socket so that a read blocked on it returns at once."""
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    # the plain socket's shutdown, also for TLS sockets: it wakes a blocked read without
    # touching the TLS object another thread is using
    with contextlib.suppress(OSError, ValueError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the process that shuts the socket of every request past its cut-off.

    Each request registers a :class:`_Watch` before it is sent; the connection urllib3 picks
    binds itself to the watch of the thread sending on it, and unbinds when it goes back to the
    pool, so a cut can never hit a connection another request is using.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._live = 0
        self._wakes_at = float("inf")  # when the thread will next look at the heap by itself
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def start(self, seconds: float) -> _Watch:
        watch = _Watch(time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (watch.at, next(self._seq), watch))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pms-integration-watchdog", daemon=True)
                self._thread.start()
            if watch.at < self._wakes_at:
                self._cond.notify()
        self._local.watch = watch
        return watch

    def sending(self) -> None:
        """The request is out of urllib3's hands (headers in): later connections are not ours."""
        self._local.watch = None

    def bind(self, conn: Any) -> None:
        watch: _Watch | None = getattr(self._local, "watch", None)
        if watch is None:
            return
        with self._cond:
            if watch.closed:
                return
            watch.conn = conn
            conn._pms_watch = watch
            if watch.fired:
                _cut(conn)

    def unbind(self, conn: Any) -> None:
        with self._cond:
            watch = getattr(conn, "_pms_watch", None)
            if watch is not None:
                watch.conn = None
                conn._pms_watch = None

    def finish(self, watch: _Watch) -> None:
        self._local.watch = None
        with self._cond:
            watch.closed = True
            if watch.conn is not None:
                watch.conn._pms_watch = None
                watch.conn = None
            self._live -= 1
            # finished watches leave the heap from its head (so the thread does not wake for
            # them), or all at once if a long request at the head holds many back
            heap = self._heap
            while heap and heap[0][2].closed:
                heapq.heappop(heap)
            if len(heap) > 2 * self._live + 1024:
                self._heap = [entry for entry in heap if not entry[2].closed]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].closed or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if not watch.closed:
                        watch.fired = True
                        if watch.conn is not None:
                            _cut(watch.conn)
                self._wakes_at = self._heap[0][0] if self._heap else float("inf")
                self._cond.wait(self._wakes_at - now if self._heap else None)


_WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.bind(self)
        super().request(*args, **kwargs)

    def getresponse(self) -> Any:
        watch = getattr(self, "_pms_watch", None)
        if watch is not None and watch.fired:
            _cut(self)  # the time ran out while connecting or sending
        return super().getresponse()


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    """TLS: the same two hooks (HTTPSConnection derives from HTTPConnection, so super() reaches it)."""


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            _WATCHDOG.unbind(conn)
        super()._put_conn(conn)


class _WatchedHTTPSPool(_WatchedHTTPPool, urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection  # the scheme and TLS settings come from HTTPSConnectionPool


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections the watchdog can cut (SOCKS proxies keep their own pools)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _TooLarge(Exception):
    """Internal: a success body went past the cap."""


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
        return _json.loads(self.text) if self.text.strip() else None

    def json_or_none(self) -> Any:
        with contextlib.suppress(ValueError, RecursionError):  # "[" * 5000 nests too deep
            return self.json()
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


def default_error_parser(resp: HttpResponse) -> ErrorInfo:
    """A fallback parser: a ``message`` key if the body is JSON, else the reason phrase."""
    body = resp.json_or_none()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ErrorInfo(body["message"])
    return ErrorInfo(f"HTTP {resp.status}")


# -- what is retried, how long is waited, when to stop ------------------------------------------


def should_retry(error: PMSError, *, idempotent: bool) -> bool:
    """The retry table of docs/errors.md: may a request that failed with ``error`` go out again?

    Pure: it reads the error's class and ``outcome_unknown`` only. A vendor's parser may decide
    otherwise for one answer (:attr:`ErrorInfo.retryable`); whether the wait fits the policy and
    the deadline is the stop's concern, not this one's.
    """
    if isinstance(error, RateLimitError):
        return True  # a rejected request was not applied
    if isinstance(error, ServerError):
        return idempotent  # a create may have been applied: it is looked up, not re-sent
    if isinstance(error, TransportError):
        return idempotent or not error.outcome_unknown  # for a create: only if nothing was sent
    return False  # 4xx, an answer too large or unreadable


class _Retry(Exception):
    """Internal: ``error`` may be retried after ``delay`` seconds (``None``: backoff); ``why`` is logged."""

    def __init__(self, error: PMSError, delay: float | None = None, why: str = "") -> None:
        super().__init__(str(error))
        self.error, self.delay, self.why = error, delay, why


def _verdict(
    error: PMSError, idempotent: bool, delay: float | None = None, why: str = "", retryable: bool | None = None
) -> Exception:
    """``error`` as the attempt raises it: wrapped for tenacity when it may be retried."""
    retry = should_retry(error, idempotent=idempotent) if retryable is None else retryable
    return _Retry(error, delay, why) if retry else error


def _log_wait(seconds: float, message: str, *args: object) -> None:
    log.log(logging.WARNING if seconds > WARN_WAITS_OVER else logging.DEBUG, message, *args)


def _failure(retry_state: tenacity.RetryCallState) -> _Retry | None:
    failure = retry_state.outcome.exception() if retry_state.outcome is not None else None
    return failure if isinstance(failure, _Retry) else None


class _wait_asked(wait_base):
    """The wait the failed answer asked for (``Retry-After``, a rate-limit window), else ``backoff``
    (never more than ``longest`` seconds)."""

    def __init__(self, backoff: wait_base, longest: float) -> None:
        self.backoff, self.longest = backoff, longest

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        failure = _failure(retry_state)
        asked = failure.delay if failure is not None else None
        return min(self.backoff(retry_state), self.longest) if asked is None else asked


class _stop_before_deadline(stop_base):
    """Stop when the next wait is over ``longest`` seconds or would end past the operation's deadline."""

    def __init__(self, longest: float) -> None:
        self.longest = longest

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        wait, deadline = retry_state.upcoming_sleep, current_deadline()
        return wait > self.longest or (deadline is not None and wait >= deadline.remaining())


def _retrying(policy: RetryPolicy, sleep: Callable[[float], None], provider: ProviderName) -> tenacity.Retrying:
    """The transport's retry loop: every attempt, the first included, runs inside it."""

    def log_wait(retry_state: tenacity.RetryCallState) -> None:
        failure, delay = _failure(retry_state), retry_state.upcoming_sleep
        why = failure.why if failure is not None and failure.why else "backoff after a failed attempt"
        attempt = retry_state.attempt_number
        _log_wait(
            delay, "%s: waiting %.1f s before retrying (attempt %d failed): %s", provider.value, delay, attempt, why
        )

    # doubling from backoff_initial, plus up to jitter seconds, all within backoff_max
    backoff = tenacity.wait_exponential(
        multiplier=policy.backoff_initial, max=policy.backoff_max
    ) + tenacity.wait_random(0, policy.jitter)
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts) | _stop_before_deadline(policy.max_retry_after),
        wait=_wait_asked(backoff, policy.backoff_max),
        retry=tenacity.retry_if_exception_type(_Retry),
        before_sleep=log_wait,
        sleep=sleep,
        reraise=True,
    )


@attrs.define
class _Call:
    """One request as its log lines and errors tell it; the last four fields are the current attempt's."""

    method: str
    url: str
    operation: str
    idempotent: bool
    reference: str | None = None
    number: int = 1
    timeout: float = 0.0
    by_deadline: bool = False
    started: float = 0.0

    @property
    def path(self) -> str:
        return _log_path(self.url)


#: How a request without a complete answer was lost: "local" (refused before sending, not
#: retried), "never_sent" (no byte left: safe to send again), "timeout" or "lost" (it may have
#: been applied). Transport._lost_as turns one into the typed error and verdict.
LostKind = Literal["local", "never_sent", "timeout", "lost"]


def _lost_kind(exc: BaseException, *, timed_out: bool) -> LostKind:
    """The sync transport's classifier: what a ``requests``/``urllib3`` failure means."""
    # a bad URL or header: requests refused it before sending, and it would refuse it again
    if isinstance(exc, requests.RequestException) and not isinstance(
        exc, (requests.ConnectionError, requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError)
    ):
        return "local"
    if isinstance(exc, requests.ConnectionError) and not timed_out and _never_sent(exc):
        return "never_sent"
    if timed_out or isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return "timeout"
    return "lost"


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


def _inflater(encoding: str) -> Callable[[bytes, int], bytes] | None:
    """A decoder for one Content-Encoding that never returns more than ``max_length`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return gz.decompress
    if encoding == "deflate":
        # "deflate" is meant to be zlib-wrapped; some servers send the raw stream
        state: dict[str, Any] = {"d": zlib.decompressobj(zlib.MAX_WBITS), "first": True}

        def inflate(data: bytes, max_length: int) -> bytes:
            if state["first"]:
                state["first"] = False
                try:
                    return bytes(state["d"].decompress(data, max_length))
                except zlib.error:
                    state["d"] = zlib.decompressobj(-zlib.MAX_WBITS)
            return bytes(state["d"].decompress(data, max_length))

        return inflate
    raise zlib.error(f"unsupported Content-Encoding {encoding[:40]!r}")


def _read_capped(raw: requests.Response, limit: int, *, cut: bool) -> bytes:
    """Up to ``limit`` bytes of the decoded body; past it the rest is left unread and either the
    first ``limit`` bytes are returned (``cut``) or :class:`_TooLarge` is raised."""
    stream = raw.raw
    if stream is None:
        return b""
    inflate = _inflater(raw.headers.get("Content-Encoding", ""))
    if inflate is None:
        length = raw.headers.get("Content-Length", "").strip()
        if length.isdigit():
            if int(length) <= limit:
                # the common case: a known, small body in one read (never more than its length)
                return bytes(stream.read(None, decode_content=False) or b"")
            if not cut:
                raise _TooLarge()
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(_CHUNK, decode_content=False)
        if not chunk:
            break
        if inflate is None:
            parts.append(chunk)
            size += len(chunk)
        else:
            # at most one byte past the cap is ever inflated: a gzip bomb costs nothing
            out = inflate(chunk, limit - size + 1)
            parts.append(out)
            size += len(out)
        if size > limit:
            if cut:
                return b"".join(parts)[:limit]
            raise _TooLarge()
    return b"".join(parts)


class Transport:
    """HTTP for one provider. Thread-safe; share it between threads."""

    #: The largest success body read (after gzip/deflate decoding); a larger one is a
    #: :class:`~pms_integration.errors.ResponseTooLargeError`.
    MAX_BODY_BYTES = 8 * 1024 * 1024
    #: How much of an error body is read (for the message and excerpt); the rest is discarded
    #: with the connection.
    MAX_ERROR_BODY_BYTES = 64 * 1024

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
        rate_limit_window: float | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.token_variable = token_variable
        self.error_parser, self.rate_header_parser = error_parser, rate_header_parser
        self.policy, self.sleep, self.clock = policy or RetryPolicy(), sleep, clock
        #: The vendor's documented rate-limit window in seconds: how long a 429 that names no
        #: ``Retry-After`` (and whose headers name no window) is waited out.
        self.rate_limit_window = rate_limit_window
        #: the client-side limiter: ``limiter`` when given (an account's budget shared with other
        #: transports, see Runtime.transport), else one of its own when ``rate_limit`` is set
        self.limiter: Limiter | None = limiter
        if limiter is not None:
            if limiter.on_wait is None:
                # not a bound method: the shared limiter must not keep this transport alive
                limiter.on_wait = functools.partial(_limiter_waits, provider.value)
        elif rate_limit:
            self.limiter = RateLimiter(
                rate_limit.requests, rate_limit.per_seconds, clock=clock, sleep=sleep, on_wait=self._limiter_waits
            )
        self._retrying = _retrying(self.policy, sleep, provider)
        self.session = session or requests.Session()
        # requests re-reads proxy variables and ~/.netrc on every call when trust_env is on -
        # about as costly as the rest of a loopback request - and a netrc entry for the vendor
        # host would silently replace our Authorization header. Read the environment once here.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self.session.verify = ca_bundle
        self.session.trust_env = False
        adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # only the encodings whose inflated size the transport can cap itself
        self.session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        )
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
            # the body is read here, in chunks, against the size caps and the watchdog
            "stream": True,
            # API calls are never redirected: a redirect could replay a create elsewhere, and
            # requests would drop the Authorization header on the way anyway
            "allow_redirects": False,
        }
        self._info_lock = threading.Lock()
        self._rate_info: RateLimitInfo | None = None
        self.request_count = 0
        # (until, why, status): no request leaves before ``until`` on ``clock`` (a vendor's Retry-After)
        self._held: tuple[float, str, int] = (float("-inf"), "", 503)

    @property
    def rate_limit_info(self) -> RateLimitInfo | None:
        """What the vendor's headers last said about the remaining quota."""
        return self._rate_info

    def close(self) -> None:
        self.session.close()

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
        idempotent = method != "POST" if idempotent is None else idempotent
        call = _Call(method, absolute_url or self.base_url + path, operation, idempotent, reference)
        body = {"json": json, "params": params, "data": data}
        try:
            for attempt in self._retrying:
                with attempt:
                    call.number = attempt.retry_state.attempt_number
                    return self._attempt(call, headers, expect, body)
        except _Retry as exc:
            raise exc.error from exc.error.__cause__
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def send_once(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_body: int | None = None,
    ) -> HttpResponse:
        """One request outside the API's auth, limiter and retries (an OAuth token refresh, say).

        Bounded like every other: cut off at the timeout or the deadline, the body read up to
        ``max_body`` bytes (``MAX_ERROR_BODY_BYTES`` by default; more is :class:`ResponseTooLargeError`),
        a redirect returned, never followed. A failure is a :class:`TransportError`, not retried.
        """
        # a token refresh changes no booking: idempotent, so a lost answer is no "may have been applied"
        call = _Call(method, url, operation, idempotent=True)
        call.timeout, call.by_deadline = self._timeout()
        limit = self.MAX_ERROR_BODY_BYTES if max_body is None else max_body
        try:
            return self._send(call, {**self._base_headers, **(headers or {})}, None, _ANY_STATUS, limit, data=data)
        except _Retry as exc:  # one try only, whatever the table says
            raise exc.error from exc.error.__cause__

    # -- one attempt --------------------------------------------------------------------------

    def _attempt(
        self, call: _Call, headers: Mapping[str, str] | None, expect: tuple[int, ...], body: dict[str, Any]
    ) -> HttpResponse:
        """One attempt: a 401 whose credential the auth could refresh is replayed once inside it."""
        replayed = False
        while True:
            self._honour_hold(call.operation)
            call.timeout, call.by_deadline = self._timeout()
            slot = self._acquire_slot()
            hdrs = {**self._base_headers, **(headers or {})}
            marker = self.auth.apply(hdrs)
            resp = self._send(call, hdrs, slot, expect, self.MAX_BODY_BYTES, **body)
            if log.isEnabledFor(logging.INFO):
                request_id = _request_id(resp.headers)
                log.info(
                    "%s %s %s -> %d in %.0f ms (attempt %d%s)",
                    self.provider.value,
                    call.method,
                    resp.path,
                    resp.status,
                    (time.perf_counter() - call.started) * 1000,
                    call.number,
                    f", request id {request_id}" if request_id else "",
                )
            quota = self._observe(resp)
            if resp.status < 300 or resp.status in expect:
                return resp
            if resp.status == 401 and not replayed and self.auth.refresh(marker):
                replayed = True
                continue
            raise self._failed(resp, call, quota)

    def _send(
        self, call: _Call, hdrs: dict[str, str], slot: Slot | None, expect: Container[int], limit: int, **body: Any
    ) -> HttpResponse:
        """One exchange on the wire under the watchdog: a success body (``< 300`` or in ``expect``)
        is read up to ``limit`` bytes, an error body up to ``MAX_ERROR_BODY_BYTES`` (the rest is
        dropped with the connection). A lost answer raises its verdict (see :meth:`_lost`)."""
        call.started = time.perf_counter()
        with self._info_lock:
            self.request_count += 1
        watch = _WATCHDOG.start(call.timeout)
        try:
            try:
                prepared = requests.Request(call.method, call.url, headers=hdrs, hooks=self.session.hooks, **body)
                raw = self.session.send(prepared.prepare(), timeout=call.timeout, **self._send_options)
            except requests.RequestException as exc:
                raise self._lost(exc, call, timed_out=watch.fired) from exc
            finally:
                _WATCHDOG.sending()
                if slot is not None and self.limiter is not None:
                    # the answer's headers are back: an upper bound on when the vendor counted it
                    self.limiter.release(slot)
            success = raw.status_code < 300 or raw.status_code in expect
            try:
                data = _read_capped(raw, limit if success else self.MAX_ERROR_BODY_BYTES, cut=not success)
            except _TooLarge:
                raise self._too_large(call, raw.status_code, limit) from None
            except (urllib3.exceptions.HTTPError, requests.RequestException, http.client.HTTPException, OSError) as exc:
                raise self._lost(exc, call, timed_out=watch.fired) from exc
            except zlib.error as exc:
                raise self._lost(exc, call, timed_out=False) from exc
            finally:
                raw.close()
        finally:
            _WATCHDOG.finish(watch)
        encoding = requests.utils.get_encoding_from_headers(raw.headers) or "utf-8"
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")
        return HttpResponse(raw.status_code, raw.headers, text, call.method, call.path)

    # -- failures: typed first, then held and judged ---------------------------------------------

    def _too_large(self, call: _Call, status: int, limit: int) -> ResponseTooLargeError:
        size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit // 1024} KiB"
        return ResponseTooLargeError(
            f"{self.provider.label} answered {call.operation} (HTTP {status}) with a body over {size}; it was not read",
            provider=self.provider.value,
            operation=call.operation,
            outcome_unknown=not call.idempotent,
            reference=None if call.idempotent else call.reference,
        )

    def _lost(self, exc: BaseException, call: _Call, *, timed_out: bool) -> Exception:
        """A request that got no complete answer, as its :class:`TransportError` and verdict."""
        if isinstance(exc, requests.RequestException):
            # requests keeps the prepared request - Authorization header included - on the
            # exception; it will travel as our error's __cause__, so drop it
            exc.request = exc.response = None
        return self._lost_as(exc, call, _lost_kind(exc, timed_out=timed_out))

    def _lost_as(self, exc: BaseException, call: _Call, kind: LostKind) -> Exception:
        """The :class:`TransportError` and verdict for a lost answer the classifier called ``kind``
        (shared by the sync and the async transport, so both type failures alike)."""
        elapsed, who = (time.perf_counter() - call.started) * 1000, f"{self.provider.value} {call.method} {call.path}"
        log.info("%s -> %s after %.0f ms (attempt %d)", who, type(exc).__name__, elapsed, call.number)
        label, operation, name = self.provider.label, call.operation, type(exc).__name__
        if kind == "local":
            message = f"{label} request for {operation} failed before sending ({name})"
        elif kind == "never_sent":
            message = f"{label} could not be reached ({name}) for {operation}"
        elif kind == "timeout":
            why = (
                "the operation's deadline (PMS_DEADLINE_MS) ran out before a complete answer arrived"
                if call.by_deadline
                else f"no complete answer within the {call.timeout:g} s request timeout"
            )
            message = f"{label} timed out waiting for {operation}: {why}"
        else:
            message = f"{label} lost the connection during {operation}"
        sent = kind not in ("local", "never_sent")
        error = TransportError(
            message,
            provider=self.provider.value,
            operation=operation,
            outcome_unknown=sent and not call.idempotent,
            reference=call.reference if sent else None,
        )
        error.__cause__ = exc
        return _verdict(error, call.idempotent, retryable=False if kind == "local" else None)

    def _failed(self, resp: HttpResponse, call: _Call, quota: RateLimitInfo | None) -> Exception:
        """An error answer: typed, then the transport held if it asked to wait, then the verdict."""
        try:
            info = self.error_parser(resp)
        except Exception:  # noqa: BLE001 - a parser must never turn an error into a crash
            info = default_error_parser(resp)
        error, wait, why = self._classify(resp, info, call, quota)
        if wait is not None and isinstance(error, (RateLimitError, ServerError)):
            self._hold(wait, why, resp.status)  # every request through this transport, not only the retry
        return _verdict(error, call.idempotent, wait, why, info.retryable)

    def _classify(
        self, resp: HttpResponse, info: ErrorInfo, call: _Call, quota: RateLimitInfo | None
    ) -> tuple[APIError, float | None, str]:
        """The typed error for an error answer, the wait it asked for (``None``: none) and why."""
        status, operation = resp.status, call.operation
        cls = info.error_class or error_class_for_status(status)
        message = f"{self.provider.label} {operation} failed with HTTP {status}"
        if info.code:
            message += f" {info.code}"
        if info.message:
            message += f": {excerpt(info.message, 300)}"
        if cls is AuthenticationError:
            message += f". Check {self.token_variable}"
        wait = parse_retry_after(resp.header("Retry-After"))
        if info.retry_after is not None:
            # the vendor's documented minimum (HubSpot: >= 2 s after a 423) wins over a shorter header
            wait = max(wait or 0.0, info.retry_after)
        why = f"{operation} answered HTTP {status}" + (f" with Retry-After {wait:g} s" if wait is not None else "")
        if issubclass(cls, RateLimitError) and wait is None and info.retryable is not False:
            # no Retry-After: wait out the window the vendor counts in, not a short backoff
            window = quota.interval_seconds if quota is not None else None
            wait = float(window) if window is not None and window > 0 else self.rate_limit_window
            if wait is not None:
                why = f"{operation} answered HTTP {status} without Retry-After; waiting out the {wait:g} s rate-limit window"
        ambiguous = issubclass(cls, ServerError) and not call.idempotent
        common: dict[str, Any] = dict(
            status_code=status,
            code=info.code,
            request_id=clean_request_id(info.request_id) or _request_id(resp.headers),
            body_excerpt=resp.text if status >= 500 else None,
            fields=info.fields,
            provider=self.provider.value,
            operation=operation,
            outcome_unknown=ambiguous,
            reference=call.reference if ambiguous else None,
        )
        if issubclass(cls, (RateLimitError, ServerError)):
            return cls(message, retry_after=wait, **common), wait, why
        return cls(message, **common), wait, why

    # -- waits: the vendor's Retry-After, the client-side limiter, the deadline ------------------

    def _limiter_waits(self, seconds: float, why: str) -> None:
        _limiter_waits(self.provider.value, seconds, why)

    def _hold(self, seconds: float, why: str, status: int) -> None:
        """No request leaves this transport for ``seconds`` (capped at ``max_retry_after``)."""
        until = self.clock() + min(max(seconds, 0.0), self.policy.max_retry_after)
        with self._info_lock:
            if until > self._held[0]:
                self._held = (until, why, status)

    def _honour_hold(self, operation: str) -> None:
        """Wait out a vendor's Retry-After before any request; raise if the deadline is nearer."""
        until, why, status = self._held
        wait = until - self.clock()
        if wait <= 0:
            return
        deadline = current_deadline()
        if deadline is not None and wait > deadline.remaining():
            cls: type[RateLimitError | ServerError] = RateLimitError if status == 429 else ServerError
            raise cls(
                f"{self.provider.label} asked to wait {wait:.3g} s before the next request ({why}); "
                f"the deadline for {operation} is nearer",
                status_code=status,
                code="RETRY_AFTER",
                retry_after=round(wait, 3),
                provider=self.provider.value,
                operation=operation,
            )
        if wait > WARN_WAITS_OVER:
            log.warning("%s: waiting %.1f s before %s: %s", self.provider.value, wait, operation, why)
        self.sleep(wait)

    def _observe(self, resp: HttpResponse) -> RateLimitInfo | None:
        """Note (and return) what the answer's rate-limit headers say; odd ones never fail an answer."""
        try:
            info = None if self.rate_header_parser is None else self.rate_header_parser(resp.headers)
        except Exception:  # noqa: BLE001
            return None
        if info is not None:
            with self._info_lock:
                self._rate_info = info
            if self.limiter is not None:
                self.limiter.observe(info)
        return info

    def _timeout(self) -> tuple[float, bool]:
        """Seconds this request may take in all, and whether the operation's deadline set it."""
        deadline = current_deadline()
        if deadline is None:
            return self.timeout, False
        remaining = deadline.remaining()
        if remaining <= 0:
            raise TransportError(
                "the operation's deadline passed before the request could be sent", provider=self.provider.value
            )
        return max(0.05, min(self.timeout, remaining)), remaining <= self.timeout

    def _acquire_slot(self) -> Slot | None:
        if self.limiter is None:
            return None
        return acquire_within_deadline(self.limiter, "the client-side rate limit", self.provider)


def _limiter_waits(provider: str, seconds: float, why: str) -> None:
    _log_wait(seconds, "%s: waiting %.1f s for a request slot: %s", provider, seconds, why)


def acquire_within_deadline(
    limiter: Limiter, what: str, provider: ProviderName, operation: str | None = None
) -> Slot:
    """A slot of ``limiter``, waiting at most what the operation's deadline leaves; a
    ``RateLimitError`` (code CLIENT_RATE_LIMIT, nothing sent) naming ``what`` otherwise."""
    deadline = current_deadline()
    try:
        return limiter.acquire(None if deadline is None else max(deadline.remaining(), 0.0))
    except LimiterTimeout as exc:
        raise RateLimitError(
            f"{what} has no free slot before the operation's deadline",
            status_code=429,
            code="CLIENT_RATE_LIMIT",
            retry_after=round(exc.wait, 3),
            provider=provider.value,
            operation=operation,
        ) from None


@attrs.frozen
class Runtime:
    """What the client hands every adapter: shared policy and the injectable clock and sleep."""

    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    session_factory: Callable[[], requests.Session] = requests.Session
    #: the state store rate budgets live in (None: the process-wide memory store)
    state: StateStore | None = None
    #: the transport class adapters get (``pms_integration.aio`` gives one that awaits its I/O)
    transport_class: type[Transport] | None = None

    def transport(self, *, account: str | None = None, **options: Any) -> Transport:
        """A :class:`Transport` (``options``: its own keywords) on this runtime's policy, sleep,
        clock and a new session.

        With ``account`` and a ``rate_limit``, the limiter is the account's budget
        ``budget:<provider>:<account>`` in :attr:`state` (:func:`~pms_integration.state._budget.budget_limiter`):
        for a memory store the process's one :class:`RateLimiter` per account, clock and sleep
        (every client of the process on the account shares it); for SQLite or Redis a
        :class:`~pms_integration.state._budget.SharedRateLimiter` that every process on the
        store shares, on real time (the runtime's injected clock and sleep do not move it).
        Without ``account`` the transport keeps a limiter of its own."""
        session = self.session_factory()
        rate_limit = options.get("rate_limit")
        if account is not None and rate_limit and "limiter" not in options:
            options["limiter"] = self.budget(
                f"budget:{ProviderName.parse(options['provider']).value}:{account}",
                rate_limit.requests,
                rate_limit.per_seconds,
                stale=float(options.get("timeout") or 0.0) + STALE_SLACK,
            )
        cls = self.transport_class or Transport
        return cls(**options, policy=self.policy, session=session, sleep=self.sleep, clock=self.clock)

    def budget(self, key: str, requests: int, per_seconds: float, *, stale: float) -> Limiter:
        """The limiter of the budget ``key`` in :attr:`state` on this runtime's clock and sleep."""
        from .state import default_state
        from .state._budget import budget_limiter

        store = self.state if self.state is not None else default_state()
        return budget_limiter(store, key, requests, per_seconds, clock=self.clock, sleep=self.sleep, stale=stale)
