"""compose_changes: what in compose's dry run is a reason to act.

A dry run of `docker compose up` (community.docker.docker_compose_v2 in check mode) always plans
to start the exited one-shot jobs again (the migration job), which alone changes nothing worth a
release: the single VM's deploy (roles/pgstack) and the API tier's release (roles/pgstack_api)
both ask this one rule whether a host has anything to change.

    {{ plan.actions | default([]) | compose_changes(['pgstack-migrate-1']) }}
"""

from __future__ import annotations

from typing import Any


def compose_changes(actions: list[dict[str, Any]], one_shot: list[str]) -> list[dict[str, Any]]:
    """The planned actions, less restarting (status "Starting") a one-shot job's container."""
    return [
        action
        for action in actions
        if action.get("id") not in one_shot or action.get("status") != "Starting"
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"compose_changes": compose_changes}
