"""GoHighLevel emulator: API v2 (LeadConnector) under ``/ghl``, legacy API v1 under ``/ghl/v1``.

One location and one calendar in memory, shared by v1 and v2, as strict as the live API: what it
checks and how to change it is on docs/providers/gohighlevel.md (Sandbox). The package follows
moto's layout: ``routes`` (the table), ``handlers`` (request in, vendor answer out),
``validation`` (the spec's rules), ``state`` (the records, no HTTP) and ``emulator`` (what every
route shares: Version header, token, quota headers, error shapes).
"""

from .emulator import BURST_WINDOW_MS, EMULATOR, GoHighLevelEmulator
from .handlers import SLOT_TAKEN
from .state import DEFAULT_OPEN_HOURS
from .validation import CALENDARS_VERSION, CONTACTS_VERSION, KNOWN_VERSIONS

__all__ = [
    "BURST_WINDOW_MS",
    "CALENDARS_VERSION",
    "CONTACTS_VERSION",
    "DEFAULT_OPEN_HOURS",
    "EMULATOR",
    "KNOWN_VERSIONS",
    "SLOT_TAKEN",
    "GoHighLevelEmulator",
]
