"""Locate the shipped config trees, whether installed as a wheel or from a checkout.

A wheel carries ``conf/`` and ``experiments/`` under ``peftbench/_resources`` (force-included
at build time); an editable install or a plain checkout reads them from the repository root.
"""

from __future__ import annotations

from pathlib import Path

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
