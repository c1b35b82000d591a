"""Configuration: the ``PMS_*`` variables, read into typed, validated settings.

Loading is pure: it reads a mapping (the process environment, a ``.env`` file, or a mapping you
pass), never the network, and never writes ``os.environ``. A provider whose required variables
are missing is *disabled* and lists their names; an invalid value disables it with a problem
message. Tokens are wrapped in :class:`Secret` so they cannot leak through ``repr`` or logs.

Sources, later wins: a ``.env`` file, then the process environment. An explicit ``environ``
mapping replaces both (that is how a secret manager plugs in); pass ``env_file`` as well to
layer the mapping over a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from ._redact import register_secret
from .errors import ConfigurationError, with_article
from .models import ProviderName, ProviderStatus, ProviderStatusList

__all__ = [
    "Secret",
    "RateLimit",
    "GoHighLevelSettings",
    "SalesforceSettings",
    "HubSpotSettings",
    "ProviderConfig",
    "PMSConfig",
    "Variable",
    "VARIABLES",
    "load_config",
    "read_env_file",
    "read_variables",
    "MIN_SECRET_LENGTH",
    "secret_problem",
]

_MASK = "**********"

#: The shortest value accepted as a token, key or secret. Every configured secret is masked
#: wherever it appears in text the library shows, so a short or common value (``2031``,
#: ``true``) would mask ordinary data; and no real vendor credential is that short.
MIN_SECRET_LENGTH = 16

# Words that make up placeholders people paste instead of a real credential
# ("your-api-key-here", "changeme-changeme", "test-token-test-token").
_PLACEHOLDER_TEXT = """
    true false null none nil undefined empty yes no on off
    change changeme replace replaceme with your my the here insert put enter set fill
    token tokens secret secrets password passwd pass pwd key keys apikey api access private app
    bearer auth oauth client refresh session server service goes
    test tests testing example examples sample dummy fake mock placeholder default demo
    admin root user value values todo tbd fixme redacted hidden
    foo bar baz qux qwerty letmein abc abcd abcdef
"""
_PLACEHOLDER_WORDS = frozenset(_PLACEHOLDER_TEXT.split())
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz")


def _is_placeholder(value: str) -> bool:
    """True when ``value`` is made only of placeholder words, repeats and runs like 1234."""
    text = value.strip()
    if "..." in text or (text[:1] in "<{[" and text[-1:] in ">}]") or text.startswith("${"):
        return True
    compact = re.sub(r"[^a-z0-9]", "", text.lower())
    if len(set(compact)) <= 3:  # "xxxxxxxxxxxxxxxx", "0000-0000-0000-0000", "abababab..."
        return True
    # can ``compact`` be cut entirely into placeholder pieces? (dynamic programming over cuts)
    n = len(compact)
    reachable = [False] * (n + 1)
    reachable[0] = True
    for i in range(n):
        if not reachable[i]:
            continue
        for j in range(i + 2, n + 1):
            piece = compact[i:j]
            if (
                piece in _PLACEHOLDER_WORDS
                or (j - i >= 3 and len(set(piece)) == 1)
                or (j - i >= 3 and any(piece in seq for seq in _SEQUENCES))
            ):
                reachable[j] = True
    return reachable[n]


def secret_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be used as the secret called ``name``, or None when it can.

    The message names ``name`` and never contains the value. The rule: a non-empty string of
    at least :data:`MIN_SECRET_LENGTH` characters that is not a placeholder or a common word
    (``true``, ``changeme``, ``your-api-key-here``, ``xxxxxxxx...``). The configuration,
    :meth:`Secret.checked` and the HTTP server's ``PMS_SERVER_TOKEN`` apply it.
    """
    if not isinstance(value, str) or not value.strip():
        return f"{name} must be a non-empty string"
    if len(value) < MIN_SECRET_LENGTH:
        return (
            f"{name} is too short to be a secret (fewer than {MIN_SECRET_LENGTH} characters); "
            "use the credential the vendor issued, or a long random value"
        )
    if _is_placeholder(value):
        return f"{name} looks like a placeholder or a common word, not a real secret"
    return None


class Secret:
    """A token or key. ``repr``/``str`` are masked; only :meth:`reveal` returns the value.

    The library calls :meth:`reveal` in exactly one place: where the transport builds the
    ``Authorization`` header (and the Salesforce token refresh form).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str, *, name: str = "value") -> None:
        # ``name`` is what an error calls the value (a variable name, say); never the value.
        label = name if isinstance(name, str) and name else "value"
        if not isinstance(value, str) or not value.strip():
            problem = f"{label} must be a non-empty string"
            raise ConfigurationError(f"A Secret needs a value: {problem}.", problems=[problem])
        # Only values that pass the secret rule reach the redaction layer: a short or common
        # value (a vendor's test token, say) masked wherever it appears would corrupt data.
        # Configured secrets always pass (load_config refuses the others); see checked().
        if secret_problem(label, value) is None:
            register_secret(value)
        self._value = value

    @classmethod
    def checked(cls, value: str, *, name: str = "value") -> Secret:
        """A Secret for a value someone *configures* (a server token, say): raises
        :class:`ConfigurationError` naming ``name`` when the value is too short or a
        placeholder (see :func:`secret_problem`). Values a vendor issues use the constructor."""
        label = name if isinstance(name, str) and name else "value"
        problem = secret_problem(label, value)
        if problem is not None:
            raise ConfigurationError(f"{problem}.", problems=[problem])
        return cls(value, name=label)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> Any:
        raise TypeError("Secret values cannot be pickled")


@attrs.frozen
class RateLimit:
    """At most ``requests`` per ``per_seconds``, client-side, shared by every thread of a client."""

    requests: int
    per_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.per_seconds

    def __str__(self) -> str:
        return f"{self.requests}/{self.per_seconds:g}s"


@attrs.frozen
class GoHighLevelSettings:
    api_key: Secret
    location_id: str
    calendar_id: str
    base_url: str
    api_version: Literal["v1", "v2"]
    timezone: str | None
    timeout: float
    report_contact_id: str | None
    rate_limit: RateLimit | None

    @property
    def account(self) -> str:
        """Which account this points at (never a secret): base URL, location and calendar."""
        return _account(self.base_url, self.location_id, self.calendar_id)

    @property
    def version_label(self) -> str:
        return self.api_version


@attrs.frozen
class SalesforceSettings:
    base_url: str
    token: Secret
    owner_id: str
    event_record_type: str | None
    api_version: str
    timeout: float
    cancel_mode: Literal["delete", "soft"]
    client_id: str | None
    client_secret: Secret | None
    refresh_token: Secret | None
    rate_limit: RateLimit | None

    @property
    def can_refresh(self) -> bool:
        return bool(self.client_id and self.client_secret and self.refresh_token)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/services/oauth2/token"

    @property
    def account(self) -> str:
        """Which account this points at (never a secret): base URL and owner."""
        return _account(self.base_url, self.owner_id)

    @property
    def version_label(self) -> str:
        return f"v{self.api_version}"


@attrs.frozen
class HubSpotSettings:
    token: Secret
    base_url: str
    api_version: str
    pipeline_id: str
    stage_id: str
    cancel_stage_id: str
    report_company_id: str | None
    reference_property: str | None
    timeout: float
    rate_limit: RateLimit | None

    @property
    def account(self) -> str:
        """Which account this points at (never a secret): base URL and pipeline."""
        return _account(self.base_url, self.pipeline_id)

    @property
    def version_label(self) -> str:
        return self.api_version


def _account(base_url: str, *ids: str) -> str:
    return "|".join([base_url, *(i for i in ids if i)])


Settings = GoHighLevelSettings | SalesforceSettings | HubSpotSettings


@attrs.frozen
class ProviderConfig:
    """One provider's configuration: settings when enabled, else what is missing or wrong."""

    name: ProviderName
    settings: Settings | None
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    @property
    def partially_configured(self) -> bool:
        """Some but not all required variables are set: almost certainly a mistake."""
        required = [v.name for v in VARIABLES if v.provider == self.name and v.required]
        return bool(self.missing) and len(self.missing) < len(required)

    def status(self) -> ProviderStatus:
        s = self.settings
        if s is None:
            return ProviderStatus(self.name, False, self.missing, self.problems)
        return ProviderStatus(self.name, True, (), (), s.version_label, s.base_url)


@attrs.frozen
class PMSConfig:
    """The whole configuration: one :class:`ProviderConfig` per provider plus global settings."""

    providers: Mapping[ProviderName, ProviderConfig]
    default_provider: ProviderName | None = None
    max_attempts: int = 3
    deadline: float = 30.0
    problems: tuple[str, ...] = ()

    def get(self, name: ProviderName) -> ProviderConfig:
        return self.providers[name]

    def enabled(self) -> list[ProviderName]:
        return [n for n in ProviderName if self.providers[n].enabled]

    def statuses(self) -> ProviderStatusList:
        return ProviderStatusList(self.providers[n].status() for n in ProviderName)

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        for name in ProviderName:
            out.extend(f"{name.value}: {p}" for p in self.providers[name].problems)
        return out


# ---------------------------------------------------------------------------------------------
# the variable table


@attrs.frozen
class Variable:
    """One ``PMS_*`` variable, as documented in docs/configuration.md."""

    name: str
    provider: ProviderName | None
    required: bool
    default: str | None
    secret: bool
    description: str


_G, _S, _H = ProviderName.GOHIGHLEVEL, ProviderName.SALESFORCE, ProviderName.HUBSPOT
GHL_V2_URL = "https://services.leadconnectorhq.com"
GHL_V1_URL = "https://rest.gohighlevel.com/v1"
HUBSPOT_URL = "https://api.hubapi.com"
SALESFORCE_API_VERSION = "67.0"
DEFAULT_TIMEOUT_MS = 10_000

VARIABLES: tuple[Variable, ...] = (
    Variable(
        "PMS_DEFAULT_PROVIDER",
        None,
        False,
        None,
        False,
        "Provider used when a call names none: gohighlevel (or ghl), salesforce, hubspot.",
    ),
    Variable(
        "PMS_MAX_ATTEMPTS", None, False, "3", False, "Attempts per request for retryable failures (1 disables retries)."
    ),
    Variable(
        "PMS_DEADLINE_MS",
        None,
        False,
        "30000",
        False,
        "Overall time budget of one operation, retries and waits included.",
    ),
    Variable(
        "PMS_SERVER_TOKEN",
        None,
        False,
        None,
        True,
        "Bearer token the HTTP endpoints require (pms_integration.server); unset means no auth.",
    ),
    Variable("PMS_GHL_API_KEY", _G, True, None, True, "Private Integration Token (v2) or location API key (v1)."),
    Variable("PMS_GHL_LOCATION_ID", _G, True, None, False, "The sub-account (location) id."),
    Variable("PMS_GHL_CALENDAR_ID", _G, True, None, False, "The calendar appointments go into."),
    Variable(
        "PMS_GHL_BASE_URL", _G, False, GHL_V2_URL, False, "API host; a rest.gohighlevel.com/v1 URL selects API v1."
    ),
    Variable(
        "PMS_GHL_API_VERSION", _G, False, "inferred", False, "v1 or v2; inferred from PMS_GHL_BASE_URL when unset."
    ),
    Variable(
        "PMS_GHL_TIMEZONE", _G, False, None, False, "IANA zone used when a request carries none (v1 selectedTimezone)."
    ),
    Variable(
        "PMS_GHL_REPORT_CONTACT_ID",
        _G,
        False,
        None,
        False,
        "Contact that receives report notes; upserted once when unset.",
    ),
    Variable("PMS_GHL_TIMEOUT_MS", _G, False, str(DEFAULT_TIMEOUT_MS), False, "Per-request timeout in milliseconds."),
    Variable("PMS_GHL_RATE_LIMIT", _G, False, "100/10", False, "Client-side limit, requests/seconds; 'off' disables."),
    Variable(
        "PMS_SALESFORCE_BASE_URL", _S, True, None, False, "My Domain URL, e.g. https://example.my.salesforce.com."
    ),
    Variable("PMS_SALESFORCE_TOKEN", _S, True, None, True, "OAuth access token (session id)."),
    Variable(
        "PMS_SALESFORCE_OWNER_ID", _S, True, None, False, "User or public calendar id that owns the Events and Tasks."
    ),
    Variable(
        "PMS_SALESFORCE_EVENT_RECORD_TYPE",
        _S,
        False,
        None,
        False,
        "Event RecordTypeId, for orgs with Event record types.",
    ),
    Variable(
        "PMS_SALESFORCE_API_VERSION", _S, False, SALESFORCE_API_VERSION, False, "REST API version (46.0 or later)."
    ),
    Variable(
        "PMS_SALESFORCE_CANCEL_MODE",
        _S,
        False,
        "delete",
        False,
        "delete (remove the Event) or soft (keep it, marked cancelled and free).",
    ),
    Variable(
        "PMS_SALESFORCE_CLIENT_ID",
        _S,
        False,
        None,
        False,
        "Connected app consumer key, for refreshing an expired token.",
    ),
    Variable(
        "PMS_SALESFORCE_CLIENT_SECRET", _S, False, None, True, "Connected app consumer secret, for token refresh."
    ),
    Variable("PMS_SALESFORCE_REFRESH_TOKEN", _S, False, None, True, "OAuth refresh token, for token refresh."),
    Variable(
        "PMS_SALESFORCE_TIMEOUT_MS", _S, False, str(DEFAULT_TIMEOUT_MS), False, "Per-request timeout in milliseconds."
    ),
    Variable(
        "PMS_SALESFORCE_RATE_LIMIT", _S, False, "off", False, "Client-side limit, requests/seconds; 'off' disables."
    ),
    Variable(
        "PMS_HUBSPOT_PRIVATE_APP_TOKEN",
        _H,
        True,
        None,
        True,
        "Private app token or service key (PMS_HUBSPOT_ACCESS_TOKEN is accepted too).",
    ),
    Variable("PMS_HUBSPOT_BASE_URL", _H, False, HUBSPOT_URL, False, "API host."),
    Variable("PMS_HUBSPOT_API_VERSION", _H, False, "v3", False, "v3, or a date-based version such as 2026-09."),
    Variable("PMS_HUBSPOT_PIPELINE_ID", _H, False, "default", False, "Deal pipeline for bookings."),
    Variable("PMS_HUBSPOT_STAGE_ID", _H, False, "appointmentscheduled", False, "Deal stage of a new booking."),
    Variable("PMS_HUBSPOT_CANCEL_STAGE_ID", _H, False, "closedlost", False, "Deal stage of a cancelled booking."),
    Variable("PMS_HUBSPOT_REPORT_COMPANY_ID", _H, False, None, False, "Company the report notes are associated with."),
    Variable(
        "PMS_HUBSPOT_REFERENCE_PROPERTY",
        _H,
        False,
        None,
        False,
        "Unique deal property holding the booking reference (enables upsert).",
    ),
    Variable(
        "PMS_HUBSPOT_TIMEOUT_MS", _H, False, str(DEFAULT_TIMEOUT_MS), False, "Per-request timeout in milliseconds."
    ),
    Variable(
        "PMS_HUBSPOT_RATE_LIMIT", _H, False, "100/10", False, "Client-side limit, requests/seconds; 'off' disables."
    ),
)
_BY_NAME = {v.name: v for v in VARIABLES}
_HUBSPOT_TOKEN_ALIAS = "PMS_HUBSPOT_ACCESS_TOKEN"  # noqa: S105 - a variable name

# ---------------------------------------------------------------------------------------------
# parsing helpers


class _Reader:
    """Reads one provider's variables, collecting missing names and problems."""

    def __init__(self, env: Mapping[str, str], provider: ProviderName | None) -> None:
        self.env = env
        self.provider = provider
        self.missing: list[str] = []
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            self.missing.append(name)
            return ""
        return value

    def optional(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            default = _BY_NAME[name].default
            return default if default not in (None, "inferred") else None
        return value

    def check(self, name: str, value: str | None, pattern: str, what: str) -> str | None:
        if value and not re.fullmatch(pattern, value, re.ASCII):
            self.problems.append(f"{name} must be {what}")
            return None
        return value

    def url(self, name: str, value: str | None) -> str:
        if value is None:
            return ""
        problem = _url_problem(value)
        if problem:
            self.problems.append(f"{name} {problem}")
            return ""
        return value.rstrip("/")

    def timeout(self, name: str) -> float:
        text = self.optional(name) or str(DEFAULT_TIMEOUT_MS)
        if not _whole_number(text) or not 100 <= int(text) <= 600_000:
            self.problems.append(f"{name} must be a whole number of milliseconds from 100 to 600000")
            return DEFAULT_TIMEOUT_MS / 1000
        return int(text) / 1000

    def rate(self, name: str) -> RateLimit | None:
        text = (self.optional(name) or "off").lower()
        if text in ("off", "none", "0", "unlimited"):
            return None
        m = re.fullmatch(r"([0-9]{1,9})\s*/\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*s?", text, re.ASCII)
        if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
            self.problems.append(f"{name} must look like 100/10 (requests per seconds) or off")
            return None
        return RateLimit(int(m.group(1)), float(m.group(2)))

    def secret(self, value: str | None) -> Secret | None:
        return Secret(value) if value else None

    def token(self, name: str, value: str | None) -> str | None:
        """A token goes into an HTTP header: one line of printable ASCII, never echoed, and
        long and uncommon enough to be a secret (see :func:`secret_problem`)."""
        if value is None:
            return None
        if not _TOKEN_CHARS.fullmatch(value):
            self.problems.append(f"{name} must be one line of printable ASCII (check for stray quotes or line breaks)")
            return None
        problem = secret_problem(name, value)
        if problem is not None:
            self.problems.append(problem)
            return None
        return value

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems

    def result(self, settings: Callable[[], Settings]) -> ProviderConfig:
        assert self.provider is not None
        if not self.ok:
            return ProviderConfig(self.provider, None, tuple(self.missing), tuple(self.problems))
        return ProviderConfig(self.provider, settings())


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.username or parts.password:
        return "must not contain credentials; put the token in its own variable"
    if parts.query or parts.fragment:
        return "must not have a query string or fragment"
    if not host:
        return "is not a valid URL"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback_host(host):
        return None
    return "must be an https URL (plain http is allowed only for loopback emulators)"


def _whole_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` and ``١٠``, which ``int`` rejects
    or reads in another script."""
    return re.fullmatch(r"[0-9]{1,9}", text) is not None


_ID = r"[A-Za-z0-9_-]{1,64}"
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_SF_ID = r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?"


def _load_ghl(env: Mapping[str, str]) -> ProviderConfig:
    r = _Reader(env, ProviderName.GOHIGHLEVEL)
    key = r.token("PMS_GHL_API_KEY", r.required("PMS_GHL_API_KEY") or None) or ""
    location = r.check(
        "PMS_GHL_LOCATION_ID", r.required("PMS_GHL_LOCATION_ID"), _ID, "a GoHighLevel id (letters and digits)"
    )
    calendar = r.check(
        "PMS_GHL_CALENDAR_ID", r.required("PMS_GHL_CALENDAR_ID"), _ID, "a GoHighLevel id (letters and digits)"
    )
    base_raw = r.raw("PMS_GHL_BASE_URL")
    version_raw = (r.raw("PMS_GHL_API_VERSION") or "").lower()
    version: Literal["v1", "v2"]
    if version_raw in ("v1", "1"):
        version = "v1"
    elif version_raw in ("v2", "2"):
        version = "v2"
    elif version_raw:
        r.problems.append("PMS_GHL_API_VERSION must be v1 or v2")
        version = "v2"
    elif base_raw and ("rest.gohighlevel.com" in base_raw or base_raw.rstrip("/").endswith("/v1")):
        version = "v1"
    else:
        version = "v2"
    base = r.url("PMS_GHL_BASE_URL", base_raw or (GHL_V1_URL if version == "v1" else GHL_V2_URL))
    if version == "v1" and base and urlsplit(base).hostname == "rest.gohighlevel.com" and not base.endswith("/v1"):
        # the v1 collection's own baseUrl is the bare host; its paths all start with /v1
        base += "/v1"
    timezone = r.raw("PMS_GHL_TIMEZONE")
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            r.problems.append("PMS_GHL_TIMEZONE must be an IANA time zone such as America/New_York")
    report_contact = r.check(
        "PMS_GHL_REPORT_CONTACT_ID", r.raw("PMS_GHL_REPORT_CONTACT_ID"), _ID, "a GoHighLevel contact id"
    )
    timeout = r.timeout("PMS_GHL_TIMEOUT_MS")
    rate = r.rate("PMS_GHL_RATE_LIMIT")
    return r.result(
        lambda: GoHighLevelSettings(
            api_key=Secret(key),
            location_id=location or "",
            calendar_id=calendar or "",
            base_url=base,
            api_version=version,
            timezone=timezone,
            timeout=timeout,
            report_contact_id=report_contact,
            rate_limit=rate,
        )
    )


def _load_salesforce(env: Mapping[str, str]) -> ProviderConfig:
    r = _Reader(env, ProviderName.SALESFORCE)
    base = r.url("PMS_SALESFORCE_BASE_URL", r.required("PMS_SALESFORCE_BASE_URL") or None)
    token = r.token("PMS_SALESFORCE_TOKEN", r.required("PMS_SALESFORCE_TOKEN") or None) or ""
    owner = r.check(
        "PMS_SALESFORCE_OWNER_ID", r.required("PMS_SALESFORCE_OWNER_ID"), _SF_ID, "a 15- or 18-character Salesforce id"
    )
    record_type = r.check(
        "PMS_SALESFORCE_EVENT_RECORD_TYPE",
        r.raw("PMS_SALESFORCE_EVENT_RECORD_TYPE"),
        _SF_ID,
        "a 15- or 18-character Salesforce id",
    )
    version = (r.optional("PMS_SALESFORCE_API_VERSION") or SALESFORCE_API_VERSION).lstrip("vV")
    if re.fullmatch(r"[0-9]{2,3}", version):
        version += ".0"
    if not re.fullmatch(r"[0-9]{2,3}\.0", version) or float(version) < 46.0:
        r.problems.append("PMS_SALESFORCE_API_VERSION must be a version such as 67.0 (46.0 or later)")
    mode = (r.optional("PMS_SALESFORCE_CANCEL_MODE") or "delete").lower()
    if mode not in ("delete", "soft"):
        r.problems.append("PMS_SALESFORCE_CANCEL_MODE must be delete or soft")
    client_id = r.raw("PMS_SALESFORCE_CLIENT_ID")
    client_secret = r.token("PMS_SALESFORCE_CLIENT_SECRET", r.raw("PMS_SALESFORCE_CLIENT_SECRET"))
    refresh = r.token("PMS_SALESFORCE_REFRESH_TOKEN", r.raw("PMS_SALESFORCE_REFRESH_TOKEN"))
    refresh_vars = {
        "PMS_SALESFORCE_CLIENT_ID": client_id,
        "PMS_SALESFORCE_CLIENT_SECRET": client_secret,
        "PMS_SALESFORCE_REFRESH_TOKEN": refresh,
    }
    if any(refresh_vars.values()) and not all(refresh_vars.values()):
        unset = ", ".join(k for k, v in refresh_vars.items() if not v)
        r.problems.append(f"token refresh needs all three of its variables; {unset} unset")
    timeout = r.timeout("PMS_SALESFORCE_TIMEOUT_MS")
    rate = r.rate("PMS_SALESFORCE_RATE_LIMIT")
    return r.result(
        lambda: SalesforceSettings(
            base_url=base,
            token=Secret(token),
            owner_id=owner or "",
            event_record_type=record_type,
            api_version=version,
            timeout=timeout,
            cancel_mode="soft" if mode == "soft" else "delete",
            client_id=client_id,
            client_secret=r.secret(client_secret),
            refresh_token=r.secret(refresh),
            rate_limit=rate,
        )
    )


def _load_hubspot(env: Mapping[str, str]) -> ProviderConfig:
    r = _Reader(env, ProviderName.HUBSPOT)
    token = r.raw("PMS_HUBSPOT_PRIVATE_APP_TOKEN") or r.raw(_HUBSPOT_TOKEN_ALIAS)
    if token is None:
        r.missing.append("PMS_HUBSPOT_PRIVATE_APP_TOKEN")
    token = r.token("PMS_HUBSPOT_PRIVATE_APP_TOKEN", token)
    base = r.url("PMS_HUBSPOT_BASE_URL", r.optional("PMS_HUBSPOT_BASE_URL"))
    version = r.check(
        "PMS_HUBSPOT_API_VERSION",
        r.optional("PMS_HUBSPOT_API_VERSION"),
        r"v3|20[0-9][0-9]-(?:0[1-9]|1[0-2])",
        "v3 or a date version such as 2026-09",
    )
    prop = r"[A-Za-z0-9_-]{1,100}"
    pipeline = r.check("PMS_HUBSPOT_PIPELINE_ID", r.optional("PMS_HUBSPOT_PIPELINE_ID"), prop, "a pipeline id")
    stage = r.check("PMS_HUBSPOT_STAGE_ID", r.optional("PMS_HUBSPOT_STAGE_ID"), prop, "a deal stage id")
    cancel_stage = r.check(
        "PMS_HUBSPOT_CANCEL_STAGE_ID", r.optional("PMS_HUBSPOT_CANCEL_STAGE_ID"), prop, "a deal stage id"
    )
    company = r.check(
        "PMS_HUBSPOT_REPORT_COMPANY_ID", r.raw("PMS_HUBSPOT_REPORT_COMPANY_ID"), r"[0-9]{1,20}", "a numeric company id"
    )
    ref_prop = r.check(
        "PMS_HUBSPOT_REFERENCE_PROPERTY",
        r.raw("PMS_HUBSPOT_REFERENCE_PROPERTY"),
        r"[a-z][a-z0-9_]{0,99}",
        "a property internal name (lowercase)",
    )
    timeout = r.timeout("PMS_HUBSPOT_TIMEOUT_MS")
    rate = r.rate("PMS_HUBSPOT_RATE_LIMIT")
    return r.result(
        lambda: HubSpotSettings(
            token=Secret(token or ""),
            base_url=base,
            api_version=version or "v3",
            pipeline_id=pipeline or "default",
            stage_id=stage or "appointmentscheduled",
            cancel_stage_id=cancel_stage or "closedlost",
            report_company_id=company,
            reference_property=ref_prop,
            timeout=timeout,
            rate_limit=rate,
        )
    )


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``PMS_*`` values of a ``.env`` file (python-dotenv), without touching ``os.environ``."""
    from dotenv import dotenv_values

    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigurationError(
            f"env_file must be a file path (a str or pathlib.Path), not {type(path).__name__}.",
            problems=["env_file must be a file path"],
        )
    try:
        file = Path(path)
    except TypeError:  # an os.PathLike whose __fspath__ returns bytes
        raise ConfigurationError("env_file must be a text file path, not bytes.") from None
    if not file.is_file():
        raise ConfigurationError(f"The env file {str(file)!r} does not exist or is not a file.")
    try:
        values = dotenv_values(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"The env file {str(file)!r} cannot be read: {type(exc).__name__}.") from None
    return {k: v for k, v in values.items() if k.startswith("PMS_") and v is not None}


def _check_environ(environ: object) -> None:
    """Refuse an ``environ`` that is not a mapping of strings to strings (ConfigurationError)."""
    if environ is None:
        return
    if not isinstance(environ, Mapping):
        raise ConfigurationError(
            f"environ must be a mapping of variable names to strings (or None), not {type(environ).__name__}.",
            problems=["environ must be a mapping"],
        )
    for key, value in environ.items():
        if not isinstance(key, str):
            raise ConfigurationError(
                f"environ must map variable names (strings) to strings; it has {with_article(type(key).__name__)} key.",
                problems=["environ must have string keys"],
            )
        if not isinstance(value, str):
            # Name the variable only when it is one of ours; never show the value.
            where = f" for {key}" if key.startswith("PMS_") and key.isprintable() and len(key) <= 64 else ""
            raise ConfigurationError(
                f"environ must map variable names to strings; it has {with_article(type(value).__name__)} value{where}.",
                problems=["environ must have string values"],
            )


def read_variables(
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
) -> dict[str, str]:
    """The ``PMS_*`` variables from the sources :func:`load_config` reads, later winning.

    The same rules as :func:`load_config`: the process environment over ``./.env`` (when it
    exists) by default; an explicit ``environ`` mapping alone, with ``env_file`` under it if
    given. The HTTP server reads ``PMS_SERVER_TOKEN`` this way, so a token in ``.env`` or in
    ``--env-file`` counts exactly as it does for the client's own variables.
    """
    _check_environ(environ)
    values: dict[str, str] = {}
    if env_file is ...:
        if environ is None and Path(".env").is_file():
            values.update(read_env_file(".env"))
    elif env_file is not None:
        values.update(read_env_file(env_file))
    source = os.environ if environ is None else environ
    values.update(
        {k: v for k, v in source.items() if isinstance(k, str) and k.startswith("PMS_") and isinstance(v, str)}
    )
    return values


def load_config(
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | EllipsisType | None = ...,
) -> PMSConfig:
    """Read the configuration.

    * ``environ=None`` (the default): the process environment over ``./.env`` when it exists.
    * ``environ=<mapping>``: that mapping alone (plus ``env_file`` under it, if you pass one).
    * ``env_file=None``: no file; ``env_file=<path>``: that file, which must exist.
    """
    values = read_variables(environ, env_file)
    g = _Reader(values, None)
    default: ProviderName | None = None
    name = g.raw("PMS_DEFAULT_PROVIDER")
    if name:
        try:
            default = ProviderName.parse(name)
        except ValueError:
            g.problems.append("PMS_DEFAULT_PROVIDER must be one of gohighlevel (ghl), salesforce, hubspot")
    attempts_text = g.optional("PMS_MAX_ATTEMPTS") or "3"
    attempts = 3
    if _whole_number(attempts_text) and 1 <= int(attempts_text) <= 10:
        attempts = int(attempts_text)
    else:
        g.problems.append("PMS_MAX_ATTEMPTS must be a whole number from 1 to 10")
    deadline_text = g.optional("PMS_DEADLINE_MS") or "30000"
    deadline = 30.0
    if _whole_number(deadline_text) and 1_000 <= int(deadline_text) <= 600_000:
        deadline = int(deadline_text) / 1000
    else:
        g.problems.append("PMS_DEADLINE_MS must be a whole number of milliseconds from 1000 to 600000")

    server_token = g.raw("PMS_SERVER_TOKEN")
    if server_token is not None:
        problem = secret_problem("PMS_SERVER_TOKEN", server_token)
        if problem is not None:
            g.problems.append(problem)

    providers = {
        ProviderName.GOHIGHLEVEL: _load_ghl(values),
        ProviderName.SALESFORCE: _load_salesforce(values),
        ProviderName.HUBSPOT: _load_hubspot(values),
    }
    return PMSConfig(providers, default, attempts, deadline, tuple(g.problems))
