"""Session file endpoints: /session/:id/upload, /session/:id/files and /session/:id/download."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
