"""What does peftbench cost on top of a bare PyTorch loop? Side by side, in one process.

Three arms train the same model copy, method and pre-collated batches for the same number of steps:

- ``plain``: a hand-written loop (forward, backward, clip, AdamW, scheduler) — the floor.
- ``peftbench``: the real LightningModule and Trainer from ``peftbench.assemble.assemble``, with the
  efficiency monitor, learning-rate monitor and CSV logger of a default run (no checkpointing or
  validation, which a hand loop would not do either).
- ``peftbench-noeff``: the same without the EfficiencyMonitor, to price the eff/ metrics alone.

This machine is noisy (two identical runs can differ by 25 %), so the arms are interleaved in a
rotating order for several rounds and medians are reported. Ratios, never asserts: run it and read.

    python bench/overhead.py                 # a small BERT (hidden 256, 4 layers), LoRA, batch 32
    python bench/overhead.py --size tiny     # the test-suite model: per-step overhead dominates
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import get_scheduler

import peftbench.config  # noqa: F401  (registers resolvers)
from peftbench.assemble import assemble, instantiate_group
from peftbench.metrics.efficiency import EfficiencyMonitor
from peftbench.models.module import PeftBenchModule
from peftbench.resources import compose

SIZES = {  # model.config overrides for tiny-bert
    "tiny": [],
    "small": [
        "model.config.hidden_size=256",
        "model.config.num_hidden_layers=4",
        "model.config.num_attention_heads=4",
        "model.config.intermediate_size=1024",
    ],
}


def compose_cfg(args: argparse.Namespace, output_dir: str) -> object:
    overrides = [
        "model=tiny-bert",
        "task=synthetic",
        f"method={args.method}",
        f"trainer.precision={args.precision}",
        f"task.batch_size={args.batch_size}",
        f"task.max_length={args.max_length}",
        "task.source.num_examples=2048",
        "+task.source.min_words=20",
        "+task.source.max_words=28",
        f"task.max_steps={args.steps}",
        "callbacks.model_checkpoint=null",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "++trainer.limit_val_batches=0",
        f"paths.output_dir={output_dir}",
        f"paths.results_dir={output_dir}/results",
        *SIZES[args.size],
    ]
    return compose(overrides)


class StepClock(L.Callback):
    """Wall time of the steps after the first ``skip`` (two clock reads per run, nothing per step but a compare)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = 0.0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def plain_loop(model: torch.nn.Module, groups_fn, batches: list[dict], skip: int, precision: str) -> float:
    """The hand-written floor: what any training script must do per step, nothing more."""
    model.train()
    optimizer = torch.optim.AdamW(groups_fn(model), lr=1e-4)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=len(batches))
    autocast = precision.startswith("bf16")
    start = 0.0
    for index, batch in enumerate(batches):
        if index == skip:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def lightning_arm(
    prepared, model: torch.nn.Module, batches: list[dict], skip: int, keep_eff: bool, cfg
) -> float:
    from hydra.utils import instantiate

    template = prepared.module
    module = PeftBenchModule(  # the run's own module, around this arm's model copy
        model=model,
        method=template.method,
        metrics=template.val_metrics.clone(prefix=""),
        optimizer_factory=template.optimizer_factory,
        weight_decay=template.weight_decay,
        scheduler=template.scheduler_cfg,
        regularizers=template.hooks[1:],
        task_type=template.task_type,
        predictor=template.predictor,
    )
    callbacks = instantiate_group(cfg.callbacks)
    if not keep_eff:
        callbacks = [c for c in callbacks if not isinstance(c, EfficiencyMonitor)]
    clock = StepClock(skip)
    loggers = instantiate_group(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, clock], logger=loggers, max_steps=len(batches))
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # already collated: identical batches
    trainer.fit(module, train_dataloaders=loader)
    return clock.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="model width/depth preset")
    parser.add_argument("--method", default="lora", help="method config name")
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed (both arms alike)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per example")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per arm and round")
    parser.add_argument("--skip", type=int, default=10, help="untimed steps at the start of each arm")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(args, tmp)
        prepared = assemble(cfg)
        loader = prepared.datamodule.train_dataloader()
        batches: list[dict] = []
        while len(batches) < args.steps + args.skip:
            batches.extend(dict(b) for b in loader)
        batches = batches[: args.steps + args.skip]
        base_model = prepared.module.model
        groups_fn = lambda m: prepared.method.parameter_groups(m, 0.01)  # noqa: E731
        arms = {
            "plain": lambda m: plain_loop(m, groups_fn, batches, args.skip, args.precision),
            "peftbench": lambda m: lightning_arm(prepared, m, batches, args.skip, True, cfg),
            "peftbench-noeff": lambda m: lightning_arm(prepared, m, batches, args.skip, False, cfg),
        }
        names = list(arms)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                seconds[name].append(arms[name](copy.deepcopy(base_model)))
            print(
                f"round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{n} {args.steps * args.batch_size / seconds[n][-1]:.1f}" for n in names)
                + " samples/s",
                file=sys.stderr,
            )

    median = {name: statistics.median(values) for name, values in seconds.items()}
    throughput = {name: args.steps * args.batch_size / median[name] for name in names}
    step_ms = {name: 1000 * median[name] / args.steps for name in names}
    params = sum(p.numel() for p in base_model.parameters())
    print(
        f"\nbench/overhead.py: {args.size} tiny-bert ({params / 1e6:.2f} M params), method {args.method}, "
        f"batch {args.batch_size} x {args.max_length} tokens, {args.precision}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps x {args.rounds} interleaved rounds (medians)"
    )
    print(f"{'arm':<18}{'samples/s':>12}{'ms/step':>10}")
    for name in names:
        print(f"{name:<18}{throughput[name]:>12.1f}{step_ms[name]:>10.2f}")
    print(
        f"\npeftbench / plain loop          = {throughput['peftbench'] / throughput['plain']:.3f}"
        f"  (overhead {step_ms['peftbench'] - step_ms['plain']:+.2f} ms/step; target ratio >= 0.97)"
    )
    print(
        f"peftbench / without eff/ monitor = {throughput['peftbench'] / throughput['peftbench-noeff']:.3f}"
        f"  (monitor cost {step_ms['peftbench'] - step_ms['peftbench-noeff']:+.2f} ms/step; target >= 0.99)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
