"""Typed knobs: dataclass fields that carry their help string and the rules one generic check applies.

Every typed config (a method's knobs, a regularizer's, the run-level groups in ``peftbench.run_config``) is a
``Knobs`` dataclass whose fields are ``knob(default, help=..., gt=0, choices=...)``: a bad value stops with
one line, ``<key>=<value>: <what is allowed>``, before anything loads. Unknown keys and wrong types are
``peftbench.config.dataclass_from_cfg``'s part of the same check.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from peftbench.errors import ConfigError

# The bound rules a knob may declare, and how each reads in an error (the interval's bracket).
BOUNDS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "gt": (operator.gt, "("),
    "ge": (operator.ge, "["),
    "lt": (operator.lt, ")"),
    "le": (operator.le, "]"),
}
SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def knob(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002  (peft's and argparse's name for it)
    default_factory: Any = dataclasses.MISSING,
    choices: Sequence[Any] | None = None,
    **bounds: float,
) -> Any:
    """A knob's dataclass field: ``field(default, metadata={"help": ..., <rules>})``.

    Rules: ``gt``/``ge``/``lt``/``le`` bounds for numbers, ``choices`` for values a type cannot list
    (a ``Literal`` annotation lists fixed ones and is checked with the type). No default: required.
    """
    unknown = sorted(set(bounds) - set(BOUNDS))
    if unknown:
        raise TypeError(f"knob(): unknown rule(s) {unknown}; allowed: {', '.join(BOUNDS)}, choices")
    metadata: dict[str, Any] = {"help": help, **bounds}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def integer_annotation(annotation: Any) -> bool:
    """``int`` or ``int | None``: the error then asks for an integer rather than a number."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(arg in (int, type(None)) for arg in typing.get_args(annotation))
    return annotation is int


def check_value(path: str, value: Any, rules: Mapping[str, Any], integer: bool = False) -> None:
    """Raise ``<path>=<value>: <what is allowed>`` when ``value`` breaks a rule of ``rules`` (a knob's metadata).

    None always passes: it is an optional knob left unset, and whether None is allowed at all is the type's
    question (``dataclass_from_cfg``), not a rule's.
    """
    if value is None:
        return
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}={value!r}: allowed {', '.join(str(c) for c in choices)}")
    bounds = {rule: rules[rule] for rule in BOUNDS if rule in rules}
    if not bounds:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        number = number and isinstance(value, int)
    if not number or not all(BOUNDS[rule][0](value, bound) for rule, bound in bounds.items()):
        noun = "an integer" if integer else "a number"
        raise ConfigError(f"{path}={value!r}: expected {noun} {describe_bounds(bounds)}")


def describe_bounds(bounds: Mapping[str, float]) -> str:
    """``in (0, 1]`` for two bounds, ``> 0`` for one."""
    lower = next(((rule, bounds[rule]) for rule in ("gt", "ge") if rule in bounds), None)
    upper = next(((rule, bounds[rule]) for rule in ("lt", "le") if rule in bounds), None)
    if lower and upper:
        return f"in {BOUNDS[lower[0]][1]}{lower[1]:g}, {upper[1]:g}{BOUNDS[upper[0]][1]}"
    rule, bound = lower or upper  # type: ignore[misc]
    return f"{SYMBOLS[rule]} {bound:g}"


@functools.cache
def _annotations(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass
class Knobs:
    """Base of every knob dataclass: ``__post_init__`` applies each field's rules (see ``knob``).

    Subclasses with cross-field checks extend ``__post_init__`` and call this one first.
    """

    PREFIX: ClassVar[str] = ""  # the config key the knobs live under, named in every error

    def __post_init__(self) -> None:
        hints = _annotations(type(self))
        for spec in dataclasses.fields(self):
            path = f"{self.PREFIX}.{spec.name}" if self.PREFIX else spec.name
            check_value(path, getattr(self, spec.name), spec.metadata, integer_annotation(hints[spec.name]))
