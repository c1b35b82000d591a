"""The public surface, import hygiene and the layering rule."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pms_integration as pms

from .conftest import CANARY

PACKAGE = Path(pms.__file__).parent

EXPECTED_ALL = {
    "__version__",
    "book_appointment", "update_appointment", "cancel_appointment", "push_performance_report",
    "bookAppointment", "updateAppointment", "cancelAppointment", "pushPerformanceReport",
    "providers", "reload", "get_client", "use_client", "set_report_source", "load_config",
    "PMSClient", "Provider", "ProviderName", "Capability", "Secret",
    "Patient", "AppointmentRequest", "AppointmentUpdate", "Appointment", "AppointmentStatus",
    "PerformanceReport", "ReportReceipt", "ProviderStatus",
    "PMSError", "ConfigurationError", "ProviderNotConfiguredError", "UnsupportedOperationError",
    "ValidationError", "ProviderError", "TransportError", "UnexpectedResponseError", "APIError",
    "AuthenticationError", "PermissionDeniedError", "NotFoundError", "ConflictError",
    "InvalidRequestError", "RateLimitError", "ServerError", "AppointmentCancelledError", "ResponseTooLargeError",
    "BookingInProgressError", "StateStoreError",
    "TokenStore", "FileTokenStore", "CallbackTokenStore",
    "free_slots", "find_patient", "get_appointment", "find_appointments",
    "getFreeSlots", "findPatient", "getAppointment", "findAppointments",
    "check_state", "checkState",
    "Slot", "SlotList", "PatientRecord", "PatientList", "AppointmentList",
    # issue 18: hearing about changes made in the CRM
    "changes", "getChanges", "parseWebhook", "onChange", "ChangeKind", "AppointmentChange", "ChangeBatch",
    "WebhookError", "WebhookSignatureError", "WebhookStaleError", "WebhookReplayError", "WebhookPayloadError",
    "parse_webhook", "on_change",
}  # fmt: skip


def test_all_snapshot() -> None:
    assert set(pms.__all__) == EXPECTED_ALL
    assert len(pms.__all__) == len(set(pms.__all__))
    for name in pms.__all__:
        assert hasattr(pms, name), name


def test_camel_case_aliases_are_the_same_objects() -> None:
    assert pms.bookAppointment is pms.book_appointment
    assert pms.updateAppointment is pms.update_appointment
    assert pms.cancelAppointment is pms.cancel_appointment
    assert pms.pushPerformanceReport is pms.push_performance_report
    assert pms.getChanges is pms.changes
    assert pms.parseWebhook is pms.parse_webhook and pms.onChange is pms.on_change


def test_providers_function_survives_loading_the_adapter_package() -> None:
    import importlib

    for module in ("pms_integration.providers", "pms_integration.sandbox"):
        importlib.import_module(module)
    assert callable(pms.providers) and pms.providers.__module__ == "pms_integration._default"


def test_error_hierarchy() -> None:
    assert issubclass(pms.ValidationError, ValueError)
    assert issubclass(pms.ProviderNotConfiguredError, pms.ConfigurationError)
    for cls in (pms.AuthenticationError, pms.ConflictError, pms.RateLimitError, pms.ServerError):
        assert issubclass(cls, pms.APIError) and issubclass(cls, pms.ProviderError)
    for cls in (pms.ConfigurationError, pms.UnsupportedOperationError, pms.ValidationError, pms.ProviderError):
        assert issubclass(cls, pms.PMSError)


def test_import_has_no_side_effects() -> None:
    code = (
        "import os, logging, sys\n"
        "os.environ['PMS_GHL_TIMEOUT_MS'] = 'not-a-number'\n"
        "import pms_integration, pms_integration._default as d\n"
        "assert d._client is None\n"
        "root = logging.getLogger()\n"
        "assert not root.handlers, root.handlers\n"
        "handlers = logging.getLogger('pms_integration').handlers\n"
        "assert [type(h).__name__ for h in handlers] == ['NullHandler'], handlers\n"
        "assert 'pms_integration.sandbox' not in sys.modules\n"
        "assert 'pms_integration.server' not in sys.modules\n"
        "assert not any(m.startswith('pms_integration.providers.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_py_typed_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()


# Which internal modules each layer may import (design: errors <- models <- config <- provider
# <- _http <- providers/* <- client <- _default <- __init__).
ALLOWED = {
    "_redact": set(),
    "_version": set(),
    "_render": set(),
    "_time": set(),
    "errors": {"_redact", "_render"},
    "models": {"_render", "_time", "errors"},
    "config": {"_redact", "errors", "models", "scheduling"},
    "scheduling": set(),
    "provider": {"_ratelimit", "models", "tokens"},
    # the neutral change events, classification and cursors (issue 18): adapters import its types
    "changes": {"_green", "_render", "_ratelimit", "_retry", "_time", "errors", "models", "state"},
    "_once": {"_green", "_retry", "errors", "models", "state"},
    # the state stores sit below the transport and the booking memory that use them
    "state": {"_green", "_ratelimit", "_retry", "errors"},
    "_ratelimit": {"_green"},
    # the greenlet helpers every wait of the sync core goes through (pms_integration.aio drives them)
    "_green": set(),
    "_retry": set(),
    "reports": {"errors", "models"},
    "_http": {"_ratelimit", "_redact", "_retry", "_version", "config", "errors", "models", "state"},
    "providers": {
        "_green",
        "_http",
        "_once",
        "_ratelimit",
        "_redact",
        "_retry",
        "_time",
        "changes",
        "config",
        "errors",
        "models",
        "provider",
        "scheduling",
        "state",
        "tokens",
    },
    "tokens": {"errors"},
    # verified webhooks sit beside the client (the default client looked up lazily)
    "webhooks": {"_default", "changes", "client", "errors", "models", "provider", "state"},
    # the asyncio API wraps the client (nothing below imports it; import pms_integration does not)
    "aio": {
        "_aio_http",
        "_green",
        "_http",
        "_once",
        "_ratelimit",
        "_retry",
        "changes",
        "client",
        "config",
        "errors",
        "webhooks",
        "models",
        "provider",
        "reports",
        "state",
        "tokens",
    },
}


def _internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    rel = path.relative_to(PACKAGE).with_suffix("")
    package_parts = list(rel.parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not target:
                    target = [alias.name for alias in node.names][:1]
                found.add(target[0])
            elif node.module and node.module.startswith("pms_integration."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pms_integration."):
                    found.add(alias.name.split(".")[1])
    return found


def test_layers_point_one_way() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        if layer not in ALLOWED:
            continue
        imports = _internal_imports(path) - {layer}
        bad = imports - ALLOWED[layer]
        if bad:
            problems.append(f"{rel} imports {sorted(bad)}")
    assert problems == []


def test_adapters_do_not_import_each_other() -> None:
    for path in (PACKAGE / "providers").glob("[!_]*.py"):
        source = path.read_text(encoding="utf-8")
        vendor = path.stem.split("_")[0]  # gohighlevel_v1 and salesforce_auth belong to their vendor
        for other in ("gohighlevel", "salesforce", "hubspot"):
            if other != vendor:
                assert f"providers.{other}" not in source and f"from .{other}" not in source, path


# -- misuse of any public entry point is a PMSError --------------------------------------------

BAD_VALUES = [None, 0, -1, 1.5, True, float("nan"), b"", b"x", "", "   ", "²", [], {}, (), object()]
_FUTURE = "2030-03-05T10:00:00-05:00"
_PATIENT = {"name": "Jane Doe", "email": "jane@example.com"}
_BOOKING = {"start": _FUTURE, "patient": _PATIENT}
_REPORT = {"period_start": "2030-03-01", "period_end": "2030-03-07", "metrics": {"calls": 3}}


def _client() -> pms.PMSClient:
    return pms.PMSClient(environ={}, env_file=None)


_WEBHOOK: dict[str, Any] = {"provider": "hubspot", "method": "POST", "url": "https://h.example/hook", "headers": {},
                            "body": b"[]"}  # fmt: skip


def _webhook_client() -> pms.PMSClient:
    """HubSpot with a webhook secret, so bad webhook arguments reach their checks."""
    return pms.PMSClient(environ={"PMS_HUBSPOT_PRIVATE_APP_TOKEN": CANARY["PMS_HUBSPOT_PRIVATE_APP_TOKEN"],
                                  "PMS_HUBSPOT_WEBHOOK_SECRET": "hs-webhook-secret-3e9d7c1b5a"}, env_file=None)  # fmt: skip


def _request_with(field: str) -> Any:
    def build(value: Any) -> Any:
        kwargs: dict[str, Any] = {"start": dt.datetime(2030, 3, 5, 10, tzinfo=dt.timezone.utc), "patient": _PATIENT}
        kwargs[field] = value
        return pms.AppointmentRequest(**kwargs)

    return build


def _report_with(field: str) -> Any:
    def build(value: Any) -> Any:
        kwargs: dict[str, Any] = {
            "period_start": dt.date(2030, 3, 1),
            "period_end": dt.date(2030, 3, 7),
            "metrics": {"a": 1},
        }
        kwargs[field] = value
        return pms.PerformanceReport(**kwargs)

    return build


def _as_default(value: Any) -> None:
    from pms_integration import testing

    with testing.as_default(value):
        pass


def _session(**kwargs: Any) -> None:
    from pms_integration import testing

    with testing.sandbox_session(**kwargs):
        pass


def _server(name: str, **kwargs: Any) -> None:
    """create_app/run with one argument under test; run never binds (uvicorn.run is stubbed)."""
    pytest.importorskip("starlette")
    import uvicorn

    from pms_integration import server

    def no_binding(app: Any, **options: Any) -> None:
        raise pms.ConfigurationError("reached uvicorn.run: the arguments were accepted")

    original, uvicorn.run = uvicorn.run, no_binding  # type: ignore[assignment]
    try:
        getattr(server, name)(**{"token": None, **kwargs})
    finally:
        uvicorn.run = original  # type: ignore[assignment]


SERVER_ENTRY_POINTS: dict[str, Any] = {
    **{f"server.create_app({a})": (lambda a: lambda v: _server("create_app", **{a: v}))(a) for a in (
        "client", "token", "max_body_bytes", "env_file", "environ", "webhook_queue",
    )},
    **{f"server.run({a})": (lambda a: lambda v: _server("run", **{a: v}))(a) for a in (
        "client", "token", "max_body_bytes", "env_file", "environ", "host", "port", "insecure_no_auth",
    )},
}  # fmt: skip


ENTRY_POINTS: dict[str, Any] = {
    "book_appointment(request)": lambda v: pms.book_appointment(v),
    "book_appointment(provider)": lambda v: pms.book_appointment(_BOOKING, provider=v),
    "bookAppointment(request)": lambda v: pms.bookAppointment(v),
    "update_appointment(id)": lambda v: pms.update_appointment(v, {"title": "x"}),
    "update_appointment(changes)": lambda v: pms.update_appointment("abc", v),
    "update_appointment(provider)": lambda v: pms.update_appointment("abc", {"title": "x"}, provider=v),
    "cancel_appointment(id)": lambda v: pms.cancel_appointment(v),
    "cancel_appointment(reason)": lambda v: pms.cancel_appointment("abc", reason=v),
    "cancel_appointment(provider)": lambda v: pms.cancel_appointment("abc", provider=v),
    "push_performance_report(report)": lambda v: pms.push_performance_report(v),
    "push_performance_report(provider)": lambda v: pms.push_performance_report(_REPORT, provider=v),
    "free_slots(start)": lambda v: pms.free_slots(v, _FUTURE),
    "free_slots(end)": lambda v: pms.free_slots(_FUTURE, v),
    "free_slots(duration_minutes)": lambda v: pms.free_slots(_FUTURE, "2030-03-06T10:00:00-05:00", duration_minutes=v),
    "free_slots(provider)": lambda v: pms.free_slots(_FUTURE, "2030-03-06T10:00:00-05:00", provider=v),
    "getFreeSlots(start)": lambda v: pms.getFreeSlots(v, _FUTURE),
    "find_patient(email)": lambda v: pms.find_patient(email=v),
    "find_patient(phone)": lambda v: pms.find_patient(phone=v),
    "find_patient(provider)": lambda v: pms.find_patient(email="jane@example.com", provider=v),
    "findPatient(email)": lambda v: pms.findPatient(email=v),
    "get_appointment(id)": lambda v: pms.get_appointment(v),
    "get_appointment(provider)": lambda v: pms.get_appointment("abc", provider=v),
    "getAppointment(id)": lambda v: pms.getAppointment(v),
    **{f"find_appointments({f})": (lambda f: lambda v: pms.find_appointments(**{"email": "jane@example.com", f: v}))(f)
       for f in ("email", "phone", "reference", "start", "end", "include_cancelled", "provider")},
    "findAppointments(reference)": lambda v: pms.findAppointments(reference=v),
    "PMSClient.free_slots": lambda v: _client().free_slots(v, v),
    "PMSClient.find_patient": lambda v: _client().find_patient(email=v),
    "PMSClient.get_appointment": lambda v: _client().get_appointment(v),
    "PMSClient.find_appointments": lambda v: _client().find_appointments(reference=v),
    "changes(since)": lambda v: pms.changes(v),
    "changes(provider)": lambda v: pms.changes(provider=v),
    "changes(feed)": lambda v: pms.changes(feed=v),
    "getChanges(since)": lambda v: pms.getChanges(v),
    "PMSClient.changes(since)": lambda v: _client().changes(v),
    "PMSClient.changes(feed)": lambda v: _client().changes(feed=v),
    **{f"parse_webhook({a})": (lambda a: lambda v: pms.parse_webhook(**{**_WEBHOOK, a: v}))(a)
       for a in ("provider", "method", "url", "headers", "body")},
    **{f"PMSClient.parse_webhook({a})": (lambda a: lambda v: _webhook_client().parse_webhook(**{**_WEBHOOK, a: v}))(a)
       for a in ("provider", "method", "url", "headers", "body")},
    "on_change": lambda v: pms.on_change(v),
    "PMSClient.on_change": lambda v: _client().on_change(v),
    "reload(environ)": lambda v: pms.reload(v, env_file=None),
    "reload(env_file)": lambda v: pms.reload({}, env_file=v),
    "use_client": lambda v: pms.use_client(v),
    "testing.as_default": _as_default,
    "testing.sandbox_session(default_provider)": lambda v: _session(default_provider=v if v is not None else 0),
    "testing.sandbox_session(ghl_api_version)": lambda v: _session(ghl_api_version=v),
    "testing.sandbox_session(seed)": lambda v: _session(seed=v if not isinstance(v, int) or isinstance(v, bool) else "1"),
    "testing.sandbox_session(environ)": lambda v: _session(environ=v if v is not None else 0),
    "set_report_source": lambda v: pms.set_report_source(v if v is not None else 0),
    "load_config(environ)": lambda v: pms.load_config(v, env_file=None),
    "load_config(env_file)": lambda v: pms.load_config({}, env_file=v),
    "PMSClient(config)": lambda v: pms.PMSClient(v),
    "PMSClient(environ)": lambda v: pms.PMSClient(environ=v, env_file=None),
    "PMSClient(report_source)": lambda v: pms.PMSClient(environ={}, env_file=None, report_source=v),
    "PMSClient(memory)": lambda v: pms.PMSClient(environ={}, env_file=None, memory=v),
    "PMSClient.book_appointment": lambda v: _client().book_appointment(v),
    "PMSClient.recover_booking": lambda v: _client().recover_booking(v),
    "PMSClient.update_appointment": lambda v: _client().update_appointment("abc", v),
    "PMSClient.cancel_appointment": lambda v: _client().cancel_appointment(v),
    "PMSClient.push_performance_report": lambda v: _client().push_performance_report(v),
    "PMSClient.resolve": lambda v: _client().resolve(v),
    "PMSClient.adapter": lambda v: _client().adapter(v),
    "PMSClient.rate_limit_info": lambda v: _client().rate_limit_info(v),
    "Secret": lambda v: pms.Secret(v),
    "Secret.checked": lambda v: pms.Secret.checked(v, name="PMS_SERVER_TOKEN"),
    "Patient(name)": lambda v: pms.Patient(name=v),
    "Patient(email)": lambda v: pms.Patient(email=v),
    "Patient(phone)": lambda v: pms.Patient(phone=v),
    "Patient(contact_id)": lambda v: pms.Patient(email="a@b.co", contact_id=v if v is not None else 0),
    **{f"AppointmentRequest({f})": _request_with(f) for f in (
        "start", "patient", "end", "duration_minutes", "timezone", "title", "reason", "notes", "location",
        "reference", "extra",
    )},
    **{f"AppointmentUpdate({f})": (lambda f: lambda v: pms.AppointmentUpdate(**{f: v}))(f) for f in (
        "start", "end", "duration_minutes", "timezone", "title", "notes", "location",
    )},
    **{f"PerformanceReport({f})": _report_with(f) for f in (
        "period_start", "period_end", "metrics", "title", "summary", "report_id",
    )},
    "models.structure": lambda v: __import__("pms_integration.models").models.structure(v, pms.AppointmentRequest),
    "models.validate_appointment_id": lambda v: __import__("pms_integration.models").models.validate_appointment_id(v),
    **SERVER_ENTRY_POINTS,
}  # fmt: skip

# Enums (ProviderName, Capability, AppointmentStatus) keep Python's ValueError for an unknown
# value, and the output models (Appointment, ReportReceipt, ProviderStatus) are built by the
# library, not from caller input; the error classes and the Provider protocol take no input.
NOT_INPUT = {
    "__version__", "ProviderName", "Capability", "AppointmentStatus", "Appointment", "ReportReceipt",
    "ProviderStatus", "Provider", "get_client", "providers", "TokenStore", "FileTokenStore", "CallbackTokenStore",
    "Slot", "SlotList", "PatientRecord", "PatientList", "AppointmentList",
    "check_state", "checkState", "ChangeKind", "AppointmentChange", "ChangeBatch",
}  # fmt: skip


def test_the_sweep_covers_every_public_callable() -> None:
    covered = {name.split("(")[0].split(".")[0] for name in ENTRY_POINTS}
    for name in pms.__all__:
        value = getattr(pms, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            continue
        if name in NOT_INPUT or name in {
            "updateAppointment", "cancelAppointment", "pushPerformanceReport", "parseWebhook", "onChange"
        }:  # fmt: skip
            continue  # the camelCase names are the very same functions
        assert name in covered, f"{name} is public but not in the misuse sweep"


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_misuse_of_a_public_entry_point_raises_only_pms_errors(entry: str, value: Any) -> None:
    try:
        ENTRY_POINTS[entry](value)
    except pms.PMSError:
        return
    except Exception as exc:  # the point of the test: nothing else may escape
        pytest.fail(f"{entry} with {value!r} raised {type(exc).__name__}: {exc}")
    # a few values are legitimate for some arguments (None for an optional one, {} for an
    # environ); those must simply work
    assert (
        value is None
        or value in ({}, "", "   ", ())
        or entry.startswith(("Secret", "Patient(", "AppointmentRequest(", "AppointmentUpdate(", "PerformanceReport("))
    ), (entry, value)


def test_get_client_and_providers_never_raise_bare_errors_on_a_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"PMS_MAX_ATTEMPTS": "²", "PMS_GHL_TIMEOUT_MS": "١٠", "PMS_DEADLINE_MS": "x"}.items():
        monkeypatch.setenv(key, value)
    assert len(pms.providers()) == 3
    assert pms.get_client().config.problems


# -- message wording ------------------------------------------------------------------------------


def test_messages_built_from_class_names_take_the_right_article() -> None:
    from pms_integration.errors import with_article
    from pms_integration.models import structure

    with pytest.raises(pms.ValidationError) as info:
        structure(5, pms.AppointmentRequest)
    assert "an AppointmentRequest or a dict" in str(info.value) and "a AppointmentRequest" not in str(info.value)
    with pytest.raises(pms.ValidationError) as info:
        structure("x", pms.PerformanceReport)
    assert "a PerformanceReport or a dict" in str(info.value)
    words = ["AppointmentUpdate", "Event", "int", "object", "UUID", "Patient", "URL", "unicode_error", "str"]
    assert [with_article(w) for w in words] == [
        "an AppointmentUpdate", "an Event", "an int", "an object", "a UUID", "a Patient", "a URL",
        "a unicode_error", "a str",
    ]  # fmt: skip


def test_a_closed_installed_client_says_call_reload_once() -> None:
    client = pms.use_client(_client())
    client.close()
    try:
        with pytest.raises(pms.ConfigurationError) as info:
            pms.get_client()
        text = str(info.value)
        assert text.count("reload()") == 1, text
        assert text.endswith("call reload()."), text
    finally:
        pms.reload({}, env_file=None)
