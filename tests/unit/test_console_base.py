"""Unit tests of the web console's shared pieces: CSRF tokens, post-login targets, filters, vendored assets,
templates."""

from __future__ import annotations

import json

import jinja2
import pytest

from ai.backend.web.console import assets, filters, make_templates
from ai.backend.web.console.base import Login, csrf_token
from ai.backend.web.console.pages.auth import safe_next


def test_csrf_token_is_per_login_and_hides_the_cookie() -> None:
    a, b = csrf_token("cookie-a"), csrf_token("cookie-b")
    assert a != b and len(a) == 64
    assert csrf_token("cookie-a") == a  # stable for one login: no storage needed
    assert "cookie-a" not in a
    login = Login("cookie-a", "u", "user", "active", "AK", "SK")
    assert login.csrf == a and not login.is_admin
    assert Login("x", "u", "superadmin", "active", "AK", "SK").is_superadmin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/folders?path=a", "/folders?path=a"),
        ("/sessions", "/sessions"),
        (None, "/sessions"),
        ("", "/sessions"),
        ("//evil.example/x", "/sessions"),
        ("https://evil.example/", "/sessions"),
        ("/\\evil.example", "/sessions"),
        ("javascript:alert(1)", "/sessions"),
        ("sessions", "/sessions"),
    ],
)
def test_safe_next_stays_on_site(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_filters() -> None:
    assert filters.human_bytes(1536) == "1.5 KiB"
    assert filters.human_bytes(12) == "12 B"
    assert filters.human_bytes("x") == "–"
    assert filters.duration(3725) == "1h 2m 5s"
    assert filters.duration(65) == "1m 5s"
    assert filters.when("2026-01-02T03:04:05+00:00") == "2026-01-02 03:04:05 UTC"
    assert filters.when(None) == "–"
    assert filters.slot("268435456", "mem") == "256.0 MiB"
    assert filters.slot("2.50", "cpu") == "2.5"


def test_assets_manifest_pins_versions_and_integrity() -> None:
    manifest = json.loads(assets.MANIFEST.read_text())
    names = assets.vendor_files()
    assert len(names) == len(set(names)) >= 4
    for pkg in manifest["packages"]:
        assert pkg["integrity"].startswith("sha512-")
        assert pkg["version"][0].isdigit()


def test_templates_escape_and_refuse_unknown_names() -> None:
    env = make_templates()
    html = env.from_string("<p>{{ x }}</p>").render(x="<script>alert(1)</script>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
