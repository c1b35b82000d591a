"""The org's route table: method, path below ``/salesforce``, operation name, handler.

The operation names are what ``Sandbox.inject(..., operation=...)`` matches. Every route below
``/services/data/vXX.X`` is an API call: the emulator checks its token, version and the daily
allowance, and answers with ``Sforce-Limit-Info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core import Endpoint
from . import handlers as h

if TYPE_CHECKING:
    from .emulator import SalesforceEmulator

_V = r"/services/data/v(?P<version>\d{2,3}\.\d)"
_OBJECT = rf"{_V}/sobjects/(?P<sobject>[^/]+)/?"
_RECORD = rf"{_V}/sobjects/(?P<sobject>[^/]+)/(?P<record_id>[^/]+)/?"
_MORE = rf"{_V}/query(?:All)?/(?P<locator>01g[0-9A-Za-z]{{15}})-(?P<offset>\d{{1,7}})/?"

ROUTES: tuple[Endpoint[SalesforceEmulator], ...] = (
    Endpoint("GET", r"/services/data/?", "versions", h.versions),
    Endpoint("GET", rf"{_V}/query/?", "query", h.query),
    Endpoint("GET", rf"{_V}/queryAll/?", "queryAll", h.query_all),
    Endpoint("GET", _MORE, "query.more", h.query_more),
    Endpoint("POST", _OBJECT, "sobjects.create", h.create),
    Endpoint("POST", rf"{_V}/composite/?", "composite", h.composite),
    # before the record routes, which would read "updated" as a record id
    Endpoint("GET", rf"{_V}/sobjects/(?P<sobject>[^/]+)/updated/?", "sobjects.updated", h.updated),
    Endpoint("GET", rf"{_V}/sobjects/(?P<sobject>[^/]+)/deleted/?", "sobjects.deleted", h.deleted),
    Endpoint("GET", _RECORD, "sobjects.get", h.read),
    Endpoint("PATCH", _RECORD, "sobjects.update", h.update),
    Endpoint("DELETE", _RECORD, "sobjects.delete", h.delete),
    Endpoint("POST", r"/services/oauth2/token", "oauth.token", h.token),
)
