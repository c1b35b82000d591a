"""HubSpot's error bodies, and :class:`HubSpotError`, which carries one out of any layer."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .._core import Reply, SandboxResponse, json_response
from .schema import OBJECT_TYPE_IDS

#: A per-property problem: (property, HubSpot's error code, message).
Problem = tuple[str, str, str]

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
    "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def _answer(status: int, message: str, **fields: Any) -> SandboxResponse:
    correlation = str(uuid.uuid4())
    body = {"status": "error", "message": message, "correlationId": correlation, **fields}
    return json_response(status, body, {"X-HubSpot-Correlation-Id": correlation})


def error(status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> SandboxResponse:
    """HubSpot's error body: ``{"status": "error", "message", "correlationId", "category", ...}``."""
    return _answer(status, message, category=category, **extra)


def rate_limited(policy: str | None = None, message: str | None = None) -> SandboxResponse:
    """HubSpot's 429: ``errorType: RATE_LIMIT``, with the policy for the burst window."""
    extra = {"policyName": policy, "groupName": "publicapi:private-app-api-calls-ten-secondly:sandbox"}
    message = message or "You have reached your ten_secondly_rolling limit."
    return _answer(429, message, errorType="RATE_LIMIT", **(extra if policy else {}))


class HubSpotError(Reply):
    """A refusal in HubSpot's error format, raised by checks and store operations alike."""

    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(error(status, message, category, **extra))


def invalid(problems: list[Problem]) -> HubSpotError:
    """HubSpot's 400 for property values: the per-property list is embedded in the message."""
    items = [
        {"isValid": False, "message": msg, "error": code, "name": name, "localizedErrorMessage": msg}
        for name, code, msg in problems
    ]
    return HubSpotError(400, "Property values were not valid: " + json.dumps(items, separators=(",", ":")))


def no_such_property(name: str) -> Problem:
    return (name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')


def unrecognised(field: str) -> HubSpotError:
    return HubSpotError(
        400,
        f'Invalid input JSON on line 1, column 2: Unrecognized field "{field}" (class '
        "com.hubspot.inbounddb.publicobject.core.v2.SimplePublicObjectInput), not marked as ignorable",
    )


def non_unique(object_type: str) -> HubSpotError:
    return HubSpotError(400, f"Unable to perform update/upsert by non-unique {OBJECT_TYPE_IDS[object_type]} property")


def not_found(key: str) -> HubSpotError:
    return HubSpotError(
        404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND", context={"id": [key]}
    )
