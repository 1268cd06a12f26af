"""ASP.NET Core route templates, as HTTP triggers use them (``products/{category:alpha}/{id:int?}``).

Supported: literal segments (matched case-insensitively), ``{name}``, optional ``{name?}``,
defaults ``{name=value}``, constraints ``{name:int}`` (several may be chained:
``{id:int:min(1)}``), catch-all ``{*rest}`` / ``{**rest}`` as the last segment, and complex
segments mixing literals and parameters (``{file}.{ext}``). Constraints: ``int``, ``long``,
``bool``, ``alpha``, ``guid``, ``decimal``, ``double``, ``float``, ``datetime``,
``min(n)``, ``max(n)``, ``range(a,b)``, ``minlength(n)``, ``maxlength(n)``, ``length(n)``,
``length(a,b)``, ``regex(expr)`` (without braces in ``expr``). An unknown constraint is an error,
as in ASP.NET.

When several templates match, the most specific wins (literals before parameters before catch-alls),
the same precedence ASP.NET uses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["RouteError", "RouteTemplate"]

_PARAM = re.compile(r"\{([^{}]*)\}")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_GUID = re.compile(r"\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?|\([0-9a-fA-F-]{36}\)")


class RouteError(ValueError):
    """A route template that cannot be parsed."""


def _int_in(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return low <= int(value) <= high
        except ValueError:
            return False

    return check


def _is_guid(value: str) -> bool:
    if not _GUID.fullmatch(value):
        return False
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _constraint(text: str) -> Callable[[str], bool]:
    name, _, arg = text.partition("(")
    name = name.strip().lower()
    if arg:
        if not arg.endswith(")"):
            raise RouteError(f"malformed constraint '{text}'")
        arg = arg[:-1]
    simple: dict[str, Callable[[str], bool]] = {
        "int": _int_in(*_INT32),
        "long": _int_in(*_INT64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: v.isascii() and v.isalpha(),
        "guid": _is_guid,
        "decimal": lambda v: bool(_NUMBER.fullmatch(v)),
        "double": lambda v: bool(_NUMBER.fullmatch(v)),
        "float": lambda v: bool(_NUMBER.fullmatch(v)),
        "datetime": _is_datetime,
    }
    if name in simple and not arg:
        return simple[name]
    try:
        if name == "regex":
            pattern = re.compile(arg, re.IGNORECASE)
            return lambda v: bool(pattern.search(v))
        numbers = [int(a) for a in arg.split(",")] if arg else []
    except (re.error, ValueError):
        raise RouteError(f"malformed constraint '{text}'") from None
    if name == "min" and len(numbers) == 1:
        return _int_in(numbers[0], _INT64[1])
    if name == "max" and len(numbers) == 1:
        return _int_in(_INT64[0], numbers[0])
    if name == "range" and len(numbers) == 2:
        return _int_in(numbers[0], numbers[1])
    if name == "minlength" and len(numbers) == 1:
        return lambda v: len(v) >= numbers[0]
    if name == "maxlength" and len(numbers) == 1:
        return lambda v: len(v) <= numbers[0]
    if name == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda v: low <= len(v) <= high
    raise RouteError(f"unknown route constraint '{text}'")


@dataclass
class _Param:
    name: str
    optional: bool = False
    default: str | None = None
    catch_all: bool = False
    checks: list[Callable[[str], bool]] = field(default_factory=list)

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


def _parse_param(text: str) -> _Param:
    body = text.strip()
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default: str | None = None
    if "=" in body:
        body, default = body.split("=", 1)
    optional = body.endswith("?")
    body = body.rstrip("?")
    # the first ':' separates the name; constraint arguments (regex) may contain ':' too
    name, *constraints = _split_constraints(body)
    if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise RouteError(f"invalid route parameter '{{{text}}}'")
    return _Param(name, optional, default, catch_all, [_constraint(c) for c in constraints])


def _split_constraints(body: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in body:
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    parts.append(current)
    return parts


@dataclass
class _Segment:
    literal: str | None = None  # a plain literal segment
    params: list[_Param] = field(default_factory=list)
    pattern: re.Pattern[str] | None = None  # complex segments and single parameters
    complex: bool = False  # literals and parameters mixed, or several parameters

    @property
    def optional(self) -> bool:
        return self.literal is None and all(p.optional or p.default is not None for p in self.params)

    @property
    def catch_all(self) -> bool:
        return any(p.catch_all for p in self.params)

    @property
    def rank(self) -> int:
        if self.literal is not None:
            return 0
        if self.complex:
            return 1
        param = self.params[0]
        if param.catch_all:
            return 5
        if param.optional or param.default is not None:
            return 4
        return 2 if param.checks else 3


def _parse_segment(text: str) -> _Segment:
    if "{" not in text and "}" not in text:
        if not text:
            raise RouteError("empty route segment ('//')")
        return _Segment(literal=text)
    params: list[_Param] = []
    regex = ""
    pos = 0
    for match in _PARAM.finditer(text):
        regex += re.escape(text[pos : match.start()])
        param = _parse_param(match.group(1))
        params.append(param)
        regex += "(.*)" if param.catch_all else "(.+)"  # greedy: '{file}.{ext}' splits at the last '.'

        pos = match.end()
    regex += re.escape(text[pos:])
    if "{" in _PARAM.sub("", text) or "}" in _PARAM.sub("", text):
        raise RouteError(f"unbalanced braces in route segment '{text}'")
    if len(params) > 1 and any(p.catch_all for p in params):
        raise RouteError(f"a catch-all parameter must be a segment of its own: '{text}'")
    complex_ = len(params) > 1 or bool(_PARAM.sub("", text))
    return _Segment(params=params, pattern=re.compile(regex, re.IGNORECASE | re.DOTALL), complex=complex_)


class RouteTemplate:
    """A parsed template; :meth:`match` gives the route values of a request path, or None."""

    def __init__(self, template: str) -> None:
        self.template = template
        text = template.strip().lstrip("~").strip("/")
        self.segments = [_parse_segment(s) for s in text.split("/")] if text else []
        for i, seg in enumerate(self.segments):
            if seg.catch_all and i != len(self.segments) - 1:
                raise RouteError(f"a catch-all parameter must be the last segment: '{template}'")
        names = [p.name.lower() for s in self.segments for p in s.params]
        if len(names) != len(set(names)):
            raise RouteError(f"a route parameter appears twice in '{template}'")

    @property
    def precedence(self) -> tuple[int, ...]:
        """Sort key: smaller is more specific."""
        return (*(s.rank for s in self.segments), 9)

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        values: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.catch_all:
                param = seg.params[0]
                rest = "/".join(segments[i:])
                if rest or param.default is not None:
                    value = rest or (param.default or "")
                    if not param.accepts(value):
                        return None
                    values[param.name] = value
                return values
            if i >= len(segments):
                if all(s.optional for s in self.segments[i:]):
                    for s in self.segments[i:]:
                        for p in s.params:
                            if p.default is not None:
                                values[p.name] = p.default
                    return values
                return None
            got = segments[i]
            if seg.literal is not None:
                if got.lower() != seg.literal.lower():
                    return None
                continue
            assert seg.pattern is not None
            found = seg.pattern.fullmatch(got)
            if found is None:
                return None
            for param, value in zip(seg.params, found.groups(), strict=True):
                if not param.accepts(value):
                    return None
                values[param.name] = value
        return values if len(segments) == len(self.segments) else None
