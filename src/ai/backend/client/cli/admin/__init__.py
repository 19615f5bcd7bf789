"""``backend.ai admin``: administrative commands, one module per entity (imported when invoked).

``admin session list|info`` and ``admin sessions`` are the session listing of
:mod:`ai.backend.client.cli.session`.
"""

from __future__ import annotations

import click

from ..core import LazyGroup
from ..main import CommandSpec

__all__ = ("ADMIN_COMMANDS", "admin")

_P = "ai.backend.client.cli.admin"
ADMIN_COMMANDS: dict[str, CommandSpec] = {
    "agent": CommandSpec(f"{_P}.agent:agent", "Agent (compute node) commands."),
    "domain": CommandSpec(f"{_P}.domain:domain", "Domain administration commands."),
    "group": CommandSpec(f"{_P}.group:group", "Group (project) administration commands."),
    "image": CommandSpec(f"{_P}.image:image", "Image administration commands."),
    "keypair": CommandSpec(f"{_P}.keypair:keypair", "Keypair administration commands."),
    "keypair-resource-policy": CommandSpec(
        f"{_P}.keypair_resource_policy:keypair_resource_policy", "Keypair resource policy commands."
    ),
    "resource": CommandSpec(f"{_P}.resource:resource", "Resource slot and preset queries."),
    "resource-preset": CommandSpec(f"{_P}.resource:resource_preset", "Resource preset administration commands."),
    "scaling-group": CommandSpec(f"{_P}.scaling_group:scaling_group", "Scaling group administration commands."),
    "session": CommandSpec(f"{_P}.session:admin_session", "Session administration commands."),
    "sessions": CommandSpec("ai.backend.client.cli.session:list_sessions", 'List compute sessions (= "session list").'),
    "user": CommandSpec(f"{_P}.user:user", "User administration commands."),
}


@click.group(cls=LazyGroup, lazy_commands=ADMIN_COMMANDS)
def admin() -> None:
    """Administrative commands."""
