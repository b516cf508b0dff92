"""How database failures reach the client: 503 + Retry-After for outages, 4xx for the client's
own conflicts, never a 500 for an outage."""

from __future__ import annotations

import psycopg
import pytest
from pgstack_api.errors import OutcomeUnknown
from pgstack_api.errors import answer as classify_db_error
from pgstack_api.retry import DatabaseUnavailable
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc


def wrapped(orig: Exception) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)


@pytest.mark.parametrize(
    "exc",
    [
        DatabaseUnavailable("connection refused"),
        TimeoutError(),
        wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
        # PgBouncer reports its own trouble as protocol violations (08P01).
        wrapped(pg_errors.ProtocolViolation("server login has been failing, try again later")),
        wrapped(pg_errors.ProtocolViolation("query_wait_timeout")),
        wrapped(pg_errors.AdminShutdown("terminating connection due to administrator command")),
        wrapped(pg_errors.CannotConnectNow("the database system is starting up")),
        wrapped(pg_errors.TooManyConnections("sorry, too many clients already")),
        wrapped(pg_errors.QueryCanceled("canceling statement due to statement timeout")),
        # A cluster's node that is being promoted or demoted (tests/ha/test_faults.py).
        wrapped(pg_errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only tx")),
        sa_exc.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("connection is closed")),
        # A restore revokes the app role's CONNECT; PgBouncer relays the refused server login
        # as the first statement's error.
        wrapped(pg_errors.InsufficientPrivilege('permission denied for database "pgstack"')),
    ],
    ids=lambda e: type(getattr(e, "orig", e)).__name__,
)
def test_outages_are_503_database_unavailable(exc: BaseException) -> None:
    failure = classify_db_error(exc)
    assert failure is not None
    assert failure.status == 503
    assert failure.code == "database_unavailable"


def test_a_duplicate_is_409() -> None:
    failure = classify_db_error(wrapped(pg_errors.UniqueViolation("duplicate key value")))
    assert failure is not None and (failure.status, failure.code) == (409, "duplicate")


def test_persistent_serialization_failures_are_503_busy_not_500() -> None:
    failure = classify_db_error(wrapped(pg_errors.SerializationFailure("x")))
    assert failure is not None and (failure.status, failure.code) == (503, "database_busy")


def test_a_missing_reference_is_404() -> None:
    failure = classify_db_error(wrapped(pg_errors.ForeignKeyViolation("x")))
    assert failure is not None and failure.status == 404


def test_a_programming_error_is_left_to_the_catch_all_500() -> None:
    assert classify_db_error(wrapped(pg_errors.UndefinedTable("relation does not exist"))) is None


def test_an_unknown_commit_outcome_invites_a_retry_only_with_an_idempotency_key() -> None:
    keyed = classify_db_error(OutcomeUnknown(keyed=True))
    bare = classify_db_error(OutcomeUnknown(keyed=False))
    assert keyed is not None and bare is not None
    assert (keyed.status, keyed.code, keyed.retry_after) == (503, "commit_outcome_unknown", True)
    assert (bare.status, bare.code, bare.retry_after) == (503, "commit_outcome_unknown", False)
    assert "Idempotency-Key" in bare.message


def test_non_database_errors_are_not_classified() -> None:
    assert classify_db_error(ValueError("bug")) is None


def test_a_privilege_error_in_a_query_is_a_bug_not_an_outage() -> None:
    """Only the refused login (CONNECT revoked) means "away"; a missing table grant is a bug:
    no answer here, so the catch-all answers 500 and logs it."""
    failure = classify_db_error(wrapped(pg_errors.InsufficientPrivilege(
        "permission denied for table orders")))  # fmt: skip
    assert failure is None
