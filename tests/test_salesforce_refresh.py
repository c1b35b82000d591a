"""Token refresh under concurrency: 16 threads hit 401 together, exactly one refresh happens."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pms_integration._http import Runtime
from pms_integration._retry import deadline_scope
from pms_integration.config import Secret
from pms_integration.errors import AuthenticationError, ResponseTooLargeError, TransportError
from pms_integration.models import AppointmentUpdate
from pms_integration.providers.salesforce import SalesforceAdapter, create

from ._salesforce_support import EVENT_ID, REFRESH_ENV, settings
from .conftest import CANARY

THREADS = 16
NEW_TOKEN = "00Drefreshed!AQnew-access-token-77"
EVENT = {
    "Id": EVENT_ID,
    "Subject": "Cleaning - Jane Doe [bk-1]",
    "StartDateTime": "2037-03-09T13:00:00.000+0000",
    "EndDateTime": "2037-03-09T13:45:00.000+0000",
    "ShowAs": "Busy",
}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refreshes = 0
        self.rejected = 0
        self.accepted = 0
        self.arrived = 0
        self.all_arrived = threading.Event()
        self.all_rejected = threading.Event()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Handler(_Quiet):
    disable_nagle_algorithm = True

    def _send(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\nContent-Type: application/json\r\n\r\n"
        self.wfile.write(head.encode() + payload)

    def do_GET(self) -> None:
        # the read an update starts with: the first request each thread makes
        self._api(200, EVENT)

    def do_PATCH(self) -> None:
        self._api(204, None)

    def _api(self, status: int, body: Any) -> None:
        state: _State = self.server.state
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") == f"Bearer {NEW_TOKEN}":
            if self.command == "PATCH":
                with state.lock:
                    state.accepted += 1
            self._send(status, body)
            return
        # Hold every stale-token request until all of them are in, so that no thread can see a
        # refreshed token before all 16 have been rejected.
        with state.lock:
            state.arrived += 1
            if state.arrived >= THREADS:
                state.all_arrived.set()
        state.all_arrived.wait(5)
        with state.lock:
            state.rejected += 1
            if state.rejected >= THREADS:
                state.all_rejected.set()
        self._send(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])

    def do_POST(self) -> None:
        state: _State = self.server.state
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/services/oauth2/token":
            self._send(404, [{"message": "no", "errorCode": "NOT_FOUND"}])
            return
        with state.lock:
            state.refreshes += 1
        # Hold the answer until every thread has been rejected, so all 16 are really concurrent.
        state.all_rejected.wait(5)
        self._send(200, {"access_token": NEW_TOKEN, "token_type": "Bearer", "issued_at": "1"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 makes 16 simultaneous connects wait 1 s


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler], **attributes: Any) -> Iterator[Any]:
    """A loopback server for ``handler`` with ``attributes`` set on it, stopped afterwards."""
    srv = _Server(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(srv, name, value)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _adapter(srv: Any) -> SalesforceAdapter:
    """An adapter with the refresh variables, pointed at ``srv``."""
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    return create(settings(PMS_SALESFORCE_BASE_URL=base, **REFRESH_ENV), Runtime(sleep=lambda s: None))


@pytest.fixture
def server() -> Iterator[Any]:
    with _serving(_Handler, state=_State()) as srv:
        yield srv


def test_sixteen_threads_cause_exactly_one_refresh(server: Any) -> None:
    state: _State = server.state
    adapter = _adapter(server)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(5)
            adapter.update(EVENT_ID, AppointmentUpdate(location="Chair 1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    adapter.close()
    assert errors == []
    assert state.refreshes == 1
    assert adapter.auth.refresh_count == 1
    assert state.rejected == THREADS
    assert state.accepted == THREADS
    assert isinstance(adapter.auth._token, Secret)
    assert adapter.auth._token.reveal() == NEW_TOKEN


# ---------------------------------------------------------------------------------------------
# a token endpoint that redirects


class _Recorder(_Quiet):
    """The host a redirect names: it must never hear from the client."""

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PATCH = do_DELETE = _record


class _ExpiredOrg(_Quiet):
    """An org whose API says "expired" to every call; subclasses answer the token endpoint."""

    def token_endpoint(self) -> None:
        raise NotImplementedError

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path == "/services/oauth2/token":
            self.token_endpoint()
            return
        payload = json.dumps([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer


class _Redirector(_ExpiredOrg):
    """The token endpoint answers 307 to another host."""

    def token_endpoint(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.server.target + "/services/oauth2/token?steal=1")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirecting_token_endpoint_gets_no_credentials_and_the_error_says_what_to_do() -> None:
    with (
        _serving(_Recorder, seen=[], lock=threading.Lock()) as elsewhere,
        _serving(_Redirector, target=f"http://127.0.0.1:{elsewhere.server_address[1]}") as org,
    ):
        adapter = _adapter(org)
        with pytest.raises(AuthenticationError) as caught:
            adapter.cancel(EVENT_ID)
        adapter.close()
    assert elsewhere.seen == []
    error = caught.value
    assert error.status_code == 307 and error.code == "REDIRECT_REFUSED"
    text = str(error)
    assert "PMS_SALESFORCE_BASE_URL" in text and "My Domain" in text and "127.0.0.1" in text
    assert "steal" not in text
    for secret in (CANARY["PMS_SALESFORCE_CLIENT_SECRET"], CANARY["PMS_SALESFORCE_REFRESH_TOKEN"]):
        assert secret not in text and secret not in repr(error)


class _BadTokenEndpoint(_ExpiredOrg):
    """The token endpoint misbehaves as ``server.mode`` says."""

    def token_endpoint(self) -> None:
        mode = self.server.mode
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if mode == "gzip-bomb":
            bomb = self.server.bomb
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)
        elif mode == "huge":
            size = 100 * 1024 * 1024
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * (1024 * 1024)
            try:
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client stopped reading, as it should
        else:  # "trickle": one byte at a time, for far longer than any deadline
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                while not self.server.stop.is_set():
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    self.server.stop.wait(0.2)
            except OSError:
                pass


@pytest.mark.parametrize("mode", ["trickle", "huge", "gzip-bomb"])
def test_the_token_refresh_is_bounded_like_any_api_call(mode: str) -> None:
    """The refresh goes through the transport's cut-off and body cap: a trickling, huge or
    compressed-bomb answer from the token endpoint ends the call with a typed error."""
    # made before memory is traced: only what the client allocates is measured
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9) if mode == "gzip-bomb" else b""
    outcome: dict[str, BaseException] = {}
    done = threading.Event()
    with _serving(_BadTokenEndpoint, mode=mode, stop=threading.Event(), bomb=bomb) as org:

        def call() -> None:
            adapter = _adapter(org)
            try:
                with deadline_scope(1.5):
                    adapter.cancel(EVENT_ID)
            except BaseException as exc:  # the test inspects whatever ended the call
                outcome["error"] = exc
            finally:
                adapter.close()
                done.set()

        tracemalloc.start()
        try:
            threading.Thread(target=call, daemon=True).start()
            # Without a bound the trickle runs until the server is stopped (never, here) and the
            # huge body is read whole: a generous wait that only a hung call can exhaust.
            assert done.wait(60), "the token refresh was not cut off"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            org.stop.set()
    error = outcome.get("error")
    assert isinstance(error, (TransportError, ResponseTooLargeError)), repr(error)
    assert error.operation == "token refresh"
    assert peak < 50 * 1024 * 1024
    for secret in (CANARY["PMS_SALESFORCE_CLIENT_SECRET"], CANARY["PMS_SALESFORCE_REFRESH_TOKEN"]):
        assert secret not in str(error) and secret not in repr(error)
