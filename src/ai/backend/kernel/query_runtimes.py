"""Query mode for runtimes without a persistent interpreter: C, C++, Node.js and Lua.

Each query-mode snippet runs in a fresh process (there are no globals kept between runs, which
the API allows: rest-api.md §8.1), started with ``/bin/sh -c`` in the working directory so that its
output streams through the runner's batch machinery (same console limits, same interrupt).

* ``c`` / ``cpp``: the snippet is written to a private source file, compiled with gcc / g++
  (``-Wall``, ``-pthread -lm -lrt -ldl``) and run; compiler messages go to stderr and refer to the
  snippet as ``<input>``.  A snippet without a ``main`` function is the body of ``main()``, with the
  common headers included, so ``printf("%d\\n", 6 * 7);`` is a complete C query.  The exit code is
  the compiler's when compilation fails, else the program's.  The program runs with line-buffered
  stdout (``stdbuf -oL``) so that its stdout and stderr keep their order, as on a terminal.
* ``nodejs``: ``node input.js``; ``lua``: ``lua5.3 input.lua`` (or another installed ``lua``).

Only the standard library is used: this module runs with the kernel image's Python.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RUNTIMES", "QueryRuntime", "prepare_query"]

_HAS_MAIN = re.compile(r"\bmain\s*\(")
_C_HEADERS = ("stdio.h", "stdlib.h", "string.h", "math.h", "stdint.h", "stdbool.h", "unistd.h")
_CPP_HEADERS = (
    "cstdio",
    "cstdlib",
    "cstring",
    "cmath",
    "cstdint",
    "iostream",
    "iomanip",
    "sstream",
    "string",
    "vector",
    "map",
    "set",
    "unordered_map",
    "algorithm",
    "numeric",
    "memory",
    "utility",
)
_LINK_FLAGS = "-pthread -lm -lrt -ldl"


@dataclass(frozen=True)
class QueryRuntime:
    """How one runtime turns a snippet into files and a shell command."""

    source_name: str
    #: The source file's text for a snippet.
    render: Callable[[str], str]
    #: The shell command for (source path, scratch directory).
    command: Callable[[str, str], str]


def _c_source(headers: tuple[str, ...], preamble: str) -> Callable[[str], str]:
    def render(code: str) -> str:
        if _HAS_MAIN.search(code):
            return f'#line 1 "<input>"\n{code}\n'
        includes = "".join(f"#include <{h}>\n" for h in headers)
        # `#line` keeps compiler messages pointing at the user's own lines.
        return f'{includes}{preamble}int main(void) {{\n#line 1 "<input>"\n{code}\n;return 0;\n}}\n'

    return render


def _compile_and_run(compiler: str, std: str) -> Callable[[str, str], str]:
    def command(src: str, scratch: str) -> str:
        binary = os.path.join(scratch, "input")
        flags = f"-Wall {std} -o {shlex.quote(binary)} {shlex.quote(src)} {_LINK_FLAGS}".replace("  ", " ")
        # Line-buffered stdout (as on a terminal) keeps the program's stdout/stderr order in the console.
        run = f"stdbuf -oL {shlex.quote(binary)}" if shutil.which("stdbuf") else shlex.quote(binary)
        return f"rm -f {shlex.quote(binary)} && {compiler} {flags} && exec {run}"

    return command


def _interpreter(candidates: tuple[str, ...]) -> Callable[[str, str], str]:
    def command(src: str, scratch: str) -> str:
        exe = next((c for c in candidates if shutil.which(c)), candidates[0])
        return f"exec {exe} {shlex.quote(src)}"

    return command


def _verbatim(code: str) -> str:
    return code if code.endswith("\n") else code + "\n"


RUNTIMES: dict[str, QueryRuntime] = {
    "c": QueryRuntime("input.c", _c_source(_C_HEADERS, ""), _compile_and_run("gcc", "")),
    "cpp": QueryRuntime(
        "input.cpp", _c_source(_CPP_HEADERS, "using namespace std;\n"), _compile_and_run("g++", "-std=gnu++17")
    ),
    "nodejs": QueryRuntime("input.js", _verbatim, _interpreter(("node", "nodejs"))),
    "lua": QueryRuntime("input.lua", _verbatim, _interpreter(("lua5.3", "lua5.4", "lua"))),
}


def prepare_query(runtime_type: str, code: str, scratch: str | None = None) -> tuple[str, str]:
    """Write ``code`` for ``runtime_type`` into a scratch directory; returns (command, scratch dir).

    ``scratch`` is reused when given (one per runner: runs are sequential), else a private
    directory is created under the temp dir.
    """
    runtime = RUNTIMES[runtime_type]
    if scratch is None or not os.path.isdir(scratch):
        scratch = tempfile.mkdtemp(prefix="bai-query-")
    src = os.path.join(scratch, runtime.source_name)
    with open(src, "w", encoding="utf-8") as f:
        f.write(runtime.render(code))
    return runtime.command(src, scratch), scratch
