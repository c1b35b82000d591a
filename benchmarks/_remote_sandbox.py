"""Run the loopback sandbox in a child process and control it from the benchmark.

The benchmark process should hold only the client side. With the emulators in the same
interpreter, every sandbox request would compete with the client for the GIL, and the
concurrency figure would measure Python's lock rather than the library. The child serves the
three vendor emulators and answers one JSON command per line on stdin/stdout; a real vendor
server is also another process, so this is the more faithful set-up.

Run directly (``python benchmarks/_remote_sandbox.py``) it is the child.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["RemoteSandbox"]


class RemoteSandbox:
    """The parent's handle: the attributes and counters the benchmark needs, over a pipe."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.url: str = self._call("url")

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, op: str, *args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps([op, *args]) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sandbox process exited (code {self._proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"sandbox command {op!r} failed: {reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self._call("stop")
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> RemoteSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the benchmark uses -------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        env: dict[str, str] = self._call("environ")
        return env

    @property
    def latency(self) -> float:
        value: float = self._call("get", "latency")
        return value

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._call("set", "latency", seconds)

    @property
    def connections_opened(self) -> int:
        value: int = self._call("get", "connections_opened")
        return value

    @property
    def rate_limited(self) -> int:
        value: int = self._call("get", "rate_limited")
        return value

    def request_count(self, provider: str | None = None, *, status: int | None = None) -> int:
        value: int = self._call("request_count", provider, status)
        return value

    def record_mark(self) -> int:
        """A position in the sandbox's request log (see :meth:`records_since`)."""
        value: int = self._call("record_mark")
        return value

    def records_since(self, mark: int) -> list[dict[str, Any]]:
        """The requests logged after ``mark``: provider, operation, method, status."""
        value: list[dict[str, Any]] = self._call("records_since", mark)
        return value

    def set_rate_limit(self, provider: str, requests: int | None, per_seconds: float = 1.0) -> None:
        self._call("set_rate_limit", provider, requests, per_seconds)

    def reset_provider(self, provider: str) -> None:
        """Forget one emulator's records (bookings, contacts, notes), keeping its tokens.

        Salesforce's daily API allowance is lifted again afterwards, so no figure of the
        benchmark can run into the org's 15,000-request limit.
        """
        self._call("reset_provider", provider)


# ---------------------------------------------------------------------------------------------
# the child


def _serve() -> None:
    from pms_integration.models import ProviderName
    from pms_integration.sandbox import Sandbox

    sandbox = Sandbox().start()
    # the figures measure the client, not the vendor's windows: HubSpot's burst limit (on by default
    # in the sandbox) is off here; the rate-limited burst sets its own window with set_rate_limit
    if ProviderName.HUBSPOT in sandbox.emulators:
        sandbox.emulator(ProviderName.HUBSPOT).burst_limit = None  # type: ignore[attr-defined]
    sandbox.emulator("ghl").open_hours = None  # type: ignore[attr-defined]  # the benchmarks book round the clock
    # the request counts are the client's: a search sees what was just written (no index lag to
    # wait out), and the reads run back to back without meeting HubSpot's 5 searches a second
    if ProviderName.HUBSPOT in sandbox.emulators:
        sandbox.emulator(ProviderName.HUBSPOT).search_lag = 0.0  # type: ignore[attr-defined]
        sandbox.emulator(ProviderName.HUBSPOT).search_rate = None  # type: ignore[attr-defined]

    handlers: dict[str, Any] = {
        "url": lambda: sandbox.url,
        "environ": sandbox.environ,
        "get": lambda name: getattr(sandbox, name),
        "set": lambda name, value: setattr(sandbox, name, value),
        "request_count": lambda provider, status: sandbox.request_count(provider, status=status),
        "record_mark": lambda: len(sandbox.records),
        "set_rate_limit": sandbox.set_rate_limit,
    }

    def records_since(mark: int) -> list[dict[str, Any]]:
        records = list(sandbox.records)[mark:]
        return [
            {"provider": r.provider.value, "operation": r.operation, "method": r.method, "status": r.status}
            for r in records
        ]

    def lift_daily_limit() -> None:
        emulator = sandbox.emulators.get(ProviderName.SALESFORCE)
        if emulator is not None:
            emulator.set_api_usage(0, 10**9)  # type: ignore[attr-defined]

    def reset_provider(provider: str) -> None:
        emulator = sandbox.emulator(provider)
        with emulator.lock:
            emulator.reset()
        lift_daily_limit()

    lift_daily_limit()
    handlers["records_since"] = records_since
    handlers["reset_provider"] = reset_provider

    try:
        for line in sys.stdin:
            op, *args = json.loads(line)
            if op == "stop":
                sys.stdout.write(json.dumps({"ok": None}) + "\n")
                sys.stdout.flush()
                break
            try:
                result = handlers[op](*args)
                reply = {"ok": result}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        sandbox.stop()


if __name__ == "__main__":
    _serve()
