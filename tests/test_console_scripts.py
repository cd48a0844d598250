"""Every console script: ``--version`` names peftbench's version, ``--help`` ends in examples that run as
written (their options checked here; run in full under ``-m slow``), and a reader that closes the pipe early
(``| head``) ends the command quietly.

The scripts are found in pyproject.toml, so a new one is covered without touching this file.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from peftbench.console import BROKEN_PIPE_EXIT, version

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
# What an example may exit with when it worked: `peftbench-assets check` reports missing assets with 1 (a
# fresh CI machine has none: `make test` does not fetch them).
ALLOWED_EXIT = {"peftbench-assets": (0, 1)}


def _script(name: str) -> list[str]:
    """The console script as this interpreter runs it (its entry point, without relying on PATH)."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][name]
    module, function = target.split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function} as f; sys.exit(f())"
    return [sys.executable, "-c", code]


def _run(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = _script(name) + list(args)
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, **kwargs)


@pytest.mark.parametrize("name", SCRIPTS)
def test_version_is_peftbench_s(name: str) -> None:
    done = _run(name, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name} (peftbench) {version()}"
    assert "Hydra" not in done.stdout


def _examples(help_text: str) -> list[str]:
    """The lines under ``examples:`` at the end of a help text."""
    _, _, block = help_text.rpartition("examples:\n")
    return [line.strip() for line in block.splitlines() if line.startswith("  ") and line.strip()]


def _example_commands(name: str, tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(line, words) of each example at the end of ``name --help``, its /tmp/ folders moved under tmp_path."""
    done = _run(name, "--help")
    assert done.returncode == 0, done.stderr
    examples = _examples(done.stdout)
    assert examples, f"{name} --help shows no examples:\n{done.stdout}"
    assert any(line.startswith(name) for line in examples)
    commands = []
    for line in examples:
        words = shlex.split(line.split("  #")[0].strip().replace("/tmp/", f"{tmp_path}/"))
        assert words[0] in SCRIPTS, line
        commands.append((line, words))
    return commands


def _compose_only(words: list[str]) -> list[str]:
    """A peftbench-train example as ``--cfg job``: Hydra's --cfg takes no -m, so a sweep is checked at its
    first point."""
    return [w.split(",")[0] if "=" in w else w for w in words if w != "-m"] + ["--cfg", "job"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_ends_in_examples_whose_options_exist(name: str, tmp_path: Path) -> None:
    """The default suite's check of the examples, without the work they do (that is the slow test below):
    every option an example passes is one its program's --help lists, and a peftbench-train example composes."""
    helps: dict[tuple[str, ...], str] = {}
    for line, words in _example_commands(name, tmp_path):
        program = words[0]
        if program == "peftbench-train":
            done = _run(program, *_compose_only(words)[1:])
            assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
            continue
        # The help of what the example calls (a subcommand's own, where it has them; argparse answers --help
        # after a positional too), without its examples block, which would list every option it checks.
        asked = (program, *words[1:2]) if len(words) > 1 and not words[1].startswith("-") else (program,)
        if asked not in helps:
            done = _run(*asked, "--help")
            assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
            helps[asked] = done.stdout.rpartition("examples:\n")[0] or done.stdout
        for option in (word.split("=")[0] for word in words[1:] if word.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helps[asked]), f"{line}: {option}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_help_ends_in_examples_that_run(name: str, tmp_path: Path) -> None:
    """Each example runs as written from a checkout. A peftbench-train line only composes (``--cfg job``)
    unless it is a `debug=smoke` run, which is cheap and may feed the next example (an export needs a finished
    run)."""
    for line, words in _example_commands(name, tmp_path):
        program = words[0]
        if program == "peftbench-train" and "debug=smoke" not in words:
            words = _compose_only(words)
        # bash, so that an example may use $(...) on an earlier example's output, as a user would
        command = line.split("  #")[0].strip().replace("/tmp/", f"{tmp_path}/")
        if words[-2:] == ["--cfg", "job"]:
            command = shlex.join(words)
        prefix = " ".join(shlex.quote(part) for part in _script(program))
        ran = subprocess.run(
            ["bash", "-c", prefix + command[len(program) :]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert ran.returncode in ALLOWED_EXIT.get(program, (0,)), f"{line}\n{ran.stderr[-2000:]}"
        assert "Traceback" not in ran.stderr, line


def test_reproduce_and_compare_help_name_experiments_that_exist() -> None:
    for name in ("peftbench-reproduce", "peftbench-compare"):
        text = _run(name, "--help").stdout
        named = re.findall(r"experiments/, e\.g\.\s+([\w/]+)", text)  # argparse wraps at the terminal width
        assert named, text
        for experiment in named:
            assert (ROOT / "experiments" / f"{experiment}.yaml").is_file(), f"{name}: {experiment}"


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """`peftbench-leaderboard DIR | head -1`: the reader is gone before the table is written."""
    process = subprocess.Popen(
        _script("peftbench-leaderboard") + ["results/cpu_minilm_mr/runs"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # the reader leaves at once: every write finds the pipe closed
    stderr = process.stderr.read()
    assert process.wait(timeout=600) == BROKEN_PIPE_EXIT
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert "Exception ignored" not in stderr
