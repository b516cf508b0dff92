"""The one place that chooses HTTP status codes: every exception the API can meet becomes
`{"error": {"code", "message"[, "details"]}}` with its status and headers here.

An unreachable database or pooler gives 503 + Retry-After, a rule the client broke gives 4xx,
a commit whose outcome is unknown gives 503 that invites a retry only when the request carried
an Idempotency-Key (a retry without one could place the order twice), and nothing gives a
traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pgstack_api.domain.errors import Duplicate, NotFound, OutOfStock
from pgstack_api.retry import CommitOutcomeUnknown, DatabaseUnavailable
from pgstack_api.schemas import Error, ErrorBody, ErrorDetail
from pgstack_api.sqlstate import Kind, classify

_log = logging.getLogger(__name__)

JSON = "application/json"


class ApiError(Exception):
    """A protocol error the HTTP layer itself detects (malformed JSON, a bad header)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def answer(self) -> Answer:
        return Answer(self.status, self.code, self.message)


class MalformedJson(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, "malformed_json", f"request body is not valid JSON: {detail}")


class BadIdempotencyKey(ApiError):
    def __init__(self, max_length: int) -> None:
        super().__init__(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{max_length} printable ASCII characters without spaces "
            "(e.g. a UUID)",
        )


class BadContentLength(ApiError):
    def __init__(self) -> None:
        super().__init__(400, "bad_request", "Content-Length is not a valid number")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body is larger than {limit} bytes")


class KeyReused(ApiError):
    """An Idempotency-Key came back with another request body (IETF httpapi draft: 422)."""

    def __init__(self) -> None:
        super().__init__(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body; use a new key",
        )


class OutcomeUnknown(Exception):
    """CommitOutcomeUnknown, with whether the client can retry safely (it sent a key)."""

    def __init__(self, keyed: bool) -> None:
        super().__init__("commit outcome unknown")
        self.keyed = keyed


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str
    message: str
    retry_after: bool = False
    details: list[ErrorDetail] = field(default_factory=list)
    kind: str | None = None  # pgstack_db_errors_total label, for database failures

    def response(self, retry_after_s: int, headers: dict[str, str] | None = None) -> Response:
        out = dict(headers or {})
        if self.retry_after:
            out["Retry-After"] = str(retry_after_s)
        return Response(self.body(), status_code=self.status, headers=out, media_type=JSON)

    def body(self) -> bytes:
        error = ErrorBody(code=self.code, message=self.message)
        if self.details:
            error.details = self.details
        return Error(error=error).model_dump_json(exclude_none=True).encode()


# Domain errors (nouns) and their status codes.
_DOMAIN: dict[type[Exception], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Duplicate: (409, "duplicate"),
    OutOfStock: (409, "out_of_stock"),
}
_UNAVAILABLE = "the database is unavailable; retry later"
# Database failures by kind (sqlstate.py): status, code, message, Retry-After.
_DATABASE: dict[Kind, tuple[int, str, str, bool]] = {
    Kind.UNAVAILABLE: (503, "database_unavailable", _UNAVAILABLE, True),
    Kind.LOCKED: (503, "database_unavailable", "the database is busy; retry later", True),
    # Still conflicting after every retry: the client may try again shortly.
    Kind.CONFLICT: (503, "database_busy", "too many concurrent updates; retry later", True),
    Kind.DUPLICATE: (409, "duplicate", "a record with the same unique value exists", False),
    Kind.MISSING_REFERENCE: (
        404, "reference_not_found", "a referenced record does not exist", False,
    ),
    Kind.CONSTRAINT: (
        422, "constraint_violation", "the data breaks a database constraint", False,
    ),
    Kind.BAD_TEXT: (422, "validation_error", "text the database cannot store", False),
}  # fmt: skip
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def answer(exc: BaseException) -> Answer | None:
    """The client's answer to `exc`; None when it is unexpected (a bug: the caller's 500)."""
    if isinstance(exc, ApiError):
        return exc.answer()
    for domain_error, (status, code) in _DOMAIN.items():
        if isinstance(exc, domain_error):
            prefix = getattr(exc, "what", None)
            return Answer(status, f"{prefix}_{code}" if code == "not_found" else code, str(exc))
    if isinstance(exc, ValidationError):
        return validation_answer(exc)
    if isinstance(exc, OutcomeUnknown | CommitOutcomeUnknown):
        keyed = isinstance(exc, OutcomeUnknown) and exc.keyed
        advice = (
            "retry with the same Idempotency-Key: it returns this request's result exactly once"
            if keyed
            else "check whether it took effect before retrying, or send an Idempotency-Key "
            "so that retries are safe"
        )
        message = f"the connection was lost while committing; the outcome is unknown: {advice}"
        return Answer(503, "commit_outcome_unknown", message, keyed, kind="unknown_commit")
    if isinstance(exc, DatabaseUnavailable | TimeoutError):
        return Answer(503, "database_unavailable", _UNAVAILABLE, True, kind="unavailable")
    kind = classify(exc)
    if kind is None or kind not in _DATABASE:
        return None
    status, code, message, retry = _DATABASE[kind]
    return Answer(status, code, message, retry, kind=kind.value)


def validation_answer(exc: ValidationError) -> Answer:
    details = [
        ErrorDetail(
            field=".".join(str(p) for p in err["loc"]), message=_wording(err), type=err["type"]
        )
        for err in exc.errors(include_url=False)
    ]
    first = details[0]
    where = first.field or "body"
    return Answer(422, "validation_error", f"{where}: {first.message}", details=details)


def _wording(err: object) -> str:
    """pydantic's message, except for NUL, which deserves plain words over a regex."""
    assert isinstance(err, dict)  # noqa: S101 -- pydantic's ErrorDetails
    value = err.get("input")
    if err.get("type") == "string_pattern_mismatch" and isinstance(value, str) and "\x00" in value:
        return "text cannot contain the NUL character (U+0000)"
    return str(err["msg"])


# --- Starlette exception handlers (routes outside endpoints.py, routing, the catch-all) --------


def _retry_after(request: Request) -> int:
    return int(request.app.state.settings.retry_after_s)


async def handle_error(request: Request, exc: Exception) -> Response:
    found = answer(exc)
    if found is None:
        raise exc  # the catch-all below answers 500
    return found.response(_retry_after(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 -- registered for HTTPException only
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return Answer(exc.status_code, code, message).response(0, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The last line: any exception nobody answered. Never a traceback to the client; the log
    line carries it with the request id."""
    request_id = request.scope.get("state", {}).get("request_id", "-")
    _log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    headers = {"X-Request-ID": request_id} if request_id != "-" else {}
    message = f"internal error (request id {request_id})"
    return Answer(500, "internal_error", message).response(0, headers)
