"""``backend.ai config``: show the active client configuration (the secret key masked)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .core import get_cli_context

if TYPE_CHECKING:
    from ..config import APIConfig

__all__ = ("config", "mask_secret", "describe_config")


def mask_secret(secret: str) -> str:
    """Show only the first 6 and last 10 characters of a (40-character) secret key."""
    if len(secret) < 24:
        return "*" * 24
    return secret[:6] + "*" * 24 + secret[-10:]


async def _probe_server() -> tuple[dict[str, Any] | None, str]:
    from ..config import format_api_version
    from ..exceptions import BackendError
    from ..session import AsyncSession

    async with AsyncSession() as api_sess:
        negotiated = format_api_version(api_sess.api_version)
        try:
            versions = await api_sess.System.get_versions()
        except BackendError:
            return None, negotiated
        return versions, negotiated


def describe_config(conf: APIConfig, versions: dict[str, Any] | None, negotiated: str) -> list[tuple[str, str]]:
    """The ``(label, value)`` lines that ``backend.ai config`` prints."""
    from .. import __version__

    lines = [
        ("API endpoint", f"{', '.join(str(e) for e in conf.endpoints)} (mode: {conf.endpoint_type})"),
        ("Client version", f"{__version__} (API: {conf.version})"),
    ]
    if versions is None:
        lines.append(("Server version", "(failed to fetch)"))
    else:
        lines.append(("Server version", f"{versions.get('manager', 'unknown')} (API: {versions.get('version')})"))
    lines.append(("Negotiated API version", negotiated))
    lines.append(("Domain name", f'"{conf.domain}"'))
    lines.append(("Group name", f'"{conf.group}"'))
    if conf.endpoint_type == "session":
        lines.append(("Access key", "(session mode: cookie login)"))
    elif conf.is_anonymous:
        lines.append(("Access key", "(this is an anonymous session)"))
    else:
        lines.append(("Access key", f'"{conf.access_key}"'))
        lines.append(("Secret key", f'"{mask_secret(conf.secret_key)}"' if conf.secret_key else "(not set)"))
    lines.append(("Signature hash type", conf.hash_type))
    lines.append(("Skip SSL certificate validation?", str(conf.skip_sslcert_validation)))
    return lines


@click.command()
def config() -> None:
    """Show the current client configuration and the server's version."""
    import asyncio

    cli = get_cli_context()
    conf = cli.get_config()
    versions, negotiated = asyncio.run(_probe_server())
    lines = describe_config(conf, versions, negotiated)
    if cli.json_output:
        click.echo(json.dumps({label: value for label, value in lines}, indent=2))
        return
    for label, value in lines:
        sep = " " if label.endswith("?") else ": "
        click.echo(f"{label}{sep}{value}")
