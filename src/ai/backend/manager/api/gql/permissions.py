"""Role checks of the admin GraphQL schema.

Resolvers refuse bad calls by raising :class:`~ai.backend.common.problems.ProblemError`
subclasses; the endpoint turns the first one into the HTTP status and problem body of the response.
"""

from __future__ import annotations

from collections.abc import Sequence

from ai.backend.common.problems import Forbidden

from .context import GQLContext

SUPERADMIN, ADMIN, USER, MONITOR = "superadmin", "admin", "user", "monitor"


def require_roles(ctx: GQLContext, roles: Sequence[str], action: str) -> None:
    """Refuse with 403 unless the caller's role is one of ``roles``."""
    if ctx.role not in roles:
        who = " or ".join(roles)
        raise Forbidden(f"{action} requires the {who} role; your role is {ctx.role}.")


def require_superadmin(ctx: GQLContext, action: str) -> None:
    """Refuse with 403 unless the caller is a superadmin."""
    require_roles(ctx, (SUPERADMIN,), action)


def scoped_domain(ctx: GQLContext, requested: str | None, action: str) -> str | None:
    """The domain a query may look at: any (None = all) for superadmins, the own one for others."""
    if ctx.role in (SUPERADMIN, MONITOR):
        return requested
    if requested is not None and requested != ctx.auth.domain_name:
        raise Forbidden(f"{action}: you may only look at your own domain ({ctx.auth.domain_name}).")
    return ctx.auth.domain_name
