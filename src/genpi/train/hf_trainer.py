"""The transformers ``Trainer`` of ``genpi train``: GenPI's losses, token-count normalisation
and loss log (``GenpiTrainer``), and the time-based checkpoint callback (``SaveEveryMinutes``).

This module imports torch and transformers when it is imported, so only ``genpi.train.trainer``'s
``train`` imports it, when it runs: ``genpi --help``, ``genpi.train.trainer.adapter_dir`` and the
estimate's plan stay free of them.

Run as: genpi train RUN_DIR --method genpi   (this module is the loop behind it)
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback

from genpi.adapter import token_logits
from genpi.train import hidden as hs
from genpi.train.config import TrainConfig
from genpi.train.losses import (
    DEFAULT_CHUNK,
    IGNORE,
    chunked_kl_sum,
    chunked_nll_sum,
    kl_sum,
    nll_sum,
    per_token,
    target_ids,
)
from genpi.train.methods import Method

log = logging.getLogger(__name__)


@contextmanager
def adapter_only_saves(model: Any) -> Iterator[None]:
    """While inside, ``model.save_pretrained`` writes the adapter without PEFT's "auto" check of
    the embeddings, which looks the base's config.json up on the Hub when
    ``base_model_name_or_path`` is a hub id (ours is, for vLLM): a network call at every
    checkpoint. genpi's adapters never train the embeddings, so there is nothing to look up."""
    save = getattr(model, "save_pretrained", None)
    if save is None or not hasattr(model, "peft_config"):
        yield
        return
    model.save_pretrained = functools.partial(save, save_embedding_layers=False)
    try:
        yield
    finally:
        del model.save_pretrained  # the class's method again


class GenpiTrainer(Trainer):
    # compute_loss divides by the token count of the whole optimizer step itself.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        method: Method,
        genpi_config: TrainConfig,
        teacher: Any = None,
        loss_path: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Older transformers decide "already scaled" from this flag rather than the one above.
        self.model_accepts_loss_kwargs = True
        self.method = method
        self.genpi_config = genpi_config
        self.teacher = teacher  # a frozen copy for full fine-tuning; else the adapter is disabled
        self.loss_path = loss_path
        self.streams = sorted({stream for _, stream in method.terms.values()})
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.tokens_seen: dict[str, int] = {}
        # Decided on the first batch (see genpi.train.hidden): project only the labelled
        # positions, in chunks, or (fallback) take the model's full logits.
        self.chunk_size = DEFAULT_CHUNK
        self.loss_path_used: str | None = None  # "hidden" | "full-logits"
        self._split: Any = None
        self._teacher_split: Any = None
        self._prefix: Any = None  # the teacher's shared prompt prefix (SharedPrefix)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        with adapter_only_saves(self.model):
            super()._save(output_dir, state_dict)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.genpi_config.group_by_length and dataset is not None:
            from genpi.train.sampling import length_grouped_sampler

            # Items of a micro-batch are neighbours in length: little padding.
            return length_grouped_sampler(dataset, self.args.train_batch_size)
        return super()._get_train_sampler(train_dataset)

    # Per-stream target-token totals of the micro-batches of one optimizer step, passed to
    # compute_loss as ``num_items_in_batch`` (transformers counts a "labels" key; ours are
    # per stream).
    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, *args: Any, **kwargs: Any
    ) -> tuple[list, dict[str, Any]]:
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, *args, **kwargs)
        return batch_samples, self.step_token_totals(batch_samples)

    def step_token_totals(self, batch_samples: list) -> dict[str, Any]:
        totals = torch.tensor(
            [
                sum(int((b[f"{s}_labels"][:, 1:] != IGNORE).sum()) for b in batch_samples)
                for s in self.streams
            ],
            device=self.args.device,
        )
        if self.args.world_size > 1:
            totals = self.accelerator.gather(totals.unsqueeze(0)).sum(0)
        return dict(zip(self.streams, totals, strict=True))

    def _logits(self, model: Any, inputs: dict[str, Any], stream: str) -> Any:
        ids = inputs[f"{stream}_input_ids"]
        mask = inputs[f"{stream}_attention_mask"]
        self.tokens_seen[stream] = self.tokens_seen.get(stream, 0) + int(mask.sum())
        # A soft prompt (prompt tuning) prepends its virtual tokens' positions: dropped.
        return token_logits(model(input_ids=ids, attention_mask=mask).logits, ids.shape[1])

    def _teacher_logits(self, model: Any, inputs: dict[str, Any]) -> Any:
        with torch.no_grad():
            if self.teacher is not None:
                return self._logits(self.teacher, inputs, "teacher")
            with self.accelerator.unwrap_model(model).disable_adapter():
                return self._logits(model, inputs, "teacher")

    # -- the hidden-state path: only labelled positions are projected, in chunks --------
    def _choose_path(self, model: Any, inputs: dict[str, Any]) -> None:
        unwrapped = self.accelerator.unwrap_model(model)
        split, why = hs.split_model(unwrapped, prompt_tuning=self.method.tuning == "prompt-tuning")
        teacher_split = None
        if split is not None:
            ids = inputs[f"{self.streams[0]}_input_ids"][:1, : hs.PROBE_TOKENS]
            why = hs.probe(unwrapped, split, ids)
        if not why and self.method.needs_teacher:
            if self.teacher is None:
                teacher_split = split
            else:
                teacher_split, why = hs.split_model(self.teacher)
                if teacher_split is not None:
                    why = hs.probe(self.teacher, teacher_split, ids)
        if why:
            self.loss_path_used = "full-logits"
            expected = self.method.tuning == "prompt-tuning" or hs.full_logits_forced()
            # Correct either way; a model that should split but did not costs memory.
            (log.info if expected else log.warning)("losses from the full logits: %s", why)
            return
        self._split, self._teacher_split = split, teacher_split
        self.loss_path_used = "hidden"
        if teacher_split is not None and hs.is_frozen(teacher_split.lm):
            dataset = self.train_dataset
            pairs = [
                (dataset[i]["teacher"].input_ids, dataset[i]["teacher"].labels)
                for i in range(len(dataset))
            ]
            tokens = hs.shared_prefix(pairs)
            if len(tokens) >= hs.MIN_SHARED_PREFIX:
                self._prefix = hs.SharedPrefix(tokens)

    def _hidden(self, model: Any, inputs: dict[str, Any], stream: str) -> Any:
        """The student's final hidden states [N, H] at the stream's scored positions."""
        ids = inputs[f"{stream}_input_ids"]
        mask = inputs[f"{stream}_attention_mask"]
        self.tokens_seen[stream] = self.tokens_seen.get(stream, 0) + int(mask.sum())
        hidden = hs.student_hidden(model, ids, mask)
        return hs.gather_targets(hidden, inputs[f"{stream}_labels"])

    def _teacher_hidden(self, model: Any, inputs: dict[str, Any]) -> Any:
        """The teacher's final hidden states [N, H] at its scored positions; the shared
        prompt prefix comes from its cache (frozen weights: the same KV every step)."""
        ids, mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
        labels = inputs["teacher_labels"]
        self.tokens_seen["teacher"] = self.tokens_seen.get("teacher", 0) + int(mask.sum())
        backbone = self._teacher_split.backbone
        with torch.no_grad():
            if self.teacher is not None:
                return self._teacher_rows(backbone, ids, mask, labels)
            with self.accelerator.unwrap_model(model).disable_adapter():
                return self._teacher_rows(backbone, ids, mask, labels)

    def _teacher_rows(self, backbone: Any, ids: Any, mask: Any, labels: Any) -> Any:
        if self._prefix is not None and self._prefix.matches(ids):
            suffix = self._prefix.hidden(backbone, ids, mask)
            return hs.gather_targets(suffix, labels[:, len(self._prefix) :])
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        return hs.gather_targets(hidden, labels)

    def _hidden_terms(self, model: Any, inputs: dict[str, Any], totals: dict) -> Any:
        hidden = {s: self._hidden(model, inputs, s) for s in self.streams}
        teacher = self._teacher_hidden(model, inputs) if self.method.needs_teacher else None
        terms = {}
        for name, (kind, stream) in self.method.terms.items():
            targets = target_ids(inputs[f"{stream}_labels"])
            if kind == "nll":
                total, count = chunked_nll_sum(
                    hidden[stream], self._split.head, targets, self.chunk_size
                )
            else:
                total, count = chunked_kl_sum(
                    hidden[stream],
                    self._split.head,
                    teacher,
                    self._teacher_split.head,
                    targets,
                    target_ids(inputs["teacher_labels"]),
                    self.genpi_config.kl_temperature,
                    self.chunk_size,
                )
            terms[name] = self._record(name, total, count, totals[stream])
        return terms, hidden

    def _logit_terms(self, model: Any, inputs: dict[str, Any], totals: dict) -> Any:
        logits = {s: self._logits(model, inputs, s) for s in self.streams}
        teacher = self._teacher_logits(model, inputs) if self.method.needs_teacher else None
        terms = {}
        for name, (kind, stream) in self.method.terms.items():
            labels = inputs[f"{stream}_labels"]
            if kind == "nll":
                total, count = nll_sum(logits[stream], labels)
            else:
                total, count = kl_sum(
                    logits[stream],
                    labels,
                    teacher,
                    inputs["teacher_labels"],
                    self.genpi_config.kl_temperature,
                )
            terms[name] = self._record(name, total, count, totals[stream])
        return terms, logits

    def _record(self, name: str, total: Any, count: Any, step_total: Any) -> Any:
        self._sums[name] = self._sums.get(name, 0.0) + float(total.detach())
        self._counts[name] = self._counts.get(name, 0) + int(count)
        return per_token(total, step_total)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if not isinstance(num_items_in_batch, dict):  # evaluation, or a caller outside train()
            num_items_in_batch = self.step_token_totals([inputs])
        if self.loss_path_used is None:
            self._choose_path(model, inputs)
        if self.loss_path_used == "hidden":
            terms, outputs = self._hidden_terms(model, inputs, num_items_in_batch)
        else:
            terms, outputs = self._logit_terms(model, inputs, num_items_in_batch)
        loss = self.method.mix(terms, self.genpi_config)
        # Gradients are averaged over processes; the token totals already span all of them.
        loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for name in self.method.terms:
                if self._counts.get(name):
                    logs[f"{name}_loss"] = self._sums[name] / self._counts[name]
                    logs[f"{name}_tokens"] = self._counts[name]
            self._sums, self._counts = {}, {}
            if self.loss_path is not None and self.is_world_process_zero():
                row = {"step": self.state.global_step, **logs}
                with open(self.loss_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
        super().log(logs, start_time)


class SaveEveryMinutes(TrainerCallback):
    """Asks for a checkpoint once ``minutes`` of training have passed since the last checkpoint
    (any kind) or the start: with slow steps, --save-steps alone can leave a long run with nothing
    saved. It saves through the Trainer's own path, so the checkpoint (named by its step, with
    optimizer, scheduler and RNG states) resumes exactly like a step checkpoint."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()  # model loading and a resume's data skipping not counted

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            return  # the finished adapter is written next; a checkpoint would be thrown away
        due = time.monotonic() - self.last >= self.seconds
        if args.world_size > 1:
            due = _agree(due, args.device)
        if due:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()


def _agree(flag: bool, device: Any) -> bool:
    """Process 0's decision on every process: a save is collective, and clocks drift apart."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())
