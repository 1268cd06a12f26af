"""Binding expressions: headers, query, route values, body properties, nested trigger data, settings."""

from __future__ import annotations

import re

import pytest

from hubbub.functions.expressions import BindingData, ExpressionError, resolve

DATA = BindingData(
    {
        "headers": {"x-ms-client-principal-name": "alice", "x.dotted": "d"},
        "query": {"userid": "bob", "multi": "1,2"},
        "id": "42",
        "connectionContext": {"userId": "carol", "states": {"n": 1}},
        "request": '{"connectionContext": {"hub": "chat"}}',
        "count": 3,
        "flag": True,
    }
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{headers.x-ms-client-principal-name}", "alice"),
        ("{HEADERS.X-MS-Client-Principal-Name}", "alice"),
        ("{headers.x.dotted}", "d"),
        ("{query.userid}", "bob"),
        ("{query.UserId}", "bob"),
        ("user-{id}-x", "user-42-x"),
        ("{connectionContext.userId}", "carol"),
        ("{connectionContext.states}", '{"n":1}'),
        ("{request.connectionContext.hub}", "chat"),  # JSON text is looked into
        ("{count}/{flag}", "3/True"),
        ("%SETTING_A%-{id}", "a-42"),
        ("plain", "plain"),
    ],
)
def test_resolve(template: str, expected: str) -> None:
    assert resolve(template, DATA, {"SETTING_A": "a"}) == expected


def test_system_expressions() -> None:
    assert re.fullmatch(r"[0-9a-f-]{36}", resolve("{sys.randguid}", DATA, {}))
    assert re.fullmatch(r"[0-9a-f-]{36}", resolve("{rand-guid}", DATA, {}))
    assert resolve("{sys.utcnow}", DATA, {}).endswith("Z")


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("{headers.x-ms-client-principal-id}", "x-ms-client-principal-id"),
        ("{query.nope}", "nope"),
        ("{connectionContext.userId.more}", "more"),
        ("{nothing}", "nothing"),
    ],
)
def test_missing_values_fail_like_the_host(template: str, missing: str) -> None:
    with pytest.raises(
        ExpressionError, match=f"Error while accessing '{re.escape(missing)}': property doesn't exist"
    ):
        resolve(template, DATA, {})


def test_missing_setting() -> None:
    with pytest.raises(ExpressionError, match="NOPE"):
        resolve("%NOPE%", DATA, {})
