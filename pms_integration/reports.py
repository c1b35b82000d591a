"""Where "the current analytics report" comes from.

An analytics module registers a callable with :func:`set_report_source`; then
``push_performance_report()`` with no argument (and the HTTP endpoint with no body) sends what
that callable returns. The registration is process-wide and survives :func:`reload`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from .errors import PMSError, ValidationError
from .models import PerformanceReport, structure

__all__ = ["ReportSource", "set_report_source", "get_report_source", "current_report"]

ReportSource = Callable[[], "PerformanceReport | Mapping[str, Any]"]

_lock = threading.Lock()
_source: ReportSource | None = None

HOW_TO_REGISTER = (
    "no report given and no report source registered; pass a report, or register one with "
    "pms_integration.set_report_source(callable_returning_a_report)"
)


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
