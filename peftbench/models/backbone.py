"""Load a backbone and its tokenizer from a hub id, a local folder, an offline pip package or a config."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftbench import quiet
from peftbench.errors import AssetMissingError, ConfigError
from peftbench.models.pooling import apply_pooling, check_pooling

PKG_PREFIX = "pkg:"
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANT_TYPES = ("nf4", "fp4")
FETCH_HINT = "run `peftbench-assets fetch` (or `make assets`) to install the offline assets"
log = logging.getLogger("peftbench")


@dataclass
class ModelConfig:
    """The ``model:`` config group, checked before anything is loaded."""

    name: str
    name_or_path: str | None = None  # hub id, local folder, or pkg:<python package carrying the weights>
    # The base's Hugging Face hub id where name_or_path is not one (pkg:, a folder): exports name it as the base
    # model (adapter_config.json, model card). Metadata: out of the run id (results.RUN_ID_EXCLUDED_PATHS).
    hub_id: str | None = None
    revision: str | None = None
    config: Any = None  # a transformers config (_target_) for random init; wins over name_or_path
    tokenizer: Any = None  # None: load from name_or_path; or a _target_ factory building one offline
    architecture: str = "bert"
    head_modules: list[str] = field(default_factory=lambda: ["classifier"])
    layers_path: str = "bert.encoder.layer"
    target_modules: dict[str, Any] = field(default_factory=dict)
    adapter_points: dict[str, str] = field(default_factory=dict)  # sublayer outputs inside a block (adapters)
    dtype: str = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    max_positions: int = 512
    # The sentence representation the head reads (models/pooling.py): native | cls | mean.
    pooling: str = "native"
    # --- decoders (docs/decoders.md) ---
    causal_lm: bool = False  # a decoder with a causal-LM head: generation tasks and ref/ LM loss need one
    padding_side: Literal["left", "right"] | None = None  # None: left for decoders, right for encoders
    gguf_file: str | None = None  # a GGUF file inside name_or_path: dequantised once, cached as an HF folder
    weights_note: str | None = (
        None  # what exactly the weights are (recorded in results), e.g. the quantisation
    )
    # --- quantised loading (QLoRA), see quantization_config() ---
    quantization: str | None = None  # None | nf4 | fp4: 4-bit linear weights via bitsandbytes
    double_quant: bool = True  # quantise the quantisation constants too
    compute_dtype: str = "bfloat16"  # dtype 4-bit weights are dequantised to for matmuls

    def __post_init__(self) -> None:
        if self.config is None and not self.name_or_path:
            raise ConfigError("model.name_or_path=null: set a hub id, a local folder or pkg:<package>")
        if self.hub_id is not None and not is_hub_id(self.hub_id):
            raise ConfigError(
                f"model.hub_id={self.hub_id}: expected a hub id (name or namespace/name), not a local folder "
                "or pkg: source; null when the weights have none"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.dtype}: allowed {sorted(DTYPES)}")
        if self.max_positions < 1:
            raise ConfigError(
                f"model.max_positions={self.max_positions}: expected an integer >= 1 (the longest input the "
                "position embeddings allow)"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"model.attn_implementation={self.attn_implementation}: allowed "
                f"{', '.join(str(a) for a in ATTN_IMPLEMENTATIONS)}"
            )
        check_pooling(self.pooling, self.architecture)
        if self.gguf_file is not None and self.config is not None:
            raise ConfigError(
                "model.gguf_file: set for a random-init model (model.config); use one of the two"
            )
        if self.quantization is not None:
            if self.quantization not in QUANT_TYPES:
                raise ConfigError(
                    f"model.quantization={self.quantization}: allowed null, {', '.join(QUANT_TYPES)}"
                )
            if self.compute_dtype not in DTYPES:
                raise ConfigError(f"model.compute_dtype={self.compute_dtype}: allowed {sorted(DTYPES)}")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(
                    f"model.quantization={self.quantization}: needs bitsandbytes; pip install 'peftbench[qlora]'"
                )

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ModelConfig:
        from peftbench.config import dataclass_from_cfg

        return dataclass_from_cfg(cls, cfg, "model")


SOURCE_FORMS = "expected an existing local folder, a hub id (namespace/name) or pkg:<package>"


def looks_like_path(name_or_path: str) -> bool:
    """A name that can only be a local folder: a hub id is ``name`` or ``namespace/name`` (one slash at most, no
    leading dot, slash or ``~``), so an absolute path, ``./x``, ``../x``, ``~/x`` or ``a/b/c`` is a folder."""
    if os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")):
        return True
    separators = [sep for sep in (os.sep, os.altsep) if sep and sep != "/"]
    return name_or_path.count("/") > 1 or any(sep in name_or_path for sep in separators)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the shape of a hub repo id (``name`` or ``namespace/name``): what an export may
    record as the base model for someone else to download, unlike a folder or a ``pkg:`` source."""
    return (
        not name.startswith(PKG_PREFIX) and not looks_like_path(name) and _HUB_ID.fullmatch(name) is not None
    )


def check_weights_source(model_cfg: ModelConfig) -> None:
    """The weights' source exists on this machine, before anything loads: a local folder that is not there (which
    transformers would report as a malformed hub id), a ``pkg:`` package that is not installed, a GGUF file
    missing from its folder. Hub ids pass: whether the hub (or its cache) has them is known only by asking."""
    if model_cfg.config is not None or not model_cfg.name_or_path:
        return  # random init from a config: nothing to find
    source = str(model_cfg.name_or_path)
    key = f"model.name_or_path={source}"
    if source.startswith(PKG_PREFIX):
        package = source[len(PKG_PREFIX) :]
        if not package or importlib.util.find_spec(package.split(".")[0]) is None:
            from peftbench.assets import PIP_ASSETS

            hint = FETCH_HINT if package in PIP_ASSETS else "install the package that carries the weights"
            raise ConfigError(f"{key}: package {package or '(none)'} is not installed; {hint}")
        folder: Path | None = Path(resolve_source(source, import_package=False))
    elif looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.exists():
            raise ConfigError(f"{key}: no such folder; {SOURCE_FORMS}")
        if not folder.is_dir():
            raise ConfigError(f"{key}: a file, not a folder; {SOURCE_FORMS}")
        if not (folder / "config.json").is_file() and not model_cfg.gguf_file:
            raise ConfigError(
                f"{key}: no config.json in that folder; expected a folder written by save_pretrained "
                "(config.json and the weights)"
            )
    else:  # `name` or `namespace/name`: a folder of that name where there is one (transformers' order), else a hub id
        folder = Path(source) if Path(source).is_dir() else None
    if model_cfg.gguf_file and folder is not None and not (folder / model_cfg.gguf_file).is_file():
        hint = f"; {FETCH_HINT}" if source.startswith(PKG_PREFIX) else ""
        raise ConfigError(f"model.gguf_file={model_cfg.gguf_file}: no such file in {folder}{hint}")


def resolve_source(name_or_path: str, import_package: bool = True) -> str:
    """Turn ``pkg:<package>`` into the folder the package ships; pass hub ids and folders through.

    ``import_package=False`` only locates the folder: some weight packages (the SmolLM2 GGUF) import
    runtimes we do not need, so their folder is read without running their ``__init__``.
    """
    if not name_or_path.startswith(PKG_PREFIX):
        expanded = os.path.expanduser(name_or_path)  # transformers reads `~/models/x` as a (bad) hub id
        return expanded if os.path.isdir(expanded) else name_or_path
    package = name_or_path[len(PKG_PREFIX) :]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise AssetMissingError(f"model package '{package}' is not installed; {FETCH_HINT}")
    if not import_package:
        return str(Path(next(iter(spec.submodule_search_locations))))
    module = importlib.import_module(package)
    if hasattr(module, "get_model_path"):
        return str(module.get_model_path())
    return str(Path(next(iter(spec.submodule_search_locations))))


def load_hf_config(
    model_cfg: ModelConfig, num_labels: int, problem_type: str | None = None
) -> PretrainedConfig:
    """The architecture config alone (no weights): cheap, so validation can use layer counts early.

    ``problem_type`` is the task kind's (``task.kind.problem_type``: regression for one real output). Callers
    that pass none get transformers' own reading of a head with one output: regression.
    """
    if model_cfg.config is not None:
        config = instantiate(model_cfg.config)
    else:
        config = AutoConfig.from_pretrained(weights_source(model_cfg), revision=model_cfg.revision)
    config.num_labels = num_labels
    if problem_type is not None or num_labels == 1:
        config.problem_type = problem_type or "regression"
    return config


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    if model_cfg.tokenizer is not None:
        tokenizer = instantiate(model_cfg.tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(weights_source(model_cfg), revision=model_cfg.revision)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # BERT-style vocabularies: [SEP] ends a generated answer
    if tokenizer.pad_token is None:  # decoders often ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    # Decoders pad on the left: the last position then holds the last real token, which is what
    # sequence classification pools (also when peft prompt learning feeds embeddings, not ids) and
    # where batched greedy generation continues. Rotary positions make the shift harmless.
    tokenizer.padding_side = model_cfg.padding_side or ("left" if model_cfg.causal_lm else "right")
    return tokenizer


def load_model(
    model_cfg: ModelConfig,
    config: PretrainedConfig,
    pad_token_id: int | None,
    generative: bool = False,
    auto_class: type | None = None,
) -> tuple[PreTrainedModel, list[str]]:
    """The model with its task head, and the freshly initialised weights.

    ``auto_class`` is the task kind's (``task.kind.auto_model_class``), which builds the head. Without it,
    ``generative`` picks the causal-LM model (generation tasks) over sequence classification.
    """
    if auto_class is None:
        auto_class = AutoModelForCausalLM if generative else AutoModelForSequenceClassification
    kwargs: dict[str, Any] = {"dtype": DTYPES[model_cfg.dtype]}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    if model_cfg.quantization is not None:
        kwargs["quantization_config"] = quantization_config(model_cfg)
    if model_cfg.config is not None and model_cfg.quantization is not None:
        model = _quantized_from_config(auto_class, config, kwargs)
        new_weights = []
    elif model_cfg.config is not None:
        # A random-init model is a fixed function of its config (seed 0), like a checkpoint: an exported
        # adapter can then be put back on the same base. fork_rng leaves the run's RNG stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = auto_class.from_config(config, **kwargs)
        new_weights = []  # everything is random: nothing to single out
    else:
        source = weights_source(model_cfg)
        # transformers prints a load report for every checkpoint without the task head; the head is new by design
        # (peftbench records it, and warns about new weights outside it: assemble.load_transformed). The report
        # is printed only when it says more: unexpected or mismatched keys, new weights beyond the head.
        with quiet.hidden_transformers_bars(small_local_checkpoint(source)), quiet.held_load_report() as held:
            model, info = auto_class.from_pretrained(
                source,
                config=config,
                revision=model_cfg.revision,
                output_loading_info=True,
                **kwargs,
            )
            held.expected = only_a_new_head(info, model_cfg.head_modules)
        new_weights = sorted(info["missing_keys"])
    if model_cfg.quantization is not None:
        _guard_cpu_4bit_kernel(model)
    if not generative:  # a causal-LM head reads every position: nothing to pool
        apply_pooling(model, model_cfg.pooling)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, new_weights


def only_a_new_head(info: dict[str, Any], head_modules: list[str]) -> bool:
    """Whether ``from_pretrained``'s loading info says only that the task head was initialised fresh: every
    missing key inside ``head_modules``, nothing unexpected, nothing of another shape."""
    in_head = [
        any(key == head or key.startswith(f"{head}.") for head in head_modules)
        for key in info.get("missing_keys", ())
    ]
    return all(in_head) and not any(info.get(k) for k in ("unexpected_keys", "mismatched_keys", "error_msgs"))


def small_local_checkpoint(source: str) -> bool:
    """A local folder whose weight files load in about a second (``quiet.SMALL_CHECKPOINT_BYTES``); a hub id
    is not (it may download: its progress bars stay)."""
    folder = Path(source)
    if not folder.is_dir():
        return False
    weights = [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file()]
    return sum(f.stat().st_size for f in weights) <= quiet.SMALL_CHECKPOINT_BYTES


def quantization_config(model_cfg: ModelConfig) -> Any:
    """bitsandbytes 4-bit loading (QLoRA): linear weights quantised, the task head kept in full precision."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.quantization,
        bnb_4bit_use_double_quant=model_cfg.double_quant,
        bnb_4bit_compute_dtype=DTYPES[model_cfg.compute_dtype],
        llm_int8_skip_modules=list(model_cfg.head_modules),  # the head trains: never quantise it
    )


def _quantized_from_config(
    auto_class: Any, config: PretrainedConfig, kwargs: dict[str, Any]
) -> PreTrainedModel:
    """Random-init model, quantised: transformers quantises only in from_pretrained, so go through a folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="peftbench-quant-") as folder:
        plain = {k: v for k, v in kwargs.items() if k != "quantization_config"}
        with torch.random.fork_rng(devices=[]):  # same fixed init as the unquantised path
            torch.manual_seed(0)
            auto_class.from_config(config, **plain).save_pretrained(folder)
        return auto_class.from_pretrained(folder, config=config, **kwargs)


def _guard_cpu_4bit_kernel(model: torch.nn.Module) -> None:
    """Keep every 4-bit layer on bitsandbytes' generic dequantise-and-matmul path, which has autograd.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight for its inference kernel at the
    first forward in eval mode, and only unpacks it when a state_dict is saved. A validation pass that
    saves no checkpoint (the score did not improve) leaves the weights packed, and the next training step
    runs the inference kernel, which has no autograd: with a bias it raises "a view of a leaf Variable
    ... in-place operation", without one the input gradient is silently dropped. The repacking also
    assumes in_features is a multiple of the quantisation block (64), so tiny test models crash there.
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def model_fingerprint(model_cfg: ModelConfig) -> dict[str, Any]:
    """What identifies the weights: revision for hub ids, package version for offline packages."""
    info: dict[str, Any] = {"name_or_path": model_cfg.name_or_path, "revision": model_cfg.revision}
    if model_cfg.config is not None:
        info["random_init_config"] = (
            OmegaConf.to_container(model_cfg.config, resolve=True)
            if isinstance(model_cfg.config, DictConfig)
            else model_cfg.config
        )
    elif model_cfg.name_or_path and model_cfg.name_or_path.startswith(PKG_PREFIX):
        from importlib.metadata import PackageNotFoundError, version

        package = model_cfg.name_or_path[len(PKG_PREFIX) :]
        try:
            info["package_version"] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            info["package_version"] = None
    if model_cfg.gguf_file:
        source = Path(resolve_source(model_cfg.name_or_path, import_package=False)) / model_cfg.gguf_file
        info["gguf_file"] = model_cfg.gguf_file
        info["weights_sha256"] = file_sha256(source)
        info["converted_folder"] = str(converted_folder(model_cfg, source))
    elif model_cfg.config is None and Path(resolve_source(str(model_cfg.name_or_path), False)).is_dir():
        # resolve_source expands `~/models/x` (the loader reads it so too): its weights are hashed the same way
        weights = sorted(Path(resolve_source(str(model_cfg.name_or_path), False)).glob("*.safetensors"))
        info["weights_sha256"] = {w.name: file_sha256(w) for w in weights}  # local folder: no revision
    if model_cfg.weights_note:
        info["weights_note"] = model_cfg.weights_note
    return info


# --- GGUF: dequantise once, cache as a plain Hugging Face folder ------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime): a 100 MB GGUF costs ~0.3 s to hash."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_cache_dir() -> Path:
    """Where converted models live: $PEFTBENCH_DATA_DIR/models (default ~/.cache/peftbench/models)."""
    from peftbench.assets import data_dir

    return data_dir() / "models"


def converted_folder(model_cfg: ModelConfig, gguf_path: Path) -> Path:
    """The cache folder for one GGUF file, keyed by the file's hash (a new file never hits an old cache)."""
    return model_cache_dir() / f"{model_cfg.name}-{file_sha256(gguf_path)[:12]}"


def weights_source(model_cfg: ModelConfig) -> str:
    """The folder or hub id transformers loads from; a GGUF source becomes its dequantised cache folder."""
    if not model_cfg.gguf_file:
        return resolve_source(model_cfg.name_or_path)
    gguf_path = Path(resolve_source(model_cfg.name_or_path, import_package=False)) / model_cfg.gguf_file
    if not gguf_path.is_file():
        raise AssetMissingError(f"model {model_cfg.name}: GGUF file {gguf_path} not found; {FETCH_HINT}")
    folder = converted_folder(model_cfg, gguf_path)
    if not (folder / "config.json").is_file():
        convert_gguf(gguf_path, folder)
    return str(folder)


def convert_gguf(gguf_path: Path, folder: Path) -> float:
    """Dequantise a GGUF checkpoint to fp32 and save it with its tokenizer as a normal HF folder.

    transformers reads GGUF itself (``gguf_file=``, through the ``gguf`` package) but dequantises on
    every load (~20 s for SmolLM2-135M on 2 cores); a saved folder then loads in about a second. The
    folder is written beside the target and renamed into place, so a crash never leaves half a cache.
    Returns the conversion time in seconds.
    """
    started = time.perf_counter()
    log.info("dequantising %s once into %s", gguf_path.name, folder)
    source, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    # The weights are plain fp32 tensors now; drop the GGUF quantizer so save_pretrained writes them as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        seconds = time.perf_counter() - started
        note = {"gguf_file": str(gguf_path), "sha256": file_sha256(gguf_path), "convert_seconds": seconds}
        (staging / "peftbench_source.json").write_text(json.dumps(note, indent=2) + "\n")
        os.replace(staging, folder)
    except OSError:
        if (folder / "config.json").is_file():  # another process finished first: keep its copy
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return seconds
