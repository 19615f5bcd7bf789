"""The session owner's SSH keypair reaches the main kernel of a real (Docker) session: the keypair row's
public key is authorized in ``~/.ssh/authorized_keys`` and its private key is ``/home/work/id_container``
(what ``backend.ai ssh`` downloads), the same for every session of the keypair (ADR 0012)."""

from __future__ import annotations

import json
import uuid

import pytest

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker

READ = (
    "import json; print(json.dumps({'auth': open('/home/work/.ssh/authorized_keys').read(),"
    " 'key': open('/home/work/id_container').read()}))"
)


def test_the_owners_ssh_keypair_is_in_the_main_kernel(cluster: Cluster) -> None:
    names = [f"sshkey-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        seen = []
        for name in names:
            cluster.create_session(name)
            out = cluster.exec(name, READ)
            assert out["status"] == "finished", out
            seen.append(json.loads(out["console"][0][1]))
        keypair = cluster.gql(
            "query($ak: String) { keypair(access_key: $ak) { ssh_public_key } }", {"ak": USER["access_key"]}, who=USER
        )["keypair"]
        public = keypair["ssh_public_key"].strip()
        assert public.startswith("ssh-ed25519 ")
        for files in seen:
            assert public in files["auth"].splitlines()
            assert files["key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert seen[0]["key"] == seen[1]["key"]  # one keypair per access key, not per session
    finally:
        for name in names:
            cluster.request("DELETE", f"/session/{name}")
