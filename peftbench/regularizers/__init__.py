"""Regularizers: extra loss terms built from conf/regularizer/ and called through the method hooks.

They are plug-ins the way methods are: a class registered with ``@REGULARIZERS.register`` under its
module's file name (``regularizer.impl``), with its knobs in a ``RegularizerConfig`` dataclass checked
before any weights load (peftbench/methods/build.py builds both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftbench.methods.base import Configurable, Knobs, TrainingHooks
from peftbench.registry import Registry


@dataclass
class RegularizerConfig(Knobs):
    """A regularizer's knobs: the keys of its YAML other than ``name`` and ``impl``."""

    PREFIX: ClassVar[str] = "regularizer"


class Regularizer(Configurable, TrainingHooks):
    """Base class of every regularizer: hooks only (``setup``, ``extra_loss``, ``callbacks``), no transform."""

    Config: ClassVar[type[RegularizerConfig]] = RegularizerConfig
    config: RegularizerConfig


REGULARIZERS: Registry[Regularizer] = Registry("regularizer", __name__)
