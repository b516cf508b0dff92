"""Request bodies and query parameters, validated by pydantic; also the OpenAPI schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

_Strict = ConfigDict(extra="forbid", strict=True)  # "5" is not a quantity; unknown keys are typos

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class UserIn(BaseModel):
    model_config = _Strict
    # Deliberately loose: one "@" and a dot in the domain; real verification is a mail round trip.
    email: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True,
            to_lower=True,
            max_length=254,
            pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        ),
    ]
    name: Name


class ProductIn(BaseModel):
    model_config = _Strict
    sku: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True,
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        ),
    ]
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
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    after: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
