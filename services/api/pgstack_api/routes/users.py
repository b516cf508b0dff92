"""/api/users: create, get."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgstack_api.domain import catalog
from pgstack_api.routes import database, parse_body, path_id
from pgstack_api.schemas import UserIn


async def create_user(request: Request) -> JSONResponse:
    data = await parse_body(request, UserIn)
    user = await database(request).run(lambda c: catalog.create_user(c, data))
    return JSONResponse(user, status_code=201, headers={"Location": f"/api/users/{user['id']}"})


async def get_user(request: Request) -> JSONResponse:
    user_id = path_id(request, "user")
    return JSONResponse(await database(request).read(lambda c: catalog.get_user(c, user_id)))


routes = [
    Route("/api/users", create_user, methods=["POST"]),
    Route("/api/users/{id:int}", get_user, methods=["GET"]),
]
