"""ASP.NET route templates as HTTP triggers use them."""

from __future__ import annotations

import pytest

from hubbub.functions.routes import RouteError, RouteTemplate


def match(template: str, path: str) -> dict[str, str] | None:
    return RouteTemplate(template).match([s for s in path.split("/") if s])


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("hello", "hello", {}),
        ("hello", "HELLO", {}),  # literals ignore case
        ("hello", "hello/x", None),
        ("products/{category:alpha}/{id:int?}", "products/shoes/12", {"category": "shoes", "id": "12"}),
        ("products/{category:alpha}/{id:int?}", "products/shoes", {"category": "shoes"}),
        ("products/{category:alpha}/{id:int?}", "products/sh0es", None),
        ("products/{category:alpha}/{id:int?}", "products/shoes/x", None),
        ("items/{id:int}", "items/99999999999", None),  # beyond int32
        ("items/{id:long}", "items/99999999999", {"id": "99999999999"}),
        ("items/{id:int:min(10)}", "items/5", None),
        ("items/{id:int:range(1,5)}", "items/5", {"id": "5"}),
        (
            "items/{id:guid}",
            "items/0f8fad5b-d9cb-469f-a165-70867728950e",
            {"id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        ),
        ("items/{id:guid}", "items/not-a-guid", None),
        ("items/{flag:bool}", "items/True", {"flag": "True"}),
        ("items/{v:double}", "items/1.5e3", {"v": "1.5e3"}),
        ("items/{d:datetime}", "items/2024-01-02", {"d": "2024-01-02"}),
        ("items/{s:minlength(3)}", "items/ab", None),
        ("items/{s:length(2)}", "items/ab", {"s": "ab"}),
        ("items/{s:regex(^a+$)}", "items/aaa", {"s": "aaa"}),
        ("files/{*path}", "files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("files/{*path}", "files", {}),
        ("files/{**path}", "files/x", {"path": "x"}),
        ("{file}.{ext}", "archive.tar.gz", {"file": "archive.tar", "ext": "gz"}),
        ("x/{name=bob}", "x", {"name": "bob"}),
        ("x/{name=bob}", "x/al", {"name": "al"}),
        ("", "", {}),
    ],
)
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert match(template, path) == expected


@pytest.mark.parametrize(
    "template",
    ["a/{id:nosuch}", "a/{*rest}/b", "a/{x}/{X}", "a//b", "a/{x", "a/{1x}", "a/{x:min(q)}"],
)
def test_bad_templates(template: str) -> None:
    with pytest.raises(RouteError):
        RouteTemplate(template)


def test_precedence_orders_literals_first() -> None:
    templates = ["{*all}", "items/{id}", "items/new", "items/{id:int}", "{a}/{b}"]
    ordered = sorted(templates, key=lambda t: RouteTemplate(t).precedence)
    assert ordered[:3] == ["items/new", "items/{id:int}", "items/{id}"]
    assert ordered[-1] == "{*all}"
