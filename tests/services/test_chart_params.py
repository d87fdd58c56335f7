import json

import pytest

from imagecache.chart_params import (
    definition_check,
    params_parse,
    placeholders,
    query_fill,
    values_check,
)
from imagecache.errors import ChartInvalid

PARAMS = [
    {"name": "device", "kind": "string", "pattern": "[a-z0-9-]+"},
    {"name": "lookback", "kind": "integer", "min": 60, "max": 86400, "default": 3600},
    {"name": "metric", "kind": "choice", "choices": ["bytes", "packets"], "default": "bytes"},
]
QUERY = {
    "queries": [
        {
            "bucket": "Left +Y Axis",
            "query": {
                "device_name": ["{{device}}"],
                "lookback_seconds": "{{lookback}}",
                "metric": "{{metric}}",
                "query_title": "{{metric}} of {{device}} over {{lookback}} s",
            },
        }
    ]
}


def test_values_fill_strings_and_an_exact_integer_placeholder_becomes_an_integer() -> None:
    values = values_check(params_parse(PARAMS), {"device": "edge01"})
    query = query_fill(QUERY, values)["queries"][0]["query"]
    assert query == {
        "device_name": ["edge01"],
        "lookback_seconds": 3600,
        "metric": "bytes",
        "query_title": "bytes of edge01 over 3600 s",
    }


@pytest.mark.parametrize(
    "value",
    [
        '"}, "injected": {"x": 1}, "a": "',
        '\\"}]}',
        "{{lookback}}",
        'edge01\u2028"',
        '{"$ne": 1}',
    ],
)
def test_no_value_changes_the_query_structure(value: str) -> None:
    param = [{"name": "device", "kind": "string", "pattern": ".*"}]
    query = {"device_name": ["{{device}}"], "title": "of {{device}}", "n": 1}
    filled = query_fill(query, values_check(params_parse(param), {"device": value}))
    assert filled == {"device_name": [value], "title": f"of {value}", "n": 1}
    # The JSON sent to Kentik has the same keys: the value stays inside its string.
    assert set(json.loads(json.dumps(filled))) == {"device_name", "title", "n"}


def test_a_value_that_holds_another_placeholder_is_not_filled_again() -> None:
    params = params_parse(
        [
            {"name": "a", "kind": "string", "pattern": ".*"},
            {"name": "b", "kind": "string", "pattern": ".*"},
        ]
    )
    filled = query_fill({"t": "{{a}}|{{b}}"}, values_check(params, {"a": "{{b}}", "b": "x"}))
    assert filled == {"t": "{{b}}|x"}


def test_keys_are_never_filled() -> None:
    params = params_parse([{"name": "k", "kind": "string", "pattern": ".*"}])
    assert query_fill({"{{k}}": "{{k}}"}, {"k": "v"}) == {"{{k}}": "v"}
    assert placeholders({"{{k}}": 1}) == set()
    assert params  # declared, and a key is no use of it


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        ({"device": "edge01", "colour": "red"}, "colour", "is not a parameter"),
        ({}, "device", "is required"),
        ({"device": "EDGE"}, "device", "does not match"),
        ({"device": "edge01", "lookback": "59"}, "lookback", "at least 60"),
        ({"device": "edge01", "lookback": "86401"}, "lookback", "at most 86400"),
        ({"device": "edge01", "lookback": "1e3"}, "lookback", "must be an integer"),
        ({"device": "edge01", "lookback": " 60"}, "lookback", "must be an integer"),
        ({"device": "edge01", "metric": "flows"}, "metric", "must be one of bytes, packets"),
        ({"device": "a" * 257}, "device", "longer than 256"),
    ],
)
def test_a_value_that_does_not_fit_is_refused_naming_it(
    given: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(ChartInvalid) as refused:
        values_check(params_parse(PARAMS), given)
    assert refused.value.field == field
    assert message in refused.value.message
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "device"}, "params"),
        ([{"name": "Device", "kind": "string", "pattern": "x"}], "params[0].name"),
        ([{"name": "sig", "kind": "string", "pattern": "x"}], "params[0].name"),
        ([{"name": "d", "kind": "text"}], "params[0].kind"),
        ([{"name": "d", "kind": "string"}], "params[0].pattern"),
        ([{"name": "d", "kind": "string", "pattern": "("}], "params[0].pattern"),
        ([{"name": "d", "kind": "string", "pattern": "x", "min": 1}], "params[0].min"),
        ([{"name": "n", "kind": "integer", "min": "1"}], "params[0].min"),
        ([{"name": "n", "kind": "integer", "min": 5, "max": 1}], "params[0].max"),
        ([{"name": "n", "kind": "integer", "max": 5, "default": 6}], "params[0].default"),
        ([{"name": "c", "kind": "choice", "choices": []}], "params[0].choices"),
        ([{"name": "c", "kind": "choice", "choices": ["a"], "default": "b"}], "params[0].default"),
        (
            [
                {"name": "d", "kind": "string", "pattern": "x"},
                {"name": "d", "kind": "string", "pattern": "y"},
            ],
            "params",
        ),
    ],
)
def test_a_declaration_that_does_not_fit_is_refused_naming_its_field(
    raw: object, field: str
) -> None:
    with pytest.raises(ChartInvalid) as refused:
        params_parse(raw)
    assert refused.value.field == field


def test_the_query_and_its_declarations_must_agree() -> None:
    params = params_parse(PARAMS)
    definition_check(QUERY, params)
    with pytest.raises(ChartInvalid, match="site"):
        definition_check({"q": "{{site}}", **QUERY}, params)
    with pytest.raises(ChartInvalid, match="never uses"):
        definition_check({"q": "{{device}}"}, params)


def test_declarations_read_back_as_written() -> None:
    assert [param.as_dict() for param in params_parse(PARAMS)] == PARAMS
