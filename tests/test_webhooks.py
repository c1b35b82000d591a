"""Verified webhooks (issue 18): signatures, refusals, replay, the HTTP endpoint, sandbox delivery.

The HubSpot vectors are the vendor's own, recomputed here:

* v1 and v2: HubSpot's "Validating requests" FAQ pages,
  https://developers.hubspot.com/docs/faq/v1-request-validation and
  https://developers.hubspot.com/docs/faq/v2-request-validation (secret
  ``yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy``);
* v1, v2 and v3: HubSpot's official Python SDK's tests (HubSpot/hubspot-api-python,
  ``tests/spec/utils/test_signature.py``), same secret; the v3 value has timestamp 1693657560000.

GoHighLevel publishes no signed example, so its tests sign with key pairs generated here
(Ed25519 for ``x-ghl-signature``, RSA for the legacy ``x-wh-signature``), configured through
``PMS_GHL_WEBHOOK_PUBLIC_KEY``; the published keys are checked to load.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("cryptography")
pytest.importorskip("starlette")

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

import pms_integration as pms
from pms_integration import PMSClient, ProviderName, webhooks
from pms_integration import errors as E
from pms_integration.changes import AppointmentChange, ChangeKind, Observed
from pms_integration.models import Appointment, AppointmentStatus
from pms_integration.sandbox import Sandbox
from pms_integration.server import PREFIX, WebhookQueue, create_app

from .conftest import CANARY
from .test_server import Served

DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_SECRET = "hs-client-secret-7f3c2a91-5d4e-4b8a-9c10-2e6f8a7b3d55"
HS_URL = "https://clinic.example.com/api/integrations/pms/hubspot/webhook"
GHL_URL = "https://clinic.example.com/api/integrations/pms/gohighlevel/webhook"
UTC = dt.timezone.utc


# ---------------------------------------------------------------------------------------------
# HubSpot: the documented vectors


def test_hubspot_v1_vector_from_the_v1_validation_faq() -> None:
    body = (
        '[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":'
        '"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    expected = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    assert webhooks.hubspot_signature("v1", DOC_SECRET, body=body) == expected


def test_hubspot_v2_vector_from_the_v2_validation_faq() -> None:
    got = webhooks.hubspot_signature("v2", DOC_SECRET, method="GET", uri="https://www.example.com/webhook_uri")
    assert got == "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("v1", "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"),
        ("v2", "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"),
        ("v3", "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="),
    ],
)
def test_hubspot_vectors_from_the_official_sdk_tests(version: str, expected: str) -> None:
    got = webhooks.hubspot_signature(
        version,
        DOC_SECRET,
        method="POST",
        uri="https://www.example.com/webhook_uri",
        body="{'example_field':'example_value'}",
        timestamp="1693657560000",
    )
    assert got == expected


def test_hubspot_v3_vector_verifies_at_its_own_time_and_is_stale_later() -> None:
    """The SDK's v3 vector through the whole check: valid at its timestamp, stale five minutes on."""
    headers = {"X-HubSpot-Signature-V3": "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=",
               "X-HubSpot-Request-Timestamp": "1693657560000"}  # fmt: skip
    body, url = b"{'example_field':'example_value'}", "https://www.example.com/webhook_uri"
    lower = {k.lower(): v for k, v in headers.items()}
    webhooks._verify_hubspot(DOC_SECRET, "POST", url, lower, body, 1693657560.0 + 299)
    with pytest.raises(E.WebhookStaleError):
        webhooks._verify_hubspot(DOC_SECRET, "POST", url, lower, body, 1693657560.0 + 301)
    with pytest.raises(E.WebhookSignatureError):
        webhooks._verify_hubspot(DOC_SECRET, "POST", url, lower, body + b" ", 1693657560.0)


def test_hubspot_v3_uri_decodes_only_the_listed_escapes() -> None:
    url = "https://h.example/hook%3Fa%3Db?x=%2F%40%21%24%27%28%29%2a%2C%3B&y=%20%25"
    assert webhooks.hubspot_signed_uri(url) == "https://h.example/hook?a%3Db?x=/@!$'()*,;&y=%20%25"


# ---------------------------------------------------------------------------------------------
# clients with a stub adapter hook (no vendor involved)


def _appointment(provider: ProviderName, appointment_id: str, *, start_hour: int = 9,
                 status: AppointmentStatus = AppointmentStatus.BOOKED, reference: str | None = None) -> Appointment:  # fmt: skip
    start = dt.datetime(2031, 3, 5, start_hour, tzinfo=UTC)
    return Appointment(provider, appointment_id, status, start, start + dt.timedelta(minutes=30), reference=reference)


class Stub:
    """Stands in for an adapter's observe_webhook: one Observed per event, counted."""

    def __init__(self, provider: ProviderName) -> None:
        self.provider = provider
        self.calls: list[Any] = []

    def __call__(self, payload: Any) -> list[Observed]:
        self.calls.append(payload)
        events = payload if isinstance(payload, list) else [payload]
        out = []
        for event in events:
            if self.provider is ProviderName.HUBSPOT:
                appointment_id, version = str(event["objectId"]), str(event["eventId"])
            else:
                appointment_id, version = str(event["appointment"]["id"]), str(event["webhookId"])
            hour = int(event.get("hour", 9))
            out.append(Observed(appointment_id, _appointment(self.provider, appointment_id, start_hour=hour),
                                dt.datetime.now(UTC), version))  # fmt: skip
        return out


def _ghl_ed_key() -> tuple[ed25519.Ed25519PrivateKey, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode("ascii")


ED_KEY, ED_PUBLIC_PEM = _ghl_ed_key()


def _environ(**extra: str) -> dict[str, str]:
    return {
        "PMS_HUBSPOT_PRIVATE_APP_TOKEN": CANARY["PMS_HUBSPOT_PRIVATE_APP_TOKEN"],
        "PMS_HUBSPOT_WEBHOOK_SECRET": HS_SECRET,
        "PMS_GHL_API_KEY": CANARY["PMS_GHL_API_KEY"],
        "PMS_GHL_LOCATION_ID": "loc123",
        "PMS_GHL_CALENDAR_ID": "cal123",
        "PMS_GHL_WEBHOOK_PUBLIC_KEY": ED_PUBLIC_PEM,
        **extra,
    }


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    """Clients on one SQLite state file (a restart is a second client on the same file), each
    with stubbed observe_webhook hooks (``client.stubs[provider]``)."""
    made: list[PMSClient] = []

    def make(**extra: str) -> PMSClient:
        client = PMSClient(environ=_environ(**extra), env_file=None, state=f"sqlite:///{tmp_path / 'state.db'}")
        client.stubs = {}  # type: ignore[attr-defined]
        for name in (ProviderName.HUBSPOT, ProviderName.GOHIGHLEVEL):
            stub = Stub(name)
            client.adapter(name).observe_webhook = stub  # type: ignore[attr-defined]
            client.stubs[name] = stub  # type: ignore[attr-defined]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _hubspot_delivery(events: list[dict[str, Any]], *, secret: str = HS_SECRET, url: str = HS_URL,
                      stamp_ms: int | None = None) -> tuple[dict[str, str], bytes]:  # fmt: skip
    body = json.dumps(events).encode()
    stamp = str(int(time.time() * 1000) if stamp_ms is None else stamp_ms)
    sig = webhooks.hubspot_signature("v3", secret, method="POST", uri=webhooks.hubspot_signed_uri(url), body=body,
                                     timestamp=stamp)  # fmt: skip
    return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}, body


def _hs_event(object_id: int = 501, **extra: Any) -> dict[str, Any]:
    return {"eventId": extra.pop("eventId", uuid.uuid4().int % 10**12), "subscriptionType": "object.propertyChange",
            "objectTypeId": "0-47", "objectId": object_id, "occurredAt": int(time.time() * 1000), "attemptNumber": 0,
            "portalId": 62515, "appId": 54321, **extra}  # fmt: skip


def _ghl_body(appointment_id: str = "apt1", **extra: Any) -> dict[str, Any]:
    return {"type": "AppointmentUpdate", "locationId": "loc123", "webhookId": extra.pop("webhookId", uuid.uuid4().hex),
            "timestamp": extra.pop("timestamp", dt.datetime.now(UTC).isoformat()),
            "appointment": {"id": appointment_id, "appointmentStatus": "confirmed"}, **extra}  # fmt: skip


def _ghl_signed(body: dict[str, Any], key: ed25519.Ed25519PrivateKey = ED_KEY) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return {"x-ghl-signature": base64.b64encode(key.sign(raw)).decode()}, raw


# -- HubSpot through parse ------------------------------------------------------------------------


def test_hubspot_v3_delivery_gives_changes_with_the_vendor_event_ids(make_client: Any) -> None:
    client = make_client()
    events = [_hs_event(501), _hs_event(502)]
    headers, body = _hubspot_delivery(events)
    changes = client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    assert [c.event_id for c in changes] == [str(e["eventId"]) for e in events]
    assert all(isinstance(c, AppointmentChange) and c.source == "webhook" for c in changes)
    assert [c.appointment_id for c in changes] == ["501", "502"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hubspot_older_signatures_are_chosen_by_their_headers(make_client: Any, version: str) -> None:
    client = make_client()
    body = json.dumps([_hs_event(503)]).encode()
    sig = webhooks.hubspot_signature(version, HS_SECRET, method="POST", uri=HS_URL, body=body)
    headers = {"X-HubSpot-Signature": sig, "X-HubSpot-Signature-Version": version}
    assert len(client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)) == 1


def _refused(client: PMSClient, provider: str, error: type[E.WebhookError], headers: dict[str, str], body: bytes,
             url: str) -> E.WebhookError:  # fmt: skip
    before = [len(stub.calls) for stub in client.stubs.values()]  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        client.parse_webhook(provider, method="POST", url=url, headers=headers, body=body)
    assert [len(stub.calls) for stub in client.stubs.values()] == before  # type: ignore[attr-defined]
    return info.value


def test_hubspot_refusals_are_typed_and_dispatch_nothing(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    caplog.set_level(logging.DEBUG, logger="pms_integration.webhooks")
    headers, body = _hubspot_delivery([_hs_event(510)])
    tampered = body.replace(b"510", b"511")
    err = _refused(client, "hubspot", E.WebhookSignatureError, headers, tampered, HS_URL)
    assert str(err) == "Webhook signature not valid."  # nothing about why
    _refused(client, "hubspot", E.WebhookSignatureError, *_hubspot_delivery([_hs_event(510)], secret="wrong-" + HS_SECRET), url=HS_URL)
    _refused(client, "hubspot", E.WebhookSignatureError, headers, body, HS_URL + "?other=1")
    _refused(client, "hubspot", E.WebhookSignatureError, {}, body, HS_URL)
    old = int((time.time() - 301) * 1000)
    stale = _refused(client, "hubspot", E.WebhookStaleError, *_hubspot_delivery([_hs_event(510)], stamp_ms=old), url=HS_URL)
    assert "301" not in str(stale)
    future = int((time.time() + 301) * 1000)
    _refused(client, "hubspot", E.WebhookStaleError, *_hubspot_delivery([_hs_event(510)], stamp_ms=future), url=HS_URL)
    for malformed in (b"not json", b"{}", b"[]", b'[{"objectId": 1}]'):
        sig = webhooks.hubspot_signature("v1", HS_SECRET, body=malformed)
        _refused(client, "hubspot", E.WebhookPayloadError, {"X-HubSpot-Signature": sig}, malformed, HS_URL)
    logged = caplog.text
    assert "does not match" in logged and "from now" in logged  # the reason went to the log
    assert HS_SECRET not in logged and headers["X-HubSpot-Signature-v3"] not in logged


def test_hubspot_replay_is_refused_and_a_batch_keeps_only_new_events(make_client: Any) -> None:
    client = make_client()
    first = _hs_event(520)
    headers, body = _hubspot_delivery([first])
    assert len(client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)) == 1
    with pytest.raises(E.WebhookReplayError):
        client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    second = _hs_event(521, hour=11)
    headers, body = _hubspot_delivery([first, second])
    changes = client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    assert [c.event_id for c in changes] == [str(second["eventId"])]
    # a restart: a new client on the same state store still knows both
    again = make_client()
    with pytest.raises(E.WebhookReplayError):
        again.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    assert not again.stubs[ProviderName.HUBSPOT].calls


def test_a_failed_read_lets_the_vendor_retry_the_event(make_client: Any) -> None:
    client = make_client()
    headers, body = _hubspot_delivery([_hs_event(530)])

    def down(payload: Any) -> list[Observed]:
        raise E.ServerError("down", status_code=503, provider="hubspot")

    client.adapter("hubspot").observe_webhook = down
    with pytest.raises(E.ServerError):
        client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    client.adapter("hubspot").observe_webhook = client.stubs[ProviderName.HUBSPOT]
    assert len(client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)) == 1


def test_hubspot_without_a_secret_is_a_configuration_error(make_client: Any) -> None:
    client = make_client(PMS_HUBSPOT_WEBHOOK_SECRET="")
    headers, body = _hubspot_delivery([_hs_event(540)])
    with pytest.raises(E.ConfigurationError, match="PMS_HUBSPOT_WEBHOOK_SECRET"):
        client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)


def test_the_secret_never_shows(make_client: Any) -> None:
    client = make_client()
    settings = client.config.get(ProviderName.HUBSPOT).settings
    assert HS_SECRET not in repr(settings) and HS_SECRET not in repr(client)


def test_salesforce_has_no_webhooks(make_client: Any) -> None:
    client = PMSClient(environ={"PMS_SALESFORCE_BASE_URL": "https://example.my.salesforce.com",
                                "PMS_SALESFORCE_TOKEN": "00D-token-7c1e9b2d3f4a5b8c6d1e2f3a",
                                "PMS_SALESFORCE_OWNER_ID": "005000000000001AAA"}, env_file=None)  # fmt: skip
    with pytest.raises(E.UnsupportedOperationError, match="change feed"):
        client.parse_webhook("salesforce", method="POST", url=HS_URL, headers={}, body=b"{}")


# -- GoHighLevel through parse ---------------------------------------------------------------------


def test_ghl_ed25519_delivery_verifies_with_the_configured_public_key(make_client: Any) -> None:
    client = make_client()
    body = _ghl_body("apt7")
    headers, raw = _ghl_signed(body)
    changes = client.parse_webhook("ghl", method="POST", url=GHL_URL, headers=headers, body=raw)
    assert [(c.appointment_id, c.event_id, c.source) for c in changes] == [("apt7", body["webhookId"], "webhook")]


def test_ghl_legacy_rsa_signature(make_client: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    client = make_client(PMS_GHL_WEBHOOK_PUBLIC_KEY=base64.b64encode(der).decode())
    raw = json.dumps(_ghl_body("apt8")).encode()
    signature = key.sign(raw, padding.PKCS1v15(), hashes.SHA256())
    headers = {"x-wh-signature": base64.b64encode(signature).decode()}
    assert len(client.parse_webhook("ghl", method="POST", url=GHL_URL, headers=headers, body=raw)) == 1
    _refused(client, "ghl", E.WebhookSignatureError, headers, raw.replace(b"apt8", b"apt9"), GHL_URL)


def test_ghl_refusals_are_typed_and_dispatch_nothing(make_client: Any) -> None:
    client = make_client()
    headers, raw = _ghl_signed(_ghl_body("apt10"))
    _refused(client, "ghl", E.WebhookSignatureError, headers, raw.replace(b"apt10", b"apt11"), GHL_URL)
    other, _ = _ghl_ed_key()
    _refused(client, "ghl", E.WebhookSignatureError, *_ghl_signed(_ghl_body("apt10"), other), url=GHL_URL)
    _refused(client, "ghl", E.WebhookSignatureError, {"x-ghl-signature": "N/A"}, raw, GHL_URL)
    _refused(client, "ghl", E.WebhookSignatureError, {}, raw, GHL_URL)
    old = (dt.datetime.now(UTC) - dt.timedelta(minutes=6)).isoformat()
    _refused(client, "ghl", E.WebhookStaleError, *_ghl_signed(_ghl_body("apt10", timestamp=old)), url=GHL_URL)
    _refused(client, "ghl", E.WebhookPayloadError, *_ghl_signed(_ghl_body("apt10", timestamp="yesterday")), url=GHL_URL)
    raw_list = b"[1, 2]"
    sig = {"x-ghl-signature": base64.b64encode(ED_KEY.sign(raw_list)).decode()}
    _refused(client, "ghl", E.WebhookPayloadError, sig, raw_list, GHL_URL)
    # and the replay
    assert len(client.parse_webhook("ghl", method="POST", url=GHL_URL, headers=headers, body=raw)) == 1
    with pytest.raises(E.WebhookReplayError):
        client.parse_webhook("ghl", method="POST", url=GHL_URL, headers=headers, body=raw)


def test_the_published_ghl_keys_load() -> None:
    assert isinstance(webhooks.load_public_key(webhooks.GHL_ED25519_PUBLIC_KEY), ed25519.Ed25519PublicKey)
    legacy = webhooks.load_public_key(webhooks.GHL_RSA_PUBLIC_KEY)
    assert isinstance(legacy, rsa.RSAPublicKey) and legacy.key_size == 4096
    raw = webhooks.load_public_key("MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=")
    assert isinstance(raw, ed25519.Ed25519PublicKey)
    with pytest.raises(E.ConfigurationError):
        webhooks.load_public_key("bm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0IHRoYXQgaXMgbG9uZyBlbm91Z2g=")


def test_bad_arguments_are_validation_errors(make_client: Any) -> None:
    client = make_client()
    with pytest.raises(E.ValidationError) as info:
        client.parse_webhook("hubspot", method="", url="/relative", headers={}, body=b"[]")
    assert info.value.fields == ["method", "url"]
    with pytest.raises(E.ValidationError):
        client.parse_webhook("hubspot", method="POST", url=HS_URL, headers={}, body=42)  # type: ignore[arg-type]


# -- callbacks ----------------------------------------------------------------------------------------


def test_on_change_registry_and_a_failing_callback(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    seen: list[str] = []
    mine: list[str] = []

    def broken(change: AppointmentChange) -> None:
        raise RuntimeError("callback bug")

    everywhere = pms.on_change(lambda c: seen.append(c.event_id))
    client.on_change(broken)
    client.on_change(lambda c: mine.append(c.event_id))
    try:
        change = AppointmentChange(ProviderName.HUBSPOT, ChangeKind.UPDATED, "1", None, dt.datetime.now(UTC), "e1",
                                   False, "webhook")  # fmt: skip
        assert webhooks.dispatch([change], client=client) == 2
        assert seen == ["e1"] and mine == ["e1"]
        assert "callback (broken) failed" in caplog.text
        webhooks.dispatch([change], client=make_client())  # another client: only the everywhere one
        assert seen == ["e1", "e1"] and mine == ["e1"]
    finally:
        assert webhooks.remove_callback(everywhere)
    with pytest.raises(E.ValidationError):
        pms.on_change("not callable")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the HTTP endpoint


@pytest.fixture
def served(make_client: Any) -> Iterator[Any]:
    started: list[Served] = []

    def serve(client: PMSClient, queue: WebhookQueue | None = None) -> Served:
        server = Served(create_app(client, token="srv-canary-4b1d9e77c0ffee5a", webhook_queue=queue)).start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop()


def _post(server: Served, provider: str, headers: dict[str, str], body: bytes) -> requests.Response:
    return requests.post(f"{server.url}{PREFIX}/{provider}/webhook", headers=headers, data=body, timeout=10)


def test_endpoint_answers_before_the_callbacks_run(make_client: Any, served: Any) -> None:
    client = make_client()
    server = served(client)
    release, ran = threading.Event(), []

    def slow(change: AppointmentChange) -> None:
        assert release.wait(10)
        ran.append(change.event_id)

    client.on_change(slow)
    url = f"{server.url}{PREFIX}/hubspot/webhook"
    event = _hs_event(601)
    headers, body = _hubspot_delivery([event], url=url)
    answer = _post(server, "hubspot", headers, body)  # no bearer token: the signature authenticates
    assert answer.status_code == 200 and answer.json() == {"received": 1, "duplicate": False}
    assert ran == []  # answered while the callback still waits
    release.set()
    app_queue = server.server.config.app.state.pms_webhook_queue
    app_queue.join()
    assert ran == [str(event["eventId"])]
    again = _post(server, "hubspot", headers, body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    app_queue.join()
    assert ran == [str(event["eventId"])]


def test_endpoint_refusals(make_client: Any, served: Any) -> None:
    client = make_client()
    server = served(client)
    called: list[AppointmentChange] = []
    client.on_change(called.append)
    url = f"{server.url}{PREFIX}/hubspot/webhook"
    headers, body = _hubspot_delivery([_hs_event(610)], url=url)
    bad = _post(server, "hubspot", headers, body.replace(b"610", b"611"))
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["type"].endswith(":webhook-signature") and "match" not in bad.text
    stale_headers, stale_body = _hubspot_delivery([_hs_event(610)], url=url, stamp_ms=int((time.time() - 600) * 1000))
    assert _post(server, "hubspot", stale_headers, stale_body).status_code == 401
    junk = b"nope"
    sig = webhooks.hubspot_signature("v1", HS_SECRET, body=junk)
    malformed = _post(server, "hubspot", {"X-HubSpot-Signature": sig}, junk)
    assert malformed.status_code == 400 and malformed.json()["type"].endswith(":webhook-payload")
    assert _post(server, "salesforce", {}, b"{}").status_code in (501, 503)
    server.server.config.app.state.pms_webhook_queue.join()
    assert called == []


def test_a_full_queue_is_answered_503_and_the_retry_is_not_a_replay(make_client: Any, served: Any) -> None:
    client = make_client()
    server = served(client, WebhookQueue(size=1))
    release, ran = threading.Event(), []
    client.on_change(lambda c: (release.wait(10), ran.append(c.event_id)))
    url = f"{server.url}{PREFIX}/hubspot/webhook"
    first, second = _hs_event(620), _hs_event(621)
    assert _post(server, "hubspot", *_hubspot_delivery([first], url=url)).status_code == 200
    headers, body = _hubspot_delivery([second], url=url)
    busy = _post(server, "hubspot", headers, body)
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    release.set()
    queue = server.server.config.app.state.pms_webhook_queue
    queue.join()
    retry = _post(server, "hubspot", headers, body)
    assert retry.status_code == 200 and retry.json()["duplicate"] is False
    queue.join()
    assert ran == [str(first["eventId"]), str(second["eventId"])]


# ---------------------------------------------------------------------------------------------
# the acceptance: staff changes in the emulator reach a callback through the endpoint, exactly once


def _booking(n: int) -> dict[str, Any]:
    start = dt.datetime(2031, 4, 1 + n, 14, tzinfo=UTC)
    return {"start": start.isoformat(), "duration_minutes": 30, "reason": "Cleaning",
            "patient": {"name": "Ann Lee", "email": f"ann.webhook{n}@example.com", "phone": "+15555550123"}}  # fmt: skip


@pytest.mark.parametrize("provider", [ProviderName.HUBSPOT, ProviderName.GOHIGHLEVEL])
def test_staff_reschedule_and_cancel_reach_the_callback_once_across_a_restart(
    provider: ProviderName, tmp_path: Path, served: Any
) -> None:
    state = f"sqlite:///{tmp_path / 'consumer.db'}"
    with Sandbox() as sandbox:
        environ = sandbox.environ()

        def consumer() -> tuple[PMSClient, Served, list[AppointmentChange]]:
            client = PMSClient(environ=environ, env_file=None, state=state)
            got: list[AppointmentChange] = []
            client.on_change(got.append)
            return client, served(client), got

        def deliver(server: Served, **kwargs: Any) -> list[int]:
            statuses = sandbox.deliver_webhooks(provider, f"{server.url}{PREFIX}/{provider.value}/webhook", **kwargs)
            server.server.config.app.state.pms_webhook_queue.join()
            return statuses

        client, server, got = consumer()
        booked = client.book_appointment(_booking(1), provider=provider)
        assert booked.start is not None
        assert set(deliver(server)) <= {200}
        sandbox.staff_move(provider, booked.id, booked.start + dt.timedelta(hours=2),
                           booked.start + dt.timedelta(hours=2, minutes=30))  # fmt: skip
        assert set(deliver(server)) == {200}
        sandbox.staff_cancel(provider, booked.id)
        assert set(deliver(server)) == {200}
        mine = [c for c in got if c.appointment_id == booked.id]
        kinds = [c.kind for c in mine]
        assert kinds.count(ChangeKind.RESCHEDULED) == 1 and kinds.count(ChangeKind.CANCELLED) == 1, kinds
        moved = next(c for c in mine if c.kind is ChangeKind.RESCHEDULED)
        assert moved.appointment is not None and moved.appointment.start == booked.start + dt.timedelta(hours=2)
        assert all(c.source == "webhook" and c.by_library for c in mine)
        assert len({c.event_id for c in got}) == len(got)
        client.close()

        # a restart of the consumer: a new client and app on the same state store
        client2, server2, got2 = consumer()
        statuses = deliver(server2, since=0)  # the vendor redelivers everything
        assert statuses and set(statuses) == {200}
        assert got2 == []
        second = client2.book_appointment(_booking(2), provider=provider)
        deliver(server2)
        sandbox.staff_cancel(provider, second.id)
        deliver(server2)
        deliver(server2, since=0)
        cancelled = [c for c in got2 if c.appointment_id == second.id and c.kind is ChangeKind.CANCELLED]
        assert len(cancelled) == 1
        assert len({c.event_id for c in got2}) == len(got2)
        client2.close()


# -- at least once, de-duplicated: nothing is recorded before the callbacks ran ------------------


def _soon(n: int) -> dict[str, Any]:
    """A booking a few days ahead (inside GoHighLevel's polled calendar window)."""
    start = (dt.datetime.now(UTC) + dt.timedelta(days=2 + n)).replace(hour=15, minute=0, second=0, microsecond=0)
    return {**_booking(n), "start": start.isoformat()}


def _no_search_lag(sandbox: Sandbox, provider: ProviderName) -> None:
    """HubSpot's emulated search index lags behind writes; these tests poll right after them."""
    if provider is ProviderName.HUBSPOT:
        sandbox.emulator("hubspot").search_lag = 0.0  # type: ignore[attr-defined]


def _signed_delivery(sandbox: Sandbox, provider: ProviderName) -> tuple[str, dict[str, str], bytes]:
    """The newest webhook the sandbox would send, signed, without sending it."""
    held: list[tuple[str, dict[str, str], bytes]] = []

    def keep(url: str, headers: Any, body: bytes) -> int:
        held.append((url, dict(headers), body))
        return 500  # not delivered: the vendor would retry

    sandbox.deliver_webhooks(provider, f"https://clinic.example.com{PREFIX}/{provider.value}/webhook", send=keep)
    assert held
    return held[-1]


@pytest.mark.parametrize("provider", [ProviderName.HUBSPOT, ProviderName.GOHIGHLEVEL])
def test_a_delivery_not_committed_before_a_crash_is_reported_by_the_feed_once(
    provider: ProviderName, tmp_path: Path
) -> None:
    state = f"sqlite:///{tmp_path / 'consumer.db'}"
    with Sandbox() as sandbox:
        _no_search_lag(sandbox, provider)
        environ = sandbox.environ()
        client = PMSClient(environ=environ, env_file=None, state=state)
        assert len(client.changes(provider=provider, feed="prod")) == 0
        booked = client.book_appointment(_soon(3), provider=provider)
        assert [c.kind for c in client.changes(provider=provider, feed="prod")] == [ChangeKind.CREATED]
        _signed_delivery(sandbox, provider)  # the creation's webhook: dropped
        sandbox.staff_cancel(provider, booked.id)
        url, headers, body = _signed_delivery(sandbox, provider)
        parsed = client.parse_webhook(provider, method="POST", url=url, headers=headers, body=body)
        assert [c.kind for c in parsed] == [ChangeKind.CANCELLED] and not parsed.committed
        # a duplicate delivery while the first holds its lease is not handed out twice
        with pytest.raises(E.WebhookReplayError):
            client.parse_webhook(provider, method="POST", url=url, headers=headers, body=body)
        client.close()  # the process dies before the callbacks ran: nothing committed

        restarted = PMSClient(environ=environ, env_file=None, state=state)
        assert [c.kind for c in restarted.changes(provider=provider, feed="prod")] == [ChangeKind.CANCELLED]
        assert len(restarted.changes(provider=provider, feed="prod")) == 0  # exactly once
        restarted.close()


@pytest.mark.parametrize("provider", [ProviderName.HUBSPOT, ProviderName.GOHIGHLEVEL])
def test_a_committed_delivery_is_never_reported_again(provider: ProviderName, tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path / 'consumer.db'}"
    with Sandbox() as sandbox:
        _no_search_lag(sandbox, provider)
        environ = sandbox.environ()
        client = PMSClient(environ=environ, env_file=None, state=state)
        assert len(client.changes(provider=provider, feed="prod")) == 0
        booked = client.book_appointment(_soon(4), provider=provider)
        assert [c.kind for c in client.changes(provider=provider, feed="prod")] == [ChangeKind.CREATED]
        sandbox.staff_cancel(provider, booked.id)
        url, headers, body = _signed_delivery(sandbox, provider)
        with client.parse_webhook(provider, method="POST", url=url, headers=headers, body=body) as parsed:
            assert [c.kind for c in parsed] == [ChangeKind.CANCELLED]
        assert parsed.committed
        client.close()

        restarted = PMSClient(environ=environ, env_file=None, state=state)
        assert len(restarted.changes(provider=provider, feed="prod")) == 0
        with pytest.raises(E.WebhookReplayError):  # the vendor's retry after the commit
            restarted.parse_webhook(provider, method="POST", url=url, headers=headers, body=body)
        restarted.close()


def test_a_delivery_whose_handler_raised_is_accepted_again_at_once(make_client: Any) -> None:
    client = make_client()
    headers, body = _hubspot_delivery([_hs_event(560)])
    parsed = client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    with pytest.raises(RuntimeError), parsed:
        raise RuntimeError("the caller's handler failed")
    again = client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)
    assert len(again) == 1
    again.commit()
    with pytest.raises(E.WebhookReplayError):
        client.parse_webhook("hubspot", method="POST", url=HS_URL, headers=headers, body=body)


def test_the_endpoint_commits_only_after_the_callbacks_ran(make_client: Any, served: Any) -> None:
    client = make_client()
    server = served(client)
    release = threading.Event()
    seen: list[AppointmentChange] = []

    def slow(change: AppointmentChange) -> None:
        release.wait()
        seen.append(change)

    client.on_change(slow)
    headers, body = _hubspot_delivery([_hs_event(570)], url=f"{server.url}{PREFIX}/hubspot/webhook")
    assert _post(server, "hubspot", headers, body).json() == {"received": 1, "duplicate": False}
    # the callback has not run: the event id is only leased, a duplicate is not dispatched
    assert _post(server, "hubspot", headers, body).json()["duplicate"] is True
    key = webhooks._seen_key(ProviderName.HUBSPOT, client.adapter("hubspot").account, str(json.loads(body)[0]["eventId"]))
    assert client.state.claim(key, 1.0, 60.0).result is None  # not yet recorded as received
    release.set()
    server.server.config.app.state.pms_webhook_queue.join()
    assert len(seen) == 1
    assert client.state.claim(key, 1.0, 60.0).result == "received"


# -- unauthenticated input that would not convert: typed refusals, never a bare exception ---------

_BAD_HUBSPOT_STAMPS = ["9" * 5000, "9" * 400, "1" + "0" * 30, "\u00b2\u00b3\u00b9", "\u0661\u0662\u0663\u0664", "12 34", "-5"]
_BAD_GHL_STAMPS: list[Any] = ["9" * 5000, 10**400, -(10**400), 1e308, "\u00b2\u00b3", "9" * 20, "2026-01-01T00:00:00" + "0" * 5000]


@pytest.mark.parametrize("stamp", _BAD_HUBSPOT_STAMPS, ids=range(len(_BAD_HUBSPOT_STAMPS)))
def test_an_unreadable_hubspot_timestamp_is_a_stale_error(make_client: Any, stamp: str) -> None:
    client = make_client()
    headers, body = _hubspot_delivery([_hs_event(580)])
    headers["X-HubSpot-Request-Timestamp"] = stamp
    err = _refused(client, "hubspot", E.WebhookStaleError, headers, body, HS_URL)
    assert str(err) == "Webhook timestamp outside the accepted window."


@pytest.mark.parametrize("stamp", _BAD_GHL_STAMPS, ids=range(len(_BAD_GHL_STAMPS)))
def test_an_unreadable_ghl_timestamp_is_a_typed_error(make_client: Any, stamp: Any) -> None:
    client = make_client()
    headers, raw = _ghl_signed(_ghl_body("apt20", timestamp=stamp))
    before = len(client.stubs[ProviderName.GOHIGHLEVEL].calls)
    with pytest.raises((E.WebhookStaleError, E.WebhookPayloadError)) as info:
        client.parse_webhook("ghl", method="POST", url=GHL_URL, headers=headers, body=raw)
    assert str(info.value) in ("Webhook timestamp outside the accepted window.", "Webhook body not readable.")
    assert len(client.stubs[ProviderName.GOHIGHLEVEL].calls) == before


def test_a_nan_ghl_timestamp_is_a_payload_error(make_client: Any) -> None:
    client = make_client()
    body = json.dumps(_ghl_body("apt21")).replace('"timestamp": "', '"timestamp": NaN, "was": "').encode()
    headers = {"x-ghl-signature": base64.b64encode(ED_KEY.sign(body)).decode()}
    _refused(client, "ghl", E.WebhookPayloadError, headers, body, GHL_URL)


def test_unreadable_timestamps_through_the_endpoint_are_401_or_400(make_client: Any, served: Any) -> None:
    client = make_client()
    server = served(client)
    called: list[AppointmentChange] = []
    client.on_change(called.append)
    url = f"{server.url}{PREFIX}/hubspot/webhook"
    for stamp in _BAD_HUBSPOT_STAMPS:
        headers, body = _hubspot_delivery([_hs_event(590)], url=url)
        sent: dict[str, Any] = {**headers, "X-HubSpot-Request-Timestamp": stamp.encode("latin-1", "replace")}
        answer = _post(server, "hubspot", sent, body)
        assert answer.status_code == 401, (stamp[:20], answer.status_code)
        assert answer.json()["type"].endswith(":webhook-stale")
    for ghl_stamp in _BAD_GHL_STAMPS:
        answer = _post(server, "gohighlevel", *_ghl_signed(_ghl_body("apt22", timestamp=ghl_stamp)))
        assert answer.status_code in (400, 401), (str(ghl_stamp)[:20], answer.status_code)
    server.server.config.app.state.pms_webhook_queue.join()
    assert called == []
