"""Where does a default training step spend its time? torch.profiler over peftbench's own step, by op class.

    python bench/step_profile.py                      # the default run: MiniLM + MR, LoRA r8, batch 16, bf16
    python bench/step_profile.py method=full          # any overrides of peftbench-train
    python bench/step_profile.py --steps 20 --top 15  # more profiled steps, the longest ops listed too

The model, data and method come from ``peftbench.assemble.assemble`` (the one way a run is built); the step is
the hand-written equivalent of the module's (forward under the run's autocast, backward, clip, AdamW), so
the Trainer's own bookkeeping is not in the profile (bench/overhead.py prices that). Ops are grouped into
classes (dense matmul, dropout's random masks, autocast dtype casts, attention, element-wise, optimizer, ...)
and each class's share of the profiled CPU time is printed. It answers "what would a faster step have to
make faster" with a measurement: a class's share bounds what removing it could gain. The shares are
fractions of one run, so they compare across machines better than times do; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

# One op, one class, by the first class with a matching pattern. An ``aten::`` pattern names an op exactly (its
# in-place ``_`` form too), so ``aten::add`` is not ``aten::addmm``; any other pattern matches anywhere in the name.
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dense matmul (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
    ("dropout's random masks (bernoulli)", ("bernoulli",)),
    ("dtype casts (autocast, .to)", ("aten::copy", "aten::_to_copy", "aten::to")),
    ("attention kernels (sdpa, softmax)", ("scaled_dot_product", "softmax")),
    ("activations and norms (gelu, layer_norm)", ("gelu", "layer_norm")),
    ("optimizer and clipping", ("Optimizer", "_foreach", "norm", "clamp", "addcdiv", "lerp", "sqrt")),
    ("data loading and collate", ("DataLoader", "enumerate(")),
    (
        "allocation and views",
        (
            "aten::empty",
            "aten::empty_strided",
            "aten::empty_like",
            "aten::view",
            "aten::reshape",
            "aten::_reshape_alias",
            "aten::as_strided",
            "aten::transpose",
            "aten::t",
            "aten::permute",
            "aten::expand",
            "aten::contiguous",
            "aten::clone",
            "aten::slice",
            "aten::select",
            "aten::unsqueeze",
            "aten::squeeze",
            "aten::detach",
            "aten::alias",
        ),
    ),
    (
        "element-wise arithmetic",
        (
            "aten::mul",
            "aten::add",
            "aten::div",
            "aten::sub",
            "aten::where",
            "aten::masked_fill",
            "aten::fill_",
            "aten::zero_",
            "aten::neg",
            "aten::sum",
            "aten::all",
            "aten::embedding",
            "aten::index",
        ),
    ),
)


def matches(name: str, pattern: str) -> bool:
    if pattern.startswith("aten::"):
        return name in (pattern, pattern + "_")
    return pattern in name


def op_class(name: str) -> str:
    """The class of a profiler event's name (``"other"`` when none matches)."""
    for label, patterns in CLASSES:
        if any(matches(name, pattern) for pattern in patterns):
            return label
    return "other"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing (first-step allocations)")
    parser.add_argument("--steps", type=int, default=10, help="steps under the profiler")
    parser.add_argument("--top", type=int, default=0, help="also list the N ops with the most self CPU time")
    args, overrides = parser.parse_known_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from peftbench.assemble import assemble
    from peftbench.resources import compose

    steps = args.warmup + 2 * args.steps + 1
    with tempfile.TemporaryDirectory() as out:
        cfg = compose([f"task.max_steps={steps}", "logger=none", f"paths.output_dir={out}", *overrides])
        run = assemble(cfg)
    module = run.module
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay)
    )
    precision = str(cfg.trainer.get("precision", "32"))
    autocast_dtype = torch.bfloat16 if precision.startswith("bf16") else None
    clip = cfg.trainer.get("gradient_clip_val")
    batches = iter(run.datamodule.train_dataloader())
    module.train()

    def step() -> Any:
        batch = next(batches)
        with torch.autocast("cpu", autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = module(batch).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    tokens = 0
    for _ in range(args.steps):
        tokens += int(step()["attention_mask"].sum())
    unprofiled_ms = (time.perf_counter() - start) / args.steps * 1000
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()

    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares: dict[str, float] = defaultdict(float)
    for event in events:
        shares[op_class(event.key)] += event.self_cpu_time_total
    print(
        f"{cfg.model.name} + {cfg.task.name}, method={cfg.method.name}, batch {cfg.task.batch_size}, "
        f"precision {precision}, {torch.get_num_threads()} threads"
    )
    print(
        f"step time without the profiler: {unprofiled_ms:.1f} ms ({tokens / args.steps:.0f} real tokens/step); "
        f"profiled: {total / args.steps / 1000:.1f} ms/step of self CPU time over {args.steps} steps\n"
    )
    print(f"{'op class':<44} {'share':>6} {'ms/step':>8}")
    for label, value in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"{label:<44} {value / total:>6.1%} {value / args.steps / 1000:>8.1f}")
    if args.top:
        print(f"\nthe {args.top} ops with the most self CPU time:")
        for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
            print(
                f"  {event.key:<42} {event.self_cpu_time_total / total:>6.1%}  {event.count // args.steps:>5} calls/step"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
