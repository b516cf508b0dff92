"""The OpenAPI 3.1 document, built from the pydantic models so that it cannot drift from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from pgstack_api import __version__
from pgstack_api.schemas import OrderIn, ProductIn, UserIn

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_TEXT = {
    400: "Malformed JSON or Content-Length",
    404: "Unknown id or route",
    405: "Method not allowed",
    409: "Conflict: duplicate unique value or out of stock",
    413: "Request body larger than PGSTACK_MAX_BODY_BYTES",
    422: "Well-formed JSON of the wrong shape or types",
    500: "Unexpected error (logged with the request id)",
    503: "Database unavailable; retry after the Retry-After header",
}


def _errors(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
        if code == 503:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        out[str(code)] = entry
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}
_OBJ = {"type": "object"}
_WRITE_ERRORS = (400, 404, 409, 413, 422, 503)


def build_schema() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
    }
    for model in (UserIn, ProductIn, OrderIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    page_params = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
        {
            "name": "after",
            "in": "query",
            "description": "last id of the previous page",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
    ]
    health = {"200": _json(_OBJ, "Healthy"), **_errors(503)}
    paths: dict[str, Any] = {
        "/livez": {
            "get": {
                "summary": "Process is alive (no I/O)",
                "responses": {"200": _json(_OBJ, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Database reachable through PgBouncer (cached ~1 s)",
                "responses": {"200": _json(_OBJ, "Ready"), **_errors(503)},
            }
        },
        "/api/health": {
            "get": {
                "summary": "Health; versions and memory with the ops token",
                "responses": health,
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/products": {
            "get": {
                "summary": "List products (keyset pagination)",
                "parameters": page_params,
                "responses": {"200": _json(_OBJ, "A page of products"), **_errors(422, 503)},
            },
            "post": {
                "summary": "Create a product",
                "requestBody": _body(ProductIn),
                "responses": {"201": _json(_OBJ, "Created"), **_errors(400, 409, 413, 422, 503)},
            },
        },
        "/api/products/{id}": {
            "get": {
                "summary": "Get a product",
                "parameters": [_ID],
                "responses": {"200": _json(_OBJ, "The product"), **_errors(404, 503)},
            }
        },
        "/api/users": {
            "post": {
                "summary": "Create a user",
                "requestBody": _body(UserIn),
                "responses": {"201": _json(_OBJ, "Created"), **_errors(400, 409, 413, 422, 503)},
            }
        },
        "/api/users/{id}": {
            "get": {
                "summary": "Get a user",
                "parameters": [_ID],
                "responses": {"200": _json(_OBJ, "The user"), **_errors(404, 503)},
            }
        },
        "/api/orders": {
            "post": {
                "summary": "Place an order: takes stock atomically, 409 out_of_stock if short",
                "requestBody": _body(OrderIn),
                "responses": {"201": _json(_OBJ, "Created"), **_errors(*_WRITE_ERRORS)},
            }
        },
        "/api/orders/{id}": {
            "get": {
                "summary": "Get an order with its items",
                "parameters": [_ID],
                "responses": {"200": _json(_OBJ, "The order"), **_errors(404, 503)},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgstack API", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }


async def openapi_endpoint(request: Request) -> JSONResponse:
    schema: dict[str, Any] = request.app.state.openapi
    return JSONResponse(schema)
