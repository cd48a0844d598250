"""Locate the shipped config trees, whether installed as a wheel or from a checkout.

A wheel carries ``conf/`` and ``experiments/`` under ``peftbench/_resources`` (force-included
at build time); an editable install or a plain checkout reads them from the repository root.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

PACKAGE_DIR = Path(__file__).resolve().parent  # the installed (or checked-out) peftbench package


def resource_root() -> Path:
    """The folder holding ``conf/`` and ``experiments/``."""
    bundled = PACKAGE_DIR / "_resources"
    if (bundled / "conf").is_dir():
        return bundled
    checkout = PACKAGE_DIR.parent
    if (checkout / "conf").is_dir():
        return checkout
    raise FileNotFoundError(
        f"peftbench configs not found under {bundled} or {checkout}; reinstall the package (pip install .)"
    )


def config_dir() -> Path:
    return resource_root() / "conf"


def experiments_dir() -> Path:
    return resource_root() / "experiments"


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config ``peftbench-train <overrides>`` would run, composed outside a Hydra app (plans, benches,
    tests). Hydra keeps one global instance; it is cleared before and after, so calls never leak state."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import peftbench.config  # noqa: F401  (registers the resolvers the configs use)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()
