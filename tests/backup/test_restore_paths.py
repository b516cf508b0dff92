"""The restore paths a tired operator takes, on the shared backup stack: `make db-init` before a
backup; a database still carrying an earlier version's extension grant; a superuser psql session
and autovacuum on the database while it is replaced; a dump that cannot be restored; a safety
dump facing an aggressive retention; and where passwords must never appear."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.backup.conftest import BackupStack, last_event


def _restore(stack: BackupStack, name: str) -> None:
    restored = stack.make("restore", f"BACKUP={name}", "CONFIRM=1", timeout=400)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    stack.wait_ready()


def test_db_init_then_backup_then_restore(bstack: BackupStack) -> None:
    made = bstack.make("db-init")
    assert made.returncode == 0, made.stderr
    summary = bstack.backup()
    assert summary["verified"]["status"] == "ok"
    _restore(bstack, summary["backup"])


def test_a_dump_of_an_earlier_versions_database_verifies_and_restores_alike(
    bstack: BackupStack,
) -> None:
    # Earlier versions created pg_stat_statements in the app database, and db-init's
    # GRANT ... ON ALL TABLES then covered its view: every dump carried that grant.
    bstack.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; "
                "GRANT SELECT ON pg_stat_statements TO app")  # fmt: skip
    try:
        summary = bstack.backup()
        assert summary["verified"]["status"] == "ok"
        _restore(bstack, summary["backup"])
    finally:
        bstack.psql("DROP EXTENSION IF EXISTS pg_stat_statements")


def test_a_dump_that_make_restore_cannot_restore_never_counts_as_verified(
    bstack: BackupStack,
) -> None:
    # Only a superuser may create an event trigger: the owner role's restore cannot.
    bstack.psql("CREATE FUNCTION public.noop_trigger() RETURNS event_trigger LANGUAGE plpgsql "
                "AS $$ BEGIN END $$; CREATE EVENT TRIGGER noop ON ddl_command_end "
                "EXECUTE FUNCTION public.noop_trigger()")  # fmt: skip
    try:
        failed = bstack.backup_cli("run")
        assert failed.returncode == 1
        summary = last_event(failed.stdout, "backup")
        assert "test restore failed" in summary["error"] and "event trigger" in summary["error"]
        name = next(n for n in reversed(bstack.backups()) if not n.startswith("."))
        rows = bstack.psql("SELECT count(*) FROM users")
        refused = bstack.make("restore", f"BACKUP={name}", "CONFIRM=1", timeout=400)
        assert refused.returncode != 0 and "event trigger" in refused.stdout
        assert bstack.psql("SELECT count(*) FROM users") == rows  # the live data stayed
        bstack.wait_ready()  # the API is let back in
    finally:
        bstack.psql(
            "DROP EVENT TRIGGER IF EXISTS noop; DROP FUNCTION IF EXISTS public.noop_trigger()"
        )
    assert bstack.backup()["status"] == "ok"


@contextmanager
def _busy_database(stack: BackupStack) -> Iterator[None]:
    """A superuser psql session idle in a transaction on the database, and an autovacuum worker
    slowly vacuuming a table there."""
    stack.psql("ALTER SYSTEM SET autovacuum_naptime = '1s'")
    stack.psql("SELECT pg_reload_conf()")
    stack.psql("CREATE TABLE public.dusty AS SELECT g AS id FROM generate_series(1, 300000) g; "
               "ALTER TABLE public.dusty SET (autovacuum_vacuum_cost_delay = 100, "
               "autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0); "
               "UPDATE public.dusty SET id = id + 1")  # fmt: skip
    session = stack.container("postgres").exec_run(
        ["psql", "--dbname=pgstack", "--command=BEGIN; SELECT count(*) FROM users; "
         "SELECT pg_sleep(600)"], user="postgres", detach=True,
    )  # fmt: skip
    assert session is not None
    try:
        deadline = time.monotonic() + 90
        while True:
            kinds = stack.psql(
                "SELECT string_agg(DISTINCT backend_type || ':' || coalesce(usename, ''), ',') "
                "FROM pg_stat_activity WHERE datname = 'pgstack'"
            )
            if "autovacuum worker" in kinds and "client backend:postgres" in kinds:
                break
            assert time.monotonic() < deadline, f"no autovacuum worker and psql session: {kinds}"
            time.sleep(0.5)
        yield
    finally:
        stack.psql("ALTER SYSTEM RESET autovacuum_naptime")
        stack.psql("SELECT pg_reload_conf()")


def test_a_restore_ends_superuser_sessions_and_autovacuum_on_the_database(
    bstack: BackupStack,
) -> None:
    name = bstack.backup()["backup"]
    with _busy_database(bstack):
        _restore(bstack, name)
    assert bstack.psql("SELECT to_regclass('public.dusty') IS NULL") == "t"  # the dump's state


def test_a_safety_dump_outlives_any_retention_policy(bstack: BackupStack) -> None:
    name = bstack.backup()["backup"]
    _restore(bstack, name)
    safety = [n for n in bstack.backups() if n.endswith("-pre-restore")]
    assert safety
    # The harshest policy there is, twice: only the newest backup would stay...
    for _ in range(2):
        code, out = bstack.container("backup").exec_run(
            ["pgstack-backup", "run"], user="postgres",
            environment={"BACKUP_KEEP_DAILY": "0", "BACKUP_KEEP_WEEKLY": "0",
                         "BACKUP_KEEP_MONTHLY": "0"},
        )  # fmt: skip
        assert code == 0, out
    left = bstack.backups()
    assert name not in left  # ...retention works,
    assert set(safety) <= set(left)  # ...and the safety dumps are kept all the same.


def test_passwords_never_reach_statistics_logs_or_the_data_files(bstack: BackupStack) -> None:
    made = bstack.make("db-init")
    assert made.returncode == 0, made.stderr
    bstack.psql("CHECKPOINT")
    secrets = {n: bstack.secret(n) for n in ("app_owner_password", "app_password",
                                              "app_backup_password")}  # fmt: skip
    statements = bstack.psql("SELECT string_agg(query, E'\\n') FROM pg_stat_statements",
                             database="postgres")  # fmt: skip
    logs = bstack.container("postgres").logs().decode(errors="replace")
    for name, secret in secrets.items():
        assert secret not in statements, f"{name} in pg_stat_statements"
        assert secret not in logs, f"{name} in the server log"
        # Every file of the cluster -- what a physical backup copies -- statistics included.
        # -e: a generated secret may begin with "-", which grep would read as options.
        code, out = bstack.exec(
            "postgres", "grep", "-rlF", "-e", secret, "/var/lib/postgresql/data"
        )
        assert code == 1 and not out.strip(), f"{name} in {out}"
    assert "SCRAM-SHA-256$" in bstack.psql(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'"
    )


def test_the_backup_service_runs_as_the_clusters_owner_never_root(bstack: BackupStack) -> None:
    top = bstack.container("backup").top(ps_args="-o uid,pid,comm")
    assert {row[0] for row in top["Processes"]} == {"999"}, top["Processes"]  # postgres
    code, out = bstack.exec("backup", "touch", "/var/lib/postgresql/data/pgdata/probe",
                            user="postgres")  # fmt: skip
    assert code != 0 and "Read-only file system" in out  # the scheduler cannot write the cluster
