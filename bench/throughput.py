"""Training throughput of many methods, side by side on one machine: the speed column a long study cannot give.

A study that runs for days lands on whatever machine each session gets (the tuned comparison ran on an AMD
EPYC, a Xeon with native bf16 and one without), so the samples/s its result files record compare only within
one CPU. This bench measures every method of a study stage in one process, on one CPU, with that stage's
config (model, task, batch, precision, threads), in interleaved rounds whose method order rotates, so a
noisy neighbour or thermal drift lands on all methods alike. The figure is the run's own
``eff/train_samples_per_s`` (the EfficiencyMonitor of a real fit through ``peftbench.assemble``: data loading,
method hooks and optimizer step included; validation, checkpointing and logging off), so it is the same
quantity as the study's column, over fewer steps.

    python bench/throughput.py                                   # the tuned study's methods, its protocol
    python bench/throughput.py --methods full,lora,ia3 --rounds 3  # a few methods
    python bench/throughput.py --json bench/records/throughput_<commit>.json  # keep the raw rounds
    python bench/throughput.py --experiment compare/all_methods trainer.precision=32-true  # any stage, overrides

Prints median samples/s per method, the spread over rounds, and the ratio to ``--reference`` (full fine-tuning by
default); ratios are what compare across machines. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def stage_methods(experiment: str) -> list[str]:
    """The methods a study stage sweeps, in its order, expanded as ``peftbench-results status`` expands them."""
    from peftbench.status import sweep_points

    swept, jobs = sweep_points([f"experiments={experiment}"])
    if "method" not in swept:
        raise SystemExit(f"bench/throughput.py: --experiment {experiment} sweeps no methods; give --methods")
    methods = [o.split("=", 1)[1] for job in jobs for o in job if o.startswith("method=")]
    return list(dict.fromkeys(methods))


def overrides_for(experiment: str, method: str, steps: int, warmup: int, output_dir: str) -> list[str]:
    """The stage's config for one method, cut to a timed fit: ``warmup + steps`` steps, no validation, no
    checkpoint, no logger or progress bar, no test or inference afterwards (the bench calls ``fit`` only)."""
    return [
        f"experiments={experiment}",
        f"method={method}",
        "seed=1",
        f"task.max_steps={warmup + steps}",
        f"task.val_every_n_steps={warmup + steps}",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        "++trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint=null",
        "callbacks.progress_bar=null",
        "callbacks.energy.enabled=false",
        f"callbacks.efficiency.warmup_steps={warmup}",
        "logger=none",
        f"paths.output_dir={output_dir}",
        f"paths.results_dir={output_dir}/results",
    ]


def measure(overrides: list[str]) -> dict[str, Any]:
    """One timed fit: the EfficiencyMonitor's figures (samples/s over the steps after its warm-up)."""
    from peftbench.assemble import assemble
    from peftbench.metrics.efficiency import EfficiencyMonitor
    from peftbench.resources import compose

    cfg = compose(overrides)
    prepared = assemble(cfg)
    prepared.trainer.fit(prepared.module, datamodule=prepared.datamodule)
    monitor = next(c for c in prepared.trainer.callbacks if isinstance(c, EfficiencyMonitor))
    return {
        "samples_per_s": float(monitor.figures["train_samples_per_s"]),
        "timed_steps": int(monitor.figures["timed_steps"]),
        "precision": str(cfg.trainer.precision),
        "batch_size": int(cfg.task.batch_size),
    }


def summarize(per_method: dict[str, list[float]], reference: str) -> list[dict[str, Any]]:
    """Median, spread and ratio to the reference's median, one row per method, fastest first."""
    medians = {m: statistics.median(v) for m, v in per_method.items() if v}
    base = medians.get(reference)
    rows = [
        {
            "method": method,
            "median": median,
            "low": min(per_method[method]),
            "high": max(per_method[method]),
            "rounds": len(per_method[method]),
            "ratio": median / base if base else None,
        }
        for method, median in medians.items()
    ]
    return sorted(rows, key=lambda r: -r["median"])


def table(rows: list[dict[str, Any]], reference: str) -> str:
    lines = [
        f"| method | samples/s (median) | min–max over rounds | × {reference} |",
        "|---|---|---|---|",
    ]
    for row in rows:
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['method']} | {row['median']:.1f} | {row['low']:.1f}–{row['high']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default="compare/tuned/default", help="study stage whose config is timed"
    )
    parser.add_argument("--methods", default="", help="comma-separated methods (default: the stage's sweep)")
    parser.add_argument("--reference", default="full", help="method the ratios divide by")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, caches)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, method order rotated")
    parser.add_argument("--json", type=Path, default=None, help="also write every round's figure here")
    args, extra = parser.parse_known_args(argv)

    import torch

    from peftbench.config import cpu_has_bf16, cpu_model_name
    from peftbench.results import _write_atomically

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or stage_methods(args.experiment)
    per_method: dict[str, list[float]] = {m: [] for m in methods}
    failed: dict[str, str] = {}
    precision = batch = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            shift = round_index % len(methods)
            for method in methods[shift:] + methods[:shift]:
                if method in failed:
                    continue
                overrides = [*overrides_for(args.experiment, method, args.steps, args.warmup, tmp), *extra]
                try:
                    figures = measure(overrides)
                except Exception as error:  # one method that cannot run here must not end the others' bench
                    failed[method] = (
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    )
                    print(f"{method}: not measured ({failed[method]})", file=sys.stderr)
                    continue
                per_method[method].append(figures["samples_per_s"])
                precision, batch = figures["precision"], figures["batch_size"]
                print(
                    f"round {round_index + 1}/{args.rounds} {method}: {figures['samples_per_s']:.1f} samples/s",
                    file=sys.stderr,
                )
    rows = summarize({m: v for m, v in per_method.items() if v}, args.reference)
    native = cpu_has_bf16()
    header = (
        f"bench/throughput.py: {args.experiment}, {len(rows)} methods, batch {batch}, {precision}, "
        f"{torch.get_num_threads()} torch threads, {args.steps} timed steps (after {args.warmup} warm-up) per "
        f"method in each of {args.rounds} interleaved rounds (medians), {time.perf_counter() - started:.0f} s; "
        f"CPU {cpu_model_name()} "
        f"({'native' if native else 'no native'} bf16)"
    )
    print(f"\n{header}\n\n{table(rows, args.reference)}")
    for method, reason in failed.items():
        print(f"\n{method}: not measured: {reason}")
    if args.json is not None:
        record = {
            "bench": "throughput",
            "experiment": args.experiment,
            "overrides": extra,
            "cpu_model": cpu_model_name(),
            "cpu_bf16_native": native,
            "torch_threads": torch.get_num_threads(),
            "precision": precision,
            "batch_size": batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "reference": args.reference,
            "samples_per_s": per_method,
            "summary": rows,
            "not_measured": failed,
        }
        _write_atomically(json.dumps(record, indent=1) + "\n", args.json)  # whole or absent, as results are
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
