"""Folder quota images (ext4 on a loop device): sized at creation, grown for a raised quota, and a
growth that cannot happen while the folder is in use is refused with nothing changed. Needs root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai.backend.storage.volumes import quota_images as qi

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")
MiB = 1 << 20


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[str, str]]:
    image, path = str(tmp_path / "f.img"), str(tmp_path / "m")
    os.mkdir(path)
    yield image, path
    qi.unmount(path)


@pytest.mark.parametrize("quota", [10 * MiB, 100 * MiB])
def test_a_new_image_holds_at_least_its_quota_and_not_much_more(mounted: tuple[str, str], quota: int) -> None:
    image, path = mounted
    qi.make(image, path, quota, os.getuid(), os.getgid())
    assert qi.is_mounted(path) and os.listdir(path) == []
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    assert quota <= free <= quota * 1.15 + 8 * MiB
    assert os.stat(image).st_blocks * 512 < quota  # sparse: the host holds what is written


def test_a_raised_quota_grows_the_image(mounted: tuple[str, str]) -> None:
    image, path = mounted
    qi.make(image, path, 10 * MiB, os.getuid(), os.getgid())
    Path(path, "kept.txt").write_text("data")
    qi.grow(image, path, 300 * MiB)
    assert qi.is_mounted(path) and Path(path, "kept.txt").read_text() == "data"
    st = os.statvfs(path)
    assert st.f_bavail * st.f_frsize >= 300 * MiB - 4096 * 8


def test_growth_while_in_use_grows_online_or_changes_nothing(mounted: tuple[str, str]) -> None:
    image, path = mounted
    qi.make(image, path, 10 * MiB, os.getuid(), os.getgid())
    size = os.stat(image).st_size
    with open(os.path.join(path, "open.txt"), "w") as held:  # like a session using the folder
        held.write("x")
        try:
            qi.grow(image, path, 200 * MiB)
        except qi.ImageBusy:
            # Online growth needs CAP_SYS_RESOURCE; without it the mount and the image stay as they were.
            assert os.stat(image).st_size == size and qi.is_mounted(path)
        else:
            assert os.statvfs(path).f_bavail * os.statvfs(path).f_frsize >= 190 * MiB
