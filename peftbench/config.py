"""Typed views of the composed config, checked before any model or data loads.

Hydra composes plain YAML; these helpers turn a group into a dataclass and turn every bad value
into one line naming the key, the value and what is allowed (a ConfigError).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from peftbench.errors import ConfigError
from peftbench.resources import PACKAGE_DIR

T = TypeVar("T")


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once ('' where there is none, e.g. macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matmul (AVX512-BF16 or AMX); elsewhere bf16 autocast is slow."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_model_name() -> str | None:
    """The CPU's `model name` (platform.processor() says only `x86_64` on Linux)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def auto_precision() -> str:
    """Lightning precision flag: bf16 autocast where the hardware runs it natively, fp32 elsewhere."""
    import torch  # here, not at import: composing a config (--help, --cfg job) needs no torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if torch.backends.mps.is_available():
        return "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def fixture_path(relative: str) -> str:
    """Absolute path of a task fixture shipped inside the package (peftbench/tasks/fixtures/)."""
    return str(PACKAGE_DIR / "tasks" / "fixtures" / relative)


def monitor_mode(monitor: str, metrics: Any) -> str:
    """max or min: the direction of the monitored metric (its ``higher_is_better``; val/loss: min), so no task
    file restates it (conf/task/_base/derived.yaml)."""
    from peftbench.tasks.metrics import resolve_monitor_mode  # torchmetrics loads only when a config resolves

    return resolve_monitor_mode(monitor, metrics)


def chosen(key: str, *, _root_: DictConfig) -> Any:
    """``${peftbench.chosen:KEY}``: the value a grid search chose for KEY by validation (peftbench/search.py,
    imported only when a config asks: it reads the results folder)."""
    from peftbench import search

    return search.chosen(key, _root_=_root_)


def register_resolvers() -> None:
    for name, function in (
        ("peftbench.precision", auto_precision),
        ("peftbench.fixture", fixture_path),
        ("peftbench.monitor_mode", monitor_mode),
        ("peftbench.chosen", chosen),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()


def _check_type(value: Any, annotation: Any) -> bool:
    """Loose runtime check of a dataclass annotation (enough for config values)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple | ListConfig):
            return False
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: (beta1, beta2)
            return len(value) == len(args) and all(map(_check_type, value, args))
        return True
    if origin is dict:
        return isinstance(value, dict | DictConfig)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe_type(annotation: Any) -> str:
    """An annotation as a reader types it on the command line: ``an integer``, ``one of a, b``, ``a str or
    None``, ``a list of 2 values (float, float)``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        shown = [arg for arg in args if arg is not type(None) and getattr(arg, "__name__", "") != "Tensor"]
        parts = [
            ", ".join(str(a) for a in typing.get_args(arg)) if typing.get_origin(arg) is typing.Literal
            else describe_type(arg)
            for arg in shown or args
            if arg is not type(None)
        ]  # fmt: skip
        words = list(dict.fromkeys([*parts, *(["None"] if type(None) in args else [])]))
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        inner = [describe_type(arg).removeprefix("a ").removeprefix("an ") for arg in args]
        return f"a list of {len(args)} values ({', '.join(inner)})"
    if origin in (list, tuple):
        return (
            f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}" if args else "a list"
        )
    if annotation is int:
        return "an integer"
    if annotation is Path:
        return "a path"
    if isinstance(annotation, type):
        return f"a {annotation.__name__}"
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def dataclass_from_cfg(cls: type[T], cfg: DictConfig | dict, prefix: str) -> T:
    """Build dataclass ``cls`` from a config node, naming ``prefix.key`` in every error."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)

    def dotted(key: str) -> str:  # top-level keys (seed, run_test) have no prefix
        return f"{prefix}.{key}" if prefix else key

    if unknown:
        value = data[unknown[0]]
        raise ConfigError(
            f"{dotted(unknown[0])}={value!r}: unknown key; allowed: {', '.join(sorted(fields))}"
        )
    for key, value in data.items():
        if not _check_type(value, hints[key]):
            allowed = describe_type(hints[key])
            raise ConfigError(f"{dotted(key)}={value!r}: expected {allowed}")
    try:
        return cls(**data)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"{prefix}: {error}") from None
