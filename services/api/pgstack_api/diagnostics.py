"""pgstack-db check: both connection paths, PgBouncer's pools and the tables, as a report
(a table for people, JSON on request)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.db import create_engine, with_admin
from pgstack_api.seed import table_counts
from pgstack_api.settings import Settings


async def _timed(url: URL, settings: Settings) -> dict[str, Any]:
    """Connect, SELECT 1 and read the server version on a fresh connection."""
    engine = create_engine(settings, url)
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            latency = (time.perf_counter() - started) * 1000
            version = (
                (await conn.execute(text("SHOW server_version"))).scalar()
                if conn.dialect.name == "postgresql"
                else (await conn.execute(text("SELECT sqlite_version()"))).scalar()
            )
        return {"ok": True, "latency_ms": round(latency, 2), "server_version": version}
    except Exception as exc:
        return {
            "ok": False,
            "error": (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[
                0
            ],
        }
    finally:
        await engine.dispose()


async def _pools(url: URL, settings: Settings) -> dict[str, Any]:
    """SHOW POOLS on PgBouncer's admin console, which only speaks the simple query protocol:
    psycopg sends a parameterless execute() as a simple query; prepare_threshold=None keeps it
    from ever preparing."""
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=settings.connect_timeout,
        )
    except psycopg.Error as exc:
        return {"ok": False, "error": str(exc).strip().splitlines()[0]}
    async with conn:
        cur = await conn.execute("SHOW POOLS")
        names = [d.name for d in cur.description or []]
        rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        keep = (
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "maxwait",
            "pool_mode",
        )
        cur = await conn.execute("SHOW VERSION")
        version_row = await cur.fetchone()
    return {
        "ok": True,
        "version": version_row[0] if version_row else None,
        "pools": [{k: r[k] for k in keep if k in r} for r in rows],
    }


async def _tables(conn: AsyncConnection) -> dict[str, Any]:
    counts = await table_counts(conn)
    out: dict[str, Any] = {}
    for name, count in counts.items():
        size = None
        if conn.dialect.name == "postgresql":
            size = (
                await conn.execute(
                    text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                    {"t": f"public.{name}"},
                )
            ).scalar()
        out[name] = {"rows": count, "total_bytes": size}
    return out


async def check(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"api_path": await _timed(settings.api_url(), settings)}
    if settings.admin_database_url is not None or settings.is_dev:
        if settings.admin_database_url is not None:
            report["direct"] = await _timed(settings.admin_url(), settings)
        if report.get("direct", report["api_path"])["ok"]:
            try:
                report["tables"] = await with_admin(settings, _tables)
            except Exception as exc:
                report["tables"] = {"error": str(getattr(exc, "orig", exc)).splitlines()[0]}
    pgbouncer = settings.pgbouncer_url()
    if pgbouncer is not None:
        report["pgbouncer"] = await _pools(pgbouncer, settings)
    report["ok"] = all(part.get("ok", True) for part in report.values() if isinstance(part, dict))
    return report


def render(report: dict[str, Any]) -> str:
    """The report as aligned text for a person (`pgstack-db check`; --json for machines)."""
    lines = [f"database check: {'OK' if report.get('ok') else 'PROBLEM'}", ""]
    paths = [("API path (PgBouncer)", report.get("api_path")), ("direct", report.get("direct"))]
    lines.append(f"{'connection':<22} {'ok':<4} {'latency':>10}  server")
    for label, part in paths:
        if part is None:
            continue
        if part["ok"]:
            latency = f"{part['latency_ms']:.1f} ms"
            lines.append(f"{label:<22} {'yes':<4} {latency:>10}  {part['server_version']}")
        else:
            lines.append(f"{label:<22} {'NO':<4} {'':>10}  {part['error']}")
    tables = report.get("tables")
    if isinstance(tables, dict) and "error" not in tables:
        lines += ["", f"{'table':<22} {'rows':>10} {'size':>12}"]
        for name, info in tables.items():
            size = info["total_bytes"]
            shown = f"{size / 1024:,.0f} KiB" if size is not None else "-"
            lines.append(f"{name:<22} {info['rows']:>10,} {shown:>12}")
    elif isinstance(tables, dict):
        lines += ["", f"tables: {tables['error']}"]
    bouncer = report.get("pgbouncer")
    if bouncer is not None:
        lines.append("")
        if not bouncer["ok"]:
            lines.append(f"pgbouncer: {bouncer['error']}")
        else:
            lines.append(f"pgbouncer {bouncer['version']}")
            columns = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle")
            lines.append("  ".join(f"{c:>10}" for c in columns))
            for pool in bouncer["pools"]:
                lines.append("  ".join(f"{pool.get(c, '')!s:>10}" for c in columns))
    return "\n".join(lines)
