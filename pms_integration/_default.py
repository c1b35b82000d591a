"""The process-wide default client behind the module-level functions, and ``reload()``.

One module-level reference guarded by a lock. ``reload()`` builds the new client *outside* the
lock (a bad configuration raises and the old client keeps serving), then swaps it in one
assignment. Each call takes the client once, so it finishes on the configuration it began with;
a replaced client closes when its last call is done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from types import EllipsisType
from typing import Any, TypeVar

from .client import PMSClient
from .config import load_config
from .errors import ConfigurationError
from .models import (
    Appointment,
    AppointmentRequest,
    AppointmentUpdate,
    PerformanceReport,
    ProviderName,
    ProviderStatusList,
    ReportReceipt,
)

__all__ = [
    "get_client",
    "reload",
    "use_client",
    "providers",
    "book_appointment",
    "update_appointment",
    "cancel_appointment",
    "push_performance_report",
]

T = TypeVar("T")
_lock = threading.Lock()
_client: PMSClient | None = None


def get_client() -> PMSClient:
    """The default client, built from the environment (and ``./.env``) on first use.

    A default client that was closed (``with pms.get_client() as c: ...`` closes it on exit)
    is replaced on the next call by a fresh one with the same configuration and booking
    memory. A client you installed with :func:`use_client` is yours: once you close it, calls
    raise :class:`ConfigurationError` until you install another or call :func:`reload`.
    """
    global _client
    client = _client
    if client is not None and client.usable:
        return client
    with _lock:
        current = _client
        if current is None:
            current = _client = _built(PMSClient())
        elif not current.usable:
            if not getattr(current, "_pms_default_built", False):
                raise ConfigurationError(
                    "The default client (installed with use_client) is closed; "
                    "install an open client with use_client(...), or call reload()."
                )
            current = _client = _built(
                PMSClient(current.config, memory=current.memory, token_store=current.token_store)
            )
        return current


def _built(client: PMSClient) -> PMSClient:
    """Mark a client this module built itself (and so may rebuild once it is closed)."""
    client._pms_default_built = True  # type: ignore[attr-defined]
    return client


def reload(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
) -> PMSClient:
    """Re-read the configuration and swap the default client.

    Raises :class:`ConfigurationError` - and keeps the current client - when the new
    configuration has problems (an invalid value, an unknown default provider, an unreadable
    env file). Missing variables are not a problem: that provider is simply disabled.
    """
    global _client
    config = load_config(environ, env_file)
    problems = config.all_problems()
    if problems:
        raise ConfigurationError(
            "The new configuration was not applied: " + "; ".join(problems) + ".", problems=problems
        )
    if config.default_provider is not None and not config.get(config.default_provider).enabled:
        pc = config.get(config.default_provider)
        raise ConfigurationError(
            f"PMS_DEFAULT_PROVIDER is {config.default_provider.value}, which is not configured "
            f"(missing {', '.join(pc.missing)}); the new configuration was not applied.",
            missing=pc.missing,
        )
    # the new client inherits what this process knows about its bookings (finished ones and
    # those whose outcome is unknown), so a reload never opens a door to a double booking
    current = _client
    fresh = _built(
        PMSClient(
            config,
            memory=current.memory if current is not None else None,
            # rotated refresh tokens keep going to the same store
            token_store=current.token_store if current is not None else None,
        )
    )
    with _lock:
        old, _client = _client, fresh
    if old is not None and old is not fresh:
        old.retire()
    return fresh


def use_client(client: PMSClient) -> PMSClient:
    """Make ``client`` the default (tests and the sandbox use this); retire the old one."""
    global _client
    if not isinstance(client, PMSClient):
        raise ConfigurationError(
            f"use_client needs a PMSClient, not {type(client).__name__}; build one with pms_integration.PMSClient(...)."
        )
    if not client.usable:
        raise ConfigurationError("use_client was given a closed client; pass an open PMSClient.")
    with _lock:
        old, _client = _client, client
    if old is not None and old is not client:
        old.retire()
    return client


def _with_client(call: Callable[[PMSClient], T]) -> T:
    # A client swapped out by reload()/use_client() refuses new calls; the next get_client()
    # returns its successor. A closed default is rebuilt or raises in get_client(), so this
    # loop only repeats when a swap races the call, and it is bounded regardless.
    for _ in range(100):
        client = get_client()
        if client.acquire():
            break
    else:
        raise ConfigurationError("The default client kept being replaced; try the call again.")
    try:
        return call(client)
    finally:
        client.release()


def providers() -> ProviderStatusList:
    """Each provider's status: enabled, or which variables are missing and what is wrong."""
    return get_client().providers()


def book_appointment(
    request: AppointmentRequest | Mapping[str, Any],
    *,
    provider: str | ProviderName | None = None,
) -> Appointment:
    """Book an appointment with the default client. See :meth:`PMSClient.book_appointment`."""
    return _with_client(lambda c: c.book_appointment(request, provider=provider))


def update_appointment(
    appointment_id: str,
    changes: AppointmentUpdate | Mapping[str, Any],
    *,
    provider: str | ProviderName | None = None,
) -> Appointment:
    """Reschedule or edit an appointment. See :meth:`PMSClient.update_appointment`."""
    return _with_client(lambda c: c.update_appointment(appointment_id, changes, provider=provider))


def cancel_appointment(
    appointment_id: str,
    *,
    reason: str | None = None,
    provider: str | ProviderName | None = None,
) -> Appointment:
    """Cancel an appointment. See :meth:`PMSClient.cancel_appointment`."""
    return _with_client(lambda c: c.cancel_appointment(appointment_id, reason=reason, provider=provider))


def push_performance_report(
    report: PerformanceReport | Mapping[str, Any] | None = None,
    *,
    provider: str | ProviderName | None = None,
) -> ReportReceipt:
    """Push a performance report (the registered source's when ``report`` is None)."""
    return _with_client(lambda c: c.push_performance_report(report, provider=provider))
