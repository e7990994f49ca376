"""How far a score can move by chance: the spread over training seeds, a bootstrap over inputs,
and whether two systems' intervals overlap. Pure functions; ``genpi compare`` uses them.

- seed spread: the mean of one method's scores over its seeds, and their min and max;
- bootstrap: resample the evaluation inputs with replacement (one fixed index matrix per
  evaluation set, shared by every system, so that systems are compared on the same resamples)
  and take the percentile interval of the score; every metric is a ratio of per-item sums
  (``sum(numerators) / sum(denominators)``), so the mean of ROUGE-L, the share of answers in
  format and the agreement among items where the teacher acted all resample the same way;
- within noise: two intervals that overlap;
- gap closed: (NLL_base - NLL_system) / (NLL_base - NLL_teacher), 1 for the teacher, 0 for the
  base model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_SEED = 0  # fixed: the same run directory always gives the same intervals
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95

Interval = tuple[float, float]


@dataclass(frozen=True)
class Spread:
    """One metric over a method's seeds (the seeds whose score is defined)."""

    mean: float
    min: float
    max: float
    n: int

    @property
    def interval(self) -> Interval:
        return (self.min, self.max)


def _defined(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def seed_spread(values: Sequence[float | None]) -> Spread | None:
    """Mean, min and max of the defined values (None and NaN skipped); None when there is none."""
    kept = [float(v) for v in values if _defined(v)]  # type: ignore[arg-type]
    if not kept:
        return None
    return Spread(mean=sum(kept) / len(kept), min=min(kept), max=max(kept), n=len(kept))


def gap_closed(
    nll_base: float | None, nll_system: float | None, nll_teacher: float | None
) -> float | None:
    """Share of the base model's NLL gap to the teacher that the system closes; None when a value
    is missing or the base is as likely as the teacher (there is no gap to close)."""
    if not (_defined(nll_base) and _defined(nll_system) and _defined(nll_teacher)):
        return None
    gap = nll_base - nll_teacher  # type: ignore[operator]
    if gap == 0:
        return None
    return (nll_base - nll_system) / gap  # type: ignore[operator]


def overlaps(a: Interval | None, b: Interval | None) -> bool | None:
    """Whether two closed intervals share a point; None when either is unknown."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def hull(*intervals: Interval | None) -> Interval | None:
    """The smallest interval holding every given one (None entries skipped)."""
    known = [i for i in intervals if i is not None]
    if not known:
        return None
    return (min(i[0] for i in known), max(i[1] for i in known))


# -- the bootstrap -------------------------------------------------------------------------------


def bootstrap_indices(
    n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """``resamples`` x ``n`` indices drawn with replacement from range(n), from a fixed seed."""
    if n < 1 or resamples < 1:
        return np.zeros((0, max(n, 0)), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_ratio(
    numerators: Sequence[float], denominators: Sequence[float], indices: np.ndarray
) -> np.ndarray:
    """``sum(num[idx]) / sum(den[idx])`` for each row of ``indices``; NaN where the resample's
    denominator is 0 (e.g. no resampled item where the teacher acted)."""
    num = np.asarray(numerators, dtype=np.float64)[indices].sum(axis=1)
    den = np.asarray(denominators, dtype=np.float64)[indices].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def resampled_gap_closed(base: np.ndarray, system: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """``gap_closed`` on each resample (the three NLLs of one resample); NaN where undefined."""
    gap = base - teacher
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap != 0, (base - system) / np.where(gap != 0, gap, 1.0), np.nan)


def percentile_interval(
    samples: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """The central ``confidence`` percentile interval of the defined samples (NaN skipped),
    numpy's linear interpolation between order statistics; None when none is defined."""
    values = np.asarray(samples, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    # Rounded so that 0.9 asks for the 5th percentile, not the 4.999...th.
    tail = round((1.0 - confidence) * 50, 9)
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi))


# -- per-item parts of each metric ---------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


def item_parts(row: dict[str, Any], metric: str) -> tuple[float, float]:
    """(numerator, denominator) of one item of ``eval/<set>.answers.jsonl`` for ``metric``, so
    that sum(numerators) / sum(denominators) over a set's items is the set's score (see
    metrics.py): format counts every item, agreement only items where the teacher acted, the
    means every item with a value."""
    action, reference = row.get("action"), row.get("reference_action")
    if metric == "format":
        return (float(action is not None), 1.0)
    if metric in ("action_type", "exact_action"):
        if reference is None:
            return (0.0, 0.0)
        same = action is not None and action[0] == reference[0]
        if same and metric == "exact_action":
            same = _norm(str(action[1])) == _norm(str(reference[1]))
        return (float(same), 1.0)
    value = row.get(metric)
    if not _defined(value):
        return (0.0, 0.0)
    return (float(value), 1.0)


def clusters(ids: Sequence[str], *, multi_turn: bool) -> list[int]:
    """The cluster (the unit resampled) of each item, numbered in first-seen order: each item its
    own for single-turn sets; for multi-turn sets (item ids ``<conversation>#<turn>``) the
    conversation, since the turns of one conversation are not independent draws."""
    keys = [i.rsplit("#", 1)[0] if multi_turn else i for i in ids]
    number: dict[str, int] = {}
    return [number.setdefault(k, len(number)) for k in keys]


def cluster_parts(
    rows: Sequence[dict[str, Any]], metric: str, cluster_of: Sequence[int]
) -> tuple[list[float], list[float]]:
    """Per-cluster sums of ``item_parts`` (``cluster_of``: each row's cluster number)."""
    size = max(cluster_of, default=-1) + 1
    num, den = [0.0] * size, [0.0] * size
    for row, cluster in zip(rows, cluster_of, strict=True):
        n, d = item_parts(row, metric)
        num[cluster] += n
        den[cluster] += d
    return num, den
