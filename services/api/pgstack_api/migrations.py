"""Where the alembic scripts live and what their head is; shared by the API and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

# The image puts alembic.ini and alembic/ in /app; a source checkout has them beside the package.
_CANDIDATES = (
    Path.cwd() / "alembic.ini",
    Path(__file__).resolve().parent.parent / "alembic.ini",
    Path("/app/alembic.ini"),
)


def alembic_ini() -> Path:
    explicit = os.environ.get("PGSTACK_ALEMBIC_INI")
    if explicit:
        return Path(explicit)
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "alembic.ini not found in the current directory, beside the package or in /app; "
        "set PGSTACK_ALEMBIC_INI to its path"
    )


def alembic_config() -> Config:
    return Config(str(alembic_ini()))


def head_revision() -> str | None:
    """The newest revision the code knows, or None if the scripts are missing."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_current_head()
    except FileNotFoundError:
        return None
