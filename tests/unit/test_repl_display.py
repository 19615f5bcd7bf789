"""Rich console items of the Python REPL (media, html, log) and the ``files`` of ``.output``.

Exercised through a real runner subprocess; matplotlib is stood in for by a tiny fake package in the
work dir (the real one is tested in the python kernel image by tests/integration/test_images_runtimes.py).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from ai.backend.kernel import display as display_mod
from ai.backend.kernel.output_files import MAX_FILE_BYTES, MAX_RUN_BYTES

from .test_runner import Runner, StartRunner, query, run_to_end
from .test_runner import runner as runner  # noqa: F401 (the fixture)
from .test_runner import start_runner as start_runner  # noqa: F401 (the fixture)

IMPORT = "from ai.backend.kernel.display import display, display_html, display_image, display_svg\n"


def test_media_content_rules() -> None:
    assert display_mod.media_content("text/plain", b"caf\xc3\xa9") == "café"
    assert display_mod.media_content("image/svg+xml", "<svg/>") == "<svg/>"
    assert display_mod.media_content("application/json", b"{}") == "{}"
    assert (
        display_mod.media_content("image/png", b"\x89PNG")
        == "data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()
    )
    assert display_mod.media_content("image/png", "data:image/png;base64,AA==") == "data:image/png;base64,AA=="
    assert not display_mod.is_text_mime("application/pdf") and display_mod.is_text_mime("text/html; charset=utf-8")


async def test_html_and_media_items_interleave_with_output(runner: Runner) -> None:  # noqa: F811
    code = IMPORT + (
        "import os, sys\n"
        "print('a')\n"
        "display_html('<table><tr><td>1</td></tr></table>')\n"
        "os.write(1, b'from fd 1\\n')\n"
        "display_image(b'\\x89PNG-bytes')\n"
        "print('err', file=sys.stderr)\n"
        "display_svg('<svg xmlns=\"http://www.w3.org/2000/svg\"/>')\n"
        "display_html('<i>second</i>')\n"
        "print('b')\n"
    )
    result = await query(runner.client, code)
    assert result["console"] == [
        ["stdout", "a\n"],
        ["html", "<table><tr><td>1</td></tr></table>"],
        ["stdout", "from fd 1\n"],
        ["media", ["image/png", "data:image/png;base64," + base64.b64encode(b"\x89PNG-bytes").decode()]],
        ["stderr", "err\n"],
        ["media", ["image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg"/>']],
        ["html", "<i>second</i>"],
        ["stdout", "b\n"],
    ]


async def test_display_uses_rich_reprs(runner: Runner) -> None:  # noqa: F811
    code = IMPORT + (
        "class Table:\n"
        "    def _repr_html_(self): return '<table></table>'\n"
        "class Plain:\n"
        "    def __str__(self): return 'just text'\n"
        "display(Table()); display(Plain()); display('{\"a\": 1}', mime='application/json')\n"
    )
    result = await query(runner.client, code)
    assert result["console"] == [
        ["html", "<table></table>"],
        ["media", ["text/plain", "just text"]],
        ["media", ["application/json", '{"a": 1}']],
    ]
    bad = await query(runner.client, IMPORT + "display_html(b'bytes')")
    assert "TypeError: html must be a str" in bad["console"][0][1]


async def test_rich_items_follow_continuations(runner: Runner) -> None:  # noqa: F811
    code = IMPORT + "import time\ndisplay_html('<p>one</p>')\ntime.sleep(1.2)\ndisplay_html('<p>two</p>')"
    responses = await run_to_end(runner.client, code)
    assert responses[0]["status"] == "continued"
    assert responses[0]["console"] == [["html", "<p>one</p>"]]
    assert [item for r in responses for item in r["console"]] == [["html", "<p>one</p>"], ["html", "<p>two</p>"]]


async def test_log_records_become_log_items(runner: Runner) -> None:  # noqa: F811
    code = (
        "import logging\n"
        "log = logging.getLogger('demo')\n"
        "log.info('hidden: below the default WARNING level')\n"
        "print('x')\n"
        "log.warning('careful %d', 3)\n"
        "log.setLevel(logging.DEBUG)\n"
        "log.debug('details')\n"
        "log.critical('the end')\n"
        "try:\n"
        "    1/0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('failed')\n"
    )
    result = await query(runner.client, code)
    console = result["console"]
    assert console[0] == ["stdout", "x\n"]
    logs = [item for kind, item in console[1:] if kind == "log"]
    assert len(logs) == len(console) - 1 == 4
    assert [(lv, name, msg.splitlines()[0]) for lv, _, name, msg in logs] == [
        ("warning", "demo", "careful 3"),
        ("debug", "demo", "details"),
        ("fatal", "demo", "the end"),
        ("error", "demo", "failed"),
    ]
    assert "ZeroDivisionError: division by zero" in logs[3][3]
    stamp = datetime.datetime.fromisoformat(logs[0][1])
    assert stamp.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 60


async def test_basic_config_logs_to_the_console(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner()
    result = await query(runner.client, "import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.info('hi')")
    [[kind, (level, _, name, message)]] = result["console"]
    assert (kind, level, name, message) == ("log", "info", "root", "hi")
    # An explicit destination is the user's choice: plain stderr text.
    runner = await start_runner()
    code = (
        "import logging, sys\nlogging.basicConfig(stream=sys.stderr, format='%(levelname)s:%(message)s')\n"
        "logging.warning('as text')"
    )
    result = await query(runner.client, code)
    assert result["console"] == [["stderr", "WARNING:as text\n"]]


async def test_plt_show_sends_figures_as_png(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner()
    # A stand-in for matplotlib: what the REPL's plt.show() uses (get_backend, get_fignums, figure, close).
    pkg = runner.workdir / "matplotlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def get_backend():\n    return 'agg'\n")
    (pkg / "pyplot.py").write_text(
        "_figs = {}\n"
        "class Figure:\n"
        "    canvas = None\n"
        "    def __init__(self, n): self.n = n\n"
        "    def savefig(self, buf, format): buf.write(b'PNG-%d' % self.n)\n"
        "def figure(num=None):\n"
        "    num = num or len(_figs) + 1\n"
        "    return _figs.setdefault(num, Figure(num))\n"
        "def get_fignums(): return sorted(_figs)\n"
        "def close(which): _figs.clear()\n"
        "def show(*a, **k): print('original show')\n"
    )
    code = "import matplotlib.pyplot as plt\nplt.figure(); plt.figure()\nprint('before')\nplt.show()\nprint('after')"
    result = await query(runner.client, code)
    png = [
        ["media", ["image/png", "data:image/png;base64," + base64.b64encode(b"PNG-%d" % n).decode()]] for n in (1, 2)
    ]
    assert result["console"] == [["stdout", "before\n"], *png, ["stdout", "after\n"]]
    # Shown figures are closed: a second show() has nothing to send.
    result = await query(runner.client, "plt.show()")
    assert result["console"] == []


async def test_a_users_own_ai_package_wins(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner()
    (runner.workdir / "ai").mkdir()
    (runner.workdir / "ai" / "__init__.py").write_text("WHOSE = 'mine'\n")
    result = await query(runner.client, "import ai\nprint(ai.WHOSE)")
    assert result["console"] == [["stdout", "mine\n"]]


# -------------------------------------------------------------------------------------------
# .output files
# -------------------------------------------------------------------------------------------


def files_of(responses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert all(r["files"] == [] for r in responses[:-1])
    return {f["name"]: f for f in responses[-1]["files"]}


def decoded(entry: dict[str, Any]) -> tuple[str, bytes]:
    head, _, data = entry["url"].partition(",")
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(data)


async def test_output_files_are_reported_at_finished(runner: Runner) -> None:  # noqa: F811
    out = runner.workdir / ".output"
    assert out.is_dir()  # created for user code to write into
    (out / "old.txt").write_text("unchanged")
    (out / "edit.txt").write_text("v1")
    code = (
        "import os\n"
        "open('.output/new.csv', 'w').write('a,b\\n1,2\\n')\n"
        "os.makedirs('.output/sub/dir', exist_ok=True)\n"
        "open('.output/sub/dir/img.png', 'wb').write(b'\\x89PNG')\n"
        "open('.output/edit.txt', 'w').write('v2, longer')\n"
        "open('.output/big.bin', 'wb').write(b'x' * (MAX + 1))\n"
    ).replace("MAX", str(MAX_FILE_BYTES))
    files = files_of(await run_to_end(runner.client, code))
    assert set(files) == {"new.csv", "sub/dir/img.png", "edit.txt", "big.bin"}
    assert decoded(files["new.csv"]) == ("text/csv", b"a,b\n1,2\n")
    assert decoded(files["sub/dir/img.png"]) == ("image/png", b"\x89PNG")
    assert decoded(files["edit.txt"]) == ("text/plain", b"v2, longer") and files["edit.txt"]["size"] == 10
    assert files["big.bin"] == {"name": "big.bin", "url": None, "size": MAX_FILE_BYTES + 1}
    # The next run reports only what it changes itself.
    files = files_of(await run_to_end(runner.client, "open('.output/new.csv', 'a').write('3,4\\n')"))
    assert list(files) == ["new.csv"]
    assert (await query(runner.client, "pass"))["files"] == []


async def test_output_files_total_cap(runner: Runner) -> None:  # noqa: F811
    n = MAX_RUN_BYTES // MAX_FILE_BYTES + 2
    code = f"for i in range({n}):\n    open(f'.output/f{{i:02}}.bin', 'wb').write(b'y' * {MAX_FILE_BYTES})"
    files = files_of(await run_to_end(runner.client, code))
    assert len(files) == n
    with_data = [f for f in files.values() if f["url"] is not None]
    assert len(with_data) == MAX_RUN_BYTES // MAX_FILE_BYTES
    assert all(f["size"] == MAX_FILE_BYTES for f in files.values())


async def test_output_never_follows_symlinks(start_runner: StartRunner, tmp_path: Any) -> None:  # noqa: F811
    runner = await start_runner()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the console")
    code = (
        f"import os\nos.symlink({str(secret)!r}, '.output/link.txt')\n"
        f"os.symlink({str(tmp_path)!r}, '.output/linked-dir')\n"
        "open('.output/real.txt', 'w').write('ok')\n"
    )
    files = files_of(await run_to_end(runner.client, code))
    assert list(files) == ["real.txt"]
    # A .output that is itself a link is not read at all.
    code = (
        f"import os, shutil\nshutil.rmtree('.output')\nos.symlink({str(tmp_path)!r}, '.output')\n"
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')"
    )
    assert files_of(await run_to_end(runner.client, code)) == {}
    assert (await query(runner.client, "open('.output/via-link.txt', 'w').write('x')"))["files"] == []
