"""The request context every admin GraphQL resolver gets as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.types import Info

if TYPE_CHECKING:
    from ...auth import AuthContext
    from ...context import ManagerContext
    from ...registry import SessionRegistry


@dataclass
class GQLContext:
    """What every resolver gets as ``info.context``."""

    auth: AuthContext
    db: async_sessionmaker[AsyncSession]
    registry: SessionRegistry
    state: ManagerContext  # the manager's shared services

    @property
    def role(self) -> str:
        """The caller's role (superadmin, admin, user or monitor)."""
        return self.auth.role


def context(info: Info) -> GQLContext:
    """The typed context of a resolver call."""
    ctx: GQLContext = info.context
    return ctx
