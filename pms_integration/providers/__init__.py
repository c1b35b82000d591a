"""Vendor adapters. Each module exposes ``create(settings, runtime) -> Provider``.

Imported on first use, so ``import pms_integration`` stays cheap and never loads an unused vendor.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

from ..errors import UnsupportedOperationError
from ..models import ProviderName
from ..provider import Provider

__all__ = ["load_factory", "MODULES"]

MODULES: dict[ProviderName, str] = {
    ProviderName.GOHIGHLEVEL: "pms_integration.providers.gohighlevel",
    ProviderName.SALESFORCE: "pms_integration.providers.salesforce",
    ProviderName.HUBSPOT: "pms_integration.providers.hubspot",
}

Factory = Callable[[Any, Any], Provider]


def load_factory(name: ProviderName) -> Factory:
    """The adapter factory for ``name``; :class:`UnsupportedOperationError` if it is absent."""
    module_name = MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UnsupportedOperationError(
            f"The {name.label} adapter is not part of this version of pms-integration."
        ) from None
    return cast(Factory, module.create)
