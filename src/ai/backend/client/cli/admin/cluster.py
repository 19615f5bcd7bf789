"""``backend.ai admin cluster status [--output json]`` (superadmins): the managers (which one leads), the agents, the
queue depth, the storage volumes and the versions, from ``GET /admin/cluster`` (ADR 0014)."""

from __future__ import annotations

from typing import Any

import click

from ..core import get_cli_context
from ._common import emit_json, run_api

__all__ = ("cluster",)


@click.group()
def cluster() -> None:
    """The cluster as a whole (superadmins)."""


def _table(rows: list[list[str]], headings: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [headings, *rows]) for i in range(len(headings))]
    for r in [headings, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


@cluster.command()
@click.option(
    "--output",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Output style (default: the global --output).",
)
def status(output: str | None) -> None:
    """Show the managers and the leader, the agents, the queue depth, the storage volumes and the versions."""
    doc = run_api(lambda api: api.System.get_cluster_status())
    if output == "json" or (output is None and get_cli_context().json_output):
        emit_json(doc)
        return
    managers = doc.get("managers") or []
    click.echo(
        f"Managers ({doc.get('shape')} on {doc.get('database')}{' + Redis' if doc.get('redis') else ''}); "
        f"leader: {doc.get('leader') or 'none'}"
    )
    _table(
        [
            [
                m["id"] + (" *" if m.get("this") else ""),
                m["address"],
                "alive" if m.get("alive") else "gone",
                "leader" if m.get("leader") else "",
                m.get("version") or "",
                (m.get("last_seen") or "")[:19],
            ]
            for m in managers
        ],
        ["ID", "ADDRESS", "STATE", "ROLE", "VERSION", "LAST SEEN (UTC)"],
    )
    agents = doc.get("agents") or {}
    click.echo(f"\nAgents: {agents.get('total', 0)} ({_counts(agents.get('by_status') or {})})")
    if agents.get("items"):
        _table(
            [[a["id"], a["status"], a["scaling_group"], a["addr"], a.get("version") or ""] for a in agents["items"]],
            ["ID", "STATUS", "SCALING GROUP", "ADDRESS", "VERSION"],
        )
    queue = doc.get("queue") or {}
    click.echo(
        f"\nQueue: {queue.get('pending', 0)} pending ({_counts(queue.get('pending_by_scaling_group') or {})}); "
        f"active sessions: {_counts(queue.get('by_status') or {})}"
    )
    volumes = doc.get("volumes") or []
    click.echo("\nStorage volumes:" + ("" if volumes else " none configured"))
    for v in volumes:
        if v.get("error"):
            click.echo(f"  {v['proxy']}: unreachable ({v['error']})")
        else:
            click.echo(f"  {v['host']} ({v.get('backend') or 'unknown backend'})")
    versions = doc.get("versions") or {}
    click.echo(
        f"\nVersions: API {versions.get('api')}, managers {_counts(versions.get('managers') or {})}, "
        f"agents {_counts(versions.get('agents') or {})}"
    )
