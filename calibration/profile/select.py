"""Selecting profile entries by key with a pytest ``-k`` style expression: pure, no I/O.

``conv2d and not GROUPS=144``, ``stream or triad``, ``(matmul or linear) and float32``: each
name matches, case-insensitively, any entry whose key contains it; ``and``, ``or``, ``not``
and parentheses combine them as in ``pytest -k``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Predicate = Callable[[str], bool]

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
_KEYWORDS = ("and", "or", "not")


class FilterError(ValueError):
    """An expression that does not parse; the message names it and where it goes wrong."""


def parse_filter(expression: str) -> Predicate:
    """A predicate over entry keys; raises :class:`FilterError` for a malformed expression."""
    tokens = [(m.group(1), m.start(1)) for m in _TOKEN.finditer(expression)]
    if not tokens:
        raise FilterError(f"filter {expression!r} is empty; give a name such as conv2d, or 'matmul and not bf16'")
    position = 0

    def fail(expected: str) -> FilterError:
        where = f"at column {tokens[position][1] + 1} ({tokens[position][0]!r})" if position < len(tokens) \
            else "at the end"
        return FilterError(f"filter {expression!r}: expected {expected} {where}")

    def peek() -> str | None:
        return tokens[position][0] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1][0]

    def joined(word: str, operand: Callable[[], Predicate], combine: Callable) -> Predicate:
        """``operand (word operand)*``: 'or' over 'and' terms, 'and' over negations."""
        terms = [operand()]
        while peek() == word:
            take()
            terms.append(operand())
        return terms[0] if len(terms) == 1 else (lambda key: combine(term(key) for term in terms))

    def any_of() -> Predicate:
        return joined("or", all_of, any)

    def all_of() -> Predicate:
        return joined("and", negated, all)

    def negated() -> Predicate:
        token = peek()
        if token == "not":
            take()
            inner = negated()
            return lambda key: not inner(key)
        if token == "(":
            take()
            inner = any_of()
            if peek() != ")":
                raise fail("')'")
            take()
            return inner
        if token is None or token in _KEYWORDS or token == ")":
            raise fail("a name")
        name = take().lower()
        return lambda key: name in key.lower()

    predicate = any_of()
    if position != len(tokens):
        raise fail("'and', 'or' or the end")
    return predicate
