"""HubSpot's endpoints: method, path pattern (below ``/hubspot``), operation name, handler.

Every object type has the same eight routes (so faults can target one, ``"deals.create"``),
under both path styles, ``/crm/v3/objects/<type>`` and the date-versioned
``/crm/objects/2026-09/<type>``; ``<type>`` is the plural name or the type id (``0-3``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core import Endpoint
from . import handlers
from .schema import OBJECT_TYPE_IDS

if TYPE_CHECKING:
    from .emulator import HubSpotEmulator

_VERSION = r"(?P<version>20\d\d-(?:0[1-9]|1[0-2]))"
_TYPE = r"[a-z0-9-]+"
_DEFAULT_ASSOCIATION = rf"(?P<from>{_TYPE})/(?P<from_id>[^/]+)/associations/default/(?P<to>{_TYPE})/(?P<to_id>[^/]+)"

_BATCH_READ_V4 = rf"/crm/v4/associations/(?P<from>{_TYPE})/(?P<to>{_TYPE})/batch/read"
_BATCH_READ_DATED = rf"/crm/associations/{_VERSION}/(?P<from>{_TYPE})/(?P<to>{_TYPE})/batch/read"

#: Per object type: method, path below the type, action (the operation is ``<type>.<action>``),
#: handler, whether it writes.
_PER_TYPE = (
    ("POST", "/search", "search", handlers.search, False),
    ("POST", "/batch/upsert", "upsert", handlers.upsert, True),
    ("POST", "/batch/read", "batch_read", handlers.batch_read, False),
    ("POST", "", "create", handlers.create, True),
    ("GET", "", "list", handlers.list_records, False),
    ("GET", r"/(?P<id>[^/]+)", "read", handlers.read, False),
    ("PATCH", r"/(?P<id>[^/]+)", "update", handlers.update, True),
    ("DELETE", r"/(?P<id>[^/]+)", "archive", handlers.archive, True),
)

ROUTES: tuple[Endpoint[HubSpotEmulator], ...] = (
    *(
        Endpoint(
            method,
            rf"/crm/(?:v3/objects|objects/{_VERSION})/(?P<type>{name}|{type_id}){path}",
            f"{name}.{action}",
            handler,
            mutating=mutating,
        )
        for name, type_id in OBJECT_TYPE_IDS.items()
        for method, path, action, handler, mutating in _PER_TYPE
    ),
    Endpoint("PUT", "/crm/v4/objects/" + _DEFAULT_ASSOCIATION, "associations.put", handlers.associate),
    Endpoint("POST", _BATCH_READ_V4, "associations.batch_read", handlers.association_batch_read, mutating=False),
    Endpoint("POST", _BATCH_READ_DATED, "associations.batch_read", handlers.association_batch_read, mutating=False),
    Endpoint("PUT", f"/crm/objects/{_VERSION}/" + _DEFAULT_ASSOCIATION, "associations.put", handlers.associate),
)
