"""The SSH keypair of a session's owner, placed in its main kernel (``authorized_keys`` and
``/home/work/id_container``, ADR 0012) so that ``backend.ai ssh`` can log in.

The keypair row holds it (``ssh_public_key``, ``ssh_private_key``). A keypair without one gets a fresh
Ed25519 keypair at its first session start, stored on the row, so every session of that keypair accepts the
same key (as upstream, which generates it with the keypair).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.contracts.agent import SSHKeypair

from ..models import KeyPairRow
from .cluster import new_ssh_keypair

__all__ = ["owner_ssh_keypairs"]

KEY_COMMENT = "work@backend.ai"


async def _stored(db: AsyncSession, access_keys: list[str]) -> dict[str, SSHKeypair | None]:
    rows = await db.execute(
        select(KeyPairRow.access_key, KeyPairRow.ssh_public_key, KeyPairRow.ssh_private_key).where(
            KeyPairRow.access_key.in_(access_keys)
        )
    )
    return {ak: SSHKeypair(public_key=pub, private_key=priv) if pub and priv else None for ak, pub, priv in rows}


async def owner_ssh_keypairs(db: AsyncSession, access_keys: Iterable[str]) -> dict[str, SSHKeypair]:
    """The SSH keypair of each given keypair (unknown access keys are left out), generating and storing the
    missing ones in ``db``'s transaction (the caller commits)."""
    wanted = sorted(set(access_keys))
    found = await _stored(db, wanted)
    missing = [ak for ak, pair in found.items() if pair is None]
    for ak in missing:
        private, public = new_ssh_keypair(KEY_COMMENT)
        # Only where none is stored yet: a concurrent start's key, or one the user set meanwhile, wins.
        await db.execute(
            update(KeyPairRow)
            .where(
                KeyPairRow.access_key == ak,
                or_(KeyPairRow.ssh_public_key.is_(None), KeyPairRow.ssh_private_key.is_(None)),
            )
            .values(ssh_public_key=public, ssh_private_key=private)
        )
    if missing:
        found.update(await _stored(db, missing))
    return {ak: pair for ak, pair in found.items() if pair is not None}
