"""``genpi train``: train an adapter on a run directory's synthesized data.

Run as: genpi train RUN_DIR --method genpi [--preset quick] [--model smollm2-135m] [--seed N]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def config_options() -> list[tuple[str, Any]]:
    """(flag, field) for every TrainConfig field that carries its help: the flags of this verb."""
    from genpi.train.config import TrainConfig

    return [
        (f.metadata["flag"] or "--" + f.name.replace("_", "-"), f)
        for f in dataclasses.fields(TrainConfig)
        if "help" in f.metadata
    ]


def _add_option(group: Any, flag: str, option: Any) -> None:
    # Every flag defaults to None: the preset's value (the config's field) stands unless given.
    common = {"dest": option.name, "default": None, "help": option.metadata["help"]}
    if option.default is False:
        group.add_argument(flag, action="store_true", **common)
    elif option.default is True:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    else:
        group.add_argument(flag, type=option.metadata["kind"] or type(option.default), **common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.train.config import PRESETS
    from genpi.train.methods import METHODS

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by genpi synth")
    parser.add_argument(
        "--method",
        default="genpi",
        choices=list(METHODS),
        help="what to train (default: genpi; the methods are listed below); see docs/train.md",
    )
    parser.epilog = "methods (the paper's name in brackets):\n" + "\n".join(
        f"  {m.name}: {m.summary}" + (f" [{m.paper_row}]" if m.paper_row else "")
        for m in METHODS.values()
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--preset",
        default="paper",
        choices=list(PRESETS),
        help="paper: the paper's settings; quick: a short CPU demo; demo: quick cut to 12 "
        "steps (what `genpi internalize --preset quick` trains)",
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
        "--overwrite", action="store_true", help="train again over a finished adapter"
    )
    group = parser.add_argument_group("hyperparameters (default: the preset's value)")
    for flag, option in config_options():
        _add_option(group, flag, option)


def config_from_args(args: argparse.Namespace):  # -> TrainConfig
    from genpi.train.config import make_config

    overrides = {option.name: getattr(args, option.name) for _, option in config_options()}
    return make_config(args.preset, **overrides)


def unread_options(args: argparse.Namespace, method: str) -> list[str]:
    """The flags given that only other methods read (``Method.flags``): this one ignores them."""
    from genpi.train.methods import METHODS

    own = set(METHODS[method].flags)
    others = {name for m in METHODS.values() for name in m.flags} - own
    return [
        flag
        for flag, option in config_options()
        if option.name in others and getattr(args, option.name, None) is not None
    ]


def main(args: argparse.Namespace) -> int:
    import logging

    from genpi.train.trainer import train

    config = config_from_args(args)
    for flag in unread_options(args, args.method):
        logging.getLogger(__name__).warning("%s is not read by --method %s", flag, args.method)
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
