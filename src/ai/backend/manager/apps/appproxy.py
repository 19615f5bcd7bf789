"""The manager's side of the browser-facing app proxy (``[appproxy]``, ADR 0012): the tokens that let a
browser open one app, the shared-secret check of the proxy's calls to the manager, and the manager's calls
to the proxy (``DELETE /v2/sessions/{session_id}`` when a session ends).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from urllib.parse import quote

from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER, AppGrant, issue
from ai.backend.common.peer import PeerClient
from ai.backend.common.problems import AuthorizationFailed, InvalidAPIParameters, ProblemError, ServiceUnavailable

from ..auth import AuthContext
from ..config import AppProxySection
from ..models import KernelRow, SessionRow
from .launch import AppEndpoint

__all__ = ["AppProxyClient", "NoAppProxy", "app_token_answer", "check_proxy_secret", "check_redirect"]

log = logging.getLogger(__name__)

#: Seconds the manager waits for the proxy to forget a session (best effort, in the background).
FORGET_TIMEOUT = 5.0
MAX_REDIRECT = 2048


class NoAppProxy(ServiceUnavailable):
    slug, title = "no-app-proxy", "No app proxy is configured"


def check_redirect(raw: object) -> str:
    """The path the proxy sends the browser to after the token (``/`` by default): a path of the app itself,
    never another site (``//host`` or a scheme)."""
    if raw is None or raw == "":
        return "/"
    if not isinstance(raw, str) or len(raw) > MAX_REDIRECT:
        raise InvalidAPIParameters(f"'redirect' must be a path of at most {MAX_REDIRECT} characters.")
    if not raw.startswith("/") or raw.startswith("//") or "\\" in raw or any(ord(c) < 32 for c in raw):
        raise InvalidAPIParameters("'redirect' must be a path of the app starting with a single '/'.")
    return raw


def check_proxy_secret(config: AppProxySection | None, given: str | None) -> None:
    """Refuse a call of the app proxy that lacks the shared secret (always, when no proxy is configured: then
    there is no secret to present)."""
    if config is None:
        raise AuthorizationFailed("This manager has no [appproxy] configured: it takes no app proxy calls.")
    if not hmac.compare_digest((given or "").encode(), config.secret.encode()):
        raise AuthorizationFailed(f"Bad or missing {APPPROXY_SECRET_HEADER} header.")


def app_token_answer(
    config: AppProxySection,
    caller: AuthContext,
    session: SessionRow,
    kernel: KernelRow,
    endpoint: AppEndpoint,
    redirect: str,
) -> dict[str, str]:
    """``POST /session/:id/start-service``'s answer: a token for the caller to open the started app in the
    proxy, and the URL that redeems it."""
    grant = AppGrant(
        user=str(caller.user_uuid),
        access_key=caller.access_key,
        session_id=str(session.id),
        kernel_id=str(kernel.id),
        app=endpoint.app.name,
        protocol=endpoint.app.protocol,
        host=endpoint.host,
        port=endpoint.host_port,
        container_port=endpoint.container_port,
        is_admin=caller.is_admin,
        redirect=redirect,
    )
    token = issue(grant, config.secret)
    return {"token": token, "wsproxy_addr": config.url, "url": f"{config.url}/v2/proxy/auth?token={quote(token)}"}


class _ProxyPeer(PeerClient):
    peer = "app proxy"


class AppProxyClient:
    """Calls from the manager to its app proxy, authenticated with the shared secret."""

    def __init__(self, config: AppProxySection) -> None:
        self.config = config
        self._peer = _ProxyPeer(
            config.manager_url, {APPPROXY_SECRET_HEADER: config.secret}, limit_per_host=8, keepalive_timeout=15
        )

    async def forget_session(self, session_id: uuid.UUID) -> None:
        """Have the proxy close the circuits of an ended session; failures are logged, never raised (the proxy
        also asks the manager which sessions still run)."""
        try:
            answer = await self._peer.request("DELETE", f"/v2/sessions/{session_id}", timeout=FORGET_TIMEOUT)
        except ProblemError as e:  # not running, or not reachable: it will ask about its circuits itself
            log.info("the app proxy did not hear that session %s ended: %s", session_id, e.detail or e.title)
            return
        if answer.status >= 400 and answer.status != 404:
            log.warning("the app proxy answered %s to forgetting session %s", answer.status, session_id)

    async def close(self) -> None:
        await self._peer.close()
