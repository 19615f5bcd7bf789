"""Unit tests of the GraphQL document building shared by the admin function classes."""

from __future__ import annotations

import json
import uuid

import pytest
from graphql import parse, value_from_ast_untyped
from graphql.language import FieldNode, OperationDefinitionNode
from hypothesis import given
from hypothesis import strategies as st

from ai.backend.client.config import undefined
from ai.backend.client.func._gql import (
    check_page,
    decode_json_fields,
    encode_json_string,
    gql_arguments,
    gql_literal,
    mutation_document,
    query_document,
    selection,
)


def _root_field(document: str) -> FieldNode:
    op = parse(document).definitions[0]
    assert isinstance(op, OperationDefinitionNode)
    node = op.selection_set.selections[0]
    assert isinstance(node, FieldNode)
    return node


def _args(document: str) -> dict[str, object]:
    return {a.name.value: value_from_ast_untyped(a.value) for a in (_root_field(document).arguments or ())}


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-1, "-1"),
        (1.5, "1.5"),
        ("x", '"x"'),
        ('a "quoted"\nline\\', '"a \\"quoted\\"\\nline\\\\"'),
        (["a", 1, None], '["a", 1, null]'),
        ({"a": 1, "b": [True]}, "{a: 1, b: [true]}"),
        ({"a": 1, "skip": undefined}, "{a: 1}"),
        (uuid.UUID("2de2b969-1d04-48a6-af16-0bc8adb3c831"), '"2de2b969-1d04-48a6-af16-0bc8adb3c831"'),
    ],
)
def test_gql_literal(value: object, literal: str) -> None:
    assert gql_literal(value) == literal


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"bad key": 1}, {"a-b": 1}, {1: 2}])
def test_gql_literal_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        gql_literal(bad)


@given(st.text())
def test_any_string_round_trips_through_a_graphql_document(text: str) -> None:
    # surrogates cannot be encoded at all; everything else must survive parsing unchanged
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return
    doc = query_document("user", {"email": text}, ["email"])
    assert _args(doc) == {"email": text}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(alphabet=st.characters(codec="utf-8")),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True), children, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_literals_parse_back_to_the_same_value(value: object) -> None:
    doc = f"query {{ f(x: {gql_literal(value)}) {{ a }} }}"
    assert _args(doc)["x"] == value


def test_arguments_leave_out_unset_values() -> None:
    assert gql_arguments({}) == ""
    assert gql_arguments({"a": None, "b": undefined}) == ""
    assert gql_arguments({"a": None, "b": False, "c": 0, "d": ""}) == '(b: false, c: 0, d: "")'
    with pytest.raises(ValueError):
        gql_arguments({"bad name": 1})


def test_query_and_mutation_documents_parse() -> None:
    doc = query_document("users", {"status": "active", "group_id": None}, ["uuid", "groups { id name }"])
    assert doc == 'query { users(status: "active") { uuid groups { id name } } }'
    assert _root_field(doc).name.value == "users"
    doc = mutation_document(
        "create_domain",
        {"name": "d1", "props": {"description": "x", "total_resource_slots": '{"cpu": 1}'}},
        ("ok", "msg", "domain { name }"),
    )
    assert _args(doc) == {"name": "d1", "props": {"description": "x", "total_resource_slots": '{"cpu": 1}'}}
    assert mutation_document("delete_domain", {"name": "d"}) == 'mutation { delete_domain(name: "d") { ok msg } }'


@pytest.mark.parametrize(
    "field",
    [
        "groups { id name }",
        "groups{id name}",
        "a { b { c d } e }",
        "  name  ",
    ],
)
def test_selection_accepts_fields_and_nested_blocks(field: str) -> None:
    assert selection([field]) == field.strip()


@pytest.mark.parametrize(
    "field",
    [
        "",
        "name email",  # two fields in one item
        "groups {",
        "groups { }",
        "groups { id } }",
        "{ id }",
        'name } mutation { delete_domain(name: "x") { ok',
        "name(arg: 1)",
        "na-me",
        "name # comment",
    ],
)
def test_selection_rejects_anything_else(field: str) -> None:
    with pytest.raises(ValueError):
        selection([field])


def test_selection_needs_a_field() -> None:
    with pytest.raises(ValueError, match="At least one field"):
        selection([])


@pytest.mark.parametrize(("offset", "size"), [(0, 0), (0, 101), (-1, 20)])
def test_check_page_rejects(offset: int, size: int) -> None:
    with pytest.raises(ValueError):
        check_page(offset, size)


def test_check_page_accepts_bounds() -> None:
    check_page(0, 1)
    check_page(500, 100)


def test_encode_json_string() -> None:
    assert encode_json_string(None, "x") is None
    assert encode_json_string(undefined, "x") is None
    assert json.loads(encode_json_string({"cpu": 2, "mem": "4g"}, "x") or "") == {"cpu": 2, "mem": "4g"}
    assert encode_json_string('{"cpu": 2}', "x") == '{"cpu": 2}'
    with pytest.raises(ValueError, match="slots is not valid JSON"):
        encode_json_string("{cpu: 2}", "slots")
    with pytest.raises(ValueError, match="must be a JSON object"):
        encode_json_string("[1, 2]", "slots")
    with pytest.raises(ValueError, match="must be a mapping"):
        encode_json_string(3, "slots")


def test_decode_json_fields() -> None:
    item = {"name": "x", "total_resource_slots": '{"cpu": "4"}', "bad": "{no", "other": '{"a": 1}'}
    out = decode_json_fields(item, ["total_resource_slots", "bad", "missing"])
    assert out == {"name": "x", "total_resource_slots": {"cpu": "4"}, "bad": "{no", "other": '{"a": 1}'}
    assert item["total_resource_slots"] == '{"cpu": "4"}'  # the input is not changed
