"""``backend.ai mgr image ...``: build, list, alias and forget kernel images (operator commands)."""

from __future__ import annotations

import click


@click.group()
def image() -> None:
    """Kernel images: build them from recipes, list, alias and forget them."""
