"""What proves a browser may use a circuit: the permit cookie, the one-use setup ticket that sets it, and the
book of spent nonces that makes app tokens and tickets one-use.

* The **permit** of circuit ``C`` for user ``U`` is the cookie ``bai_permit_C`` whose value is the base64url
  HMAC-SHA256 of ``C`` and ``U`` under the shared secret. Cookies do not separate ports, so every circuit of
  the same host sees every permit: the name tells a circuit which one is its own, and the value binds it to
  that circuit (a permit of circuit A opens neither B nor a later circuit on A's port).
* A **setup ticket** carries the browser from the API port to the circuit's own origin, where the cookie can
  be set (``/__bai/setup?token=...``): ``<payload>.<signature>`` like an app token, but signed in its own
  domain (an app token is never a ticket, and the reverse), valid for :data:`TICKET_TTL` seconds, once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

__all__ = [
    "PERMIT_MAX_AGE",
    "PERMIT_PREFIX",
    "TICKET_TTL",
    "BadTicket",
    "NonceBook",
    "SetupTicket",
    "is_permit_cookie",
    "issue_ticket",
    "permit_name",
    "permit_value",
    "safe_redirect",
    "verify_ticket",
]

PERMIT_PREFIX = "bai_permit_"
#: How long a permit cookie lives in the browser (seconds): a working day; then the app is opened again.
PERMIT_MAX_AGE = 12 * 3600
#: How long a setup link stays valid: a browser follows it at once, a CLI user may take a moment to click it.
TICKET_TTL = 60.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, domain: str, *parts: str) -> str:
    # The domain keeps the three kinds of signatures (app tokens have none) from standing in for each other.
    msg = "\n".join((domain, *parts)).encode()
    return _b64(hmac.new(secret.encode(), msg, hashlib.sha256).digest())


def permit_name(circuit_id: str) -> str:
    """The cookie name of circuit ``circuit_id``'s permit."""
    return PERMIT_PREFIX + circuit_id


def permit_value(secret: str, circuit_id: str, user: str) -> str:
    """The permit of ``user`` for circuit ``circuit_id``."""
    return _mac(secret, "bai-appproxy-permit", circuit_id, user)


def is_permit_cookie(name: str) -> bool:
    """Whether a cookie is one of this proxy's permits (which the apps never see)."""
    return name.startswith(PERMIT_PREFIX)


def safe_redirect(path: str) -> str:
    """``path`` when it is a path on the circuit's own origin, else ``/`` (no open redirect elsewhere)."""
    if not path.startswith("/") or path.startswith("//") or any(c in path for c in "\\\r\n\t"):
        return "/"
    return path


class BadTicket(ValueError):
    """A setup ticket that is malformed, forged, for another circuit, expired or spent (safe to show)."""


@dataclass(frozen=True)
class SetupTicket:
    circuit: str
    user: str
    redirect: str
    expires: float
    nonce: str


def issue_ticket(secret: str, circuit_id: str, user: str, redirect: str, now: float | None = None) -> str:
    """A signed ticket that lets one browser visit set ``user``'s permit on circuit ``circuit_id``."""
    doc = {
        "c": circuit_id,
        "u": user,
        "r": redirect,
        "e": (time.time() if now is None else now) + TICKET_TTL,
        "n": secrets.token_urlsafe(12),
    }
    payload = _b64(json.dumps(doc, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, 'bai-appproxy-ticket', payload)}"


def verify_ticket(secret: str, token: str, now: float | None = None) -> SetupTicket:
    """The ticket's content if genuine and unexpired (spent nonces are the caller's :class:`NonceBook`)."""
    payload, sep, signature = token.partition(".")
    if not sep or not payload or len(token) > 8192:
        raise BadTicket("The setup link is malformed.")
    if not hmac.compare_digest(_mac(secret, "bai-appproxy-ticket", payload), signature):
        raise BadTicket("The setup link is not genuine.")
    try:
        doc = json.loads(_unb64(payload))
        ticket = SetupTicket(str(doc["c"]), str(doc["u"]), str(doc["r"]), float(doc["e"]), str(doc["n"]))
    except (ValueError, TypeError, KeyError) as e:
        raise BadTicket(f"The setup link is malformed: {e}") from None
    if ticket.expires < (time.time() if now is None else now):
        raise BadTicket("The setup link has expired.")
    return ticket


class NonceBook:
    """Nonces already used, each remembered until the token that carried it expires (then the token is
    refused for its age anyway), so the book stays as small as the tokens in flight."""

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._spent)

    def spend(self, nonce: str, expires: float, now: float | None = None) -> bool:
        """Record ``nonce`` as used; False when it was used already (a replay)."""
        now = time.time() if now is None else now
        if now >= self._next_sweep:
            self._spent = {n: e for n, e in self._spent.items() if e >= now}
            self._next_sweep = now + 10.0
        if nonce in self._spent:
            return False
        # Kept a little past expiry: an expired token is refused by its clock, not by the book.
        self._spent[nonce] = expires + 1.0
        return True
