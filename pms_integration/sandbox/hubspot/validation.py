"""HubSpot's request checks: the JSON body, property values, required properties, deal stages
and inline associations. Each refusal is a :class:`~.errors.HubSpotError` in HubSpot's words."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..._time import parse_instant, utc_text
from .._core import SandboxRequest
from .errors import HubSpotError, Problem, invalid, no_such_property, non_unique, unrecognised
from .schema import (
    DATETIME,
    EMAIL,
    MEETING_OUTCOMES,
    NOTE_BODY_LIMIT,
    NUMBER,
    NUMERIC_ID,
    OBJECT_TYPE_IDS,
    PROPERTIES,
    READ_ONLY,
    UNIQUE,
    valid_association_ids,
)

#: A link to make: (to type, to id, association type id, category).
Link = tuple[str, str, int, str]
Pipelines = Mapping[str, tuple[str, ...]]

_REQUIRED = {"deals": ("dealname", "dealstage"), "notes": ("hs_timestamp",)}


def json_body(req: SandboxRequest, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object of the ``allowed`` fields (415 or 400 otherwise)."""
    content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HubSpotError(415, f"Content type '{content_type or 'none'}' not supported")
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise HubSpotError(400, f"Invalid input JSON on line 1, column 1: {exc}") from None
    if not isinstance(body, dict):
        raise HubSpotError(400, "Invalid input JSON on line 1, column 1: expected an object")
    unknown = set(body) - allowed
    if unknown:
        raise unrecognised(sorted(unknown)[0])
    return body


def list_arg(req: SandboxRequest, name: str) -> list[str]:
    """A list query parameter: repeated (``a=1&a=2``, as the SDK sends it), comma-separated, or both."""
    out: list[str] = []
    for value in req.query.get(name, []):
        out += [v.strip() for v in value.split(",") if v.strip() and v.strip() not in out]
    return out


def normalise_time(value: str) -> str | None:
    """A HubSpot date-time as UTC ISO with milliseconds, or ``None`` if invalid.

    The docs accept "Unix timestamp in milliseconds or UTC format": epoch milliseconds, or an
    ISO-8601 time in UTC ending in ``Z``. Offsets other than UTC are refused here.
    """
    text = value.strip()
    if not (text.isdecimal() or (text.endswith("Z") and "T" in text)):
        return None
    parsed = parse_instant(text)
    return None if parsed is None else utc_text(parsed, milliseconds=True)


def properties(object_type: str, value: Any, pipelines: Pipelines, *, creating: bool) -> dict[str, str]:
    """The ``properties`` of a write, checked (every problem at once) and normalised."""
    if not isinstance(value, dict):
        raise HubSpotError(400, "'properties' must be an object")
    known = PROPERTIES[object_type]
    problems: list[Problem] = []
    out: dict[str, str] = {}
    for name, raw in value.items():
        if name in READ_ONLY:
            problems.append((name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'))
        elif name not in known:
            problems.append(no_such_property(name))
        elif raw is not None and not isinstance(raw, str):
            # The spec types every property value as a string (or null to clear it).
            problems.append((name, "INVALID_VALUE", f"{name} must be a string value"))
        elif problem := _value_problem(object_type, name, raw or "", value, pipelines):
            problems.append(problem)
        else:
            text = raw or ""
            out[name] = normalise_time(text) or text if known[name] == DATETIME and text else text
    if creating:
        problems += missing_required(object_type, out)
    if problems:
        raise invalid(problems)
    return out


def _value_problem(
    object_type: str, name: str, text: str, given: dict[str, Any], pipelines: Pipelines
) -> Problem | None:
    kind = PROPERTIES[object_type][name]
    if not text:
        return None
    if kind == DATETIME and normalise_time(text) is None:
        return (name, "INVALID_DATE", f"{text} is not a valid datetime or date for {name}")
    if kind == NUMBER:
        try:
            float(text)
        except ValueError:
            return (name, "INVALID_DOUBLE", f"{text} was not a valid number")
    if name == "hs_meeting_outcome" and text not in MEETING_OUTCOMES:
        return (name, "INVALID_OPTION", f"{text} was not one of the allowed options: {list(MEETING_OUTCOMES)}")
    if name == "dealstage" and given.get("pipeline"):
        # A stage sent without its pipeline is checked once the deal is known (check_stage).
        return _stage_problem(pipelines, text, str(given["pipeline"]))
    if name == "email" and not EMAIL.fullmatch(text):
        return (name, "INVALID_EMAIL", f"Email address {text} is invalid")
    if name == "hs_note_body" and len(text) > NOTE_BODY_LIMIT:
        return (name, "INVALID_VALUE", f"hs_note_body is limited to {NOTE_BODY_LIMIT} characters")
    return None


def _stage_problem(pipelines: Pipelines, stage: str, pipeline: str) -> Problem | None:
    stages = pipelines.get(pipeline)
    if stages is None:
        return ("pipeline", "INVALID_OPTION", f"{pipeline} was not one of the allowed options")
    if stage not in stages:
        return ("dealstage", "INVALID_OPTION", f"{stage} was not one of the allowed options for pipeline {pipeline}")
    return None


def check_stage(
    pipelines: Pipelines, object_type: str, stored: dict[str, Any] | None, properties: dict[str, str]
) -> None:
    """A deal stage given without ``pipeline`` belongs to the deal's stored pipeline.

    HubSpot checks such a stage against the pipeline the deal is in (``default`` only for a
    new deal, or one that never had a pipeline), not against ``default`` regardless.
    """
    stage = properties.get("dealstage")
    if object_type != "deals" or not stage or properties.get("pipeline"):
        return
    pipeline = stored["properties"].get("pipeline") if stored is not None else None
    problem = _stage_problem(pipelines, stage, str(pipeline or "default"))
    if problem is not None:
        raise invalid([problem])


def missing_required(object_type: str, properties: dict[str, str]) -> list[Problem]:
    missing = [
        (n, "REQUIRED_FIELD", f"{n} is required") for n in _REQUIRED.get(object_type, ()) if not properties.get(n)
    ]
    if object_type == "meetings" and not (properties.get("hs_timestamp") or properties.get("hs_meeting_start_time")):
        missing.append(("hs_timestamp", "REQUIRED_FIELD", "hs_timestamp is required"))
    if object_type == "contacts" and not any(properties.get(n) for n in ("email", "firstname", "lastname")):
        missing.append(("email", "REQUIRED_FIELD", "one of email, firstname or lastname is required"))
    return missing


def associations(object_type: str, value: Any, type_of: Callable[[str], str | None]) -> list[Link]:
    """Inline ``associations`` of a create: documented type ids, to records that exist."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise HubSpotError(400, "'associations' must be a list")
    links: list[Link] = []
    for item in value:
        to = item.get("to") if isinstance(item, dict) else None
        to_id = to.get("id") if isinstance(to, dict) else None
        types = item.get("types") if isinstance(item, dict) else None
        if (
            not isinstance(to_id, (str, int))
            or not NUMERIC_ID.fullmatch(str(to_id))
            or not isinstance(types, list)
            or not types
        ):
            raise HubSpotError(400, "Each association needs 'to.id' and 'types'")
        to_type = type_of(str(to_id))
        if to_type is None:
            raise HubSpotError(400, f"One or more associations are invalid: object {to_id} does not exist")
        for spec in types:
            category = spec.get("associationCategory") if isinstance(spec, dict) else None
            type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
            if (
                category != "HUBSPOT_DEFINED"
                or not isinstance(type_id, int)
                or type_id not in valid_association_ids(object_type, to_type)
            ):
                raise HubSpotError(
                    400,
                    f"{category} association type id {type_id} is not valid from "
                    f"{OBJECT_TYPE_IDS[object_type]} to {OBJECT_TYPE_IDS[to_type]}",
                    subCategory="crm.associations.INVALID_ASSOCIATION_TYPE",
                )
            links.append((to_type, str(to_id), type_id, category))
    return links


def upsert_input(object_type: str, item: Any, pipelines: Pipelines) -> tuple[str, str, dict[str, str]]:
    """One ``batch/upsert`` input as ``(idProperty, id, properties)``; the id property must be unique."""
    if not isinstance(item, dict):
        raise HubSpotError(400, "Invalid input JSON: inputs[] must be objects")
    unknown = set(item) - {"id", "idProperty", "properties", "objectWriteTraceId"}
    if unknown:
        raise unrecognised(sorted(unknown)[0])
    id_property, value = item.get("idProperty"), item.get("id")
    if not isinstance(id_property, str) or not isinstance(value, str) or not value:
        raise HubSpotError(400, "Each input needs 'idProperty' and 'id'")
    if id_property not in PROPERTIES[object_type] and id_property != "hs_object_id":
        raise invalid([no_such_property(id_property)])
    if id_property not in UNIQUE.get(object_type, set()):
        raise non_unique(object_type)
    return id_property, value, properties(object_type, item.get("properties"), pipelines, creating=False)


def strings(value: Any) -> list[str]:
    """The strings of a JSON list (``properties`` of a read or a search)."""
    return [p for p in value or [] if isinstance(p, str)]
