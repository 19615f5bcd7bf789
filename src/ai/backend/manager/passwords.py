"""Password hashing (bcrypt) and keypair generation with a CSPRNG."""

from __future__ import annotations

import secrets
import string

import bcrypt

_AK_ALPHABET = string.ascii_uppercase + string.digits


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode("utf8"), bcrypt.gensalt(rounds=10)).decode("ascii")


def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(password.encode("utf8"), hashed.encode("ascii"))
    except ValueError:
        return False


def generate_keypair() -> tuple[str, str]:
    """A new (access key, secret key): ``AKIA`` + 16 random characters, and 40 URL-safe characters."""
    access_key = "AKIA" + "".join(secrets.choice(_AK_ALPHABET) for _ in range(16))
    secret_key = secrets.token_urlsafe(30)[:40]
    return access_key, secret_key
