"""CloudWatch metric math for alarms, parsed (never ``eval``-ed), one period's values at a time.

Follows "Using metric math" (CloudWatch User Guide): arithmetic ``+ - * /`` and parentheses, numbers,
query ids, comparisons ``== != < <= > >=``, logical ``AND``/``&&``, ``OR``/``||``, ``NOT``/``!``, and the
functions ``ABS(x)``, ``FILL(x, value)`` and ``IF(condition, then[, else])``. A query with no datapoint in a
period is missing (``None``); an operation on a missing value is missing, FILL replaces it, and a division by
zero has no datapoint. FILL fills the gaps of a series that has datapoints in the evaluated range; given that
range, a series with none in it stays empty (see :func:`evaluate`). ``IF`` without ``else`` has no datapoint
where the condition is false; a condition is true when it is not zero.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/()<>,!])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
FUNCTIONS = {"ABS": (1, 1), "FILL": (2, 2), "IF": (2, 3)}


class MetricMathError(ValueError):
    """An expression the local cloud cannot parse (CloudWatch would refuse it at PutMetricAlarm)."""


@dataclass(frozen=True)
class Node:
    kind: str  # "num", "id", "unary", "binary", "call"
    value: Any = None
    args: tuple[Node, ...] = ()


def tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise MetricMathError(f"unexpected {text[pos : pos + 10]!r} in metric math {text!r}")
        tokens.append(match.group("num") or match.group("op") or match.group("name"))
        pos = match.end()
    return tokens


class _Parser:
    """Precedence, lowest first: OR, AND, NOT, comparison, + -, * /, unary minus."""

    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, tokenize(text), 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise MetricMathError(f"expected {expected or 'more'} in metric math {self.text!r}")
        self.i += 1
        return token

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise MetricMathError(f"unexpected {self.peek()!r} in metric math {self.text!r}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while (self.peek() or "").upper() in ("OR", "||"):
            self.take()
            node = Node("binary", "OR", (node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.not_()
        while (self.peek() or "").upper() in ("AND", "&&"):
            self.take()
            node = Node("binary", "AND", (node, self.not_()))
        return node

    def not_(self) -> Node:
        if (self.peek() or "").upper() in ("NOT", "!"):
            self.take()
            return Node("unary", "NOT", (self.not_(),))
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        while self.peek() in _COMPARISONS:
            op = self.take()
            node = Node("binary", op, (node, self.additive()))
        return node

    def additive(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = Node("binary", op, (node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = Node("binary", op, (node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.peek() == "-":
            self.take()
            return Node("unary", "-", (self.unary(),))
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.atom()

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            node = self.or_()
            self.take(")")
            return node
        if token[0].isdigit() or token[0] == ".":
            return Node("num", float(token))
        if token[0].isalpha() or token[0] == "_":
            if self.peek() == "(":
                name = token.upper()
                if name not in FUNCTIONS:
                    raise MetricMathError(f"function {token} is not supported by the local cloud ({self.text!r})")
                self.take("(")
                args = [self.or_()]
                while self.peek() == ",":
                    self.take(",")
                    args.append(self.or_())
                self.take(")")
                low, high = FUNCTIONS[name]
                if not low <= len(args) <= high:
                    raise MetricMathError(f"{name} takes {low} to {high} arguments ({self.text!r})")
                return Node("call", name, tuple(args))
            return Node("id", token)
        raise MetricMathError(f"unexpected {token!r} in metric math {self.text!r}")


def parse(text: str) -> Node:
    """The expression's syntax tree; MetricMathError if it is not metric math the local cloud knows."""
    return _Parser(text).parse()


def ids(node: Node) -> set[str]:
    """The query ids an expression reads."""
    if node.kind == "id":
        return {node.value}
    return set().union(*(ids(a) for a in node.args)) if node.args else set()


def evaluate(
    node: Node, values: dict[str, float | None], evaluated_range: Sequence[dict[str, float | None]] = ()
) -> float | None:
    """The expression's value for one period; ``values`` maps query ids to their datapoint (or None).

    ``evaluated_range`` is every period of the range being evaluated (``values`` among them). Given it, FILL of
    a series with no datapoint anywhere in the range gives none: "Metric math syntax and functions"
    (CloudWatch User Guide) describes FILL as filling *missing values* of a time series, and does not say
    that it makes values for a series that has no datapoint in the queried range at all; the strict reading
    is taken, so the local cloud is never kinder than CloudWatch (an alarm over such a series sees missing
    data, not the fill value). Arithmetic with an empty series is empty either way."""
    kind = node.kind
    if kind == "num":
        return float(node.value)
    if kind == "id":
        if node.value not in values:
            raise MetricMathError(f"unknown id {node.value!r} in metric math")
        return values[node.value]
    if kind == "call":
        name = node.value
        if name == "FILL":
            value = evaluate(node.args[0], values, evaluated_range)
            if value is not None:
                return value
            if evaluated_range and all(evaluate(node.args[0], v, evaluated_range) is None for v in evaluated_range):
                return None  # an all-empty series stays empty (the strict reading above)
            return evaluate(node.args[1], values, evaluated_range)
        if name == "ABS":
            value = evaluate(node.args[0], values, evaluated_range)
            return None if value is None else abs(value)
        condition = evaluate(node.args[0], values, evaluated_range)  # IF
        if condition is None:
            return None
        if condition != 0:
            return evaluate(node.args[1], values, evaluated_range)
        return evaluate(node.args[2], values, evaluated_range) if len(node.args) == 3 else None
    if kind == "unary":
        value = evaluate(node.args[0], values, evaluated_range)
        if value is None:
            return None
        return -value if node.value == "-" else float(value == 0)
    left, right = evaluate(node.args[0], values, evaluated_range), evaluate(node.args[1], values, evaluated_range)
    if left is None or right is None:
        return None
    op = node.value
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return None if right == 0 else left / right
    if op == "AND":
        return float(left != 0 and right != 0)
    if op == "OR":
        return float(left != 0 or right != 0)
    return float(
        {
            "==": left == right,
            "!=": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[op]
    )
