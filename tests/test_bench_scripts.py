"""The benches' own logic (their figures are read, never asserted: tests do not time anything)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_profile_classes_ops_by_exact_aten_names() -> None:
    op_class = _load("step_profile").op_class
    assert op_class("aten::addmm").startswith("dense matmul")  # not element-wise aten::add
    assert op_class("aten::add_").startswith("element-wise")
    assert op_class("aten::to").startswith("dtype casts")  # not allocation's aten::t
    assert op_class("aten::copy_").startswith("dtype casts")
    assert op_class("aten::t").startswith("allocation")
    assert op_class("aten::tanh") == "other"
    assert op_class("aten::bernoulli_").startswith("dropout")
    assert op_class("aten::native_layer_norm_backward").startswith("activations")
    assert op_class("aten::linalg_vector_norm").startswith("optimizer")  # the clipping norm
    assert op_class("Optimizer.step#AdamW.step").startswith("optimizer")
    assert op_class("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__").startswith("data")
