"""The Docker registry client and rescan: parsing recorded registry answers, talking to a real (in-process)
registry HTTP API v2 server, and registering what it finds in a real (SQLite) catalogue."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.manager import docker_registry as dr
from ai.backend.manager.config import DockerRegistrySection
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.docker_registry import (
    RegistryClient,
    RegistryError,
    UnsupportedImage,
    image_architecture,
    image_labels,
    manifest_media_type,
    parse_image_manifest,
    parse_next_link,
    parse_www_authenticate,
    rescan_registry,
    scan_registry,
    select_platform,
    verify_digest,
)
from ai.backend.manager.images import register_images
from ai.backend.manager.models import ImageAliasRow, ImageRow, metadata
from ai.backend.testutils.docker_registry import TestRegistry

# ---- recorded answers (shapes as registries send them; digests shortened where irrelevant) ----------

# A Docker Hub style manifest list of a multi-arch image with BuildKit attestation manifests.
RECORDED_INDEX: dict[str, Any] = json.loads("""{
  "manifests": [
    {"annotations": {"org.opencontainers.image.revision": "1a2b"}, "digest": "sha256:aaa1",
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "platform": {"architecture": "amd64", "os": "linux"}, "size": 2315},
    {"digest": "sha256:aaa2", "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}, "size": 2315},
    {"annotations": {"vnd.docker.reference.digest": "sha256:aaa1", "vnd.docker.reference.type":
     "attestation-manifest"}, "digest": "sha256:aaa3", "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "platform": {"architecture": "unknown", "os": "unknown"}, "size": 840},
    {"digest": "sha256:aaa4", "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2322"}, "size": 1200}
  ],
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "schemaVersion": 2
}""")

RECORDED_SCHEMA2: dict[str, Any] = json.loads("""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 7023,
      "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
   },
   "layers": [
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
       "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"},
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 16724,
       "digest": "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"},
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 73109,
       "digest": "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736"}
   ]
}""")

RECORDED_CONFIG: dict[str, Any] = json.loads("""{
  "architecture": "arm64", "variant": "v8", "os": "linux", "created": "2024-05-02T10:11:12Z",
  "config": {"User": "work", "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/bash"],
    "WorkingDir": "/home/work",
    "Labels": {"ai.backend.kernelspec": "1", "ai.backend.runtime-type": "python",
               "ai.backend.resource.min.cpu": "1", "ai.backend.resource.min.mem": "256m",
               "ai.backend.features": "batch query uid-match"}},
  "rootfs": {"type": "layers", "diff_ids": ["sha256:01", "sha256:02"]},
  "history": [{"created": "2024-05-02T10:11:12Z", "created_by": "debootstrap"}]
}""")


def test_www_authenticate_bearer_and_basic() -> None:
    scheme, params = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/python:pull",
    }
    assert parse_www_authenticate('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    # Harbor writes the scope with commas inside the quotes.
    _, harbor = parse_www_authenticate(
        'Bearer realm="https://h/service/token",service="harbor-registry",scope="repository:p/r:pull,push"'
    )
    assert harbor["scope"] == "repository:p/r:pull,push"


def test_next_link() -> None:
    assert parse_next_link('</v2/_catalog?last=b&n=2>; rel="next"') == "/v2/_catalog?last=b&n=2"
    assert parse_next_link('<https://r/a>; rel="prev", <https://r/b?n=1>; rel=next') == "https://r/b?n=1"
    assert parse_next_link(None) is None and parse_next_link('</x>; rel="prev"') is None


def test_select_platform_prefers_host_then_amd64_and_skips_attestations() -> None:
    assert select_platform(RECORDED_INDEX, "arm64")["digest"] == "sha256:aaa2"
    assert select_platform(RECORDED_INDEX, "amd64")["digest"] == "sha256:aaa1"
    assert select_platform(RECORDED_INDEX, "s390x")["digest"] == "sha256:aaa1"  # falls back to linux/amd64
    only_other = {
        "manifests": [m for m in RECORDED_INDEX["manifests"] if m["digest"] in ("sha256:aaa3", "sha256:aaa4")]
    }
    with pytest.raises(UnsupportedImage) as e:
        select_platform(only_other, "arm64")
    assert "linux/arm64" in str(e.value) and "unknown/unknown" in str(e.value) and "windows/amd64" in str(e.value)


def test_manifest_media_type_and_parsing() -> None:
    assert (
        manifest_media_type("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8", {})
        == dr.DOCKER_MANIFEST
    )
    # A registry answering application/json: the document says what it is.
    assert manifest_media_type("application/json", RECORDED_SCHEMA2) == dr.DOCKER_MANIFEST
    assert manifest_media_type("application/json", {"schemaVersion": 2, "manifests": []}) == dr.OCI_INDEX
    assert manifest_media_type(None, {"schemaVersion": 2, "config": {}, "layers": []}) == dr.OCI_MANIFEST
    assert manifest_media_type("application/json", {"schemaVersion": 1, "fsLayers": []}).endswith("v1+json")
    m = parse_image_manifest(RECORDED_SCHEMA2, "sha256:feed")
    assert m.config_digest == RECORDED_SCHEMA2["config"]["digest"]
    assert m.size == 7023 + 32654 + 16724 + 73109 and m.config_size == 7023 and m.digest == "sha256:feed"
    with pytest.raises(UnsupportedImage):
        parse_image_manifest({"schemaVersion": 2, "layers": []}, "sha256:x")


def test_labels_and_architecture_from_config() -> None:
    labels = image_labels(RECORDED_CONFIG)
    assert labels["ai.backend.kernelspec"] == "1" and labels["ai.backend.resource.min.mem"] == "256m"
    assert image_architecture(RECORDED_CONFIG) == "aarch64"
    assert image_architecture({"architecture": "amd64"}) == "x86_64"
    assert image_labels({"config": {"Labels": None}}) == {} and image_labels({}) == {}


def test_verify_digest() -> None:
    data = b'{"a": 1}'
    verify_digest(data, "sha256:" + hashlib.sha256(data).hexdigest())
    with pytest.raises(UnsupportedImage):
        verify_digest(data + b" ", "sha256:" + hashlib.sha256(data).hexdigest())


# ---- against a real registry server (synthetic images; no Docker needed) -----------------------------

KERNEL = {"ai.backend.kernelspec": "1", "ai.backend.runtime-type": "python", "ai.backend.resource.min.mem": "64m"}


def _fill(reg: TestRegistry) -> None:
    """Kernel and non-kernel images of several kinds."""
    reg.add_synthetic_image("team/kernel", "1.0", {**KERNEL, "which": "one"})
    reg.add_synthetic_image("team/kernel", "latest", {**KERNEL, "which": "one"})  # same image: an alias
    reg.add_synthetic_image("team/plain", "1", {"org.opencontainers.image.title": "not a kernel"})
    arm = reg.add_synthetic_image("team/multi", None, {**KERNEL, "which": "arm"}, architecture="arm64", oci=True)
    amd = reg.add_synthetic_image("team/multi", None, {**KERNEL, "which": "amd"}, architecture="amd64", oci=True)
    reg.add_index("team/multi", "2", [(arm, "arm64"), (amd, "amd64"), (amd, "unknown")])
    reg.add_synthetic_image("other/kernel", "3", {**KERNEL, "which": "other"})
    reg.add_synthetic_image("solo/only-latest", "latest", {**KERNEL, "which": "solo"})
    # An image that only an old schema-1 manifest describes: skipped, not fatal.
    reg.add_manifest(
        "team/ancient",
        "1",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        {"schemaVersion": 1, "name": "team/ancient", "tag": "1", "fsLayers": []},
    )


@pytest.fixture
def registry() -> Iterator[TestRegistry]:
    reg = TestRegistry()
    _fill(reg)
    with reg:
        yield reg


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.current = 0
        self.total = 0

    async def update(
        self, increment: int = 0, *, current: int | None = None, total: int | None = None, message: str | None = None
    ) -> None:
        self.current = current if current is not None else self.current + increment
        self.total = total if total is not None else self.total
        if message:
            self.messages.append(message)


async def test_client_paginates_catalog_and_tags(registry: TestRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        registry.add_synthetic_image("team/kernel", f"extra{i}", KERNEL)
    monkeypatch.setattr(dr, "PAGE_SIZE", 2)
    async with RegistryClient(registry.url) as c:
        repos = await c.catalog()
        tags = await c.tags("team/kernel")
    assert repos == sorted(registry.tags)
    assert sorted(tags) == sorted(registry.tags["team/kernel"]) and len(tags) == 7
    # 6 repositories and 7 tags, 2 per page, following the Link headers.
    assert len([p for _, p, _ in registry.requests if p == "/v2/_catalog"]) == 3
    assert len([p for _, p, _ in registry.requests if p == "/v2/team/kernel/tags/list"]) == 4


async def test_scan_finds_kernel_images_only(registry: TestRegistry) -> None:
    progress = Recorder()
    found = await scan_registry(DockerRegistrySection(url=registry.url), progress)
    got = {(i.repository, i.tag): i for i in found}
    assert set(got) == {
        ("team/kernel", "1.0"),
        ("team/kernel", "latest"),
        ("team/multi", "2"),
        ("other/kernel", "3"),
        ("solo/only-latest", "latest"),
    }
    assert got[("team/multi", "2")].labels["which"] == ("arm" if dr.host_architecture() == "arm64" else "amd")
    assert got[("team/kernel", "1.0")].labels["ai.backend.resource.min.mem"] == "64m"
    assert progress.total == 7 and progress.current == 7
    assert any("team/plain:1: not a kernel image" in m for m in progress.messages)
    assert any(
        m.startswith("team/ancient:1: skipped") and "unsupported manifest type" in m and "prettyjws" in m
        for m in progress.messages
    )
    only_team = await scan_registry(DockerRegistrySection(url=registry.url, project=["team"]), Recorder())
    assert {i.repository for i in only_team} == {"team/kernel", "team/multi"}


async def test_basic_auth(registry: TestRegistry) -> None:
    registry.username, registry.password = "alice", "s3cret"
    async with RegistryClient(registry.url, username="alice", password="s3cret") as c:
        assert "team/kernel" in await c.catalog()
    assert ("GET", "/v2/_catalog", "basic") in registry.requests
    for creds, words in ((("alice", "wrong"), "check username/password"), (("", ""), "set username/password")):
        async with RegistryClient(registry.url, username=creds[0], password=creds[1]) as c:
            with pytest.raises(RegistryError) as e:
                await c.catalog()
        assert words in str(e.value) and registry.url in str(e.value) and "UNAUTHORIZED" in str(e.value)


async def test_bearer_token_auth(registry: TestRegistry) -> None:
    registry.token_auth = True
    registry.username, registry.password = "bob", "pw"
    found = await scan_registry(DockerRegistrySection(url=registry.url, username="bob", password="pw"), Recorder())
    assert ("team/kernel", "1.0") in {(i.repository, i.tag) for i in found}
    token_calls = [r for r in registry.requests if r[1] == "/token"]
    # One token per scope (catalog, each repository), reused for all the calls of that scope.
    assert 1 < len(token_calls) <= 1 + len(registry.tags) + 1
    assert any(r[2] == "bearer" and r[1].endswith("/manifests/1.0") for r in registry.requests)
    with pytest.raises(RegistryError) as e:
        await scan_registry(DockerRegistrySection(url=registry.url, username="bob", password="nope"), Recorder())
    assert "token service" in str(e.value) and "refused the credentials" in str(e.value)


async def test_clear_errors(registry: TestRegistry) -> None:
    async with RegistryClient(registry.url) as c:
        with pytest.raises(RegistryError) as e:
            await c.tags("no/such-repo")
        assert "NAME_UNKNOWN" in str(e.value) and "HTTP 404" in str(e.value)
        with pytest.raises(RegistryError) as e:
            await c.image_manifest("team/kernel", "nope")
        assert "MANIFEST_UNKNOWN" in str(e.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RegistryClient(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(RegistryError) as e:
            await c.ping()
    assert "cannot reach" in str(e.value) and str(port) in str(e.value)

    def _slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with RegistryClient("http://reg.example.com", timeout=3, transport=httpx.MockTransport(_slow)) as c:
        with pytest.raises(RegistryError) as e:
            await c.catalog()
    assert "timed out after 3s" in str(e.value)


async def test_tampered_config_blob_is_skipped(registry: TestRegistry) -> None:
    digest = registry.manifests[registry.tags["other/kernel"]["3"]]
    config_digest = json.loads(digest.data)["config"]["digest"]
    blob = registry.blobs[config_digest]
    blob.data = (blob.data or b"").replace(b'"other"', b'"evil!"')
    progress = Recorder()
    found = await scan_registry(DockerRegistrySection(url=registry.url), progress)
    assert ("other/kernel", "3") not in {(i.repository, i.tag) for i in found}
    assert any(m.startswith("other/kernel:3: skipped") and "does not match its digest" in m for m in progress.messages)


# ---- registering in the catalogue --------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Any) -> AsyncIterator[AsyncSession]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/catalogue.db")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with session_factory(engine)() as session:
        yield session
    await engine.dispose()


async def _aliases(db: AsyncSession) -> dict[str, str]:
    return {a.alias: a.image for a in (await db.execute(select(ImageAliasRow))).scalars()}


async def test_rescan_registers_and_heartbeats_do_not_rename(registry: TestRegistry, db: AsyncSession) -> None:
    name = registry.address
    # A local image the agents reported before: left untouched by the rescan.
    await register_images(
        db,
        [
            {"ref": "python:3.11", "digest": "sha256:local", "labels": KERNEL, "size": 5},
            {"ref": "python:latest", "digest": "sha256:local", "labels": KERNEL, "size": 5},
        ],
    )
    await db.commit()
    count = await rescan_registry(db, name, DockerRegistrySection(url=registry.url))
    await db.commit()
    rows = {r.name: r for r in (await db.execute(select(ImageRow))).scalars()}
    assert count == 4
    assert set(rows) == {
        "python:3.11",
        f"{name}/team/kernel:1.0",
        f"{name}/team/multi:2",
        f"{name}/other/kernel:3",
        f"{name}/solo/only-latest:latest",
    }
    assert rows["python:3.11"].registry_name == "local" and rows["python:3.11"].config_digest == "sha256:local"
    kernel = rows[f"{name}/team/kernel:1.0"]
    assert kernel.registry_name == name and kernel.tag == "1.0" and kernel.labels["which"] == "one"
    assert kernel.size_bytes > 0 and kernel.architecture == "x86_64"
    assert (
        kernel.config_digest
        == json.loads(registry.manifests[registry.tags["team/kernel"]["1.0"]].data)["config"]["digest"]
    )
    aliases = await _aliases(db)
    assert aliases[f"{name}/team/kernel:latest"] == f"{name}/team/kernel:1.0"
    assert aliases[f"{name}/team/kernel"] == f"{name}/team/kernel:1.0"
    assert aliases[f"{name}/solo/only-latest"] == f"{name}/solo/only-latest:latest"
    assert aliases["python"] == "python:3.11" and aliases["python:latest"] == "python:3.11"

    # An agent pulled team/kernel:1.0 and reports it next to the local image with the same digest (as Docker
    # shows one image with several tags): the registry row stays the registry's, nothing is duplicated and the
    # local aliases stay where they are.
    pulled = {"ref": f"{name}/team/kernel:1.0", "digest": kernel.config_digest, "labels": kernel.labels, "size": 999}
    same_as_local = {"ref": f"{name}/other/kernel:3", "digest": "sha256:local", "labels": KERNEL, "size": 5}
    await db.execute(delete(ImageAliasRow).where(ImageAliasRow.alias.in_(["python", "python:latest"])))
    await register_images(
        db,
        [
            same_as_local,
            pulled,
            {"ref": "python:latest", "digest": "sha256:local", "labels": KERNEL, "size": 5},
            {"ref": "python:3.11", "digest": "sha256:local", "labels": KERNEL, "size": 5},
        ],
    )
    await db.commit()
    rows2 = {r.name: r for r in (await db.execute(select(ImageRow))).scalars()}
    assert set(rows2) == set(rows)
    assert rows2[f"{name}/team/kernel:1.0"].registry_name == name and rows2[f"{name}/team/kernel:1.0"].size_bytes == 999
    assert rows2[f"{name}/other/kernel:3"].registry_name == name
    aliases = await _aliases(db)
    # Not lent to the registry image of the same digest.
    assert aliases["python"] == aliases["python:latest"] == "python:3.11"
    assert aliases[f"{name}/other/kernel"] == f"{name}/other/kernel:3"

    # A rescan claims a row that an agent reported before the registry was configured.
    rows2[f"{name}/other/kernel:3"].registry_name = "local"
    await db.commit()
    await rescan_registry(db, name, DockerRegistrySection(url=registry.url))
    await db.commit()
    assert (await db.get(ImageRow, f"{name}/other/kernel:3")).registry_name == name  # type: ignore[union-attr]


async def test_failed_scan_changes_nothing(db: AsyncSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryError):
        await rescan_registry(db, f"127.0.0.1:{port}", DockerRegistrySection(url=f"http://127.0.0.1:{port}"))
    assert (await db.execute(select(ImageRow))).scalars().all() == []


def test_registry_config_validation(tmp_path: Any) -> None:
    from ai.backend.common.config import ConfigError, load_config
    from ai.backend.manager.config import ManagerConfig

    def load(toml: str) -> ManagerConfig:
        path = tmp_path / "manager.toml"
        path.write_text(toml)
        return load_config(ManagerConfig, "manager", path, environ={})

    cfg = load(
        '[docker-registries."cr.example.com"]\nurl = "https://cr.example.com/"\nusername = "u"\n'
        'password = "p"\nproject = "stable"\n\n[docker-registries."localhost:5000"]\nurl = "http://localhost:5000"\n'
    )
    assert cfg.docker_registries["cr.example.com"].url == "https://cr.example.com"
    assert cfg.docker_registries["cr.example.com"].project == ["stable"]
    assert dr.registry_summary(cfg.docker_registries) == {
        "cr.example.com": "https://cr.example.com",
        "localhost:5000": "http://localhost:5000",
    }
    assert load("").docker_registries == {}
    for bad, words in (
        ('[docker-registries.python]\nurl = "http://x"\n', "must be host.domain"),
        ('[docker-registries."a.b"]\nurl = "ftp://a.b"\n', "http:// or https://"),
        ('[docker-registries."a.b"]\n', "url"),
        ('[docker-registries."a.b"]\nurl = "http://a.b"\ntoken = "x"\n', "token"),
    ):
        with pytest.raises(ConfigError) as e:
            load(bad)
        assert words in str(e.value) and "docker-registries" in str(e.value), str(e.value)
