"""``/auth/ssh-keypair``: read, regenerate and upload the key that sessions authorize (on SQLite and
PostgreSQL). What a session does with it is in ``test_apps_ssh_key.py``."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.manager.sessions.cluster import new_ssh_keypair
from ai.backend.testutils.cluster import Cluster


def _public_of(private: str) -> bytes:
    key = serialization.load_ssh_private_key(private.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def test_get_is_stable_and_patch_regenerates(manager: Cluster) -> None:
    first = manager.request("GET", "/auth/ssh-keypair", who=USER)
    assert first.status_code == 200, first.text
    pub = first.json()["ssh_public_key"]
    assert pub.startswith("ssh-ed25519 ") and "PRIVATE" not in first.text
    assert manager.request("GET", "/auth/ssh-keypair", who=USER).json()["ssh_public_key"] == pub
    assert manager.request("GET", "/auth/ssh-keypair", who=ADMIN).json()["ssh_public_key"] != pub
    fresh = manager.request("PATCH", "/auth/ssh-keypair", who=USER)
    assert fresh.status_code == 200, fresh.text
    doc = fresh.json()
    assert doc["ssh_public_key"] != pub
    assert doc["ssh_public_key"].split()[1] == _public_of(doc["ssh_private_key"]).decode().split()[1]
    assert manager.request("GET", "/auth/ssh-keypair", who=USER).json()["ssh_public_key"] == doc["ssh_public_key"]


def test_upload_own_pair_and_refusals(manager: Cluster) -> None:
    private, public = new_ssh_keypair("mine@laptop")
    r = manager.request("POST", "/auth/ssh-keypair", {"pubkey": public, "privkey": private}, who=USER)
    assert r.status_code == 200, r.text
    assert manager.request("GET", "/auth/ssh-keypair", who=USER).json()["ssh_public_key"].strip() == public.strip()
    other_private, other_public = new_ssh_keypair("other")
    before = manager.request("GET", "/auth/ssh-keypair", who=USER).json()
    for body in (
        {"pubkey": other_public, "privkey": private},  # halves of different keys
        {"pubkey": "ssh-ed25519 not-base64", "privkey": private},
        {"pubkey": public, "privkey": "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n"},
        {"pubkey": public},
        {"pubkey": public, "privkey": private + "x" * 20000},
    ):
        r = manager.request("POST", "/auth/ssh-keypair", body, who=USER)
        assert r.status_code == 400, (body.keys(), r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert manager.request("GET", "/auth/ssh-keypair", who=USER).json() == before
    assert manager.request("GET", "/auth/ssh-keypair", who={**USER, "secret_key": "x" * 40}).status_code == 401
