"""Every request and response body, as pydantic models: they validate requests, shape responses
and are the OpenAPI document's schemas (openapi.py), so the contract cannot drift.

Constraints are written so that the JSON Schema pydantic publishes accepts exactly what the
server accepts: patterns use explicit ASCII ranges rather than `\\s`, whose meaning differs
between regex engines (pydantic's Rust engine, Python's `re` in fuzzers, ECMA in browsers), and
normalising (trimming, lower-casing) happens after validation, never before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

_Strict = ConfigDict(extra="forbid", strict=True)  # "5" is not a quantity; unknown keys are typos

MAX_ID = 2**63 - 1  # BIGINT

# PostgreSQL text cannot hold NUL (U+0000); every text field refuses it with a 422 naming the
# field (errors.py words the message).
NO_NUL = r"^[^\x00]*$"
# At least one character that is not ASCII space or control, and no NUL anywhere.
_VISIBLE = r"^[^\x00]*[^\x00-\x20\x7f][^\x00]*$"
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _trim(value: str) -> str:
    return value.strip(_ASCII_SPACE)


def _ascii_lower(value: str) -> str:
    # str.lower() can lengthen a string ("İ" -> "i̇"), past the column's limit.
    return value.translate(_ASCII_UPPER)


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=_VISIBLE),
    AfterValidator(_trim),
]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Email = Annotated[
    str,
    # Deliberately loose: one "@" and a dot in the domain; real verification is a mail round trip.
    StringConstraints(
        max_length=254,
        pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+$",
    ),
    AfterValidator(_ascii_lower),
]
Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


def _utc(value: datetime) -> datetime:
    # SQLite (make dev) returns naive timestamps; they were written as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]


# ---- requests --------------------------------------------------------------------------------


class UserIn(BaseModel):
    model_config = _Strict
    email: Email
    name: Name


class ProductIn(BaseModel):
    model_config = _Strict
    sku: Sku
    name: Name
    price_cents: Annotated[int, Field(ge=0, le=10**12)]
    stock: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class OrderItemIn(BaseModel):
    model_config = _Strict
    product_id: Id
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class OrderIn(BaseModel):
    model_config = _Strict
    user_id: Id
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=100)]


class PageParams(BaseModel):
    """Keyset pagination: `after` is the last id of the previous page; stable under inserts."""

    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=100, description="page size")] = 20
    after: Annotated[int, Field(ge=0, le=MAX_ID, description="last id of the previous page")] = 0


class IdPath(BaseModel):
    """The `{id}` of /api/<things>/{id}; ids outside BIGINT cannot exist (404, not 422)."""

    model_config = ConfigDict(extra="forbid")
    id: Id


# ---- responses -------------------------------------------------------------------------------


class User(BaseModel):
    id: Id
    email: str
    name: str
    created_at: Timestamp


class Product(BaseModel):
    id: Id
    sku: str
    name: str
    price_cents: int
    stock: int
    created_at: Timestamp


class ProductPage(BaseModel):
    items: list[Product]
    next_after: Annotated[
        int | None, Field(description="pass as `after` for the next page; null on the last")
    ]


class OrderItem(BaseModel):
    product_id: Id
    quantity: int
    unit_price_cents: int


class Order(BaseModel):
    id: Id
    user_id: Id
    status: Literal["placed", "paid", "shipped", "cancelled"]
    total_cents: int
    created_at: Timestamp
    items: list[OrderItem]


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class Error(BaseModel):
    """Every error answer: `{"error": {"code", "message"[, "details"]}}`."""

    error: ErrorBody


class Live(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    reason: str | None = None


class DatabaseHealth(BaseModel):
    status: Literal["up", "down"]
    latency_ms: float | None


class MigrationHealth(BaseModel):
    revision: str | None
    head: str | None
    at_head: bool


class Health(BaseModel):
    """The original guide's health document; `version` and `memory` need the ops token."""

    status: Literal["healthy", "degraded"]
    timestamp: str
    uptime: float
    database: DatabaseHealth
    migration: MigrationHealth
    version: dict[str, str | None] | None = None
    memory: dict[str, int] | None = None
