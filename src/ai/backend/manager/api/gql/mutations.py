"""What the admin GraphQL mutations share: the ``ok``/``msg`` payload base and commit-or-409.

Each mutation runs in one transaction, so a refused mutation changes nothing.
"""

from __future__ import annotations

import strawberry
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Conflict


@strawberry.type
class Payload:
    """The fields of every mutation payload; each payload type is a short subclass whose name is its GraphQL name."""

    ok: bool
    msg: str


async def commit_or_conflict(db: AsyncSession, what: str) -> None:
    """Commit; a unique or foreign-key violation becomes a 409 that names ``what``."""
    try:
        await db.commit()
    except IntegrityError as e:
        await db.rollback()
        raise Conflict(f"{what} conflicts with existing data: {_integrity_reason(e)}.") from None


def _integrity_reason(e: IntegrityError) -> str:
    text = str(e.orig).lower()
    if "unique" in text or "duplicate" in text:
        return "a record with the same key already exists"
    if "foreign key" in text:
        return "it is still referenced by other records, or refers to a missing one"
    return "a database constraint failed"
