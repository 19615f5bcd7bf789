"""Every console page, for a user and for an admin: labelled controls, alt texts, one main heading, no
JavaScript errors, and no sideways scrolling on a laptop screen (1366×768)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PageFactory

USER_PAGES = ["/sessions", "/sessions?tab=finished", "/sessions/new", "/folders", "/settings", "/usage", "/login"]
ADMIN_PAGES = [
    "/sessions?scope=all",
    "/admin",
    "/admin/users",
    "/admin/users/new",
    "/admin/keypairs",
    "/admin/projects",
    "/admin/domains",
    "/admin/policies",
    "/admin/presets",
    "/admin/agents",
    "/admin/images",
    "/admin/scaling-groups",
]

# Runs in the page: what a screen reader or a keyboard user would miss.
_AUDIT_JS = """
() => {
  const problems = [];
  const named = (el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.title) return true;
    if (el.labels && el.labels.length && [...el.labels].some(l => l.textContent.trim())) return true;
    return false;
  };
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || el.closest('[hidden]') || el.closest('template')) continue;
    if (['submit', 'button', 'reset'].includes(el.type)) continue;
    if (!named(el)) problems.push('unlabelled ' + el.tagName.toLowerCase() + ' name=' + (el.name || el.id));
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (el.closest('[hidden]')) continue;
    const text = (el.textContent || '').trim() || el.getAttribute('aria-label') || el.title;
    if (!text) problems.push('nameless ' + el.tagName.toLowerCase() + ' ' + (el.getAttribute('href') || el.className));
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('img without alt ' + img.src.slice(0, 40));
  }
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(h1 + ' h1 headings');
  if (!document.querySelector('main')) problems.push('no <main>');
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    problems.push('scrolls sideways: ' + document.documentElement.scrollWidth + 'px wide');
  return problems;
}
"""


def _audit(page: Any, path: str) -> list[str]:
    resp = page.goto(path)
    assert resp is not None and resp.status == 200, f"{path}: HTTP {resp.status if resp else None}"
    page.wait_for_load_state("load")
    return [f"{path}: {p}" for p in page.evaluate(_AUDIT_JS)]


@pytest.mark.parametrize("who", ["user", "admin"])
def test_pages_are_accessible_and_fit_a_laptop(new_page: PageFactory, who: str) -> None:
    from ai.backend.manager.fixtures import ADMIN, USER

    page = new_page(USER if who == "user" else ADMIN, viewport={"width": 1366, "height": 768})
    paths = USER_PAGES[:-1] + (ADMIN_PAGES if who == "admin" else [])
    problems = [p for path in paths for p in _audit(page, path)]
    assert not problems, "\n".join(problems)


def test_login_page_is_accessible(new_page: PageFactory) -> None:
    page = new_page(viewport={"width": 1366, "height": 768})
    assert _audit(page, "/login") == []


def test_keyboard_reaches_the_navigation(new_page: PageFactory) -> None:
    from ai.backend.manager.fixtures import USER

    page = new_page(USER)
    page.goto("/sessions")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_the_audit_finds_problems(new_page: PageFactory) -> None:
    # The audit itself, on a page with one of each problem (so a pass above means something).
    page = new_page(viewport={"width": 800, "height": 600})
    page.set_content(
        "<h1>a</h1><h1>b</h1><input name='q'><button></button><img src='data:,'><div style='width: 2000px'>wide</div>"
    )
    problems = page.evaluate(_AUDIT_JS)
    assert any("unlabelled input" in p for p in problems)
    assert any("nameless button" in p for p in problems)
    assert any("img without alt" in p for p in problems)
    assert any("2 h1" in p for p in problems)
    assert any("no <main>" in p for p in problems)
    assert any("scrolls sideways" in p for p in problems)
