"""The base of the clients one component uses to call another over HTTP (manager → agent, manager → storage
proxy, agent → manager): one keep-alive connection pool, a peer's problem+json answer raised again as a
:class:`ProblemError`, transport failures as 502/503 problems, and a bounded retry for idempotent calls.

On aiohttp, not httpx: ``benchmarks/bench_peer_transport.py`` measured aiohttp at about a seventh of httpx's
client CPU per small JSON call and over twenty times its throughput with 64 calls in flight (ADR 0002); every
execute is one such call.

A subclass names its peer (:attr:`PeerClient.peer`) and may override the hooks that turn failures into
problems (:meth:`~PeerClient.unreachable`, :meth:`~PeerClient.timed_out`, :meth:`~PeerClient.refused`,
:meth:`~PeerClient.malformed`, :meth:`~PeerClient.too_large`).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import AsyncIterator, Mapping
from types import EllipsisType
from typing import Any, NamedTuple

import aiohttp

from .logs import REQUEST_ID_HEADER, request_id_var
from .problems import BadGateway, ProblemError, ServiceUnavailable

__all__ = ["CONNECT_TIMEOUT", "PeerAnswer", "PeerClient", "PeerProblem", "problem_fields"]

#: Seconds to open a connection to a peer.
CONNECT_TIMEOUT = 5.0


class PeerAnswer(NamedTuple):
    """A peer's answer, read whole."""

    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]
    reason: str


class PeerProblem(ProblemError):
    """A peer answered with a problem document: its status (a 5xx becomes 502, the peer's failure is not the
    caller's), type and title are passed on, and the document is kept in ``data``."""

    def __init__(
        self, status: int, doc: Mapping[str, Any], default_title: str = "Peer error", default_slug: str = "peer-error"
    ) -> None:
        super().__init__(doc.get("detail") or doc.get("title") or default_title.lower())
        self.status = status if 400 <= status < 500 else 502
        self.slug = str(doc.get("type", default_slug)).rsplit("/", 1)[-1]
        self.title = doc.get("title", default_title)
        self.data = dict(doc)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def problem_fields(body: bytes) -> dict[str, Any]:
    """The JSON object of an error answer (``{}`` when it is not one)."""
    try:
        doc = jsonlib.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _with_request_id(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """``headers`` plus the current request's id, so the peer logs the call under the same id."""
    rid = request_id_var.get()
    if rid is None:
        return headers
    return {**headers, REQUEST_ID_HEADER: rid} if headers else {REQUEST_ID_HEADER: rid}


def _timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    # ``seconds`` bounds each wait for the peer's answer (like a read timeout), not the whole call.
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=seconds)


class PeerClient:
    """Calls to peers of one kind at ``base_url`` + path (or at full URLs, with an empty ``base_url``).

    ``headers`` go with every request (the shared secret); ``limit_per_host`` bounds the connections to one
    peer; idle connections are closed after ``keepalive_timeout`` seconds, which must be shorter than the peer
    keeps them (so this side always closes first and never sends on a connection the peer is closing).
    """

    peer = "peer"

    def __init__(
        self,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        limit_per_host: int = 64,
        keepalive_timeout: float = 30.0,
        default_timeout: float | None = 60.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._limit_per_host = limit_per_host
        self._keepalive = keepalive_timeout
        self.default_timeout = default_timeout
        self.retry_delay = retry_delay
        self._session: aiohttp.ClientSession | None = None

    # --- how failures become problems (overridable); ``target`` names the peer (its address by default) ---

    def unreachable(self, target: str, exc: BaseException) -> ProblemError:
        return BadGateway(f"Cannot reach the {self.peer} at {target}: {type(exc).__name__}.")

    def timed_out(self, target: str, method: str, path: str) -> ProblemError:
        return ServiceUnavailable(f"The {self.peer} at {target} did not answer in time.")

    def refused(self, target: str, method: str, path: str, answer: PeerAnswer) -> ProblemError:
        """The problem raised for an answer of status 400 or more (by default the peer's own, see
        :class:`PeerProblem`)."""
        return PeerProblem(
            answer.status,
            problem_fields(answer.body),
            f"{self.peer.capitalize()} error",
            f"{self.peer.replace(' ', '-')}-error",
        )

    def malformed(self, target: str, method: str, path: str) -> ProblemError:
        return BadGateway(f"The {self.peer} at {target} sent a malformed answer.")

    def too_large(self, target: str, size: int, limit: int) -> ProblemError:
        return BadGateway(
            f"The {self.peer} at {target} sent an answer of {size} bytes or more, over the limit of {limit}."
        )

    # --- calls ----------------------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._limit_per_host, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def _once(
        self,
        method: str,
        path: str,
        target: str,
        *,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None,
        timeout: float | None,
        limit: int | None,
    ) -> PeerAnswer:
        try:
            async with self._http().request(
                method,
                self.base_url + path,
                data=data,
                headers=_with_request_id(headers),
                params=params,
                timeout=_timeout(timeout),
            ) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if limit is None or (resp.content_length is not None and resp.content_length <= limit):
                    body = await resp.read()  # the hot path: one size check
                elif resp.content_length is not None:
                    raise _TooLarge(resp.content_length)
                else:
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        buf += chunk
                        if len(buf) > limit:
                            raise _TooLarge(len(buf))
                    body = bytes(buf)
                return PeerAnswer(resp.status, ctype, body, resp.headers, resp.reason or "")
        except _TooLarge as e:
            assert limit is not None
            raise self.too_large(target, e.size, limit) from None
        except TimeoutError:  # asyncio's and aiohttp's timeouts are TimeoutError subclasses
            raise self.timed_out(target, method, path) from None
        except (aiohttp.ClientError, OSError) as e:
            raise self.unreachable(target, e) from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout: float | EllipsisType | None = ...,
        limit: int | None = None,
        retries: int = 0,
        target: str | None = None,
    ) -> PeerAnswer:
        """One call to ``base_url + path``; the answer whatever its status.

        ``json`` (unless ``None``) is encoded as the body; ``timeout`` bounds each wait for the answer (``...``: the
        client's default, ``None``: no bound); ``limit``: the largest body taken (a larger one is
        :meth:`too_large`). Transport failures are raised as problems. With ``retries``, they and 5xx answers are
        tried again that many times, waiting ``retry_delay`` × attempt in between: for idempotent calls only.
        """
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        wait = self.default_timeout if isinstance(timeout, EllipsisType) else timeout
        who = target or self.base_url or path
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                answer = await self._once(
                    method, path, who, data=data, headers=headers, params=params, timeout=wait, limit=limit
                )
            except ProblemError:
                if last:
                    raise
            else:
                if answer.status < 500 or last:
                    return answer
            await asyncio.sleep(self.retry_delay * (attempt + 1))
        raise AssertionError("not reached: the last attempt returns or raises")

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        timeout: float | EllipsisType | None = ...,
        limit: int | None = None,
        retries: int = 0,
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> Any:
        """A call answered with JSON: the decoded answer (``None`` for 204 or an empty body); an answer of status
        400 or more is raised as :meth:`refused` makes it. Arguments as for :meth:`request`."""
        who = target or self.base_url or path
        answer = await self.request(
            method, path, json=json, timeout=timeout, limit=limit, retries=retries, headers=headers, target=who
        )
        if answer.status >= 400:
            raise self.refused(who, method, path, answer)
        if answer.status == 204 or not answer.body:
            return None
        try:
            return jsonlib.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            raise self.malformed(who, method, path) from None

    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        chunk_size: int = 1 << 16,
        target: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The body of a large answer as it arrives; an error status is raised as :meth:`refused` makes it."""
        who = target or self.base_url or path
        try:
            async with self._http().request(
                method,
                self.base_url + path,
                params=params,
                headers=_with_request_id(headers),
                timeout=_timeout(timeout),
            ) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise self.refused(
                        who,
                        method,
                        path,
                        PeerAnswer(
                            resp.status, resp.headers.get("Content-Type", ""), body, resp.headers, resp.reason or ""
                        ),
                    )
                async for chunk in resp.content.iter_chunked(chunk_size):
                    yield chunk
        except TimeoutError:
            raise self.timed_out(who, method, path) from None
        except (aiohttp.ClientError, OSError) as e:
            raise self.unreachable(who, e) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
