"""Unit tests of CLI argument parsing: KEY=VAL pairs, mounts, range expressions, case expansion."""

from __future__ import annotations

import pytest

from ai.backend.client.cli.params import (
    ENV_KEY_RE,
    SLOT_KEY_RE,
    SLOT_VALUE_RE,
    Case,
    build_cases,
    pairs_to_dict,
    parse_key_value,
    parse_range_expr,
    prepare_mount_arg,
)
from ai.backend.client.naming import validate_session_name


def _resource(value: str) -> tuple[str, str]:
    return parse_key_value(value, key_re=SLOT_KEY_RE, value_re=SLOT_VALUE_RE)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("cpu=4", ("cpu", "4")),
        ("mem=8g", ("mem", "8g")),
        ("mem=256m", ("mem", "256m")),
        ("mem=1.5GiB", ("mem", "1.5GiB")),
        ("cuda.shares=0.5", ("cuda.shares", "0.5")),
        ("cuda.device=1", ("cuda.device", "1")),
    ],
)
def test_resource_args(arg: str, expected: tuple[str, str]) -> None:
    assert _resource(arg) == expected


@pytest.mark.parametrize("arg", ["cpu", "cpu=", "=4", "mem=lots", "mem=8 gb extra", "cpu=-1", "1cpu=2"])
def test_bad_resource_args(arg: str) -> None:
    with pytest.raises(ValueError):
        _resource(arg)


def test_resource_dict_keeps_strings_and_last_value() -> None:
    pairs = [_resource("cpu=4"), _resource("mem=8g"), _resource("cpu=2")]
    assert pairs_to_dict(pairs) == {"cpu": "2", "mem": "8g"}


def test_env_args() -> None:
    assert parse_key_value("CASENO=$X", key_re=ENV_KEY_RE, allow_empty_value=True) == ("CASENO", "$X")
    assert parse_key_value("EMPTY=", key_re=ENV_KEY_RE, allow_empty_value=True) == ("EMPTY", "")
    assert parse_key_value("A=b=c", key_re=ENV_KEY_RE, allow_empty_value=True) == ("A", "b=c")
    for bad in ("NOEQUALS", "=value", "1X=2", "A-B=1", "A B=1"):
        with pytest.raises(ValueError):
            parse_key_value(bad, key_re=ENV_KEY_RE, allow_empty_value=True)


def test_mount_args() -> None:
    mounts, mount_map = prepare_mount_arg(["data", "models=/opt/models", "cache:rel/cache", "data"])
    assert mounts == ["data", "models", "cache"]
    assert mount_map == {"models": "/opt/models", "cache": "rel/cache"}
    for bad in ("=/path", "name=", ":x"):
        with pytest.raises(ValueError):
            prepare_mount_arg([bad])


def test_range_case() -> None:
    assert parse_range_expr("X=case:1,2,3,4") == ("X", ("1", "2", "3", "4"))
    assert parse_range_expr("name=case:a,b") == ("name", ("a", "b"))


def test_range_linspace() -> None:
    assert parse_range_expr("X=linspace:1,2,3") == ("X", ("1", "1.5", "2"))
    assert parse_range_expr("lr=linspace:0.1,0.3,3") == ("lr", ("0.1", "0.2", "0.3"))
    assert parse_range_expr("X=linspace:5,1,3") == ("X", ("5", "3", "1"))
    assert parse_range_expr("X=linspace:7,9,1") == ("X", ("7",))


def test_range_range() -> None:
    assert parse_range_expr("X=range:1,6,2") == ("X", ("1", "3", "5"))
    assert parse_range_expr("X=range:1,4") == ("X", ("1", "2", "3"))
    assert parse_range_expr("X=range:3") == ("X", ("0", "1", "2"))
    assert parse_range_expr("X=range:5,0,-2") == ("X", ("5", "3", "1"))


@pytest.mark.parametrize(
    "arg",
    [
        "X",
        "1X=case:a",
        "X=foo:1,2",
        "X=case:",
        "X=linspace:1,2",
        "X=linspace:1,2,0",
        "X=linspace:a,b,3",
        "X=range:1,2,0",
        "X=range:5,1",
        "X=range:1.5,3",
        "X=range:1,2,3,4",
        "X=1,2,3",
    ],
)
def test_bad_range_exprs(arg: str) -> None:
    with pytest.raises(ValueError):
        parse_range_expr(arg)


def test_build_cases_single() -> None:
    assert build_cases({"A": "1"}, None, None) == [Case((("A", "1"),), "*", "*")]
    # Without range variables, '$' text is kept as is.
    assert build_cases({"P": "$HOME"}, "make $$x", "run $X") == [Case((("P", "$HOME"),), "make $$x", "run $X")]


def test_build_cases_env_range() -> None:
    cases = build_cases({"CASENO": "$X", "FIXED": "$Y"}, None, None, env_ranges=[parse_range_expr("X=case:1,2,3,4")])
    assert [dict(c.envs)["CASENO"] for c in cases] == ["1", "2", "3", "4"]
    assert all(dict(c.envs)["FIXED"] == "$Y" for c in cases)  # unknown variables stay


def test_build_cases_product_and_dedup() -> None:
    cases = build_cases(
        {"A": "${X}"},
        "build $B",
        "python main.py --lr $LR",
        env_ranges=[parse_range_expr("X=case:a,b")],
        build_ranges=[parse_range_expr("B=case:same,same")],
        exec_ranges=[parse_range_expr("LR=linspace:0.1,0.3,3")],
    )
    assert len(cases) == 2 * 1 * 3  # the duplicate build value collapses
    assert cases[0] == Case((("A", "a"),), "build same", "python main.py --lr 0.1")
    assert cases[-1] == Case((("A", "b"),), "build same", "python main.py --lr 0.3")


def test_build_cases_two_ranges_six_sessions() -> None:
    cases = build_cases(
        {"X": "$X", "Y": "$Y"},
        None,
        None,
        env_ranges=[parse_range_expr("X=case:1,2"), parse_range_expr("Y=range:0,3")],
    )
    assert len(cases) == 6
    assert len(set(cases)) == 6


@pytest.mark.parametrize("name", ["abcd", "my-session.1", "a_b_c", "x" * 64])
def test_valid_session_names(name: str) -> None:
    assert validate_session_name(name) == name


@pytest.mark.parametrize("name", ["abc", "x" * 65, "-abcd", "abcd-", "ab cd", "ab/cd"])
def test_invalid_session_names(name: str) -> None:
    with pytest.raises(ValueError):
        validate_session_name(name)
