"""The code console (``/sessions/{id}/cell``) and the terminal (``/sessions/{id}/terminal``) in Debian's Chromium,
against one real python session shared by the module's tests."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID
from ai.backend.testutils.cluster import Cluster

from .conftest import PageFactory

pytestmark = pytest.mark.docker

#: Output that needs a container's work (matplotlib's first import builds its font cache) gets longer.
SLOW_MS = 90_000
#: The terminal's visible text (xterm.js renders its rows into the DOM).
ROWS = "document.querySelector('#terminal .xterm-rows').innerText"


@pytest.fixture(scope="module")
def session(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """One RUNNING python session of the fixture user: ``{"id", "name"}``."""
    name = f"tools-{uuid.uuid4().hex[:8]}"
    body = {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "1g"}}}
    r = cluster.request("POST", "/session", body)
    assert r.status_code in (200, 201), r.text
    doc = r.json()
    assert doc["status"] == "RUNNING", doc
    try:
        yield {"id": doc["sessionId"], "name": name}
    finally:
        cluster.request("DELETE", f"/session/{name}?forced=true")


@pytest.fixture(scope="module")
def other_user(cluster: Cluster) -> dict[str, Any]:
    """A second plain user (email and password) of the default project."""
    email = f"tools-{secrets.token_hex(4)}@example.org"
    props = {
        "password": "pass-word-1",
        "domain_name": "default",
        "role": "user",
        "group_ids": [str(DEFAULT_GROUP_ID)],
        "need_password_change": False,
    }
    out = cluster.gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {"e": email, "p": props},
        who=ADMIN,
    )
    assert out["create_user"]["ok"] is True, out
    return {"email": email, "password": "pass-word-1"}


def _run(page: Any, code: str, *, shortcut: bool = False) -> Any:
    """Type ``code`` into the editor and run it; the new cell (an ``article``) as a locator."""
    before = page.locator("#cell-history .cell").count()
    editor = page.get_by_role("textbox", name=re.compile(r"^Code"))
    editor.fill(code)
    if shortcut:
        editor.press("Shift+Enter")
    else:
        page.get_by_role("button", name="Run").click()
    cell = page.locator("#cell-history .cell").nth(before)
    cell.wait_for()
    return cell


def _wait_done(cell: Any, timeout: float = 30_000) -> None:
    cell.page.wait_for_function("(c) => !c.classList.contains('running')", arg=cell.element_handle(), timeout=timeout)


def test_cell_text_errors_input_and_interrupt(user_page: Any, session: dict[str, Any]) -> None:
    page = user_page
    page.goto(f"/sessions/{session['id']}/cell")
    assert page.get_by_role("heading", name=f"Code console: {session['name']}").is_visible()
    assert page.locator("#session-status").inner_text() == "RUNNING"

    cell = _run(page, "print('hello-cell', 6 * 7)", shortcut=True)
    cell.locator(".stream.stdout").get_by_text("hello-cell 42").wait_for()
    _wait_done(cell)
    assert page.get_by_role("status").filter(has_text="Ready").count() == 1

    # An exception: its traceback in the stderr block (labelled, not only coloured).
    cell = _run(page, "def f():\n    return 1 / 0\nf()")
    err = cell.locator(".stream.stderr")
    err.get_by_text("ZeroDivisionError", exact=False).wait_for()
    assert "Traceback" in err.inner_text() and "stderr" in (err.text_content() or "")
    assert cell.locator(".stream.stdout").count() == 0

    # Output streams while the code runs (the runner's continued segments), not only at the end.
    cell = _run(page, "import time\nprint('tick-0', flush=True)\ntime.sleep(4)\nprint('tick-1')")
    out = cell.locator(".cell-output")
    out.get_by_text("tick-0").wait_for()
    assert "tick-1" not in out.inner_text()
    assert "running" in (cell.get_attribute("class") or "")
    out.get_by_text("tick-1").wait_for()
    _wait_done(cell)

    # input(): the console asks, the answer goes back on the same socket.
    cell = _run(page, "name = input('Name? ')\nprint('hi', name)")
    answer = page.get_by_label("Input requested by the running code")
    answer.wait_for()
    answer.fill("bob")
    page.get_by_role("button", name="Send input").click()
    cell.locator(".cell-output").get_by_text("hi bob").wait_for()
    _wait_done(cell)
    assert page.locator("#cell-input-form").is_hidden()

    # Interrupt stops a long run.
    cell = _run(page, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    cell.locator(".cell-output").get_by_text("sleeping").wait_for()
    page.get_by_role("button", name="Interrupt").click()
    cell.locator(".stream.stderr").get_by_text("KeyboardInterrupt", exact=False).wait_for()
    _wait_done(cell)

    # History stays on the page; "Clear output" empties it.
    assert page.locator("#cell-history .cell").count() == 5
    page.get_by_role("button", name="Clear output").click()
    assert page.locator("#cell-history .cell").count() == 0


def test_cell_rich_output(user_page: Any, session: dict[str, Any], shot: Any) -> None:
    page = user_page
    page.goto(f"/sessions/{session['id']}/cell")
    cell = _run(
        page,
        "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
    )
    img = cell.locator("img[src^='data:image/png;base64,']")
    img.wait_for(timeout=SLOW_MS)
    page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    assert img.get_attribute("alt")

    # SVG goes through <img> (never inlined, so its scripts cannot run); HTML only into a sandboxed frame.
    cell = _run(
        page,
        "from ai.backend.kernel.display import display, display_html\n"
        'display(\'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
        '<script>alert(1)</script><rect width="40" height="20" fill="teal"/></svg>\', mime=\'image/svg+xml\')\n'
        'display_html(\'<table><tr><td id="cell-html">html-ok</td></tr></table>'
        '<script>parent.document.title = "pwned"</script><img src=x onerror="parent.document.title=1">\')',
    )
    svg = cell.locator("img[src^='data:image/svg+xml']")
    svg.wait_for()
    page.wait_for_function("(i) => i.complete && i.naturalWidth === 40", arg=svg.element_handle())
    assert cell.locator("svg").count() == 0
    frame = cell.locator("iframe.html-output")
    frame.wait_for()
    assert frame.get_attribute("sandbox") == ""  # no allow-same-origin, no allow-scripts
    page.frame_locator("iframe.html-output").locator("#cell-html").get_by_text("html-ok").wait_for()
    assert page.locator("#cell-html").count() == 0  # not in the page itself
    _wait_done(cell)
    assert "pwned" not in page.title() and page.title() != "1"
    shot(page, "tools-cell")


def _tput_cols(page: Any) -> int:
    """The shell's idea of the terminal's width (``tput cols``), read from the terminal's rows."""
    marker = secrets.token_hex(3)
    page.keyboard.type(f"echo {marker}=$(tput cols)")
    page.keyboard.press("Enter")
    pattern = f"{marker}=(\\d+)"
    page.wait_for_function(f"(p) => new RegExp(p).test({ROWS})", arg=pattern)
    found = re.search(f"{marker}=(\\d+)", page.locator("#terminal .xterm-rows").inner_text())
    assert found is not None
    return int(found.group(1))


def test_terminal(user_page: Any, session: dict[str, Any], shot: Any) -> None:
    page = user_page
    page.goto(f"/sessions/{session['id']}/terminal")
    assert page.get_by_role("heading", name=f"Terminal: {session['name']}").is_visible()
    page.locator("#terminal-status").get_by_text("Connected.").wait_for()
    rows = page.locator("#terminal .xterm-rows")
    page.wait_for_function(f"() => /[$#]\\s*$/m.test({ROWS})", timeout=30_000)  # a prompt
    page.locator("#terminal").click()
    page.keyboard.type("echo hello-$((6*7))")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {ROWS}.includes('hello-42')")
    # Copy and paste: a double-click selects a word, Ctrl+Shift+C copies it, Ctrl+Shift+V pastes.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    rows.locator("div", has_text=re.compile(r"^hello-42")).first.dblclick(position={"x": 5, "y": 5})
    page.keyboard.press("Control+Shift+C")
    page.wait_for_function("async () => (await navigator.clipboard.readText()) === 'hello-42'")
    page.evaluate("() => navigator.clipboard.writeText('echo pasted-$((1+1))')")
    page.locator("#terminal").click()
    page.keyboard.press("Control+Shift+V")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {ROWS}.includes('pasted-2')")
    # Resizing the window resizes the terminal: the page sends the new size, and the shell sees it.
    wide = _tput_cols(page)
    width = page.evaluate("() => document.querySelector('#terminal .xterm-screen').offsetWidth")
    page.set_viewport_size({"width": 800, "height": 600})
    page.wait_for_function(f"() => document.querySelector('#terminal .xterm-screen').offsetWidth < {width}")
    narrow = _tput_cols(page)
    assert narrow < wide, (narrow, wide)
    assert page.get_by_role("button", name="Reconnect").is_hidden()
    shot(page, "tools-terminal")
    # "Restart shell" replaces the shell: a variable of the old one is gone.
    page.keyboard.type("RSTV=old; echo v=[$RSTV]")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {ROWS}.includes('v=[old]')")
    prompts = rows.inner_text().count("work@")
    page.get_by_role("button", name="Restart shell").click()
    page.wait_for_function(f"() => ({ROWS}.match(/work@/g) || []).length > {prompts}")
    page.keyboard.type("echo w=[$RSTV]")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {ROWS}.includes('w=[]')")
    # Leaving the shell closes the terminal; "Reconnect" opens a new one.
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    reconnect = page.get_by_role("button", name="Reconnect")
    reconnect.wait_for()
    assert "Disconnected" in page.locator("#terminal-status").inner_text()
    reconnect.click()
    page.locator("#terminal-status").get_by_text("Connected.").wait_for()


def test_another_users_session_is_404(
    new_page: PageFactory, session: dict[str, Any], other_user: dict[str, Any]
) -> None:
    page = new_page(other_user)
    for tool in ("cell", "terminal"):
        resp = page.goto(f"/sessions/{session['id']}/{tool}")
        assert resp is not None and resp.status == 404
        assert page.locator(".error-page").is_visible()
        assert session["name"] not in page.content()
    resp = page.goto("/sessions/no-such-session/cell")
    assert resp is not None and resp.status == 404


def test_pages_of_an_ended_session(user_page: Any, session: dict[str, Any], cluster: Cluster) -> None:
    """Last in the module: it ends the shared session."""
    r = cluster.request("DELETE", f"/session/{session['name']}?forced=true")
    assert r.status_code == 200, r.text
    cluster.wait_for_status(session["id"], "TERMINATED", "CANCELLED", "ERROR")
    page = user_page
    page.goto(f"/sessions/{session['id']}/terminal")
    assert "not running" in page.locator("#not-running").inner_text()
    assert "not running" in page.locator("#terminal-status").inner_text().lower()
    assert page.locator("#terminal .xterm").count() == 0
    page.goto(f"/sessions/{session['id']}/cell")
    assert "not running" in page.locator("#not-running").inner_text()
    assert page.get_by_role("button", name="Run").is_disabled()
    assert page.get_by_role("textbox", name=re.compile(r"^Code")).is_disabled()
