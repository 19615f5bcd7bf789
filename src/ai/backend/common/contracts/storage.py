"""The manager → storage proxy contract: the auth header and the request bodies of the proxy's manager API
(``[api.manager]``; routes: ``docs/storage-proxy.md``). The proxy validates each body with these models and
the manager's client builds its bodies from them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from ._base import WireModel

__all__ = [
    "AUTH_HEADER",
    "CloneFolder",
    "CreateFolder",
    "DeleteBody",
    "DownloadBody",
    "FolderOptions",
    "FolderRef",
    "ListBody",
    "MkdirBody",
    "MoveBody",
    "RenameBody",
    "SetQuota",
    "StorageBody",
    "UploadBody",
]

#: Carries ``[api.manager].secret`` of the proxy (``[storage-proxies.<name>].secret`` of the manager).
AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"


class StorageBody(WireModel):
    """A request body of the manager API. ``null`` is a value here (``size_bytes: null``: no quota), so it is
    sent, unlike in the agent's messages."""

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class FolderRef(StorageBody):
    volume: StrictStr
    vfid: StrictStr


class FolderOptions(StorageBody):
    quota: StrictInt | None = Field(None, ge=0)


class CreateFolder(FolderRef):
    options: FolderOptions | None = None


class CloneFolder(StorageBody):
    volume: StrictStr
    src_vfid: StrictStr
    dst_volume: StrictStr | None = None
    dst_vfid: StrictStr | None = Field(None)
    new_vfid: StrictStr | None = None  # the older upstream name of dst_vfid


class SetQuota(FolderRef):
    size_bytes: StrictInt | None = Field(..., ge=0)


class MkdirBody(FolderRef):
    relpath: StrictStr
    parents: StrictBool = False
    exist_ok: StrictBool = False


class ListBody(FolderRef):
    relpath: StrictStr = ""


class RenameBody(FolderRef):
    relpath: StrictStr
    new_name: StrictStr


class MoveBody(FolderRef):
    src_relpath: StrictStr
    dst_relpath: StrictStr


class DeleteBody(FolderRef):
    relpaths: list[StrictStr] = Field(..., min_length=1, max_length=10_000)
    recursive: StrictBool = False


class UploadBody(FolderRef):
    relpath: StrictStr
    size: StrictInt = Field(..., ge=0)


class DownloadBody(FolderRef):
    relpath: StrictStr = ""
    archive: StrictBool = False
