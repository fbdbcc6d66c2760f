"""Which parameter values an operation or pattern accepts, read from its own shape grid.

A query (``get_efficiency("matmul", pth="mkldnn", ...)``) or a profile entry that names a
parameter the registry does not know, or gives one a value of another kind, would otherwise
be ignored or crash a FLOP model later. The allowed values are not written out a second
time: an integer parameter takes integers from the smallest value its grid uses (0 for a
padding, else 1), a string or flag parameter takes the values its full grid uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

from calibration.specs.keys import ParamValue


class UnknownParameter(TypeError):
    """A parameter name the operation or pattern does not have (like an unexpected keyword)."""


class InvalidParameter(ValueError):
    """A parameter value of the wrong kind or out of range."""


@dataclass(frozen=True)
class Domain:
    kind: type  # int, str or bool
    minimum: int = 1
    choices: tuple[ParamValue, ...] = ()

    def allowed(self) -> str:
        if self.kind is int:
            return f"an integer >= {self.minimum}"
        return ", ".join(repr(choice) for choice in self.choices)

    def accepts(self, value: object) -> bool:
        if self.kind is int:
            # bool is an int subclass; True is not a size
            return isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum
        return value in self.choices and type(value) is self.kind


def domains(grid: Iterable[Mapping[str, ParamValue]]) -> dict[str, Domain]:
    """Each parameter's domain from every parameter set of a full grid, in grid order."""
    values: dict[str, list[ParamValue]] = {}
    for params in grid:
        for name, value in params.items():
            values.setdefault(name, []).append(value)
    out = {}
    for name, seen in values.items():
        kind = type(seen[0])
        if kind is int:
            out[name] = Domain(int, minimum=0 if 0 in seen else 1)
        else:
            out[name] = Domain(kind, choices=tuple(dict.fromkeys(seen)))
    return out


def check(owner: str, params: Mapping[str, object], allowed: Mapping[str, Domain], *, complete: bool,
          where: str = "", optional: Mapping[str, Domain] | None = None) -> None:
    """Raise UnknownParameter or InvalidParameter naming the parameter, its value and what is allowed.

    ``complete``: every parameter must be given (a profile entry), not only some (a query).
    ``where`` prefixes the names (``params.``) where they sit inside a larger structure.
    ``optional``: parameters that may be given, never required (a conv's non-square kernel).
    """
    known = {**allowed, **(optional or {})}
    for name, value in params.items():
        if name not in known:
            raise UnknownParameter(
                f"Invalid parameter '{where}{name}' for {owner}; allowed: {', '.join(known)}")
        domain = known[name]
        if not domain.accepts(value):
            shown = value if isinstance(value, float) and not math.isfinite(value) else repr(value)
            raise InvalidParameter(f"Invalid {where}{name} {shown} for {owner}; allowed: {domain.allowed()}")
    if complete:
        missing = [name for name in allowed if name not in params]
        if missing:
            raise InvalidParameter(f"{owner} is missing parameter{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(where + name for name in missing)}")


class Checked:
    """What an operation or a pattern (a registry item with a ``name`` and ``shapes(quick)``)
    answers about parameters: their domains, and a check of given values."""

    name: str
    shapes: Callable[[bool], tuple[Mapping[str, ParamValue], ...]]
    optional: Mapping[str, Domain] = MappingProxyType({})  # parameters a shape may add to the grid's

    @cached_property
    def domains(self) -> dict[str, Domain]:
        return domains(self.shapes(False))

    def check(self, values: Mapping[str, object], *, complete: bool = False, where: str = "") -> None:
        """Raise UnknownParameter (a TypeError) or InvalidParameter (a ValueError) for a
        parameter this item does not have or a value it does not take."""
        check(self.name, values, self.domains, complete=complete, where=where, optional=self.optional)
