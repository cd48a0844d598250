"""Helpers shared by the hand-written methods (not a method: the registry skips ``_`` modules).

Methods that inject new modules mark them with :func:`mark_added` (or, when a library injects them,
:func:`mark_created`), so code that must tell new weights from pretrained ones (the L2-SP regularizer)
asks the model, never which method built it.
"""

from __future__ import annotations

from torch import nn

from peftbench.errors import ConfigError

ADDED_FLAG = "peftbench_added"  # attribute set on modules a method injected (no pretrained values)


def mark_added(module: nn.Module) -> nn.Module:
    """Flag ``module`` as injected by a method: its weights start from an init, not from pretraining."""
    setattr(module, ADDED_FLAG, True)
    return module


def mark_created(model: nn.Module, pretrained: set[int]) -> None:
    """Flag every module of ``model`` whose own parameters are all new: none is in ``pretrained`` (the ids of
    the parameters the model had before a library such as peft injected its modules).

    Injected modules hold only new parameters (peft's LoRA factors, IA3 vectors, soft prompts, the trained
    copies of ``modules_to_save``); a pretrained parameter that stays trainable (peft's ``bias: all``) keeps
    its own, unflagged module, so it counts as pretrained.
    """
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(id(param) in pretrained for param in own):
            mark_added(module)


def added_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that live in modules flagged by :func:`mark_added`."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        # The module's own attribute: peft's wrappers forward unknown attributes to the module they wrap,
        # so getattr would report a wrapper (and the original module inside it) as flagged.
        if vars(module).get(ADDED_FLAG, False):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters())
    return names


def in_modules(parameter_name: str, module_names: list[str] | tuple[str, ...]) -> bool:
    """True when the parameter belongs to one of the named modules (a full dotted path or a leaf name).

    Matching a leaf name anywhere in the path is what ``set_head_trainable`` does too, so a head
    named ``classifier`` also covers peft's ``classifier.modules_to_save.default.weight``.
    """
    parts = parameter_name.split(".")[:-1]
    return any(parameter_name.startswith(f"{name}.") or name in parts for name in module_names)


def transformer_layers(model: nn.Module, layers_path: str) -> nn.ModuleList:
    """The block list at ``model.layers_path``; a wrong path is a config error naming the key."""
    try:
        layers = model.get_submodule(layers_path)
    except AttributeError:
        raise ConfigError(
            f"model.layers_path={layers_path}: no such module in this model (set it in the model YAML)"
        ) from None
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"model.layers_path={layers_path}: expected a list of blocks, got {type(layers).__name__}"
        )
    return layers
