"""Where "the current analytics report" comes from: the callable registered with
:func:`set_report_source` (process-wide, kept across ``reload()``), whose result
``push_performance_report()`` without a report, and ``POST .../performance`` without a body, send.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigurationError, PMSError, ValidationError, with_article
from .models import PerformanceReport, structure

__all__ = ["ReportSource", "set_report_source", "get_report_source", "current_report", "load_report_source"]

ReportSource = Callable[[], "PerformanceReport | Mapping[str, Any]"]

_lock = threading.Lock()
_source: ReportSource | None = None

HOW_TO_REGISTER = (
    "no report given and no report source registered; pass a report, or register a source with "
    "pms_integration.set_report_source(callable_returning_a_report) "
    "(the command line: pms-integration serve --report-source module:function)"
)
_SPEC = re.compile(r"(?P<module>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):(?P<attr>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")


def set_report_source(source: ReportSource | None) -> None:
    """Register (or, with ``None``, clear) the callable that produces the current report."""
    if source is not None and not callable(source):
        raise ValidationError.single("source", "must be a callable returning a PerformanceReport or a dict")
    global _source
    with _lock:
        _source = source


def get_report_source() -> ReportSource | None:
    with _lock:
        return _source


def current_report(source: ReportSource | None = None) -> PerformanceReport:
    """Call the report source and validate what it returns."""
    src = source or get_report_source()
    if src is None:
        raise ValidationError.single("report", HOW_TO_REGISTER)
    try:
        value = src()
    except PMSError:
        raise
    except Exception as exc:
        raise ValidationError.single("report", f"the report source failed: {type(exc).__name__}: {exc}") from exc
    return structure(value, PerformanceReport, path="report")


def _source_error(message: str) -> ConfigurationError:
    error = ConfigurationError(message)
    error.hint = "Give the report source as module:function, a callable that takes no arguments."
    return error


def load_report_source(spec: str, *, name: str = "report source") -> ReportSource:
    """Import the callable named by ``spec`` (``"package.module:function"``) and check, without
    calling it, that it can be called with no arguments, so a typo fails at start-up (a
    :class:`ConfigurationError` naming the setting as ``name``, e.g. ``--report-source``)."""
    if not isinstance(spec, str):
        raise _source_error(f"{name} must be a string such as 'myreports:current_report'")
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise _source_error(f"{name} {spec!r} is not of the form module:function (e.g. 'myreports:current_report')")
    module_name, attr = match.group("module"), match.group("attr")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name != exc.name and not module_name.startswith(exc.name + "."):
            raise _source_error(f"importing {module_name!r} for {name} failed: {exc}") from None
        raise _source_error(
            f"{name}: cannot import module {module_name!r} ({exc}); run from the directory that holds it, "
            "or add that directory to PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported, not raised raw
        raise _source_error(f"importing {module_name!r} for {name} failed: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _source_error(f"{name}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise _source_error(f"{name}: {spec!r} is {with_article(type(target).__name__)}, not a callable")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None  # a builtin without a signature: trust it
    if signature is not None:
        try:
            signature.bind()
        except TypeError as exc:
            raise _source_error(f"{name}: {spec!r} cannot be called without arguments ({exc})") from None
    source: ReportSource = target
    return source
