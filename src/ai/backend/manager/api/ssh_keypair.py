"""The caller's SSH keypair (``/auth/ssh-keypair``): the key every session of the keypair authorizes and
places as ``/home/work/id_container`` (ADR 0012).

* ``GET`` answers ``{"ssh_public_key"}`` (one is generated on first use, as at a session start);
* ``PATCH`` replaces it with a fresh Ed25519 pair and answers both halves, the only time the private half
  leaves the server through this route;
* ``POST {"pubkey", "privkey"}`` stores a pair of the user's own (OpenSSH formats; the halves must match).

A change applies to sessions started afterwards; running sessions keep the key they were given.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Request
from sqlalchemy import update

from ai.backend.common.problems import InvalidAPIParameters

from ..auth import AuthContext
from ..models import KeyPairRow
from ..sessions.cluster import new_ssh_keypair
from ..sessions.ssh_keys import KEY_COMMENT, owner_ssh_keypairs
from .bodies import AliasChoices, DocumentedRoute, Field, RequestModel, body_of
from .deps import auth_required, manager_context

router = APIRouter(route_class=DocumentedRoute)

#: Longest key text accepted (an RSA-16384 private key in PEM is about 12 KiB).
MAX_KEY_TEXT = 16 * 1024


class SSHKeypairBody(RequestModel):
    """A keypair of the user's own: the public key line and the private key, both in OpenSSH formats."""

    pubkey: str = Field(validation_alias=AliasChoices("pubkey", "ssh_public_key"), max_length=MAX_KEY_TEXT)
    privkey: str = Field(validation_alias=AliasChoices("privkey", "ssh_private_key"), max_length=MAX_KEY_TEXT)


def _checked_pair(pubkey: str, privkey: str) -> tuple[str, str]:
    """``(private, public)`` normalised, or a 400 naming what is wrong."""
    try:
        public = serialization.load_ssh_public_key(pubkey.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidAPIParameters(f"pubkey is not an OpenSSH public key: {e}") from None
    try:
        private = serialization.load_ssh_private_key(privkey.strip().encode() + b"\n", password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidAPIParameters(f"privkey is not an unencrypted OpenSSH private key: {e}") from None
    fmt = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if private.public_key().public_bytes(*fmt) != public.public_bytes(*fmt):
        raise InvalidAPIParameters("pubkey is not the public half of privkey.")
    return privkey.strip() + "\n", pubkey.strip() + "\n"


async def _store(request: Request, access_key: str, private: str, public: str) -> None:
    async with manager_context(request).db() as db:
        await db.execute(
            update(KeyPairRow)
            .where(KeyPairRow.access_key == access_key)
            .values(ssh_public_key=public, ssh_private_key=private)
        )
        await db.commit()


@router.get("/auth/ssh-keypair")
async def get_ssh_keypair(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """The public half of the caller's SSH keypair."""
    async with manager_context(request).db() as db:
        pairs = await owner_ssh_keypairs(db, [ctx.access_key])
        await db.commit()
    return {"ssh_public_key": pairs[ctx.access_key].public_key.strip()}


@router.patch("/auth/ssh-keypair")
async def regenerate_ssh_keypair(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """Replace the caller's SSH keypair with a fresh one; answers both halves."""
    private, public = new_ssh_keypair(KEY_COMMENT)
    await _store(request, ctx.access_key, private, public)
    return {"ssh_public_key": public.strip(), "ssh_private_key": private}


@router.post("/auth/ssh-keypair")
async def upload_ssh_keypair(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    body: SSHKeypairBody = Depends(body_of(SSHKeypairBody)),
) -> dict[str, Any]:
    """Store a keypair of the caller's own (both halves, matching)."""
    private, public = _checked_pair(body.pubkey, body.privkey)
    await _store(request, ctx.access_key, private, public)
    return {"ssh_public_key": public.strip()}
