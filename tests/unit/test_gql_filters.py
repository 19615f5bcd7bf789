"""The ``filter`` mini-language of the admin GraphQL list queries, compiled without a database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.manager.api.gql.filters import filter_clause
from ai.backend.manager.api.gql.pagination import check_page, order_clauses

T = Table(
    "t",
    MetaData(),
    Column("email", String),
    Column("age", Integer),
    Column("is_active", Boolean),
    Column("domain_name", String),
)
COLUMNS: dict[str, Any] = {
    "email": T.c.email,
    "age": T.c.age,
    "is_active": T.c.is_active,
    "domain_name": T.c.domain_name,
}


def _sql(expr: str | None) -> str | None:
    clause = filter_clause(expr, COLUMNS)
    if clause is None:
        return None
    return str(clause.compile(compile_kwargs={"literal_binds": True}))


def _refusal(expr: str) -> str:
    with pytest.raises(InvalidAPIParameters) as exc:
        filter_clause(expr, COLUMNS)
    assert exc.value.status == 400
    return str(exc.value.detail)


@pytest.mark.parametrize("expr", [None, "", "   "])
def test_no_filter_is_no_clause(expr: str | None) -> None:
    assert _sql(expr) is None


@pytest.mark.parametrize(
    ("expr", "sql"),
    [
        ('email == "a@b.c"', "t.email = 'a@b.c'"),
        ('email != "a@b.c"', "t.email != 'a@b.c'"),
        ("age < 3", "t.age < 3"),
        ("age <= 3", "t.age <= 3"),
        ("age > 3", "t.age > 3"),
        ("age >= -3", "t.age >= -3"),
        ("age == 2.5", "t.age = 2.5"),
        ('email like "%@b.c"', "t.email LIKE '%@b.c'"),
        ('email ilike "%@B.C"', "lower(t.email) LIKE lower('%@B.C')"),  # the generic dialect's ILIKE
        ('email LIKE "%@b.c"', "t.email LIKE '%@b.c'"),  # word operators are case-insensitive
        ('email contains "b.c"', "(t.email LIKE '%' || 'b.c' || '%')"),
        ("is_active == true", "t.is_active = true"),
        ("is_active == FALSE", "t.is_active = false"),
        ("email == null", "t.email IS NULL"),
        ("email != null", "t.email IS NOT NULL"),
    ],
)
def test_each_operator(expr: str, sql: str) -> None:
    assert _sql(expr) == sql


@pytest.mark.parametrize(
    ("expr", "sql"),
    [
        ("email == 'a@b.c'", "t.email = 'a@b.c'"),  # single quotes work like double ones
        (r'email == "say \"hi\""', "t.email = 'say \"hi\"'"),  # backslash escapes inside quotes
        (r"email == 'it\'s'", "t.email = 'it''s'"),
        ('email == "a & b | c"', "t.email = 'a & b | c'"),  # joins inside quotes are text
        ('email == "1"', "t.email = '1'"),  # a quoted number stays a string
        ('  email=="x"  ', "t.email = 'x'"),  # spacing is free
    ],
)
def test_quoting(expr: str, sql: str) -> None:
    assert _sql(expr) == sql


def test_and_or_and_binds_tighter() -> None:
    assert _sql('email == "a" & age > 1') == "t.email = 'a' AND t.age > 1"
    assert _sql('email == "a" | age > 1') == "t.email = 'a' OR t.age > 1"
    assert _sql('email == "a" & age > 1 | is_active == true & domain_name == "d"') == (
        "t.email = 'a' AND t.age > 1 OR t.is_active = true AND t.domain_name = 'd'"
    )


@pytest.mark.parametrize(
    ("expr", "detail"),
    [
        ("email ==", "Incomplete filter term; expected 'field OP value'."),
        ("email", "Incomplete filter term; expected 'field OP value'."),
        ('"email" == "a"', "Expected a field name in the filter, got '\"email\"'."),
        ('email is "a"', "Expected an operator after 'email' in the filter, got 'is'."),
        ('password == "a"', "Cannot use 'password' in filter; use one of: age, domain_name, email, is_active."),
        ("email == abc", "Filter values must be quoted strings or numbers, got 'abc'."),
        ("email == ==", "Expected a value in the filter, got '=='."),
        ('email == "a" age > 1', "Expected '&' or '|' in the filter, got 'age'."),
        ('email == "a" &', "The filter ends with a dangling '&' or '|'."),
        ('email == "a" |', "The filter ends with a dangling '&' or '|'."),
        ("email < null", "null can only be compared with == or !=."),
        ('email in "a"', "Unsupported filter operator 'in'."),
        ('(email == "a")', "Cannot parse the filter near '(email == \"a\")'."),
        ('email == "unterminated', "Cannot parse the filter near ' \"unterminated'."),
        ('email == "a" ; drop table t', "Cannot parse the filter near ' ; drop table t'."),
    ],
)
def test_bad_input_is_a_400_that_says_why(expr: str, detail: str) -> None:
    assert _refusal(expr) == detail


def test_order_clauses() -> None:
    def sql(clauses: list[Any]) -> list[str]:
        return [str(c.compile(dialect=postgresql.dialect())) for c in clauses]

    assert sql(order_clauses(COLUMNS, order_key="age")) == ["t.age ASC"]
    assert sql(order_clauses(COLUMNS, order_key="age", order_asc=False)) == ["t.age DESC"]
    assert sql(order_clauses(COLUMNS, order="-age, +email,")) == ["t.age DESC", "t.email ASC"]
    assert sql(order_clauses(COLUMNS, default=[T.c.email.desc()])) == ["t.email DESC"]
    with pytest.raises(InvalidAPIParameters, match="Cannot use 'nope' in order;"):
        order_clauses(COLUMNS, order="nope")


@pytest.mark.parametrize(
    ("limit", "offset", "ok"), [(1, 0, True), (100, 5, True), (0, 0, False), (101, 0, False), (10, -1, False)]
)
def test_check_page(limit: int, offset: int, ok: bool) -> None:
    if ok:
        check_page(limit, offset)
    else:
        with pytest.raises(InvalidAPIParameters):
            check_page(limit, offset)
