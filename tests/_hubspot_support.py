"""A small in-memory HubSpot behind ``responses``, for the HubSpot adapter's unit tests.

It answers the endpoints the adapter uses with HubSpot-shaped bodies and numeric string ids, and
can be told to fail a request (before or after applying it) so the reconcile paths can be
exercised. It is deliberately lenient about request shapes: the contract tests check those.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import requests
import responses

from pms_integration import PMSClient
from pms_integration._http import Runtime
from pms_integration._retry import RetryPolicy
from pms_integration.config import HubSpotSettings, load_config
from pms_integration.models import ProviderName
from pms_integration.providers.hubspot import HubSpotAdapter, create
from pms_integration.sandbox import Sandbox
from pms_integration.sandbox.hubspot import HubSpotEmulator

from .conftest import CANARY

BASE = "https://api.hubapi.com"
TOKEN = CANARY["PMS_HUBSPOT_PRIVATE_APP_TOKEN"]
CORRELATION = "a43683b0-5717-4ceb-80b4-104d02915d8c"

_PREFIX = re.compile(r"^/crm/(?:v3/objects|objects/(?P<ver>20\d\d-\d\d))/(?P<rest>.*)$")
_V4 = re.compile(r"^/crm/v4/objects/(?P<rest>.*)$")
_ASSOC_READ = re.compile(r"^/crm/(?:v4/associations|associations/20\d\d-\d\d)/(?P<from>\w+)/(?P<to>\w+)/batch/read$")


def hubspot_env(**overrides: str) -> dict[str, str]:
    env = {"PMS_HUBSPOT_PRIVATE_APP_TOKEN": TOKEN, "PMS_HUBSPOT_RATE_LIMIT": "off"}
    env.update(overrides)
    return env


def settings(**overrides: str) -> HubSpotSettings:
    config = load_config(hubspot_env(**overrides), None)
    s = config.get(ProviderName.HUBSPOT).settings
    assert isinstance(s, HubSpotSettings), config.get(ProviderName.HUBSPOT).problems
    return s


def make_adapter(sleeps: list[float] | None = None, **overrides: str) -> HubSpotAdapter:
    sink = sleeps if sleeps is not None else []
    adapter = create(settings(**overrides), Runtime(policy=RetryPolicy(), sleep=sink.append))
    assert isinstance(adapter, HubSpotAdapter)
    return adapter


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": CORRELATION, "category": category}
    body.update(extra)
    return body


Action = Callable[[], Any]


class FakeHubSpot:
    """In-memory contacts, deals, meetings and notes; one ``responses`` callback serves them all."""

    OBJECTS = ("contacts", "deals", "meetings", "notes", "companies")

    def __init__(self, rsps: responses.RequestsMock, base: str = BASE) -> None:
        self.base = base
        self.records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in self.OBJECTS}
        self.associations: list[tuple[str, str, str, str, int | None]] = []
        self._ids = {
            "contacts": itertools.count(100451),
            "deals": itertools.count(987654321),
            "meetings": itertools.count(55501),
            "notes": itertools.count(70001),
            "companies": itertools.count(3001),
        }
        self.faults: list[dict[str, Any]] = []
        self.search_sees_nothing = False
        self.search_bodies: list[dict[str, Any]] = []
        self.hide_associations = False
        self.rate_headers: dict[str, str] = {
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "99",
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": "249000",
        }
        pattern = re.compile(re.escape(base) + r"/.*")
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            rsps.add_callback(method, pattern, callback=self._callback)

    # -- test controls -------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_regex: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        exception: Exception | None = None,
        commit: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` matching requests fail (after applying them when ``commit``)."""
        self.faults.append(
            {
                "method": method,
                "regex": re.compile(path_regex),
                "status": status,
                "body": body,
                "headers": headers or {},
                "exception": exception,
                "commit": commit,
                "times": times,
            }
        )

    def add(self, object_type: str, properties: dict[str, str], record_id: str | None = None) -> str:
        rid = record_id or str(next(self._ids[object_type]))
        self.records[object_type][rid] = {"id": rid, "properties": dict(properties)}
        return rid

    def count(self, object_type: str) -> int:
        return len(self.records[object_type])

    def props(self, object_type: str, record_id: str) -> dict[str, str]:
        props: dict[str, str] = self.records[object_type][record_id]["properties"]
        return props

    # -- dispatch ------------------------------------------------------------------------------

    def _callback(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        url = str(request.url)
        path = url[len(self.base) :].split("?", 1)[0]
        method = str(request.method)
        fault = self._fault(method, path)
        if fault is not None and not fault["commit"]:
            return self._fault_reply(fault)
        status, body = self._handle(method, path, request)
        if fault is not None:
            return self._fault_reply(fault)
        headers = {"Content-Type": "application/json;charset=utf-8", **self.rate_headers}
        return status, headers, "" if body is None else json.dumps(body)

    def _fault(self, method: str, path: str) -> dict[str, Any] | None:
        for fault in self.faults:
            if fault["times"] > 0 and fault["method"] == method and fault["regex"].search(path):
                fault["times"] -= 1
                return fault
        return None

    @staticmethod
    def _fault_reply(fault: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if fault["exception"] is not None:
            return 0, {}, fault["exception"]
        body = fault["body"]
        text = body if isinstance(body, str) else json.dumps(body if body is not None else {})
        return int(fault["status"]), {"Content-Type": "application/json", **fault["headers"]}, text

    def _handle(self, method: str, path: str, request: requests.PreparedRequest) -> tuple[int, Any]:
        raw = request.body
        data: Any = json.loads(raw) if raw else None
        query = dict(
            pair.split("=", 1) for pair in ([*str(request.url).split("?", 1), ""])[1].split("&") if "=" in pair
        )
        batch = _ASSOC_READ.match(path)
        if batch and method == "POST":
            return self._association_batch_read(batch.group("from"), batch.group("to"), data)
        v4 = _V4.match(path)
        if v4:
            return self._associate(method, v4.group("rest").split("/"))
        m = _PREFIX.match(path)
        if not m:
            return 404, error_body("no route", "OBJECT_NOT_FOUND")
        parts = m.group("rest").split("/")
        object_type = parts[0]
        if object_type not in self.records:
            return 404, error_body("Unknown object type", "OBJECT_NOT_FOUND")
        store = self.records[object_type]
        if len(parts) >= 3 and parts[2] == "associations":
            return self._associate(method, parts)
        if method == "POST" and len(parts) == 1:
            return self._create(object_type, data)
        if method == "POST" and parts[1:] == ["search"]:
            return 200, self._search(object_type, data)
        if method == "POST" and parts[1:] == ["batch", "upsert"]:
            return self._upsert(object_type, data)
        if method == "POST" and parts[1:] == ["batch", "read"]:
            return self._batch_read(object_type, data)
        if len(parts) == 2:
            key = unquote(parts[1])
            if method == "GET" and query.get("idProperty") == "email":
                found = next((r for r in store.values() if r["properties"].get("email") == key), None)
                if found is None:
                    return 404, error_body("Object not found.", "OBJECT_NOT_FOUND")
                return 200, self._public(found)
            record = store.get(key)
            if record is None:
                return 404, error_body("Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
            if method == "GET":
                out = self._public(record)
                wanted = unquote(query.get("associations", ""))
                if wanted and not self.hide_associations:
                    out["associations"] = {
                        wanted: {
                            "results": [{"id": to_id, "type": "deal_to_meeting"} for to_id in self._linked(key, wanted)]
                        }
                    }
                return 200, out
            if method == "PATCH":
                record["properties"].update(data["properties"])
                return 200, self._public(record)
        return 405, error_body("Method not allowed", "VALIDATION_ERROR")

    def _public(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": record["id"],
            "properties": {**record["properties"], "hs_object_id": record["id"]},
            "createdAt": "2026-10-01T14:03:11.120Z",
            "updatedAt": "2026-10-01T14:03:11.120Z",
            "archived": False,
        }

    def _linked(self, record_id: str, to_type: str) -> list[str]:
        out = []
        for a_type, a_id, b_type, b_id, _ in self.associations:
            if a_id == record_id and b_type == to_type:
                out.append(b_id)
            elif b_id == record_id and a_type == to_type:
                out.append(a_id)
        return out

    def _create(self, object_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        props = dict(data["properties"])
        if object_type == "contacts" and props.get("email"):
            existing = next(
                (r for r in self.records["contacts"].values() if r["properties"].get("email") == props["email"]), None
            )
            if existing is not None:
                return 409, error_body(f"Contact already exists. Existing ID: {existing['id']}", "CONFLICT")
        rid = self.add(object_type, props)
        for assoc in data.get("associations") or []:
            for t in assoc["types"]:
                self.associations.append(
                    (object_type, rid, self._type_of(assoc["to"]["id"]), assoc["to"]["id"], t["associationTypeId"])
                )
        return 201, self._public(self.records[object_type][rid])

    def _batch_read(self, object_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        prop = data.get("idProperty")
        results, missing = [], []
        for item in data["inputs"]:
            key = item["id"]
            if prop:
                found = next(
                    (
                        r
                        for r in self.records[object_type].values()
                        if str(r["properties"].get(prop, "")).lower() == key.lower()
                    ),
                    None,
                )
            else:
                found = self.records[object_type].get(key)
            if found is None:
                missing.append(key)
            else:
                results.append(self._public(found))
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": "x", "completedAt": "y"}
        if missing:
            body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing}}]
        return (207 if missing else 200), body

    def _association_batch_read(self, from_type: str, to_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        """The v4 batch read, one page per record; a record with none is an error entry (207)."""
        results, missing = [], []
        for item in data["inputs"]:
            linked = [] if self.hide_associations else self._linked(item["id"], to_type)
            if linked:
                to = [{"toObjectId": int(i), "associationTypes": []} for i in linked]
                results.append({"from": {"id": item["id"]}, "to": to})
            else:
                missing.append(item["id"])
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": "x", "completedAt": "y"}
        if missing:
            body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"fromObjectId": missing}}]
        return (207 if missing else 200), body

    def _type_of(self, record_id: str) -> str:
        for object_type, store in self.records.items():
            if record_id in store:
                return object_type
        return "companies"

    def _upsert(self, object_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        results = []
        for item in data["inputs"]:
            prop, value = item["idProperty"], item["id"]
            existing = next((r for r in self.records[object_type].values() if r["properties"].get(prop) == value), None)
            if existing is None:
                rid = self.add(object_type, {**item["properties"], prop: value})
                record, new = self.records[object_type][rid], True
            else:
                existing["properties"].update(item["properties"])
                record, new = existing, False
            results.append({**self._public(record), "new": new})
        return 200, {
            "status": "COMPLETE",
            "results": results,
            "startedAt": "2026-10-01T14:03:11.120Z",
            "completedAt": "2026-10-01T14:03:11.220Z",
        }

    def _associate(self, method: str, parts: list[str]) -> tuple[int, Any]:
        # {from}/{id}/associations/default/{to}/{toId}
        if method == "PUT" and len(parts) == 6 and parts[3] == "default":
            self.associations.append((parts[0], parts[1], parts[4], parts[5], None))
            return 200, {"status": "COMPLETE", "results": [], "startedAt": "x", "completedAt": "y"}
        return 404, error_body("no association route", "OBJECT_NOT_FOUND")

    def _search(self, object_type: str, data: dict[str, Any]) -> dict[str, Any]:
        self.search_bodies.append(data)
        if self.search_sees_nothing:
            return {"total": 0, "results": []}

        def ok(f: dict[str, Any], record: dict[str, Any]) -> bool:
            have = str(record["properties"].get(f["propertyName"], "")).lower()
            want = str(f.get("value", "")).lower()
            return have == want if f["operator"] == "EQ" else want in have

        hits = []
        for record in sorted(self.records[object_type].values(), key=lambda r: int(r["id"])):
            if any(all(ok(f, record) for f in group["filters"]) for group in data.get("filterGroups", [])):
                hits.append(self._public(record))
        start = int(data.get("after") or 0)
        limit = data.get("limit", 10)
        out: dict[str, Any] = {"total": len(hits), "results": hits[start : start + limit]}
        if start + limit < len(hits):
            out["paging"] = {"next": {"after": str(start + limit)}}
        return out


@contextmanager
def fake_hubspot(base: str = BASE) -> Iterator[tuple[FakeHubSpot, responses.RequestsMock]]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeHubSpot(rsps, base), rsps


def sent(rsps: responses.RequestsMock) -> list[tuple[str, str, Any]]:
    """``(method, path, json body)`` of every request sent so far."""
    out = []
    for call in rsps.calls:
        req = call.request
        path = str(req.url)[len(BASE) :].split("?", 1)[0]
        body = json.loads(req.body) if req.body else None
        out.append((str(req.method), path, body))
    return out


# ---------------------------------------------------------------------------------------------
# against the sandbox's HubSpot emulator


def sandbox_emulator(sb: Sandbox) -> HubSpotEmulator:
    """The sandbox's HubSpot emulator, typed."""
    emu = sb.emulator("hubspot")
    assert isinstance(emu, HubSpotEmulator)
    return emu


def sandbox_client(sb: Sandbox, **env: str) -> PMSClient:
    """A client on the sandbox with its own rate limit off and no real sleeping."""
    environ = {**sb.environ(), "PMS_HUBSPOT_RATE_LIMIT": "off", **env}
    return PMSClient(environ=environ, env_file=None, sleep=lambda s: None)


def sandbox_raw(sb: Sandbox, method: str, path: str, body: Any = None) -> requests.Response:
    """One authorised request straight to the emulator."""
    headers = {"Authorization": "Bearer " + sandbox_emulator(sb).token}
    return requests.request(method, sb.base_url("hubspot") + path, json=body, headers=headers, timeout=5)
