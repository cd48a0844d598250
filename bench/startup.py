"""Start-up costs of ``peftbench-train``, measured side by side against the interpreter's own start.

    python bench/startup.py [--repeats 3] [--checkout DIR]

Each command runs ``--repeats`` times, interleaved (command 1, 2, ... then again), in a fresh process; the
table gives the median wall time and its ratio to ``python -c pass``. ``--checkout DIR`` times another
checkout's code (its folder goes first on PYTHONPATH), for a before/after comparison in one sitting:

    git worktree add /tmp/old <commit>
    python bench/startup.py --checkout /tmp/old && python bench/startup.py

Rows:
  python -c pass           the interpreter alone (the floor)
  import peftbench.train   the entry point's module
  --help                   Hydra's help: lists every config group
  --cfg job                compose and print the default job config
  tab completion           one completion query (`method=lo<TAB>`), as bash asks it
  libraries a run needs    import torch, lightning, transformers, peft (what any run must pay)
  1-step tiny run          tiny-bert on the synthetic task, 1 step, no test or inference timing
  sweep 1|3 job(s), fresh  that run as a multirun of 1 and of 3 seeds, each job a fresh interpreter
  sweep 1|3 job(s), fork   the same, each job forked from the launcher's fork server (the default)

From the sweep rows it then derives a job's start-up overhead beyond the interpreter's own: the marginal
wall time of a job ((3 jobs - 1 job) / 2), less the run's own wall time (its result's budget.wall_time_s),
less ``python -c pass``. With fork server, the libraries are imported once per sweep (in the 1-job row), not
once per job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = [
    "model=tiny-bert",
    "task=synthetic",
    "logger=none",
    "trainer.precision=32-true",
    "task.max_steps=1",
    "run_test=false",
    "inference.enabled=false",
    "print_summary=false",
]


def commands(tmp: Path) -> list[tuple[str, list[str]]]:
    py = sys.executable
    train = [py, "-m", "peftbench.train"]
    return [
        ("python -c pass", [py, "-c", "pass"]),
        ("import peftbench.train", [py, "-c", "import peftbench.train"]),
        ("--help", [*train, "--help"]),
        ("--cfg job", [*train, "--cfg", "job"]),
        (  # what bash runs on each <TAB> once `eval "$(peftbench-train -sc install=bash)"` is in place
            "tab completion",
            ["env", "COMP_LINE=peftbench-train method=lo", "COMP_POINT=26", *train, "-sc", "query=bash"],
        ),
        ("libraries a run needs", [py, "-c", "import torch, lightning, transformers, peft"]),
        (
            "1-step tiny run",
            [
                *train,
                *TINY,
                f"paths.results_dir={tmp}/results",
                f"hydra.run.dir={tmp}/run",
                "sweep.resume=false",
            ],
        ),
        *(
            (
                f"sweep {jobs} job{'s' if jobs > 1 else ''}, {mode}",
                [
                    *train,
                    "-m",
                    *TINY,
                    f"seed={','.join(str(seed) for seed in range(jobs))}",
                    f"hydra.launcher.fork_server={str(mode == 'fork').lower()}",
                    f"paths.results_dir={tmp}/sweep-{mode}-{jobs}/results",
                    f"hydra.sweep.dir={tmp}/sweep-{mode}-{jobs}/jobs",
                    "sweep.resume=false",
                ],
            )
            for mode in ("fresh", "fork")
            for jobs in (1, 3)
        ),
    ]


def run_wall_times(folder: Path) -> list[float]:
    """The runs' own wall times (budget.wall_time_s) recorded in a results folder."""
    return [json.loads(path.read_text())["budget"]["wall_time_s"] for path in folder.glob("*.json")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{args.checkout}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="peftbench-startup-") as folder:
        rows = commands(Path(folder))
        for repeat in range(args.repeats):
            for name, command in rows:
                start = time.perf_counter()
                done = subprocess.run(command, cwd=args.checkout, env=env, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
                if done.returncode != 0 and name.startswith("sweep") and "fork_server" in done.stderr:
                    continue  # a checkout from before the fork server (--checkout): no such launcher option
                if done.returncode != 0:
                    sys.exit(f"{name} failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
                times.setdefault(name, []).append(elapsed)
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        own = {mode: run_wall_times(Path(folder, f"sweep-{mode}-3", "results")) for mode in ("fresh", "fork")}
    floor = statistics.median(times["python -c pass"])
    print(f"checkout: {args.checkout}")
    print(f"{'command':<24} {'median s':>9} {'× python':>9}   all (s)")
    for name, _ in rows:
        if name not in times:
            print(f"{name:<24} {'–':>9} {'–':>9}   not in this checkout (no hydra.launcher.fork_server)")
            continue
        median = statistics.median(times[name])
        values = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<24} {median:>9.2f} {median / floor:>9.1f}   {values}")

    print(
        "\nA sweep job's start-up beyond the interpreter's own (marginal job - its run's own wall - python):"
    )
    for mode in ("fresh", "fork"):
        if f"sweep 3 jobs, {mode}" not in times or not own[mode]:
            continue
        one, three = (statistics.median(times[f"sweep {n}, {mode}"]) for n in ("1 job", "3 jobs"))
        marginal, run_own = (three - one) / 2, statistics.median(own[mode])
        print(
            f"  {mode:<6} marginal job {marginal:6.2f} s, run's own {run_own:5.2f} s, "
            f"start-up beyond python {marginal - run_own - floor:6.2f} s"
        )


if __name__ == "__main__":
    main()
