"""Session templates: /template/session CRUD and creating sessions from a template."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
