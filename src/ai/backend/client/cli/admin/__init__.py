"""``backend.ai admin``: administrative commands, one module per entity (imported when invoked).

``admin session list|info`` and ``admin sessions`` are the session listing of
:mod:`ai.backend.client.cli.session`.  Both documented spellings of the agent and scaling-group
commands work: 22.03's ``admin agent info|list`` and ``admin scaling-group info|list|add|...`` (also
``admin scaling ...``), and 19.09's ``admin agent -i ID``, ``admin agents``, ``admin scaling-group -n NAME``,
``admin scaling-groups [add|update|delete|associate-scaling-group|dissociate-scaling-group]`` and
``admin list-scaling-groups GROUP``.
"""

from __future__ import annotations

import click

from ..core import LazyGroup
from ..main import CommandSpec

__all__ = ("ADMIN_COMMANDS", "admin")

_P = "ai.backend.client.cli.admin"
ADMIN_COMMANDS: dict[str, CommandSpec] = {
    "agent": CommandSpec(f"{_P}.agent:agent", "Agent (compute node) commands."),
    "agents": CommandSpec(f"{_P}.agent:list_", 'List agents (= "agent list", the 19.09 spelling).'),
    "cluster": CommandSpec(f"{_P}.cluster:cluster", "The cluster as a whole: managers, leader, agents, queue."),
    "domain": CommandSpec(f"{_P}.domain:domain", "Domain administration commands."),
    "group": CommandSpec(f"{_P}.group:group", "Group (project) administration commands."),
    "image": CommandSpec(f"{_P}.image:image", "Image administration commands."),
    "keypair": CommandSpec(f"{_P}.keypair:keypair", "Keypair administration commands."),
    "keypair-resource-policy": CommandSpec(
        f"{_P}.keypair_resource_policy:keypair_resource_policy", "Keypair resource policy commands."
    ),
    "resource": CommandSpec(f"{_P}.resource:resource", "Resource slot and preset queries."),
    "resource-preset": CommandSpec(f"{_P}.resource:resource_preset", "Resource preset administration commands."),
    "list-scaling-groups": CommandSpec(
        f"{_P}.scaling_group:get_available", 'Scaling groups usable in a group (= "scaling-group get-available").'
    ),
    "scaling-group": CommandSpec(
        f"{_P}.scaling_group:scaling_group", "Scaling group administration commands.", aliases=["scaling"]
    ),
    "scaling-groups": CommandSpec(
        f"{_P}.scaling_group:scaling_groups", 'Scaling groups (alone: "scaling-group list"; the 19.09 spelling).'
    ),
    "session": CommandSpec(f"{_P}.session:admin_session", "Session administration commands."),
    "sessions": CommandSpec("ai.backend.client.cli.session:list_sessions", 'List compute sessions (= "session list").'),
    "user": CommandSpec(f"{_P}.user:user", "User administration commands."),
}


@click.group(cls=LazyGroup, lazy_commands=ADMIN_COMMANDS)
def admin() -> None:
    """Administrative commands."""
