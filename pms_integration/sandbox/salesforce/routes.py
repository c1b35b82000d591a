"""The org's endpoints: method, path pattern (below ``/salesforce``), handler, operation name.

Adding an operation is one line here, one handler in :mod:`.handlers` and one method on
:class:`.state.Org`. API endpoints (``api=True``) are checked for the bearer token, the API
version and the daily allowance, and answer with ``Sforce-Limit-Info``.
"""

from __future__ import annotations

from typing import NamedTuple

from . import handlers
from .handlers import Handler


class Endpoint(NamedTuple):
    method: str
    pattern: str
    handler: Handler
    operation: str
    mutating: bool = False
    api: bool = True


_V = r"/services/data/v(?P<version>\d{2,3}\.\d)"
_OBJECT = rf"{_V}/sobjects/(?P<sobject>[^/]+)/?"
_RECORD = rf"{_V}/sobjects/(?P<sobject>[^/]+)/(?P<record_id>[^/]+)/?"
_MORE = rf"{_V}/query(?:All)?/(?P<locator>01g[0-9A-Za-z]{{15}})-(?P<offset>\d{{1,7}})/?"

ROUTES = (
    Endpoint("GET", r"/services/data/?", handlers.versions, "versions", api=False),
    Endpoint("GET", rf"{_V}/query/?", handlers.query, "query"),
    Endpoint("GET", rf"{_V}/queryAll/?", handlers.query_all, "queryAll"),
    Endpoint("GET", _MORE, handlers.query_more, "query.more"),
    Endpoint("POST", _OBJECT, handlers.create, "sobjects.create", mutating=True),
    Endpoint("GET", _RECORD, handlers.read, "sobjects.get"),
    Endpoint("PATCH", _RECORD, handlers.update, "sobjects.update", mutating=True),
    Endpoint("DELETE", _RECORD, handlers.delete, "sobjects.delete", mutating=True),
    Endpoint("POST", r"/services/oauth2/token", handlers.token, "oauth.token", mutating=True, api=False),
)
