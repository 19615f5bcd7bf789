"""Reading the ``application/problem+json`` answers of the servers under test."""

from __future__ import annotations

from typing import Any

import httpx


def problem(
    r: httpx.Response, status: int, *words: str, in_detail: bool = False, slug: str | None = None
) -> dict[str, Any]:
    """Assert that ``r`` is a problem document of ``status`` (with its ``type`` URI, ``title`` and ``status``)
    whose title or detail (only the detail with ``in_detail``) mentions each of ``words`` in any case, and
    whose ``type`` ends with ``slug`` when given; return the document."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert str(doc.get("type", "")).startswith("https://") and doc.get("title"), doc
    assert doc.get("status") == status, doc
    text = (doc.get("detail") or "") if in_detail else f"{doc['title']} {doc.get('detail') or ''}"
    for w in words:
        assert w.lower() in text.lower(), (w, doc)
    if slug is not None:
        assert doc["type"].endswith(slug), doc
    return doc
