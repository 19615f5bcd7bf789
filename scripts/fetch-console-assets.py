#!/usr/bin/env python3
"""Fetch the web console's browser libraries from the npm registry into the console's ``static/vendor/``.

The packages, versions, integrity hashes and files are in ``src/ai/backend/web/console/assets.json``.
Tarballs are cached under ``~/.cache/backend.ai-console/`` and checked against their sha512 integrity
before anything is extracted; a file already in place with the pinned version is left alone, so a second
run does nothing. No Node.js is needed: the files are used as published (no bundler).
Registry: ``$NPM_CONFIG_REGISTRY`` or https://registry.npmjs.org/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / "src/ai/backend/web/console"
VENDOR = CONSOLE / "static/vendor"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backend.ai-console"


def _tarball_url(registry: str, name: str, version: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{name}/-/{base}-{version}.tgz"


def _check(data: bytes, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"fetch-console-assets: integrity mismatch ({integrity} expected, {algo}-{actual} got)")


def _fetch(registry: str, pkg: dict[str, object]) -> bytes:
    name, version, integrity = str(pkg["name"]), str(pkg["version"]), str(pkg["integrity"])
    cached = CACHE / f"{name.replace('/', '__')}-{version}.tgz"
    if cached.is_file():
        data = cached.read_bytes()
        try:
            _check(data, integrity)
            return data
        except SystemExit:
            cached.unlink()
    url = _tarball_url(registry, name, version)
    print(f"[console-assets] downloading {name}@{version}", flush=True)
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    _check(data, integrity)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return data


def main() -> int:
    manifest = json.loads((CONSOLE / "assets.json").read_text())
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    VENDOR.mkdir(parents=True, exist_ok=True)
    stamp_path = VENDOR / ".versions.json"
    stamps = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    for pkg in manifest["packages"]:
        key = f"{pkg['name']}@{pkg['version']}:{pkg['integrity']}"
        targets = [VENDOR / dest for dest in pkg["files"].values()]
        if stamps.get(pkg["name"]) == key and all(t.is_file() for t in targets):
            continue
        data = _fetch(registry, pkg)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for src, dest in pkg["files"].items():
                member = tar.extractfile(f"package/{src}")
                if member is None:
                    raise SystemExit(f"fetch-console-assets: {pkg['name']} has no file {src}")
                (VENDOR / dest).write_bytes(member.read())
        stamps[pkg["name"]] = key
    stamp_path.write_text(json.dumps(stamps, indent=1) + "\n")
    print(f"[console-assets] {len(manifest['packages'])} packages in {VENDOR.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
