"""What a volume backend provides; the APIs talk only to this interface (``vfs`` is the first backend)."""

from __future__ import annotations

import os
import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ai.backend.common.problems import InvalidAPIParameters, ProblemError

__all__ = ["AbstractVolume", "DownloadTarget", "PayloadTooLarge", "Usage", "normalize_vfid"]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class PayloadTooLarge(ProblemError):
    """Over the folder quota or the proxy's ``max-upload-size`` (413)."""

    status, slug, title = 413, "payload-too-large", "Request entity too large"


def normalize_vfid(value: Any, what: str = "vfid") -> str:
    """A folder id as 32 lower-case hex digits (a UUID with or without dashes is accepted)."""
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"{what} must be a string (a UUID)")
    text = value.strip().lower()
    if _HEX32.match(text):
        return text
    try:
        return uuid.UUID(text).hex
    except ValueError:
        raise InvalidAPIParameters(f"{what} is not a UUID: {value!r}") from None


@dataclass(frozen=True)
class Usage:
    file_count: int
    used_bytes: int


@dataclass
class DownloadTarget:
    """An open download: a regular file (``fd`` readable, ``st`` its fstat) or a directory (``is_dir``)."""

    fd: int
    st: os.stat_result
    name: str  # the last path component ("" for the folder root)

    @property
    def is_dir(self) -> bool:
        import stat

        return stat.S_ISDIR(self.st.st_mode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class AbstractVolume(ABC):
    """One configured volume (``[volume.<name>]``). Paths are folder-relative and checked by the backend."""

    backend: str = ""
    capabilities: tuple[str, ...] = ("vfolder",)

    def __init__(self, name: str, path: str, options: dict[str, Any]) -> None:
        self.name = name
        self.path = os.path.abspath(path)
        self.options = options

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "path": self.path,
            "fsprefix": "",
            "capabilities": list(self.capabilities),
        }

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the volume at start-up."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`open` acquired."""

    # folders
    @abstractmethod
    async def create_folder(self, vfid: str, quota: int | None) -> None: ...
    @abstractmethod
    async def delete_folder(self, vfid: str) -> None: ...
    @abstractmethod
    async def clone_folder(self, src_vfid: str, dst: AbstractVolume, dst_vfid: str) -> None: ...
    @abstractmethod
    async def mount_path(self, vfid: str) -> str: ...
    @abstractmethod
    async def usage(self, vfid: str) -> Usage: ...
    @abstractmethod
    async def get_quota(self, vfid: str) -> int | None: ...
    @abstractmethod
    async def set_quota(self, vfid: str, size_bytes: int | None) -> None: ...

    # files
    @abstractmethod
    async def mkdir(self, vfid: str, relpath: str, *, parents: bool, exist_ok: bool) -> None: ...
    @abstractmethod
    async def list_dir(self, vfid: str, relpath: str, limit: int) -> tuple[list[dict[str, Any]], bool]: ...
    @abstractmethod
    async def rename(self, vfid: str, relpath: str, new_name: str) -> None: ...
    @abstractmethod
    async def move(self, vfid: str, src_relpath: str, dst_relpath: str) -> None: ...
    @abstractmethod
    async def delete_files(self, vfid: str, relpaths: list[str], *, recursive: bool) -> None: ...

    # transfers
    @abstractmethod
    async def check_upload(self, vfid: str, relpath: str, size: int) -> str:
        """Validate an upload of ``size`` bytes to ``relpath`` (quota, path); the normalised relpath."""

    @abstractmethod
    def upload_fd(self, session: str) -> tuple[int, int]:
        """The (appendable) partial file of an upload session and its current size."""

    @abstractmethod
    def upload_size(self, session: str) -> int:
        """Bytes received so far for an upload session (0 when none)."""

    @abstractmethod
    async def finish_upload(self, vfid: str, relpath: str, session: str, size: int) -> None:
        """Move a complete upload into place (parents created, an existing file replaced)."""

    @abstractmethod
    async def discard_upload(self, session: str) -> None: ...
    @abstractmethod
    async def open_download(self, vfid: str, relpath: str) -> DownloadTarget: ...
