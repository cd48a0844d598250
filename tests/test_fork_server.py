"""The subprocess launcher's fork server: which jobs it may fork, its exit codes, and its failures.

A whole sweep through it (a job SIGKILLed, results equal to a run alone, the log file) is
tests/test_sweeps.py::test_subprocess_launcher_records_a_killed_job_and_goes_on; signals to a sweep are in
tests/test_exit_codes.py. Here: which jobs it may fork, a forked job's exit code, a server that fails to start or dies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

# By module: Hydra's plugin scan re-executes plugin modules (new class objects), so names bound at import go stale.
from hydra_plugins.peftbench_plugin import fork_server
from peftbench.results import load_results

TINY = ["model=tiny-bert", "task=synthetic", "logger=none", "trainer.precision=32-true"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["method=lora"], None),
        (["method=qlora"], "bitsandbytes"),
        (["method=lora", "trainer=ddp"], "trainer.strategy=ddp"),
        (["method=lora", "trainer.devices=2"], "trainer.devices=2"),
        (["method=lora", "trainer.devices=auto"], "trainer.devices=auto"),
    ],
)
def test_which_jobs_need_a_fresh_interpreter(overrides: list[str], reason: str | None) -> None:
    why = fork_server.needs_fresh_interpreter(compose_config(overrides))
    assert why is None if reason is None else reason in why


def test_a_forked_job_exits_as_a_fresh_one_would(tmp_path: Path, capfd, monkeypatch) -> None:
    server = fork_server.ForkServer(preload=())
    try:
        monkeypatch.chdir(tmp_path)  # the job runs in the launcher's folder at the time it is asked for
        job = server.start(0, [str(tmp_path / "no-payload.pkl"), str(tmp_path / "answer.pkl")], {"A": "1"})
        assert job.wait(timeout=120) == 1  # an uncaught exception: its traceback, exit code 1
        assert "FileNotFoundError: [Errno 2] No such file or directory" in capfd.readouterr().err
    finally:
        server.close()
    assert server._process.returncode == 0  # it exits once the launcher closes its pipe


def test_a_server_that_cannot_import_its_libraries_says_so() -> None:
    with pytest.raises(fork_server.ForkServerError, match="did not start"):
        fork_server.ForkServer(preload=("peftbench_no_such_module",))


@pytest.mark.slow  # ~22-26 s of real jobs or figures: the default suite stays under 10 minutes
def test_a_server_that_dies_under_a_job_has_it_recorded_killed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    env = {**os.environ, "PEFTBENCH_TEST_KILL_FORK_SERVER": "method=full"}  # job 0 SIGKILLs its server
    done = subprocess.run(
        [sys.executable, "-m", "peftbench.train", "-m", *TINY, "method=full,head_only", "debug=fast_dev_run",
         f"paths.results_dir={tmp_path}/results", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the remaining jobs start fresh interpreters" in done.stdout + done.stderr
    results = {r.method: r for r in load_results(tmp_path / "results")[0]}
    assert (
        results["full"].status == "killed" and "its fork server ended while it ran" in results["full"].error
    )
    assert results["head_only"].status == "ok"
    assert results["head_only"].provenance["job_start"] == "fresh interpreter"
