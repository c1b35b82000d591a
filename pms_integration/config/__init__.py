"""Configuration: the ``PMS_*`` variables, read into typed, validated settings (docs/configuration.md).

Each variable is declared once, on the attrs field it fills: name, parser, default, secrecy, help.
One loader reads the declarations and collects every missing or invalid variable of a provider at
once; per-provider rules cover only what spans fields. The variables tables of the docs page and
``.env.example`` are generated from the same declarations (``python -m pms_integration.config``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import attrs

from .._redact import register_secret
from ..errors import ConfigurationError, with_article
from ..models import ProviderName, ProviderStatus, ProviderStatusList
from ..scheduling import OpenHours

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
    "load_settings",
    "read_env_file",
    "read_variables",
    "MIN_SECRET_LENGTH",
    "secret_problem",
    "variables_markdown",
    "env_template",
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

    def piece(p: str) -> bool:
        return p in _PLACEHOLDER_WORDS or (len(p) >= 3 and (len(set(p)) == 1 or any(p in s for s in _SEQUENCES)))

    # can ``compact`` be cut entirely into placeholder pieces? (dynamic programming over cuts)
    reachable = {0}
    for i in range(len(compact)):
        if i in reachable:
            reachable.update(j for j in range(i + 2, len(compact) + 1) if piece(compact[i:j]))
    return len(compact) in reachable


def secret_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be the secret called ``name`` (a message naming ``name``, never the value),
    or None: a secret is a string of at least :data:`MIN_SECRET_LENGTH` characters that is not a
    placeholder or a common word (``true``, ``changeme``, ``your-api-key-here``, ``xxxxxxxx...``)."""
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
        # Only values that pass the secret rule are redacted: masking a short or common value
        # (a vendor's test token, say) wherever it appears would corrupt data.
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


# -- declaring a variable ---------------------------------------------------------------------


@attrs.frozen
class Variable:
    """One ``PMS_*`` variable, declared on the settings field it fills. ``parse`` reads the text or
    raises ``ValueError("must be ...")``; a ``computed`` default is worked out by a provider rule."""

    name: str
    provider: ProviderName | None
    required: bool
    default: str | None
    secret: bool
    description: str
    parse: Callable[[str], Any] = attrs.field(default=str, repr=False, eq=False)
    aliases: tuple[str, ...] = ()
    computed: bool = False


T = TypeVar("T")
_META = "pms_integration.variable"


def _var(name: str, parse: Callable[[str], Any] = str, default: str | None = None, *, help: str, required: bool = False,
         secret: bool = False, aliases: tuple[str, ...] = (), computed: bool = False) -> dict[str, Variable]:  # fmt: skip
    """The metadata of an attrs field read from the variable ``name``."""
    return {_META: Variable(name, None, required, default, secret, help, parse, aliases, computed)}


def _fields(cls: type) -> list[tuple[str, Variable]]:
    return [(f.name, f.metadata[_META]) for f in attrs.fields(cls) if _META in f.metadata]


def _rule(ok: Callable[[str], object], what: str, then: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """A parser: ``then(text)`` when ``ok(text)`` is true (and raises nothing), else "must be <what>"."""

    def parse(text: str) -> Any:
        try:
            good = ok(text)
        except (ValueError, LookupError, OSError):
            good = False
        if not good:
            raise ValueError(f"must be {what}")
        return then(text)

    return parse


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    return _rule(lambda text: re.fullmatch(pattern, text, re.ASCII), what)


def _whole(low: int, high: int, *, ms: bool = False) -> Callable[[str], Any]:
    """ASCII digits only (``str.isdigit`` also takes ``²`` and ``١٠``); milliseconds become seconds."""
    what, read = (" of milliseconds", lambda t: int(t) / 1000) if ms else ("", int)
    return _rule(
        lambda t: re.fullmatch(r"[0-9]{1,9}", t) and low <= int(t) <= high,
        f"a whole number{what} from {low} to {high}",
        read,
    )


def _choice(what: str, choices: Mapping[str, str]) -> Callable[[str], str]:
    return _rule(lambda text: text.lower() in choices, what, lambda text: choices[text.lower()])


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(text: str) -> str:
    try:
        parts = urlsplit(text)
        host, _ = parts.hostname or "", parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; put the token in its own variable")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    if not host:
        raise ValueError("is not a valid URL")
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
        raise ValueError("must be an https URL (plain http is allowed only for loopback emulators)")
    return text.rstrip("/")


def _rate(text: str) -> RateLimit | None:
    if text.lower() in ("off", "none", "0", "unlimited"):
        return None
    m = re.fullmatch(r"([0-9]{1,9})\s*/\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*s?", text.lower(), re.ASCII)
    if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
        raise ValueError("must look like 100/10 (requests per seconds) or off")
    return RateLimit(int(m.group(1)), float(m.group(2)))


def _secret(text: str) -> str:
    """Long and uncommon enough to be a secret: see :func:`secret_problem`."""
    problem = secret_problem("", text)
    if problem:
        raise ValueError(problem.lstrip())
    return text


def _state_url(text: str) -> str:
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in ("memory", "sqlite", "redis", "rediss"):
        raise ValueError("must be memory://, sqlite:///path/to/state.db or redis://host:port/db")
    if scheme == "sqlite" and not text.partition("://")[2].lstrip("/"):
        raise ValueError("needs a file path: sqlite:///path/to/state.db")
    return text


# A token goes into an HTTP header: one line of printable ASCII, and a secret.
_token = _rule(
    lambda text: re.fullmatch(r"[\x21-\x7e]+", text),
    "one line of printable ASCII (check for stray quotes or line breaks)",
    _secret,
)


def _salesforce_version(text: str) -> str:
    version = text.lstrip("vV")
    version += ".0" if re.fullmatch(r"[0-9]{2,3}", version) else ""
    if not re.fullmatch(r"[0-9]{2,3}\.0", version) or float(version) < 46.0:
        raise ValueError("must be a version such as 67.0 (46.0 or later)")
    return version


GHL_V2_URL = "https://services.leadconnectorhq.com"
GHL_V1_URL = "https://rest.gohighlevel.com/v1"
HUBSPOT_URL = "https://api.hubapi.com"
SALESFORCE_API_VERSION = "67.0"
DEFAULT_TIMEOUT_MS = 10_000
_TIMEOUT = _whole(100, 600_000, ms=True)
_TIMEOUT_HELP = "Timeout of one HTTP request, in milliseconds (100 to 600000)."
_RATE_HELP = "Client-side limit as requests/seconds, or `off`."
_GHL_ID = _matching(r"[A-Za-z0-9_-]{1,64}", "a GoHighLevel id (letters and digits)")
_SF_ID = _matching(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", "a 15- or 18-character Salesforce id")
_HS_ID = r"[A-Za-z0-9_-]{1,100}"
_ZONE = _rule(ZoneInfo, "an IANA time zone such as America/New_York")
_FLAGS = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
_FLAG = _rule(lambda t: t.lower() in _FLAGS, "on or off", lambda t: _FLAGS[t.lower()])
_STEP = _whole(5, 240)
_CONFLICT_HELP = ("`on` checks the slot is free before booking (the vendor does not) and refuses a clash with a "
                  "ConflictError; `off` for practices that double-book on purpose.")  # fmt: skip
_STEP_HELP = "Free slots start every this many minutes from opening time (5 to 240)."
# A public key as configured: a PEM (line breaks real or written as \n) or its base64 body.
_PUBLIC_KEY = _rule(
    lambda text: len(text) >= 40 and re.fullmatch(r"[A-Za-z0-9+/=\s\\-]+", text, re.ASCII),
    "a public key: a PEM (-----BEGIN PUBLIC KEY-----...) or its base64 body",
    lambda text: text.replace("\\n", "\n").strip(),
)


class _Account:
    """``account``: which vendor account settings point at (never a secret): the base URL and
    the ids in ``_ACCOUNT_IDS``. ``version_label``: the API version as statuses show it."""

    _ACCOUNT_IDS: tuple[str, ...] = ()
    base_url: str
    api_version: str

    @property
    def account(self) -> str:
        return "|".join([self.base_url, *(str(v) for a in self._ACCOUNT_IDS if (v := getattr(self, a)))])

    @property
    def version_label(self) -> str:
        return self.api_version


# -- the settings: every field declares its variable ------------------------------------------
# fmt: off


@attrs.frozen
class GoHighLevelSettings(_Account):
    _ACCOUNT_IDS = ("location_id", "calendar_id")
    api_key: Secret = attrs.field(metadata=_var("PMS_GHL_API_KEY", _token, required=True, secret=True,
        help="API v2: the sub-account's Private Integration Token (`pit-...`). API v1: the location API key."))
    location_id: str = attrs.field(metadata=_var("PMS_GHL_LOCATION_ID", _GHL_ID, required=True,
        help="The sub-account (location) the calendar belongs to."))
    calendar_id: str = attrs.field(metadata=_var("PMS_GHL_CALENDAR_ID", _GHL_ID, required=True,
        help="The calendar bookings go into."))
    base_url: str = attrs.field(metadata=_var("PMS_GHL_BASE_URL", _url, GHL_V2_URL, computed=True,
        help="API host. A `https://rest.gohighlevel.com/v1` URL selects the legacy API v1 (and is its default)."))
    api_version: Literal["v1", "v2"] = attrs.field(metadata=_var("PMS_GHL_API_VERSION",
        _choice("v1 or v2", {"v1": "v1", "1": "v1", "v2": "v2", "2": "v2"}), "inferred from PMS_GHL_BASE_URL",
        computed=True, help="`v1` or `v2`. Unset: v1 for a `rest.gohighlevel.com/v1` URL, else v2."))
    timezone: str | None = attrs.field(metadata=_var("PMS_GHL_TIMEZONE",
        _rule(ZoneInfo, "an IANA time zone such as America/New_York"),
        help="IANA zone (e.g. `America/New_York`) for requests that carry none; API v1 needs a zone on every booking."))
    timeout: float = attrs.field(metadata=_var("PMS_GHL_TIMEOUT_MS", _TIMEOUT, "10000", help=_TIMEOUT_HELP))
    report_contact_id: str | None = attrs.field(metadata=_var("PMS_GHL_REPORT_CONTACT_ID",
        _matching(r"[A-Za-z0-9_-]{1,64}", "a GoHighLevel contact id"), help="Contact whose notes hold the "
        'performance reports. Unset: a dedicated "AI Receptionist Reports" contact is upserted once.'))
    rate_limit: RateLimit | None = attrs.field(metadata=_var("PMS_GHL_RATE_LIMIT", _rate, "100/10",
        help=f"{_RATE_HELP} The default is GoHighLevel's burst limit."))
    webhook_public_key: str | None = attrs.field(default=None, metadata=_var("PMS_GHL_WEBHOOK_PUBLIC_KEY",
        _PUBLIC_KEY, "GoHighLevel's published Ed25519 key", computed=True, help="The PUBLIC key GoHighLevel's "
        "webhooks are verified with (it signs with its private key): a PEM or its base64 body. Unset: the keys "
        "GoHighLevel publishes (Ed25519 for `x-ghl-signature`, and the legacy RSA key for `x-wh-signature`)."))


@attrs.frozen
class SalesforceSettings(_Account):
    _ACCOUNT_IDS = ("owner_id",)
    base_url: str = attrs.field(metadata=_var("PMS_SALESFORCE_BASE_URL", _url, required=True,
        help="The org's My Domain URL, e.g. `https://example.my.salesforce.com`."))
    token: Secret = attrs.field(metadata=_var("PMS_SALESFORCE_TOKEN", _token, required=True, secret=True,
        help="OAuth access token (session id)."))
    owner_id: str = attrs.field(metadata=_var("PMS_SALESFORCE_OWNER_ID", _SF_ID, required=True,
        help="The User (`005...`) or public calendar (`023...`) that owns the booking Events and report Tasks."))
    event_record_type: str | None = attrs.field(metadata=_var("PMS_SALESFORCE_EVENT_RECORD_TYPE", _SF_ID,
        help="Event `RecordTypeId`, only for orgs that define Event record types."))
    api_version: str = attrs.field(metadata=_var("PMS_SALESFORCE_API_VERSION", _salesforce_version,
        SALESFORCE_API_VERSION, help="REST API version, 46.0 or later."))
    timeout: float = attrs.field(metadata=_var("PMS_SALESFORCE_TIMEOUT_MS", _TIMEOUT, "10000", help=_TIMEOUT_HELP))
    cancel_mode: Literal["delete", "soft"] = attrs.field(metadata=_var("PMS_SALESFORCE_CANCEL_MODE",
        _choice("delete or soft", {"delete": "delete", "soft": "soft"}), "delete",
        help="`delete` removes the Event on cancel; `soft` keeps it, marked cancelled and shown as free."))
    client_id: str | None = attrs.field(metadata=_var("PMS_SALESFORCE_CLIENT_ID", help="Connected app consumer "
        "key. With the next two, lets the library refresh an expired token; set all three or none of them."))
    client_secret: Secret | None = attrs.field(metadata=_var("PMS_SALESFORCE_CLIENT_SECRET", _token, secret=True,
        help="Connected app consumer secret, for token refresh."))
    refresh_token: Secret | None = attrs.field(metadata=_var("PMS_SALESFORCE_REFRESH_TOKEN", _token, secret=True,
        help="OAuth refresh token, for token refresh."))
    rate_limit: RateLimit | None = attrs.field(metadata=_var("PMS_SALESFORCE_RATE_LIMIT", _rate, "off",
        help=f"{_RATE_HELP} Salesforce limits daily volume, not bursts."))
    timezone: str | None = attrs.field(default=None, metadata=_var("PMS_SALESFORCE_TIMEZONE", _ZONE,
        help="IANA zone of the practice; free slots come back in it. Unset: the zone of the business hours."))
    business_hours: str | None = attrs.field(default=None, metadata=_var("PMS_SALESFORCE_BUSINESS_HOURS",
        _matching(r"[^\x00-\x1f'\\]{1,80}", "a BusinessHours record name"),
        help="Name of the org's BusinessHours record with the practice's opening hours. Unset: the default record."))
    open_hours: OpenHours | None = attrs.field(default=None, metadata=_var("PMS_SALESFORCE_OPEN_HOURS", OpenHours.parse,
        help="Opening hours such as `Mon-Fri 08:00-17:00; Sat 09:00-12:00`, for orgs that keep no BusinessHours "
        "(overrides them when set)."))
    patient_record: Literal["contact", "lead", "off"] = attrs.field(default="contact", metadata=_var("PMS_SALESFORCE_PATIENT_RECORD",
        _choice("contact, lead or off", {"contact": "contact", "lead": "lead", "off": "off"}), "contact",
        help="What a booking links its Event to (`WhoId`): the patient's Contact, found by e-mail or phone or "
        "created; a Lead likewise; or `off`."))
    conflict_check: bool = attrs.field(default=True, metadata=_var("PMS_SALESFORCE_CONFLICT_CHECK", _FLAG, "on", help=_CONFLICT_HELP))
    slot_step: int = attrs.field(default=15, metadata=_var("PMS_SALESFORCE_SLOT_STEP_MINUTES", _STEP, "15", help=_STEP_HELP))

    @property
    def can_refresh(self) -> bool:
        return bool(self.client_id and self.client_secret and self.refresh_token)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/services/oauth2/token"

    @property
    def version_label(self) -> str:
        return f"v{self.api_version}"


@attrs.frozen
class HubSpotSettings(_Account):
    _ACCOUNT_IDS = ("pipeline_id",)
    token: Secret = attrs.field(metadata=_var("PMS_HUBSPOT_PRIVATE_APP_TOKEN", _token, required=True, secret=True,
        aliases=("PMS_HUBSPOT_ACCESS_TOKEN",), help="Private app token (`pat-...`) or service key. "
        "`PMS_HUBSPOT_ACCESS_TOKEN` is accepted as another name for it."))
    base_url: str = attrs.field(metadata=_var("PMS_HUBSPOT_BASE_URL", _url, HUBSPOT_URL, help="API host."))
    api_version: str = attrs.field(metadata=_var("PMS_HUBSPOT_API_VERSION", _matching(r"v3|20[0-9][0-9]-(?:0[1-9]|1[0-2])",
        "v3 or a date version such as 2026-09"), "v3", help="`v3`, or a date version such as `2026-09`."))
    pipeline_id: str = attrs.field(metadata=_var("PMS_HUBSPOT_PIPELINE_ID", _matching(_HS_ID, "a pipeline id"),
        "default", help="Deal pipeline bookings go into (internal id, not the label)."))
    stage_id: str = attrs.field(metadata=_var("PMS_HUBSPOT_STAGE_ID", _matching(_HS_ID, "a deal stage id"),
        "appointmentscheduled", help="Deal stage of a new booking."))
    cancel_stage_id: str = attrs.field(metadata=_var("PMS_HUBSPOT_CANCEL_STAGE_ID", _matching(_HS_ID,
        "a deal stage id"), "closedlost", help="Deal stage of a cancelled booking; must belong to the same pipeline."))
    report_company_id: str | None = attrs.field(metadata=_var("PMS_HUBSPOT_REPORT_COMPANY_ID", _matching(r"[0-9]{1,20}",
        "a numeric company id"), help="Numeric id of the practice's company record; report notes are attached to it."))
    reference_property: str | None = attrs.field(metadata=_var("PMS_HUBSPOT_REFERENCE_PROPERTY", _matching(
        r"[a-z][a-z0-9_]{0,99}", "a property internal name (lowercase)"), help="Internal name of a unique-value "
        "deal property (e.g. `pms_booking_id`). Turns deal creation into an upsert by booking reference: "
        "recommended in production."))
    timeout: float = attrs.field(metadata=_var("PMS_HUBSPOT_TIMEOUT_MS", _TIMEOUT, "10000", help=_TIMEOUT_HELP))
    rate_limit: RateLimit | None = attrs.field(metadata=_var("PMS_HUBSPOT_RATE_LIMIT", _rate, "100/10",
        help=f"{_RATE_HELP} Professional and Enterprise portals may use `190/10`."))
    timezone: str | None = attrs.field(default=None, metadata=_var("PMS_HUBSPOT_TIMEZONE", _ZONE,
        help="IANA zone of the practice: opening hours are in it and free slots come back in it (needed for "
        "free slots)."))
    open_hours: OpenHours = attrs.field(factory=lambda: OpenHours.parse("Mon-Fri 09:00-17:00"), metadata=_var("PMS_HUBSPOT_OPEN_HOURS", OpenHours.parse,
        "Mon-Fri 09:00-17:00", help="The practice's opening hours, e.g. `Mon-Fri 08:00-17:00; Sat 09:00-12:00`."))
    owner_id: str | None = attrs.field(default=None, metadata=_var("PMS_HUBSPOT_OWNER_ID", _matching(r"[0-9]{1,20}",
        "a numeric owner id"), help="The HubSpot user whose meetings are the practice's calendar: bookings are "
        "assigned to them, and their meetings are the busy time. Unset: every meeting counts."))
    conflict_check: bool = attrs.field(default=True, metadata=_var("PMS_HUBSPOT_CONFLICT_CHECK", _FLAG, "on", help=_CONFLICT_HELP))
    slot_step: int = attrs.field(default=15, metadata=_var("PMS_HUBSPOT_SLOT_STEP_MINUTES", _STEP, "15", help=_STEP_HELP))
    webhook_secret: Secret | None = attrs.field(default=None, metadata=_var("PMS_HUBSPOT_WEBHOOK_SECRET", _token,
        secret=True, help="The app's client secret, which HubSpot signs its webhooks with (v3, v2 and v1 signatures). "
        "Unset: webhooks from HubSpot are refused."))


# fmt: on
Settings = GoHighLevelSettings | SalesforceSettings | HubSpotSettings


def _ghl_rules(values: dict[str, Any]) -> list[str]:
    """API v1 or v2, inferred from the URL when unset; a v1 URL on rest.gohighlevel.com always
    ends in /v1 (the v1 collection's own baseUrl is the bare host; its paths start with /v1)."""
    base: str | None = values["base_url"]
    if values["api_version"] is None:
        values["api_version"] = "v1" if base and ("rest.gohighlevel.com" in base or base.endswith("/v1")) else "v2"
    v1 = values["api_version"] == "v1"
    if base is None:
        base = GHL_V1_URL if v1 else GHL_V2_URL
    elif v1 and urlsplit(base).hostname == "rest.gohighlevel.com" and not base.endswith("/v1"):
        base += "/v1"
    values["base_url"] = base
    return []


def _salesforce_rules(values: dict[str, Any]) -> list[str]:
    """The three token-refresh variables go together."""
    trio = ("client_id", "client_secret", "refresh_token")
    unset = [v.name for a, v in _fields(SalesforceSettings) if a in trio and not values[a]]
    return [f"token refresh needs all three of its variables; {', '.join(unset)} unset"] if 0 < len(unset) < 3 else []


_PROVIDERS: dict[ProviderName, tuple[type[Any], Callable[[dict[str, Any]], list[str]]]] = {
    ProviderName.GOHIGHLEVEL: (GoHighLevelSettings, _ghl_rules),
    ProviderName.SALESFORCE: (SalesforceSettings, _salesforce_rules),
    ProviderName.HUBSPOT: (HubSpotSettings, lambda values: []),
}


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
    """The whole configuration: one :class:`ProviderConfig` per provider plus the general variables."""

    providers: Mapping[ProviderName, ProviderConfig]
    # fmt: off
    default_provider: ProviderName | None = attrs.field(default=None, metadata=_var("PMS_DEFAULT_PROVIDER",
        _rule(ProviderName.parse, "one of gohighlevel (ghl), salesforce, hubspot", ProviderName.parse),
        help="Provider used when a call names none: `gohighlevel` (or `ghl`), `salesforce` or `hubspot`."))
    max_attempts: int = attrs.field(default=3, metadata=_var("PMS_MAX_ATTEMPTS", _whole(1, 10), "3",
        help="Attempts per request for failures that are safe to retry, the first included; `1` turns retries off. "
        "From 1 to 10."))
    deadline: float = attrs.field(default=30.0, metadata=_var("PMS_DEADLINE_MS", _whole(1_000, 600_000, ms=True),
        "30000", help="Time budget of one whole operation (a booking may take several requests), retries and "
        "waits included. From 1000 to 600000."))
    problems: tuple[str, ...] = ()
    server_token: Secret | None = attrs.field(default=None, metadata=_var("PMS_SERVER_TOKEN", _secret, secret=True,
        help="Bearer token the optional [HTTP endpoints](http-api.md#authentication) require. Unset: no "
        "authentication (bind to loopback only). The server reads it from the same sources as every other variable "
        "(`.env` or `--env-file`, then the environment); it does not affect which providers are enabled."))
    state_url: Secret = attrs.field(default=Secret("memory://", name="PMS_STATE_URL"), metadata=_var("PMS_STATE_URL",
        _state_url, "memory://", secret=True, help="Where booking memory, rate budgets and rotated tokens are kept, "
        "shared by every process that names the same store: `memory://` (this process), `sqlite:///path/to/state.db` "
        "(every process on one host) or `redis://host:6379/0` (a fleet; `rediss://` for TLS; needs the `[redis]` "
        "extra). Add `?namespace=name` to keep practices apart in one store. See [deployment](deployment.md)."))
    state_remember: float = attrs.field(default=72 * 3600.0, metadata=_var("PMS_STATE_REMEMBER_HOURS",
        _rule(lambda t: re.fullmatch(r"[0-9]{1,5}", t) and 1 <= int(t) <= 2160, "a whole number of hours from 1 to 2160",
              lambda t: int(t) * 3600.0), "72",
        help="How long a finished booking (and a booking whose outcome is unknown) is remembered by reference: "
        "booking the same reference again within this time returns the first booking. From 1 to 2160."))
    # fmt: on

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


#: Every variable, in the order of the docs tables: the general ones, then each provider's.
VARIABLES: tuple[Variable, ...] = tuple(
    attrs.evolve(var, provider=provider)
    for provider, cls in [(None, PMSConfig), *((p, c) for p, (c, _) in _PROVIDERS.items())]
    for _, var in _fields(cls)
)


# -- the one loader ---------------------------------------------------------------------------


def _read(cls: type, env: Mapping[str, str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Every variable ``cls`` declares, all at once: the values (a bad one left at its default),
    the names of the missing required ones, and the problems."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    problems: list[str] = []
    for attr, var in _fields(cls):
        text = next(filter(None, (env.get(n, "").strip() for n in (var.name, *var.aliases))), None)
        if text is None and var.required:
            missing.append(var.name)
        fallback = None if var.computed else var.default
        try:
            values[attr] = var.parse(given) if (given := text or fallback) else None
        except ValueError as exc:
            problems.append(f"{var.name} {exc}")
            values[attr] = var.parse(fallback) if fallback else None
    return values, missing, problems


def _build(cls: type[Any], values: dict[str, Any]) -> Any:
    secrets = {a: Secret(values[a], name=v.name) for a, v in _fields(cls) if v.secret and values[a] is not None}
    return cls(**{**values, **secrets})


def _load_provider(name: ProviderName, env: Mapping[str, str]) -> ProviderConfig:
    cls, rules = _PROVIDERS[name]
    values, missing, problems = _read(cls, env)
    problems += rules(values)
    if missing or problems:
        return ProviderConfig(name, None, tuple(missing), tuple(problems))
    return ProviderConfig(name, _build(cls, values))


def load_settings(cls: type[T], environ: Mapping[str, str]) -> T:
    """One provider's settings of type ``cls`` from ``environ``, through the variables it declares;
    :class:`ConfigurationError` naming every missing or invalid one."""
    values, missing, problems = _read(cls, environ)
    if missing or problems:
        detail = (["missing " + ", ".join(missing)] if missing else []) + problems
        raise ConfigurationError(f"{cls.__name__}: {'; '.join(detail)}.", missing=missing, problems=problems)
    settings: T = _build(cls, values)
    return settings


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``PMS_*`` values of a ``.env`` file (python-dotenv), without touching ``os.environ``."""
    from dotenv import dotenv_values

    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
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


def read_variables(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | EllipsisType | None = ...
) -> dict[str, str]:
    """The ``PMS_*`` variables from the sources :func:`load_config` reads, by its rules, later winning
    (the HTTP server reads ``PMS_SERVER_TOKEN`` this way)."""
    if environ is not None and not isinstance(environ, Mapping):
        raise ConfigurationError(
            f"environ must be a mapping of variable names to strings (or None), not {type(environ).__name__}.",
            problems=["environ must be a mapping"],
        )
    for key, value in (environ or {}).items():
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
    if env_file is ...:
        env_file = ".env" if environ is None and Path(".env").is_file() else None
    values = read_env_file(env_file) if env_file is not None else {}
    source = os.environ if environ is None else environ
    values.update({k: v for k, v in source.items() if k.startswith("PMS_")})
    return values


def load_config(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | EllipsisType | None = ...
) -> PMSConfig:
    """Read the configuration.

    * ``environ=None`` (the default): the process environment over ``./.env`` when it exists.
    * ``environ=<mapping>``: that mapping alone (plus ``env_file`` under it, if you pass one).
    * ``env_file=None``: no file; ``env_file=<path>``: that file, which must exist.
    """
    env = read_variables(environ, env_file)
    general, _, problems = _read(PMSConfig, env)
    providers = {name: _load_provider(name, env) for name in _PROVIDERS}
    config: PMSConfig = _build(PMSConfig, {**general, "providers": providers, "problems": tuple(problems)})
    return config


# -- generated from the declarations ----------------------------------------------------------


def _groups() -> Iterator[tuple[str, ProviderName | None, list[Variable]]]:
    for provider in (None, *_PROVIDERS):
        yield provider.label if provider else "General", provider, [v for v in VARIABLES if v.provider == provider]


def _literal_default(var: Variable) -> str | None:
    """The default when it is a literal value (not a description such as "inferred from ...")."""
    return var.default if var.default and " " not in var.default else None


def variables_markdown() -> str:
    """The "Every variable" tables of docs/configuration.md, generated from the declarations."""
    out = []
    for title, provider, variables in _groups():
        out.append(f"### {title}\n\n")
        if provider is not None:
            out.append(f"Details: [{title}](providers/{provider.value}.md).\n\n")
        out.append("| Variable | Required | Default | Secret | Meaning |\n|---|---|---|---|---|\n")
        for v in variables:
            default = f"`{v.default}`" if _literal_default(v) else v.default or "—"
            yes = {True: "yes", False: "no"}
            out.append(f"| `{v.name}` | {yes[v.required]} | {default} | {yes[v.secret]} | {v.description} |\n")
        out.append("\n")
    return "".join(out)


def env_template() -> str:
    """The ``.env.example`` template: required variables to fill in, the others commented out."""
    lines = [
        "# Every PMS_* variable of pms-integration (explained in docs/configuration.md), generated by",
        "# `python -m pms_integration.config`. Copy it to .env (never commit the copy) and set the",
        "# variables of the providers you use: a provider is enabled when its required ones are set.",
    ]
    for title, _, variables in _groups():
        lines += ["", f"# ==== {title}"]
        for v in variables:
            meaning = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", v.description).replace("`", "")
            lines.append(f"# {meaning}{' (secret)' if v.secret else ''}")
            lines.append(f"{v.name}=" if v.required else f"# {v.name}={_literal_default(v) or ''}")
    return "\n".join(lines) + "\n"


_BEGIN = "<!-- generated by `python -m pms_integration.config` from the declarations: do not edit here -->"
_END = "<!-- end of the generated tables -->"


def _page_with_variables(page: str) -> str:
    """``page`` with the text between its markers replaced by :func:`variables_markdown`."""
    head, begin, rest = page.partition(_BEGIN)
    _, end, tail = rest.partition(_END)
    if not (begin and end):
        raise ValueError("the page has no markers for the generated tables")
    return f"{head}{_BEGIN}\n\n{variables_markdown()}{_END}{tail}"
