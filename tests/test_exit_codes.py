"""Exit codes tell the truth, through the real command: a config error exits 2 with one line and leaves no
result; SIGTERM mid-training records ``killed`` and exits 143; SIGTERM to a sweep's parent ends its running job.

These start ``python -m peftbench.train`` as a user would (the earlier one-line tests only checked the
exception's text, not what the command prints or returns). Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY_DEFAULTS

from peftbench import sweeps, train
from peftbench.errors import ConfigError
from peftbench.results import load_results
from peftbench.train import run

# A budget far longer than any test waits: the run is signalled after its first step, never finishes.
LONG = [
    "method=head_only",
    "task.max_steps=100000",
    "task.val_every_n_steps=1",
    "+trainer.limit_val_batches=1",
]
WAIT_S = 180  # bound of every wait (2 shared CPU cores: a fresh process imports torch for ~15 s)


def _start(args: list[str], tmp_path: Path, multirun: bool = False) -> subprocess.Popen:
    command = [sys.executable, "-m", "peftbench.train", *(["-m"] if multirun else []), *TINY_DEFAULTS, *args]
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    return subprocess.Popen(command, stdout=out, stderr=err, cwd=tmp_path, text=True)


def _finish(process: subprocess.Popen, tmp_path: Path) -> tuple[int, str]:
    try:
        code = process.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, (tmp_path / "stderr.txt").read_text()


def _wait_for_checkpoint(folder: Path, process: subprocess.Popen) -> None:
    """A checkpoint is written after the first training step's validation: training is under way."""
    deadline = time.monotonic() + WAIT_S
    while not list(folder.glob("**/checkpoints/*.ckpt")):
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before its first checkpoint")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no checkpoint within the wait bound")
        time.sleep(0.2)


def _writable(folder: Path) -> bool:
    """Whether a file can really be created there (os.access says yes to root everywhere)."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _prefixed(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("peftbench-train:")]


def test_config_error_exits_2_with_one_line_and_no_result(tmp_path: Path) -> None:
    """A results folder that cannot be written (here a path that is a file) is found by the probe write
    before anything loads: exit 2, one line naming the key, no traceback, no result, no training."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    process = _start(
        ["method=head_only", f"paths.results_dir={blocker}", f"hydra.run.dir={tmp_path}/run"], tmp_path
    )
    code, stderr = _finish(process, tmp_path)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = _prefixed(stderr)
    assert line.startswith(f"peftbench-train: paths.results_dir={blocker}: cannot write") and "file" in line
    assert blocker.read_text() == "not a folder" and not list(tmp_path.glob("**/*.json"))
    assert (
        not list(tmp_path.glob("**/*.ckpt")) and "GPU available" not in (tmp_path / "stdout.txt").read_text()
    )


def test_config_error_prints_one_line_and_the_switch_shows_the_traceback(
    make_cfg, monkeypatch, capsys
) -> None:
    """What the entry point does with any ConfigError (here a trainer value), without a fresh process."""
    monkeypatch.delenv("PEFTBENCH_TRACEBACK", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = make_cfg("method=head_only", "trainer.max_steps=5")
    job = train.train_job.__wrapped__  # the task function under @hydra.main
    with pytest.raises(SystemExit) as stop:
        job(cfg)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "peftbench-train: trainer.max_steps=5: the step budget is task.max_steps (40), which the trainer "
        "follows; set task.max_steps=5 instead"
    ]
    monkeypatch.setenv("PEFTBENCH_TRACEBACK", "1")
    with pytest.raises(ConfigError, match="trainer.max_steps=5"):
        job(cfg)
    assert not list(Path(cfg.paths.results_dir).glob("*.json"))


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unwritable_results_folder_is_refused_before_anything_loads(
    kind, make_cfg, monkeypatch, tmp_path
) -> None:
    if kind == "file":
        target = tmp_path / "blocked"
        target.write_text("")
    else:
        target = tmp_path / "readonly"
        target.mkdir()
        target.chmod(0o555)
        if _writable(target):  # root writes anyway: use a folder no one may write to
            target = Path("/sys/kernel")
            if not target.is_dir() or _writable(target):
                pytest.skip("no read-only folder available to this user")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the results folder was checked")

    monkeypatch.setattr("peftbench.assemble.assemble", no_loading)
    with pytest.raises(ConfigError, match=rf"^paths\.results_dir={target}: cannot write a result file there"):
        run(make_cfg("method=head_only", "debug=fast_dev_run", f"paths.results_dir={target}"))
    assert not list(target.glob(".write-probe-*"))


def test_sigterm_mid_training_records_killed_and_exits_143(tmp_path: Path) -> None:
    results = tmp_path / "results"
    process = _start([*LONG, f"paths.results_dir={results}", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run", process)
    process.send_signal(signal.SIGTERM)
    code, stderr = _finish(process, tmp_path)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]  # was 0: Lightning's SIGTERMException has no code
    (result,) = load_results(results)[0]
    assert result.status == "killed" and "SIGTERM" in result.error
    # Signalled after a checkpoint existed, i.e. mid-training; Lightning stopped at the next step.
    assert "SIGTERMException" in result.error or "Interrupted" in result.error


@pytest.mark.slow  # ~22-26 s of real jobs or figures: the default suite stays under 10 minutes
def test_sigterm_to_a_sweeps_parent_ends_its_running_job(tmp_path: Path) -> None:
    """Job #0 is a config error (no result, listed at the end); job #1 is training when only the parent
    gets SIGTERM: the parent forwards it, the job records killed itself, the parent exits 143 and lists both."""
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    args = [*LONG, "seed=-1,1", f"paths.results_dir={results}", f"hydra.sweep.dir={sweep}"]
    process = _start(args, tmp_path, multirun=True)
    _wait_for_checkpoint(sweep, process)
    os.kill(process.pid, signal.SIGTERM)  # the parent only; the job runs in its own process group
    code, stderr = _finish(process, tmp_path)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    (result,) = load_results(results)[0]  # the config error left no result
    # Written by the job itself (the parent's record of a dead job would say "process killed by").
    assert result.seed == 1 and result.status == "killed" and "SIGTERM" in result.error
    lines = _prefixed(stderr)
    assert len(lines) == 2 and "Traceback" not in stderr
    assert (
        lines[0].startswith("peftbench-train: job #0 (") and ": config error: seed=-1: expected" in lines[0]
    )
    assert lines[1].startswith("peftbench-train: job #1 (") and ": killed: " in lines[1]


def test_failure_lines_name_the_job() -> None:
    line = sweeps.failure_line(3, ["method=lora", "seed=2"], "diverged", "RunDiverged: non-finite loss")
    assert line == "job #3 (method=lora seed=2): diverged: RunDiverged: non-finite loss"
