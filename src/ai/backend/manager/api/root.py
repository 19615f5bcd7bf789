"""The unauthenticated version endpoint (``GET /`` and ``GET /vN``)."""

from __future__ import annotations

from fastapi import APIRouter

API_VERSION = "v6.20220615"
MANAGER_VERSION = "0.1.0"

router = APIRouter()


@router.get("/")
async def version() -> dict[str, str]:
    """The API version the server speaks and the manager's release."""
    return {"version": API_VERSION, "manager": MANAGER_VERSION}
