"""The portal's records and the operations on them (no HTTP; each one holds the lock).

Records are dicts: ``id``, ``type``, ``properties``, ``createdAt``/``updatedAt``, ``archived`` and
``index``, the recent versions of the properties with the moment each was written; search sees
the last version written at least ``search_lag`` seconds ago, reads by id see the current one.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable
from typing import Any

from ..._time import UTC, utc_text
from .._core import Store
from .changes import ChangeLog
from .errors import HubSpotError, invalid, non_unique, not_found
from .schema import (
    ALIASES,
    ASSOCIATION_TYPES,
    CREATED_PROPERTY,
    DEFAULT_PIPELINE_STAGES,
    DEFAULT_READ,
    FIRST_IDS,
    MODIFIED_PROPERTY,
    NUMERIC_ID,
    OBJECT_TYPE_IDS,
    PROPERTIES,
    UNIQUE,
)
from .search import Query
from .validation import associations, check_stage, missing_required

#: Seconds before a write shows in search results (HubSpot: "a few moments").
DEFAULT_SEARCH_LAG = 1.0


class HubSpotStore(Store):
    """Contacts, companies, deals, meetings and notes, their associations, and the search index."""

    def __init__(self) -> None:
        super().__init__()
        #: Seconds before a write is visible to search (HubSpot's index lag); 0 = immediately.
        self.search_lag = DEFAULT_SEARCH_LAG
        #: The clock the search lag (and the emulator's limits) is measured with.
        self.clock: Callable[[], float] = time.monotonic
        #: The wall clock records are stamped with (createdAt, updatedAt = hs_lastmodifieddate,
        #: archivedAt); a test may replace it to put changes exactly on a feed's window edges.
        self.wall_clock: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(UTC)
        #: Every change to a meeting, by any route or staff hook: the webhook events' source.
        self.changes = ChangeLog()
        #: Deal pipelines: id -> stage ids.
        self.pipelines: dict[str, tuple[str, ...]] = {"default": DEFAULT_PIPELINE_STAGES}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPE_IDS}
        self.links: list[dict[str, Any]] = []
        self._next = dict(FIRST_IDS)
        self.company_id = self._seed_company()

    def clear(self) -> None:
        """Forget every record (search_lag, clock and pipelines are configuration: they stay)."""
        with self.lock:
            for records in self.objects.values():
                records.clear()
            self.links.clear()
            self.changes.clear()
            self._next = dict(FIRST_IDS)
            self.company_id = self._seed_company()

    # -- operations, one per route --------------------------------------------------------------

    def create(self, object_type: str, properties: dict[str, str], inline: Any) -> dict[str, Any]:
        """A new record with its inline associations; 409 if a unique value is taken."""
        with self.lock:
            self._check_unique(object_type, properties)
            check_stage(self.pipelines, object_type, None, properties)
            links = associations(object_type, inline, self.type_of)
            record = self._insert(object_type, properties)
            for to_type, to_id, type_id, category in links:
                self._link(object_type, record["id"], to_type, to_id, type_id, category)
            self._note_created(record, "INTEGRATION")
            return view(record)

    def upsert(self, object_type: str, inputs: list[tuple[str, str, dict[str, str]]]) -> list[dict[str, Any]]:
        """Each ``(idProperty, id, properties)`` updates the record it names or creates it."""
        with self.lock:
            for id_property, value, properties in inputs:  # all checked before any is written
                check_stage(self.pipelines, object_type, self._find(object_type, value, id_property), properties)
            results = []
            for id_property, value, properties in inputs:
                existing = self._find(object_type, value, id_property)
                if existing is None:
                    missing = missing_required(object_type, properties)
                    if missing:
                        raise invalid(missing)
                    record = self._insert(object_type, {**properties, id_property: value})
                    self._note_created(record, "INTEGRATION")
                else:
                    self._write(existing, properties, "INTEGRATION")
                    record = existing
                results.append({**view(record), "new": existing is None})
            return results

    def batch_read(
        self, object_type: str, keys: list[str], id_property: str | None, wanted: list[str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The records found, and the keys of those that were not."""
        with self.lock:
            found = [(key, self._find(object_type, key, id_property)) for key in keys]
            shown = wanted or list(DEFAULT_READ[object_type])
            return [view(r, shown) for _, r in found if r is not None], [key for key, r in found if r is None]

    def read(
        self,
        object_type: str,
        key: str,
        id_property: str | None,
        wanted: list[str],
        with_types: list[str],
        *,
        archived: bool = False,
    ) -> dict[str, Any]:
        """One record, with the ids of its associated records of ``with_types`` (``archived``:
        only an archived record, as HubSpot's ``?archived=true``)."""
        with self.lock:
            record = self._get_archived(object_type, key) if archived else self._get(object_type, key, id_property)
            return self._shown(record, wanted, with_types)

    def list_page(
        self, object_type: str, archived: bool, offset: int, limit: int, wanted: list[str], with_types: list[str]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """``GET /crm/v3/objects/<type>``: a page of the live (or only the archived) records in id
        order, and the offset of the next page (None: the last page)."""
        with self.lock:
            chosen = sorted(
                (r for r in self.objects[object_type].values() if r["archived"] == archived), key=lambda r: int(r["id"])
            )
            page = [self._shown(r, wanted, with_types) for r in chosen[offset : offset + limit]]
            return page, offset + limit if offset + limit < len(chosen) else None

    def _shown(self, record: dict[str, Any], wanted: list[str], with_types: list[str]) -> dict[str, Any]:
        object_type = record["type"]
        out = view(record, wanted or list(DEFAULT_READ[object_type]))
        linked: dict[str, Any] = {}
        for to_type in with_types:
            target = ALIASES.get(to_type)
            if target is None:
                raise HubSpotError(400, f"Unknown object type {to_type}")
            ids = self.associations_of(object_type, record["id"], target)
            if ids:
                kind = f"{object_type[:-1]}_to_{target[:-1]}".replace("companie_", "company_")
                linked[target] = {"results": [{"id": i, "type": kind} for i in ids]}
        if linked:
            out["associations"] = linked
        return out

    def update(self, object_type: str, key: str, id_property: str | None, properties: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            record = self._get(object_type, key, id_property)
            self._check_unique(object_type, properties, exclude=record["id"])
            check_stage(self.pipelines, object_type, record, properties)
            self._write(record, properties, "INTEGRATION")
            return view(record)

    def archive(self, object_type: str, key: str, source: str = "INTEGRATION") -> None:
        """Delete (archive) a record: it leaves reads and search; ``?archived=true`` lists it with
        ``archivedAt``."""
        with self.lock:
            record = self._get(object_type, key)
            record["archived"] = True
            record["archivedAt"] = self._stamp()
            if object_type == "meetings":
                self.changes.deleted(record["id"], record["archivedAt"], source)

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> int:
        """The default association between two records; returns its type id."""
        if (from_type, to_type) not in ASSOCIATION_TYPES:
            raise HubSpotError(400, f"No default association between {from_type} and {to_type}")
        with self.lock:
            self._get(from_type, from_id)
            self._get(to_type, to_id)
            type_id = ASSOCIATION_TYPES[(from_type, to_type)]
            self._link(from_type, from_id, to_type, to_id, type_id, "HUBSPOT_DEFINED")
            return type_id

    def search(self, query: Query) -> list[dict[str, Any]]:
        """Every match as the index saw it ``search_lag`` seconds ago, in the query's order."""
        cutoff = self.clock() - self.search_lag
        with self.lock:
            found = []
            for record in sorted(self.objects[query.object_type].values(), key=lambda r: int(r["id"])):
                seen = _indexed(record, cutoff)
                if seen is None:
                    continue
                # the record as the index saw it: its properties and its modification time then
                indexed = {**record, "properties": seen[0], "updatedAt": seen[1]}
                if query.matches(indexed, seen[0]):
                    found.append((indexed, seen[0]))
            query.sort(found)
            shown = query.wanted or list(DEFAULT_READ[query.object_type])
            return [view(record, shown) for record, _ in found]

    def association_pages(
        self, from_type: str, to_type: str, keys: list[tuple[str, int]], page_size: int
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Per ``(id, offset)``: a page of its associated ids (with ``paging`` when more follow);
        and the ids with none (a record that does not exist has none)."""
        type_id = ASSOCIATION_TYPES.get((from_type, to_type))
        with self.lock:
            results, missing = [], []
            for key, offset in keys:
                ids = self.associations_of(from_type, key, to_type) if self._find(from_type, key) else []
                page = ids[offset : offset + page_size]
                if not page:
                    missing.append(key)
                    continue
                kinds = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
                result: dict[str, Any] = {
                    "from": {"id": key},
                    "to": [{"toObjectId": i, "associationTypes": kinds} for i in page],
                }
                if offset + page_size < len(ids):
                    result["paging"] = {"next": {"after": str(offset + page_size)}}
                results.append(result)
            return results, missing

    # -- what staff do in HubSpot's own screens ---------------------------------------------------

    def staff_write(self, meeting_id: str, properties: dict[str, str]) -> None:
        """Change a meeting directly (search sees it after the usual lag)."""
        with self.lock:
            self._write(self._get("meetings", meeting_id), properties, "CRM_UI")

    def block(self, properties: dict[str, str]) -> str:
        with self.lock:
            record = self._insert("meetings", properties)
            self._note_created(record, "CRM_UI")
            return str(record["id"])

    # -- inspection (the emulator's public helpers) ---------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "company_id": self.company_id,
                "bookings": self._bookings(),
                **{t: self.records(t) for t in ("contacts", "deals", "meetings", "notes", "companies")},
                "associations": [dict(link) for link in self.links],
            }

    def records(self, object_type: str, *, include_archived: bool = False) -> list[dict[str, Any]]:
        """Every record of ``object_type`` as ``{"id", "properties", "archived"}`` (a copy)."""
        with self.lock:
            return [
                {"id": r["id"], "properties": dict(r["properties"]), "archived": r["archived"]}
                for r in self.objects[ALIASES[object_type]].values()
                if include_archived or not r["archived"]
            ]

    def associations_of(self, object_type: str, object_id: str, to_type: str) -> list[str]:
        """Ids of the ``to_type`` records associated with the given record (either direction)."""
        src, dst = ALIASES[object_type], ALIASES[to_type]
        with self.lock:
            out: list[str] = []
            for link in self.links:
                if (link["from_type"], link["from_id"], link["to_type"]) == (src, object_id, dst):
                    other = link["to_id"]
                elif (link["to_type"], link["to_id"], link["from_type"]) == (src, object_id, dst):
                    other = link["from_id"]
                else:
                    continue
                if other not in out:
                    out.append(other)
            return out

    def seed(self, object_type: str, properties: dict[str, str]) -> str:
        """Add a record directly (e.g. an existing patient contact); returns its id."""
        with self.lock:
            return str(self._insert(ALIASES[object_type], {k: str(v) for k, v in properties.items()})["id"])

    def settle(self) -> None:
        """Make every write so far visible to search now (as if the index lag had passed)."""
        with self.lock:
            for records in self.objects.values():
                for record in records.values():
                    record["index"] = [(float("-inf"), *rest) for _, *rest in record["index"][-1:]]

    def type_of(self, record_id: str) -> str | None:
        return next((t for t, records in self.objects.items() if record_id in records), None)

    # -- records ------------------------------------------------------------------------------

    def _seed_company(self) -> str:
        return str(
            self._insert("companies", {"name": "Sandbox Dental Practice", "domain": "sandbox-dental.example"})["id"]
        )

    def _insert(self, object_type: str, properties: dict[str, str]) -> dict[str, Any]:
        record_id = str(self._next[object_type])
        self._next[object_type] += 7  # HubSpot ids are sparse
        now = self._stamp()
        record: dict[str, Any] = {
            "id": record_id,
            "type": object_type,
            "properties": dict(properties),
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
            "index": [],
        }
        self.objects[object_type][record_id] = record
        self._reindex(record)
        return record

    def _write(self, record: dict[str, Any], properties: dict[str, str], source: str) -> None:
        changed = {k: v for k, v in properties.items() if record["properties"].get(k) != v}
        record["properties"].update(properties)
        record["updatedAt"] = self._stamp()
        self._reindex(record)
        if record["type"] == "meetings" and changed:
            self.changes.changed(record["id"], record["updatedAt"], changed, source)

    def _note_created(self, record: dict[str, Any], source: str) -> None:
        if record["type"] == "meetings":
            self.changes.created(record["id"], record["createdAt"], source)

    def _stamp(self) -> str:
        return utc_text(self.wall_clock(), milliseconds=True)

    def _reindex(self, record: dict[str, Any]) -> None:
        """Queue the record's new properties (and modification time) for search: visible
        ``search_lag`` seconds from now."""
        index: list[tuple[float, dict[str, str], str]] = record["index"]
        index.append((self.clock(), dict(record["properties"]), record["updatedAt"]))
        del index[:-20]

    def _link(self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int, category: str) -> None:
        link = {
            "from_type": from_type,
            "from_id": from_id,
            "to_type": to_type,
            "to_id": to_id,
            "type_id": type_id,
            "category": category,
        }
        if link not in self.links:
            self.links.append(link)

    def _find_by(self, object_type: str, name: str, value: str) -> dict[str, Any] | None:
        for record in self.objects[object_type].values():
            if record["archived"]:
                continue
            current = record["id"] if name == "hs_object_id" else record["properties"].get(name)
            if current is not None and (current.lower() == value.lower() if name == "email" else current == value):
                return record
        return None

    def _find(self, object_type: str, key: str, id_property: str | None = None) -> dict[str, Any] | None:
        """The live record with id ``key``, or whose ``id_property`` is ``key``."""
        if id_property:
            return self._find_by(object_type, id_property, key)
        record = self.objects[object_type].get(key) if NUMERIC_ID.fullmatch(key) else None
        return record if record is not None and not record["archived"] else None

    def _get_archived(self, object_type: str, key: str) -> dict[str, Any]:
        record = self.objects[object_type].get(key) if NUMERIC_ID.fullmatch(key) else None
        if record is None or not record["archived"]:
            raise not_found(key)
        return record

    def _get(self, object_type: str, key: str, id_property: str | None = None) -> dict[str, Any]:
        """:meth:`_find`, or HubSpot's 400 for a non-unique ``id_property`` and 404 for no record."""
        if id_property and id_property not in UNIQUE.get(object_type, set()):
            raise non_unique(object_type)
        found = self._find(object_type, key, id_property)
        if found is None:
            raise not_found(key)
        return found

    def _check_unique(self, object_type: str, properties: dict[str, str], exclude: str | None = None) -> None:
        for name in UNIQUE.get(object_type, set()) - {"hs_object_id"}:
            value = properties.get(name)
            existing = self._find_by(object_type, name, value) if value else None
            if existing is not None and existing["id"] != exclude:
                if object_type == "contacts":
                    message = f"Contact already exists. Existing ID: {existing['id']}"
                else:
                    message = f"A {object_type[:-1]} with {name}={value} already exists. Existing ID: {existing['id']}"
                raise HubSpotError(409, message, "CONFLICT")

    def _bookings(self) -> list[dict[str, Any]]:
        """Each meeting joined to its deal and contact: what ``state()["bookings"]`` lists."""
        out = []
        for meeting in self.objects["meetings"].values():
            deals = self.associations_of("meetings", meeting["id"], "deals")
            contacts = self.associations_of("meetings", meeting["id"], "contacts")
            deal = self.objects["deals"].get(deals[0]) if deals else None
            props = meeting["properties"]
            match = re.search(r"Booking reference: \[([^\]]+)\]", props.get("hs_meeting_body") or "")
            out.append(
                {
                    "id": f"{deal['id']}:{meeting['id']}" if deal else None,
                    "deal_id": deal["id"] if deal else None,
                    "meeting_id": meeting["id"],
                    "contact_id": contacts[0] if contacts else None,
                    "reference": match.group(1) if match else None,
                    "title": props.get("hs_meeting_title"),
                    "start": props.get("hs_meeting_start_time"),
                    "end": props.get("hs_meeting_end_time"),
                    "outcome": props.get("hs_meeting_outcome"),
                    "dealstage": deal["properties"].get("dealstage") if deal else None,
                    "dealname": deal["properties"].get("dealname") if deal else None,
                }
            )
        return out


def view(record: dict[str, Any], wanted: list[str] | None = None) -> dict[str, Any]:
    """A record as HubSpot answers with it: every property, or the ``wanted`` ones (plus system ones)."""
    props: dict[str, Any] = dict(record["properties"])
    system = {
        "hs_object_id": record["id"],
        CREATED_PROPERTY.get(record["type"], "hs_createdate"): record["createdAt"],
        MODIFIED_PROPERTY.get(record["type"], "hs_lastmodifieddate"): record["updatedAt"],
    }
    if wanted is None:
        shown: dict[str, Any] = {**props, **system}
    else:
        shown = {name: props.get(name) for name in wanted if name in PROPERTIES[record["type"]]}
        shown.update(system)
    out = {
        "id": record["id"],
        "properties": shown,
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
        "archived": record["archived"],
    }
    if record["archived"]:
        out["archivedAt"] = record.get("archivedAt")
    return out


def _indexed(record: dict[str, Any], cutoff: float) -> tuple[dict[str, str], str] | None:
    """The record's properties and modification time as the search index saw them at ``cutoff``."""
    if record["archived"]:
        return None
    seen = None
    for written, props, updated in record["index"]:
        if written <= cutoff:
            seen = (props, updated)
    return seen
