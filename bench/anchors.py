"""peftbench beside its anchors: a hand-written loop (fp32 and bf16 autocast), the HF Trainer, peftbench.

    python bench/anchors.py [--rounds 2] [--steps 400] [--only hand-fp32,peftbench]
    python bench/anchors.py --variant bf16-weights=model.dtype=bfloat16   # + peftbench with overrides

One recipe for all four, peftbench's default run: MiniLM (the offline package) on MR (the offline corpus,
peftbench's own split and tokenisation), LoRA r8 alpha 16 dropout 0.1 on query/value plus the trained head,
batch 16, AdamW lr 5e-4 weight decay 0.01, linear schedule with 6 % warm-up, gradient clipping at 1.0.

- ``hand-fp32``: the loop anyone would write: a shuffled DataLoader padding each batch to its longest row,
  forward, backward, clip, step, schedule.
- ``hand-bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)``.
- ``hf-trainer``: ``transformers.Trainer`` with the same model, data and hyperparameters (``bf16=True``).
- ``peftbench``: ``peftbench-train`` with its defaults (length-grouped batches, bf16 where the CPU runs it),
  inference timing included: its wall time is split into its parts in a second table (the fixed cost).
- ``--variant LABEL=OVERRIDE[;OVERRIDE...]`` (repeatable): peftbench with those overrides as one more runner,
  for candidates measured beside the default rather than assumed (bf16 frozen weights, optimizer options).

Each runner is a fresh process (no shared thread pools or caches); runners are interleaved for ``--rounds``
rounds and the medians are printed. samples/s counts the steps after the first 5 (peftbench's own
``callbacks.efficiency.warmup_steps``), so model loading, tokenisation and the test pass are outside it.
Accuracy is on the test split with the last weights (peftbench: ``test_last``), so all four are judged alike.
Ratios only; the machine's noise is why runs interleave. The table ends with the machine's dense matmul rate
at this model's shapes (bf16, fp32) and peftbench's step FLOP rate against it: the ceiling a faster step is
measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNNERS = ("hand-fp32", "hand-bf16", "hf-trainer", "peftbench")
WARMUP_STEPS = 5  # steps left out of samples/s (peftbench's callbacks.efficiency.warmup_steps)
ROOT = Path(__file__).resolve().parents[1]


# --- the shared recipe ------------------------------------------------------------------------------------
def recipe(steps: int) -> dict[str, Any]:
    """The default run's config (the same data, model and hyperparameters for every runner)."""
    from omegaconf import OmegaConf

    from peftbench.resources import compose

    cfg = compose([f"task.max_steps={steps}"])
    return {
        "cfg": cfg,
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.weight_decay),
        "warmup_ratio": float(cfg.scheduler.warmup_ratio),
        "batch_size": int(cfg.task.batch_size),
        "clip": float(cfg.trainer.gradient_clip_val),
        "peft": OmegaConf.to_container(cfg.method.peft_config, resolve=True),
    }


def build(steps: int) -> tuple[dict[str, Any], Any, Any, Any]:
    """(recipe, model with LoRA applied, datamodule with tokenised splits, tokenizer)."""
    import torch
    from hydra.utils import instantiate
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peftbench.assemble import parts
    from peftbench.models.backbone import load_tokenizer, resolve_source
    from peftbench.tasks.datamodule import TaskDataModule

    spec = recipe(steps)
    run = parts(spec["cfg"])
    torch.manual_seed(int(spec["cfg"].seed))
    tokenizer = load_tokenizer(run.model_cfg)
    datamodule = TaskDataModule(run.task, tokenizer, seed=int(spec["cfg"].seed))
    datamodule.setup()
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_source(run.model_cfg.name_or_path), num_labels=run.task.num_labels
    )
    peft_config = instantiate(spec["peft"])
    peft_config.modules_to_save = list(run.model_cfg.head_modules)
    return spec, get_peft_model(model, peft_config), datamodule, tokenizer


def _optimizer(model: Any, spec: dict[str, Any], steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec["lr"], weight_decay=spec["weight_decay"])
    warmup = round(spec["warmup_ratio"] * steps)
    return optimizer, get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def accuracy(model: Any, datamodule: Any, bf16: bool) -> float:
    import torch

    model.eval()
    right = total = 0
    loader = datamodule.test_dataloader()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            labels = batch.pop("labels")
            batch.pop("example_index", None)
            logits = model(**batch).logits
            right += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
    return right / total


# --- the runners (each in its own process) ------------------------------------------------------------------
def hand_loop(steps: int, bf16: bool) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    spec, model, datamodule, _ = build(steps)
    optimizer, schedule = _optimizer(model, spec, steps)
    loader = DataLoader(
        datamodule.datasets["train"],
        batch_size=spec["batch_size"],
        shuffle=True,
        collate_fn=datamodule.collator,
        generator=torch.Generator().manual_seed(0),
    )
    model.train()
    step, start = 0, 0.0
    while step < steps:
        for batch in loader:
            if step == WARMUP_STEPS:
                start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], spec["clip"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                break
    seconds = time.perf_counter() - start
    return {
        "samples_per_s": (steps - WARMUP_STEPS) * spec["batch_size"] / seconds,
        "accuracy": accuracy(model, datamodule, bf16),
    }


def hf_trainer(steps: int) -> dict[str, float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    spec, model, datamodule, _ = build(steps)

    class Clock(TrainerCallback):
        start = 0.0
        end = 0.0

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == WARMUP_STEPS:
                Clock.start = time.perf_counter()
            Clock.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=spec["batch_size"],
            max_steps=steps,
            learning_rate=spec["lr"],
            weight_decay=spec["weight_decay"],
            warmup_steps=round(spec["warmup_ratio"] * steps),
            lr_scheduler_type="linear",
            max_grad_norm=spec["clip"],
            bf16=True,
            use_cpu=True,
            logging_steps=max(steps // 4, 1),
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=int(spec["cfg"].seed),
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=datamodule.datasets["train"],
            data_collator=datamodule.collator,
            callbacks=[Clock()],
        )
        trainer.train()
    return {
        "samples_per_s": (steps - WARMUP_STEPS) * spec["batch_size"] / (Clock.end - Clock.start),
        "accuracy": accuracy(model, datamodule, bf16=True),
    }


# The wall-time parts a result records (efficiency.time_*_s), in the order a run pays them.
WALL_PARTS = ("setup", "data", "steps", "validation", "test", "inference")


def peftbench_run(steps: int, overrides: list[str] = ()) -> dict[str, float]:
    """The default run as a user starts it (inference timing included), in a fresh process: its speed, its
    accuracy, and where its wall time went (the interpreter and imports are what the process took beyond the
    run's own ``budget.wall_time_s``)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "peftbench.train",
            *overrides,
            f"task.max_steps={steps}",
            "logger=none",
            "sweep.resume=false",
            f"paths.results_dir={out}/results",
            f"hydra.run.dir={out}/run",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        process_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"peftbench-train failed:\n{done.stderr[-3000:]}")
        (path,) = Path(out, "results").glob("*.json")
        result = json.loads(path.read_text())
    efficiency = result["efficiency"]
    step_s = float(efficiency["train_step_time_ms"]) / 1000 * int(result["budget"]["steps"])
    record = {
        "samples_per_s": float(efficiency["train_samples_per_s"]),
        "accuracy": float(result["test_last"]["test/accuracy"]),
        "gflop_per_s": float(result["budget"]["train_flops_est"]) / step_s / 1e9,  # its own FLOP estimate
        "run_wall_s": float(result["budget"]["wall_time_s"]),
        "process_wall_s": process_s,
    }
    record.update({f"{part}_s": float(efficiency.get(f"time_{part}_s", 0.0)) for part in WALL_PARTS})
    return record


def wall_table(records: list[dict[str, Any]], name: str) -> list[str]:
    """Where one peftbench runner's wall time went (medians over rounds), each part as a share of its training
    steps: the fixed cost a study pays per run on top of the steps it asked for."""
    mine = [r for r in records if r["runner"] == name and "run_wall_s" in r]
    if not mine:
        return []

    def median(key: str) -> float:
        return statistics.median(r[key] for r in mine)

    steps = median("steps_s")
    parts = {part: median(f"{part}_s") for part in WALL_PARTS}
    run_wall, process_wall = median("run_wall_s"), median("process_wall_s")
    rest = run_wall - sum(parts.values())
    rows = [
        ("loading and transforming the model, building the trainer", parts["setup"]),
        ("reading, carving and tokenising the data", parts["data"]),
        ("training steps", steps),
        ("validation passes (and their checkpoint writes)", parts["validation"]),
        ("test passes (the best and the last weights)", parts["test"]),
        ("inference timing (unmerged and merged)", parts["inference"]),
        ("the rest of the run (loop, callbacks, result file)", rest),
        ("interpreter and imports (outside the run)", process_wall - run_wall),
    ]
    lines = [
        "",
        f"Where {name}'s wall time goes (medians of {len(mine)}; shares of its training steps):",
        "",
        "| part | seconds | × steps |",
        "|---|---|---|",
        *(f"| {label} | {seconds:.1f} | {seconds / steps:.3f} |" for label, seconds in rows),
        f"| **the run (budget.wall_time_s)** | {run_wall:.1f} | **{run_wall / steps:.2f}** |",
        f"| the process | {process_wall:.1f} | {process_wall / steps:.2f} |",
        "",
        f"Beside the evaluation the result reports (validation, test, inference timing), the run spends "
        f"{(run_wall - parts['validation'] - parts['test'] - parts['inference']) / steps:.2f}× its steps.",
    ]
    return lines


def matmul_rates() -> dict[str, float]:
    """GFLOP/s of dense matmuls at the default model's shapes (MiniLM: hidden 384, FFN 1536; 448 rows = a
    batch of 16 x ~28 tokens), bf16 and fp32: the ceiling a step's own FLOP rate is read against."""
    import torch

    rates = {}
    for dtype in (torch.bfloat16, torch.float32):
        best = []
        for m, k, n in ((448, 384, 384), (448, 384, 1536), (448, 1536, 384)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            for _ in range(10):
                a @ b
            start = time.perf_counter()
            for _ in range(200):
                a @ b
            best.append(2 * m * k * n * 200 / (time.perf_counter() - start) / 1e9)
        rates[str(dtype).removeprefix("torch.")] = statistics.median(best)
    return rates


def run_one(name: str, steps: int, overrides: list[str]) -> dict[str, float]:
    if name == "matmul":
        return matmul_rates()
    if name == "hand-fp32":
        return hand_loop(steps, bf16=False)
    if name == "hand-bf16":
        return hand_loop(steps, bf16=True)
    if name == "hf-trainer":
        return hf_trainer(steps)
    return peftbench_run(steps, overrides)


# --- the orchestrator ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--only", default=",".join(RUNNERS), help="comma list of runners")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=OVERRIDE[;OVERRIDE]")
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # internal: run one runner, print its JSON
    parser.add_argument("--overrides", default="", help=argparse.SUPPRESS)  # internal: a variant's overrides
    parser.add_argument("--out", type=Path, help="write the per-run records (JSON)")
    args = parser.parse_args()
    if args.runner:
        print(json.dumps(run_one(args.runner, args.steps, [o for o in args.overrides.split(";") if o])))
        return
    names = [name for name in args.only.split(",") if name]
    unknown = sorted(set(names) - set(RUNNERS))
    if unknown:
        sys.exit(f"--only: unknown runner {unknown[0]}; allowed {', '.join(RUNNERS)}")
    variants = dict(v.split("=", 1) for v in args.variant if "=" in v)
    if len(variants) != len(args.variant):
        sys.exit("--variant: expected LABEL=OVERRIDE[;OVERRIDE...], e.g. bf16-weights=model.dtype=bfloat16")
    names += [f"peftbench:{label}" for label in variants]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    records: list[dict[str, Any]] = []
    probe = subprocess.run(
        [sys.executable, __file__, "--runner", "matmul"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    rates = json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else {}
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]  # rotate the order
        for name in order:
            start = time.perf_counter()
            runner, _, label = name.partition(":")
            command = [sys.executable, __file__, "--runner", runner, "--steps", str(args.steps)]
            command += ["--overrides", variants.get(label, "")]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            record = {
                "runner": name,
                "round": round_number + 1,
                **json.loads(done.stdout.strip().splitlines()[-1]),
            }
            record["wall_s"] = time.perf_counter() - start
            records.append(record)
            print(
                f"round {round_number + 1} {name}: {record['samples_per_s']:.1f} samples/s, "
                f"accuracy {record['accuracy']:.4f}, {record['wall_s']:.0f} s wall",
                file=sys.stderr,
            )
    if args.out:
        meta = {"steps": args.steps, "cpu": _cpu(), "variants": variants, "matmul_gflop_per_s": rates}
        args.out.write_text(json.dumps({**meta, "records": records}, indent=1))
    print(table(records, names, args.steps, rates))


def table(records: list[dict[str, Any]], names: list[str], steps: int, rates: dict[str, float]) -> str:
    median = {
        name: {
            key: statistics.median(r[key] for r in records if r["runner"] == name)
            for key in ("samples_per_s", "accuracy")
        }
        for name in names
    }
    lines = [
        f"MiniLM + MR, LoRA r8 q,v, batch 16, {steps} steps; {_cpu()}; medians of "
        f"{len(records) // max(len(names), 1)} interleaved round(s)",
        "",
        "| runner | samples/s | test accuracy | peftbench is × faster |",
        "|---|---|---|---|",
    ]
    ours = median.get("peftbench", {}).get("samples_per_s")
    for name in names:
        speed = median[name]["samples_per_s"]
        ratio = f"{ours / speed:.2f}" if ours and name != "peftbench" else "—"
        lines.append(f"| {name} | {speed:.1f} | {median[name]['accuracy']:.4f} | {ratio} |")
    achieved = [r["gflop_per_s"] for r in records if r["runner"] == "peftbench" and "gflop_per_s" in r]
    if rates:
        lines.append("")
        lines.append(
            f"Dense matmuls at this model's shapes: {rates.get('bfloat16', float('nan')):.0f} GFLOP/s bf16, "
            f"{rates.get('float32', float('nan')):.0f} fp32."
        )
        if achieved:
            share = statistics.median(achieved) / rates["bfloat16"]
            lines.append(
                f"peftbench's step, by its own FLOP estimate (budget.train_flops_est): "
                f"{statistics.median(achieved):.0f} GFLOP/s, {share:.0%} of the bf16 rate."
            )
    lines += wall_table(records, "peftbench")
    return "\n".join(lines)


def _cpu() -> str:
    from peftbench.config import cpu_model_name

    return f"{cpu_model_name() or platform.processor()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
