"""Every error the API returns, as `{"error": {"code", "message"}}`, and how exceptions map to it.

The mapping of database exceptions is the contract of decision 6: an unreachable database or
pooler gives 503 + Retry-After, a constraint the client broke gives 4xx, never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgstack_api.retry import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    is_connection_lost,
    is_sqlite_locked,
    sqlstate,
)

_log = logging.getLogger(__name__)

# Codes PostgreSQL and PgBouncer use when the database cannot serve us right now:
# 08 connection exceptions (PgBouncer reports its own failures as 08P01), 53 insufficient
# resources (too many connections), 57P01-03 admin/crash shutdown and "cannot connect now"
# (starting up), 57014 statement timeout (overloaded: retry later).
_UNAVAILABLE_PREFIXES = ("08", "53", "57P")
_UNAVAILABLE_STATES = frozenset({"57014"})


class ApiError(Exception):
    """An error meant for the client, with its HTTP status and stable code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"{what} {ident} does not exist")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


@dataclass(frozen=True, slots=True)
class DbFailure:
    """What a database exception means for the client."""

    status: int
    code: str
    message: str
    kind: str  # metric label: unavailable | conflict | locked | unknown_commit | other


def classify_db_error(exc: BaseException) -> DbFailure | None:
    """Map a database exception to the client's answer; None if it is not a database error."""
    if isinstance(exc, DatabaseUnavailable):
        return DbFailure(
            503, "database_unavailable", "the database is unavailable; retry later", "unavailable"
        )
    if isinstance(exc, TimeoutError):
        return DbFailure(
            503, "database_unavailable", "the database did not answer in time", "unavailable"
        )
    if isinstance(exc, CommitOutcomeUnknown):
        return DbFailure(
            503,
            "database_unavailable",
            "the connection was lost while committing; the outcome is unknown, "
            "check before retrying",
            "unknown_commit",
        )
    if not isinstance(exc, (sa_exc.SQLAlchemyError, psycopg.Error)):
        return None
    state = sqlstate(exc)
    if state is not None and (
        state.startswith(_UNAVAILABLE_PREFIXES) or state in _UNAVAILABLE_STATES
    ):
        return DbFailure(
            503, "database_unavailable", "the database is unavailable; retry later", "unavailable"
        )
    if is_connection_lost(exc) or isinstance(
        exc, (sa_exc.InterfaceError, sa_exc.DisconnectionError)
    ):
        return DbFailure(
            503, "database_unavailable", "lost the database connection; retry later", "unavailable"
        )
    if is_sqlite_locked(exc):
        return DbFailure(503, "database_unavailable", "the database is busy; retry later", "locked")
    if state == "40001" or state == "40P01":
        # Still conflicting after every retry: the client may try again shortly.
        return DbFailure(
            503, "database_busy", "too many concurrent updates; retry later", "conflict"
        )
    if state == "23505" or _is_sqlite_unique(exc):
        return DbFailure(409, "duplicate", "a record with the same unique value exists", "conflict")
    if state == "23503":
        return DbFailure(
            404, "reference_not_found", "a referenced record does not exist", "conflict"
        )
    if state is not None and state.startswith("23"):
        return DbFailure(
            422, "constraint_violation", "the data breaks a database constraint", "conflict"
        )
    return DbFailure(500, "internal_error", "internal error", "other")


def _is_sqlite_unique(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


def validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ApiError(422, "validation_error", f"{where}: {first['msg']}")


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]


# --- Starlette exception handlers -------------------------------------------------------------

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101 -- registered for ApiError only
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)  # noqa: S101
    api = validation_error(exc)
    return error_response(api.status, api.code, api.message, details=validation_details(exc))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def handle_db_error(request: Request, exc: Exception) -> Response:
    failure = classify_db_error(exc)
    if failure is None or failure.status == 500:
        raise exc  # not ours to explain: the outer middleware logs it and answers 500
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.db_errors.labels(kind=failure.kind).inc()
    headers = {}
    if failure.status == 503:
        headers["Retry-After"] = str(request.app.state.settings.retry_after_s)
        _log.warning(
            "database unavailable",
            extra={
                "request_id": request.scope.get("state", {}).get("request_id"),
                "reason": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            },
        )
    return error_response(failure.status, failure.code, failure.message, headers)
