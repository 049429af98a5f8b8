"""The OData subset Batch list operations accept: `$filter`, `$select`, paging.

Filters: comparisons (`eq ne gt ge lt le`) of a property path (`state`,
`executionInfo/result`) with a string, number, boolean or `datetime'...'`
literal; `startswith(prop, 'x')`; `and`, `or`, `not` and parentheses. Anything
else is rejected with Azure's InvalidQueryParameterValue.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from local_stack.batch_service.errors import invalid_query

Predicate = Callable[[dict], bool]
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_$][\w/.$]*))"
)
_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "ge": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "le": lambda a, b: a is not None and a <= b,
}


def _lookup(doc: dict, path: str) -> Any:
    value: Any = doc
    for part in path.split("/"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match:
                raise self.error(f"unexpected text at position {pos}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def error(self, reason: str):
        return invalid_query("$filter", self.text, reason)

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of filter")
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        if self.take()[1] != value:
            raise self.error(f"expected '{value}'")

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.peek() is not None:
            raise self.error(f"unexpected '{self.peek()[1]}'")
        return predicate

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while (token := self.peek()) and token[1].lower() == "or":
            self.take()
            right = self.and_expr()
            left = (lambda l, r: lambda d: l(d) or r(d))(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while (token := self.peek()) and token[1].lower() == "and":
            self.take()
            right = self.unary()
            left = (lambda l, r: lambda d: l(d) and r(d))(left, right)
        return left

    def unary(self) -> Predicate:
        token = self.peek()
        if token and token[1].lower() == "not":
            self.take()
            inner = self.unary()
            return lambda d: not inner(d)
        if token and token[1] == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        if token and token[1].lower() == "startswith":
            self.take()
            self.expect("(")
            kind, prop = self.take()
            if kind != "word":
                raise self.error("startswith needs a property name")
            self.expect(",")
            prefix = self.literal()
            self.expect(")")
            return lambda d: isinstance(_lookup(d, prop), str) and _lookup(d, prop).startswith(prefix)
        return self.comparison()

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "dt":
            return value[len("datetime'"):-1]
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "word" and value.lower() == "null":
            return None
        raise self.error(f"'{value}' is not a literal")

    def comparison(self) -> Predicate:
        kind, prop = self.take()
        if kind != "word":
            raise self.error(f"expected a property name, got '{prop}'")
        _, op = self.take()
        if op.lower() not in _OPS:
            raise self.error(f"unsupported operator '{op}'")
        compare = _OPS[op.lower()]
        literal = self.literal()
        return lambda d: compare(_lookup(d, prop), literal)


def parse_filter(text: str | None) -> Predicate:
    """A predicate over a resource's JSON document; everything matches when text is empty."""
    if not text or not text.strip():
        return lambda _doc: True
    return _Parser(text).parse()


def select(doc: dict, fields: str | None) -> dict:
    """Keep only the top-level properties named in `$select` (comma-separated)."""
    if not fields:
        return doc
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in doc.items() if k in wanted}
