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


def option(default: Any, help: str, *, flag: str | None = None, kind: type | None = None) -> Any:
    """A config field that is also a ``genpi train`` flag: the field carries its help (and the
    flag's name when it is not ``--field-name``, the value's type when the default is None), so
    the CLI is built from the dataclass and no second table restates the defaults."""
    return field(default=default, metadata={"help": help, "flag": flag, "kind": kind})


@dataclass
class TrainConfig:
    # -- objective --------------------------------------------------------------------------
    lam: float = option(0.7, "weight of L_SFT in the joint loss (paper: 0.7)")
    kd_mix: float = option(0.5, "seqkd-kld: weight of the NLL term")
    prepend_prob: float = option(1.0, "prepend: probability of keeping the prompt (1.0 or 0.5)")
    kl_temperature: float = option(1.0, "kld/seqkd-kld: softmax temperature")
    # -- adapter ----------------------------------------------------------------------------
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    target_modules: str | list[str] = "all-linear"
    num_virtual_tokens: int = option(128, "soft-prompt: virtual tokens")
    # Full fine-tuning (seqkd, seqkd-kld, kld): saves a whole model, not an adapter.
    full: bool = option(False, "full fine-tuning (seqkd, seqkd-kld, kld): writes a whole model")
    # -- optimisation -----------------------------------------------------------------------
    learning_rate: float = option(1e-4, "peak learning rate", flag="--lr")
    lr_scheduler: str = option(
        "cosine", "learning-rate schedule (transformers name)", flag="--scheduler"
    )
    warmup_ratio: float = option(0.03, "fraction of steps spent warming up")
    effective_batch: int = option(32, "sequences per optimizer step, all processes")
    per_device_batch: int = option(4, "sequences per forward pass per device", flag="--batch")
    epochs: float = option(10.0, "passes over the data")
    max_steps: int = option(-1, "stop after this many optimizer steps (overrides --epochs)")
    max_grad_norm: float = option(1.0, "gradient-norm clipping")
    weight_decay: float = 0.0
    seed: int = option(
        0,
        "random seed (adapter init, data order, sampling); seed N other than 0 goes to "
        "RUN_DIR/adapters/METHOD-seedN, so seeds of one method sit side by side",
    )
    # -- data -------------------------------------------------------------------------------
    # None: the longest sequence of the run (nothing is cut).
    max_length: int | None = option(
        None, "longest sequence to train on (default: the run's longest)", kind=int
    )
    overlong: str = option("drop", "sequences over --max-length: drop (counted) or error")
    # Batch items of similar length (random pools sorted by length, batches in random order), so
    # that padding is small. Changes the order of the data, not the objective.
    group_by_length: bool = option(
        True,
        "batch items of similar length so that padding is small (default: on); "
        "--no-group-by-length keeps random batches",
    )
    # -- precision and memory ---------------------------------------------------------------
    # auto: bf16 on CUDA and bf16-capable CPUs, else fp32.
    dtype: str = option("auto", "auto, bf16, fp32 or fp16")
    # auto: NF4 + double quantisation when CUDA and bitsandbytes.
    load_in_4bit: str = option("auto", "auto (CUDA + bitsandbytes), yes or no")
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    # -- bookkeeping ------------------------------------------------------------------------
    logging_steps: int = option(1, "log losses every N steps")
    save_steps: int = option(50, "checkpoint every N steps (resume point)")
    # Also checkpoint after this many minutes of training since the last checkpoint: with slow
    # steps (a CPU, long PG targets) save_steps alone can leave a long run with nothing saved.
    save_every_minutes: float = option(
        10.0,
        "also checkpoint after this many minutes of training since the last checkpoint, so a "
        "killed run loses at most that (0: by steps only)",
    )
    save_total_limit: int = 2
    preset: str = "paper"

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
    # The preset's name is left out as resuming leaves it out: its values are in the other fields.
    known = {f.name for f in dataclasses.fields(TrainConfig)} - set(SEED_FIELDS) - {"preset"}
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
# `genpi internalize --preset quick` (make demo): quick cut to 12 steps, so that two methods train
# within the demo's ~15 minutes on 2 cores (the README's demo figures were measured with it).
PRESETS["demo"] = {**PRESETS["quick"], "max_steps": 12}


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
