"""Short-lived tokens that open one app of one session for one user in the browser-facing app proxy.

The manager issues them (``POST /session/:id/start-service``) and the app proxy
(:mod:`ai.backend.appproxy`) checks them; both hold the same secret (``[appproxy] secret`` of the
manager, ``secret`` of the app proxy). A token is ``<payload>.<signature>``: the payload is the
base64url (unpadded) compact JSON of an :class:`AppGrant`, the signature the base64url HMAC-SHA256 of
the payload's text under the secret. Tokens expire after ``ttl`` seconds (default 60) and the proxy
accepts each ``nonce`` once, so a token that leaks from a browser's history cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field

#: How long a token may wait between the manager issuing it and the browser presenting it.
DEFAULT_TTL = 60.0
#: The header carrying the shared secret on manager ↔ app proxy calls.
APPPROXY_SECRET_HEADER = "X-BackendAI-AppProxy-Secret"


class BadAppToken(ValueError):
    """A token that is malformed, forged or expired; the message says which (safe to show)."""


@dataclass(frozen=True)
class AppGrant:
    """What a token allows: ``user`` (uuid) may reach ``app`` of ``session_id`` at ``host:port``."""

    user: str
    access_key: str
    session_id: str
    kernel_id: str
    app: str
    protocol: str  # http | tcp | preopen ...
    host: str  # where the agent published the app's container port
    port: int  # the published host port
    container_port: int
    is_admin: bool = False
    redirect: str = "/"
    expires: float = 0.0
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest())


def issue(grant: AppGrant, secret: str, ttl: float = DEFAULT_TTL, now: float | None = None) -> str:
    """A signed token for ``grant`` valid for ``ttl`` seconds from ``now``."""
    doc = asdict(grant)
    doc["expires"] = (time.time() if now is None else now) + ttl
    payload = _b64(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_sign(payload, secret)}"


def verify(token: str, secret: str, now: float | None = None) -> AppGrant:
    """The grant of a genuine, unexpired token; :class:`BadAppToken` otherwise."""
    payload, sep, signature = token.partition(".")
    if not sep or not payload or not signature or len(token) > 8192:
        raise BadAppToken("The app token is malformed.")
    if not hmac.compare_digest(_sign(payload, secret), signature):
        raise BadAppToken("The app token is not genuine.")
    try:
        doc = json.loads(_unb64(payload))
        grant = AppGrant(**doc)
        expires, port = float(grant.expires), int(grant.port)
    except (ValueError, TypeError) as e:
        raise BadAppToken(f"The app token is malformed: {e}") from None
    if port != grant.port or not 0 < port < 65536:
        raise BadAppToken("The app token is malformed: bad port.")
    if expires < (time.time() if now is None else now):
        raise BadAppToken("The app token has expired; open the app again.")
    return grant
