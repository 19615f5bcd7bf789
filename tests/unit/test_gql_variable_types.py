"""The declared-variable-type rewrite that lets the 19.09 and 22.03 clients' documents both validate."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from ai.backend.manager.api.gql import build_schema
from ai.backend.manager.api.gql.variable_types import VariableTypeNormalizer

SCHEMA = build_schema(allow_introspection=True)._schema


@pytest.fixture(scope="module")
def norm() -> VariableTypeNormalizer:
    return VariableTypeNormalizer(SCHEMA)


def _errors(query: str) -> list[str]:
    return [e.message for e in validate(SCHEMA, parse(query))]


# The exact documents of the official clients (R8, R9 of the compatibility matrix).
CLIENT_DOCUMENTS = [
    # 19.09 `admin group GID`
    "query($gid: String!) { group(id: $gid) { id name description is_active created_at modified_at domain_name } }",
    # 19.09 `admin groups update|add-users|remove-users`
    "mutation($gid: String!, $input: ModifyGroupInput!) { modify_group(gid: $gid, props: $input) { ok msg } }",
    # 19.09 `admin groups delete`
    "mutation($gid: String!) { delete_group(gid: $gid) { ok msg } }",
    # 22.03 `User.detail_by_uuid`
    "query($user_id: ID) { user_from_uuid(user_id: $user_id) { uuid email } }",
    # 22.03 `ScalingGroup.associate_group`
    "mutation($scaling_group: String!, $user_group: UUID!) { associate_scaling_group_with_user_group("
    "scaling_group: $scaling_group, user_group: $user_group) { ok msg } }",
    # 22.03 `ScalingGroup.dissociate_all_group`
    "mutation($group_id: UUID!) { disassociate_all_scaling_groups_with_group(user_group: $group_id) { ok msg } }",
    # 22.03 `ScalingGroup.create`
    "mutation($name: String!, $input: CreateScalingGroupInput!) { create_scaling_group(name: $name, props: $input)"
    " { ok msg scaling_group { name } } }",
]


@pytest.mark.parametrize("query", CLIENT_DOCUMENTS)
def test_client_documents_validate_after_the_rewrite(norm: VariableTypeNormalizer, query: str) -> None:
    assert _errors(query), "the document validates as it is: the test no longer proves the rewrite is needed"
    assert _errors(norm.normalize(query)) == []


def test_the_other_generation_still_validates(norm: VariableTypeNormalizer) -> None:
    for query in (
        "query($gid: UUID!) { group(id: $gid) { id } }",  # 22.03
        "mutation($name: String!, $input: ScalingGroupInput!) { create_scaling_group(name: $name, props: $input)"
        " { ok } }",  # 19.09
    ):
        assert _errors(query) == []
        assert norm.normalize(query) == query  # untouched, not even reprinted


def test_only_string_like_scalars_are_exchanged(norm: VariableTypeNormalizer) -> None:
    # An Int declared for a String argument stays an error: the rewrite never widens what a value may be.
    query = "query($email: Int) { user(email: $email) { email } }"
    assert norm.normalize(query) == query
    assert _errors(query)


def test_documents_without_variables_or_unparsable_are_returned_as_is(norm: VariableTypeNormalizer) -> None:
    for query in ("{ domains { name } }", "query($x: String { broken"):
        assert norm.normalize(query) is query


def test_a_variable_used_at_two_different_types_is_left_alone(norm: VariableTypeNormalizer) -> None:
    query = "query($x: String!) { group(id: $x) { id } user_from_uuid(user_id: $x) { email } }"
    assert norm.normalize(query) == query
