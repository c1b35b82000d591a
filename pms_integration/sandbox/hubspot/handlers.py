"""Thin handlers: read the request, check it like HubSpot, call the store, answer in HubSpot's format.

A handler takes the emulator, the request and the path parameters. What every route shares (the
bearer token, the burst window, the plural object ``type``, the quota headers) is done around it
by :meth:`HubSpotEmulator.handle`; refusals are raised as :class:`~.errors.HubSpotError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core import SandboxRequest, SandboxResponse, json_response, now_text
from .errors import HubSpotError
from .schema import ALIASES, OBJECT_TYPE_IDS, UNIQUE
from .search import parse as parse_query
from .validation import json_body, list_arg, properties, strings, upsert_input

if TYPE_CHECKING:
    from .emulator import HubSpotEmulator


def create(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    object_type = params["type"]
    body = json_body(req, {"properties", "associations"})
    values = properties(object_type, body.get("properties"), hs.pipelines, creating=True)
    return json_response(201, hs.store.create(object_type, values, body.get("associations")))


def read(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    wanted, with_types = list_arg(req, "properties"), list_arg(req, "associations")
    archived = _flag(req, "archived")
    return json_response(
        200, hs.store.read(params["type"], params["id"], req.arg("idProperty"), wanted, with_types, archived=archived)
    )


def list_records(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``GET /crm/v3/objects/<type>``: a page of records in id order (``archived=true``: only the
    archived ones, with ``archivedAt``); ``limit`` 1-100 (default 10), ``after`` from ``paging``."""
    limit_text, after = req.arg("limit") or "10", req.arg("after") or "0"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise HubSpotError(400, "limit must be between 1 and 100")
    if not after.isdigit():
        raise HubSpotError(400, "after must be a paging cursor from an earlier answer")
    wanted, with_types = list_arg(req, "properties"), list_arg(req, "associations")
    results, following = hs.store.list_page(
        params["type"], _flag(req, "archived"), int(after), int(limit_text), wanted, with_types
    )
    out: dict[str, Any] = {"results": results}
    if following is not None:
        out["paging"] = {"next": {"after": str(following), "link": f"?after={following}"}}
    return json_response(200, out)


def _flag(req: SandboxRequest, name: str) -> bool:
    value = (req.arg(name) or "false").strip().lower()
    if value not in ("true", "false"):
        raise HubSpotError(400, f"{name} must be true or false")
    return value == "true"


def update(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    body = json_body(req, {"properties"})
    values = properties(params["type"], body.get("properties"), hs.pipelines, creating=False)
    return json_response(200, hs.store.update(params["type"], params["id"], req.arg("idProperty"), values))


def archive(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    hs.store.archive(params["type"], params["id"])
    return SandboxResponse(204)


def upsert(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    inputs = json_body(req, {"inputs"}).get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise HubSpotError(400, "inputs must be a non-empty list")
    if len(inputs) > 100:
        raise HubSpotError(400, "Batch input cannot exceed 100 inputs")
    started = now_text()
    results = hs.store.upsert(params["type"], [upsert_input(params["type"], item, hs.pipelines) for item in inputs])
    return json_response(
        200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_text()}
    )


def batch_read(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """``batch/read``: records by id or by a unique property (``idProperty``), read consistently."""
    object_type = params["type"]
    body = json_body(req, {"inputs", "properties", "propertiesWithHistory", "idProperty"})
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) > 100:
        raise HubSpotError(400, "inputs must be a list of at most 100 {id} objects")
    if not all(isinstance(item, dict) and set(item) == {"id"} and isinstance(item["id"], str) for item in inputs):
        raise HubSpotError(400, 'Each input is {"id": "..."}')
    id_property = body.get("idProperty")
    if id_property is not None and (
        not isinstance(id_property, str) or id_property not in UNIQUE.get(object_type, set())
    ):
        raise HubSpotError(400, f"Unable to read by non-unique {OBJECT_TYPE_IDS[object_type]} property {id_property}")
    started = now_text()
    keys = [item["id"] for item in inputs]
    results, missing = hs.store.batch_read(object_type, keys, id_property, strings(body.get("properties")))
    out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_text()}
    if missing:
        message = f"Could not get some {object_type[:-1].upper()} objects, they may be deleted or not exist."
        out["numErrors"] = 1
        out["errors"] = [
            {"status": "error", "category": "OBJECT_NOT_FOUND", "message": message, "context": {"ids": missing}}
        ]
    return json_response(207 if missing else 200, out)


def search(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    hs.take_search_slot()
    query = parse_query(
        params["type"], json_body(req, {"filterGroups", "properties", "limit", "after", "sorts", "query"})
    )
    hits = hs.store.search(query)
    end = query.offset + query.limit
    out: dict[str, Any] = {"total": len(hits), "results": hits[query.offset : end]}
    if end < len(hits):
        out["paging"] = {"next": {"after": str(end)}}
    return json_response(200, out)


def associate(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """The default association (``PUT .../associations/default/...``)."""
    from_type, to_type = ALIASES.get(params["from"]), ALIASES.get(params["to"])
    if from_type is None or to_type is None:
        raise HubSpotError(400, "Unknown object type")
    type_id = hs.store.associate(from_type, params["from_id"], to_type, params["to_id"])
    result = {
        "from": {"id": params["from_id"]},
        "to": {"id": params["to_id"]},
        "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
    }
    now = now_text()
    return json_response(200, {"status": "COMPLETE", "results": [result], "startedAt": now, "completedAt": now})


def association_batch_read(hs: HubSpotEmulator, req: SandboxRequest, params: dict[str, str]) -> SandboxResponse:
    """The v4 associations batch read: each input record's associated ids, a page at a time
    (``association_page_size``; ``{"id", "after"}`` asks for the next page of one record)."""
    from_type, to_type = ALIASES.get(params["from"]), ALIASES.get(params["to"])
    if from_type is None or to_type is None:
        raise HubSpotError(400, "Unknown object type")
    inputs = json_body(req, {"inputs"}).get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 1000:
        raise HubSpotError(400, "inputs must be a list of 1 to 1,000 {id} objects")
    keys: list[tuple[str, int]] = []
    for item in inputs:
        after = item.get("after", "0") if isinstance(item, dict) else None
        if not isinstance(item, dict) or set(item) - {"id", "after"} or not isinstance(item.get("id"), str):
            raise HubSpotError(400, 'Each input is {"id": "..."} with an optional "after" cursor')
        if not isinstance(after, str) or not after.isdigit():
            raise HubSpotError(400, "after must be a paging cursor from an earlier answer")
        keys.append((item["id"], int(after)))
    started = now_text()
    results, missing = hs.store.association_pages(from_type, to_type, keys, hs.association_page_size)
    out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_text()}
    if missing:
        out["numErrors"] = len(missing)
        out["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": f"No {to_type[:-1]} is associated with {from_type[:-1]} {key}.",
                "context": {"fromObjectId": [key]},
            }
            for key in missing
        ]
    return json_response(207 if missing else 200, out)
