"""/api/orders: create (takes stock), get."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgstack_api.domain import orders
from pgstack_api.routes import database, parse_body, path_id
from pgstack_api.schemas import OrderIn


async def create_order(request: Request) -> JSONResponse:
    data = await parse_body(request, OrderIn)
    order = await database(request).run(lambda c: orders.create_order(c, data))
    return JSONResponse(order, status_code=201, headers={"Location": f"/api/orders/{order['id']}"})


async def get_order(request: Request) -> JSONResponse:
    order_id = path_id(request, "order")
    return JSONResponse(await database(request).run(lambda c: orders.get_order(c, order_id)))


routes = [
    Route("/api/orders", create_order, methods=["POST"]),
    Route("/api/orders/{id:int}", get_order, methods=["GET"]),
]
