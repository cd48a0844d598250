"""Hydra's own refusals (composition, the override grammar, the run folder) as one ``<key>=<value>: ...`` line.

Hydra reports a bad command line by printing a multi-line message (an option list, the config search path, or
a trimmed stack trace) and exiting 1, before peftbench's code has seen the config. ``peftbench-train`` asks
Hydra to re-raise instead (its documented ``HYDRA_FULL_ERROR`` switch) and turns what comes up here into the
same line, and the same exit code 2, as any other config error. The key and the value are taken from the
command line, since Hydra's exceptions name only one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from peftbench.resources import config_dir, experiments_dir

HYDRA_ERRORS = (HydraException, OmegaConfBaseException)
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic"
MAX_OPTIONS = 40  # options listed on the line; more are counted


def overrides_of(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` argument (``+``/``++``/``~`` prefixes dropped), in order."""
    pairs = []
    for argument in argv:
        if "=" in argument and not argument.startswith("-"):
            key, value = argument.split("=", 1)
            pairs.append((key.lstrip("+~"), value))
    return pairs


def _value_of(key: str, argv: Sequence[str]) -> str | None:
    found = [value for name, value in overrides_of(argv) if name == key]
    return found[-1] if found else None


# Hydra's mutually exclusive modes, by their flags. Hydra refuses two of them with a bare ValueError and its
# traceback; mode_conflict says it in one line first.
MODE_FLAGS = {
    "--run": "--run",
    "-r": "--run",
    "--multirun": "--multirun",
    "-m": "--multirun",
    "--cfg": "--cfg",
    "-c": "--cfg",
    "--info": "--info",
    "-i": "--info",
    "--shell-completion": "--shell-completion",
    "-sc": "--shell-completion",
}


def mode_conflict(argv: Sequence[str]) -> str | None:
    """One line for a command line that asks Hydra for two modes at once (``-m ... --cfg job``), else None."""
    seen: dict[str, str] = {}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in MODE_FLAGS:
            seen.setdefault(MODE_FLAGS[flag], arg)
    if len(seen) < 2:
        return None
    (first, a), (second, b) = list(seen.items())[:2]
    if {first, second} == {"--multirun", "--cfg"}:
        return (
            f"{a} and {b} together: --cfg prints one job's config, not a sweep's; drop {seen['--multirun']} "
            "and give each swept key one value (e.g. method=lora) to see that job's config"
        )
    return f"{a} and {b} together: Hydra runs one mode at a time; keep one of them"


def describe(error: BaseException, argv: Sequence[str]) -> str | None:
    """The line for a Hydra or OmegaConf error raised while composing (None: not one of those)."""
    if isinstance(error, OverrideParseException):
        return _bad_grammar(error, argv)
    if isinstance(error, MissingConfigException):
        return _missing_option(error, argv)
    if isinstance(error, ConfigCompositionException):
        return _composition(error, argv)
    if isinstance(error, HYDRA_ERRORS):
        text = _first_line(error)
        key = _quoted_key(text)
        value = _value_of(key, argv) if key else None
        return f"{key}={value}: {text}" if key and value is not None else f"hydra: {text}"
    return None


def describe_run_folder(error: OSError, argv: Sequence[str]) -> str:
    """Hydra creates the run (or sweep) folder before the job starts: a path under a file fails there."""
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir"
    value = _value_of(key, argv) or error.filename or "?"
    return f"{key}={value}: cannot create the run folder ({error.strerror}); expected a writable folder"


def _bad_grammar(error: OverrideParseException, argv: Sequence[str]) -> str:
    text = str(error).split("\n", 1)[0]
    override = text.split(": ", 1)[1] if ": " in text else text
    culprit = next((a for a in argv if a.strip() == override.strip()), override)
    key, _, value = culprit.partition("=")
    return (
        f"{key.lstrip('+~')}={value}: not a valid override (quote values with spaces or symbols; {GRAMMAR})"
    )


def _missing_option(error: MissingConfigException, argv: Sequence[str]) -> str:
    missing = str(error.missing_cfg_file or "")
    key, value = next(
        ((k, v) for k, v in overrides_of(argv) if f"{k.replace('.', '/')}/{v}" == missing),
        (missing.rsplit("/", 1)[0].replace("/", "."), missing.rsplit("/", 1)[-1]),
    )
    options = list(error.options or []) or _options_on_disk(key.replace(".", "/"))
    if not options:
        return f"{key}={value}: no such config (nothing under {key.replace('.', '/')}/ either)"
    shown = ", ".join(options[:MAX_OPTIONS]) + (
        f" (+{len(options) - MAX_OPTIONS} more)" if len(options) > MAX_OPTIONS else ""
    )
    return f"{key}={value}: no such {key.split('.')[-1]} config; allowed: {shown}"


def _options_on_disk(group: str) -> list[str]:
    """The configs of a group on peftbench's search path (Hydra lists none for a nested path such as
    ``experiments=no_such/study``): every YAML below conf/<group>/ and experiments/, as ``a/b``."""
    roots = [config_dir() / group]
    if group.split("/")[0] == "experiments":
        roots.append(experiments_dir() / Path(*group.split("/")[1:]) if "/" in group else experiments_dir())
    names = set()
    for root in roots:
        if root.is_dir():
            for path in root.rglob("*.yaml"):
                relative = path.relative_to(root).with_suffix("")
                if not any(part.startswith("_") for part in relative.parts):
                    names.add(relative.as_posix())
    return sorted(names)


def _composition(error: ConfigCompositionException, argv: Sequence[str]) -> str:
    text = _first_line(error)
    key = _quoted_key(text)
    value = _value_of(key, argv) if key else None
    cause = error.__cause__
    if text.startswith("Could not override") and key and isinstance(cause, OmegaConfBaseException):
        parent = getattr(cause, "parent_node", None)
        if "not in struct" in str(cause) and isinstance(parent, DictConfig):
            allowed = ", ".join(sorted(str(k) for k in parent if not str(k).startswith("_")))
            return f"{key}={value}: unknown key; allowed: {allowed} (a new key: +{key}={value})"
        return f"{key}={value}: {_first_line(cause)}"
    if text.startswith("Could not append to config") and key:
        return f"{key}={value}: already set; drop the + ({key}={value}) or write ++{key}={value}"
    if key and value is not None:
        return f"{key}={value}: {text}"
    return f"hydra: {text}"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _quoted_key(text: str) -> str | None:
    match = re.search(r"'([A-Za-z_+~][\w./+~-]*)'", text)
    return match.group(1).lstrip("+~") if match else None
