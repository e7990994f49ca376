"""A sampler that batches items of similar length, so that padding is small.

A micro-batch is padded to its longest sequence per stream; with random batches a GenPI step pads
every PG sequence to the longest of its batch. Shuffling, then sorting pools of a few
micro-batches by length, then shuffling the micro-batches keeps the order random (each epoch a
new one, from the global torch RNG the Trainer seeds, as its default random sampler does) while
neighbours in a micro-batch have similar lengths. transformers' ``LengthGroupedSampler`` sorts
pools of 50 optimizer steps: on a run of a few hundred items that is one pool, the same batches
every epoch.

Only the order changes: each loss term is still divided by the target tokens of all the
micro-batches of its optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

POOL_BATCHES = 16  # micro-batches per sorted pool: more means less padding and less randomness


def item_length(item: dict[str, Any]) -> int:
    """An item's tokens over all its streams (what its forward passes cost)."""
    return sum(len(sample.input_ids) for sample in item.values())


def length_grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    pool_batches: int = POOL_BATCHES,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Item indices in batches of ``batch_size`` similar lengths, in a random order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [i for b in shuffled for i in batches[b]]


class LengthGroupedSampler(torch.utils.data.Sampler):
    def __init__(self, lengths: Sequence[int], batch_size: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_indices(self.lengths, self.batch_size))


def length_grouped_sampler(dataset: Any, batch_size: int) -> LengthGroupedSampler:
    return LengthGroupedSampler([item_length(dataset[i]) for i in range(len(dataset))], batch_size)
