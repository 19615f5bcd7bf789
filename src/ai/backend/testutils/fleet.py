"""A fleet of dummy agents (``python -m ai.backend.agent.fleet``) for a test or benchmark manager."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .cluster import Cluster, _free_port


def start_fleet(
    m: Cluster,
    state: Path,
    count: int,
    *,
    heartbeat: float,
    tables: str,
    id_prefix: str | None = None,
    scaling_groups: str | None = None,
    manager_urls: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``count`` dummy agents of manager ``m`` in one process, configured by ``state/fleet.toml``
    (``tables``: its ``[resource]``/``[dummy]`` tables) and logging to ``state/fleet.log``; the caller waits
    for them to join and stops the process (``testutils.processes.stop_process``). ``manager_urls``: the managers
    the agents fail over between (default: ``m``'s endpoint)."""
    urls = ",".join(manager_urls or [m.endpoint])
    (state / "fleet.toml").write_text(
        f'[agent]\nbackend = "dummy"\nmanager-url = "{urls}"\ncluster-secret = "{m.secret}"\n'
        f"heartbeat-interval = {heartbeat}\n\n{tables}"
    )
    args = ["--count", str(count), "--base-port", str(_free_port())]
    if id_prefix is not None:
        args += ["--id-prefix", id_prefix]
    if scaling_groups is not None:
        args += ["--scaling-groups", scaling_groups]
    with open(state / "fleet.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ai.backend.agent.fleet", "-f", str(state / "fleet.toml"), *args],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
