"""Idempotency-Key on POSTs (IETF httpapi draft "The Idempotency-Key HTTP Header Field").

The key's row is written in the same transaction as the POST's effect, together with the
response; so whatever happened to a first attempt -- committed, rolled back, or lost with the
connection during COMMIT -- a retry with the same key either finds the committed row and replays
its response, or finds nothing and runs the POST for the first time. Never twice:

- same key, same request body (compared by the SHA-256 of the validated body) -> the first
  response again, with `Idempotent-Replayed: true`;
- same key, another body -> 422 `idempotency_key_reused`;
- a retry arriving while the first attempt is still running waits for it (the primary key's
  row lock), then replays or runs;
- only successes are stored: an error rolls the transaction back, key included, so a retry runs
  again (nothing was done the first time);
- keys expire after PGSTACK_IDEMPOTENCY_TTL_S (24 h by default); an expired key is a new key.
  Each new key also deletes a few expired rows, so the table stays the size of one TTL of keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.errors import BadIdempotencyKey, KeyReused
from pgstack_api.tables import idempotency_keys as keys

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# The header's value: printable ASCII without spaces; the draft's quoted form ("...") is accepted
# and means the same key as the bare one.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
# Expired rows deleted with each new key: more than keys arrive, so the table cannot grow.
_PURGE_BATCH = 10


@dataclass(frozen=True, slots=True)
class Stored:
    """A response, as stored with its key and replayed to retries."""

    status: int
    body: str
    location: str | None = None


def parse_key(raw: str | None) -> str | None:
    """The key from the header's value; None without the header; 400 when malformed."""
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not all("\x21" <= c <= "\x7e" for c in raw):
        raise BadIdempotencyKey(MAX_KEY_LENGTH)
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1] or raw
    return raw


def fingerprint(canonical_body: str) -> str:
    return hashlib.sha256(canonical_body.encode()).hexdigest()


async def once(
    conn: AsyncConnection,
    *,
    operation: str,
    key: str,
    body_fingerprint: str,
    ttl: timedelta,
    work: Callable[[AsyncConnection], Awaitable[Stored]],
) -> tuple[Stored, bool]:
    """Run `work` once per (operation, key) inside the caller's transaction; returns the
    response and whether it is a replay."""
    now = datetime.now(UTC)
    await _purge_expired(conn, now)
    insert = _insert(conn.dialect.name).values(
        operation=operation,
        key=key,
        fingerprint=body_fingerprint,
        status=0,
        body="",
        expires_at=now + ttl,
    )
    # A live key is left alone; an expired one is taken over as if it were new.
    claim = insert.on_conflict_do_update(
        index_elements=[keys.c.operation, keys.c.key],
        set_={
            "fingerprint": insert.excluded.fingerprint,
            "status": 0,
            "body": "",
            "location": None,
            "expires_at": insert.excluded.expires_at,
        },
        where=keys.c.expires_at <= now,
    ).returning(keys.c.key)
    if (await conn.execute(claim)).first() is not None:
        stored = await work(conn)
        await conn.execute(
            sa.update(keys)
            .where(keys.c.operation == operation, keys.c.key == key)
            .values(status=stored.status, body=stored.body, location=stored.location)
        )
        return stored, False
    row = (
        await conn.execute(
            sa.select(keys.c.fingerprint, keys.c.status, keys.c.body, keys.c.location).where(
                keys.c.operation == operation, keys.c.key == key
            )
        )
    ).one()
    if row.fingerprint != body_fingerprint:
        raise KeyReused
    return Stored(row.status, row.body, row.location), True


def _insert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(keys) if dialect == "postgresql" else sqlite.insert(keys)


async def _purge_expired(conn: AsyncConnection, now: datetime) -> None:
    expired = (
        sa.select(keys.c.operation, keys.c.key)
        .where(keys.c.expires_at <= now)
        .limit(_PURGE_BATCH)
        # Concurrent POSTs purge different rows instead of queueing on the same ones.
        .with_for_update(skip_locked=True)
    )
    await conn.execute(sa.delete(keys).where(sa.tuple_(keys.c.operation, keys.c.key).in_(expired)))
