"""``backend.ai ssh`` and ``backend.ai scp``: OpenSSH into a compute session through its ``sshd`` app.

Both download the session's key (``/home/work/id_container``) into a private temporary directory
(0700, the key 0600), run a local proxy to the ``sshd`` app on ``127.0.0.1:PORT`` in this process
(:class:`~ai.backend.client.app_proxy.LocalAppProxy` on the same event loop), run ``ssh``/``scp``
against ``work@localhost`` on that port, then stop the proxy, delete the key and exit with the
exit code of ``ssh``/``scp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .core import get_cli_context
from .pretty import print_fail, print_info

if TYPE_CHECKING:
    from ..func.session import ComputeSession

__all__ = (
    "DEFAULT_PORT",
    "KEY_FILE",
    "SSH_OPTIONS",
    "rewrite_scp_path",
    "scp",
    "split_port_option",
    "ssh",
)

#: The local port of the proxy unless ``-p`` says otherwise (the 22.03 CLI's).
DEFAULT_PORT = 9922
#: The session's private key for the ``work`` user, relative to ``/home/work``.
KEY_FILE = "id_container"
#: The host key changes with every container, and the connection only goes to our own proxy.
SSH_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "NoHostAuthenticationForLocalhost=yes",
    # Only the session's key: keys of an ssh-agent would be tried first and may exhaust the
    # server's authentication attempts.
    "-o",
    "IdentitiesOnly=yes",
)
_REMOTE_USER_HOST = "work@localhost"
_PORT_RE = re.compile(r"^\d+$")


def split_port_option(args: Sequence[str], default: int = DEFAULT_PORT) -> tuple[int, list[str]]:
    """Take our ``-p/--port PORT`` out of the words after the session name; the rest goes to ssh.

    ``-p N``, ``-pN``, ``--port N`` and ``--port=N`` are ours (so ``backend.ai ssh SESS -p 9000``
    works as with the 22.03 CLI); everything else, in order, is ssh's (a ``--`` and what follows are
    passed untouched). Raises ``ValueError`` for a missing or bad port.
    """
    port = default
    rest: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            rest.extend(args[i:])
            break
        value: str | None = None
        if word in ("-p", "--port"):
            if i + 1 >= len(args):
                raise ValueError(f"{word} needs a port number")
            value = args[i + 1]
            i += 1
        elif word.startswith("--port="):
            value = word.partition("=")[2]
        elif word.startswith("-p") and _PORT_RE.match(word[2:]):
            value = word[2:]
        if value is None:
            rest.append(word)
        else:
            if not _PORT_RE.match(value) or not 0 <= int(value) <= 65535:
                raise ValueError(f"{value!r} is not a port number (0-65535)")
            port = int(value)
        i += 1
    return port, rest


def rewrite_scp_path(path: str, session_ref: str) -> tuple[str, bool]:
    """``SESSION:path`` → ``work@localhost:path``; returns the path and whether it is remote."""
    if path.startswith(f"{_REMOTE_USER_HOST}:"):
        return path, True
    prefix = f"{session_ref}:"
    if path.startswith(prefix):
        return f"{_REMOTE_USER_HOST}:{path[len(prefix) :]}", True
    return path, False


async def _download_key(cs: ComputeSession, directory: Path) -> Path:
    import os

    from ..exceptions import BackendClientError, BackendError

    try:
        result = await cs.download([KEY_FILE], directory)
    except BackendError as e:
        raise BackendClientError(f"Cannot download the SSH key ({KEY_FILE}) from the session: {e}") from None
    candidates = [directory / n for n in result.get("file_names", []) if Path(n).name == KEY_FILE]
    key = next((p for p in [*candidates, directory / KEY_FILE] if p.is_file() and not p.is_symlink()), None)
    if key is None:
        raise BackendClientError(f"The session has no SSH key ({KEY_FILE}) in /home/work.")
    os.chmod(key, 0o600)
    return key


def _run_with_sshd_proxy(
    session_ref: str, owner: str | None, port: int, program: str, build: Callable[[Path, int], list[str]]
) -> int:
    """Download the key, run the proxy, run ``build(key, port)`` (argv) and return its exit code."""
    import asyncio
    import shutil
    import signal
    import tempfile

    from ..exceptions import BackendClientError

    executable = shutil.which(program)
    if executable is None:
        raise BackendClientError(f'The "{program}" command is not found; install an OpenSSH client.')

    async def _main() -> int:
        from ..app_proxy import LocalAppProxy
        from ..session import AsyncSession
        from .app import find_app

        async with AsyncSession() as api:
            cs = api.ComputeSession(session_ref, owner)
            await find_app(cs, "sshd")
            with tempfile.TemporaryDirectory(prefix="backend.ai-ssh-") as tmp:  # created 0700
                key = await _download_key(cs, Path(tmp))
                proxy = LocalAppProxy(
                    api,
                    cs,
                    "sshd",
                    host="127.0.0.1",
                    port=port,
                    on_error=lambda msg: print_fail(f"The sshd app refused a connection: {msg}"),
                )
                try:
                    await proxy.start()
                except OSError as e:
                    raise BackendClientError(f"Cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
                bound = proxy.bound_port
                print_info(f"running a temporary sshd proxy at localhost:{bound} ...")
                loop = asyncio.get_running_loop()
                try:
                    proc = await asyncio.create_subprocess_exec(executable, *build(key, bound))
                    # Ctrl-C belongs to ssh (it gets it from the terminal too); other signals are passed on.
                    loop.add_signal_handler(signal.SIGINT, lambda: None)
                    for sig in (signal.SIGTERM, signal.SIGHUP):
                        loop.add_signal_handler(sig, proc.send_signal, sig)
                    return await proc.wait()
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                        loop.remove_signal_handler(sig)
                    await proxy.close()

    get_cli_context().get_config()
    code = asyncio.run(_main())
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


# The options ssh and scp share.
_port_option = click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The local port of the temporary proxy (0 picks a free one).",
)
_owner_option = click.option(
    "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="The session's owner (admins)."
)

_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
    "help_option_names": ["-h", "--help"],
}


@click.command(context_settings=_PASS_THROUGH)
@_port_option
@_owner_option
@click.argument("session_ref", metavar="SESSION")
@click.argument("ssh_args", metavar="[SSH ARGS]...", nargs=-1, type=click.UNPROCESSED)
def ssh(port: int, owner: str | None, session_ref: str, ssh_args: tuple[str, ...]) -> None:
    """Open an SSH connection to a compute session (as the user work).

    Words after SESSION go to ssh (a remote command, -L forwards, -v ...), except -p/--port, which
    is the local port of the temporary proxy. Exits with ssh's exit code.

    \b
    SESSION: the session name (or ID).
    """
    import sys

    if session_ref.startswith("-"):
        raise click.UsageError(f"Give the session before ssh's options ({session_ref} came first).")
    try:
        port, rest = split_port_option(ssh_args, port)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'-p' / '--port'") from None

    def build(key: Path, bound: int) -> list[str]:
        return [*SSH_OPTIONS, "-i", str(key), _REMOTE_USER_HOST, "-p", str(bound), *rest]

    sys.exit(_run_with_sshd_proxy(session_ref, owner, port, "ssh", build))


@click.command()
@click.argument("session_ref", metavar="SESSION")
@click.argument("paths", metavar="SRC... DST", nargs=-1, required=True)
@_port_option
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively.")
@_owner_option
def scp(session_ref: str, paths: tuple[str, ...], port: int, recursive: bool, owner: str | None) -> None:
    """Copy files between here and a compute session over SSH.

    Write paths in the session as work@localhost:PATH or SESSION:PATH (relative paths are under
    /home/work). Exits with scp's exit code.

    \b
    SESSION: the session name (or ID).
    SRC... DST: what to copy and where, e.g. "data.csv SESSION:data/" or "-r SESSION:results ./".
    """
    import sys

    if len(paths) < 2:
        raise click.UsageError("Give at least one source and a destination.")
    rewritten = [rewrite_scp_path(p, session_ref) for p in paths]
    if not any(remote for _p, remote in rewritten):
        raise click.UsageError(f"None of the paths is in the session; write {session_ref}:PATH or work@localhost:PATH.")

    def build(key: Path, bound: int) -> list[str]:
        flags = ["-r"] if recursive else []
        return [*SSH_OPTIONS, "-i", str(key), "-P", str(bound), *flags, *(p for p, _r in rewritten)]

    sys.exit(_run_with_sshd_proxy(session_ref, owner, port, "scp", build))
