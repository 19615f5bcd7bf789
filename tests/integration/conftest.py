"""Integration-test fixtures: one real cluster per test session (see ``ai.backend.testutils.cluster``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import REPO, Cluster, docker_available, launch_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    c = launch_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.shutdown()


__all__ = ["ADMIN", "REPO", "USER", "Cluster"]
