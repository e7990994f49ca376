"""Training: the GenPI joint loss, the paper's baselines and ablations, PEFT adapters.

``train(run_dir, method, config, model_ref=...)`` is the entry point (``genpi train`` on the CLI);
it imports torch lazily so that ``genpi --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from genpi.train.config import PRESETS, TrainConfig, make_config


def train(*args: Any, **kwargs: Any) -> Any:
    from genpi.train.trainer import train as _train

    return _train(*args, **kwargs)


__all__ = ["PRESETS", "TrainConfig", "make_config", "train"]
