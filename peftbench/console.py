"""What every console script shares: ``--version``, a help text that ends in examples that work, and a quiet
exit when whoever reads standard output stops reading (``peftbench-leaderboard DIR | head -1``).

Nothing heavy is imported here: ``peftbench-train --help`` and ``--version`` stay fast (bench/startup.py).

A closed pipe exits with status 1 and no traceback. 1, not 0, because the command could not write everything
it had to say (a script that checks the status learns the output was cut short); under plain ``| head`` the
shell reports head's status anyway. Python's signal docs give the recipe (``dup2`` of devnull onto stdout so
that the interpreter's final flush has somewhere to go); restoring SIGPIPE's default action instead would kill
the process mid-write, result files included, so it is not used.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

BROKEN_PIPE_EXIT = 1  # the reader closed the pipe before everything was written (see the module docstring)
Main = TypeVar("Main", bound=Callable[..., "int | None"])


def version() -> str:
    """The installed distribution's version (the number pip and the result files' provenance record); a
    checkout that was never installed falls back to the package's own ``__version__``."""
    try:
        return importlib.metadata.version("peftbench")
    except importlib.metadata.PackageNotFoundError:
        from peftbench import __version__

        return __version__


def version_line(prog: str) -> str:
    """What ``<prog> --version`` prints."""
    return f"{prog} (peftbench) {version()}"


def examples_epilog(examples: Sequence[str]) -> str:
    """The help's closing block: one command per line, each of which runs as written from a checkout."""
    return "examples:\n" + "\n".join(f"  {line}" for line in examples)


def parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with ``--version`` (peftbench's) and an examples epilog, kept as written."""
    made = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=examples_epilog(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples keep their lines
    )
    made.add_argument("--version", action="version", version=version_line(prog))
    return made


def entry_point(main: Main) -> Main:
    """Wrap a console script's ``main``: a reader that goes away (BrokenPipeError on stdout, raised while
    printing or at the final flush) ends the command quietly with ``BROKEN_PIPE_EXIT``."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> int | None:
        try:
            try:
                return main(*args, **kwargs)
            finally:  # also on SystemExit: what is still buffered fails here, inside the handler below
                sys.stdout.flush()
        except BrokenPipeError:
            # Python's recipe: whatever is still buffered goes to devnull, so the interpreter's own flush at exit
            # has nothing left to fail on (it would print "Exception ignored ... BrokenPipeError").
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(BROKEN_PIPE_EXIT)

    return wrapper  # type: ignore[return-value]
