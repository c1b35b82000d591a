"""An in-memory HubSpot CRM for the sandbox: contacts, deals, meetings, notes and companies.

What it emulates, how strict it is and its options (``search_lag``, ``burst_limit``,
``search_rate``, ``clock``, ``settle()``) are described in docs/providers/hubspot.md, "Sandbox".
Split by concern: :mod:`.routes` (the route table), :mod:`.handlers`, :mod:`.state` (the records),
:mod:`.validation` and :mod:`.search` (HubSpot's checks and search), :mod:`.schema` (object types,
properties, association ids), :mod:`.errors` (HubSpot's error bodies), :mod:`.emulator`.
"""

from .emulator import DEFAULT_BURST_LIMIT, HubSpotEmulator
from .schema import ASSOCIATION_TYPES, DEFAULT_PIPELINE_STAGES, REFERENCE_PROPERTY
from .state import DEFAULT_SEARCH_LAG

EMULATOR = HubSpotEmulator

__all__ = [
    "HubSpotEmulator",
    "EMULATOR",
    "REFERENCE_PROPERTY",
    "ASSOCIATION_TYPES",
    "DEFAULT_PIPELINE_STAGES",
    "DEFAULT_SEARCH_LAG",
    "DEFAULT_BURST_LIMIT",
]
