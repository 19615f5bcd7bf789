"""Session mount paths: defaults, mount_map, options, and the paths that are refused."""

from __future__ import annotations

import pytest

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.manager.sessions.mount_paths import container_path, parse_mounts


def test_defaults_and_mapped_paths() -> None:
    assert container_path("data", None) == "/home/work/data"
    assert container_path(".local", None) == "/home/work/.local"
    assert container_path("data", "sub/dir") == "/home/work/sub/dir"
    assert container_path("data", "/data/models") == "/data/models"
    assert container_path("data", "/home/work/./x/") == "/home/work/x"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/home/work",
        "/etc",
        "/etc/ssl",
        "/usr/lib",
        "/proc/self",
        "/opt/backend.ai/x",
        "/opt",
        "/run",
        "../escape",
        "a/../../etc",
        "/tmp",
        "bad\x00name",
        "line\nbreak",
        "",
    ],
)
def test_refused_paths(path: str) -> None:
    with pytest.raises(InvalidAPIParameters):
        container_path("data", path)


def test_parse_mounts_with_map_and_options() -> None:
    mounts, paths, perms = parse_mounts(
        {
            "mounts": ["a", "b"],
            "mount_map": {"b": "/data/b"},
            "mount_options": {"a": {"permission": "ro"}},
        }
    )
    assert mounts == ["a", "b"]
    assert paths == {"a": "/home/work/a", "b": "/data/b"}
    assert perms == {"a": "ro"}
    assert parse_mounts({}) == ([], {}, {})


@pytest.mark.parametrize(
    "config",
    [
        {"mounts": "a"},
        {"mounts": ["a", "a"]},
        {"mounts": ["a"], "mount_map": {"z": "/x"}},
        {"mounts": ["a"], "mount_map": {"a": 3}},
        {"mounts": ["a"], "mount_options": {"a": {"permission": "admin"}}},
        {"mounts": ["a"], "mount_options": {"a": {"type": "volume"}}},
        {"mounts": ["a", "b"], "mount_map": {"a": "/data", "b": "/data/inner"}},
        {"mounts": ["a", "b"], "mount_map": {"b": "a"}},
    ],
)
def test_parse_mounts_refusals(config: dict[str, object]) -> None:
    with pytest.raises(InvalidAPIParameters):
        parse_mounts(config)
