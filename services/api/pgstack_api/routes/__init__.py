"""HTTP routes; each module exports `routes`, a list of Starlette routes."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from pgstack_api.db import Database
from pgstack_api.errors import ApiError, not_found

M = TypeVar("M", bound=BaseModel)

_MAX_ID = 2**63 - 1


async def parse_body(request: Request, model: type[M]) -> M:
    """Malformed JSON is the client's syntax error (400); a wrong shape is 422."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    return model.model_validate(data)


def parse_query(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError:
        raise  # the handler turns it into 422 with details


def path_id(request: Request, what: str) -> int:
    """The {id} path parameter; ids beyond BIGINT cannot exist, so they are 404, not a DB error."""
    value: int = request.path_params["id"]
    if value < 1 or value > _MAX_ID:
        raise not_found(what, value)
    return value


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db
