"""One-line hints after refusals that come from project (group) membership.

The manager refuses a new session of a user outside the requested project with
``No project (group) 'P' in domain 'D' that the user belongs to.`` (404), and folder commands
say ``No group 'P' that you are a member of.`` or, for a user in no project at all, that the
storage host is not allowed.  The hint names the command that fixes it:
``backend.ai admin group add-users P -d D USER_UUID`` (or the projects to pick with ``-g``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..session import AsyncSession

__all__ = ("format_no_project_hint", "membership_problem", "no_project_hint", "no_project_hint_sync")

_Q = r"""['"](?P<{}>[^'"]*)['"]"""
_EXPLICIT = (
    re.compile(
        r"No project \(group\) "
        + _Q.format("group")
        + r" in domain "
        + _Q.format("domain")
        + r" (?:that the user belongs to|for the owner)",
        re.I,
    ),
    re.compile(r"No group " + _Q.format("group") + r" that you are a member of", re.I),
    re.compile(r"You are not a member of the group " + _Q.format("group"), re.I),
)
# Said to a user in no project who creates a folder: the hosts allowed through projects are missing.
_HOST_FORBIDDEN = re.compile(r"You may not create folders on the storage host", re.I)


def membership_problem(exc: BaseException) -> tuple[bool, str | None, str | None] | None:
    """``(explicit, project, domain)`` when *exc* is a refusal that may come from project membership
    (``explicit``: the server says so; else only a user in no project gets a hint), else ``None``."""
    from ..exceptions import BackendAPIError

    if not isinstance(exc, BackendAPIError):
        return None
    text = exc.detail or ""
    for pattern in _EXPLICIT:
        m = pattern.search(text)
        if m is not None:
            found = m.groupdict()
            return True, found.get("group"), found.get("domain")
    if _HOST_FORBIDDEN.search(text):
        return False, None, None
    return None


def format_no_project_hint(
    project: str | None,
    domain: str | None,
    user: str | None,
    projects: Sequence[str] | None,
) -> str:
    """The hint text: the ``add-users`` command, and the user's *projects* (``None``: unknown)."""
    command = f"backend.ai admin group add-users {project or 'PROJECT'}"
    if domain:
        command += f" -d {domain}"
    command += f" {user or 'USER_UUID'}"
    if projects is None:  # unknown (the lookup failed)
        return f"you are not a member of the project {project or 'asked for'}; an admin can add you with: {command}"
    if projects:
        listed = ", ".join(projects)
        return (
            f"you are not in the project {project}; pick one of yours ({listed}) with -g/--group, "
            f"or an admin can add you with: {command}"
        )
    return f"you belong to no project; an admin can add you with: {command}"


async def _whoami(api: AsyncSession) -> Mapping[str, Any] | None:
    from ..exceptions import BackendError

    try:
        return await api.User.detail(None, fields=("uuid", "domain_name", "groups { id name }"))
    except (BackendError, OSError, ValueError):
        return None


async def no_project_hint(api: AsyncSession, exc: BaseException) -> str | None:
    """The hint for *exc* (looking up the caller's UUID and projects with *api*), or ``None``."""
    problem = membership_problem(exc)
    if problem is None:
        return None
    explicit, project, domain = problem
    me = await _whoami(api)
    projects: list[str] | None = None
    user = None
    if me is not None:
        user = str(me.get("uuid") or "") or None
        domain = domain or (str(me.get("domain_name") or "") or None)
        projects = [str(g.get("name")) for g in (me.get("groups") or []) if isinstance(g, Mapping)]
    if not explicit and (projects is None or projects):
        return None  # not evidently a membership problem
    return format_no_project_hint(project, domain, user, projects)


def no_project_hint_sync(exc: BaseException) -> str | None:
    """:func:`no_project_hint` from outside an event loop (the CLI's error handler); never raises."""
    if membership_problem(exc) is None:
        return None
    import asyncio

    from ..session import AsyncSession

    async def _main() -> str | None:
        async with AsyncSession() as api:
            return await no_project_hint(api, exc)

    try:
        return asyncio.run(_main())
    except Exception:  # noqa: BLE001 - a hint must never hide the error
        return None
