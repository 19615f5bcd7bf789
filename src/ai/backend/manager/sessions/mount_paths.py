"""Where virtual folders are mounted in a session's containers, and which paths are refused.

A folder is mounted at ``/home/work/<name>`` unless ``mount_map`` names another path: a relative path
is taken under ``/home/work``, an absolute one must not be (or be inside) a system directory.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Any

from ai.backend.common.problems import InvalidAPIParameters

WORKDIR = "/home/work"
#: Directories a folder may never cover or sit inside (the container's own system, and our runner).
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/opt/backend.ai",
    "/tmp",
)
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
PERMISSIONS = ("ro", "rw", "wd")


def container_path(name: str, mapped: str | None) -> str:
    """The absolute in-container mount path of folder ``name`` (``mapped`` from ``mount_map``)."""
    raw = mapped if mapped is not None else name
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidAPIParameters(f"The mount path of folder {name!r} is empty.")
    if _BAD_CHARS.search(raw) or len(raw) > 1024:
        raise InvalidAPIParameters(f"The mount path of folder {name!r} has control characters or is too long.")
    raw = unicodedata.normalize("NFC", raw)
    if ".." in raw.split("/"):
        raise InvalidAPIParameters(f"The mount path {raw!r} of folder {name!r} may not contain '..'.")
    path = posixpath.normpath(raw if raw.startswith("/") else posixpath.join(WORKDIR, raw))
    if path in ("/", WORKDIR):
        raise InvalidAPIParameters(f"Folder {name!r} cannot be mounted at {path!r}; choose a subdirectory.")
    for sysdir in SYSTEM_DIRS:
        if path == sysdir or path.startswith(sysdir + "/") or sysdir.startswith(path + "/"):
            raise InvalidAPIParameters(f"Folder {name!r} cannot be mounted at {path!r}: it overlaps {sysdir}.")
    return path


def parse_mounts(config: dict[str, Any]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """``config.mounts`` (names), ``config.mount_map`` (name → path) and the permission of each
    ``config.mount_options`` entry (name → ``ro``/``rw``/``wd``), validated."""
    mounts = config.get("mounts")
    mounts = [] if mounts is None else mounts
    if not isinstance(mounts, list) or not all(isinstance(m, str) and m for m in mounts):
        raise InvalidAPIParameters("'config.mounts' must be a list of folder names.")
    if len(set(mounts)) != len(mounts):
        raise InvalidAPIParameters("'config.mounts' names a folder twice.")
    raw_map = config.get("mount_map", config.get("mountMap"))
    raw_map = {} if raw_map is None else raw_map
    if not isinstance(raw_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw_map.items()):
        raise InvalidAPIParameters("'config.mount_map' must map folder names to paths.")
    unknown = sorted(set(raw_map) - set(mounts))
    if unknown:
        raise InvalidAPIParameters(f"'config.mount_map' names folders that are not in 'config.mounts': {unknown}.")
    raw_opts = config.get("mount_options", config.get("mountOptions"))
    raw_opts = {} if raw_opts is None else raw_opts
    if not isinstance(raw_opts, dict):
        raise InvalidAPIParameters("'config.mount_options' must map folder names to options.")
    perms: dict[str, str] = {}
    for fname, opt in raw_opts.items():
        if fname not in mounts or not isinstance(opt, dict):
            raise InvalidAPIParameters(f"'config.mount_options' entry {fname!r} is not a mounted folder's options.")
        perm = opt.get("permission", opt.get("perm"))
        if perm is not None:
            if perm not in PERMISSIONS:
                raise InvalidAPIParameters(f"Mount permission of {fname!r} must be one of ro, rw, wd; got {perm!r}.")
            perms[fname] = str(perm)
        kind = opt.get("type", "bind")
        if kind != "bind":
            raise InvalidAPIParameters(f"Mount type {kind!r} of {fname!r} is not supported (only bind).")
    paths = {name: container_path(name, raw_map.get(name)) for name in mounts}
    seen: dict[str, str] = {}
    for name, path in paths.items():
        for other, opath in seen.items():
            if path == opath or path.startswith(opath + "/") or opath.startswith(path + "/"):
                raise InvalidAPIParameters(f"Folders {other!r} and {name!r} would be mounted on top of each other.")
        seen[name] = path
    return mounts, paths, perms
