"""The admin pages' form helpers: search literals for the manager's filter language, slot and size inputs, and
what a form handler does with a refusal."""

from __future__ import annotations

import pytest

from ai.backend.manager.api.gql.filters import filter_clause
from ai.backend.web.console.base import ConsoleError, ManagerError
from ai.backend.web.console.pages.admin import common, forms


@pytest.mark.parametrize("text", ["plain", 'a"b', "back\\slash", "Zoë 日本", "emoji 🙂", "%_", "\n"])
def test_search_literal_survives_the_managers_filter_parser(text: str) -> None:
    from sqlalchemy import column

    clause = filter_clause(f"email == {common.filter_literal(text)}", {"email": column("email")})
    assert clause.right.value == text


def test_slots_are_validated_and_normalized() -> None:
    types = {"cpu": "count", "mem": "bytes"}
    assert forms.form_slots({"slot.cpu": "2", "slot.mem": "1g", "slot.x": ""}, types) == {
        "cpu": "2",
        "mem": "1073741824",
    }
    assert forms.form_slots({}, types) == {}
    with pytest.raises(ConsoleError) as e:
        forms.form_slots({"slot.mem": "lots"}, types)
    assert e.value.status == 400 and "mem" in e.value.detail
    with pytest.raises(ConsoleError):
        forms.form_slots({"slot.cpu": "Infinity"}, types, allow_infinite=False)


def test_counts_and_sizes() -> None:
    assert forms.form_count({"n": " 7 "}, "n", "N") == 7
    assert forms.form_count({}, "n", "N", default=3) == 3
    for bad in ("-1", "x", "1.5", str(2**60)):
        with pytest.raises(ConsoleError):
            forms.form_count({"n": bad}, "n", "N")
    assert forms.form_size({"s": "10g"}, "s", "S") == 10 * 2**30
    with pytest.raises(ConsoleError):
        forms.form_size({"s": "ten"}, "s", "S")


def test_slot_fields_show_bytes_as_sizes() -> None:
    fields = forms.slot_fields({"cpu": "count", "mem": "bytes"}, {"mem": "4294967296", "cuda.device": "1"}, None)
    assert [(f["name"], f["value"]) for f in fields] == [("cpu", ""), ("mem", "4g"), ("cuda.device", "1")]


def test_refusal_keeps_4xx_and_lets_server_errors_through() -> None:
    with common.refusal() as refused:
        pass
    assert not refused
    with common.refusal() as refused:
        raise ConsoleError(400, "Invalid form", "Name is required.")
    assert refused and (refused.status, refused.message) == (400, "Name is required.")
    with common.refusal() as refused:
        raise ManagerError(409, "Conflict")  # no detail: the title is the message
    assert (refused.status, refused.message) == (409, "Conflict")
    with pytest.raises(ManagerError), common.refusal():
        raise ManagerError(502, "Bad gateway", "The manager is down.")
    with pytest.raises(KeyError), common.refusal():
        raise KeyError("a bug is not a refusal")
