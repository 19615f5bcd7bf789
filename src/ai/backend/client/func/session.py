"""``ComputeSession``: create, run code in, inspect and destroy compute sessions.

Sessions are addressed by name (``/session/{name}``) from API v5 on; API v4 servers get
the legacy ``/kernel`` paths and the ``clientSessionToken`` field.
"""

from __future__ import annotations

import io
import re
import secrets
import tarfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, cast
from urllib.parse import quote
from uuid import UUID

from ..app_options import AppArgumentValue, app_option_params
from ..exceptions import BackendClientError
from ..naming import validate_session_name
from ..request import AttachedFile, Request, Response
from ..session import api_session
from ..sse import SSEContextManager, connect_events
from ..transfer import ProgressLine as _ProgressLine
from ..transfer import ProgressReader as _ProgressReader
from ..types import PaginatedResult, Undefined, undefined
from ..ws import StreamPty, WebSocketContextManager, WebSocketResponse, connect_websocket
from .base import BaseFunction, api_function

__all__ = ("ComputeSession", "DEFAULT_LIST_FIELDS", "MAX_PAGE_SIZE", "validate_session_name")

MAX_PAGE_SIZE = 100
DEFAULT_LIST_FIELDS: tuple[str, ...] = (
    "name",
    "session_id",
    "image",
    "type",
    "status",
    "status_info",
    "status_changed",
    "result",
)
"""GraphQL fields fetched by :meth:`ComputeSession.paginated_list` unless told otherwise."""

_MODE_ALIASES = {"continued": "continue", "user-input": "input"}
_EXEC_MODES = frozenset({"query", "continue", "input", "batch", "complete"})
_QUOTE_SAFE = "~()*!.'"


def _api_version() -> tuple[int, str]:
    session = api_session.get()
    if session is None:
        raise RuntimeError("API functions must be called inside the context of a valid API session")
    return session.api_version


def _prefix() -> str:
    return "kernel" if _api_version()[0] <= 4 else "session"


def _split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """Return the bodies of the parts of a multipart payload."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        raise BackendClientError("The multipart response has no boundary")
    delimiter = b"--" + m.group(1).encode("latin-1")
    parts: list[bytes] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        header_end = chunk.find(b"\r\n\r\n")
        if header_end < 0:
            continue
        payload = chunk[header_end + 4 :]
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


class ComputeSession(BaseFunction):
    """A compute session, addressed by its name (or by its id after :meth:`from_session_id`).

    For multi-container sessions every method acts on the main container only, except
    :meth:`destroy` and :meth:`restart`.
    """

    id: UUID | None
    name: str | None
    owner_access_key: str | None
    created: bool
    status: str
    status_info: str | None
    service_ports: list[dict[str, Any]]
    domain: str
    group: str

    def __init__(self, name: str | None, owner_access_key: str | None = None) -> None:
        self.id = None
        self.name = name
        self.owner_access_key = owner_access_key
        self.created = False
        self.status = ""
        self.status_info = None
        self.service_ports = []
        self.domain = ""
        self.group = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} id={self.id} status={self.status!r}>"

    @classmethod
    def from_session_id(cls, session_id: UUID | str) -> ComputeSession:
        """Address a session by its UUID instead of its name."""
        o = cls(None)
        o.id = UUID(str(session_id))
        return o

    def get_session_identity_params(self) -> dict[str, str]:
        """The ``sessionId`` or ``sessionName`` (and owner) parameters of this session."""
        if self.id is not None and self.name is None:
            return {"sessionId": str(self.id)}
        params = {"sessionName": str(self.name)}
        if self.owner_access_key:
            params["owner_access_key"] = self.owner_access_key
        return params

    @property
    def ref(self) -> str:
        """The path segment that addresses this session (its name, else its id)."""
        if self.name is not None:
            return self.name
        if self.id is not None:
            return str(self.id)
        raise BackendClientError("The compute session has neither a name nor an id")

    def _path(self, suffix: str = "") -> str:
        return f"/{_prefix()}/{quote(self.ref, safe=_QUOTE_SAFE)}{suffix}"

    def _owner_params(self) -> dict[str, str]:
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}

    # ---- class-level API functions ----

    @api_function
    @classmethod
    async def hello(cls) -> Any:
        """Return the server's root information (``GET /``)."""
        async with Request("GET", "/").fetch() as resp:
            return await resp.json()

    @api_function
    @classmethod
    async def paginated_list(
        cls,
        status: str | None = None,
        access_key: str | None = None,
        *,
        fields: Sequence[str] = DEFAULT_LIST_FIELDS,
        page_offset: int = 0,
        page_size: int = 20,
        filter: str | None = None,
        order: str | None = None,
    ) -> PaginatedResult[dict[str, Any]]:
        """Fetch one page of ``compute_session_list`` with the given GraphQL *fields*.

        *status* is one status or a comma-separated list of them.
        """
        return await cls._paginated_list(
            status,
            access_key,
            fields=fields,
            page_offset=page_offset,
            page_size=page_size,
            filter=filter,
            order=order,
        )

    @classmethod
    async def _paginated_list(
        cls,
        status: str | None,
        access_key: str | None,
        *,
        fields: Sequence[str],
        page_offset: int,
        page_size: int,
        filter: str | None,
        order: str | None,
    ) -> PaginatedResult[dict[str, Any]]:
        from .admin import Admin

        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"The page size must be between 1 and {MAX_PAGE_SIZE}.")
        if page_offset < 0:
            raise ValueError("The page offset must not be negative.")
        if not fields:
            raise ValueError("At least one field must be requested.")
        optional = {"status": status, "access_key": access_key, "filter": filter, "order": order}
        given = {k: v for k, v in optional.items() if v is not None}
        decls = "".join(f", ${k}: String" for k in given)
        args = "".join(f", {k}: ${k}" for k in given)
        query = (
            f"query($limit: Int!, $offset: Int!{decls}) {{ "
            f"compute_session_list(limit: $limit, offset: $offset{args}) {{ "
            f"items {{ {' '.join(fields)} }} total_count }} }}"
        )
        data = await Admin._query(query, {"limit": page_size, "offset": page_offset, **given})
        try:
            result = data["compute_session_list"]
            return PaginatedResult(
                total_count=int(result["total_count"]), items=list(result["items"]), fields=tuple(fields)
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BackendClientError(f"Unexpected GraphQL response: {e!r}") from None

    @api_function
    @classmethod
    async def get_task_logs(cls, task_id: str, *, chunk_size: int = 8192) -> AsyncIterator[bytes]:
        """Stream the logs of a batch task as byte chunks."""
        rqst = Request("GET", f"/{_prefix()}/_/logs", params={"taskId": task_id})
        async with rqst.fetch(stream=True) as resp:
            async for chunk in resp.iter_chunks(chunk_size):
                yield chunk

    @api_function
    @classmethod
    async def get_or_create(
        cls,
        image: str,
        *,
        name: str | None = None,
        type_: str = "interactive",
        starts_at: str | None = None,
        enqueue_only: bool = False,
        max_wait: int = 0,
        no_reuse: bool = False,
        dependencies: Sequence[str] | None = None,
        callback_url: str | None = None,
        mounts: Sequence[str] | None = None,
        mount_map: Mapping[str, str] | None = None,
        envs: Mapping[str, str] | None = None,
        startup_command: str | None = None,
        resources: Mapping[str, Any] | None = None,
        resource_opts: Mapping[str, Any] | None = None,
        cluster_size: int = 1,
        cluster_mode: Literal["single-node", "multi-node"] = "single-node",
        domain_name: str | None = None,
        group_name: str | None = None,
        bootstrap_script: str | None = None,
        tag: str | None = None,
        scaling_group: str | None = None,
        owner_access_key: str | None = None,
        preopen_ports: Sequence[int] | None = None,
        assign_agent: Sequence[str] | None = None,
    ) -> ComputeSession:
        """Create a compute session, or return the running one with the same *name* and image.

        Without *name* a random one is used, so a new session is always created.  The
        returned object's ``status`` is ``RUNNING``, ``PENDING`` (with *enqueue_only*),
        ``TIMEOUT`` (*max_wait* passed; it may still start later), ``ERROR``, ...
        """
        return await cls._get_or_create(
            image,
            name=name,
            type_=type_,
            starts_at=starts_at,
            enqueue_only=enqueue_only,
            max_wait=max_wait,
            no_reuse=no_reuse,
            dependencies=dependencies,
            callback_url=callback_url,
            mounts=mounts,
            mount_map=mount_map,
            envs=envs,
            startup_command=startup_command,
            resources=resources,
            resource_opts=resource_opts,
            cluster_size=cluster_size,
            cluster_mode=cluster_mode,
            domain_name=domain_name,
            group_name=group_name,
            bootstrap_script=bootstrap_script,
            tag=tag,
            scaling_group=scaling_group,
            owner_access_key=owner_access_key,
            preopen_ports=preopen_ports,
            assign_agent=assign_agent,
        )

    @classmethod
    async def _get_or_create(
        cls,
        image: str,
        *,
        name: str | None,
        type_: str,
        starts_at: str | None,
        enqueue_only: bool,
        max_wait: int,
        no_reuse: bool,
        dependencies: Sequence[str] | None,
        callback_url: str | None,
        mounts: Sequence[str] | None,
        mount_map: Mapping[str, str] | None,
        envs: Mapping[str, str] | None,
        startup_command: str | None,
        resources: Mapping[str, Any] | None,
        resource_opts: Mapping[str, Any] | None,
        cluster_size: int,
        cluster_mode: str,
        domain_name: str | None,
        group_name: str | None,
        bootstrap_script: str | None,
        tag: str | None,
        scaling_group: str | None,
        owner_access_key: str | None,
        preopen_ports: Sequence[int] | None,
        assign_agent: Sequence[str] | None,
    ) -> Any:
        session = api_session.get()
        if session is None:
            raise RuntimeError("API functions must be called inside the context of a valid API session")
        config = session.config
        version = session.api_version
        name = validate_session_name(name) if name is not None else f"pysdk-{secrets.token_hex(5)}"
        if cluster_size < 1:
            raise ValueError("The cluster size must be at least 1.")
        domain_name = domain_name if domain_name is not None else config.domain
        group_name = group_name if group_name is not None else config.group
        all_mounts = list(mounts or ())
        all_mounts.extend(m for m in config.vfolder_mounts if m not in all_mounts)
        creation_config: dict[str, Any] = {
            "mounts": all_mounts,
            "environ": dict(envs or {}),
            "resources": dict(resources or {}),
            "resource_opts": dict(resource_opts or {}),
            "scalingGroup": scaling_group,
        }
        params: dict[str, Any] = {
            "tag": tag,
            ("clientSessionToken" if version[0] <= 4 else "name"): name,
            "config": creation_config,
        }
        if version >= (6, "20220315"):
            params["dependencies"] = list(dependencies) if dependencies else None
            params["callback_url"] = callback_url
        if version >= (6, "20200815"):
            params["clusterSize"] = cluster_size
            params["clusterMode"] = cluster_mode
        else:
            creation_config["clusterSize"] = cluster_size
        if version >= (5, "20191215"):
            params["starts_at"] = starts_at
            params["bootstrap_script"] = bootstrap_script
            creation_config["mount_map"] = dict(mount_map or {})
            creation_config["preopen_ports"] = list(preopen_ports or [])
            if assign_agent:
                creation_config["agentList"] = list(assign_agent)
        if version >= (4, "20190615"):
            params.update(
                {
                    "owner_access_key": owner_access_key,
                    "domain": domain_name,
                    "group": group_name,
                    "type": type_,
                    "enqueueOnly": enqueue_only,
                    "maxWaitSeconds": max_wait,
                    "reuseIfExists": not no_reuse,
                    "startupCommand": startup_command,
                }
            )
        params["image" if version > (4, "20181215") else "lang"] = image
        rqst = Request("POST", f"/{_prefix()}")
        rqst.set_json(params)
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, dict):
            raise BackendClientError(f"Unexpected session creation response: {data!r}")
        o = cls(str(data.get("sessionName") or name), owner_access_key)
        session_id = data.get("sessionId")
        if session_id:
            try:
                o.id = UUID(str(session_id))
            except ValueError:
                o.id = None
        o.created = bool(data.get("created", True))
        o.status = str(data.get("status", "RUNNING"))
        o.status_info = str(data["statusInfo"]) if data.get("statusInfo") else None
        o.service_ports = list(data.get("servicePorts") or [])
        o.domain = domain_name
        o.group = group_name
        return o

    # ---- per-session API functions ----

    @api_function
    async def destroy(self, *, forced: bool = False) -> dict[str, Any] | None:
        """Terminate the session (killing running code); returns ``{"stats": ...}`` if sent."""
        params: dict[str, str] = self._owner_params()
        if forced:
            params["forced"] = "true"
        async with Request("DELETE", self._path(), params=params).fetch() as resp:
            if resp.status == 200 and resp.content.strip():
                data = await resp.json()
                return data if isinstance(data, dict) else {"result": data}
            return None

    @api_function
    async def restart(self) -> None:
        """Restart the session's containers, keeping their scratch directories."""
        async with Request("PATCH", self._path(), params=self._owner_params()).fetch():
            pass

    @api_function
    async def rename(self, new_id: str) -> None:
        """Rename the session."""
        validate_session_name(new_id)
        params = {"name": new_id, **self._owner_params()}
        async with Request("POST", self._path("/rename"), params=params).fetch():
            pass
        self.name = new_id

    @api_function
    async def interrupt(self) -> None:
        """Try to interrupt the running code (may silently have no effect)."""
        async with Request("POST", self._path("/interrupt"), params=self._owner_params()).fetch():
            pass

    @api_function
    async def complete(self, code: str, opts: Mapping[str, Any] | None = None) -> list[str]:
        """Return auto-completion candidates for *code* (empty if unsupported)."""
        opts = opts or {}
        rqst = Request("POST", self._path("/complete"), params=self._owner_params())
        rqst.set_json(
            {
                "code": code,
                "options": {
                    "row": int(opts.get("row", 0)),
                    "col": int(opts.get("col", 0)),
                    "line": opts.get("line", ""),
                    "post": opts.get("post", ""),
                },
            }
        )
        async with rqst.fetch() as resp:
            data = await resp.json()
        result = data.get("result", []) if isinstance(data, dict) else data
        return [str(c) for c in (result or [])]

    @api_function
    async def get_info(self) -> dict[str, Any]:
        """Return brief information about the session."""
        async with Request("GET", self._path(), params=self._owner_params()).fetch() as resp:
            data = await resp.json()
        return data if isinstance(data, dict) else {"result": data}

    @api_function
    async def get_logs(self) -> dict[str, Any]:
        """Return the console log of the main container (``{"result": {"logs": ...}}``)."""
        async with Request("GET", self._path("/logs"), params=self._owner_params()).fetch() as resp:
            data = await resp.json()
        return data if isinstance(data, dict) else {"result": {"logs": data}}

    @api_function
    async def execute(
        self,
        run_id: str | None = None,
        code: str | None = None,
        mode: str = "query",
        opts: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run code (``query``), continue a run (``continue``), send input (``input``) or
        run uploaded files (``batch`` with *opts* ``clean``/``build``/``exec``).

        Returns the execution result object (``runId``, ``status``, ``console``,
        ``exitCode``, ``options``, ``files``).
        """
        mode = _MODE_ALIASES.get(mode, mode)
        if mode not in _EXEC_MODES:
            raise BackendClientError(f"Invalid execution mode: {mode}")
        opts = opts or {}
        body: dict[str, Any]
        if mode == "complete":
            body = {
                "code": code or "",
                "options": {
                    "row": int(opts.get("row", 0)),
                    "col": int(opts.get("col", 0)),
                    "line": opts.get("line", ""),
                    "post": opts.get("post", ""),
                },
            }
        elif mode == "batch":
            body = {
                "mode": mode,
                "code": code or "",
                "runId": run_id,
                "options": {
                    "clean": opts.get("clean"),
                    "build": opts.get("build"),
                    "buildLog": bool(opts.get("buildLog", False)),
                    "exec": opts.get("exec"),
                },
            }
        else:
            if code is None:
                raise BackendClientError("The code argument must be a string, even when empty.")
            body = {"mode": mode, "code": code, "runId": run_id}
        rqst = Request("POST", self._path(), params=self._owner_params())
        rqst.set_json(body)
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
            raise BackendClientError(f"Unexpected execution response: {data!r}")
        return dict(data["result"])

    @api_function
    async def upload(
        self,
        files: Sequence[str | Path],
        basedir: str | Path | None = None,
        show_progress: bool = False,
    ) -> Response:
        """Upload local files into the session's ``/home/work``, keeping their paths
        relative to *basedir* (default: the current directory).
        """
        base_path = Path.cwd() if basedir is None else Path(basedir).resolve()
        paths = [Path(f).resolve() for f in files]
        rel_names: list[str] = []
        total = 0
        for p in paths:
            try:
                rel_names.append(p.relative_to(base_path).as_posix())
            except ValueError:
                raise BackendClientError(f'File "{p}" is outside of the base directory "{base_path}".') from None
            if not p.is_file():
                raise BackendClientError(f'"{p}" is not a regular file.')
            total += p.stat().st_size
        progress = _ProgressLine("Uploading files", total, show_progress)
        readers: list[_ProgressReader] = []
        try:
            for p in paths:
                readers.append(_ProgressReader(p, progress))
            rqst = Request("POST", self._path("/upload"), params=self._owner_params())
            rqst.attach_files(
                [
                    AttachedFile(rel, cast(IO[bytes], reader), "application/octet-stream")
                    for rel, reader in zip(rel_names, readers, strict=True)
                ]
            )
            async with rqst.fetch() as resp:
                return resp
        finally:
            for r in readers:
                r.close()
            progress.close()

    @api_function
    async def download(
        self,
        files: Sequence[str | Path],
        dest: str | Path = ".",
        show_progress: bool = False,
    ) -> dict[str, list[str]]:
        """Download files (relative to ``/home/work``) from the session into *dest*."""
        names = [str(f) for f in files]
        params: dict[str, Any] = {"files": names, **self._owner_params()}
        rqst = Request("GET", self._path("/download"), params=params)
        rqst.set_json({"files": names})
        progress = _ProgressLine("Downloading files", None, show_progress)
        chunks: list[bytes] = []
        try:
            async with rqst.fetch(stream=True) as resp:
                progress.total = resp.content_length
                async for chunk in resp.iter_chunks():
                    chunks.append(chunk)
                    progress.update(len(chunk))
                content_type = resp.headers.get("content-type", "")
        finally:
            progress.close()
        body = b"".join(chunks)
        tarballs = _split_multipart(body, content_type) if content_type.startswith("multipart/") else [body]
        Path(dest).mkdir(parents=True, exist_ok=True)
        file_names: list[str] = []
        for tarball in tarballs:
            try:
                with tarfile.open(fileobj=io.BytesIO(tarball)) as tarf:
                    tarf.extractall(path=dest, filter="data")
                    file_names.extend(tarf.getnames())
            except tarfile.FilterError as e:
                # e.g. a symlink to an absolute path: the archive is fine, extracting it here would not be.
                raise BackendClientError(f"Refused to extract a downloaded entry: {e}") from None
            except tarfile.TarError as e:
                raise BackendClientError(f"The downloaded archive is broken: {e}") from None
        return {"file_names": file_names}

    @api_function
    async def list_files(self, path: str | Path = ".") -> dict[str, Any]:
        """List a directory inside the session; ``files`` is a JSON string of entries."""
        rqst = Request("GET", self._path("/files"), params={"path": str(path), **self._owner_params()})
        rqst.set_json({"path": str(path)})
        async with rqst.fetch() as resp:
            data = await resp.json()
        return data if isinstance(data, dict) else {"files": data}

    @api_function
    @classmethod
    async def create_from_template(
        cls,
        template_id: str,
        *,
        name: str | Undefined = undefined,
        type_: str | Undefined = undefined,
        starts_at: str | None = None,
        enqueue_only: bool | Undefined = undefined,
        max_wait: int | Undefined = undefined,
        dependencies: Sequence[str] | None = None,
        callback_url: str | Undefined = undefined,
        no_reuse: bool | Undefined = undefined,
        image: str | Undefined = undefined,
        mounts: Sequence[str] | Undefined = undefined,
        mount_map: Mapping[str, str] | Undefined = undefined,
        envs: Mapping[str, str] | Undefined = undefined,
        startup_command: str | Undefined = undefined,
        resources: Mapping[str, Any] | Undefined = undefined,
        resource_opts: Mapping[str, Any] | Undefined = undefined,
        cluster_size: int | Undefined = undefined,
        cluster_mode: str | Undefined = undefined,
        domain_name: str | Undefined = undefined,
        group_name: str | Undefined = undefined,
        bootstrap_script: str | Undefined = undefined,
        tag: str | Undefined = undefined,
        scaling_group: str | Undefined = undefined,
        owner_access_key: str | Undefined = undefined,
    ) -> ComputeSession:
        """Create a session from the stored template *template_id*.

        Arguments left :data:`~ai.backend.client.types.undefined` keep the template's value; every given
        one replaces it whole (*mounts*, *envs* and *resources* are not merged with the template's).
        """
        if not isinstance(name, Undefined):
            validate_session_name(name)
        if not isinstance(cluster_size, Undefined) and cluster_size < 1:
            raise ValueError("The cluster size must be at least 1.")
        given: dict[str, Any] = {
            "name": name,
            "type": type_,
            "starts_at": starts_at,
            "enqueueOnly": enqueue_only,
            "maxWaitSeconds": max_wait,
            "dependencies": list(dependencies) if dependencies else None,
            "callback_url": callback_url,
            "reuseIfExists": undefined if isinstance(no_reuse, Undefined) else not no_reuse,
            "image": image,
            "startupCommand": startup_command,
            "cluster_size": cluster_size,
            "cluster_mode": cluster_mode,
            "domain": domain_name,
            "group": group_name,
            "bootstrap_script": bootstrap_script,
            "tag": tag,
            "owner_access_key": owner_access_key,
        }
        config: dict[str, Any] = {
            "mounts": undefined if isinstance(mounts, Undefined) else list(mounts),
            "mount_map": undefined if isinstance(mount_map, Undefined) else dict(mount_map),
            "environ": undefined if isinstance(envs, Undefined) else dict(envs),
            "resources": undefined if isinstance(resources, Undefined) else dict(resources),
            "resource_opts": undefined if isinstance(resource_opts, Undefined) else dict(resource_opts),
            "scalingGroup": scaling_group,
        }
        body: dict[str, Any] = {"template_id": str(template_id)}
        body.update({k: v for k, v in given.items() if v is not None and not isinstance(v, Undefined)})
        body["config"] = {k: v for k, v in config.items() if not isinstance(v, Undefined)}
        rqst = Request("POST", f"/{_prefix()}/_/create-from-template")
        rqst.set_json(body)
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, dict):
            raise BackendClientError(f"Unexpected session creation response: {data!r}")
        owner = None if isinstance(owner_access_key, Undefined) else owner_access_key
        o = cls(str(data.get("sessionName") or data.get("sessId") or ""), owner)
        if data.get("sessionId"):
            try:
                o.id = UUID(str(data["sessionId"]))
            except ValueError:
                o.id = None
        o.created = bool(data.get("created", True))
        o.status = str(data.get("status", "RUNNING"))
        o.status_info = str(data["statusInfo"]) if data.get("statusInfo") else None
        o.service_ports = list(data.get("servicePorts") or [])
        o.domain = "" if isinstance(domain_name, Undefined) else domain_name
        o.group = "" if isinstance(group_name, Undefined) else group_name
        return o

    # ---- lifecycle event streams ----

    def listen_events(
        self, scope: Literal["*", "session", "kernel"] = "*", *, auto_reconnect: bool = True
    ) -> SSEContextManager:
        """Open the lifecycle event stream of this session (``GET /events/session``).

        Use as ``async with sess.listen_events() as resp: async for ev in resp: ...`` (or ``with``
        under a sync ``Session``); each event has ``.event`` (``session_started``, ...) and ``.data``
        (a JSON string; ``.json()`` parses it). *scope* ``session`` or ``kernel`` keeps only
        ``session_*`` or ``kernel_*`` events. The stream ends (``server_close``) after the session's
        final event; ``ComputeSession("*")`` watches all the sessions you can see and never ends.
        """
        if scope not in ("*", "session", "kernel"):
            raise BackendClientError(f"The event scope must be '*', 'session' or 'kernel', not {scope!r}.")
        params: dict[str, str] = {"scope": scope}
        if self.id is not None:
            params["sessionId"] = str(self.id)
        else:
            params["name"] = self.ref
        if self.owner_access_key:
            params["ownerAccessKey"] = self.owner_access_key
        return connect_events(Request("GET", "/events/session", params=params), auto_reconnect=auto_reconnect)

    stream_events = listen_events

    # ---- WebSocket streams (AsyncSession only) and status history ----

    def stream_execute(
        self, code: str = "", *, mode: str = "query", opts: Mapping[str, Any] | None = None
    ) -> WebSocketContextManager[WebSocketResponse]:
        """Run code in streaming mode (``GET /stream/session/:id/execute``).

        ``async with sess.stream_execute(code) as stream:`` gives a socket whose TEXT messages are the
        Execution Result Objects of the run, continuations included (no run id to track):
        ``await stream.receive_json()``, or ``async for msg in stream`` (``msg.type``, ``msg.data``,
        ``msg.json()``). On ``waiting-input`` send the input with ``send_str``/``send_text``; the socket
        closes after ``finished``. *mode* is ``query`` or ``batch`` (*opts*: ``clean``/``build``/``exec``).
        """
        mode = _MODE_ALIASES.get(mode, mode)
        if mode not in ("query", "batch"):
            raise BackendClientError(f"Streaming execution supports the query and batch modes, not {mode!r}.")
        first = {"code": code, "mode": mode, "options": dict(opts or {})}

        async def _start(ws: WebSocketResponse) -> None:
            await ws.send_json(first)

        rqst = Request("GET", "/stream" + self._path("/execute"), params=self._owner_params())
        return connect_websocket(rqst, on_enter=_start)

    def stream_pty(self, *, app: str | None = None) -> WebSocketContextManager[StreamPty]:
        """Open a terminal (a login shell in the main container; ``GET /stream/session/:id/pty``).

        ``async with sess.stream_pty() as pty:`` then ``await pty.send_stdin("ls\\n")``,
        ``await pty.resize(rows, cols)``, ``await pty.restart()`` and ``async for chunk in pty`` (output
        bytes). Leaving the block closes the terminal and ends the shell.
        """
        params = self._owner_params()
        if app:
            params["app"] = app
        rqst = Request("GET", "/stream" + self._path("/pty"), params=params)
        return connect_websocket(rqst, response_cls=StreamPty)

    # ---- in-session apps (service ports) ----

    @api_function
    async def stream_app_info(self) -> list[dict[str, Any]]:
        """The apps of the session (``GET /stream/session/:id/apps``).

        Each item is ``{"name", "protocol", "ports": [container ports], "url_template"?,
        "allowed_arguments"?, "allowed_envs"?}``.
        """
        rqst = Request("GET", "/stream" + self._path("/apps"), params=self._owner_params())
        async with rqst.fetch() as resp:
            data = await resp.json()
        if isinstance(data, dict) and isinstance(data.get("apps"), list):
            data = data["apps"]
        if not isinstance(data, list) or not all(isinstance(a, dict) and "name" in a for a in data):
            raise BackendClientError(f"Unexpected app list: {data!r}")
        return [dict(a) for a in data]

    @api_function
    async def start_service(
        self,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
        arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None = None,
        redirect: str | None = None,
        login_session_token: str | None = None,
    ) -> dict[str, Any]:
        """Start *app* and get a browser link to it through the server's app proxy
        (``POST /session/:id/start-service``).

        Returns ``{"token", "wsproxy_addr", "url"}``: open ``url`` (one use, valid for a minute).
        *port* picks one container port of a multi-port app; *envs* and *arguments* must be among
        the app's ``allowed_envs``/``allowed_arguments`` (see :meth:`stream_app_info`); *redirect* is
        the path the browser lands on (e.g. ``/lab``).
        """
        if not app:
            raise BackendClientError("The app name must not be empty.")
        try:
            options = app_option_params(port=port, envs=envs, arguments=arguments)
        except ValueError as e:
            raise BackendClientError(str(e)) from None
        body: dict[str, Any] = {"app": app, **options}
        if "port" in body:
            body["port"] = int(body["port"])
        if redirect is not None:
            body["redirect"] = redirect
        if login_session_token is not None:
            body["login_session_token"] = login_session_token
        rqst = Request("POST", self._path("/start-service"), params=self._owner_params())
        rqst.set_json(body)
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, dict):
            raise BackendClientError(f"Unexpected start-service response: {data!r}")
        if not data.get("url") and data.get("token") and data.get("wsproxy_addr"):
            # An app proxy that answers only the token: its auth route turns it into a circuit (ADR 0012).
            base = str(data["wsproxy_addr"]).rstrip("/")
            data["url"] = f"{base}/v2/proxy/auth?token={quote(str(data['token']), safe='')}"
        return data

    @api_function
    async def shutdown_service(self, name: str) -> dict[str, Any] | None:
        """Stop the app *name* in the session (``POST /session/:id/shutdown-service``)."""
        rqst = Request("POST", self._path("/shutdown-service"), params=self._owner_params())
        rqst.set_json({"service_name": name})
        async with rqst.fetch() as resp:
            if resp.status == 204 or not resp.content.strip():
                return None
            data = await resp.json()
        return data if isinstance(data, dict) else {"result": data}

    def _stream_app_proxy(
        self,
        route: Literal["tcpproxy", "httpproxy"],
        app: str,
        port: int | None,
        envs: Mapping[str, str] | None,
        arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None,
    ) -> WebSocketContextManager[WebSocketResponse]:
        if not app:
            raise BackendClientError("The app name must not be empty.")
        try:
            options = app_option_params(port=port, envs=envs, arguments=arguments)
        except ValueError as e:
            raise BackendClientError(str(e)) from None
        params = {"app": app, **options, **self._owner_params()}
        return connect_websocket(Request("GET", "/stream" + self._path(f"/{route}"), params=params))

    def stream_tcpproxy(
        self,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
        arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None = None,
    ) -> WebSocketContextManager[WebSocketResponse]:
        """One TCP connection to *app* in the session, as a WebSocket (``GET /stream/session/:id/tcpproxy``).

        ``async with sess.stream_tcpproxy("sshd") as ws:`` then ``await ws.send_bytes(...)`` and
        ``await ws.receive()`` (BINARY messages carry the bytes; ``CLOSED`` when the app closed the
        connection). The server starts the app first if needed. Open one socket per TCP connection;
        :class:`ai.backend.client.app_proxy.LocalAppProxy` does that for a local listening port.
        """
        return self._stream_app_proxy("tcpproxy", app, port, envs, arguments)

    def stream_httpproxy(
        self,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
        arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None = None,
    ) -> WebSocketContextManager[WebSocketResponse]:
        """Like :meth:`stream_tcpproxy` on the ``httpproxy`` route (the same wire; kept for old clients)."""
        return self._stream_app_proxy("httpproxy", app, port, envs, arguments)

    @api_function
    async def get_status_history(self) -> dict[str, Any]:
        """The status transitions of the session: ``{"result": {status: ISO 8601 time, ...}}``."""
        async with Request("GET", self._path("/status-history"), params=self._owner_params()).fetch() as resp:
            data = await resp.json()
        return data if isinstance(data, dict) else {"result": data}
