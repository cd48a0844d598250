"""Start-up: composing a config imports nothing heavy, and a run that does not quantise never imports
bitsandbytes (which peft would import, with a CPU-kernels warning, on every start).

Behaviour only; bench/startup.py measures the times side by side.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import compose_config

from peftbench import imports

HEAVY = ("torch", "lightning", "transformers", "peft", "datasets", "bitsandbytes")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_entry_point_and_a_composed_config_import_nothing_heavy_and_a_plain_run_keeps_bitsandbytes_out() -> (
    None
):
    done = _python(
        f"""
        import sys
        import peftbench.train
        from peftbench.resources import compose
        cfg = compose(["method=lora"])
        print("heavy:", sorted(m for m in {HEAVY!r} if m in sys.modules))
        from peftbench.imports import gate_bitsandbytes
        gate_bitsandbytes(cfg, one_job_per_process=True)
        import peft  # what a run imports first
        print("bitsandbytes:", sys.modules.get("bitsandbytes", "absent"))
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "heavy: []" in lines, done.stdout
    assert "bitsandbytes: None" in lines, done.stdout
    assert "gemm_4bit" not in done.stderr


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        (["method=lora"], False),
        (["method=qlora"], True),  # a 4-bit backbone and bitsandbytes' paged AdamW
        (["method=lora", "+quantization=nf4"], True),
        (["method=lora", "optimizer._target_=bitsandbytes.optim.AdamW8bit"], True),
        (
            ["method=loftq"],
            True,
        ),  # quantises the backbone's weights at init (a sweep job once found it gated)
        (["method=eva"], False),
    ],
)
def test_a_run_needs_bitsandbytes_when_it_quantises_or_names_it(overrides, needed) -> None:
    assert imports.needs_bitsandbytes(compose_config(overrides)) is needed


def test_the_gate_shuts_only_a_fresh_single_job_process_and_refuses_a_late_quantised_run(monkeypatch) -> None:
    for name in imports.LOOKS_FOR_IT:  # as in a fresh process (restored afterwards)
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
    lora, qlora = compose_config(["method=lora"]), compose_config(["method=qlora"])
    imports.gate_bitsandbytes(lora, one_job_per_process=False)  # the basic launcher: later jobs may need it
    assert imports.GATED not in sys.modules
    imports.gate_bitsandbytes(qlora, one_job_per_process=True)
    assert imports.GATED not in sys.modules
    imports.gate_bitsandbytes(lora, one_job_per_process=True)
    assert sys.modules[imports.GATED] is None
    from peftbench.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"^model.quantization=nf4: needs bitsandbytes, which an earlier job"
    ):
        imports.gate_bitsandbytes(qlora, one_job_per_process=True)


def test_help_lists_the_config_groups_and_nothing_else_of_the_checkout() -> None:
    """The experiments provider exposes experiments/ only: a file:// entry on the checkout's root listed
    conf/, peftbench/, tests/, results/ ... as config groups too (--help took 15 s listing them)."""
    done = subprocess.run(
        [sys.executable, "-m", "peftbench.train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    groups = [
        line.split(":")[0] for line in done.stdout.split("== Config ==")[0].splitlines() if ": " in line
    ]
    assert "model" in groups and "method" in groups and "experiments/compare" in groups, groups
    top = {group.split("/")[0] for group in groups}
    assert top <= {"callbacks", "debug", "experiments", "logger", "method", "model", "optimizer", "paths",
                   "quantization", "regularizer", "scheduler", "task", "trainer"}, sorted(top)  # fmt: skip


def test_no_console_script_imports_the_training_stack_to_start() -> None:
    """--help and --version of every console script answer at once: importing the module behind each entry
    point loads none of torch, Lightning, transformers, peft, datasets (peftbench-export used to take 10 s)."""
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    modules = sorted({target.split(":")[0] for target in pyproject["project"]["scripts"].values()})
    done = _python(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
            heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
            print(name, "heavy:", heavy)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if not line.endswith("heavy: []")] == [], done.stdout
