"""The training recipe: a run directory's examples -> a method's samples -> a PEFT adapter.

Built on the transformers ``Trainer`` so it runs unchanged under ``accelerate launch`` (several
GPUs, DeepSpeed). ``GenpiTrainer.compute_loss`` calls the pure losses of ``losses.py``; each loss
term is divided by its token count summed over every micro-batch of the optimizer step (and every
process), so gradient accumulation does not change the objective.

Run as: genpi train RUN_DIR --method genpi   (or ``train(run_dir, "genpi", config)`` from Python)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genpi.adapter import INFO_FILE, AdapterInfo, write_adapter_info
from genpi.context import check_prompt_fits
from genpi.data import (
    Example,
    load_examples,
    model_from_manifest,
    read_jsonl,
    read_manifest,
    read_run_prompt,
)
from genpi.errors import GenpiError
from genpi.models import DEFAULT_MODEL, resolve_model, sha256_file
from genpi.prompt import Prompt
from genpi.train.config import TrainConfig
from genpi.train.datasets import Collator, build_items, describe_report
from genpi.train.methods import Method, get_method

log = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
LOSS_FILE = "loss.jsonl"
PLOT_FILE = "loss.png"
REPORT_FILE = "data_report.json"
SUMMARY_FILE = "train_summary.json"
CHECKPOINTS = "checkpoints"


# -- the run directory -------------------------------------------------------------------------
def read_run(run_dir: Path) -> tuple[Prompt, dict[str, Any]]:
    """The run's prompt and manifest; refuse a prompt that is not the one the data was made for."""
    prompt = read_run_prompt(run_dir)
    if prompt is None:
        raise GenpiError(
            f"{str(run_dir)!r} has no prompt.json: run `genpi synth PROMPT --out {run_dir}` first"
        )
    manifest = read_manifest(run_dir) or {}
    recorded = manifest.get("prompt_fingerprint")
    if recorded and recorded != prompt.fingerprint:
        raise GenpiError(
            f"{str(run_dir)!r}: prompt.json ({prompt.fingerprint[:12]}) is not the prompt the data "
            f"was synthesized for ({recorded[:12]}): restore prompt.json or synthesize again"
        )
    return prompt, manifest


def data_fingerprint(examples: Sequence[Example]) -> str:
    rows = sorted(
        [e.id, e.input, e.turns, e.student_output, e.teacher_output, e.reason] for e in examples
    )
    blob = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def weights_sha256(resolved: Any) -> str | None:
    """The converted model's recorded hash, else a hash of its safetensors files (None for hub ids)."""
    recorded = resolved.provenance.get("weights_sha256")
    if recorded:
        return recorded
    if not resolved.local:
        return None
    files = sorted(Path(resolved.path).glob("*.safetensors"))
    if not files:
        return None
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def model_context(resolved: Any, tokenizer: Any = None) -> int | None:
    """The model's context (genpi.context's reading of its config, else the tokenizer's)."""
    from genpi.context import context_length

    config = Path(resolved.path) / "config.json"
    data = json.loads(config.read_text()) if resolved.local and config.exists() else None
    return context_length(data, tokenizer)


def adapter_dir(run_dir: str | Path, method: str, seed: int = 0) -> Path:
    """Where ``genpi train`` puts a method's adapter: ``RUN_DIR/adapters/<method>`` for seed 0
    (where runs have always had it) and ``<method>-seed<N>`` beside it for another seed, so that
    every seed is a directory of its own that `genpi eval` finds and names as a system."""
    name = method if seed == 0 else f"{method}-seed{seed}"
    return Path(run_dir) / "adapters" / name


def is_finished(out_dir: Path) -> bool:
    has_weights = (out_dir / "adapter_model.safetensors").exists() or (
        out_dir / "config.json"
    ).exists()
    return has_weights and (out_dir / INFO_FILE).exists()


# -- the trainer -------------------------------------------------------------------------------
def _make_trainer_class() -> type:
    import torch
    from transformers import Trainer

    from genpi.train import hidden as hs
    from genpi.train.losses import (
        DEFAULT_CHUNK,
        IGNORE,
        chunked_kl_sum,
        chunked_nll_sum,
        kl_sum,
        nll_sum,
        target_ids,
    )

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
            self.teacher = (
                teacher  # a frozen copy for full fine-tuning; else the adapter is disabled
            )
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
            batch_samples, _ = super().get_batch_samples(
                epoch_iterator, num_batches, *args, **kwargs
            )
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
            logits = model(input_ids=ids, attention_mask=mask).logits
            return logits[:, -ids.shape[1] :]  # prompt tuning prepends virtual-token positions

        def _teacher_logits(self, model: Any, inputs: dict[str, Any]) -> Any:
            with torch.no_grad():
                if self.teacher is not None:
                    return self._logits(self.teacher, inputs, "teacher")
                with self.accelerator.unwrap_model(model).disable_adapter():
                    return self._logits(model, inputs, "teacher")

        # -- the hidden-state path: only labelled positions are projected, in chunks --------
        def _choose_path(self, model: Any, inputs: dict[str, Any]) -> None:
            unwrapped = self.accelerator.unwrap_model(model)
            split, why = hs.split_model(
                unwrapped, prompt_tuning=self.method.tuning == "prompt-tuning"
            )
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
            return total / step_total.clamp_min(1)

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

    return GenpiTrainer


# -- model setup -------------------------------------------------------------------------------
def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _use_4bit(config: TrainConfig, method: Method, device: str) -> bool:
    import importlib.util

    if config.load_in_4bit == "no" or config.full or method.tuning != "lora":
        return False
    if config.load_in_4bit == "yes":
        return True
    return device.startswith("cuda") and importlib.util.find_spec("bitsandbytes") is not None


def lora_config(config: TrainConfig) -> Any:
    """The LoRA of a training config (rank, alpha, dropout, target modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _build_model(
    model_ref: str, resolved: Any, method: Method, config: TrainConfig, prompt: Prompt, device: str
) -> tuple[Any, Any, dict[str, Any]]:
    """(model to train, frozen teacher or None, facts about the setup for the adapter record)."""
    from genpi.models import load_model

    four_bit = _use_4bit(config, method, device)
    dtype = config.dtype
    if config.full and dtype == "auto":
        dtype = "fp32"  # full fine-tuning keeps fp32 master weights (bf16 autocast on CUDA)
    model, _ = load_model(model_ref, device=device, dtype=dtype, load_in_4bit=four_bit)
    setup = {
        "device": device,
        "dtype": str(next(model.parameters()).dtype),
        "load_in_4bit": four_bit,
    }
    teacher = None
    if config.full:
        if method.needs_teacher:
            teacher, _ = load_model(model_ref, device=device, dtype=dtype)
            teacher.requires_grad_(False)
        setup["tuning"] = "full"
        return model, teacher, setup
    from peft import PromptTuningConfig, get_peft_model, prepare_model_for_kbit_training

    if four_bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    if method.tuning == "prompt-tuning":
        peft_config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init="TEXT",  # start from the prompt's own tokens, not noise
            prompt_tuning_init_text=prompt.text,
            tokenizer_name_or_path=resolved.path,
        )
    else:
        peft_config = lora_config(config)
    model = get_peft_model(model, peft_config)
    # Engines (vLLM) find the base model by this name: the hub id when the weights are on the hub.
    model.peft_config["default"].base_model_name_or_path = resolved.hf_id or resolved.path
    setup["tuning"] = method.tuning
    return model, teacher, setup


# -- outputs -----------------------------------------------------------------------------------
def plot_losses(loss_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(loss_path)
    if not rows:
        return
    names = ["loss"] + sorted({k for r in rows for k in r if k.endswith("_loss") and k != "loss"})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in names:
        points = [(r["step"], r[name]) for r in rows if name in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("per-token loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS: the whole process's peak resident memory.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _keep_losses_up_to(loss_path: Path, step: int) -> None:
    """On resume, forget logged losses after the checkpoint: those steps are trained again."""
    if loss_path.exists():
        rows = [r for r in read_jsonl(loss_path) if r.get("step", 0) <= step]
        loss_path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_every_minutes_callback(minutes: float) -> Any:
    """A callback that asks for a checkpoint once ``minutes`` of training have passed since the
    last checkpoint (any kind) or the start: with slow steps, --save-steps alone can leave a long
    run with nothing saved. It saves through the Trainer's own path, so the checkpoint (named by
    its step, with optimizer, scheduler and RNG states) resumes exactly like a step checkpoint."""
    from transformers import TrainerCallback

    class SaveEveryMinutes(TrainerCallback):
        def __init__(self) -> None:
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

    return SaveEveryMinutes()


def _agree(flag: bool, device: Any) -> bool:
    """Process 0's decision on every process: a save is collective, and clocks drift apart."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` whose trainer state was written (the Trainer writes it last),
    so a checkpoint cut short by a kill is passed over for the one before it."""
    if not folder.is_dir():
        return None
    steps = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            steps.append((int(match.group(1)), path))
    for _, path in sorted(steps, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("%s was not finished (the run was killed while saving); skipping it", path)
            continue
        return str(path)
    return None


def _checkpointing_args(config: TrainConfig) -> dict[str, Any]:
    # Only named when wanted: transformers 5 renamed these and warns about the old names.
    if not config.gradient_checkpointing:
        return {}
    return {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }


# -- the entry point ---------------------------------------------------------------------------
def train(
    run_dir: str | Path,
    method: str = "genpi",
    config: TrainConfig | None = None,
    *,
    model_ref: str | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    echo: Callable[[str], None] = print,
) -> Path:
    """Train ``method`` on the run's training split and write the adapter; return its directory.

    Re-running resumes from the last checkpoint; a finished adapter with the same config is
    returned as is (``overwrite`` trains it again).
    """
    import torch
    from transformers import TrainingArguments

    spec = get_method(method)
    config = config or TrainConfig()
    config.validate()
    if config.full and not spec.allows_full:
        raise GenpiError(f"--full is for seqkd, seqkd-kld and kld; {method!r} trains {spec.tuning}")
    run_dir = Path(run_dir)
    prompt, manifest = read_run(run_dir)
    model_ref = model_ref or model_from_manifest(manifest) or DEFAULT_MODEL
    resolved = resolve_model(model_ref)
    from genpi.models import load_tokenizer

    tokenizer = load_tokenizer(model_ref)
    context = model_context(resolved, tokenizer)
    if spec.holds_prompt:
        # Its sequences hold the whole prompt: refuse now, not after an --overwrite removed the
        # old adapter or every item was dropped as too long.
        check_prompt_fits(prompt, tokenizer, context, model=model_ref)
    out_dir = Path(out_dir) if out_dir else adapter_dir(run_dir, method, config.seed)
    if is_finished(out_dir) and not overwrite:
        stored = (
            TrainConfig.load(out_dir / CONFIG_FILE) if (out_dir / CONFIG_FILE).exists() else None
        )
        if stored is not None and stored.to_dict() == config.to_dict():
            echo(f"{out_dir} is already trained with this config; pass --overwrite to train again")
            return out_dir
        raise GenpiError(
            f"{str(out_dir)!r} holds an adapter trained with another config: pass --overwrite "
            "to replace it, or --out another directory"
        )
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    if (out_dir / CONFIG_FILE).exists() and TrainConfig.load(out_dir / CONFIG_FILE) != config:
        raise GenpiError(
            f"{str(out_dir)!r} holds an interrupted run with another config: re-run with the same "
            "flags to resume it, or pass --overwrite to start over"
        )
    examples = load_examples(run_dir, split="train")
    if not examples:
        raise GenpiError(
            f"{str(run_dir)!r} has no training conversations: run `genpi synth` on it first"
        )

    dataset, report = build_items(
        examples,
        lambda ex: spec.build(ex, prompt, config),
        tokenizer,
        max_length=config.max_length,
        model_context=context,
        overlong=config.overlong,
    )
    echo(describe_report(report))
    if len(dataset) == 0:
        fix = "run every genpi synth stage, or raise --max-length"
        if report["dropped_overlong"] and report["max_length"] == context:
            fix = "they are longer than the model's context: use a model with a longer context"
        raise GenpiError(
            f"no example of {str(run_dir)!r} is usable by {method!r} (see the report above): {fix}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    config.save(out_dir / CONFIG_FILE)

    device = _device()
    torch.manual_seed(config.seed)
    model, teacher, setup = _build_model(model_ref, resolved, spec, config, prompt, device)
    processes = int(os.environ.get("WORLD_SIZE", 1))
    grad_accum = config.grad_accum(processes)
    bf16_autocast = config.full and device.startswith("cuda") and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(out_dir / CHECKPOINTS),
        per_device_train_batch_size=config.per_device_batch,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers>=5: a float in [0, 1) is a ratio
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        bf16=bf16_autocast,
        remove_unused_columns=False,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),
        use_cpu=device == "cpu",
        **_checkpointing_args(config),
    )
    trainer_class = _make_trainer_class()
    loss_path = out_dir / LOSS_FILE
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        method=spec,
        genpi_config=config,
        teacher=teacher,
        loss_path=loss_path,
        callbacks=list(callbacks),
    )
    if config.save_every_minutes > 0:
        trainer.add_callback(_save_every_minutes_callback(config.save_every_minutes))
    checkpoint = last_complete_checkpoint(out_dir / CHECKPOINTS)
    if checkpoint:
        step = int(Path(checkpoint).name.split("-")[-1])
        echo(f"resuming from {checkpoint} (step {step})")
        _keep_losses_up_to(loss_path, step)
    elif loss_path.exists():
        loss_path.unlink()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # all threads; wall time suffers on a busy host
    if not trainer.is_world_process_zero():
        return out_dir

    tokens = sum(trainer.tokens_seen.values())
    steps_run = trainer.state.global_step - (
        int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    )
    summary = {
        "global_steps": trainer.state.global_step,
        "steps_this_run": steps_run,
        "seconds": seconds,
        "seconds_per_step": seconds / max(steps_run, 1),
        "tokens_by_stream": dict(trainer.tokens_seen),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "cpu_seconds": cpu_seconds,
        "tokens_per_cpu_second": tokens / cpu_seconds if cpu_seconds else 0.0,
        "threads": torch.get_num_threads(),
        "peak_memory_mb": _peak_memory_mb(device),
        # "hidden": labelled positions projected in chunks; "full-logits": the fallback.
        "loss_path": trainer.loss_path_used,
        # Tokens of the KL teacher's prompt prefix run once for the whole run (0: none cached).
        "teacher_prefix_tokens": len(trainer._prefix) if trainer._prefix is not None else 0,
        "train_loss": result.training_loss,
        "grad_accum": grad_accum,
        "processes": processes,
        **setup,
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _save(trainer.model, tokenizer, out_dir, spec, config, setup)
    info = AdapterInfo(
        prompt_fingerprint=prompt.fingerprint,
        prompt_name=prompt.name,
        base_model=model_ref,
        base_weights_sha256=weights_sha256(resolved),
        method=method,
        config={**config.to_dict(), "grad_accum": grad_accum, "processes": processes, **setup},
        data_fingerprint=data_fingerprint(examples),
        chat_template=tokenizer.chat_template,
        extra={
            "run_dir": str(run_dir),
            "hf_id": resolved.hf_id,
            "data_report": report,
            "train": summary,
        },
    )
    write_adapter_info(out_dir, info, prompt)
    plot_losses(loss_path, out_dir / PLOT_FILE)
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)  # the adapter is complete
    echo(
        f"{method}: {trainer.state.global_step} steps, {summary['seconds_per_step']:.2f} s/step, "
        f"{summary['tokens_per_second']:.0f} tokens/s -> {out_dir}"
    )
    return out_dir


def _save(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    method: Method,
    config: TrainConfig,
    setup: dict[str, Any],
) -> None:
    if config.full:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        log.warning(
            "full fine-tuning makes a whole model, not a LoRA adapter: saved it to %s "
            "(use it as --model %s)",
            out_dir,
            out_dir,
        )
        return
    # Only LoRA layers are trained: saying so spares PEFT a hub lookup of the base config.
    model.save_pretrained(out_dir, safe_serialization=True, save_embedding_layers=False)
    config_path = out_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    if adapter_config.get("modules_to_save"):
        raise GenpiError(
            "the adapter saved modules_to_save, which vLLM cannot serve; this is a bug"
        )
