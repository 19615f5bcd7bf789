"""One request to open an app (a stream's query string or ``start-service``'s body): whose session it names,
the request checked completely before the agent is asked to start anything, then the start itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ai.backend.common.contracts.agent import ServiceOptions
from ai.backend.common.problems import InvalidAPIParameters, SessionNotFound

from ..agent_client import AgentRPC
from ..auth import AuthContext
from ..models import KernelRow, SessionRow
from ..models.sessions import select_with_main_kernel
from ..registry import SessionRegistry
from ..sessions.kernel_proxy import SessionNotRunning
from ..sessions.status import SessionStatus as S
from .launch import AppEndpoint, start_app
from .options import parse_options
from .ports import ServicePort, choose_container_port, find_app, parse_port

__all__ = ["AppRequest", "app_session", "check_running"]

MAX_APP_NAME = 128


@dataclass(frozen=True)
class AppRequest:
    """A checked request: the app, the container port it reaches and the user's options."""

    app: ServicePort
    container_port: int
    options: ServiceOptions

    @classmethod
    def parse(
        cls,
        kernel: KernelRow,
        session: SessionRow,
        *,
        app: Any,
        port: Any = None,
        envs: Any = None,
        arguments: Any = None,
    ) -> AppRequest:
        """Check the request against the kernel's apps: a 400 for a missing or malformed field, a 404
        ``app-not-found`` for an app the kernel does not offer."""
        if not isinstance(app, str) or not app:
            raise InvalidAPIParameters("'app' (or 'service'), the name of the app, is required.")
        if len(app) > MAX_APP_NAME:
            raise InvalidAPIParameters(f"'app' is longer than {MAX_APP_NAME} characters.")
        found = find_app(kernel.service_ports, app, session.name)
        container_port = choose_container_port(found, parse_port(port))
        return cls(found, container_port, parse_options(found, envs, arguments))

    async def start(self, rpc: AgentRPC, kernel: KernelRow) -> AppEndpoint:
        """Start the app through the kernel's agent (see :func:`.launch.start_app`)."""
        return await start_app(rpc, kernel, self.app, self.container_port, self.options)


async def app_session(
    reg: SessionRegistry, caller: AuthContext, ref: str, owner_access_key: str | None
) -> tuple[SessionRow, KernelRow]:
    """The session (and main kernel) whose apps a request opens: the caller's own or, with
    ``owner_access_key``, another key's (admins), as for every session call; an admin may also name any
    session of their domain (superadmins: any session) by its id alone, as for the session events."""
    owner = await reg.resolve_owner(caller, owner_access_key)
    async with reg.db() as db:
        try:
            return await reg.find_session_and_kernel(db, ref, owner)
        except SessionNotFound:
            if not caller.is_admin or owner_access_key is not None:
                raise
            try:
                sid = uuid.UUID(ref)
            except ValueError:
                raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.") from None
            row = (await db.execute(select_with_main_kernel().where(SessionRow.id == sid))).first()
    if row is None or row[1] is None or not (caller.is_superadmin or row[0].domain_name == caller.domain_name):
        raise SessionNotFound(f"Session {ref!r} does not exist or is not visible to you.")
    return row[0], row[1]


def check_running(session: SessionRow, kernel: KernelRow) -> None:
    """Apps are opened in RUNNING sessions only (409), whose main kernel has an agent (404)."""
    if session.status != S.RUNNING:
        raise SessionNotRunning(
            f"Session {session.name!r} is {session.status}, not RUNNING; its apps cannot be opened."
        )
    if not kernel.agent_addr:
        raise SessionNotFound(f"Session {session.name!r} has no running kernel.")
