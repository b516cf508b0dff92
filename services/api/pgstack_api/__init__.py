"""pgstack's API: Starlette on PostgreSQL through PgBouncer, plus the pgstack-db CLI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgstack-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
