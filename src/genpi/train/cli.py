"""``genpi train``: train an adapter on a run directory's synthesized data.

Run as: genpi train RUN_DIR --method genpi [--preset quick] [--model smollm2-135m] [--seed N]
        [--out DIR]
"""

from __future__ import annotations

import argparse

# CLI flag -> TrainConfig field. Flags default to None: the config's value stands unless given.
FLAGS: dict[str, tuple[str, type, str]] = {
    "--lam": ("lam", float, "weight of L_SFT in the joint loss (paper: 0.7)"),
    "--prepend-prob": (
        "prepend_prob",
        float,
        "prepend: probability of keeping the prompt (1.0 or 0.5)",
    ),
    "--kd-mix": ("kd_mix", float, "seqkd-kld: weight of the NLL term"),
    "--kl-temperature": ("kl_temperature", float, "kld/seqkd-kld: softmax temperature"),
    "--lora-r": ("lora_r", int, "LoRA rank"),
    "--lora-alpha": ("lora_alpha", int, "LoRA alpha"),
    "--lora-dropout": ("lora_dropout", float, "LoRA dropout"),
    "--num-virtual-tokens": ("num_virtual_tokens", int, "soft-prompt: virtual tokens"),
    "--lr": ("learning_rate", float, "peak learning rate"),
    "--scheduler": ("lr_scheduler", str, "learning-rate schedule (transformers name)"),
    "--warmup-ratio": ("warmup_ratio", float, "fraction of steps spent warming up"),
    "--effective-batch": ("effective_batch", int, "sequences per optimizer step, all processes"),
    "--batch": ("per_device_batch", int, "sequences per forward pass per device"),
    "--epochs": ("epochs", float, "passes over the data"),
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps (overrides --epochs)"),
    "--max-grad-norm": ("max_grad_norm", float, "gradient-norm clipping"),
    "--seed": (
        "seed",
        int,
        "random seed (adapter init, data order, sampling); seed N other than 0 goes to "
        "RUN_DIR/adapters/METHOD-seedN, so seeds of one method sit side by side",
    ),
    "--max-length": (
        "max_length",
        int,
        "longest sequence to train on (default: the run's longest)",
    ),
    "--overlong": ("overlong", str, "sequences over --max-length: drop (counted) or error"),
    "--dtype": ("dtype", str, "auto, bf16, fp32 or fp16"),
    "--load-in-4bit": ("load_in_4bit", str, "auto (CUDA + bitsandbytes), yes or no"),
    "--save-steps": ("save_steps", int, "checkpoint every N steps (resume point)"),
    "--save-every-minutes": (
        "save_every_minutes",
        float,
        "also checkpoint after this many minutes of training since the last checkpoint, so a "
        "killed run loses at most that (0: by steps only)",
    ),
    "--logging-steps": ("logging_steps", int, "log losses every N steps"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.train.config import PRESETS
    from genpi.train.methods import METHODS

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by genpi synth")
    parser.add_argument(
        "--method",
        default="genpi",
        choices=list(METHODS),
        help="what to train (default: genpi); see docs/train.md",
    )
    parser.add_argument(
        "--preset",
        default="paper",
        choices=list(PRESETS),
        help="paper: the paper's settings; quick: a short CPU demo",
    )
    parser.add_argument(
        "--model", default=None, help="base model (default: the run's model, else smollm2-135m)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="adapter directory (default: RUN_DIR/adapters/METHOD, or METHOD-seedN for --seed N)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="full fine-tuning (seqkd, seqkd-kld, kld): writes a whole model",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="trade compute for memory",
    )
    parser.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch items of similar length so that padding is small (default: on); "
        "--no-group-by-length keeps random batches",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="train again over a finished adapter"
    )
    group = parser.add_argument_group("hyperparameters (default: the preset's value)")
    for flag, (_, kind, help_text) in FLAGS.items():
        group.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace):  # -> TrainConfig
    from genpi.train.config import make_config

    overrides = {
        field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in FLAGS.items()
    }
    overrides["full"] = args.full
    overrides["gradient_checkpointing"] = args.gradient_checkpointing
    overrides["group_by_length"] = args.group_by_length
    return make_config(args.preset, **overrides)


def main(args: argparse.Namespace) -> int:
    from genpi.train.trainer import train

    config = config_from_args(args)
    out = train(
        args.run_dir,
        args.method,
        config,
        model_ref=args.model,
        out_dir=args.out,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
