"""The kernel images of ``images/`` in real sessions: C, C++, Node.js, Lua and Python's rich output.

Query mode and batch mode (sources written by the batch ``clean`` step, then the default ``*``
build and exec commands), compile errors, interrupts, matplotlib figures as PNG ``media`` items,
``html`` and ``log`` items, and the ``files`` of ``/home/work/.output``.
"""

from __future__ import annotations

import base64
import secrets
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.docker


@contextmanager
def session(cluster: Cluster, image: str) -> Iterator[str]:
    name = f"img-{image.replace(':', '-')}-{secrets.token_hex(3)}"
    r = cluster.request("POST", "/session", {"image": image, "name": name}, timeout=300)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "RUNNING", r.text
    try:
        yield name
    finally:
        cluster.request("DELETE", f"/session/{name}")


def execute(
    cluster: Cluster,
    name: str,
    mode: str,
    code: str = "",
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One run to its end (continuing as told); returns every answer."""
    run_id = secrets.token_hex(6)
    body: dict[str, Any] = {"mode": mode, "code": code, "runId": run_id, "options": options}
    answers: list[dict[str, Any]] = []
    while True:
        r = cluster.request("POST", f"/session/{name}", body)
        assert r.status_code == 200, r.text
        answers.append(r.json()["result"])
        if answers[-1]["status"] == "finished":
            return answers
        assert answers[-1]["status"] in ("continued", "clean-finished", "build-finished"), answers
        assert len(answers) < 100, answers
        body = {"mode": "continue", "code": "", "runId": run_id}


def console(answers: list[dict[str, Any]]) -> list[list[Any]]:
    """The run's console items, neighbouring text of one stream joined."""
    merged: list[list[Any]] = []
    for a in answers:
        for kind, value in a["console"]:
            if merged and merged[-1][0] == kind and kind in ("stdout", "stderr"):
                merged[-1][1] += value
            else:
                merged.append([kind, value])
    return merged


def text(answers: list[dict[str, Any]], stream: str) -> str:
    return "".join(v for a in answers for k, v in a["console"] if k == stream)


def write_files(files: dict[str, str]) -> str:
    """A batch ``clean`` command that writes the given sources into the work dir."""
    return " && ".join(f"printf %s {shlex.quote(body)} > {shlex.quote(path)}" for path, body in files.items())


def batch(
    cluster: Cluster,
    name: str,
    files: dict[str, str],
    build: str = "*",
    exec_: str = "*",
) -> list[dict[str, Any]]:
    return execute(cluster, name, "batch", options={"clean": write_files(files), "build": build, "exec": exec_})


def step_codes(answers: list[dict[str, Any]]) -> dict[str, int]:
    return {a["status"]: a["exitCode"] for a in answers if a["status"] != "continued"}


def test_c_query_and_batch(cluster: Cluster) -> None:
    with session(cluster, "c") as name:
        answers = execute(cluster, name, "query", 'int x = 6;\nprintf("%d\\n", x * 7);')
        assert console(answers) == [["stdout", "42\n"]] and answers[-1]["exitCode"] == 0
        answers = execute(cluster, name, "query", '#include <stdio.h>\nint main(void) { puts("uid ok"); return 4; }')
        assert console(answers) == [["stdout", "uid ok\n"]] and answers[-1]["exitCode"] == 4
        answers = execute(cluster, name, "query", "int y = ;")
        assert answers[-1]["exitCode"] == 1
        assert [k for k, _ in console(answers)] == ["stderr"] and "<input>:1:" in text(answers, "stderr")

        good = {"main.c": '#include <stdio.h>\n#include <math.h>\nint main(void) { printf("%.1f\\n", sqrt(2.25)); }\n'}
        answers = batch(cluster, name, good)
        assert step_codes(answers) == {"clean-finished": 0, "build-finished": 0, "finished": 0}
        assert text(answers, "stdout") == "1.5\n"
        broken = {"main.c": "int main(void) { return undefined_thing; }\n"}
        answers = batch(cluster, name, broken)
        assert step_codes(answers) == {"clean-finished": 0, "build-finished": 1, "finished": 127}
        assert "undefined_thing" in text(answers, "stderr")


def test_cpp_batch_and_query(cluster: Cluster) -> None:
    with session(cluster, "cpp") as name:
        src = {
            "main.cpp": "#include <iostream>\n#include <vector>\nint main() { std::vector<int> v{1, 2, 3};\n"
            '  std::cout << v.size() << " items" << std::endl; }\n'
        }
        answers = batch(cluster, name, src)
        assert step_codes(answers) == {"clean-finished": 0, "build-finished": 0, "finished": 0}
        assert text(answers, "stdout") == "3 items\n"
        answers = execute(cluster, name, "query", 'string s = "abc"; reverse(s.begin(), s.end()); cout << s << endl;')
        assert console(answers) == [["stdout", "cba\n"]]


def test_nodejs_query_batch_and_interrupt(cluster: Cluster) -> None:
    with session(cluster, "nodejs") as name:
        answers = execute(cluster, name, "query", "console.log([1, 2, 3].map(x => x * 2).join(','))")
        assert console(answers) == [["stdout", "2,4,6\n"]] and answers[-1]["exitCode"] == 0
        answers = execute(cluster, name, "query", "console.error('oops'); process.exit(2)")
        assert console(answers) == [["stderr", "oops\n"]] and answers[-1]["exitCode"] == 2
        answers = batch(cluster, name, {"main.js": "console.log(`node ${process.versions.node.split('.')[0]}`)\n"})
        assert step_codes(answers)["finished"] == 0 and text(answers, "stdout") == "node 18\n"

        run_id = secrets.token_hex(6)
        r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": "for (;;) {}", "runId": run_id})
        assert r.json()["result"]["status"] == "continued"
        assert cluster.request("POST", f"/session/{name}/interrupt").status_code in (200, 204)
        deadline = time.monotonic() + 20
        while True:
            result = cluster.request("POST", f"/session/{name}", {"mode": "continue", "runId": run_id}).json()["result"]
            if result["status"] == "finished":
                break
            assert time.monotonic() < deadline, result
        assert result["exitCode"] in (130, 137)


def test_lua_query_and_batch(cluster: Cluster) -> None:
    with session(cluster, "lua") as name:
        answers = execute(
            cluster,
            name,
            "query",
            "local t = {} for i = 1, 3 do t[#t + 1] = i * i end\nprint(table.concat(t, ' '))\nprint(_VERSION)",
        )
        assert console(answers) == [["stdout", "1 4 9\nLua 5.3\n"]]
        answers = execute(cluster, name, "query", "error('bad thing')")
        assert answers[-1]["exitCode"] == 1 and "bad thing" in text(answers, "stderr")
        code = "local f = io.open('.output/squares.txt', 'w') f:write('1 4 9') f:close() print('written')\n"
        answers = batch(cluster, name, {"main.lua": code})
        assert text(answers, "stdout") == "written\n"
        # .output files of a batch run come with its finished answer.
        assert answers[-1]["files"] == [
            {"name": "squares.txt", "size": 5, "url": "data:text/plain;base64," + base64.b64encode(b"1 4 9").decode()}
        ]


def test_python_rich_output_and_output_files(cluster: Cluster) -> None:
    with session(cluster, "python") as name:
        code = (
            "import matplotlib.pyplot as plt, numpy as np\n"
            "print('plotting')\n"
            "plt.plot(np.linspace(0, 1, 20) ** 2)\n"
            "plt.show()\n"
            "print('done')\n"
        )
        answers = execute(cluster, name, "query", code)
        items = console(answers)
        assert [k for k, _ in items] == ["stdout", "media", "stdout"], items
        mime, uri = items[1][1]
        assert mime == "image/png" and uri.startswith("data:image/png;base64,")
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

        code = (
            "from ai.backend.kernel.display import display_html\n"
            "import logging\n"
            "display_html('<table><tr><td>cell</td></tr></table>')\n"
            "logging.getLogger('app').error('it broke: %s', 'disk')\n"
            "print('end')\n"
        )
        items = console(execute(cluster, name, "query", code))
        assert items[0] == ["html", "<table><tr><td>cell</td></tr></table>"]
        level, stamp, logger, message = items[1][1]
        assert (items[1][0], level, logger, message) == ("log", "error", "app", "it broke: disk")
        assert stamp[:2] == "20" and "T" in stamp
        assert items[2] == ["stdout", "end\n"]

        code = (
            "import os\nos.makedirs('.output/plots', exist_ok=True)\n"
            "plt.plot([1, 2]); plt.savefig('.output/plots/line.png')\n"
            "open('.output/result.json', 'w').write('{\"ok\": true}')\n"
            "open('.output/huge.bin', 'wb').write(os.urandom(2 * 1024 * 1024))\n"
        )
        answers = execute(cluster, name, "query", code)
        files = {f["name"]: f for f in answers[-1]["files"]}
        assert set(files) == {"plots/line.png", "result.json", "huge.bin"}
        json_uri = "data:application/json;base64," + base64.b64encode(b'{"ok": true}').decode()
        assert files["result.json"]["url"] == json_uri
        assert base64.b64decode(files["plots/line.png"]["url"].split(",", 1)[1]).startswith(b"\x89PNG")
        assert files["huge.bin"] == {"name": "huge.bin", "url": None, "size": 2 * 1024 * 1024}
        # Nothing changed in .output: no files.
        assert execute(cluster, name, "query", "print(1)")[-1]["files"] == []


def test_recipe_aliases_resolve(cluster: Cluster) -> None:
    """The `ai.backend.aliases` label of a recipe (lua: "lua5 lua5.3") names the image too."""
    q = "query($r: String!) { image(reference: $r) { reference } }"
    for alias, target in (("lua5", "lua:5.3-debian12"), ("python3", "python:3.11-debian12"), ("gcc", "c:12-debian12")):
        r = cluster.request("POST", "/admin/gql", {"query": q, "variables": {"r": alias}})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["image"] == {"reference": target}, (alias, r.text)
    with session(cluster, "lua5") as name:
        assert "".join(c[1] for c in execute(cluster, name, "query", "print(6*7)")[-1]["console"]) == "42\n"
