"""Seeds side by side: where each seed's adapter goes, and what makes adapters seeds of one setting."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from genpi.errors import GenpiError
from genpi.train.config import make_config, setting_key
from genpi.train.trainer import adapter_dir


def test_seed_zero_keeps_the_method_directory_and_others_sit_beside_it(tmp_path):
    assert adapter_dir(tmp_path, "genpi") == tmp_path / "adapters" / "genpi"
    assert adapter_dir(tmp_path, "genpi", 0) == tmp_path / "adapters" / "genpi"
    assert adapter_dir(tmp_path, "genpi", 2) == tmp_path / "adapters" / "genpi-seed2"
    assert adapter_dir(tmp_path, "sft", 1) == tmp_path / "adapters" / "sft-seed1"


def test_setting_key_leaves_out_the_seed_and_bookkeeping_only():
    config = make_config("quick").to_dict()
    key = setting_key("genpi", config, "data")
    same = {**config, "seed": 3, "save_steps": 7, "logging_steps": 5, "save_every_minutes": 0.0}
    # Values derived on the machine (genpi_adapter.json records them too) are not the setting.
    assert setting_key("genpi", {**same, "grad_accum": 8, "processes": 4}, "data") == key
    # The preset's name is not the setting (resume ignores it too): its values are.
    assert setting_key("genpi", {**config, "preset": "demo"}, "data") == key
    assert setting_key("genpi", {**config, "learning_rate": 3e-4}, "data") != key
    assert setting_key("genpi", {**config, "lam": 0.5}, "data") != key
    assert setting_key("sft", config, "data") != key
    assert setting_key("genpi", config, "other data") != key


def test_train_cli_seed_reaches_the_config():
    from genpi.train.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["run", "--seed", "2"])).seed == 2
    assert config_from_args(parser.parse_args(["run"])).seed == 0


def test_internalize_seeds_flag():
    from genpi.internalize import seeds_of

    assert seeds_of(argparse.Namespace(seeds=None)) == [0]
    assert seeds_of(argparse.Namespace(seeds="0,1,2")) == [0, 1, 2]
    assert seeds_of(argparse.Namespace(seeds=" 3 , 5 ")) == [3, 5]
    for bad in ("0,x", "1,1", ","):
        with pytest.raises(GenpiError, match="--seeds"):
            seeds_of(argparse.Namespace(seeds=bad))


def test_train_puts_each_seed_in_its_own_directory(tmp_path, tiny_model_dir):
    from genpi.train.trainer import train
    from test_train_methods import PROMPT, tiny_config
    from test_train_rundir import make_run_dir

    run = make_run_dir(tmp_path / "run", PROMPT, n=4)
    outs = {}
    for seed in (1, 0):
        config = tiny_config(max_steps=1, seed=seed)
        outs[seed] = train(run, "sft", config, model_ref=str(tiny_model_dir), echo=lambda _: None)
    assert outs == {0: run / "adapters" / "sft", 1: run / "adapters" / "sft-seed1"}
    infos = [json.loads((Path(o) / "genpi_adapter.json").read_text()) for o in outs.values()]
    assert [i["config"]["seed"] for i in infos] == [1, 0]
    keys = {setting_key(i["method"], i["config"], i["data_fingerprint"]) for i in infos}
    assert len(keys) == 1  # seeds of one setting
    from genpi.evaluate.inputs import find_adapters

    assert [p.name for p in find_adapters(run)] == ["sft", "sft-seed1"]
