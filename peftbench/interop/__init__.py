"""Result files of other benchmarks, read as peftbench results and written in their schemas.

One module per foreign schema (``peft_mc``: HF peft's ``method_comparison``). A foreign file is recognised
by its own structure, never by its name, and becomes a :class:`~peftbench.results.RunResult` whose ``study``
names its source, so a leaderboard can set it beside our runs without anyone mistaking it for one of them.
"""

from __future__ import annotations

from pathlib import Path

from peftbench.interop import peft_mc
from peftbench.results import RunResult, load_json

__all__ = ["peft_mc", "read_any"]


def read_any(path: str | Path) -> RunResult:
    """A peftbench result or a foreign one this package maps; anything else is a ResultSchemaError naming
    why (the same one ``read_result`` raises), so ``scan_results`` skips it with one line."""
    data = load_json(path)
    if peft_mc.recognises(data):
        return peft_mc.from_peft_mc(data, Path(path))
    return RunResult.from_dict(data)
