"""Helpers for testing your own code against pms-integration, without credentials.

A pytest plugin (entry point ``pytest11``): the ``pms_sandbox`` fixture runs the three vendor
emulators and makes a client pointed at them the default; ``pms_async_sandbox`` does the same and
hands out asyncio clients (``session.async_client()``), with no async test plugin needed. See
docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _default
from .client import PMSClient
from .errors import ConfigurationError
from .models import ProviderName

if TYPE_CHECKING:
    from .aio import AsyncPMSClient
    from .sandbox import Sandbox

__all__ = ["SandboxSession", "aio_missing", "as_default", "sandbox_session"]

#: What the asyncio API needs beyond the core install (the ``[aio]`` extra).
AIO_MODULES = ("aiohttp", "greenlet")
AIO_HINT = "pip install 'pms-integration[aio]' (from a checkout: pip install -e '.[aio]')"


def aio_missing() -> list[str]:
    """The packages of the ``[aio]`` extra that are not installed (none: the asyncio API works).
    Looks for them without importing them."""
    missing = []
    for name in AIO_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def __getattr__(name: str) -> Any:
    if name == "use_client":  # its old name, which pms_integration.use_client also had
        warnings.warn(
            "pms_integration.testing.use_client is deprecated; use pms_integration.testing.as_default",
            DeprecationWarning,
            stacklevel=2,
        )
        return as_default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def as_default(client: PMSClient) -> Iterator[PMSClient]:
    """Make ``client`` the default client for the block, then put the previous one back."""
    if not isinstance(client, PMSClient):
        raise ConfigurationError(f"as_default needs a PMSClient, not {type(client).__name__}.")
    with _default._lock:
        previous, _default._client = _default._client, client
    try:
        yield client
    finally:
        with _default._lock:
            _default._client = previous


class SandboxSession:
    """A running sandbox and a client configured against it (what ``pms_sandbox`` yields)."""

    def __init__(self, sandbox: Sandbox, client: PMSClient, environ: dict[str, str]) -> None:
        self.sandbox = sandbox
        self.client = client
        self.environ = environ

    def state(self, provider: str) -> dict[str, Any]:
        """The emulator's records for ``provider`` (bookings, notes, tasks, ...)."""
        return self.sandbox.state(provider)

    def async_client(self, environ: Mapping[str, str] | None = None, **options: Any) -> AsyncPMSClient:
        """A new :class:`pms_integration.aio.AsyncPMSClient` configured against the sandbox.

        ``environ`` adds or overrides ``PMS_*`` variables; ``options`` are the client's other
        arguments (``state=...``, ``retry_policy=...``). Make one per event loop, inside it, and
        close it with ``async with`` (its connections belong to the loop that opened them).
        Needs the ``[aio]`` extra: without it, a :class:`ConfigurationError` says how to install it.
        """
        missing = aio_missing()
        if missing:
            raise ConfigurationError(
                f"async_client needs the [aio] extra ({', '.join(missing)} not installed): {AIO_HINT}.",
                problems=[f"{name} not installed" for name in missing],
            )
        from .aio import AsyncPMSClient

        return AsyncPMSClient(environ={**self.environ, **(environ or {})}, env_file=None, **options)

    def __repr__(self) -> str:
        return f"<SandboxSession {self.sandbox.url}>"


def _check_session_arguments(default_provider: object, ghl_api_version: object, seed: object, environ: object) -> None:
    """Misuse is a ConfigurationError naming the argument, before any server starts."""
    problems: list[str] = []
    if default_provider is not None:
        try:
            ProviderName.parse(default_provider)
        except ValueError:
            problems.append("default_provider must be gohighlevel (ghl), salesforce, hubspot or None")
    if ghl_api_version not in ("v1", "v2"):
        problems.append("ghl_api_version must be 'v1' or 'v2'")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append("seed must be an int or None")
    if environ is not None and (
        not isinstance(environ, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in environ.items())
    ):
        problems.append("environ must be a mapping of PMS_* names to strings")
    if problems:
        raise ConfigurationError("sandbox_session: " + "; ".join(problems) + ".", problems=problems)


@contextmanager
def _async_default(environ: Mapping[str, str]) -> Iterator[None]:
    """Point ``pms_integration.aio``'s module-level functions (their default client, one per
    event loop) at ``environ`` for the block, then back to what they used before. Each loop's
    default client is replaced on its next use, both ways."""
    from . import aio
    from .config import load_config

    config = load_config(environ, env_file=None)
    with aio._lock:
        previous, aio._config = aio._config, config
        aio._generation += 1
    try:
        yield
    finally:
        with aio._lock:
            aio._config = previous
            aio._generation += 1


@contextmanager
def sandbox_session(
    *,
    default_provider: str | None = None,
    ghl_api_version: str = "v2",
    seed: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[SandboxSession]:
    """A sandbox plus a default client pointed at it, for use outside pytest too.

    ``environ`` adds or overrides ``PMS_*`` variables (``{"PMS_MAX_ATTEMPTS": "1"}``, say).
    """
    _check_session_arguments(default_provider, ghl_api_version, seed, environ)
    from .sandbox import Sandbox

    with Sandbox(seed=seed) as sandbox:
        env = sandbox.environ(ghl_api_version=ghl_api_version, default_provider=default_provider)
        env.update(environ or {})
        with PMSClient(environ=env, env_file=None) as client, as_default(client):
            yield SandboxSession(sandbox, client, env)


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    pass
else:

    def pytest_configure(config: pytest.Config) -> None:
        config.addinivalue_line(
            "markers", "pms_provider(name): the default provider of the pms_sandbox fixture's client"
        )
        config.addinivalue_line(
            "markers", "pms_environ(mapping): extra PMS_* variables for the pms_sandbox fixture's client"
        )

    @contextmanager
    def _marked_session(request: pytest.FixtureRequest) -> Iterator[SandboxSession]:
        """``sandbox_session`` set up as the test's ``pms_provider`` and ``pms_environ`` marks say."""
        marker = request.node.get_closest_marker("pms_provider")
        provider = marker.args[0] if marker and marker.args else None
        env_marker = request.node.get_closest_marker("pms_environ")
        extra = dict(env_marker.args[0]) if env_marker and env_marker.args else {}
        with sandbox_session(default_provider=provider, environ=extra) as session:
            yield session

    @pytest.fixture
    def pms_sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxSession]:
        """A running sandbox of all three vendors and a default client pointed at it."""
        with _marked_session(request) as session:
            yield session

    @pytest.fixture
    def pms_async_sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxSession]:
        """``pms_sandbox`` for asyncio code: ``session.async_client()`` gives an
        ``AsyncPMSClient`` bound to the sandbox, and ``pms_integration.aio``'s module-level
        functions go to the sandbox too. A plain fixture, so it serves sync tests that call
        ``asyncio.run(...)`` and async tests under pytest-asyncio or anyio alike. Skips the
        test, naming the ``[aio]`` extra, when that extra is not installed."""
        missing = aio_missing()
        if missing:
            pytest.skip(f"pms_async_sandbox needs the [aio] extra ({', '.join(missing)} not installed): {AIO_HINT}")
        with _marked_session(request) as session, _async_default(session.environ):
            yield session
