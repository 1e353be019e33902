"""DeepSeekMath-style extensions to TRL's GRPO trainer.

`from grpo_ext import GRPOConfig, GRPOTrainer` is a drop-in replacement for `from trl import ...`.
Importing this package is cheap: the trainer (and TRL) load on first attribute access.
"""

__all__ = ["GRPOConfig", "GRPOTrainer"]

_LAZY = {"GRPOConfig": "grpo_ext.config", "GRPOTrainer": "grpo_ext.trainer"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grpo_ext' has no attribute {name!r}")
