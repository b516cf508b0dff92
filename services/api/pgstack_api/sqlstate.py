"""What a database error means, in one table: retry, 503, the client's conflict, or a bug.

Retry (retry.py), the transaction helpers (db.py) and the HTTP answer (errors.py) all read this
module, so a SQLSTATE is classified once. PostgreSQL's codes: appendix A of its manual; PgBouncer
reports its own failures (login failing, query_wait_timeout) as 08P01.
"""

from __future__ import annotations

import enum

import psycopg
from sqlalchemy import exc as sa_exc


class Kind(enum.Enum):
    UNAVAILABLE = "unavailable"  # the database or pooler cannot serve now: 503 + Retry-After
    CONFLICT = "conflict"  # the transaction lost a race and was rolled back: run it again
    DUPLICATE = "duplicate"  # a unique value exists
    MISSING_REFERENCE = "missing_reference"  # a foreign key points nowhere
    CONSTRAINT = "constraint"  # another integrity rule (check, not null)
    BAD_TEXT = "bad_text"  # text the database cannot store (NUL, invalid encoding)
    LOCKED = "locked"  # SQLite: another writer holds the file; transient
    UNDEFINED_TABLE = "undefined_table"  # a table that does not exist: never migrated (health)
    OTHER = "other"  # a bug or an unexpected state: 500


# Exact codes first, then two-character classes. Ordered lookups: the first match wins.
_EXACT: dict[str, Kind] = {
    "40001": Kind.CONFLICT,  # serialization_failure
    "40P01": Kind.CONFLICT,  # deadlock_detected
    "57014": Kind.UNAVAILABLE,  # query_canceled (statement timeout): overloaded, retry later
    # read_only_sql_transaction: in a cluster, a write reached a node that is not (or no longer,
    # or not yet) the leader -- HAProxy follows Patroni's /primary a second or two behind a
    # promotion or a demotion. The next connection finds the leader: 503, retry later.
    "25006": Kind.UNAVAILABLE,
    "23505": Kind.DUPLICATE,  # unique_violation
    "23503": Kind.MISSING_REFERENCE,  # foreign_key_violation
    "22021": Kind.BAD_TEXT,  # character_not_in_repertoire (NUL in text)
    "22P05": Kind.BAD_TEXT,  # untranslatable_character
    "42P01": Kind.UNDEFINED_TABLE,  # undefined_table
}
_CLASSES: dict[str, Kind] = {
    "08": Kind.UNAVAILABLE,  # connection exception (PgBouncer's own errors are 08P01)
    "53": Kind.UNAVAILABLE,  # insufficient resources (too many connections)
    "57": Kind.UNAVAILABLE,  # operator intervention: admin/crash shutdown, cannot connect now
    "23": Kind.CONSTRAINT,  # integrity constraint violation
}

# The server ended the session (admin shutdown, crash shutdown, cannot connect now): the
# connection is gone, unlike a statement timeout (57014), which leaves it usable.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def driver_error(exc: BaseException) -> BaseException:
    """SQLAlchemy wraps the driver's exception; the driver's carries the SQLSTATE."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def sqlstate(exc: BaseException) -> str | None:
    inner = driver_error(exc)
    if isinstance(inner, psycopg.Error):
        return inner.sqlstate
    return None


def connection_lost(exc: BaseException) -> bool:
    """The server or pooler went away (psycopg reports no SQLSTATE then)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        return True
    inner = driver_error(exc)
    if isinstance(inner, psycopg.InterfaceError):
        return True  # "the connection is closed"
    if isinstance(inner, psycopg.OperationalError):
        state = inner.sqlstate
        return state is None or state.startswith("08") or state in _SESSION_ENDED
    return False


def classify_code(state: str) -> Kind:
    exact = _EXACT.get(state)
    if exact is not None:
        return exact
    return _CLASSES.get(state[:2], Kind.OTHER)


def classify(exc: BaseException) -> Kind | None:
    """The kind of a database exception; None when `exc` is not one."""
    inner = driver_error(exc)
    if _sqlite_locked(inner):
        return Kind.LOCKED
    if _sqlite_unique(inner):
        return Kind.DUPLICATE
    if type(inner).__name__ == "OperationalError" and "no such table" in str(inner):
        return Kind.UNDEFINED_TABLE  # SQLite's wording of 42P01
    state = sqlstate(exc)
    if state is not None:
        if state == "42501" and _locked_out(inner):
            return Kind.UNAVAILABLE
        return classify_code(state)
    if connection_lost(exc) or isinstance(exc, OSError):
        return Kind.UNAVAILABLE
    if isinstance(exc, (sa_exc.SQLAlchemyError, psycopg.Error)):
        return Kind.OTHER
    return None


def _locked_out(inner: BaseException) -> bool:
    """PgBouncer relays the server's refusal of its login as the client's first statement's
    error: "permission denied for database" (42501) is the app role's CONNECT being revoked --
    a restore locking the API out -- not a privilege bug in a query."""
    return "permission denied for database" in str(inner)


def _sqlite_locked(inner: BaseException) -> bool:
    # sqlite3.OperationalError: "database is locked" / "database table is locked"
    return type(inner).__name__ == "OperationalError" and "is locked" in str(inner)


def _sqlite_unique(inner: BaseException) -> bool:
    return type(inner).__name__ == "IntegrityError" and "UNIQUE constraint failed" in str(inner)
