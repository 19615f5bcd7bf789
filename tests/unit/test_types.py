"""ResourceSlot and BinarySize parsing, arithmetic and serialization."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai.backend.common.types import BinarySize, ResourceSlot, SlotTypeError


@pytest.mark.parametrize(
    "text,expected",
    [
        ("512m", 512 * 2**20),
        ("512M", 512 * 2**20),
        ("512MiB", 512 * 2**20),
        ("4g", 4 * 2**30),
        ("64GiB", 64 * 2**30),
        ("1073741824", 2**30),
        ("1.5k", 1536),
        ("0", 0),
        ("2t", 2 * 2**40),
    ],
)
def test_binary_size_parse(text: str, expected: int) -> None:
    assert BinarySize.parse(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1g", "4x", "1.2.3m", "g"])
def test_binary_size_rejects(text: str) -> None:
    with pytest.raises(SlotTypeError):
        BinarySize.parse(text)


def test_binary_size_str() -> None:
    assert str(BinarySize(4 * 2**30)) == "4g"
    assert str(BinarySize(1536)) == "1536"
    assert str(BinarySize(0)) == "0"


def test_slots_from_user_input_and_json() -> None:
    s = ResourceSlot.from_user_input({"cpu": "2", "mem": "4g", "cuda.shares": "0.5"})
    assert s["cpu"] == Decimal(2)
    assert s["mem"] == Decimal(4 * 2**30)
    assert s.to_json() == {"cpu": "2", "mem": str(4 * 2**30), "cuda.shares": "0.5"}
    assert ResourceSlot.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    "bad", [{"cpu": "two"}, {"cpu": -1}, {"mem": "lots"}, {"Bad Name": 1}, {"cpu": True}, {"cpu": "NaN"}]
)
def test_slots_reject_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(SlotTypeError):
        ResourceSlot.from_user_input(bad)


def test_fits_exceeding_filled() -> None:
    cap = ResourceSlot.from_user_input({"cpu": 2, "mem": "4g"})
    assert ResourceSlot.from_user_input({"cpu": 1, "mem": "1g"}).fits_in(cap)
    assert not ResourceSlot.from_user_input({"cpu": 3}).fits_in(cap)
    assert not ResourceSlot.from_user_input({"cuda.device": 1}).fits_in(cap)
    req = ResourceSlot.from_user_input({"cpu": 4, "mem": "1g"})
    assert req.exceeding(cap) == ["cpu"]
    assert ResourceSlot.from_user_input({"cpu": 1}).filled(cap)["mem"] == cap["mem"]
    assert ResourceSlot.from_user_input({"cpu": "Infinity"}).to_json() == {"cpu": "Infinity"}


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 2**36)), max_size=20))
def test_add_then_subtract_is_identity(pairs: list[tuple[int, int]]) -> None:
    total = ResourceSlot()
    slots = [ResourceSlot({"cpu": Decimal(c), "mem": Decimal(m)}) for c, m in pairs]
    for s in slots:
        total = total + s
    for s in slots:
        total = total - s
    assert total == ResourceSlot()
