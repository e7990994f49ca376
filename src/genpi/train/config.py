"""Every training hyperparameter, in one dataclass, with the paper's defaults and named presets.

The defaults follow GenPI (Shin et al., NAACL 2025) and its official scripts: LoRA r 16, alpha 32,
dropout 0.05 on all linear layers, lr 1e-4 with a cosine schedule and 3% warmup, effective batch
32, 10 epochs, gradient-norm clipping at 1.0, lambda 0.7. The config is written as
``train_config.json`` beside the adapter; CLI flags override single fields, nothing else sets a
default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError


class ConfigError(GenpiError, ValueError):
    pass


@dataclass
class TrainConfig:
    # -- objective --------------------------------------------------------------------------
    lam: float = 0.7  # joint loss: lam * L_SFT + (1 - lam) * L_PG
    kd_mix: float = 0.5  # seqkd-kld: kd_mix * NLL + (1 - kd_mix) * KL
    prepend_prob: float = 1.0  # prepend: probability that an example keeps the prompt in its input
    kl_temperature: float = 1.0  # kld / seqkd-kld: softmax temperature of teacher and student
    # -- adapter ----------------------------------------------------------------------------
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    num_virtual_tokens: int = 128  # soft-prompt
    full: bool = False  # full fine-tuning (seqkd, seqkd-kld): saves a whole model, not an adapter
    # -- optimisation -----------------------------------------------------------------------
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    effective_batch: int = 32  # per_device_batch * grad_accum * processes
    per_device_batch: int = 4
    epochs: float = 10.0
    max_steps: int = -1  # > 0 overrides epochs
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    # -- data -------------------------------------------------------------------------------
    max_length: int | None = None  # None: the longest sequence of the run (nothing is cut)
    overlong: str = "drop"  # what to do with sequences over max_length: drop | error
    # Batch items of similar length (random pools sorted by length, batches in random order), so
    # that padding is small. Changes the order of the data, not the objective.
    group_by_length: bool = True
    # -- precision and memory ---------------------------------------------------------------
    dtype: str = "auto"  # auto: bf16 on CUDA and bf16-capable CPUs, else fp32
    load_in_4bit: str = "auto"  # auto: NF4 + double quantisation when CUDA and bitsandbytes
    gradient_checkpointing: bool = False
    # -- bookkeeping ------------------------------------------------------------------------
    logging_steps: int = 1
    save_steps: int = 50  # checkpoint interval (resume point after an interruption)
    # Also checkpoint after this many minutes of training since the last checkpoint: with slow
    # steps (a CPU, long PG targets) save_steps alone can leave a long run with nothing saved.
    # 0 checkpoints by steps only.
    save_every_minutes: float = 10.0
    save_total_limit: int = 2
    preset: str = "paper"
    extra: dict[str, Any] = field(default_factory=dict)

    def grad_accum(self, processes: int = 1) -> int:
        per_step = self.per_device_batch * processes
        return max(1, round(self.effective_batch / per_step))

    def validate(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"--lam must be in [0, 1], got {self.lam}")
        if not 0.0 <= self.prepend_prob <= 1.0:
            raise ConfigError(f"--prepend-prob must be in [0, 1], got {self.prepend_prob}")
        if not 0.0 <= self.kd_mix <= 1.0:
            raise ConfigError(f"--kd-mix must be in [0, 1], got {self.kd_mix}")
        if self.overlong not in ("drop", "error"):
            raise ConfigError(f"--overlong must be drop or error, got {self.overlong!r}")
        if self.load_in_4bit not in ("auto", "yes", "no"):
            raise ConfigError(f"--load-in-4bit must be auto, yes or no, got {self.load_in_4bit!r}")
        if self.per_device_batch < 1 or self.effective_batch < 1:
            raise ConfigError("--batch and --effective-batch must be at least 1")
        if self.save_every_minutes < 0:
            raise ConfigError(
                f"--save-every-minutes must be 0 (steps only) or more, got {self.save_every_minutes}"
            )
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(
                f"--max-length {self.max_length} is too small; give at least 8 tokens"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Fields that change neither the objective nor the data: adapters that differ only in these are
# runs of one setting, so `genpi compare` pools them as seeds of one row.
SEED_FIELDS = ("seed", "logging_steps", "save_steps", "save_every_minutes", "save_total_limit")


def setting_key(method: str, config: dict[str, Any], data_fingerprint: str | None = None) -> str:
    """A short hash of what an adapter was trained with, its seed (and bookkeeping) left out.

    ``config`` is the recorded config (genpi_adapter.json's, which also holds derived values such
    as the process count): only TrainConfig's own fields count, so one setting trained on another
    machine is still the same setting."""
    known = {f.name for f in dataclasses.fields(TrainConfig)} - set(SEED_FIELDS)
    chosen = {k: v for k, v in config.items() if k in known}
    blob = json.dumps([method, chosen, data_fingerprint], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Presets change a few fields of the paper's defaults; flags then override single fields.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # A CPU demo: a few dozen optimizer steps on small batches, a higher lr so they show.
    "quick": {
        "per_device_batch": 2,
        "effective_batch": 4,
        "epochs": 1.0,
        "max_steps": 30,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "save_steps": 10,
    },
}


def make_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown config fields {unknown}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    config = TrainConfig(preset=preset, **values)
    config.validate()
    return config
