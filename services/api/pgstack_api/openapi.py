"""The OpenAPI 3.1 document, generated from the routes' own declarations (endpoints.py) and the
pydantic models that validate requests and shape responses (schemas.py): nothing in it is written
by hand, so it cannot drift from what the server does.

Why a small generator rather than FastAPI: FastAPI would bring the same pydantic schemas but also
its dependency-injection layer on every request, which costs more than the rest of the request
path together; starlette.schemas only reads docstrings. This module is the part of FastAPI that
the API needs: models -> components, declarations -> paths, errors -> responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from pgstack_api import __version__, idempotency
from pgstack_api.endpoints import Endpoint, Resource
from pgstack_api.errors import JSON
from pgstack_api.schemas import Error

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "Malformed JSON body or Idempotency-Key",
    404: "No such resource (unknown id, or one an order refers to)",
    409: "Conflict: a duplicate unique value, or too little stock",
    413: "Request body larger than PGSTACK_MAX_BODY_BYTES",
    422: "Well-formed JSON of the wrong shape, text with NUL, a reused Idempotency-Key",
    503: "Database unavailable (retry after Retry-After), or a commit whose outcome is unknown "
    "(Retry-After only when the request carried an Idempotency-Key)",
}
_RETRY_AFTER = {"schema": {"type": "integer", "minimum": 1}, "description": "seconds"}
_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes retries safe: the same key and body return the first response, "
    "never a second effect; another body with the same key is 422. Keys expire after "
    "PGSTACK_IDEMPOTENCY_TTL_S (24 h by default).",
    "schema": {"type": "string", "pattern": idempotency.KEY_PATTERN},
}


def _template(path: str) -> str:
    """Starlette's "/api/products/{id:int}" -> OpenAPI's "/api/products/{id}"."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def _ref(model: type[BaseModel], refs: dict[Any, Any], mode: str) -> dict[str, Any]:
    return dict(refs[(model, mode)])


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if endpoint.input is not None and endpoint.source in ("query", "path"):
        schema = endpoint.input.model_json_schema(mode="validation")
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            prop = dict(prop)
            prop.pop("title", None)
            param: dict[str, Any] = {
                "name": name,
                "in": endpoint.source,
                "required": endpoint.source == "path" or name in required,
                "schema": prop,
            }
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append(param)
    if endpoint.writes:
        params.append(_KEY_PARAMETER)
    return params


def _responses(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if endpoint.returns is None:
        out[str(endpoint.status)] = {
            "description": endpoint.summary,
            "content": {endpoint.media_type: {"schema": {"type": "string"}}},
        }
    else:
        ok = _json(_ref(endpoint.returns, refs, "serialization"), endpoint.summary)
        headers: dict[str, Any] = {}
        if endpoint.location is not None:
            headers["Location"] = {"schema": {"type": "string"}, "description": "the new resource"}
        if endpoint.writes:
            headers[idempotency.REPLAYED_HEADER] = {
                "schema": {"type": "string", "enum": ["true", "false"]},
                "description": "with an Idempotency-Key: whether this is the first response again",
            }
        if headers:
            ok["headers"] = headers
        if endpoint.links:
            ok["links"] = {
                name: {
                    "operationId": link.operation_id,
                    **({"parameters": dict(link.parameters)} if link.parameters else {}),
                    **({"requestBody": link.request_body} if link.request_body else {}),
                    **({"description": link.description} if link.description else {}),
                }
                for name, link in endpoint.links.items()
            }
        out[str(endpoint.status)] = ok
        for status in endpoint.also:
            also = _json(_ref(endpoint.returns, refs, "serialization"), endpoint.summary)
            also["headers"] = {"Retry-After": _RETRY_AFTER}
            out[str(status)] = also
    codes = set(endpoint.errors)
    if endpoint.input is not None:
        codes |= {"body": {400, 413, 422}, "query": {422}, "path": {404}}[endpoint.source]
    if endpoint.raw is None:
        codes.add(503)  # every database endpoint
    if endpoint.writes:
        codes |= {400, 422}
    error = {"$ref": _REF.format(model="Error")}
    for code in sorted(codes):
        entry = _json(error, _ERROR_TEXT[code])
        if code == 503:
            entry["headers"] = {"Retry-After": _RETRY_AFTER}
        out[str(code)] = entry
    return out


def _operation(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": endpoint.operation_id, "summary": endpoint.summary}
    params = _parameters(endpoint)
    if params:
        op["parameters"] = params
    if endpoint.input is not None and endpoint.source == "body":
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _ref(endpoint.input, refs, "validation")}},
        }
    op["responses"] = _responses(endpoint, refs)
    return op


def build_schema(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    resources = [r for r in routes if isinstance(r, Resource)]
    models: list[tuple[type[BaseModel], Any]] = [(Error, "serialization")]
    for resource in resources:
        for e in resource.endpoints:
            if e.returns is not None:
                models.append((e.returns, "serialization"))
            if e.input is not None and e.source == "body":
                models.append((e.input, "validation"))
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, Any] = {}
    for resource in resources:
        paths[_template(resource.path)] = {
            e.method.lower(): _operation(e, refs) for e in resource.endpoints
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pgstack API",
            "version": __version__,
            "description": 'Errors are `{"error": {"code", "message"[, "details"]}}`. '
            "Every path answers OPTIONS with `Allow`, and other methods with 405 and `Allow`.",
        },
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {})},
    }


async def openapi_endpoint(request: Request) -> Response:
    body: bytes = request.app.state.openapi
    return Response(body, media_type=JSON)
