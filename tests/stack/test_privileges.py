"""The app role has exactly the privileges the API uses, on the shared stack."""

from __future__ import annotations

from tests.stack.compose import Stack

EXPECTED = {
    "users": {"SELECT", "INSERT"},
    "products": {"SELECT", "INSERT", "UPDATE"},
    "orders": {"SELECT", "INSERT"},
    "order_items": {"SELECT", "INSERT"},
    "idempotency_keys": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "alembic_version": {"SELECT"},
}
_KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def test_the_app_role_has_exactly_what_the_api_does_on_every_table(stack: Stack) -> None:
    rows = stack.psql(
        "SELECT c.relname, p.kind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'"
        f" CROSS JOIN unnest(ARRAY{list(_KINDS)}) AS p(kind)"
        " WHERE c.relkind = 'r' AND has_table_privilege('app', c.oid, p.kind)"
    )
    granted: dict[str, set[str]] = {}
    for line in rows.splitlines():
        table, kind = line.split("|")
        granted.setdefault(table, set()).add(kind)
    assert granted == EXPECTED


_AS_APP = """
import psycopg
with psycopg.connect("host=/run/pgbouncer port=6432 dbname=pgstack user=app", autocommit=True) as c:
    for sql in ("DELETE FROM orders WHERE false", "DELETE FROM users WHERE false",
                "UPDATE alembic_version SET version_num = version_num"):
        try:
            c.execute(sql)
        except psycopg.errors.InsufficientPrivilege as exc:
            print("DENIED", exc.sqlstate)
        else:
            print("ALLOWED", sql)
"""


def test_deletes_and_migration_bookkeeping_are_refused_on_the_apis_own_path(stack: Stack) -> None:
    code, out = stack.exec("api", "python3", "-c", _AS_APP, user="app")
    assert code == 0, out
    assert out.split().count("DENIED") == 3 and "ALLOWED" not in out, out
