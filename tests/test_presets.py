"""Presets are defined once per stage; ``internalize`` names them; train flags come from the config."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from genpi.internalize import PRESETS as RECIPES
from genpi.synth.config import PRESETS as SYNTH_PRESETS
from genpi.synth.config import SynthConfig
from genpi.train.cli import add_arguments, config_from_args, config_options
from genpi.train.config import PRESETS as TRAIN_PRESETS
from genpi.train.config import TrainConfig, make_config


def test_internalize_names_a_preset_of_each_stage():
    for recipe in RECIPES.values():
        assert recipe.synth_preset in SYNTH_PRESETS
        assert recipe.train_preset in TRAIN_PRESETS


def test_internalize_quick_keeps_the_demo_numbers():
    # The README's demo figures were measured with these (make demo = internalize --preset quick).
    quick = RECIPES["quick"]
    synth = SynthConfig.preset(quick.synth_preset)
    assert (synth.n, synth.num_gen_once, synth.heldout_fraction, synth.max_turns) == (
        16,
        8,
        0.25,
        2,
    )
    assert (synth.agent_max_new_tokens, synth.env_max_new_tokens) == (64, 48)
    assert (synth.output_max_new_tokens, synth.reason_max_new_tokens) == (64, 64)
    assert synth.input_max_new_tokens == 384
    train = make_config(quick.train_preset)
    assert (train.max_steps, train.learning_rate, train.per_device_batch) == (12, 1e-3, 2)
    assert (train.effective_batch, train.warmup_ratio, train.save_steps) == (4, 0.0, 10)
    assert (quick.methods, quick.eval_max_new_tokens, quick.compression) == (
        ("genpi", "sft"),
        64,
        (0.5,),
    )


def test_stage_quick_presets_keep_their_own_numbers():
    synth = SynthConfig.quick()
    assert (synth.max_turns, synth.agent_max_new_tokens, synth.output_max_new_tokens) == (3, 96, 96)
    assert SynthConfig.quick(n=4).n == 4
    # The CPU presets sample the (small) generator's lists cooler than the paper's T 1.0.
    temperatures = {name: SynthConfig.preset(name).input_temperature for name in SYNTH_PRESETS}
    assert temperatures == {"paper": 1.0, "quick": 0.7, "demo": 0.7, "cpu": 0.7}
    assert make_config("quick").max_steps == 30
    with pytest.raises(ValueError, match="unknown preset"):
        SynthConfig.preset("nope")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_train_flags_are_the_config_fields():
    options = dict(config_options())
    assert options["--lr"].name == "learning_rate" and options["--batch"].name == "per_device_batch"
    assert len(options) == len(config_options())  # no two fields share a flag
    # No flag given: every field is the preset's.
    assert config_from_args(_parser().parse_args(["run"])) == make_config("paper")
    assert config_from_args(_parser().parse_args(["run", "--preset", "quick"])) == make_config(
        "quick"
    )


@pytest.mark.parametrize("flag, option", config_options(), ids=lambda x: getattr(x, "name", x))
def test_each_train_flag_sets_its_field(flag, option):
    default = getattr(TrainConfig(), option.name)
    if isinstance(default, bool):
        argv = [flag] if not default else ["--no-" + flag[2:]]
        expected = not default
    else:
        value = {"overlong": "error", "dtype": "fp32", "load_in_4bit": "no"}.get(option.name)
        value = (
            value
            or {int: "9", float: "0.25", str: "linear"}[option.metadata["kind"] or type(default)]
        )
        argv, expected = [flag, value], (option.metadata["kind"] or type(default))(value)
    config = config_from_args(_parser().parse_args(["run", *argv]))
    assert getattr(config, option.name) == expected
    changed = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(config, f.name) != getattr(make_config("paper"), f.name)
    }
    assert changed == {option.name}


def test_a_run_recorded_under_the_old_preset_label_still_resumes():
    from genpi.train.trainer import same_setting

    # What internalize --preset quick recorded before the demo preset: train preset "quick",
    # max_steps 12 given on top. The values are the demo preset's: the same setting.
    old = make_config("quick", max_steps=12)
    assert old.preset == "quick" and same_setting(old, make_config("demo"))
    assert not same_setting(make_config("quick"), make_config("demo"))  # 30 steps vs 12


def test_internalize_reads_its_synthesis_flags_as_genpi_synth_does():
    from genpi.errors import GenpiError
    from genpi.internalize import add_arguments as add_recipe_arguments
    from genpi.internalize import synth_config_of

    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    base = ["prompt.json", "--out", "run", "--preset", "quick"]
    flags = ["--n", "5", "--max-turns", "1", "--max-new-tokens", "7", "--heldout-fraction", "0.5"]
    config = synth_config_of(
        parser.parse_args([*base, *flags, "--no-teacher-check"]), RECIPES["quick"]
    )
    assert (config.n, config.max_turns, config.heldout_fraction, config.teacher_check) == (
        5,
        1,
        0.5,
        False,
    )
    assert (config.agent_max_new_tokens, config.env_max_new_tokens) == (7, 7)
    assert (config.output_max_new_tokens, config.reason_max_new_tokens) == (7, 7)
    assert config.input_max_new_tokens == 384  # the quick synth preset's, not capped
    for bad, message in (
        (["--n", "0"], "--n must be at least 1, got 0"),
        (["--max-turns", "0"], "--max-turns must be at least 1, got 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
        (["--heldout-fraction", "1"], r"--heldout-fraction must be in \[0, 1\), got 1.0"),
        (["--heldout-fraction", "0"], "give --eval-inputs FILE too"),
    ):
        with pytest.raises(GenpiError, match=message):
            synth_config_of(parser.parse_args([*base, *bad]), RECIPES["quick"])
