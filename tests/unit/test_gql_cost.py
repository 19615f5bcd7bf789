"""GraphQL documents are measured before they run: size, aliases, fragment spreads, expanded fields."""

from __future__ import annotations

import time

import pytest

from ai.backend.manager.api.gql.cost import CostGate, CostLimits, DocumentTooCostly

LIMITS = CostLimits(max_bytes=4096, max_aliases=5, max_fragment_spreads=6, max_fields=50)


def _gate() -> CostGate:
    return CostGate(LIMITS)


def test_ordinary_documents_pass() -> None:
    gate = _gate()
    gate.check("query($id: UUID!) { compute_session(id: $id) { id name status containers { id status } } }")
    gate.check("{ a: domain { name } b: domain { name } }")
    gate.check("{ not valid graphql")  # left for validation to report


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("{ " + " ".join(f"a{i}: domains {{ name }}" for i in range(6)) + " }", "aliases"),
        ("{ domains { " + " ".join(f"f{i}" for i in range(60)) + " } }", "fields"),
        ("{ x }" + " " * 5000, "bytes"),
        ("fragment F on Domain { name } { domains { " + " ".join("...F" for _ in range(7)) + " } }", "spreads"),
    ],
)
def test_limits_are_refused_with_the_limit_named(query: str, words: str) -> None:
    with pytest.raises(DocumentTooCostly) as e:
        _gate().check(query)
    assert words in (e.value.detail or "")
    assert e.value.status == 400


def test_fragment_fan_out_is_counted_expanded_without_expanding_it() -> None:
    # Each level doubles the fields: 2**30 leaves if expanded, measured in microseconds.
    frags = ["fragment L0 on Domain { name description }"]
    frags += [f"fragment L{i} on Domain {{ ...L{i - 1} ...L{i - 1} }}" for i in range(1, 31)]
    query = " ".join(frags) + " { domains { ...L30 } }"
    gate = CostGate(CostLimits(max_fragment_spreads=1000, max_fields=2000))
    t0 = time.perf_counter()
    with pytest.raises(DocumentTooCostly, match="fields"):
        gate.check(query)
    assert time.perf_counter() - t0 < 1.0


def test_fragment_cycles_do_not_loop() -> None:
    _gate().check("fragment A on Domain { ...B } fragment B on Domain { ...A } { domains { ...A } }")


def test_accepted_documents_are_remembered() -> None:
    gate = _gate()
    q = "{ domains { name } }"
    gate.check(q)
    assert q in gate._accepted


async def test_in_flight_turns_per_access_key() -> None:
    import asyncio

    from ai.backend.common.problems import TooManyRequests
    from ai.backend.manager.api.gql.cost import InFlight

    gate = InFlight(limit=2, max_waiting=1)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def one(key: str) -> None:
        nonlocal running, peak
        async with gate.slot(key):
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(one("AK1")) for _ in range(3)]  # two run, one waits
    other = asyncio.create_task(one("AK2"))  # another key is not held up
    await asyncio.sleep(0.01)
    assert running == 3 and peak == 3  # AK1's two plus AK2's one
    with pytest.raises(TooManyRequests):  # a fourth of AK1: two running and one waiting already
        async with gate.slot("AK1"):
            pass
    release.set()
    await asyncio.gather(*tasks, other)
    assert gate._keys == {}
