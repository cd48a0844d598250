"""The GPU bench of issue 16: tokens/s, MFU and peak memory of a hand loop, the HF Trainer and peftbench on a
random-init model shaped like Llama 3.2 1B.

    python bench/gpu_mfu.py [--methods lora,full] [--steps 30] [--out bench/gpu_mfu.json]
    python bench/gpu_mfu.py --shape tiny --steps 6     # the same code on a CPU in a minute: a check, not figures

Prepared ahead of time: this project gets GPU time in 15-minute loans, so one run of this file has to do it
all (about 5 minutes on an H100 at the defaults).

The recipe, the same for all three runners:
- The model is ``LlamaForSequenceClassification`` from a ``LlamaConfig`` of Llama 3.2 1B's shape: 16 layers,
  hidden 2048, FFN 8192, 32 query and 8 key-value heads, vocabulary 128,256, tied embeddings. It has random
  weights, since only the shape matters for speed, and its weights stay fp32 under bf16 autocast.
- Each step is a batch of 8 x 1024 tokens, with AdamW at lr 1e-4.
- ``lora``: r 16, alpha 32, on every linear layer (q, k, v, o, gate, up, down), plus the trained head.
  ``full``: every weight trains.

The runners:
- ``hand``: the plain loop of autocast, backward, step. Its AdamW is fused on a GPU.
- ``hf-trainer``: ``transformers.Trainer`` with ``bf16=True``.
- ``peftbench``: ``peftbench-train`` with ``model=tiny-llama`` reshaped by overrides, on ``task=synthetic``.
  Its sentences are made long enough to fill 1024 tokens.

How the figures are computed:
- Each runner runs in a fresh process, and ``--rounds`` interleaves them.
- tokens/s counts the steps after the first 3. peftbench's own warm-up steps are set to 3 as well.
- The model FLOPs of a step are ``(4 N + 2 N_trainable) T + 12 L S d T``. Here N is the non-embedding
  parameter count, T the tokens of the step, L the layers, S the sequence length and d the hidden size.
  The first term is the forward pass, the input gradients and the trained weights' gradients, as peftbench's
  ``budget.flops_formula`` counts them. The second term is attention's score and value matmuls, forward and
  backward.
- MFU is the model FLOPs per second over the GPU's dense bf16 peak from its datasheet (``PEAK_TFLOPS``). It
  is also given over a measured 8192^3 bf16 matmul, the rate this machine actually reaches.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("hand", "hf-trainer", "peftbench")
METHODS = ("lora", "full")
WARMUP_STEPS = 3
LR = 1e-4
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# LlamaConfig keys of each shape; and (batch, sequence length).
SHAPES: dict[str, dict[str, Any]] = {
    "1b": {
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "max_position_embeddings": 1024,
    },
    "tiny": {
        "vocab_size": 256,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
    },
}
BATCH = {"1b": (8, 1024), "tiny": (2, 64)}
# Dense bf16 tensor-core peaks from NVIDIA's datasheets (TFLOP/s, without sparsity), by device-name substring.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def model_flops(n_params: int, n_trainable: int, layers: int, seq: int, hidden: int, tokens: int) -> float:
    """Model FLOPs of one training step (see the module docstring): matmuls with weights, then attention's."""
    return (4 * n_params + 2 * n_trainable) * tokens + 12 * layers * seq * hidden * tokens


def datasheet_peak(device_name: str) -> float | None:
    """The dense bf16 peak in FLOP/s of a GPU by its name (the first matching entry), None when unknown."""
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None


def build_model(shape: str, method: str) -> Any:
    """The random-init classifier, with LoRA applied for ``lora``; seeded, so every runner starts alike."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], num_labels=2, pad_token_id=0)
    model = LlamaForSequenceClassification(config)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS
            ),
        )
    return model


def counts(model: Any) -> tuple[int, int]:
    """(non-embedding parameters, trainable parameters)."""
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n)
    total = sum(p.numel() for p in model.parameters())
    return total - embedding, sum(p.numel() for p in model.parameters() if p.requires_grad)


def batches(shape: str, device: str) -> Any:
    """One fixed random batch: token ids (no padding, so every position is real) and labels."""
    import torch

    size, seq = BATCH[shape]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, SHAPES[shape]["vocab_size"], (size, seq), generator=generator)
    labels = torch.randint(0, 2, (size,), generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
    }


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hand(shape: str, method: str, steps: int) -> dict[str, float]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(shape, method).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, fused=device == "cuda")
    batch = batches(shape, device)
    model.train()
    start = 0.0
    for step in range(steps):
        if step == WARMUP_STEPS:
            _sync()
            start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync()
    return _record(model, shape, steps, time.perf_counter() - start)


def hf_trainer(shape: str, method: str, steps: int) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(shape, method)
    rows = {key: value.tolist() for key, value in batches(shape, "cpu").items()}
    size = BATCH[shape][0]
    data = Dataset.from_dict({key: value * steps for key, value in rows.items()})  # the same batch each step
    clock = {"start": 0.0, "end": 0.0}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            _sync()
            if state.global_step == WARMUP_STEPS:
                clock["start"] = time.perf_counter()
            clock["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=size,
            max_steps=steps,
            learning_rate=LR,
            lr_scheduler_type="constant",
            bf16=True,
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            logging_steps=steps,
        )
        Trainer(model=model, args=arguments, train_dataset=data, callbacks=[Clock()]).train()
    return _record(model, shape, steps, clock["end"] - clock["start"])


def peftbench(shape: str, method: str, steps: int) -> dict[str, float]:
    """``peftbench-train`` in a fresh process; its result's own speed and memory figures."""
    size, seq = BATCH[shape]
    overrides = [f"++model.config.{key}={value}" for key, value in SHAPES[shape].items()]
    overrides += [
        "model=tiny-llama",
        f"model.max_positions={seq}",
        "model.dtype=float32",
        "task=synthetic",
        f"task.max_length={seq}",
        f"++task.source.min_words={seq + 64}",  # one word, one token of the char tokenizer: rows fill seq
        f"++task.source.max_words={seq + 64}",
        f"task.batch_size={size}",
        f"task.eval_batch_size={size}",
        f"task.max_steps={steps}",
        f"task.val_every_n_steps={steps}",
        f"optimizer.lr={LR}",
        "trainer.precision=bf16-mixed",
        f"callbacks.efficiency.warmup_steps={WARMUP_STEPS}",
        "run_test=false",
        "inference.enabled=false",
        "logger=none",
        "sweep.resume=false",
    ]
    if method == "lora":
        targets = "[" + ",".join(LORA_TARGETS) + "]"
        overrides += ["method=lora", "method.peft_config.r=16", "method.peft_config.lora_alpha=32"]
        overrides += ["method.peft_config.lora_dropout=0.0", f"method.peft_config.target_modules={targets}"]
    else:
        overrides += ["method=full"]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "peftbench.train", *overrides]
        command += [f"paths.results_dir={out}/results", f"hydra.run.dir={out}/run"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"peftbench-train failed:\n{done.stderr[-3000:]}")
        (path,) = Path(out, "results").glob("*.json")
        result = json.loads(path.read_text())
    efficiency, budget = result["efficiency"], result["budget"]
    tokens_per_sample = budget["tokens_processed"] / max(budget["samples"], 1)
    hidden, layers = SHAPES[shape]["hidden_size"], SHAPES[shape]["num_hidden_layers"]
    n_params = int(budget["non_embedding_params"])
    n_trainable = int(efficiency["trainable_params"])
    tokens_per_s = float(efficiency["train_samples_per_s"]) * tokens_per_sample
    flops = model_flops(n_params, n_trainable, layers, seq, hidden, 1)
    return {
        "tokens_per_s": tokens_per_s,
        "tokens_per_sample": tokens_per_sample,
        "model_tflop_per_s": flops * tokens_per_s / 1e12,
        "peak_mem_mb": float(efficiency.get("peak_mem_mb") or 0.0),
        "peak_mem_kind": str(efficiency.get("peak_mem_kind")),
        "trainable": n_trainable,
    }


def _record(model: Any, shape: str, steps: int, seconds: float) -> dict[str, float]:
    import torch

    size, seq = BATCH[shape]
    n_params, n_trainable = counts(model)
    tokens_per_s = (steps - WARMUP_STEPS) * size * seq / seconds
    flops = model_flops(
        n_params, n_trainable, SHAPES[shape]["num_hidden_layers"], seq, SHAPES[shape]["hidden_size"], 1
    )
    cuda = torch.cuda.is_available()
    return {
        "tokens_per_s": tokens_per_s,
        "tokens_per_sample": float(seq),
        "model_tflop_per_s": flops * tokens_per_s / 1e12,
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
        "peak_mem_kind": "cuda_allocated" if cuda else "not measured (CPU)",
        "trainable": n_trainable,
    }


def matmul_peak() -> dict[str, Any]:
    """The device's name and the bf16 rate of a large square matmul (what this machine really reaches)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "matmul_tflop_per_s": None, "datasheet_tflop_per_s": None}
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(50):
        a @ b
    _sync()
    name = torch.cuda.get_device_name()
    peak = datasheet_peak(name)
    return {
        "device": name,
        "matmul_tflop_per_s": 2 * n**3 * 50 / (time.perf_counter() - start) / 1e12,
        "datasheet_tflop_per_s": peak / 1e12 if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of lora, full")
    parser.add_argument("--only", default=",".join(RUNNERS), help="comma list of runners")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the records (JSON)")
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # internal: one runner in this process
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runners = {"hand": hand, "hf-trainer": hf_trainer, "peftbench": peftbench}
    if args.runner == "matmul":
        print(json.dumps(matmul_peak()))
        return
    if args.runner:
        print(json.dumps(runners[args.runner](args.shape, args.method, args.steps)))
        return
    names, methods = args.only.split(","), args.methods.split(",")
    for value, allowed, flag in ((names, RUNNERS, "--only"), (methods, METHODS, "--methods")):
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            sys.exit(f"{flag}: unknown {unknown[0]}; allowed {', '.join(allowed)}")
    if args.steps <= WARMUP_STEPS:
        sys.exit(f"--steps: {args.steps}; must exceed the {WARMUP_STEPS} warm-up steps")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def child(*extra: str) -> dict[str, Any]:
        command = [sys.executable, __file__, "--shape", args.shape, "--steps", str(args.steps), *extra]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    device = child("--runner", "matmul")
    records = []
    for round_number in range(args.rounds):
        for method in methods:
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                record = {"runner": name, "method": method, "round": round_number + 1}
                record.update(child("--runner", name, "--method", method))
                records.append(record)
                print(f"{method} {name}: {record['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    if args.out:
        meta = {"shape": args.shape, "batch": BATCH[args.shape], "steps": args.steps, **device}
        args.out.write_text(json.dumps({**meta, "records": records}, indent=1))
    print(table(records, names, methods, device))


def table(records: list[dict[str, Any]], names: list[str], methods: list[str], device: dict[str, Any]) -> str:
    """Medians over rounds: one row per method and runner, MFU against the datasheet and the measured matmul."""
    peak, measured = device.get("datasheet_tflop_per_s"), device.get("matmul_tflop_per_s")
    lines = [
        f"device: {device['device']}; bf16 peak {peak or '?'} TFLOP/s (datasheet), {measured or 0:.0f} measured",
        "| method | runner | tokens/s | model TFLOP/s | MFU (datasheet) | MFU (measured matmul) | peak memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for name in names:
            mine = [r for r in records if r["runner"] == name and r["method"] == method]
            if not mine:
                continue
            rate = statistics.median(r["model_tflop_per_s"] for r in mine)
            tokens = statistics.median(r["tokens_per_s"] for r in mine)
            memory = statistics.median(r["peak_mem_mb"] for r in mine)
            mfu = f"{rate / peak:.3f}" if peak else "–"
            mfu_measured = f"{rate / measured:.3f}" if measured else "–"
            lines.append(
                f"| {method} | {name} | {tokens:.0f} | {rate:.1f} | {mfu} | {mfu_measured} | {memory:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
