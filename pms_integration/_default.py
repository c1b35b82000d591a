"""The process-wide default client behind the module-level functions, and ``reload()``.

One module-level reference, swapped under a lock; a replaced client is never closed under the
calls still running on it (see docs/reliability.md, "Reload and the default client").
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from . import models
from .changes import AppointmentChange, ChangeBatch
from .client import PMSClient
from .config import PMSConfig, load_config
from .errors import ConfigurationError
from .models import Appointment, AppointmentRequest, AppointmentUpdate, PerformanceReport, ProviderName
from .state import StateCheck

if TYPE_CHECKING:
    from .webhooks import WebhookDelivery

__all__ = [
    "get_client",
    "reload",
    "use_client",
    "providers",
    "book_appointment",
    "update_appointment",
    "cancel_appointment",
    "push_performance_report",
    "free_slots",
    "find_patient",
    "get_appointment",
    "find_appointments",
    "check_state",
    "changes",
    "parse_webhook",
    "on_change",
]

_lock = threading.Lock()
_client: PMSClient | None = None
#: the clients this module built itself (and so may rebuild once they are closed)
_built: weakref.WeakSet[PMSClient] = weakref.WeakSet()


def _successor(config: PMSConfig | None, old: PMSClient | None) -> PMSClient:
    """A default client that inherits ``old``'s booking memory and token store (unless the new
    configuration names another state store), so a reload never opens a door to a double
    booking and rotated tokens keep going to the same store."""
    # a reload that names another state store (PMS_STATE_URL) starts on that store; one that
    # keeps the store keeps the memory object too (so a booking made just before is the same object)
    keep = old is not None and (config is None or config.state_url.reveal() == old.config.state_url.reveal())
    client = PMSClient(
        config, memory=old.memory if old and keep else None, token_store=old.token_store if old and keep else None
    )
    _built.add(client)
    return client


def get_client() -> PMSClient:
    """The default client, built from the environment (and ``./.env``) on first use.

    Closed (``with pms.get_client() as c:``), it is rebuilt on the next call with the same
    configuration and memory; one installed with :func:`use_client` is yours: once closed, calls
    raise :class:`ConfigurationError` until you install another or call :func:`reload`.
    """
    global _client
    client = _client
    if client is not None and not client.closed:
        return client
    with _lock:
        if _client is None or (_client.closed and _client in _built):
            _client = _successor(_client.config if _client else None, _client)
        elif _client.closed:
            raise ConfigurationError(
                "The default client (installed with use_client) is closed; "
                "install an open client with use_client(...), or call reload()."
            )
        return _client


def reload(
    environ: Mapping[str, str] | None = None, *, env_file: str | os.PathLike[str] | EllipsisType | None = ...
) -> PMSClient:
    """Re-read the configuration and swap the default client. :class:`ConfigurationError`, keeping
    the current client, when the new configuration has a problem (an invalid value, an unknown
    default provider, an unreadable env file); a provider missing variables is simply disabled."""
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
    with _lock:
        # the old client is dropped, not closed: calls running on it finish, then it is collected
        _client = fresh = _successor(config, _client)
    return fresh


def use_client(client: PMSClient) -> PMSClient:
    """Make ``client`` (still yours to close) the default until the next :func:`use_client` or
    :func:`reload`; to put the previous default back afterwards: :func:`pms_integration.testing.as_default`."""
    global _client
    if not isinstance(client, PMSClient):
        raise ConfigurationError(
            f"use_client needs a PMSClient, not {type(client).__name__}; build one with pms_integration.PMSClient(...)."
        )
    if client.closed:
        raise ConfigurationError("use_client was given a closed client; pass an open PMSClient.")
    with _lock:
        _client = client
    return client


def providers() -> models.ProviderStatusList:
    """Each provider's status: enabled, or which variables are missing and what is wrong."""
    return get_client().providers()


def book_appointment(
    request: AppointmentRequest | Mapping[str, Any], *, provider: str | ProviderName | None = None
) -> Appointment:
    """Book an appointment with the default client. See :meth:`PMSClient.book_appointment`."""
    return get_client().book_appointment(request, provider=provider)


def update_appointment(
    appointment_id: str, changes: AppointmentUpdate | Mapping[str, Any], *, provider: str | ProviderName | None = None
) -> Appointment:
    """Reschedule or edit an appointment. See :meth:`PMSClient.update_appointment`."""
    return get_client().update_appointment(appointment_id, changes, provider=provider)


def cancel_appointment(
    appointment_id: str, *, reason: str | None = None, provider: str | ProviderName | None = None
) -> Appointment:
    """Cancel an appointment. See :meth:`PMSClient.cancel_appointment`."""
    return get_client().cancel_appointment(appointment_id, reason=reason, provider=provider)


def push_performance_report(
    report: PerformanceReport | Mapping[str, Any] | None = None, *, provider: str | ProviderName | None = None
) -> models.ReportReceipt:
    """Push a performance report (the registered source's when ``report`` is None)."""
    return get_client().push_performance_report(report, provider=provider)


def free_slots(
    start: _dt.datetime | str,
    end: _dt.datetime | str,
    *,
    duration_minutes: int = models.DEFAULT_DURATION_MINUTES,
    provider: str | ProviderName | None = None,
) -> models.SlotList:
    """Bookable slots in a window. See :meth:`PMSClient.free_slots`."""
    return get_client().free_slots(start, end, duration_minutes=duration_minutes, provider=provider)


def find_patient(
    *, email: str | None = None, phone: str | None = None, provider: str | ProviderName | None = None
) -> models.PatientList:
    """The vendor's patient records by e-mail or phone. See :meth:`PMSClient.find_patient`."""
    return get_client().find_patient(email=email, phone=phone, provider=provider)


def get_appointment(appointment_id: str, *, provider: str | ProviderName | None = None) -> Appointment:
    """An appointment as the vendor holds it now. See :meth:`PMSClient.get_appointment`."""
    return get_client().get_appointment(appointment_id, provider=provider)


def find_appointments(
    *,
    email: str | None = None,
    phone: str | None = None,
    reference: str | None = None,
    start: _dt.datetime | str | None = None,
    end: _dt.datetime | str | None = None,
    include_cancelled: bool = False,
    provider: str | ProviderName | None = None,
) -> models.AppointmentList:
    """A patient's (or a reference's) appointments. See :meth:`PMSClient.find_appointments`."""
    return get_client().find_appointments(
        email=email,
        phone=phone,
        reference=reference,
        start=start,
        end=end,
        include_cancelled=include_cancelled,
        provider=provider,
    )


def check_state() -> StateCheck:
    """Check the default client's state store (``PMS_STATE_URL``): reachable and writable.
    See :meth:`PMSClient.check_state`."""
    return get_client().check_state()


def changes(
    since: str | _dt.datetime | None = None,
    *,
    provider: str | ProviderName | None = None,
    feed: str | None = None,
    record: bool = True,
) -> ChangeBatch:
    """Appointments changed in the CRM since the cursor ``since``. See :meth:`PMSClient.changes`."""
    return get_client().changes(since, provider=provider, feed=feed, record=record)


def parse_webhook(
    provider: str | ProviderName,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str,
) -> WebhookDelivery:
    """Verify a vendor's webhook request on the default client and return its changes (to
    ``commit()`` once handled). See :func:`pms_integration.webhooks.parse`."""
    return get_client().parse_webhook(provider, method=method, url=url, headers=headers, body=body)


def on_change(callback: Callable[[AppointmentChange], object]) -> Callable[[AppointmentChange], object]:
    """Call ``callback(change)`` for each change any client's webhook delivers (see
    :func:`pms_integration.webhooks.on_change`). Returns ``callback``: usable as a decorator."""
    from .webhooks import on_change as register

    return register(callback)
