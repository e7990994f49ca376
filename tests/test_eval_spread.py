"""Seed spread, gap closed, interval overlap and the bootstrap, exactly on hand-made score lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genpi.evaluate import metrics, spread


def test_seed_spread_is_mean_min_max_of_the_defined_scores():
    found = spread.seed_spread([0.25, 0.75, 0.5])
    assert (found.mean, found.min, found.max, found.n) == (0.5, 0.25, 0.75, 3)
    assert found.interval == (0.25, 0.75)
    # A seed whose score is undefined (the teacher never acted) is left out, not counted as 0.
    found = spread.seed_spread([None, 1.0, float("nan"), 0.5])
    assert (found.mean, found.min, found.max, found.n) == (0.75, 0.5, 1.0, 2)
    one = spread.seed_spread([0.375])
    assert (one.mean, one.min, one.max, one.n) == (0.375, 0.375, 0.375, 1)
    assert spread.seed_spread([]) is None
    assert spread.seed_spread([None, None]) is None


def test_gap_closed():
    assert spread.gap_closed(2.5, 1.0, 0.5) == 0.75
    assert spread.gap_closed(2.5, 0.5, 0.5) == 1.0  # the teacher
    assert spread.gap_closed(2.5, 2.5, 0.5) == 0.0  # the base model
    assert spread.gap_closed(2.5, 3.5, 0.5) == -0.5  # worse than the base model
    assert spread.gap_closed(1.0, 0.75, 1.0) is None  # no gap to close
    assert spread.gap_closed(None, 1.0, 0.5) is None
    assert spread.gap_closed(2.5, None, 0.5) is None


def test_overlaps_and_hull():
    assert spread.overlaps((0.5, 0.75), (0.7, 0.9)) is True
    assert spread.overlaps((0.5, 0.75), (0.75, 0.9)) is True  # a shared end point
    assert spread.overlaps((0.7, 0.9), (0.5, 0.75)) is True
    assert spread.overlaps((0.5, 0.6), (0.625, 0.9)) is False
    assert spread.overlaps((0.625, 0.9), (0.5, 0.6)) is False
    assert spread.overlaps((0.5, 0.6), None) is None
    assert spread.hull((0.5, 0.6), None, (0.25, 0.55)) == (0.25, 0.6)
    assert spread.hull(None, None) is None


def test_percentile_interval():
    samples = list(range(101))  # the p-th percentile of 0..100 is p
    assert spread.percentile_interval(samples, 0.9) == (5.0, 95.0)
    assert spread.percentile_interval(samples, 0.95) == (2.5, 97.5)
    # Linear interpolation between order statistics, NaN samples skipped.
    assert spread.percentile_interval([0.0, 1.0, float("nan")], 0.5) == (0.25, 0.75)
    assert spread.percentile_interval([float("nan")], 0.95) is None
    assert spread.percentile_interval([], 0.95) is None


def test_resampled_ratio_on_hand_made_indices():
    indices = np.array([[0, 1, 2], [2, 2, 2], [0, 0, 1], [1, 1, 1]])
    numerators, denominators = [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]
    got = spread.resampled_ratio(numerators, denominators, indices)
    assert got[0] == 1.0  # (1 + 0 + 1) / (1 + 1 + 0)
    assert math.isnan(got[1])  # no resampled item with a denominator
    assert got[2] == 2 / 3
    assert got[3] == 0.0


def test_resampled_gap_closed():
    base = np.array([2.5, 1.0, 3.0])
    system = np.array([1.0, 0.5, 3.0])
    teacher = np.array([0.5, 1.0, 1.0])
    got = spread.resampled_gap_closed(base, system, teacher)
    assert got[0] == 0.75 and math.isnan(got[1]) and got[2] == 0.0


def test_bootstrap_indices_are_fixed_by_the_seed():
    first = spread.bootstrap_indices(26, 200)
    assert first.shape == (200, 26)
    assert first.min() >= 0 and first.max() <= 25
    assert np.array_equal(first, spread.bootstrap_indices(26, 200))
    assert not np.array_equal(first, spread.bootstrap_indices(26, 200, seed=1))
    assert spread.bootstrap_indices(0, 200).shape == (0, 0)
    assert spread.bootstrap_indices(5, 0).shape == (0, 5)


def _row(action, reference, **values):
    return {"id": "x", "action": action, "reference_action": reference, **values}


def test_item_parts_rebuild_each_metric():
    rows = [
        _row(["bash", "ls  -l"], ["bash", "ls -l"], rouge_l=0.5, nll=1.0),  # exact after spaces
        _row(["bash", "pwd"], ["bash", "ls"], rouge_l=0.25, nll=2.0),  # same type only
        _row(None, ["answer", "4"], rouge_l=0.0, nll=None),  # no action; NLL undefined
        _row(["finish", ""], None, rouge_l=1.0, nll=0.5),  # the teacher did not act
    ]

    def score(metric):
        parts = [spread.item_parts(r, metric) for r in rows]
        return sum(n for n, _ in parts) / sum(d for _, d in parts)

    assert score("format") == 0.75
    assert score("action_type") == 2 / 3
    assert score("exact_action") == 1 / 3
    assert score("rouge_l") == 0.4375
    assert score("nll") == pytest.approx(3.5 / 3)
    # The same values as metrics.py computes on the same answers.
    actions = [tuple(r["action"]) if r["action"] else None for r in rows]
    teacher = [tuple(r["reference_action"]) if r["reference_action"] else None for r in rows]
    assert score("format") == metrics.format_rate(actions)
    assert score("action_type") == metrics.action_type_agreement(actions, teacher)
    assert score("exact_action") == metrics.exact_action_agreement(actions, teacher)
    assert score("nll") == pytest.approx(metrics.mean([r["nll"] for r in rows]))


def test_clusters_are_conversations_in_multi_turn_sets():
    ids = ["a#1", "a#3", "b#1", "c#1", "b#3"]
    assert spread.clusters(ids, multi_turn=True) == [0, 0, 1, 2, 1]
    assert spread.clusters(ids, multi_turn=False) == [0, 1, 2, 3, 4]
    rows = [_row(None, None, rouge_l=v) for v in (0.5, 0.25, 1.0, 0.0, 0.75)]
    num, den = spread.cluster_parts(rows, "rouge_l", [0, 0, 1, 2, 1])
    assert (num, den) == ([0.75, 1.75, 0.0], [2.0, 2.0, 1.0])
