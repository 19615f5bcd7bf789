"""Rich console output for user code in query mode: ``media`` and ``html`` console items.

Usage inside a session (the Python REPL puts the kernel package on ``sys.path``)::

    from ai.backend.kernel.display import display, display_html, display_image
    display_html("<b>bold</b>")              # -> ["html", "<b>bold</b>"]
    display_image(png_bytes)                 # -> ["media", ["image/png", "data:image/png;base64,..."]]
    display(svg_text, mime="image/svg+xml")  # -> ["media", ["image/svg+xml", "<svg ..."]]
    display(figure)                          # a matplotlib figure, as PNG

Text-based and XML-based media types are sent as plain strings, everything else as an RFC 2397
data URI (rest-api.md §8.3).  Outside the query-mode REPL (e.g. a batch-mode script) there is no
console to send items to: a short text stand-in is printed to stdout instead.

Only the standard library is used: this module runs with the kernel image's Python.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

__all__ = [
    "display",
    "display_html",
    "display_image",
    "display_media",
    "display_svg",
    "figure_to_png",
    "is_text_mime",
    "media_content",
]

#: Name under which the REPL registers its console hook (an object with ``emit(kind, value)``).
HOOK_MODULE = "_backendai_repl_hooks"
_TEXT_APPLICATION_TYPES = {"application/json", "application/javascript", "application/xml", "application/x-latex"}


def is_text_mime(mime: str) -> bool:
    """Whether ``mime`` is sent as a plain string (text-based or XML-based types)."""
    base = mime.split(";", 1)[0].strip().lower()
    return base.startswith("text/") or base.endswith(("+xml", "+json")) or base in _TEXT_APPLICATION_TYPES


def media_content(mime: str, data: bytes | str) -> str:
    """The ``content`` of a ``media`` item: a plain string for text types, else a ``data:`` URI."""
    if is_text_mime(mime):
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if isinstance(data, str):
        if data.startswith("data:"):
            return data  # already a data URI
        data = data.encode("utf-8")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _emit(kind: str, value: Any, fallback: str) -> None:
    hook = sys.modules.get(HOOK_MODULE)
    emit = getattr(hook, "emit", None)
    if emit is not None:
        emit(kind, value)
    else:
        print(fallback)


def display_media(mime: str, data: bytes | str) -> None:
    """Send one ``media`` item ``[mime, content]``."""
    if not isinstance(mime, str) or "/" not in mime:
        raise ValueError(f"not a media type: {mime!r}")
    content = media_content(mime, data)
    stand_in = content if is_text_mime(mime) else f"<{mime}, {len(content)} characters>"
    _emit("media", [mime, content], stand_in)


def display_html(html: str) -> None:
    """Send an ``html`` item (a partial HTML document, e.g. a table)."""
    if not isinstance(html, str):
        raise TypeError(f"html must be a str, not {type(html).__name__}")
    _emit("html", html, html)


def display_svg(svg: str | bytes) -> None:
    """Send an SVG image as a ``media`` item of type ``image/svg+xml``."""
    display_media("image/svg+xml", svg)


def display_image(data: bytes | str, mime: str = "image/png") -> None:
    """Send an image: raw bytes, a data URI, or the path of an image file."""
    if isinstance(data, str) and not data.startswith("data:"):
        with open(data, "rb") as f:
            data = f.read()
    display_media(mime, data)


def figure_to_png(figure: Any, **savefig_kwargs: Any) -> bytes:
    """Render a matplotlib figure (anything with ``savefig``) to PNG bytes."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", **savefig_kwargs)
    return buf.getvalue()


def display(obj: Any, mime: str | None = None) -> None:
    """Send ``obj`` in its richest form.

    With ``mime``, ``obj`` is the data (bytes or str) of that type.  Otherwise: matplotlib figures
    become PNG images; objects with IPython-style ``_repr_html_``/``_repr_svg_``/``_repr_png_``
    methods use them (in that order); anything else is sent as ``text/plain`` (its ``str``).
    """
    if mime is not None:
        if mime == "text/html":
            display_html(obj.decode("utf-8", "replace") if isinstance(obj, bytes) else str(obj))
        else:
            display_media(mime, obj)
        return
    if hasattr(obj, "savefig") and hasattr(obj, "canvas"):
        display_media("image/png", figure_to_png(obj))
        return
    for method, kind in (("_repr_html_", "text/html"), ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png")):
        fn = getattr(obj, method, None)
        if callable(fn):
            data = fn()
            if data is not None:
                display(data, mime=kind)
                return
    display_media("text/plain", obj if isinstance(obj, str) else str(obj))
