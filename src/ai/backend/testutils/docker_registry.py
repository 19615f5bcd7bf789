"""A minimal read-only Docker Registry HTTP API v2 server for tests.

:class:`TestRegistry` serves images exported from the local Docker engine (``docker save``) and small
synthetic images built here, on a free loopback port (Docker engines treat ``127.0.0.0/8`` registries
as insecure, so plain HTTP works for ``docker pull``). It answers ``/v2/``, ``/v2/_catalog`` and
``/v2/<name>/tags/list`` (both paginated with ``n``/``last`` and a ``Link`` header), manifests and
blobs (GET and HEAD, with ``Content-Type`` and ``Docker-Content-Digest``, byte ranges for blobs),
and registry-style JSON errors. With ``username``/``password`` it asks for HTTP basic
authentication, or with ``token_auth=True`` for a bearer token from its own ``/token`` endpoint.

Layers are served gzip-compressed (level 1). Compressed layers and configs are cached under
``cache_dir`` (default: ``$TMPDIR/bai-test-registry-cache``) keyed by the layer's uncompressed digest
(the image's ``diff_id``), so a second run does not even need ``docker save``; entries unused for a
day are removed when a new image is imported.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "bai-test-registry-cache"
_API_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    """A blob in memory (configs, manifests of synthetic images) or in a file (layers)."""

    digest: str
    size: int
    media_type: str
    data: bytes | None = None
    path: Path | None = None


@dataclass
class Manifest:
    media_type: str
    data: bytes
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = _sha256(self.data)


def _gzip_file(src: io.BufferedIOBase | Any, dest: Path) -> tuple[str, int]:
    """Compress ``src`` into ``dest`` (deterministic: no name, no mtime); ``(digest, size)`` of the result."""
    tmp = dest.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    h = hashlib.sha256()

    class _Hashing(io.RawIOBase):
        def __init__(self, f: Any) -> None:
            self.f = f
            self.n = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            h.update(b)
            self.n += len(b)
            return int(self.f.write(b))

    with open(tmp, "wb") as out:
        sink = _Hashing(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=1, mtime=0) as gz:  # type: ignore[arg-type]
            shutil.copyfileobj(src, gz, 1024 * 1024)
        size = sink.n
    os.replace(tmp, dest)
    return "sha256:" + h.hexdigest(), size


class TestRegistry:
    """A registry serving the images added to it; start with :meth:`start` or as a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        username: str = "",
        password: str = "",
        token_auth: bool = False,
        cache_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.username, self.password, self.token_auth = username, password, token_auth
        self.cache_dir = cache_dir or DEFAULT_CACHE
        self.host = host
        self.port = port
        self.blobs: dict[str, Blob] = {}
        self.manifests: dict[str, Manifest] = {}  # by digest
        self.tags: dict[str, dict[str, str]] = {}  # repository -> tag -> manifest digest
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization scheme) as received
        self._tokens: set[str] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- content ------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port``: the registry name Docker pulls from."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _add_blob(self, blob: Blob) -> Blob:
        self.blobs[blob.digest] = blob
        return blob

    def add_manifest(self, repository: str, tag: str | None, media_type: str, document: dict[str, Any]) -> str:
        """Store a manifest (tagged ``tag`` in ``repository`` if given) and return its digest."""
        m = Manifest(media_type, json.dumps(document, indent=3).encode())
        self.manifests[m.digest] = m
        repo_tags = self.tags.setdefault(repository, {})
        if tag is not None:
            repo_tags[tag] = m.digest
        return m.digest

    def _image_manifest(self, config: Blob, layers: list[Blob], oci: bool) -> tuple[str, dict[str, Any]]:
        media = OCI_MANIFEST if oci else DOCKER_MANIFEST
        return media, {
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": config.size, "digest": config.digest},
            "layers": [
                {"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "size": la.size, "digest": la.digest} for la in layers
            ],
        }

    def add_docker_image(
        self,
        local_ref: str,
        repository: str,
        tag: str,
        *,
        oci: bool = False,
        extra_files: dict[str, bytes] | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> str:
        """Serve the local Docker image ``local_ref`` as ``repository:tag``; returns the manifest digest.

        ``extra_files`` (path -> content) adds one layer on top and ``extra_labels`` changes the labels: the
        result is a new image (another config digest), so pulling it downloads that layer.
        """
        info = json.loads(
            subprocess.run(["docker", "image", "inspect", local_ref], capture_output=True, text=True, check=True).stdout
        )[0]
        image_id: str = info["Id"]
        diff_ids: list[str] = info["RootFS"]["Layers"]
        store = self.cache_dir / "layers"
        store.mkdir(parents=True, exist_ok=True)
        config_path = self.cache_dir / "configs" / f"{image_id.split(':')[1]}.json"
        if not config_path.is_file() or any(not (store / f"{d.split(':')[1]}.json").is_file() for d in diff_ids):
            self._prune_cache()
            self._import_saved(local_ref, config_path, store)
        config_bytes = config_path.read_bytes()
        config_path.touch()  # in use: kept by _prune_cache
        layers = []
        for d in diff_ids:
            for suffix in (".json", ".tar.gz"):
                (store / f"{d.split(':')[1]}{suffix}").touch()
            meta = json.loads((store / f"{d.split(':')[1]}.json").read_text())
            layers.append(
                self._add_blob(
                    Blob(meta["digest"], meta["size"], DOCKER_LAYER, path=store / f"{d.split(':')[1]}.tar.gz")
                )
            )
        if extra_files or extra_labels:
            doc = json.loads(config_bytes)
            doc["config"]["Labels"] = {**(doc["config"].get("Labels") or {}), **(extra_labels or {})}
            if extra_files:
                layer_tar, layer = self._small_layer(extra_files)
                layers.append(layer)
                doc["rootfs"]["diff_ids"].append(_sha256(layer_tar))
                doc.setdefault("history", []).append({"created_by": "ai.backend.testutils.registry: extra files"})
            config_bytes = json.dumps(doc).encode()
        config = self._add_blob(Blob(_sha256(config_bytes), len(config_bytes), DOCKER_CONFIG, data=config_bytes))
        media, manifest = self._image_manifest(config, layers, oci)
        return self.add_manifest(repository, tag, media, manifest)

    def _small_layer(self, files: dict[str, bytes]) -> tuple[bytes, Blob]:
        """An in-memory layer with ``files``: its uncompressed tar and its (compressed) blob."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, payload in sorted(files.items()):
                ti = tarfile.TarInfo(name.lstrip("/"))
                ti.size, ti.mode = len(payload), 0o644
                tar.addfile(ti, io.BytesIO(payload))
        layer_tar = raw.getvalue()
        gz = gzip.compress(layer_tar, compresslevel=1, mtime=0)
        return layer_tar, self._add_blob(Blob(_sha256(gz), len(gz), DOCKER_LAYER, data=gz))

    def _prune_cache(self, max_age: float = 86400.0) -> None:
        """Forget cached configs and layers unused for ``max_age`` seconds (images rebuilt since)."""
        limit = time.time() - max_age
        for sub in ("configs", "layers"):
            for f in (self.cache_dir / sub).glob("*"):
                try:
                    if f.stat().st_mtime < limit:
                        f.unlink()
                except FileNotFoundError:
                    pass  # another test run pruned it first

    def _import_saved(self, local_ref: str, config_path: Path, store: Path) -> None:
        """``docker save`` the image and cache its config and compressed layers."""
        config_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bai-registry-save-") as tmp:
            archive = Path(tmp) / "image.tar"
            subprocess.run(["docker", "save", "-o", str(archive), local_ref], check=True, capture_output=True)
            with tarfile.open(archive) as tar:

                def _read(name: str) -> bytes:
                    f = tar.extractfile(name)
                    assert f is not None, name
                    return f.read()

                (entry,) = json.loads(_read("manifest.json"))[:1]
                config_bytes = _read(entry["Config"])
                diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
                for diff_id, layer_name in zip(diff_ids, entry["Layers"], strict=True):
                    key = diff_id.split(":")[1]
                    if (store / f"{key}.json").is_file():
                        continue
                    src = tar.extractfile(layer_name)
                    assert src is not None, layer_name
                    digest, size = _gzip_file(src, store / f"{key}.tar.gz")
                    (store / f"{key}.json").write_text(json.dumps({"digest": digest, "size": size}))
            config_path.write_bytes(config_bytes)

    def add_synthetic_image(
        self,
        repository: str,
        tag: str | None,
        labels: dict[str, str],
        *,
        architecture: str = "amd64",
        oci: bool = False,
    ) -> str:
        """A tiny image (one file) with ``labels``: not runnable, but fine to scan; returns the manifest digest."""
        # Same repository, labels and architecture: the same image (tags of one image share its digest).
        layer_tar, layer = self._small_layer({"hello.txt": f"{repository} {architecture}\n".encode()})
        config_bytes = json.dumps(
            {
                "architecture": architecture,
                "os": "linux",
                "config": {"Labels": labels, "Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": [_sha256(layer_tar)]},
                "history": [{"created_by": "ai.backend.testutils.docker_registry"}],
            }
        ).encode()
        config = self._add_blob(Blob(_sha256(config_bytes), len(config_bytes), DOCKER_CONFIG, data=config_bytes))
        media, doc = self._image_manifest(config, [layer], oci)
        return self.add_manifest(repository, tag, media, doc)

    def add_index(self, repository: str, tag: str, entries: list[tuple[str, str]], *, oci: bool = True) -> str:
        """A manifest list / OCI index of manifests already stored, given as ``(digest, architecture)``."""
        media = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
        manifests = []
        for digest, arch in entries:
            m = self.manifests[digest]
            platform = (
                {"os": "unknown", "architecture": "unknown"}
                if arch == "unknown"
                else {"os": "linux", "architecture": arch}
            )
            manifests.append({"mediaType": m.media_type, "size": len(m.data), "digest": digest, "platform": platform})
        return self.add_manifest(
            repository, tag, media, {"schemaVersion": 2, "mediaType": media, "manifests": manifests}
        )

    def remove_tag(self, repository: str, tag: str) -> None:
        """Untag (the manifest stays reachable by digest)."""
        del self.tags[repository][tag]

    # ---- HTTP -----------------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(
            {"errors": [{"code": code, "message": message, "detail": None}]},
            status_code=status,
            headers={**_API_HEADERS, **(headers or {})},
        )

    def _authorized(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        with self._lock:
            self.requests.append((request.method, request.url.path, header.partition(" ")[0].lower()))
        if self.token_auth:
            if header.startswith("Bearer ") and header[7:] in self._tokens:
                return None
            scope = ""
            parts = request.url.path.split("/")
            if request.url.path == "/v2/_catalog":
                scope = ',scope="registry:catalog:*"'
            elif "manifests" in parts or "blobs" in parts or "tags" in parts:
                idx = max(i for i, p in enumerate(parts) if p in ("manifests", "blobs", "tags"))
                scope = f',scope="repository:{"/".join(parts[2:idx])}:pull"'
            return self._error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                {"WWW-Authenticate": f'Bearer realm="{self.url}/token",service="test-registry"{scope}'},
            )
        if self.username and not self._basic_ok(header):
            return self._error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="test-registry"'}
            )
        return None

    def _basic_ok(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.username) and secrets.compare_digest(pw, self.password)

    async def _token(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        with self._lock:
            self.requests.append((request.method, request.url.path, header.partition(" ")[0].lower()))
        if self.username and not self._basic_ok(header):
            return self._error(401, "UNAUTHORIZED", "bad credentials")
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        return JSONResponse({"token": token, "expires_in": 300})

    @staticmethod
    def _page(items: list[str], request: Request, path: str, key: str, extra: dict[str, Any]) -> Response:
        items = sorted(items)
        last = request.query_params.get("last")
        if last:
            items = [i for i in items if i > last]
        headers = dict(_API_HEADERS)
        n_raw = request.query_params.get("n")
        if n_raw and n_raw.isdigit() and int(n_raw) > 0 and len(items) > int(n_raw):
            items = items[: int(n_raw)]
            headers["Link"] = f'<{path}?{urlencode({"n": n_raw, "last": items[-1]})}>; rel="next"'
        return JSONResponse({**extra, key: items}, headers=headers)

    def _manifest_response(self, request: Request, m: Manifest) -> Response:
        headers = {**_API_HEADERS, "Docker-Content-Digest": m.digest, "Content-Length": str(len(m.data))}
        body = b"" if request.method == "HEAD" else m.data
        return Response(body, media_type=m.media_type, headers=headers)

    def _blob_response(self, request: Request, b: Blob) -> Response:
        headers = {**_API_HEADERS, "Docker-Content-Digest": b.digest}
        if b.path is not None:
            return FileResponse(b.path, media_type="application/octet-stream", headers=headers)
        headers["Content-Length"] = str(b.size)
        return Response(
            b"" if request.method == "HEAD" else (b.data or b""), media_type="application/octet-stream", headers=headers
        )

    async def _v2(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        path: str = request.path_params["path"].strip("/")
        if path == "":
            return JSONResponse({}, headers=_API_HEADERS)
        if path == "_catalog":
            return self._page([r for r, t in self.tags.items() if t], request, "/v2/_catalog", "repositories", {})
        parts = path.split("/")
        if len(parts) >= 3 and parts[-2:] == ["tags", "list"]:
            repo = "/".join(parts[:-2])
            if repo not in self.tags:
                return self._error(404, "NAME_UNKNOWN", f"repository {repo} is not known")
            return self._page(list(self.tags[repo]), request, f"/v2/{repo}/tags/list", "tags", {"name": repo})
        if len(parts) >= 3 and parts[-2] == "manifests":
            repo, ref = "/".join(parts[:-2]), parts[-1]
            if repo not in self.tags:
                return self._error(404, "NAME_UNKNOWN", f"repository {repo} is not known")
            digest = ref if ref.startswith("sha256:") else self.tags[repo].get(ref)
            m = self.manifests.get(digest or "")
            if m is None:
                return self._error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {repo}:{ref}")
            return self._manifest_response(request, m)
        if len(parts) >= 3 and parts[-2] == "blobs":
            b = self.blobs.get(parts[-1])
            if b is None:
                return self._error(404, "BLOB_UNKNOWN", f"blob unknown: {parts[-1]}")
            return self._blob_response(request, b)
        return self._error(404, "UNSUPPORTED", f"not supported by this test registry: {path}")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/{path:path}", self._v2, methods=["GET", "HEAD"]),
                Route("/v2", self._v2, methods=["GET", "HEAD"]),
                Route("/token", self._token, methods=["GET"]),
            ]
        )

    # ---- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> TestRegistry:
        """Listen on ``host:port`` (a free port if 0) in a background thread and wait until it answers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        # "error": Docker first tries TLS on insecure registries, which uvicorn would log as invalid requests.
        config = uvicorn.Config(
            self.app(), log_level="error", lifespan="off", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"test-registry-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the test registry on {self.address} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused afterwards)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        self._server = self._thread = None

    def __enter__(self) -> TestRegistry:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["TestRegistry"]
