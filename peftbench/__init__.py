"""peftbench: compare parameter-efficient fine-tuning methods under one training loop."""

__version__ = "0.1.0"
