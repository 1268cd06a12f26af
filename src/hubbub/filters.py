"""The OData ``filter`` of REST sends and ``:addToGroups``/``:removeFromGroups``.

``parse_filter(text)`` tokenizes, parses (recursive descent), type-checks and compiles
a filter into nested closures, so :meth:`Filter.matches` -- run once per connection
during a filtered broadcast -- does no parsing and no tree walking.

Grammar (the service's ``filter.ebnf``, read leniently)::

    expr    := and ('or' and)*
    and     := cmp ('and' cmp)*
    cmp     := unary [('eq'|'ne'|'gt'|'ge'|'lt'|'le') unary | 'in' (list | unary)]
    unary   := 'not' unary | primary
    primary := literal | identifier | function '(' [expr (',' expr)*] ')' | '(' expr ')'
    list    := '(' expr (',' expr)* ')'   -- a single collection element means "in that collection"

Precedence, high to low: ``not``; comparisons and ``in`` (not chainable); ``and``; ``or``.
So ``not length(userId) gt 5`` is a type error; write ``not (length(userId) gt 5)``.

Types: ``string`` (``userId`` may be null), ``int``, ``bool``, ``null``, ``collection``
(``groups``). ``eq``/``ne`` need equal types or a ``null`` side; ``gt ge lt le`` need
two strings or two ints (a null side makes them false); ``in`` takes a list of values
of the left side's type or a collection (then the left side must be a string).

Evaluation: functions of a null argument are null; ``eq``/``ne`` treat null as a value
(``userId eq null`` is true for a connection without user); where a bool is needed
(``and or not``, the whole filter) null counts as false; ``substring`` clamps its
arguments; ``indexof`` is -1 when absent. String comparison is ordinal.

Leniency: identifiers, keywords, function names and ``true false null`` are
case-insensitive; ``substring`` accepts int expressions; ``in`` lists accept any
expressions of the right type.

Errors are :class:`~hubbub.errors.InvalidFilter`: syntax errors carry the 0-based
character position and an excerpt, type errors the offending sub-expression, both in
the service's style and ending with ``(Parameter 'filter')``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from hubbub.errors import InvalidFilter

__all__ = ["MAX_CLAUSES", "MAX_DEPTH", "MAX_FILTER_LENGTH", "Filter", "parse_filter"]

MAX_FILTER_LENGTH: Final = 4096
"""Longest accepted filter, in characters."""
MAX_CLAUSES: Final = 100
"""Most comparisons, ``in`` tests and boolean function calls in one filter."""
MAX_DEPTH: Final = 64
"""Deepest nesting of parentheses, function calls and ``not``."""

_SUFFIX = " (Parameter 'filter')"
_NO: Any = object()  # "no constant value" / "argument absent"
_DIGITS = "0123456789"
_INT64 = 2**63
_Fn = Callable[[str | None, str, Collection[str]], Any]
_Pred = Callable[[str | None, str, Collection[str]], bool]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    op: getattr(operator, op) for op in ("eq", "ne", "gt", "ge", "lt", "le")
}
_OPERATORS = frozenset({"and", "or", "not", "in", *_COMPARE})
_IDENTS = {"userid": "string", "connectionid": "string", "groups": "collection"}
_STR = ("string",)
# name -> (parameter types per position, minimum arity, result type)
_FUNCS: dict[str, tuple[tuple[tuple[str, ...], ...], int, str]] = {
    "tolower": ((_STR,), 1, "string"),
    "toupper": ((_STR,), 1, "string"),
    "trim": ((_STR,), 1, "string"),
    "substring": ((_STR, ("int",), ("int",)), 2, "string"),
    "concat": ((_STR, _STR), 2, "string"),
    "indexof": ((_STR, _STR), 2, "int"),
    "length": ((("string", "collection"),), 1, "int"),
    "startswith": ((_STR, _STR), 2, "bool"),
    "endswith": ((_STR, _STR), 2, "bool"),
    "contains": ((_STR, _STR), 2, "bool"),
}


def _substring(s: str | None, start: int | None, n: Any = _NO) -> str | None:
    """OData substring, clamped instead of raising: negative start 0, negative length 0."""
    if s is None or start is None or n is None:
        return None
    start = max(start, 0)
    return s[start:] if n is _NO else s[start : start + max(n, 0)]


# The functions on non-null arguments; null handling is compiled around them.
_METHODS: dict[str, Callable[..., Any]] = {
    "tolower": str.lower,
    "toupper": str.upper,
    "trim": str.strip,
    "length": len,
    "concat": operator.add,
    "indexof": str.find,
    "startswith": str.startswith,
    "endswith": str.endswith,
    "contains": operator.contains,
}


@dataclass(slots=True, eq=False)
class _Node:
    kind: str  # lit id call not and or cmp in inlist
    start: int
    end: int
    args: list[_Node] = field(default_factory=list)
    value: Any = None  # literal value, identifier/function name (lower case) or operator
    type: str = ""  # set by _check
    nullable: bool = False  # may evaluate to None
    const: bool = False  # does not depend on the connection


@dataclass(slots=True)
class _Token:
    kind: str  # word str int ( ) , eof
    value: Any
    start: int
    end: int


def _syntax_error(text: str, pos: int, what: str) -> NoReturn:
    near = f'near "{text[pos : pos + 20]}"' if pos < len(text) else "(end of input)"
    raise InvalidFilter(f"Invalid syntax at position {pos} {near}: {what}.{_SUFFIX}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(_Token(ch, ch, i, i + 1))
            i += 1
        elif ch == "'":
            j, parts = i + 1, []
            while True:
                k = text.find("'", j)
                if k < 0:
                    _syntax_error(text, i, "unterminated string literal")
                parts.append(text[j:k])
                if text.startswith("'", k + 1):
                    parts.append("'")
                    j = k + 2
                else:
                    break
            tokens.append(_Token("str", "".join(parts), i, k + 1))
            i = k + 1
        elif ch in _DIGITS or (ch in "+-" and i + 1 < n and text[i + 1] in _DIGITS):
            j = i + 1
            while j < n and text[j] in _DIGITS:
                j += 1
            digits = text[i:j].lstrip("+-").lstrip("0")
            value = int(text[i:j]) if len(digits) <= 19 else _INT64
            if not -_INT64 <= value < _INT64:
                _syntax_error(text, i, "integer literal out of range")
            tokens.append(_Token("int", value, i, j))
            i = j
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            tokens.append(_Token("word", text[i:j].lower(), i, j))
            i = j
        else:
            _syntax_error(text, i, f"unexpected character {ch!r}")
    tokens.append(_Token("eof", None, n, n))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0
        self.clauses = 0

    def error(self, what: str, tok: _Token | None = None) -> NoReturn:
        _syntax_error(self.text, (tok or self.tokens[self.pos]).start, what)

    def peek_word(self) -> str | None:
        tok = self.tokens[self.pos]
        return str(tok.value) if tok.kind == "word" else None

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, kind: str) -> _Token:
        if self.tokens[self.pos].kind != kind:
            self.error(f"expected '{kind}'")
        return self.take()

    @property
    def last_end(self) -> int:
        return self.tokens[self.pos - 1].end

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.error(f"expression nested deeper than {MAX_DEPTH} levels", tok)

    def clause(self, tok: _Token) -> None:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            self.error(f"filter has more than {MAX_CLAUSES} clauses", tok)

    def parse(self) -> _Node:
        node = self.parse_expr()
        if self.tokens[self.pos].kind != "eof":
            self.error("expected an operator or end of input")
        return node

    def parse_expr(self, op: str = "or") -> _Node:
        """``or`` of ``and`` of comparisons, each as one n-ary node (no deep trees)."""
        items = [self.parse_expr("and") if op == "or" else self.parse_cmp()]
        while self.peek_word() == op:
            self.take()
            items.append(self.parse_expr("and") if op == "or" else self.parse_cmp())
        return items[0] if len(items) == 1 else _Node(op, items[0].start, self.last_end, items)

    def parse_cmp(self) -> _Node:
        left = self.parse_unary()
        op = self.peek_word()
        if op in _COMPARE:
            self.clause(self.take())
            node = _Node("cmp", left.start, 0, [left, self.parse_unary()], op)
        elif op == "in":
            self.clause(self.take())
            if self.tokens[self.pos].kind == "(":
                node = _Node("inlist", left.start, 0, [left, *self.parse_args()])
            else:
                node = _Node("in", left.start, 0, [left, self.parse_unary()])
        else:
            return left
        node.end = self.last_end
        nxt = self.peek_word()
        if nxt in _COMPARE or nxt == "in":
            self.error("comparisons cannot be chained; add parentheses")
        return node

    def parse_unary(self) -> _Node:
        if self.peek_word() == "not":
            tok = self.take()
            self.enter(tok)
            arg = self.parse_unary()
            self.depth -= 1
            return _Node("not", tok.start, self.last_end, [arg])
        return self.parse_primary()

    def parse_args(self) -> list[_Node]:
        """``'(' expr (',' expr)* ')'``; the type check verifies the count."""
        self.enter(self.expect("("))
        args = [self.parse_expr()]
        while self.tokens[self.pos].kind == ",":
            self.take()
            args.append(self.parse_expr())
        if self.tokens[self.pos].kind != ")":
            self.error("expected ',' or ')'")
        self.take()
        self.depth -= 1
        return args

    def parse_primary(self) -> _Node:
        tok = self.tokens[self.pos]
        if tok.kind == "(":
            self.enter(self.take())
            node = self.parse_expr()
            self.expect(")")
            self.depth -= 1
            return node
        if tok.kind in ("str", "int"):
            self.take()
            kind = "string" if tok.kind == "str" else "int"
            return _Node("lit", tok.start, tok.end, value=tok.value, type=kind)
        if tok.kind != "word" or tok.value in _OPERATORS:
            self.error("expected an expression")
        name: str = tok.value
        is_call = self.tokens[self.pos + 1].kind == "("
        if name in ("true", "false", "null"):
            self.take()
            value = {"true": True, "false": False, "null": None}[name]
            return _Node("lit", tok.start, tok.end, value=value, type="null" if value is None else "bool")
        if name in _IDENTS and not is_call:
            self.take()
            return _Node("id", tok.start, tok.end, value=name)
        if name in _FUNCS:
            if not is_call:
                self.error(f"expected '(' after function '{name}'", self.tokens[self.pos + 1])
            self.take()
            if _FUNCS[name][2] == "bool":
                self.clause(tok)
            node = _Node("call", tok.start, 0, value=name)
            node.args = self.parse_args()
            node.end = self.last_end
            return node
        spelled = self.text[tok.start : tok.end]
        self.error(f"unknown function '{spelled}'" if is_call else f"unknown identifier '{spelled}'")


class _Checker:
    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, node: _Node, detail: str) -> NoReturn:
        excerpt = self.text[node.start : node.end]
        if len(excerpt) > 80:
            excerpt = excerpt[:77] + "..."
        raise InvalidFilter(f"Invalid syntax for '{excerpt}': {detail}.{_SUFFIX}")

    def want_bool(self, node: _Node, where: _Node) -> None:
        if node.type != "bool":  # like the service, a maybe-null expression shows as 'null'
            self.fail(where, f"Type '{'null' if node.nullable else node.type}', expect 'bool'")

    def want_value(self, left: _Node, right: _Node, where: _Node, ordering: bool) -> None:
        allowed = ("string", "int", "null") if ordering else ("string", "int", "bool", "null")
        for side in (left, right):
            if side.type not in allowed:
                self.fail(where, f"Type '{side.type}', expect {' or '.join(repr(a) for a in allowed)}")
        if "null" not in (left.type, right.type) and left.type != right.type:
            self.fail(where, f"Type '{right.type}', expect '{left.type}'")

    def check(self, node: _Node) -> None:
        for arg in node.args:
            self.check(arg)
        args, kind = node.args, node.kind
        node.const = kind == "lit" or (kind != "id" and all(a.const for a in args))
        if kind == "lit":
            node.nullable = node.value is None
        elif kind == "id":
            node.type = _IDENTS[node.value]
            node.nullable = node.value == "userid"
        elif kind in ("not", "and", "or"):
            for arg in args:
                self.want_bool(arg, node if kind == "not" else arg)
            node.type = "bool"
        elif kind == "cmp":
            self.want_value(args[0], args[1], node, node.value not in ("eq", "ne"))
            node.type = "bool"
        elif kind == "inlist":
            if len(args) == 2 and args[1].type == "collection":
                node.kind, kind = "in", "in"
            else:
                for item in args[1:]:
                    self.want_value(args[0], item, node, False)
        if kind == "in":
            if args[0].type not in ("string", "null"):
                self.fail(node, f"Type '{args[0].type}', expect 'string'")
            if args[1].type != "collection":
                self.fail(node, f"Type '{args[1].type}', expect 'collection' or a parenthesized list")
        if kind in ("in", "inlist"):
            node.type = "bool"
        elif kind == "call":
            params, least, node.type = _FUNCS[node.value]
            if not least <= len(args) <= len(params):
                count = str(least) if least == len(params) else f"{least} or {len(params)}"
                self.fail(node, f"Function '{node.value}' takes {count} argument(s), got {len(args)}")
            for arg, want in zip(args, params, strict=False):
                if arg.type not in (*want, "null"):
                    self.fail(node, f"Type '{arg.type}', expect '{want[0]}'")
            node.nullable = any(a.nullable for a in args)


def _compile(node: _Node, pred: bool) -> tuple[_Fn, Any]:
    """Closure for ``node`` and its constant value (``_NO`` if it depends on the connection).

    ``pred``: the value is used as a bool, so a null result may be returned as False.
    """
    if node.const:
        value = node.value if node.kind == "lit" else _build(node, pred)(None, "", ())
        if pred and value is None:
            value = False
        return (lambda u, c, g: value), value
    return _build(node, pred), _NO


def _build(node: _Node, pred: bool) -> _Fn:
    kind, args = node.kind, node.args
    if kind == "id":
        if node.value == "userid":
            return lambda u, c, g: u
        return (lambda u, c, g: c) if node.value == "connectionid" else (lambda u, c, g: g)
    subs = [_compile(a, kind in ("not", "and", "or")) for a in args]
    fns = [s[0] for s in subs]
    if kind == "not":
        f = fns[0]
        return lambda u, c, g: not f(u, c, g)
    if kind in ("and", "or"):
        if len(fns) == 2:
            a, b = fns
            if kind == "and":
                return lambda u, c, g: a(u, c, g) and b(u, c, g)
            return lambda u, c, g: a(u, c, g) or b(u, c, g)
        combine = all if kind == "and" else any
        return lambda u, c, g: combine(f(u, c, g) for f in fns)
    if kind == "cmp":
        (a, ka), (b, kb) = subs
        if node.value in ("eq", "ne"):
            if ka is not _NO:  # constant on the left: compare the other way round
                (a, ka), (b, kb), args = (b, kb), (a, ka), args[::-1]
            if args[0].kind == "id" and kb is not _NO:
                eq = node.value == "eq"
                if args[0].value == "userid":
                    return (lambda u, c, g: u == kb) if eq else (lambda u, c, g: u != kb)
                return (lambda u, c, g: c == kb) if eq else (lambda u, c, g: c != kb)
        op = _COMPARE[node.value]
        if node.value in ("eq", "ne") or not any(x.nullable for x in args):
            return lambda u, c, g: op(a(u, c, g), b(u, c, g))

        def ordered(u: str | None, c: str, g: Collection[str]) -> bool:
            x = a(u, c, g)
            if x is None:
                return False
            y = b(u, c, g)
            return y is not None and op(x, y)

        return ordered
    if kind == "inlist":
        left = fns[0]
        if any(k is _NO for _, k in subs[1:]):
            items = fns[1:]
            return lambda u, c, g: left(u, c, g) in [f(u, c, g) for f in items]
        members = frozenset(k for _, k in subs[1:])
        if args[0].kind == "id" and args[0].value == "userid":
            return lambda u, c, g: u in members
        return lambda u, c, g: left(u, c, g) in members
    if kind == "in":  # the collection is always ``groups``
        (left, key) = subs[0]
        return (lambda u, c, g: left(u, c, g) in g) if key is _NO else (lambda u, c, g: key in g)
    if node.value == "substring":
        return lambda u, c, g: _substring(*[f(u, c, g) for f in fns])
    return _call(_METHODS[node.value], subs, [a.nullable for a in args], False if pred else None)


def _call(m: Callable[..., Any], subs: list[tuple[_Fn, Any]], nullable: list[bool], null: Any) -> _Fn:
    """``m`` applied to one or two arguments, giving ``null`` when one is null."""
    if len(subs) == 1:
        f = subs[0][0]
        if not nullable[0]:
            return lambda u, c, g: m(f(u, c, g))

        def unary(u: str | None, c: str, g: Collection[str]) -> Any:
            x = f(u, c, g)
            return null if x is None else m(x)

        return unary
    (a, _), (b, k) = subs
    if k is not None and k is not _NO:  # a constant second argument
        if not nullable[0]:
            return lambda u, c, g: m(a(u, c, g), k)

        def with_constant(u: str | None, c: str, g: Collection[str]) -> Any:
            x = a(u, c, g)
            return null if x is None else m(x, k)

        return with_constant
    if not any(nullable):
        return lambda u, c, g: m(a(u, c, g), b(u, c, g))

    def binary(u: str | None, c: str, g: Collection[str]) -> Any:
        x = a(u, c, g)
        y = b(u, c, g)
        return null if x is None or y is None else m(x, y)

    return binary


class Filter:
    """A parsed, type-checked, compiled filter. Build with :func:`parse_filter`."""

    __slots__ = ("_fn", "text")

    def __init__(self, text: str, fn: _Pred) -> None:
        self.text = text
        self._fn = fn

    def matches(self, user_id: str | None, connection_id: str, groups: Collection[str]) -> bool:
        """Whether a connection with these properties satisfies the filter. Never raises."""
        return self._fn(user_id, connection_id, groups)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def parse_filter(text: str) -> Filter:
    """Parse ``text``; raise :class:`InvalidFilter` saying where and why it is invalid.

    Results are cached (a few hundred distinct filters): the REST layer validates a
    filter and the fan-out parses it again, and apps tend to reuse the same filters.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(
            f"Invalid syntax: the filter is longer than {MAX_FILTER_LENGTH} characters.{_SUFFIX}"
        )
    return _parse_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Filter:
    root = _Parser(text).parse()
    checker = _Checker(text)
    checker.check(root)
    checker.want_bool(root, root)
    fn: _Pred = _compile(root, True)[0]
    return Filter(text, fn)
