"""Verified webhooks: a vendor's signed request in, :class:`~pms_integration.changes.AppointmentChange` events out.

:func:`parse` (on the default client; :meth:`PMSClient.parse_webhook` likewise) checks the
vendor's signature, its timestamp window and the event ids already received (kept in the state
store, ``PMS_STATE_URL``), then asks the adapter what each event says about an appointment and
classifies it. :func:`on_change` registers callbacks; the HTTP app's ``POST
/api/integrations/pms/{provider}/webhook`` runs them after it has answered the vendor.
Guide: docs/webhooks.md.

Signatures (sources in docs/webhooks.md):

* HubSpot v3: ``X-HubSpot-Signature-v3`` = base64 of HMAC-SHA256 keyed with the app's client
  secret over ``method + URI + body + timestamp`` (``X-HubSpot-Request-Timestamp``, epoch ms,
  at most five minutes away); v2 and v1 (``X-HubSpot-Signature`` with
  ``X-HubSpot-Signature-Version``): hex SHA-256 of ``secret + method + URI + body`` and of
  ``secret + body``. Standard library only.
* GoHighLevel: ``x-ghl-signature`` = base64 Ed25519 signature of the raw body; legacy
  ``x-wh-signature`` = base64 RSA PKCS#1 v1.5 SHA-256 signature of the raw body, both checked
  with GoHighLevel's *public* keys (it signs with its private ones); the body's ``timestamp``
  must be within five minutes. Needs ``cryptography`` (the ``[webhooks]`` extra).

Every refusal is a :class:`~pms_integration.errors.WebhookError` whose message is generic; why
it was refused is logged at DEBUG on ``pms_integration.webhooks`` (never a secret or signature).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .changes import SnapshotView, classify, commit_snapshots
from .errors import (
    ConfigurationError,
    PMSError,
    UnsupportedOperationError,
    ValidationError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookSignatureError,
    WebhookStaleError,
)
from .models import ProviderName
from .provider import Capability

if TYPE_CHECKING:
    from .changes import AppointmentChange, Observed
    from .client import PMSClient
    from .state import Claim, StateStore

__all__ = [
    "parse",
    "parse_for",
    "WebhookDelivery",
    "on_change",
    "remove_callback",
    "dispatch",
    "hubspot_signature",
    "hubspot_signed_uri",
    "load_public_key",
    "GHL_ED25519_PUBLIC_KEY",
    "GHL_RSA_PUBLIC_KEY",
    "WINDOW_SECONDS",
    "WEBHOOK_PROVIDERS",
]

log = logging.getLogger("pms_integration.webhooks")

#: How far a signed timestamp may be from now (both vendors document five minutes).
WINDOW_SECONDS = 300.0
#: The vendors that push signed webhooks (Salesforce has none: use the change feed).
WEBHOOK_PROVIDERS = (ProviderName.GOHIGHLEVEL, ProviderName.HUBSPOT)
# How long one delivery may hold its event ids while the adapter reads the appointments.
_LEASE_SECONDS = 120.0

#: GoHighLevel's published Ed25519 key for ``x-ghl-signature`` (its Webhook Integration Guide,
#: https://marketplace.gohighlevel.com/docs/webhook/WebhookIntegrationGuide).
GHL_ED25519_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----"""

#: GoHighLevel's published RSA key for the legacy ``x-wh-signature`` (GoHighLevel/highlevel-api-docs
#: docs/oauth/WebhookAuthentication.md, "Webhook Authentication Guide").
GHL_RSA_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----"""

ChangeCallback = Callable[["AppointmentChange"], object]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# refusals: a generic message out, the reason at DEBUG


def _signature_error(provider: ProviderName, why: str) -> WebhookSignatureError:
    log.debug("%s webhook refused: %s", provider.value, why)
    return WebhookSignatureError("Webhook signature not valid.")


def _stale_error(provider: ProviderName, why: str) -> WebhookStaleError:
    log.debug("%s webhook refused: %s", provider.value, why)
    return WebhookStaleError("Webhook timestamp outside the accepted window.")


def _payload_error(provider: ProviderName, why: str) -> WebhookPayloadError:
    log.debug("%s webhook refused: %s", provider.value, why)
    return WebhookPayloadError("Webhook body not readable.")


# ---------------------------------------------------------------------------------------------
# inputs


def _header_map(headers: Headers) -> dict[str, str]:
    """Header names lower-cased; a repeated header keeps its first value."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    try:
        for name, value in items:
            out.setdefault(str(name).lower(), str(value))
    except (TypeError, ValueError):
        raise ValidationError.single("headers", "must be a mapping of header names to values") from None
    return out


def _body_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise ValidationError.single("body", "must be the raw request body (bytes or str)")


def _check_inputs(method: object, url: object) -> None:
    problems = []
    if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]{1,16}", method):
        problems.append(("method", "must be the request's HTTP method, such as POST"))
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        problems.append(("url", "must be the full URL the vendor called (https://host/path?query)"))
    if problems:
        raise ValidationError(problems)


# ---------------------------------------------------------------------------------------------
# HubSpot

# epoch milliseconds as text: ASCII digits, at most 16 (year 2286 is 13)
_EPOCH_DIGITS = re.compile(r"[0-9]{1,16}")
# larger than any epoch seconds or milliseconds of a real delivery (about year 33658 in ms)
_EPOCH_LIMIT = 10**15

# The percent-escapes HubSpot's v3 validation page says to decode in the URI before hashing
# (only these: a general unquote would change other escapes the vendor signed as they were).
_HUBSPOT_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODE), re.IGNORECASE)


def hubspot_signed_uri(url: str) -> str:
    """The URI as HubSpot's v3 signature covers it: the full URL with the listed escapes decoded."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODE[m.group(0).upper()], url)


def hubspot_signature(
    version: str, secret: str, *, method: str = "POST", uri: str = "", body: bytes | str = b"", timestamp: str = ""
) -> str:
    """HubSpot's signature of a request: ``v3`` (base64 HMAC-SHA256 of method, URI, body and
    timestamp), ``v2`` (hex SHA-256 of secret, method, URI, body) or ``v1`` (hex SHA-256 of secret
    and body). ``uri`` is used as given (for v3, pass it through :func:`hubspot_signed_uri`)."""
    raw = _body_bytes(body)
    if version == "v3":
        message = method.encode("utf-8") + uri.encode("utf-8") + raw + timestamp.encode("utf-8")
        digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")
    if version == "v2":
        return hashlib.sha256(secret.encode("utf-8") + method.encode("utf-8") + uri.encode("utf-8") + raw).hexdigest()
    if version == "v1":
        return hashlib.sha256(secret.encode("utf-8") + raw).hexdigest()
    raise ValidationError.single("version", "must be v1, v2 or v3")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected.encode("utf-8"))


def _verify_hubspot(secret: str, method: str, url: str, headers: dict[str, str], body: bytes, now: float) -> None:
    name = ProviderName.HUBSPOT
    v3 = headers.get("x-hubspot-signature-v3")
    if v3:
        stamp = headers.get("x-hubspot-request-timestamp", "").strip()
        if not stamp:
            raise _signature_error(name, "v3 signature without an X-HubSpot-Request-Timestamp")
        # ASCII digits of a plausible length only, before any arithmetic (a huge or non-ASCII
        # value would overflow or not convert): anything else cannot be inside the window
        if not _EPOCH_DIGITS.fullmatch(stamp):
            raise _stale_error(name, "X-HubSpot-Request-Timestamp is not epoch milliseconds")
        if abs(now - int(stamp) / 1000) > WINDOW_SECONDS:
            raise _stale_error(name, f"X-HubSpot-Request-Timestamp is {now - int(stamp) / 1000:.0f} s from now")
        expected = hubspot_signature(
            "v3", secret, method=method.upper(), uri=hubspot_signed_uri(url), body=body, timestamp=stamp
        )
        if not _same(v3, expected):
            raise _signature_error(name, "v3 signature does not match (body, URL or secret differ)")
        return
    older = headers.get("x-hubspot-signature")
    if not older:
        raise _signature_error(name, "no X-HubSpot-Signature-v3 or X-HubSpot-Signature header")
    version = headers.get("x-hubspot-signature-version", "v1").strip().lower() or "v1"
    if version not in ("v1", "v2"):
        raise _signature_error(name, "unknown X-HubSpot-Signature-Version")
    expected = hubspot_signature(version, secret, method=method.upper(), uri=url, body=body)
    if not _same(older.lower(), expected):
        raise _signature_error(name, f"{version} signature does not match (body, URL or secret differ)")


# ---------------------------------------------------------------------------------------------
# GoHighLevel


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError as exc:
        raise ConfigurationError(
            "Verifying GoHighLevel webhooks needs the cryptography package: pip install cryptography "
            "(the project's [webhooks] extra).",
            problems=["cryptography is not installed"],
        ) from exc
    return serialization


@functools.lru_cache(maxsize=16)
def load_public_key(text: str) -> Any:
    """A public key from a PEM, its base64 body (DER SubjectPublicKeyInfo), or a raw 32-byte
    Ed25519 key in base64 or hex: a ``cryptography`` Ed25519 or RSA public key object."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    text = text.replace("\\n", "\n").strip()
    try:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            compact = "".join(text.split())
            raw = bytes.fromhex(compact) if re.fullmatch(r"[0-9a-fA-F]{64}", compact) else base64.b64decode(compact)
            if len(raw) == 32:
                key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            else:
                key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise ConfigurationError(
            "PMS_GHL_WEBHOOK_PUBLIC_KEY is not a readable public key.", problems=["PMS_GHL_WEBHOOK_PUBLIC_KEY"]
        ) from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        raise ConfigurationError(
            "PMS_GHL_WEBHOOK_PUBLIC_KEY must be an Ed25519 or RSA public key.", problems=["PMS_GHL_WEBHOOK_PUBLIC_KEY"]
        )
    return key


def _ghl_keys(configured: str | None) -> tuple[Any, Any]:
    """(Ed25519 key, RSA key): a configured key replaces the published one of its kind."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed_key, rsa_key = load_public_key(GHL_ED25519_PUBLIC_KEY), load_public_key(GHL_RSA_PUBLIC_KEY)
    if configured:
        key = load_public_key(configured)
        if isinstance(key, ed25519.Ed25519PublicKey):
            ed_key = key
        else:
            rsa_key = key
    return ed_key, rsa_key


def _signature_bytes(value: str | None) -> bytes | None:
    if value is None or not value.strip() or value.strip().upper() == "N/A":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _verify_gohighlevel(configured_key: str | None, headers: dict[str, str], body: bytes) -> None:
    _crypto()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    name = ProviderName.GOHIGHLEVEL
    ed_key, rsa_key = _ghl_keys(configured_key)
    ed_sig = _signature_bytes(headers.get("x-ghl-signature"))
    rsa_sig = _signature_bytes(headers.get("x-wh-signature"))
    try:
        if ed_sig is not None:  # preferred; no fall back to the legacy header when it is present
            if len(ed_sig) != 64:
                raise _signature_error(name, "x-ghl-signature is not a 64-byte Ed25519 signature")
            ed_key.verify(ed_sig, body)
        elif rsa_sig is not None:
            if not rsa_sig:
                raise _signature_error(name, "x-wh-signature is not base64")
            rsa_key.verify(rsa_sig, body, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise _signature_error(name, "no x-ghl-signature or x-wh-signature header")
    except InvalidSignature:
        which = "x-ghl-signature (Ed25519)" if ed_sig is not None else "x-wh-signature (RSA)"
        raise _signature_error(name, f"{which} does not match the body or the public key") from None


def _ghl_timestamp(value: object) -> float | None:
    """Seconds since the epoch of a GoHighLevel body's ``timestamp`` (ISO text or epoch ms):
    None when unreadable, infinity when far outside any window (a huge number). Bounded: no
    conversion of a long digit string, no float overflow."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > _EPOCH_LIMIT:
            return math.inf
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if not math.isfinite(value) or abs(value) > _EPOCH_LIMIT:
            return math.inf
        return value / 1000 if value > 1e11 else value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return math.inf if len(text) > 16 else _ghl_timestamp(int(text))
        if len(text) > 64:
            return None
        try:
            stamp = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=_dt.timezone.utc)
        try:
            return stamp.timestamp()
        except (OverflowError, ValueError, OSError):
            return math.inf
    return None


# ---------------------------------------------------------------------------------------------
# the events in a body


def _json(name: ProviderName, body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _payload_error(name, "the body is not JSON") from None


@attrs.frozen
class _Event:
    event_id: str
    payload: Any


def _events(name: ProviderName, data: Any, body: bytes, now: float) -> list[_Event]:
    """Each event of a verified body with its id (HubSpot ``eventId``; GoHighLevel ``webhookId``,
    or a digest of the body when it carries none)."""
    if name is ProviderName.HUBSPOT:
        items = [data] if isinstance(data, Mapping) else data
        if not isinstance(items, list) or not items:
            raise _payload_error(name, "the body is not a JSON array of events")
        events = []
        for item in items:
            event_id = item.get("eventId") if isinstance(item, Mapping) else None
            if isinstance(event_id, bool) or not isinstance(event_id, (int, str)) or str(event_id) == "":
                raise _payload_error(name, "an event has no eventId")
            events.append(_Event(str(event_id), item))
        return events
    if not isinstance(data, Mapping):
        raise _payload_error(name, "the body is not a JSON object")
    if "timestamp" in data:
        stamp = _ghl_timestamp(data["timestamp"])
        if stamp is None:
            raise _payload_error(name, "the body's timestamp is not readable")
        if abs(now - stamp) > WINDOW_SECONDS:
            raise _stale_error(name, f"the body's timestamp is {now - stamp:.0f} s from now")
    webhook_id = data.get("webhookId")
    if isinstance(webhook_id, str) and webhook_id.strip():
        return [_Event(webhook_id.strip(), data)]
    return [_Event("sha256:" + hashlib.sha256(body).hexdigest(), data)]


# ---------------------------------------------------------------------------------------------
# remembering event ids (the state store)


def _seen_key(name: ProviderName, account: str, event_id: str) -> str:
    digest = hashlib.sha256(account.encode("utf-8")).hexdigest()[:16]
    return f"webhook:{name.value}:{digest}:{event_id}"


def _claim_new(store: StateStore, keys: Sequence[str], remember: float) -> list[Claim | None]:
    """A claim per key: None for an event received before (or being handled by another delivery)."""
    claims: list[Claim | None] = []
    try:
        for key in keys:
            claim = store.claim(key, _LEASE_SECONDS, remember)
            claims.append(claim if claim.held else None)
    except BaseException:
        _release(store, [c for c in claims if c is not None], remember)
        raise
    return claims


def _settle(store: StateStore, claims: Iterable[Claim], remember: float) -> None:
    for claim in claims:
        store.settle(claim, "received", False, remember)


def _release(store: StateStore, claims: Iterable[Claim], remember: float) -> None:
    for claim in claims:
        try:
            store.settle(claim, None, False, remember)
        except PMSError:
            log.debug("could not release a webhook event's claim; it expires with its lease")


# ---------------------------------------------------------------------------------------------
# parse


class WebhookDelivery(list["AppointmentChange"]):
    """The changes one verified webhook request reports (a list), not yet committed.

    Delivery is at least once and de-duplicated: :func:`parse` only *claims* the event ids (for
    a short lease, so a concurrent duplicate delivery is refused as a replay) and does not move
    the per-appointment snapshots. Call :meth:`commit` once you have handled the changes (or use
    ``with parse(...) as changes:``, which commits when the block ends normally and
    :meth:`release`-s when it raises): then the event ids count as received (a later replay is
    refused) and the snapshots advance (the change feed will not report these changes again).
    If the process dies before the commit, nothing was recorded: the next poll of the change
    feed reports the change, and the vendor's retry is accepted once the lease has expired.
    """

    def __init__(
        self,
        changes: Iterable[AppointmentChange],
        *,
        store: StateStore,
        claims: Sequence[Claim],
        snapshots: dict[str, tuple[str, float | None]],
        remember: float,
    ) -> None:
        super().__init__(changes)
        self._store = store
        self._claims = list(claims)
        self._snapshots = dict(snapshots)
        self._remember = remember
        self._done = False
        self._lock = threading.Lock()

    @property
    def committed(self) -> bool:
        """True once :meth:`commit` or :meth:`release` has run."""
        return self._done

    def commit(self) -> None:
        """The changes were handled: record the snapshots and the event ids as received.
        Idempotent; raises :class:`~pms_integration.errors.StateStoreError` when the store fails
        (nothing is lost: the feed or the vendor's retry brings the change again)."""
        with self._lock:
            if self._done:
                return
            commit_snapshots(self._store, self._snapshots)
            _settle(self._store, self._claims, self._remember)
            self._done = True

    def release(self) -> None:
        """The changes were not handled: give the event ids back at once (the vendor's retry is
        accepted) and record nothing. Idempotent; never raises."""
        with self._lock:
            if self._done:
                return
            self._done = True
        _release(self._store, self._claims, self._remember)

    def __enter__(self) -> WebhookDelivery:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.release()


def parse_for(
    client: PMSClient,
    provider: str | ProviderName,
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes | str,
    now: float | None = None,
) -> WebhookDelivery:
    """:func:`parse` on ``client`` (its configuration, adapters and state store). ``now``: the
    time to check timestamps against (seconds since the epoch; tests)."""
    name = client.resolve(provider)
    _check_inputs(method, url)
    header_map, raw = _header_map(headers), _body_bytes(body)
    if name not in WEBHOOK_PROVIDERS:
        raise UnsupportedOperationError(
            f"{name.label} sends no signed webhooks the library can verify; use the change feed (changes())."
        )
    adapter = client._adapter_for(name, Capability.WEBHOOKS)
    settings: Any = client.config.get(name).settings
    clock = time.time() if now is None else now
    if name is ProviderName.HUBSPOT:
        secret = settings.webhook_secret
        if secret is None:
            raise ConfigurationError(
                "HubSpot webhooks need PMS_HUBSPOT_WEBHOOK_SECRET (the app's client secret).",
                missing=["PMS_HUBSPOT_WEBHOOK_SECRET"],
            )
        _verify_hubspot(secret.reveal(), method, url, header_map, raw, clock)
    else:
        _verify_gohighlevel(settings.webhook_public_key, header_map, raw)
    events = _events(name, _json(name, raw), raw, clock)

    remember = client.config.state_remember
    keys = [_seen_key(name, adapter.account, e.event_id) for e in events]
    claims = _claim_new(client.state, keys, remember)
    fresh = [e for e, c in zip(events, claims, strict=True) if c is not None]
    held = [c for c in claims if c is not None]
    if not fresh:
        log.debug("%s webhook: every event id was received before", name.value)
        raise WebhookReplayError("Webhook events already received.")
    try:
        payload: Any = [e.payload for e in fresh] if name is ProviderName.HUBSPOT else fresh[0].payload
        observe: Callable[[Any], list[Observed]] = adapter.observe_webhook  # type: ignore[attr-defined]
        observed = client._run(name, "webhook", False, lambda: observe(payload), None)
        # classified against the snapshots without writing them: they move (and the event ids
        # count as received) only when the delivery is committed, after its callbacks ran
        view = SnapshotView(client.state)
        changes = []
        for item in observed:
            change = classify(view, item, provider=name, account=adapter.account, source="webhook", ttl=remember)
            if change is not None:
                changes.append(change)
    except BaseException:
        _release(client.state, held, remember)
        raise
    return WebhookDelivery(changes, store=client.state, claims=held, snapshots=view.writes, remember=remember)


def parse(
    provider: str | ProviderName, *, method: str, url: str, headers: Headers, body: bytes | str
) -> WebhookDelivery:
    """Verify a vendor's webhook request and return the changes it reports, on the default client.

    ``method``, ``url`` (the full URL the vendor called, query included), ``headers`` and the raw
    ``body`` exactly as received. Raises :class:`~pms_integration.errors.WebhookSignatureError`,
    :class:`~pms_integration.errors.WebhookStaleError`, :class:`~pms_integration.errors.WebhookReplayError`
    (every event id was received before) or :class:`~pms_integration.errors.WebhookPayloadError`;
    their messages are generic, the reason is logged at DEBUG.

    The result is a :class:`WebhookDelivery` (a list of the changes): call its ``commit()`` once
    you handled them, or use it as a context manager (``with parse(...) as changes:``); until
    then the changes are not recorded, so a crash loses none (docs/webhooks.md).
    """
    from . import _default

    return parse_for(_default.get_client(), provider, method=method, url=url, headers=headers, body=body)


# ---------------------------------------------------------------------------------------------
# callbacks

_lock = threading.Lock()
_everywhere: list[ChangeCallback] = []
_per_client: weakref.WeakKeyDictionary[PMSClient, list[ChangeCallback]] = weakref.WeakKeyDictionary()


def on_change(callback: ChangeCallback, *, client: PMSClient | None = None) -> ChangeCallback:
    """Call ``callback(change)`` for each change a webhook delivers: every client's (``client``
    None), or only ``client``'s. Returns ``callback``, so it works as a decorator."""
    if not callable(callback):
        raise ValidationError.single("callback", "must be callable, taking one AppointmentChange")
    with _lock:
        if client is None:
            _everywhere.append(callback)
        else:
            _per_client.setdefault(client, []).append(callback)
    return callback


def remove_callback(callback: ChangeCallback, *, client: PMSClient | None = None) -> bool:
    """Forget a callback registered with :func:`on_change`; False when it was not registered."""
    with _lock:
        registry = _everywhere if client is None else _per_client.get(client, [])
        if callback in registry:
            registry.remove(callback)
            return True
    return False


def dispatch(changes: Iterable[AppointmentChange], *, client: PMSClient | None = None) -> int:
    """Run the callbacks for ``changes`` (``client``'s and every client's), in order; a callback
    that raises is logged and the others still run. Returns how many calls succeeded."""
    with _lock:
        callbacks = list(_everywhere) + (list(_per_client.get(client, [])) if client is not None else [])
    done = 0
    for change in changes:
        for callback in callbacks:
            try:
                callback(change)
                done += 1
            except Exception:
                log.exception(
                    "a change callback (%s) failed on %s", getattr(callback, "__name__", "callback"), repr(change)
                )
    return done
