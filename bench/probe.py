"""The converged linear probe: how far head-only can get on a model's pooled features.

    python bench/probe.py [OVERRIDE ...]     # default: the tuned comparison's head-only run (MiniLM, MR, mean pooling)

Head-only trains one linear layer with AdamW for a study's step budget. This fits the same linear map to
convergence instead, on the same representation (``model.pooling``), tokenizer and splits, built by
``peftbench.assemble`` as a run is: L2-regularised logistic regression on standardised features, full-batch
L-BFGS, the L2 weight chosen on validation accuracy (test never picks). Its test accuracy is the ceiling that
head-only's budget should approach; issue 19 asks that head-only get near it, or that the study says why.

Why by hand: scikit-learn is not a dependency, and the fit is a dozen lines of torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
from torch import nn

STUDY = ["experiments=compare/tuned/default", "method=head_only", "seed=0", "logger=none"]
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # weight of 0.5 * ||W||^2 against the mean cross-entropy


@torch.no_grad()
def features(model: nn.Module, pooler: nn.Module, loader, input_keys) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled representation the head reads (captured at the pooler's output) and the labels."""
    captured: list[torch.Tensor] = []
    handle = pooler.register_forward_hook(lambda module, args, out: captured.append(out.float()))
    labels = []
    try:
        for batch in loader:
            model(**{k: v for k, v in batch.items() if k in input_keys})
            labels.append(batch["labels"])
    finally:
        handle.remove()
    return torch.cat(captured), torch.cat(labels)


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> nn.Linear:
    """Logistic regression to convergence (L-BFGS with a strong-Wolfe line search)."""
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=1000, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def accuracy(head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(-1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides after the tuned study's head-only run")
    args = parser.parse_args(argv)

    from peftbench.assemble import assemble
    from peftbench.resources import compose

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [*STUDY, f"paths.output_dir={tmp}", f"paths.results_dir={tmp}/results", *args.overrides]
        )
        prepared = assemble(cfg)
        model = prepared.module.model.eval()
        backbone = getattr(model, model.base_model_prefix)
        pooler = getattr(backbone, "pooler", None)
        if pooler is None:
            print(f"bench/probe.py: {type(model).__name__} has no pooler module to read", file=sys.stderr)
            return 2
        keys = ("input_ids", "attention_mask", "token_type_ids")
        data = prepared.datamodule
        test = data.test_dataloader()
        test = test[0] if isinstance(test, list) else test
        splits = {
            name: features(model, pooler, loader, keys)
            for name, loader in (
                ("train", data.train_dataloader()),
                ("val", data.val_dataloader()),
                ("test", test),
            )
        }
    x_train, y_train = splits["train"]
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)  # standardised on train alone
    scaled = {name: ((x - mean) / std, y) for name, (x, y) in splits.items()}
    classes = int(max(int(y.max()) for _, y in splits.values())) + 1
    print(
        f"{cfg.model.name} + {cfg.task.name}, pooling {cfg.model.pooling}: {len(y_train)} train / "
        f"{len(splits['val'][1])} val / {len(splits['test'][1])} test, {x_train.shape[1]} features; "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    rows = []
    for l2 in L2_GRID:
        head = fit(*scaled["train"], classes, l2)
        rows.append((l2, *(accuracy(head, *scaled[name]) for name in ("train", "val", "test"))))
    # The best validation accuracy; ties go to the stronger penalty (the simpler map).
    chosen = max(rows, key=lambda row: (row[2], row[0]))
    print("| L2 weight | train acc | val acc | test acc |\n|---|---|---|---|")
    for row in rows:
        mark = " (chosen on val)" if row is chosen else ""
        print(f"| {row[0]:g}{mark} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.4f} |")
    print(
        f"converged probe: test accuracy {chosen[3]:.4f} at L2 weight {chosen[0]:g} (validation {chosen[2]:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
