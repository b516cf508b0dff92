"""A bare Starlette app: the ceiling for /livez (the same image, server and settings as the API,
no middleware). `bench/comparisons.py` runs it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/livez", livez)])
