"""pgstack backup: scheduled, verified logical backups of the pgstack database, and restores."""

from __future__ import annotations

__version__ = "1.0.0"
