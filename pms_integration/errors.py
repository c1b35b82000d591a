"""The exception hierarchy: every error is a :class:`PMSError`, and its class says what to do next.

:data:`OUTCOMES` is the one table of what each class means to the CLI (exit code), the HTTP server
(problem) and the transport (vendor statuses). ``str()`` and ``repr()`` are safe to log. See docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._redact import excerpt as _excerpt
from ._redact import redact, redact_path

__all__ = [
    "PMSError",
    "ConfigurationError",
    "ProviderNotConfiguredError",
    "UnsupportedOperationError",
    "ValidationError",
    "ProviderError",
    "TransportError",
    "UnexpectedResponseError",
    "ResponseTooLargeError",
    "APIError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "AppointmentCancelledError",
    "InvalidRequestError",
    "RateLimitError",
    "ServerError",
    "BookingInProgressError",
    "StateStoreError",
    "WebhookError",
    "WebhookSignatureError",
    "WebhookStaleError",
    "WebhookReplayError",
    "WebhookPayloadError",
]


_ENDS_A_SENTENCE = (".", "!", "?", "…")


def _end_sentence(text: str) -> str:
    """``text`` with a full stop unless it already ends a sentence."""
    text = text.rstrip()
    if not text or text.endswith(_ENDS_A_SENTENCE):
        return text
    return text + "."


def _join_sentences(first: str, then: str) -> str:
    """Two sentences, punctuated: ``"HTTP 400: bad" + "Fix it."`` is ``"HTTP 400: bad. Fix it."``."""
    first = _end_sentence(first)
    return f"{first} {then}" if first else then


def _vendor_word(value: object, limit: int) -> str | None:
    """A vendor's code or request id as one short, printable, redacted line (or ``None``)."""
    if value is None:
        return None
    text = redact("".join(ch if ch.isprintable() else " " for ch in str(value)).strip())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or None


# Words that start with a vowel letter but a consonant sound ("a UUID", "a UnicodeError").
_SOUNDS_LIKE_YOU = ("uu", "uni", "url", "uri", "use", "usa", "utf", "one")


def with_article(word: str) -> str:
    """``word`` after its indefinite article: ``"an AppointmentRequest"``, ``"a Patient"``, ``"an int"``.

    For messages built from class or type names, so none reads "a AppointmentRequest".
    """
    lowered = word.lower()
    vowel = lowered[:1] in ("a", "e", "i", "o", "u") and not lowered.startswith(_SOUNDS_LIKE_YOU)
    return f"{'an' if vowel else 'a'} {word}"


class Outcome(NamedTuple):
    """What an error class means outside Python: one row of :data:`OUTCOMES`."""

    exit_code: int  # the CLI's
    http_status: int  # the HTTP server's, with the problem type ``urn:pms-integration:problem:<slug>``
    slug: str
    title: str
    vendor_statuses: tuple[int, ...] = ()  # a vendor's answers raised as this class (error_class_for_status)


class PMSError(Exception):
    """Base class of every error raised by pms_integration."""

    #: A sentence telling the caller what to do about this kind of error.
    hint: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def outcome(self) -> Outcome:
        """This error's row of :data:`OUTCOMES`: its class's, or the nearest base class's."""
        return next(OUTCOMES[cls] for cls in type(self).__mro__ if cls in OUTCOMES)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        text = self.message
        if self.hint and self.hint not in text:
            text = _join_sentences(text, self.hint)
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def _repr_html_(self) -> str:
        """How a notebook shows the error when it is displayed (not raised)."""
        from ._render import html_table

        rows = [("error", type(self).__name__), ("message", str(self))]
        rows += [(f"field {path or '(input)'}", message) for path, message in getattr(self, "errors", [])]
        return html_table(["", ""], rows)


class ConfigurationError(PMSError):
    """The configuration cannot be used as it is."""

    hint = "Fix the configuration (PMS_* variables) and call reload()."

    def __init__(self, message: str, *, missing: Sequence[str] = (), problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)
        self.problems: tuple[str, ...] = tuple(redact(p) for p in problems)

    def __str__(self) -> str:
        # A message that already says to call reload() needs no second "call reload()".
        if "reload()" in self.message:
            return _end_sentence(self.message)
        return super().__str__()


class ProviderNotConfiguredError(ConfigurationError):
    """The requested provider is disabled because variables are missing or invalid."""

    def __init__(self, provider: str, *, missing: Sequence[str] = (), problems: Sequence[str] = ()) -> None:
        parts = [f"Provider {provider!r} is not configured."]
        if missing:
            parts.append("Set " + ", ".join(missing) + ".")
        if problems:
            parts.append("Problems: " + "; ".join(p.rstrip(". ") for p in problems) + ".")
        super().__init__(" ".join(parts), missing=missing, problems=problems)
        self.provider = provider


class UnsupportedOperationError(PMSError):
    """The provider, or the API version it is configured for, cannot perform the operation."""


class ValidationError(PMSError, ValueError):
    """The input is invalid. Raised before any request is sent.

    ``errors`` lists every bad field as ``(path, message)``, e.g.
    ``("patient.email", "is not a valid e-mail address")``.
    """

    hint = "Nothing was sent; correct the listed fields and try again."

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        # A path is the caller's own data: only a segment that *is* a secret is masked (a key
        # sent by mistake). A message may quote an exception's text: redacted as free text.
        self.errors: list[tuple[str, str]] = [(redact_path(str(p)), redact(str(m))) for p, m in errors]
        if not self.errors:
            self.errors = [("", "invalid input")]
        count = len(self.errors)
        head = "1 invalid field" if count == 1 else f"{count} invalid fields"
        detail = "; ".join(f"{p}: {m}" if p else m for p, m in self.errors)
        # Built from parts redacted above; redacting the whole again would mask inside paths.
        Exception.__init__(self, _end_sentence(f"{head}: {detail}"))

    @property
    def fields(self) -> list[str]:
        """The paths of the invalid fields, in order."""
        return [p for p, _ in self.errors]

    @classmethod
    def single(cls, path: str, message: str) -> ValidationError:
        return cls([(path, message)])


class ProviderError(PMSError):
    """A call to a vendor failed.

    ``outcome_unknown`` is true when the vendor may have applied the change even though the
    call failed (a timeout after the request was sent, say). For a booking, look it up by
    ``reference`` before booking again.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        operation: str | None = None,
        outcome_unknown: bool = False,
        reference: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.operation = operation
        self.outcome_unknown = outcome_unknown
        self.reference = reference

    def __str__(self) -> str:
        text = super().__str__()
        prefix = f"[{self.provider}] " if self.provider else ""
        if self.outcome_unknown:
            ref = f" reference {self.reference!r}" if self.reference else " its reference"
            text = _join_sentences(
                text,
                "The change may have been applied: retry with the same"
                f"{ref} (the library looks it up before creating anything), never a new one.",
            )
        return prefix + text

    def __repr__(self) -> str:
        extra = ", outcome_unknown=True" if self.outcome_unknown else ""
        return f"{type(self).__name__}({self.message!r}, provider={self.provider!r}{extra})"


class TransportError(ProviderError):
    """The request did not complete: connection refused, reset, or timed out."""

    hint = "The provider could not be reached; try again shortly."


class UnexpectedResponseError(ProviderError):
    """The vendor answered with success, but in a shape the library cannot read."""


class ResponseTooLargeError(UnexpectedResponseError):
    """The vendor's answer was larger than the transport reads (``Transport.MAX_BODY_BYTES``).

    The body was not read. For a create, ``outcome_unknown`` is true: the vendor answered
    with success, so look the record up by ``reference`` before creating it again.
    """


class APIError(ProviderError):
    """The vendor answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        body_excerpt: str | None = None,
        fields: Sequence[str] = (),
        provider: str | None = None,
        operation: str | None = None,
        outcome_unknown: bool = False,
        reference: str | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, operation=operation, outcome_unknown=outcome_unknown, reference=reference
        )
        self.status_code = status_code
        # Vendor-supplied text: scrubbed like the rest of what a vendor says.
        self.code = _vendor_word(code, 100)
        self.request_id = _vendor_word(request_id, 200)
        self.body_excerpt = _excerpt(body_excerpt) if body_excerpt else None
        self.fields: tuple[str, ...] = tuple(redact(str(f)) for f in fields)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, provider={self.provider!r}, "
            f"status_code={self.status_code}, code={self.code!r}"
            + (", outcome_unknown=True" if self.outcome_unknown else "")
            + ")"
        )


class AuthenticationError(APIError):
    """401: the credentials were rejected."""

    hint = "Check the provider's token variable; the token may have expired or been revoked."


class PermissionDeniedError(APIError):
    """403: the credentials lack a scope or access to the record or location."""

    hint = "Grant the token the needed scopes or access."


class NotFoundError(APIError):
    """404: the record (or route) does not exist."""

    hint = "Check the appointment id; it may have been deleted."


class ConflictError(APIError):
    """409, or the vendor's "slot no longer available": the time is taken or the record clashes."""

    hint = "Offer the patient another time."


class AppointmentCancelledError(ConflictError):
    """The appointment was cancelled, so it cannot be moved or changed.

    Raised before any write is sent, on every provider, when an update names a cancelled
    booking (``code`` is ``"APPOINTMENT_CANCELLED"``, ``status_code`` 409). A cancelled
    booking is never revived: book a new appointment instead.
    """

    hint = "This appointment was cancelled: book a new appointment instead of moving it."


class InvalidRequestError(APIError):
    """400 / 422: the vendor rejected the request's content."""

    hint = "The vendor rejected the data; see the message for the field."


class _AsksToWait(APIError):
    """An error answer that may say how long to wait: ``retry_after`` seconds, when it said."""

    unsaid_wait = ""  # what str() says when the vendor named no wait

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def __str__(self) -> str:
        wait = self.unsaid_wait if self.retry_after is None else f"Retry after {self.retry_after:g} s."
        return _join_sentences(super().__str__(), wait) if wait else super().__str__()


class RateLimitError(_AsksToWait):
    """429 (or the vendor's equivalent): too many requests. ``retry_after``: the wait asked for, if any."""

    unsaid_wait = "Retry later."


class ServerError(_AsksToWait):
    """5xx: the vendor failed. ``retry_after``: the wait a 503's ``Retry-After`` asked for, if any."""

    hint = "The provider is having trouble; try again shortly."


class StateStoreError(PMSError):
    """The shared state store (``PMS_STATE_URL``) cannot be used: unreachable, too slow for the
    deadline, or refusing writes. A booking that raises it sent nothing to the vendor."""

    hint = (
        "Check that the state store is running and reachable (`pms-integration state check`); "
        "nothing was sent to the vendor, so retrying later with the same reference is safe."
    )

    def __init__(self, message: str, *, code: str = "STATE_UNAVAILABLE", store: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.store = store

    def __str__(self) -> str:
        where = f" ({self.store})" if self.store else ""
        return f"state store{where}: {super().__str__()}"


class BookingInProgressError(ProviderError):
    """Another worker is booking the same reference right now and did not finish within this
    call's deadline. Its booking may still be made: retry with the same reference."""

    def __init__(self, message: str, *, provider: str | None = None, reference: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, operation="book", outcome_unknown=True, reference=reference)
        self.retry_after = retry_after


class WebhookError(PMSError):
    """A vendor's webhook request was refused (:mod:`pms_integration.webhooks`). The message is
    deliberately generic, since it may be shown to whoever sent the request; the reason is logged
    at DEBUG on the ``pms_integration.webhooks`` logger (never a secret or a signature)."""


class WebhookSignatureError(WebhookError):
    """The request's signature is missing or does not match the body (or the secret or key is
    not the one the vendor signs with)."""


class WebhookStaleError(WebhookError):
    """The request's timestamp is outside the five-minute window the vendors document."""


class WebhookReplayError(WebhookError):
    """Every event in the request was received before (its event id is remembered in the state
    store): nothing new to hand out. The HTTP endpoint answers such a request 200."""


class WebhookPayloadError(WebhookError):
    """The request is signed correctly but its body is not a webhook the library can read."""


#: What each error class means outside Python, read by the CLI, the HTTP server and the transport.
#: A class not listed (``ResponseTooLargeError``, one added later) has its nearest base class's row.
OUTCOMES: dict[type[PMSError], Outcome] = {
    PMSError: Outcome(1, 500, "internal", "Internal error"),
    ValidationError: Outcome(3, 422, "validation", "Invalid request"),
    ConfigurationError: Outcome(4, 503, "configuration", "Configuration error"),
    ProviderNotConfiguredError: Outcome(4, 503, "not-configured", "Provider not configured"),
    UnsupportedOperationError: Outcome(5, 501, "unsupported-operation", "Operation not supported"),
    AuthenticationError: Outcome(6, 502, "provider-authentication", "Provider rejected the credentials", (401,)),
    PermissionDeniedError: Outcome(6, 502, "provider-permission-denied", "Provider denied access", (403,)),
    NotFoundError: Outcome(7, 404, "not-found", "Booking not found", (404, 410)),
    ConflictError: Outcome(8, 409, "conflict", "Conflict", (409,)),
    AppointmentCancelledError: Outcome(8, 409, "appointment-cancelled", "Appointment is cancelled"),
    RateLimitError: Outcome(9, 429, "rate-limited", "Provider rate limit reached", (429,)),
    InvalidRequestError: Outcome(10, 502, "provider-invalid-request", "Provider rejected the request", (400, 422)),
    ProviderError: Outcome(11, 502, "provider-error", "Provider error"),
    ServerError: Outcome(11, 503, "provider-unavailable", "Provider unavailable"),
    TransportError: Outcome(11, 504, "provider-timeout", "Provider did not answer"),
    UnexpectedResponseError: Outcome(11, 502, "provider-unexpected-response", "Unexpected provider response"),
    BookingInProgressError: Outcome(12, 409, "booking-in-progress", "The same booking is in progress elsewhere"),
    StateStoreError: Outcome(13, 503, "state-unavailable", "State store unavailable"),
    WebhookError: Outcome(3, 400, "webhook-rejected", "Webhook rejected"),
    WebhookSignatureError: Outcome(3, 401, "webhook-signature", "Webhook signature not valid"),
    WebhookStaleError: Outcome(3, 401, "webhook-stale", "Webhook timestamp outside the window"),
    WebhookReplayError: Outcome(3, 200, "webhook-replay", "Webhook event already received"),
    WebhookPayloadError: Outcome(3, 400, "webhook-payload", "Webhook body not readable"),
}


def error_class_for_status(status: int) -> type[APIError]:
    """The class for a vendor's error answer with HTTP ``status`` when its body names none."""
    for cls, outcome in OUTCOMES.items():
        if status in outcome.vendor_statuses and issubclass(cls, APIError):
            return cls
    return ServerError if status >= 500 else APIError
