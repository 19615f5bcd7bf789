"""The console's login, logout and guards, in Debian's Chromium."""

from __future__ import annotations

from typing import Any

import httpx

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.web import WebServer

from .conftest import PageFactory


def test_login_page_and_wrong_password(new_page: PageFactory, shot: Any) -> None:
    page = new_page()
    page.goto("/sessions")
    page.wait_for_url("**/login?next=**")  # a page needs a login and comes back after it
    shot(page, "login")
    page.get_by_label("Email or user name").fill(USER["email"])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert "password" in error.inner_text().lower()
    assert "/login" in page.url
    cookies = {c["name"] for c in page.context.cookies()}
    assert "AIOHTTP_SESSION" not in cookies


def test_login_then_logout(new_page: PageFactory) -> None:
    page = new_page(USER)
    assert page.url.endswith("/sessions")
    cookie = next(c for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login?bye=1")
    page.goto("/sessions")
    page.wait_for_url("**/login?next=**")


def test_next_parameter_stays_on_site(new_page: PageFactory) -> None:
    page = new_page()
    page.goto("/login?next=//evil.example/x")
    page.get_by_label("Email or user name").fill(USER["email"])
    page.get_by_label("Password").fill(USER["password"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/sessions")


def test_logout_without_csrf_token_is_refused(new_page: PageFactory, console: WebServer) -> None:
    page = new_page(USER)
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
        r = http.post("/logout", data={"_csrf": "forged"})
        assert r.status_code == 403
        assert "security token" in r.text
        r = http.post("/logout", data={}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
    # Still logged in: nothing changed.
    page.goto("/sessions")
    assert "/login" not in page.url


def test_unknown_page_is_an_html_404(new_page: PageFactory) -> None:
    page = new_page(USER)
    resp = page.goto("/no-such-page")
    assert resp is not None and resp.status == 404
    assert page.get_by_role("heading", name="Page not found").is_visible()


def test_pages_send_security_headers(console: WebServer) -> None:
    r = httpx.get(console.url + "/login")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Cache-Control"] == "no-store"
    # The API keeps its own answers (problem+json, no console headers).
    r = httpx.get(console.url + "/func/no-such", headers={"X-Requested-With": "x"})
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/problem+json")


def test_expired_login_says_so(new_page: PageFactory, console: WebServer) -> None:
    page = new_page(USER)
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "AIOHTTP_SESSION")
    # Logging out through the API ends the login behind the browser's back: its cookie is now stale.
    with httpx.Client(base_url=console.url, cookies={"AIOHTTP_SESSION": sid}) as http:
        assert http.post("/server/logout", headers={"X-Requested-With": "x"}).status_code == 201
    page.goto("/sessions")
    page.wait_for_url("**/login?next=**")
    assert "expired" in page.locator("main").inner_text()
