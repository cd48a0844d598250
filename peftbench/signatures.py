"""Arguments checked against the signature that will receive them, before anything is built.

Several config groups are entries that name a class (``_target_``) and hand it the other keys: the trainer
(``lightning.pytorch.Trainer``), every callback and logger, the optimizer. Those classes take most arguments as
given and use them later, mid-run (a CSV logger's ``flush_logs_every_n_steps=0`` divides by zero at its first
log) or never (``trainer.deterministic=maybe`` trains without complaint). One mechanism serves them all:

* every key must be a parameter of the class (a ``**kwargs`` pass-through is followed to the base class that
  receives it, as ``SelectedCheckpoint`` hands everything to Lightning's ``ModelCheckpoint``);
* every value must have the parameter's annotated type (``Literal`` choices are listed, fixed-length tuples
  such as AdamW's ``betas`` are checked element by element);
* count arguments respect their documented floor (``ARGUMENT_FLOORS``);
* when the class's own constructor refuses a value, ``blame`` finds the key its message is about, so the line
  still reads ``<key>=<value>: <what the class said>``.

Only what the signature states is checked; values a class judges for itself (an accelerator name) are left to
its constructor, whose refusal goes through ``refusal``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from peftbench.config import _check_type
from peftbench.config import describe_type as describe
from peftbench.errors import ConfigError

# Lower bounds that Lightning's and torch's classes document but check only when the value is first used
# (mid-run) or never; applied to an argument of that name in any class checked here. Lightning's -1 sentinels
# (max_steps, max_epochs, num_sanity_val_steps) are not counts in this sense and are left to TrainerKnobs.
ARGUMENT_FLOORS: dict[str, int] = {
    "flush_logs_every_n_steps": 1,  # CSVLogger: `(step + 1) % n` at every log
    "log_every_n_steps": 1,  # Trainer
    "refresh_rate": 0,  # progress bars: 0 disables
    "every_n_train_steps": 0,  # ModelCheckpoint: 0 disables
    "every_n_epochs": 0,
    "limit_train_batches": 0,  # Trainer: a fraction in [0, 1] or a batch count
    "limit_val_batches": 0,
    "limit_test_batches": 0,
    "limit_predict_batches": 0,
    "patience": 0,  # EarlyStopping
    "max_queue": 1,  # TensorBoard's event writer
    "flush_secs": 1,
}


def parameters_of(target: Callable[..., Any]) -> dict[str, Any] | None:
    """Parameter name -> annotation (``Any`` where unknown) of a class's constructor or a function.

    A ``**kwargs`` is followed up the class's bases (the next base with a constructor of its own receives it);
    where it leads nowhere visible, None: the keys cannot be listed and the class judges them. A class with no
    constructor of its own anywhere below ``object`` takes no arguments.
    """
    if not isinstance(target, type):
        own = _annotated(target)
        return None if own is None or own.pop("**", False) else own
    parameters: dict[str, Any] = {}
    for owner in target.__mro__:
        if owner is object:
            break
        if "__init__" not in owner.__dict__:
            continue
        own = _annotated(owner.__dict__["__init__"])
        if own is None:
            return None
        open_ended = own.pop("**", False)
        parameters = {**own, **parameters}
        if not open_ended:
            return parameters
    opened = any("__init__" in owner.__dict__ for owner in target.__mro__[:-1])
    return None if opened else {}  # a **kwargs that reaches object goes somewhere we cannot see


def own_parameters(function: Callable[..., Any]) -> dict[str, Any]:
    """The named parameters of one function, annotated, without following its ``**kwargs`` anywhere."""
    own = _annotated(function) or {}
    own.pop("**", None)
    return own


def _annotated(function: Any) -> dict[str, Any] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001  (forward references to types only imported for checkers)
        hints = {}
    parameters: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            parameters["**"] = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and parameter.name != "self":
            annotation = hints.get(parameter.name, parameter.annotation)
            parameters[parameter.name] = Any if isinstance(annotation, str) else annotation
    return parameters


def check_arguments(
    prefix: str,
    values: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    receivers: str,
    skip: tuple[str, ...] = (),
) -> None:
    """Each ``prefix.key=value`` against ``parameters`` (from ``parameters_of``); ``skip``: keys filled in by
    peftbench itself (the trainer's callbacks and logger)."""
    for key, value in values.items():
        if key in skip or key.startswith("_"):
            continue
        path = f"{prefix}.{key}"
        if parameters is not None and key not in parameters:
            allowed = ", ".join(sorted(name for name in parameters if name not in skip))
            raise ConfigError(f"{path}={value!r}: not an argument of {receivers}; allowed: {allowed}")
        annotation = parameters.get(key, Any) if parameters is not None else Any
        check_value(path, value, annotation)


def check_value(path: str, value: Any, annotation: Any) -> None:
    """One value against its parameter's annotation and its documented floor. A ``{_target_: ...}`` node is an
    object Hydra builds from the config (``trainer.strategy``): its class judges its own arguments."""
    if isinstance(value, Mapping) and "_target_" in value:
        return
    if annotation is not inspect.Parameter.empty and not _check_type(value, annotation):
        choices = list(
            dict.fromkeys(str(choice) for choice in literal_choices(annotation))
        )  # 32 and '32' once
        if choices:
            raise ConfigError(f"{path}={value!r}: allowed {', '.join(choices)}")
        raise ConfigError(f"{path}={value!r}: expected {describe(annotation)}")
    floor = ARGUMENT_FLOORS.get(path.rsplit(".", 1)[-1])
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if floor is not None and number and value < floor:
        raise ConfigError(f"{path}={value!r}: expected a number >= {floor}")


def literal_choices(annotation: Any) -> list[Any]:
    """The fixed values an annotation lists (``Literal['online', 'offline'] | None``: online, offline); empty
    when it also admits a free type (``bool | Literal['warn']``)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    args = typing.get_args(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if union and all(typing.get_origin(arg) is typing.Literal or arg is type(None) for arg in args):
        return [choice for arg in args for choice in literal_choices(arg)]
    return []


def blame(message: str, values: Mapping[str, Any]) -> str | None:
    """The key a constructor's refusal is about: the key its message names (``save_top_k=-5``, ```mode```;
    a plural key by its singular, ``betas`` by ``beta``), else the only key whose value the message quotes."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message))
    named = [key for key in values if key in words] or [
        key for key in values if key.endswith("s") and key[:-1] in words
    ]
    if len(named) > 1:  # several keys named: the one whose value is quoted too
        quoted = [key for key in named if _quoted(values[key], message)]
        named = quoted or named
    if named:
        return named[0]
    quoted = [key for key in values if not key.startswith("_") and _quoted(values[key], message)]
    return quoted[0] if len(quoted) == 1 else None


def _quoted(value: Any, message: str) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    items = value if isinstance(value, list | tuple) else [value]
    return any(len(str(item)) > 0 and re.search(rf"(?<![\w.]){re.escape(str(item))}(?![\w.])", message)
               for item in items)  # fmt: skip


def refusal(prefix: str, target: str, values: Mapping[str, Any], error: BaseException) -> ConfigError:
    """A constructor's refusal as one line: ``prefix.key=value: <its message>`` when the key can be told, else
    ``prefix (target): <its message>``."""
    text = " ".join(str(error).split()) or type(error).__name__
    key = blame(text, values)
    if key is None:
        return ConfigError(f"{prefix} ({target}): {text}")
    return ConfigError(f"{prefix}.{key}={values[key]!r}: {text}")
