"""OData ``filter`` parser, type checker and compiled evaluation (hubbub.filters)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.errors import BadRequest, InvalidFilter
from hubbub.filters import MAX_CLAUSES, MAX_DEPTH, MAX_FILTER_LENGTH, Filter, parse_filter

Conn = tuple[str | None, str, Collection[str]]


def match(
    text: str, user_id: str | None = "user1", connection_id: str = "c1", groups: Collection[str] = ()
) -> bool:
    return parse_filter(text).matches(user_id, connection_id, groups)


def error(text: str) -> str:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(text)
    message = info.value.message
    assert message.endswith(". (Parameter 'filter')"), message
    return message


# --------------------------------------------------------------------------- spec examples


@pytest.mark.parametrize(
    ("text", "conn", "expected"),
    [
        ("'group1' in groups or 'group2' in groups", ("u", "c", {"group2"}), True),
        ("'group1' in groups or 'group2' in groups", ("u", "c", {"group3"}), False),
        ("'group1' in groups or 'group2' in groups or 'group3' in groups", ("u", "c", {"group3"}), True),
        ("userId in ('user1','user2') and 'group1' in groups", ("user2", "c", {"group1"}), True),
        ("userId in ('user1', 'user2', 'user3') and 'group1' in groups", ("user3", "c", {"g"}), False),
        ("userId in ('user1','user2') and 'group1' in groups", ("user4", "c", {"group1"}), False),
        ("userId eq 'user1' and connectionId ne '123'", ("user1", "124", ()), True),
        ("userId eq 'user1' and connectionId ne '123'", ("user1", "123", ()), False),
        ("userId eq 'user1' and (not ('group1' in groups))", ("user1", "c", {"g2"}), True),
        ("userId eq 'user1' and (not ('group1' in groups))", ("user1", "c", {"group1"}), False),
        ("userId eq 'user''1'", ("user'1", "c", ()), True),
        ("userId eq 'user''1'", ("user1", "c", ()), False),
        # operation table of the reference page
        ("length(userId) le 10 and length(userId) gt 3", ("user1", "c", ()), True),
        ("length(userId) gt 10 or length(userId) le 3", ("user1", "c", ()), False),
        ("not endswith(userId, 'milk')", ("oatmilk", "c", ()), False),
        ("userId eq null", (None, "c", ()), True),
        ("userId ne null", (None, "c", ()), False),
        ("userId eq 'user1' or (not (startswith(userId,'user2')))", ("user22", "c", ()), False),
        ("tolower(userId) eq 'user1'", ("USER1", "c", ()), True),
        ("toupper(userId) eq 'USER1'", ("user1", "c", ()), True),
        ("trim(userId) eq 'user1'", (" user1 ", "c", ()), True),
        ("substring(userId,5,2) eq 'ab'", ("user-ab-de", "c", ()), True),
        ("endswith(userId,'de')", ("user-ab-de", "c", ()), True),
        ("startswith(userId,'user')", ("user-ab-de", "c", ()), True),
        ("indexof(userId,'-ab-') ge 0", ("user-ab-de", "c", ()), True),
        ("length(userId) gt 1", ("user-ab-de", "c", ()), True),
        ("length(groups) gt 1", ("u", "c", {"a", "b"}), True),
        ("length(groups) gt 1", ("u", "c", {"a"}), False),
        ("not (length(userId) gt 5)", ("user1", "c", ()), True),
        (
            "length(userId) gt 0 and length(userId) lt 3 or length(userId) gt 7 and length(userId) lt 10",
            ("12345678", "c", ()),
            True,
        ),
    ],
)
def test_spec_examples(text: str, conn: Conn, expected: bool) -> None:
    assert parse_filter(text).matches(*conn) is expected


def test_documented_precedence_error() -> None:
    assert error("not length(userId) gt 5") == (
        "Invalid syntax for 'not length(userId)': Type 'null', expect 'bool'. (Parameter 'filter')"
    )


def test_public_surface() -> None:
    f = parse_filter("userId eq 'a'")
    assert isinstance(f, Filter)
    assert f.text == "userId eq 'a'"
    assert "userId eq 'a'" in repr(f)
    assert issubclass(InvalidFilter, BadRequest)
    assert (MAX_FILTER_LENGTH, MAX_CLAUSES, MAX_DEPTH) == (4096, 100, 64)


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userId eq 'bob'", True),
        ("userId ne 'bob'", False),
        ("userId gt 'bob'", False),
        ("userId ge 'bob'", True),
        ("userId lt 'boc'", True),
        ("userId le 'boa'", False),
        ("userId gt 'Bob'", True),  # ordinal: 'b' > 'B'
        ("userId eq 'BOB'", False),  # case-sensitive
        ("length(userId) eq 3", True),
        ("length(userId) ne 3", False),
        ("length(userId) gt 2", True),
        ("length(userId) ge 4", False),
        ("length(userId) lt 4", True),
        ("length(userId) le 2", False),
        ("10 gt 9", True),  # integers compare numerically, not as text
        ("-1 lt +1", True),
        ("true", True),
        ("false", False),
        ("true eq true", True),
        ("(userId eq 'bob') eq true", True),
        ("(userId eq 'bob') ne (connectionId eq 'c1')", False),
        ("true and false", False),
        ("true or false", True),
        ("not false", True),
        ("not not true", True),
        ("null eq null", True),
        ("null ne 'x'", True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert match(text, "bob") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tolower(userId) eq 'abc déf'", True),
        ("toupper(userId) eq 'ABC DÉF'", True),
        ("trim(concat('  ', userId)) eq userId", True),
        ("concat(userId, '!') eq 'AbC déf!'", True),
        ("concat(concat('a', 'b'), 'c') eq 'abc'", True),
        ("substring(userId, 4) eq 'déf'", True),
        ("substring(userId, 1, 2) eq 'bC'", True),
        ("substring(userId, 100) eq ''", True),
        ("substring(userId, -3, 2) eq 'Ab'", True),
        ("substring(userId, 2, -1) eq ''", True),
        ("substring(userId, 2, 100) eq 'C déf'", True),
        ("substring(userId, length(connectionId), 1) eq 'd'", True),  # lenient: int expressions
        ("indexof(userId, 'C') eq 2", True),
        ("indexof(userId, 'c') eq -1", True),
        ("indexof(userId, '') eq 0", True),
        ("length(userId) eq 7", True),
        ("length('') eq 0", True),
        ("startswith(userId, 'Ab')", True),
        ("startswith(userId, 'ab')", False),
        ("endswith(userId, 'éf')", True),
        ("contains(userId, 'C d')", True),
        ("contains(userId, '')", True),
        ("contains(connectionId, 'x')", False),
    ],
)
def test_functions(text: str, expected: bool) -> None:
    assert match(text, "AbC déf", "conn") is expected


@pytest.mark.parametrize(
    ("text", "conn", "expected"),
    [
        ("userId in ('a', 'b')", ("b", "c", ()), True),
        ("userId in ('a')", ("a", "c", ()), True),
        ("userId in ('a', 'b')", ("c", "c", ()), False),
        ("userId in ('a', null)", (None, "c", ()), True),
        ("userId in ('a', 'b')", (None, "c", ()), False),
        ("userId in (connectionId, 'x')", ("c", "c", ()), True),
        ("tolower(userId) in ('a', concat('b', 'c'))", ("BC", "c", ()), True),
        ("length(userId) in (1, 2, 3)", ("ab", "c", ()), True),
        ("length(userId) in (1, 2, 3)", (None, "c", ()), False),
        ("'g' in groups", ("u", "c", ["g", "h"]), True),
        ("'g' in groups", ("u", "c", []), False),
        ("'g' in (groups)", ("u", "c", {"g"}), True),
        ("userId in groups", ("g", "c", {"g"}), True),
        ("userId in groups", (None, "c", {"g"}), False),
        ("connectionId in groups", ("u", "c", {"c"}), True),
        ("(userId eq 'a') in (true)", ("a", "c", ()), True),
    ],
)
def test_in(text: str, conn: Conn, expected: bool) -> None:
    assert parse_filter(text).matches(*conn) is expected


# --------------------------------------------------------------------------- precedence, case


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true or true and false", True),  # and binds tighter than or
        ("(true or true) and false", False),
        ("false and true or true", True),
        ("not false and false", False),  # not binds tighter than and
        ("not (false and false)", True),
        ("not true or true", True),
        ("userId eq 'a' or userId eq 'b' and connectionId eq 'x'", True),
        ("(userId eq 'a' or userId eq 'b') and connectionId eq 'x'", False),
        ("((((userId eq 'a'))))", True),
        ("(userId) eq ('a')", True),
        ("not ('g' in groups)", True),
    ],
)
def test_precedence(text: str, expected: bool) -> None:
    assert match(text, "a", "c") is expected


@pytest.mark.parametrize(
    "text",
    [
        "USERID EQ 'a' AND ConnectionId Ne 'x'",
        "userid eq 'a' and Not ('G' In GROUPS)",
        "StartsWith(UserId, 'a') OR False",
        "TOLOWER(userId) eq 'a' and TRUE",
        "userId\teq\n'a'\r\nand\u00a0true",
    ],
)
def test_case_insensitive_names_and_whitespace(text: str) -> None:
    assert match(text, "a", "c", {"g"}) is True


def test_string_comparison_is_case_sensitive() -> None:
    assert match("userId eq 'A'", "a") is False
    assert match("'A' in groups", "u", groups={"a"}) is False


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("userId eq ''''", "'"),
        ("userId eq 'it''s'", "it's"),
        ("userId eq 'a''''b'", "a''b"),
        ("userId eq ''", ""),
        ("userId eq 'a and b or (c)'", "a and b or (c)"),
        ("userId eq 'ünïcödé 🚀'", "ünïcödé 🚀"),
    ],
)
def test_string_literal_escaping(text: str, value: str) -> None:
    assert match(text, value) is True
    assert match(text, value + "x") is False


# --------------------------------------------------------------------------- null semantics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userId eq null", True),
        ("null eq userId", True),
        ("userId ne null", False),
        ("userId eq 'a'", False),
        ("userId ne 'a'", True),
        ("tolower(userId) eq null", True),  # functions of null are null
        ("concat(userId, 'a') eq null", True),
        ("substring(userId, 1) eq null", True),
        ("length(userId) eq null", True),
        ("indexof(userId, 'a') eq null", True),
        ("indexof(userId, 'a') eq -1", False),
        ("startswith(userId, 'a') eq null", True),
        ("startswith(userId, 'a') eq false", False),
        ("userId gt 'a'", False),  # ordering with null is false both ways
        ("userId le 'a'", False),
        ("length(userId) lt 5", False),
        ("length(userId) ge 0", False),
        ("'a' gt null", False),
        ("startswith(userId, 'a')", False),  # null where a bool is needed -> false
        ("not startswith(userId, 'a')", True),
        ("contains(userId, 'a') or true", True),
        ("endswith(userId, 'a') and true", False),
        ("tolower(null) eq null", True),
        ("length(groups) eq 0", True),
    ],
)
def test_null_user(text: str, expected: bool) -> None:
    assert match(text, None) is expected


def test_matches_returns_plain_bool() -> None:
    for text in ("startswith(userId, 'a')", "userId in ('a')", "'a' in groups", "true", "userId gt 'a'"):
        for user in (None, "a", "b"):
            assert type(match(text, user, "c", ["a"])) is bool


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["position 0 (end of input)", "expected an expression"]),
        ("   ", ["position 3 (end of input)", "expected an expression"]),
        ("(userId eq 'a'", ["position 14 (end of input)", "expected ')'"]),
        ("(length(userId) eq 3 gt 5", ['position 21 near "gt 5"', "chained"]),
        ("userId eq 'a", ['position 10 near "\'a"', "unterminated string"]),
        ("userId eq 'a' 'b'", ["position 14 near \"'b'\"", "expected an operator or end of input"]),
        ("userId eq 'a' and", ["position 17 (end of input)", "expected an expression"]),
        ("userId eq 'a')", ['position 13 near ")"', "end of input"]),
        ("foo eq 'a'", ['position 0 near "foo eq', "unknown identifier 'foo'"]),
        ("bar('a')", ["position 0", "unknown function 'bar'"]),
        ("length eq 1", ['position 7 near "eq 1"', "expected '(' after function 'length'"]),
        ("userId eq #", ['position 10 near "#"', "unexpected character '#'"]),
        ("userId eq - 1", ["position 10", "unexpected character '-'"]),
        ("userId in ()", ['position 11 near ")"', "expected an expression"]),
        ("userId in ('a',)", ['position 15 near ")"', "expected an expression"]),
        ("userId in ('a' 'b')", ["position 15", "expected ',' or ')'"]),
        ("tolower(userId", ["position 14", "expected ',' or ')'"]),
        ("userId eq and", ["position 10", "expected an expression"]),
        ("eq 'a'", ["position 0", "expected an expression"]),
        ("userId eq 99999999999999999999", ["position 10", "integer literal out of range"]),
        ("userId eq 'a' eq 'b'", ["position 14", "chained"]),
        ("'a' in groups in groups", ["position 14", "chained"]),
        ("userId() eq 'a'", ["unknown function 'userId'"]),
    ],
)
def test_syntax_errors_name_position(text: str, fragments: list[str]) -> None:
    message = error(text)
    assert message.startswith("Invalid syntax at position ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userId eq 5", "Invalid syntax for 'userId eq 5': Type 'int', expect 'string'."),
        ("5 eq userId", "Invalid syntax for '5 eq userId': Type 'string', expect 'int'."),
        ("userId", "Invalid syntax for 'userId': Type 'null', expect 'bool'."),
        ("connectionId", "Invalid syntax for 'connectionId': Type 'string', expect 'bool'."),
        ("length(connectionId)", "Invalid syntax for 'length(connectionId)': Type 'int', expect 'bool'."),
        ("not userId eq 'a'", "Invalid syntax for 'not userId': Type 'null', expect 'bool'."),
        ("not 'g' in groups", "Invalid syntax for 'not 'g'': Type 'string', expect 'bool'."),
        ("not null", "Invalid syntax for 'not null': Type 'null', expect 'bool'."),
        ("userId eq 'a' and 5", "Invalid syntax for '5': Type 'int', expect 'bool'."),
        ("groups or true", "Invalid syntax for 'groups': Type 'collection', expect 'bool'."),
        ("'a' in userId", "Invalid syntax for ''a' in userId': Type 'string', expect 'collection'"),
        ("'a' in 'abc'", "Type 'string', expect 'collection' or a parenthesized list"),
        ("5 in groups", "Invalid syntax for '5 in groups': Type 'int', expect 'string'."),
        ("userId in ('a', 1)", "Invalid syntax for 'userId in ('a', 1)': Type 'int', expect 'string'."),
        ("userId in (groups, 'a')", "Type 'collection', expect"),
        ("groups eq 'a'", "Type 'collection', expect 'string' or 'int' or 'bool' or 'null'"),
        ("groups in groups", "Type 'collection', expect 'string'"),
        ("true gt false", "Type 'bool', expect 'string' or 'int' or 'null'"),
        ("userId gt 1", "Type 'int', expect 'string'"),
        ("tolower(5) eq 'a'", "Invalid syntax for 'tolower(5)': Type 'int', expect 'string'."),
        ("substring(userId, 'a') eq 'a'", "Type 'string', expect 'int'"),
        ("length(true) eq 1", "Type 'bool', expect 'string'"),
        ("startswith(groups, 'a')", "Type 'collection', expect 'string'"),
        ("tolower(userId, 'a') eq 'a'", "Function 'tolower' takes 1 argument(s), got 2"),
        ("substring(userId) eq 'a'", "Function 'substring' takes 2 or 3 argument(s), got 1"),
        ("concat('a', 'b', 'c') eq 'abc'", "Function 'concat' takes 2 argument(s), got 3"),
    ],
)
def test_type_errors(text: str, expected: str) -> None:
    assert expected in error(text)


def test_long_excerpt_is_shortened() -> None:
    text = "concat(userId, '" + "x" * 200 + "')"
    message = error(text)
    assert "..." in message
    assert len(message) < 200


# --------------------------------------------------------------------------- limits


def test_length_limit() -> None:
    pad = " " * (MAX_FILTER_LENGTH - len("true"))
    assert match(pad + "true") is True
    assert "4096 characters" in error(pad + " true")


def test_clause_limit() -> None:
    ok = " or ".join(f"userId eq 'u{i}'" for i in range(MAX_CLAUSES))
    assert match(ok, "u99") is True
    message = error(ok + " or userId eq 'x'")
    assert f"more than {MAX_CLAUSES} clauses" in message
    assert f"position {len(ok) + 11}" in message  # at the 101st comparison operator


def test_clauses_count_ins_and_boolean_functions() -> None:
    half = MAX_CLAUSES // 2
    text = " and ".join(["'g' in groups"] * half + ["startswith(userId, 'u')"] * half)
    assert match(text, "u", groups={"g"}) is True
    assert "clauses" in error(text + " and contains(userId, 'u')")
    # an in-list is one clause whatever its length; literals are not clauses
    big = "userId in (" + ", ".join(f"'u{i}'" for i in range(300)) + ")"
    assert match(big, "u299") is True
    assert match(" and ".join(["true"] * 450)) is True


@pytest.mark.parametrize(
    ("opening", "middle", "closing", "levels_per_unit"),
    [
        ("(", "true", ")", 1),
        ("not ", "true", "", 1),
        ("not (", "true", ")", 2),
        ("tolower(", "'a'", ")", 1),
        ("true in (", "true", ")", 1),
        ("concat('a', ", "'a'", ")", 1),
    ],
)
def test_depth_limit(opening: str, middle: str, closing: str, levels_per_unit: int) -> None:
    def nest(units: int) -> str:
        text = opening * units + middle + closing * units
        return text + " eq 'a'" if middle == "'a'" else text

    units = MAX_DEPTH // levels_per_unit
    parse_filter(nest(units))
    assert "nested deeper than 64 levels" in error(nest(units + 1))
    assert "nested deeper" in error(nest(300))


def test_depth_limit_exact() -> None:
    assert match("(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH) is True
    assert match("not " * MAX_DEPTH + "true") is True
    text = "(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1)
    assert f"position {MAX_DEPTH}" in error(text)


def test_parse_is_cached_and_filters_are_reusable() -> None:
    a = parse_filter("userId eq 'x'")
    assert parse_filter("userId eq 'x'") is a
    assert a.matches("x", "c", ()) and not a.matches("y", "c", ())


# --------------------------------------------------------------------------- properties

_TOKENS = [
    "(",
    ")",
    ",",
    "'a'",
    "'it''s'",
    "'",
    "0",
    "-1",
    "+7",
    "9999999999999999999999",
    "userId",
    "connectionId",
    "groups",
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "and",
    "or",
    "not",
    "in",
    "true",
    "false",
    "null",
    "tolower",
    "toupper",
    "trim",
    "substring",
    "concat",
    "indexof",
    "length",
    "startswith",
    "endswith",
    "contains",
    "x",
    "#",
    "-",
    "_",
]
_CONNS: list[Conn] = [(None, "c", ()), ("a", "c", {"a", "g"}), ("it's", "a", ["x"]), ("", "", {""})]


def _only_filter_or_invalid(text: str) -> None:
    try:
        f = parse_filter(text)
    except InvalidFilter as exc:
        assert exc.message.endswith("(Parameter 'filter')")
        return
    for conn in _CONNS:
        assert type(f.matches(*conn)) is bool


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_invalid_filter(text: str) -> None:
    _only_filter_or_invalid(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40), st.sampled_from([" ", "", "  "]))
def test_token_soup_parses_or_raises_invalid_filter(tokens: list[str], sep: str) -> None:
    _only_filter_or_invalid(sep.join(tokens))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["(", "not ", "tolower(", "length(", "'a' in ("]), min_size=60, max_size=400))
def test_deep_nesting_never_recurses_out(prefix: list[str]) -> None:
    _only_filter_or_invalid("".join(prefix) + "true" + ")" * len(prefix))


# Reference model: typed expressions as nested tuples, rendered to text with minimal
# parentheses, evaluated by a plain tree walk written independently of the module.

Expr = tuple[Any, ...]
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_PREC = {"or": 1, "and": 2, "cmp": 3, "in": 3, "inlist": 3, "not": 4}
_CHARS = "aAb' ß-"

_str_lit = st.text(_CHARS, max_size=4).map(lambda s: ("lit", s))
_int_lit = st.integers(-3, 9).map(lambda i: ("lit", i))
_str_leaf = st.one_of(
    st.just(("id", "userId")), st.just(("id", "connectionId")), _str_lit, st.just(("lit", None))
)


def _str_ext(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.tuples(st.sampled_from(["tolower", "toupper", "trim"]), inner).map(lambda t: ("call", t[0], t[1])),
        st.tuples(inner, _int_lit).map(lambda t: ("call", "substring", *t)),
        st.tuples(inner, _int_lit, _int_lit).map(lambda t: ("call", "substring", *t)),
        st.tuples(inner, inner).map(lambda t: ("call", "concat", *t)),
    )


_strings = st.recursive(_str_leaf, _str_ext, max_leaves=4)
_ints = st.one_of(
    _int_lit,
    _strings.map(lambda s: ("call", "length", s)),
    st.just(("call", "length", ("id", "groups"))),
    st.tuples(_strings, _strings).map(lambda t: ("call", "indexof", *t)),
)
_ops = st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"])
_atoms = st.one_of(
    st.tuples(_strings, _ops, _strings).map(lambda t: ("cmp", t[1], t[0], t[2])),
    st.tuples(_ints, _ops, _ints).map(lambda t: ("cmp", t[1], t[0], t[2])),
    st.tuples(_strings, st.lists(_strings, min_size=1, max_size=3)).map(lambda t: ("inlist", t[0], *t[1])),
    _strings.map(lambda s: ("in", s, ("id", "groups"))),
    st.tuples(st.sampled_from(["startswith", "endswith", "contains"]), _strings, _strings).map(
        lambda t: ("call", *t)
    ),
    st.sampled_from([("lit", True), ("lit", False)]),
)


def _bool_ext(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        inner.map(lambda b: ("not", b)),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: (t[0], *t[1])
        ),
        st.tuples(st.sampled_from(["eq", "ne"]), inner, inner).map(lambda t: ("cmp", t[0], t[1], t[2])),
    )


_bools = st.recursive(_atoms, _bool_ext, max_leaves=8)


def _render(e: Expr, upper: bool, parent: int = 0) -> str:
    def kw(word: str) -> str:
        return word.upper() if upper else word

    kind = e[0]
    if kind == "lit":
        v = e[1]
        if isinstance(v, str):
            text = "'" + v.replace("'", "''") + "'"
        elif v is None or isinstance(v, bool):
            text = kw("null" if v is None else str(v).lower())
        else:
            text = str(v)
    elif kind == "id":
        text = kw(e[1])
    elif kind == "call":
        text = kw(e[1]) + "(" + ", ".join(_render(a, upper) for a in e[2:]) + ")"
    elif kind == "not":
        text = kw("not") + " " + _render(e[1], upper, 4)
    elif kind in ("and", "or"):
        text = f" {kw(kind)} ".join(_render(a, upper, _PREC[kind] + 1) for a in e[1:])
    elif kind == "cmp":
        text = f"{_render(e[2], upper, 4)} {kw(e[1])} {_render(e[3], upper, 4)}"
    elif kind == "in":
        text = f"{_render(e[1], upper, 4)} {kw('in')} {_render(e[2], upper, 4)}"
    else:  # inlist
        text = f"{_render(e[1], upper, 4)} {kw('in')} (" + ", ".join(_render(a, upper) for a in e[2:]) + ")"
    return f"({text})" if _PREC.get(kind, 5) < parent else text


def _eval(e: Expr, conn: Conn) -> Any:
    user, cid, groups = conn
    kind = e[0]
    if kind == "lit":
        return e[1]
    if kind == "id":
        return {"userId": user, "connectionId": cid, "groups": groups}[e[1]]
    if kind == "not":
        return _eval(e[1], conn) is not True
    if kind == "and":
        return all(_eval(a, conn) is True for a in e[1:])
    if kind == "or":
        return any(_eval(a, conn) is True for a in e[1:])
    if kind == "in":
        return _eval(e[1], conn) in _eval(e[2], conn)
    if kind == "inlist":
        return _eval(e[1], conn) in [_eval(a, conn) for a in e[2:]]
    if kind == "cmp":
        a, b = _eval(e[2], conn), _eval(e[3], conn)
        if e[1] == "eq":
            return a == b
        if e[1] == "ne":
            return a != b
        return a is not None and b is not None and _ORDER[e[1]](a, b)
    args = [_eval(a, conn) for a in e[2:]]
    if None in args:
        return None
    name = e[1]
    s = args[0]
    if name == "substring":
        start = max(args[1], 0)
        return s[start:] if len(args) == 2 else s[start : start + max(args[2], 0)]
    if name == "length":
        return len(s)
    simple: dict[str, Callable[[], Any]] = {
        "tolower": lambda: s.lower(),
        "toupper": lambda: s.upper(),
        "trim": lambda: s.strip(),
        "concat": lambda: s + args[1],
        "indexof": lambda: s.find(args[1]),
        "startswith": lambda: s.startswith(args[1]),
        "endswith": lambda: s.endswith(args[1]),
        "contains": lambda: args[1] in s,
    }
    return simple[name]()


_conns = st.tuples(
    st.one_of(st.none(), st.text(_CHARS, max_size=5)),
    st.text(_CHARS, max_size=5),
    st.frozensets(st.text(_CHARS, max_size=3), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(_bools, st.booleans(), st.lists(_conns, min_size=1, max_size=4))
def test_compiled_filter_agrees_with_reference(expr: Expr, upper: bool, conns: list[Conn]) -> None:
    text = _render(expr, upper)
    f = parse_filter(text)
    for conn in conns:
        assert f.matches(*conn) is (_eval(expr, conn) is True), (text, conn)
