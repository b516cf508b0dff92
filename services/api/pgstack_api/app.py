"""create_app(): wiring only. Nothing connects at import time; the lifespan builds the engine
and disposes it after uvicorn's graceful shutdown has let in-flight requests finish."""

from __future__ import annotations

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
from starlette.routing import Route

from pgstack_api import errors, health, migrations, openapi
from pgstack_api.db import Database, create_engine
from pgstack_api.logging import configure_logging
from pgstack_api.metrics import Metrics, metrics_endpoint
from pgstack_api.middleware import RequestMiddleware
from pgstack_api.retry import CommitOutcomeUnknown, DatabaseUnavailable
from pgstack_api.routes import orders, products, users
from pgstack_api.settings import Settings, load_settings

_log = logging.getLogger("pgstack_api")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings if settings is not None else load_settings()
    configure_logging(settings.log_format)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
        try:
            yield
        finally:
            await engine.dispose()
            _log.info("stopped")

    db_errors = (
        SQLAlchemyError,
        psycopg.Error,
        DatabaseUnavailable,
        CommitOutcomeUnknown,
        TimeoutError,
    )
    app = Starlette(
        routes=[
            *health.routes,
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi.openapi_endpoint, methods=["GET"]),
            *products.routes,
            *orders.routes,
            *users.routes,
        ],
        middleware=[
            Middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
        ],
        exception_handlers={
            errors.ApiError: errors.handle_api_error,
            ValidationError: errors.handle_validation_error,
            HTTPException: errors.handle_http_exception,
            **dict.fromkeys(db_errors, errors.handle_db_error),
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started_at = time.monotonic()
    app.state.head_revision = migrations.head_revision()
    app.state.openapi = openapi.build_schema()
    return app
