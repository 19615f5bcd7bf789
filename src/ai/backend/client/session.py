"""Client sessions: the HTTP connection pool, API version negotiation and the active-session context.

:class:`AsyncSession` runs the API functions as coroutines on the caller's event loop.
:class:`Session` offers the same functions as plain blocking calls: it runs them on a
private event loop in a worker thread.  Entering either one (``with``/``async with``)
makes it the current :data:`api_session`, which the API functions and
:class:`~ai.backend.client.request.Request` use implicitly.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from .config import (
    MIN_API_VERSION,
    APIConfig,
    format_api_version,
    get_config,
    parse_api_version,
)
from .exceptions import APIVersionWarning

if TYPE_CHECKING:
    from .func.admin import Admin
    from .func.agent import Agent
    from .func.auth import Auth
    from .func.bgtask import BackgroundTask
    from .func.domain import Domain
    from .func.dotfile import Dotfile
    from .func.group import Group
    from .func.image import Image
    from .func.keypair import KeyPair
    from .func.keypair_resource_policy import KeypairResourcePolicy
    from .func.resource import Resource
    from .func.scaling_group import ScalingGroup
    from .func.session import ComputeSession
    from .func.session_template import SessionTemplate
    from .func.system import System
    from .func.user import User
    from .func.vfolder import VFolder
    from .kernel import Kernel

__all__ = (
    "AsyncSession",
    "BaseSession",
    "Session",
    "api_session",
)

T = TypeVar("T")

api_session: ContextVar[BaseSession | None] = ContextVar("api_session", default=None)
"""The client session entered most recently in the current context (``None`` if none)."""


def build_url(endpoint: httpx.URL, rel_path: str) -> str:
    """Append *rel_path* (which may carry a query string) to the endpoint's path prefix."""
    base = str(endpoint).split("#", 1)[0].split("?", 1)[0].rstrip("/")
    return f"{base}/{rel_path.lstrip('/')}"


def make_http_client(config: APIConfig) -> httpx.AsyncClient:
    """Create the keep-alive HTTP client of a session with the configured timeouts."""
    timeout = httpx.Timeout(
        connect=config.connection_timeout or None,
        read=config.read_timeout or None,
        write=None,
        pool=None,
    )
    cookies: dict[str, str] | None = None
    if config.endpoint_type == "session":
        # The login of `backend.ai login` (session mode authenticates by the webserver's cookie).
        from .cookies import load_cookies

        cookies = load_cookies(str(config.endpoint))
    return httpx.AsyncClient(
        verify=not config.skip_sslcert_validation,
        timeout=timeout,
        headers={"User-Agent": config.user_agent},
        follow_redirects=False,
        cookies=cookies,
    )


async def _negotiate_api_version(client: httpx.AsyncClient, config: APIConfig) -> tuple[int, str]:
    """Ask ``GET {endpoint}/`` for the server's API version and return min(server, client).

    Falls back to the configured version if no endpoint answers usefully.
    """
    client_version = parse_api_version(config.version)
    probe_path = "func/" if config.endpoint_type == "session" else ""
    for _ in range(len(config.endpoints)):
        try:
            resp = await client.get(build_url(config.endpoint, probe_path))
            resp.raise_for_status()
            server_version = parse_api_version(str(resp.json()["version"]))
        except (httpx.ConnectError, httpx.ConnectTimeout):
            config.rotate_endpoints()
            continue
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return client_version
        if server_version > client_version:
            warnings.warn(
                f"The server API version ({format_api_version(server_version)}) is newer than "
                f"this client's ({format_api_version(client_version)}).",
                category=APIVersionWarning,
                stacklevel=2,
            )
        if server_version < MIN_API_VERSION:
            warnings.warn(
                f"The server API version ({format_api_version(server_version)}) is older than "
                f"the minimum this client supports ({format_api_version(MIN_API_VERSION)}).",
                category=APIVersionWarning,
                stacklevel=2,
            )
        return min(server_version, client_version)
    return client_version


class _SyncWorkerThread(threading.Thread):
    """A daemon thread that runs an event loop and executes coroutines submitted to it."""

    def __init__(self) -> None:
        super().__init__(name="backend.ai-client-worker", daemon=True)
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def execute(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* on the worker loop (in a copy of the caller's context) and wait for it."""
        ctx = contextvars.copy_context()
        cfut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def _on_done(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                cfut.cancel()
            elif (exc := task.exception()) is not None:
                cfut.set_exception(exc)
            else:
                cfut.set_result(task.result())

        def _start() -> None:
            task = self.loop.create_task(coro, context=ctx)
            task.add_done_callback(_on_done)

        self.loop.call_soon_threadsafe(_start)
        return cfut.result()

    def execute_generator(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async generator on the worker loop, one item at a time."""

        async def _next() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    item = self.execute(_next())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.execute(aclose())

    def stop(self) -> None:
        """Stop the loop and wait for the thread to finish."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.join()


class BaseSession(metaclass=abc.ABCMeta):
    """The common part of :class:`Session` and :class:`AsyncSession`.

    The API function classes are available as attributes (``ComputeSession``,
    ``Kernel``, ``Admin``, ``System``, ``Agent``, ``Auth``, ``BackgroundTask``, ``Domain``, ``Group``,
    ``Image``, ``KeyPair``, ``KeypairResourcePolicy``, ``Resource``, ``ScalingGroup``,
    ``User``, ``SessionTemplate``, ``Dotfile``, ``VFolder``).
    """

    ComputeSession: type[ComputeSession]
    Kernel: type[Kernel]
    Admin: type[Admin]
    System: type[System]
    Agent: type[Agent]
    Auth: type[Auth]
    BackgroundTask: type[BackgroundTask]
    Domain: type[Domain]
    Group: type[Group]
    Image: type[Image]
    KeyPair: type[KeyPair]
    KeypairResourcePolicy: type[KeypairResourcePolicy]
    Resource: type[Resource]
    ScalingGroup: type[ScalingGroup]
    User: type[User]
    SessionTemplate: type[SessionTemplate]
    Dotfile: type[Dotfile]
    VFolder: type[VFolder]

    http_client: httpx.AsyncClient
    api_version: tuple[int, str]

    def __init__(self, *, config: APIConfig | None = None, proxy_mode: bool = False) -> None:
        from .func.admin import Admin
        from .func.agent import Agent
        from .func.auth import Auth
        from .func.bgtask import BackgroundTask
        from .func.domain import Domain
        from .func.dotfile import Dotfile
        from .func.group import Group
        from .func.image import Image
        from .func.keypair import KeyPair
        from .func.keypair_resource_policy import KeypairResourcePolicy
        from .func.resource import Resource
        from .func.scaling_group import ScalingGroup
        from .func.session import ComputeSession
        from .func.session_template import SessionTemplate
        from .func.system import System
        from .func.user import User
        from .func.vfolder import VFolder
        from .kernel import Kernel

        self._closed = False
        self._config = config if config is not None else get_config()
        self._proxy_mode = proxy_mode
        self._context_token: Token[BaseSession | None] | None = None
        self.api_version = parse_api_version(self._config.version)
        self.ComputeSession = ComputeSession
        self.Kernel = Kernel
        self.Admin = Admin
        self.System = System
        self.Agent = Agent
        self.Auth = Auth
        self.BackgroundTask = BackgroundTask
        self.Domain = Domain
        self.Group = Group
        self.Image = Image
        self.KeyPair = KeyPair
        self.KeypairResourcePolicy = KeypairResourcePolicy
        self.Resource = Resource
        self.ScalingGroup = ScalingGroup
        self.User = User
        self.SessionTemplate = SessionTemplate
        self.Dotfile = Dotfile
        self.VFolder = VFolder

    @property
    def proxy_mode(self) -> bool:
        """If true, opening the session skips the API version negotiation."""
        return self._proxy_mode

    @property
    def closed(self) -> bool:
        """Whether the session has been closed."""
        return self._closed

    @property
    def config(self) -> APIConfig:
        """The configuration used by this session."""
        return self._config

    @abc.abstractmethod
    def open(self) -> Awaitable[None] | None:
        """Make this the current session and negotiate the API version."""

    @abc.abstractmethod
    def close(self) -> Awaitable[None] | None:
        """Release the connections (and the worker thread)."""

    @abc.abstractmethod
    def run_api(self, result: Any) -> Any:
        """Turn the coroutine (or async generator) of an API function into this session's result."""

    def _enter_context(self) -> None:
        self._context_token = api_session.set(self)

    def _leave_context(self) -> None:
        if self._context_token is None:
            return
        try:
            api_session.reset(self._context_token)
        except ValueError:  # closed from another context
            if api_session.get() is self:
                api_session.set(None)
        self._context_token = None


class Session(BaseSession):
    """A blocking client session: API functions are called like plain functions.

    Server-sent event streams work here too (with plain ``with``); WebSocket streams (``stream_execute``,
    ``stream_pty``) need an :class:`AsyncSession`.
    """

    def __init__(self, *, config: APIConfig | None = None, proxy_mode: bool = False) -> None:
        super().__init__(config=config, proxy_mode=proxy_mode)
        self._worker_thread = _SyncWorkerThread()
        self._worker_thread.start()

        async def _create() -> httpx.AsyncClient:
            return make_http_client(self._config)

        self.http_client = self._worker_thread.execute(_create())

    @property
    def worker_thread(self) -> _SyncWorkerThread:
        """The thread whose event loop executes the API functions."""
        return self._worker_thread

    def open(self) -> None:
        """Make this the current session and negotiate the API version."""
        self._enter_context()
        if not self._proxy_mode:
            self.api_version = self._worker_thread.execute(_negotiate_api_version(self.http_client, self._config))

    def close(self) -> None:
        """Close the connections and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._worker_thread.execute(self.http_client.aclose())
        finally:
            self._worker_thread.stop()
            self._leave_context()

    def run_api(self, result: Any) -> Any:
        """Run the coroutine on the worker loop and return its value (or iterate a generator)."""
        if inspect.isasyncgen(result):
            return self._worker_thread.execute_generator(result)
        return self._worker_thread.execute(result)

    def __enter__(self) -> Session:
        if self._closed:
            raise RuntimeError("Cannot reuse a closed session")
        self.open()
        _announce(self)
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        self.close()
        return False


class AsyncSession(BaseSession):
    """A client session whose API functions are coroutines."""

    def __init__(self, *, config: APIConfig | None = None, proxy_mode: bool = False) -> None:
        super().__init__(config=config, proxy_mode=proxy_mode)
        self.http_client = make_http_client(self._config)

    async def _aopen(self) -> None:
        self._enter_context()
        if not self._proxy_mode:
            self.api_version = await _negotiate_api_version(self.http_client, self._config)

    def open(self) -> Awaitable[None]:
        """Make this the current session and negotiate the API version."""
        return self._aopen()

    async def _aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.http_client.aclose()
        finally:
            self._leave_context()

    def close(self) -> Awaitable[None]:
        """Close the connections."""
        return self._aclose()

    def run_api(self, result: Any) -> Any:
        """Return the coroutine or async generator as is, for the caller to await."""
        return result

    async def __aenter__(self) -> AsyncSession:
        if self._closed:
            raise RuntimeError("Cannot reuse a closed session")
        await self.open()
        await _aannounce(self)
        return self

    async def __aexit__(self, *exc_info: object) -> Literal[False]:
        await self.close()
        return False


async def _fetch_announcement(session: BaseSession) -> None:
    handler = session.config.announcement_handler
    if handler is None:
        return
    from .exceptions import BackendError
    from .request import Request

    try:
        async with Request("GET", "/manager/announcement").fetch() as resp:
            payload = await resp.json()
    except BackendError:
        return  # the server may not provide announcements
    if isinstance(payload, dict) and payload.get("enabled") and payload.get("message"):
        handler(str(payload["message"]))


def _announce(session: Session) -> None:
    if session.config.announcement_handler is not None:
        session.worker_thread.execute(_fetch_announcement(session))


async def _aannounce(session: AsyncSession) -> None:
    if session.config.announcement_handler is not None:
        await _fetch_announcement(session)
