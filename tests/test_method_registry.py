"""What the method registry says is what `genpi compare` and `genpi train` use."""

from __future__ import annotations

import argparse

from genpi.evaluate import compare
from genpi.train.cli import add_arguments, unread_options
from genpi.train.methods import METHODS, ablations, full_tuning_methods


def test_compare_takes_the_ablation_rows_from_the_registry():
    # The paper's Tables 2-3, in its order.
    assert compare.ABLATIONS == (
        "genpi",
        "genpi-no-reason",
        "genpi-no-prompt",
        "genpi-r-given-p",
        "genpi-p-given-r",
        "pg",
        "sft",
    )
    assert tuple(ablations()) == compare.ABLATIONS
    assert set(compare.ABLATIONS) - {"genpi", "sft"} == compare.ABLATION_ONLY


def test_full_tuning_is_what_the_methods_allow():
    assert full_tuning_methods() == [m.name for m in METHODS.values() if m.allows_full]
    assert set(full_tuning_methods()) == {"kld", "seqkd", "seqkd-kld"}


def test_flags_of_other_methods_are_named():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["run", "--method", "sft", "--lam", "0.5", "--kd-mix", "0.3"])
    assert unread_options(args, "sft") == ["--lam", "--kd-mix"]
    args = parser.parse_args(["run", "--lam", "0.5", "--lr", "1e-3"])
    assert unread_options(args, "genpi") == []  # its own field, and one every method reads
    assert "genpi: lam * L_SFT" in parser.epilog and "[SeqKD+KLD]" in parser.epilog


def test_full_on_a_method_without_it_names_the_ones_with_it():
    import pytest

    from genpi.errors import GenpiError
    from genpi.train.config import make_config
    from genpi.train.methods import get_method
    from genpi.train.trainer import _check_method

    _check_method(make_config(full=True), get_method("seqkd"))
    with pytest.raises(
        GenpiError, match="--full is for kld, seqkd, seqkd-kld; 'genpi' trains lora"
    ):
        _check_method(make_config(full=True), get_method("genpi"))
