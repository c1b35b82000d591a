"""The public surface, import hygiene and the layering rule."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pms_integration as pms

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
    "InvalidRequestError", "RateLimitError", "ServerError", "AppointmentCancelledError",
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
    "errors": {"_redact", "_render"},
    "models": {"_render", "errors"},
    "config": {"_redact", "errors", "models"},
    "provider": {"models"},
    "_ratelimit": set(),
    "_retry": set(),
    "reports": {"errors", "models"},
    "_http": {"_ratelimit", "_redact", "_retry", "_version", "config", "errors", "models"},
    "providers": {"_http", "_ratelimit", "_redact", "_retry", "config", "errors", "models", "provider"},
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
        for other in ("gohighlevel", "salesforce", "hubspot"):
            if other != path.stem:
                assert f"providers.{other}" not in source and f"from .{other}" not in source, path
