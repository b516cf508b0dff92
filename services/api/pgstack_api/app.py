"""create_app(): wiring only. Nothing connects at import time; the lifespan builds the engine
and disposes it after uvicorn's graceful shutdown has let in-flight requests finish."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from pgstack_api import errors, health, migrations, openapi
from pgstack_api.db import Database, create_engine
from pgstack_api.endpoints import Endpoint, Resource
from pgstack_api.logging import configure_logging
from pgstack_api.metrics import Metrics, metrics_endpoint
from pgstack_api.middleware import BodyLimitMiddleware, OutcomeMiddleware, RequestIdMiddleware
from pgstack_api.retry import CommitOutcomeUnknown, DatabaseUnavailable
from pgstack_api.routes import orders, products, users
from pgstack_api.settings import Settings, load_settings

_log = logging.getLogger("pgstack_api")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings if settings is not None else load_settings()
    access_log = configure_logging(settings.log_format)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Batches wait on a timer of the loop they began in: one started under a previous
        # loop (a test client's) would never fire in this one.
        metrics.flush()
        access_log.flush()
        engine = create_engine(settings)
        db = Database(engine, settings)
        app.state.db = db
        app.state.readiness = health.ReadinessCache(
            db.ping, ttl=settings.readiness_cache_s, timeout=settings.readiness_timeout_s
        )
        _log.info(
            "started",
            extra={
                "env": settings.env,
                "dialect": engine.dialect.name,
                "head_revision": app.state.head_revision,
            },
        )
        # Everything built so far (modules, tables, models, routes) lives as long as the process:
        # out of the collector's reach, a full collection no longer walks it (the pauses that
        # made the slowest requests slower, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await engine.dispose()
            # uvicorn let in-flight requests finish before the shutdown: their counts and
            # access lines are all in, and go out before the process does.
            metrics.flush()
            access_log.flush()
            _log.info("stopped")

    routes: list[BaseRoute] = [
        *health.resources,
        Resource("/metrics", Endpoint("GET", "metrics", "Prometheus metrics", None, None,
                                      raw=metrics_endpoint, media_type="text/plain")),
        Resource("/openapi.json", Endpoint("GET", "openapi", "This document", None, None,
                                           raw=openapi.openapi_endpoint)),
        *products.resources,
        *orders.resources,
        *users.resources,
    ]  # fmt: skip
    handled: list[type[Exception]] = [
        ValidationError, SQLAlchemyError, psycopg.Error, DatabaseUnavailable,
        CommitOutcomeUnknown, TimeoutError,
    ]  # fmt: skip
    app = Starlette(
        routes=routes,
        # Outermost first. The catch-all 500 (errors.handle_unexpected) sits outside them all.
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(OutcomeMiddleware, log=access_log, metrics=metrics),
            Middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes),
        ],
        exception_handlers={
            HTTPException: errors.handle_http_exception,
            **dict.fromkeys(handled, errors.handle_error),
            Exception: errors.handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started_at = time.monotonic()
    app.state.head_revision = migrations.head_revision()
    app.state.openapi = json.dumps(openapi.build_schema(routes)).encode()
    return app
