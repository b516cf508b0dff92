"""/api/products: list (keyset pages), get, create."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgstack_api.domain import catalog
from pgstack_api.routes import database, parse_body, parse_query, path_id
from pgstack_api.schemas import PageParams, ProductIn


async def list_products(request: Request) -> JSONResponse:
    page = parse_query(request, PageParams)
    return JSONResponse(await database(request).read(lambda c: catalog.list_products(c, page)))


async def create_product(request: Request) -> JSONResponse:
    data = await parse_body(request, ProductIn)
    product = await database(request).run(lambda c: catalog.create_product(c, data))
    return JSONResponse(
        product, status_code=201, headers={"Location": f"/api/products/{product['id']}"}
    )


async def get_product(request: Request) -> JSONResponse:
    product_id = path_id(request, "product")
    return JSONResponse(await database(request).read(lambda c: catalog.get_product(c, product_id)))


routes = [
    Route("/api/products", list_products, methods=["GET"]),
    Route("/api/products", create_product, methods=["POST"]),
    Route("/api/products/{id:int}", get_product, methods=["GET"]),
]
