"""Kernel images of Docker registries: a registry HTTP API v2 client and the registry rescan.

:class:`RegistryClient` lists repositories (``/v2/_catalog``) and tags (``/v2/<repo>/tags/list``),
following ``Link: <...>; rel="next"`` pagination, fetches manifests (Docker schema 2 and OCI, image
manifests and manifest lists / image indexes, from which the host's architecture or linux/amd64 is
picked) and the image config blob that holds the labels. It answers ``WWW-Authenticate`` challenges
with a bearer token (fetched from the challenge's realm, with the configured credentials if any) or
HTTP basic authentication. Every failure is a :class:`RegistryError` whose detail names the
registry and what went wrong.

:func:`rescan_registry` registers every image of a configured registry whose config carries the
``ai.backend.kernelspec`` label as ``<registry name>/<repository>:<tag>`` (see
:func:`~ai.backend.manager.images.upsert_image`); images learned from agents are left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import platform
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urljoin

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import BadGateway

from .config import DockerRegistrySection
from .images import add_default_aliases, upsert_image

log = logging.getLogger(__name__)
T = TypeVar("T")

KERNEL_LABEL = "ai.backend.kernelspec"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
MANIFEST_LISTS = (DOCKER_MANIFEST_LIST, OCI_INDEX)
ACCEPT_MANIFESTS = ", ".join((*IMAGE_MANIFESTS, *MANIFEST_LISTS))
PAGE_SIZE = 100
MAX_PAGES = 10_000  # a registry that keeps answering the same "next" link must not loop forever
MAX_JSON_BYTES = 16 * 1024 * 1024  # manifests and configs are small; refuse anything absurd

# Docker's architecture names -> the ones the manager stores (those of `uname -m`).
_ARCH_NAMES = {"amd64": "x86_64", "arm64": "aarch64", "386": "i386"}
_DOCKER_ARCH = {v: k for k, v in _ARCH_NAMES.items()}


class RegistryError(BadGateway):
    """A registry could not be read (unreachable, refused credentials, bad answer)."""

    slug, title = "registry-error", "The Docker registry could not be read"


class UnsupportedImage(RegistryError):
    """One image of a registry cannot be registered (skipped by a rescan, which goes on)."""


class Progress(Protocol):
    """What a rescan reports its progress to (:class:`~ai.backend.manager.bgtask.ProgressReporter` fits)."""

    async def update(
        self, increment: int = 0, *, current: int | None = None, total: int | None = None, message: str | None = None
    ) -> None: ...


class NullProgress:
    """A progress sink that discards everything."""

    async def update(
        self, increment: int = 0, *, current: int | None = None, total: int | None = None, message: str | None = None
    ) -> None:
        return None


# ---- pure parsing helpers (unit-tested with recorded answers) ---------------------------------------


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., "service": ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest)
    }
    return scheme.lower(), params


def parse_next_link(header: str | None) -> str | None:
    """The target of ``rel="next"`` in a ``Link`` header, if any."""
    for part in (header or "").split(","):
        m = re.match(r"\s*<([^>]*)>\s*;(.*)", part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return m.group(1)
    return None


def host_architecture() -> str:
    """This host's architecture as Docker names it (``amd64``, ``arm64``, ...)."""
    machine = platform.machine().lower()
    return _DOCKER_ARCH.get(machine, machine)


def select_platform(index: dict[str, Any], arch: str | None = None) -> dict[str, Any]:
    """The descriptor of a manifest list / image index to use: linux on ``arch`` (default: this host's
    architecture), else linux/amd64; attestation manifests (``unknown/unknown``) never match."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict) and isinstance(m.get("digest"), str)]
    wanted = [arch or host_architecture(), "amd64"]
    for want in wanted:
        for m in entries:
            p = m.get("platform") or {}
            if p.get("os") == "linux" and p.get("architecture") == want:
                return m
    seen = sorted(
        {f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}" for m in entries}
    )
    raise UnsupportedImage(
        f"no linux/{wanted[0]} or linux/amd64 image in the manifest list (it has: {', '.join(seen) or 'nothing'})"
    )


def manifest_media_type(content_type: str | None, body: dict[str, Any]) -> str:
    """The manifest's media type, from the answer's Content-Type or else the document itself."""
    ctype = (content_type or "").split(";")[0].strip()
    if ctype.startswith("application/vnd."):
        return ctype
    declared = body.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if body.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    if "manifests" in body:
        return OCI_INDEX  # an OCI index may omit mediaType
    if "config" in body and "layers" in body:
        return OCI_MANIFEST
    return ctype or "unknown"


@dataclass(frozen=True)
class ImageManifest:
    """The parts of an image manifest a rescan needs."""

    digest: str  # of the manifest itself
    config_digest: str
    config_size: int
    size: int  # config + (compressed) layers


def parse_image_manifest(body: dict[str, Any], digest: str) -> ImageManifest:
    """Read an image manifest (Docker schema 2 or OCI)."""
    config = body.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        raise UnsupportedImage("the manifest has no config descriptor")
    layers = body.get("layers") or []
    size = int(config.get("size") or 0) + sum(int(la.get("size") or 0) for la in layers if isinstance(la, dict))
    return ImageManifest(
        digest=digest, config_digest=config["digest"], config_size=int(config.get("size") or 0), size=size
    )


def image_labels(config: dict[str, Any]) -> dict[str, str]:
    """The labels of an image config blob (Docker and OCI keep them under ``config.Labels``)."""
    labels = (config.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def image_architecture(config: dict[str, Any]) -> str:
    """The image's architecture as the manager stores it (``x86_64``, ``aarch64``, ...)."""
    arch = str(config.get("architecture") or "amd64")
    return _ARCH_NAMES.get(arch, arch)


def verify_digest(data: bytes, digest: str) -> None:
    """Refuse content whose sha256 is not ``digest`` (other algorithms are not checked)."""
    algo, _, expected = digest.partition(":")
    if algo == "sha256" and hashlib.sha256(data).hexdigest() != expected:
        raise UnsupportedImage(f"content does not match its digest {digest}")


def _error_text(resp: httpx.Response) -> str:
    """The registry's own error messages (``{"errors": [{"code", "message"}]}``) or the status line."""
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(
            f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)
        )
    except (ValueError, AttributeError):
        text = ""
    return f"HTTP {resp.status_code}" + (f" ({text})" if text else "")


# ---- the client ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryImage:
    """A kernel-image candidate found in a registry."""

    repository: str
    tag: str
    manifest: ImageManifest
    labels: dict[str, str]
    architecture: str


class RegistryClient:
    """A read-only client of one registry's HTTP API v2 (use it as an async context manager)."""

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._creds = (username, password) if username or password else None
        self._timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=True, transport=transport)
        self._tokens: dict[str, str] = {}  # bearer tokens by scope
        self._basic = False  # the registry asked for basic auth: send it from now on

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _fail(self, what: str) -> RegistryError:
        return RegistryError(f"registry {self.url}: {what}")

    async def _send(self, method: str, url: str, headers: dict[str, str], auth: httpx.Auth | None) -> httpx.Response:
        try:
            return await self._http.request(method, url, headers=headers, auth=auth)
        except httpx.TimeoutException:
            raise self._fail(f"{method} {url} timed out after {self._timeout:g}s") from None
        except httpx.HTTPError as e:
            raise self._fail(f"cannot reach {url}: {e or type(e).__name__}") from None

    async def _token(self, challenge: dict[str, str], scope: str) -> str:
        """A bearer token for ``scope`` from the challenge's realm (with the credentials, if any)."""
        realm = challenge.get("realm")
        if not realm:
            raise self._fail("bearer challenge without a realm")
        query = {
            k: v for k, v in (("service", challenge.get("service")), ("scope", challenge.get("scope") or scope)) if v
        }
        auth = httpx.BasicAuth(*self._creds) if self._creds else None
        resp = await self._send("GET", realm + ("&" if "?" in realm else "?") + urlencode(query), {}, auth)
        if resp.status_code in (401, 403):
            raise self._fail(
                f"the token service {realm} refused the credentials ({_error_text(resp)}); check "
                "username/password of the registry in the manager config"
            )
        if resp.status_code != 200:
            raise self._fail(f"the token service {realm} answered {_error_text(resp)}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self._fail(f"the token service {realm} answered no token")
        return token

    async def request(self, path: str, *, scope: str = "", accept: str | None = None) -> httpx.Response:
        """GET ``path`` (relative to the registry URL, or absolute) answering auth challenges once."""
        url = path if path.startswith(("http://", "https://")) else urljoin(self.url + "/", path.lstrip("/"))
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            h = dict(headers)
            if scope in self._tokens:
                h["Authorization"] = f"Bearer {self._tokens[scope]}"
            auth = httpx.BasicAuth(*self._creds) if self._basic and self._creds else None
            resp = await self._send("GET", url, h, auth)
            if resp.status_code != 401 or attempt:
                break
            scheme, challenge = parse_www_authenticate(resp.headers.get("www-authenticate", ""))
            if scheme == "bearer":
                self._tokens[scope] = await self._token(challenge, scope)
            elif scheme == "basic" and self._creds and not self._basic:
                self._basic = True
            else:
                break
        if resp.status_code == 401:
            hint = "check username/password" if self._creds else "set username/password"
            raise self._fail(
                f"GET {path}: authentication required or refused ({_error_text(resp)}); {hint} of "
                "the registry in the manager config"
            )
        if resp.status_code == 403:
            raise self._fail(f"GET {path}: access denied ({_error_text(resp)})")
        if resp.status_code >= 400:
            raise self._fail(f"GET {path}: {_error_text(resp)}")
        if len(resp.content) > MAX_JSON_BYTES:
            raise self._fail(f"GET {path}: the answer is too large ({len(resp.content)} bytes)")
        return resp

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            raise self._fail(f"{what}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise self._fail(f"{what}: the answer is not a JSON object")
        return body

    async def _paged(self, path: str, key: str, scope: str) -> list[str]:
        items: list[str] = []
        next_url: str | None = f"{path}?n={PAGE_SIZE}"
        seen: set[str] = set()
        while next_url and next_url not in seen and len(seen) < MAX_PAGES:
            seen.add(next_url)
            resp = await self.request(next_url, scope=scope)
            values = self._json(resp, f"GET {path}").get(key) or []
            if not isinstance(values, list):
                raise self._fail(f"GET {path}: {key!r} is not a list")
            items.extend(str(v) for v in values)
            link = parse_next_link(resp.headers.get("link"))
            next_url = urljoin(str(resp.url), link) if link else None  # a Link is relative to the page's URL
        return items

    async def ping(self) -> None:
        """Check that the URL is a registry API v2 that accepts our credentials."""
        await self.request("/v2/")

    async def catalog(self) -> list[str]:
        """Every repository name the registry lists (all pages)."""
        return await self._paged("/v2/_catalog", "repositories", "registry:catalog:*")

    async def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` (all pages)."""
        return await self._paged(f"/v2/{repository}/tags/list", "tags", f"repository:{repository}:pull")

    async def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any], str]:
        """``(media type, document, digest)`` of the manifest ``reference`` (a tag or digest) of ``repository``."""
        what = f"manifest {repository}:{reference}"
        resp = await self.request(
            f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:pull", accept=ACCEPT_MANIFESTS
        )
        body = self._json(resp, what)
        digest = resp.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(resp.content).hexdigest()
        if reference.startswith("sha256:"):
            verify_digest(resp.content, reference)
        return manifest_media_type(resp.headers.get("content-type"), body), body, digest

    async def image_manifest(self, repository: str, tag: str, arch: str | None = None) -> ImageManifest:
        """The image manifest of ``repository:tag``, resolving a manifest list to one platform."""
        media_type, body, digest = await self.manifest(repository, tag)
        if media_type in MANIFEST_LISTS:
            chosen = select_platform(body, arch)
            media_type, body, digest = await self.manifest(repository, chosen["digest"])
        if media_type not in IMAGE_MANIFESTS:
            raise UnsupportedImage(f"unsupported manifest type {media_type!r}")
        return parse_image_manifest(body, digest)

    async def image_config(self, repository: str, manifest: ImageManifest) -> dict[str, Any]:
        """The image config blob (checked against its digest)."""
        resp = await self.request(
            f"/v2/{repository}/blobs/{manifest.config_digest}", scope=f"repository:{repository}:pull", accept="*/*"
        )
        try:
            verify_digest(resp.content, manifest.config_digest)
        except UnsupportedImage as e:
            raise UnsupportedImage(f"{repository}: config blob: {e.detail}") from None
        return self._json(resp, f"config of {repository}")

    async def inspect(self, repository: str, tag: str, arch: str | None = None) -> RegistryImage:
        """Manifest, labels and architecture of ``repository:tag``."""
        manifest = await self.image_manifest(repository, tag, arch)
        config = await self.image_config(repository, manifest)
        return RegistryImage(repository, tag, manifest, image_labels(config), image_architecture(config))


# ---- rescan ------------------------------------------------------------------------------------------


async def _all(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """``gather`` that cancels the other calls when one fails (their client is about to be closed)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _in_projects(repository: str, projects: list[str]) -> bool:
    return not projects or any(repository == p or repository.startswith(p.rstrip("/") + "/") for p in projects)


async def scan_registry(
    cfg: DockerRegistrySection,
    progress: Progress,
    *,
    concurrency: int = 4,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[RegistryImage]:
    """The kernel images of a registry (those whose config has the ``ai.backend.kernelspec`` label).

    Unreachable registries and refused credentials raise :class:`RegistryError`; a single image that
    cannot be read (unsupported manifest, no suitable platform, vanished tag) is skipped and reported
    as progress.
    """
    found: list[RegistryImage] = []
    sem = asyncio.Semaphore(max(concurrency, 1))
    async with RegistryClient(
        cfg.url, username=cfg.username, password=cfg.password, timeout=timeout, transport=transport
    ) as client:
        await client.ping()
        repos = [r for r in await client.catalog() if _in_projects(r, cfg.project)]
        await progress.update(current=0, total=0, message=f"{len(repos)} repositories in {cfg.url}")

        async def _tags(repo: str) -> list[tuple[str, str]]:
            async with sem:
                return [(repo, t) for t in await client.tags(repo)]

        pairs = [p for tags in await _all([_tags(r) for r in repos]) for p in tags]
        await progress.update(total=len(pairs), message=f"{len(pairs)} tags in {len(repos)} repositories")

        async def _inspect(repo: str, tag: str) -> None:
            async with sem:
                try:
                    img = await client.inspect(repo, tag)
                except UnsupportedImage as e:
                    log.warning("registry %s: skipping %s:%s: %s", cfg.url, repo, tag, e.detail)
                    await progress.update(1, message=f"{repo}:{tag}: skipped ({e.detail})")
                    return
            if KERNEL_LABEL in img.labels:
                found.append(img)
                await progress.update(1, message=f"{repo}:{tag}: kernel image")
            else:
                await progress.update(1, message=f"{repo}:{tag}: not a kernel image (no {KERNEL_LABEL} label)")

        await _all([_inspect(r, t) for r, t in pairs])
    return sorted(found, key=lambda i: (i.repository, i.tag))


async def register_registry_images(db: AsyncSession, name: str, images: list[RegistryImage]) -> int:
    """Register ``images`` of registry ``name`` as ``<name>/<repository>:<tag>``; returns how many rows.

    As for local images, ``repo:latest`` is an alias of another tag of the same image when there is
    one (an image of the repository otherwise), and the bare ``<name>/<repository>`` an alias of the
    newest registered image of the repository unless already set.
    """
    groups: dict[tuple[str, str], list[RegistryImage]] = {}
    for img in images:
        groups.setdefault((img.repository, img.manifest.config_digest), []).append(img)
    count = 0
    for (repo, _), same in sorted(groups.items()):
        tagged = [i for i in same if i.tag != "latest"] or same
        latest = [f"{name}/{repo}:latest" for i in same if i.tag == "latest" and i not in tagged]
        for img in tagged:
            await upsert_image(
                db,
                f"{name}/{repo}:{img.tag}",
                img.manifest.config_digest,
                dict(img.labels),
                size=img.manifest.size,
                architecture=img.architecture,
                registry_name=name,
            )
            count += 1
        await db.flush()
        await add_default_aliases(db, f"{name}/{repo}:{tagged[-1].tag}", latest)
    await db.flush()
    return count


async def rescan_registry(
    db: AsyncSession, name: str, cfg: DockerRegistrySection, progress: Progress | None = None, **scan_options: Any
) -> int:
    """Scan registry ``name`` and register its kernel images; returns how many image rows were registered.

    The registry is read first and the database written afterwards (no transaction is held across
    network calls); the caller commits ``db``.
    """
    progress = progress or NullProgress()
    images = await scan_registry(cfg, progress, **scan_options)
    count = await register_registry_images(db, name, images)
    await progress.update(message=f"registered {count} kernel image(s) of registry {name!r}")
    return count


def registry_summary(registries: dict[str, DockerRegistrySection]) -> dict[str, str]:
    """``{name: url}`` of the configured registries (no credentials)."""
    return {name: cfg.url for name, cfg in sorted(registries.items())}


__all__ = [
    "ImageManifest",
    "NullProgress",
    "Progress",
    "RegistryClient",
    "RegistryError",
    "RegistryImage",
    "UnsupportedImage",
    "image_architecture",
    "image_labels",
    "manifest_media_type",
    "parse_image_manifest",
    "parse_next_link",
    "parse_www_authenticate",
    "register_registry_images",
    "registry_summary",
    "rescan_registry",
    "scan_registry",
    "select_platform",
    "verify_digest",
]
