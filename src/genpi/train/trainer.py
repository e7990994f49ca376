"""The training recipe: a run directory's examples -> a method's samples -> a PEFT adapter.

Built on the transformers ``Trainer`` so it runs unchanged under ``accelerate launch`` (several
GPUs, DeepSpeed). ``GenpiTrainer.compute_loss`` (``hf_trainer.py``) calls the pure losses of
``losses.py``; each loss term is divided by its token count summed over every micro-batch of the
optimizer step (and every process), so gradient accumulation does not change the objective.

``train`` runs named steps: check the method, read the run, apply the resume policy
(``_finished_or_cleared``), build the items (``_training_items``), the model and the arguments,
train from the resume point, then write the summary, the adapter, its record and the loss plot.
This module imports torch and transformers only inside ``train``, so ``adapter_dir`` and the
other helpers are cheap to import.

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
from genpi.context import check_prompt_fits, model_context
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
from genpi.train.methods import Method, full_tuning_methods, get_method

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
    """``loss.png``: the logged losses by optimizer step. matplotlib is an optional extra
    (``genpi[eval]``): without it the adapter is still complete, so the plot is skipped with a
    log line rather than failing the run at its last step."""
    try:
        import matplotlib
    except ImportError:
        log.info("matplotlib is not installed (pip install 'genpi[eval]'): no %s", png_path.name)
        return
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


# -- the steps of a training run ---------------------------------------------------------------
def _check_method(config: TrainConfig, spec: Method) -> None:
    config.validate()
    if config.full and not spec.allows_full:
        raise GenpiError(
            f"--full is for {', '.join(full_tuning_methods())}; {spec.name!r} trains {spec.tuning}"
        )


def same_setting(stored: TrainConfig, config: TrainConfig) -> bool:
    """Whether two configs train the same thing: every field but ``preset``, a label of where the
    values came from (internalize's quick once recorded train preset "quick" with 12 steps, now
    preset "demo" with the same values: its adapters and interrupted runs still resume)."""
    return {**stored.to_dict(), "preset": None} == {**config.to_dict(), "preset": None}


def _finished_or_cleared(
    out_dir: Path, config: TrainConfig, overwrite: bool, echo: Callable[[str], None]
) -> bool:
    """The resume policy. True: ``out_dir`` already holds this config's adapter (nothing to do).
    Else it is ready to train in: removed on ``overwrite``, or holding an interrupted run of the
    same config to resume; another config's adapter or run is refused."""
    if is_finished(out_dir) and not overwrite:
        stored = (
            TrainConfig.load(out_dir / CONFIG_FILE) if (out_dir / CONFIG_FILE).exists() else None
        )
        if stored is not None and same_setting(stored, config):
            echo(f"{out_dir} is already trained with this config; pass --overwrite to train again")
            return True
        raise GenpiError(
            f"{str(out_dir)!r} holds an adapter trained with another config: pass --overwrite "
            "to replace it, or --out another directory"
        )
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    if (out_dir / CONFIG_FILE).exists() and not same_setting(
        TrainConfig.load(out_dir / CONFIG_FILE), config
    ):
        raise GenpiError(
            f"{str(out_dir)!r} holds an interrupted run with another config: re-run with the same "
            "flags to resume it, or pass --overwrite to start over"
        )
    return False


def _training_items(
    run_dir: Path,
    spec: Method,
    prompt: Prompt,
    config: TrainConfig,
    tokenizer: Any,
    context: int | None,
    echo: Callable[[str], None],
) -> tuple[list[Example], Any, dict[str, Any]]:
    """(the training split's examples, the method's tokenized items, the data report)."""
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
            f"no example of {str(run_dir)!r} is usable by {spec.name!r} (see the report above): "
            f"{fix}"
        )
    return examples, dataset, report


def _training_arguments(
    config: TrainConfig, out_dir: Path, device: str, grad_accum: int, bf16_autocast: bool
) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
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


def _resume_point(out_dir: Path, loss_path: Path, echo: Callable[[str], None]) -> str | None:
    """The checkpoint to resume from (None: start afresh), with the loss log cut to match it."""
    checkpoint = last_complete_checkpoint(out_dir / CHECKPOINTS)
    if checkpoint:
        step = _checkpoint_step(checkpoint)
        echo(f"resuming from {checkpoint} (step {step})")
        _keep_losses_up_to(loss_path, step)
    elif loss_path.exists():
        loss_path.unlink()
    return checkpoint


def _checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def _run_summary(
    trainer: Any,
    result: Any,
    seconds: float,
    cpu_seconds: float,
    checkpoint: str | None,
    device: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``train_summary.json``: steps, time, tokens, memory and the loss path of this run."""
    import torch

    tokens = sum(trainer.tokens_seen.values())
    steps_run = trainer.state.global_step - _checkpoint_step(checkpoint)
    return {
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
        **extra,
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

    from genpi.models import load_tokenizer
    from genpi.train.hf_trainer import GenpiTrainer, SaveEveryMinutes

    spec = get_method(method)
    config = config or TrainConfig()
    _check_method(config, spec)
    run_dir = Path(run_dir)
    prompt, manifest = read_run(run_dir)
    model_ref = model_ref or model_from_manifest(manifest) or DEFAULT_MODEL
    resolved = resolve_model(model_ref)
    tokenizer = load_tokenizer(model_ref)
    context = model_context(model_ref, tokenizer)  # as every other verb reads it
    if spec.holds_prompt:
        # Its sequences hold the whole prompt: refuse now, not after an --overwrite removed the
        # old adapter or every item was dropped as too long.
        check_prompt_fits(prompt, tokenizer, context, model=model_ref)
    out_dir = Path(out_dir) if out_dir else adapter_dir(run_dir, method, config.seed)
    if _finished_or_cleared(out_dir, config, overwrite, echo):
        return out_dir
    examples, dataset, report = _training_items(
        run_dir, spec, prompt, config, tokenizer, context, echo
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
    loss_path = out_dir / LOSS_FILE
    trainer = GenpiTrainer(
        model=model,
        args=_training_arguments(config, out_dir, device, grad_accum, bf16_autocast),
        train_dataset=dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        method=spec,
        genpi_config=config,
        teacher=teacher,
        loss_path=loss_path,
        callbacks=list(callbacks),
    )
    if config.save_every_minutes > 0:
        trainer.add_callback(SaveEveryMinutes(config.save_every_minutes))
    checkpoint = _resume_point(out_dir, loss_path, echo)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # all threads; wall time suffers on a busy host
    if not trainer.is_world_process_zero():
        return out_dir

    derived = {"grad_accum": grad_accum, "processes": processes}
    summary = _run_summary(
        trainer, result, seconds, cpu_seconds, checkpoint, device, {**derived, **setup}
    )
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _save(trainer.model, tokenizer, out_dir, spec, config, setup)
    info = AdapterInfo(
        prompt_fingerprint=prompt.fingerprint,
        prompt_name=prompt.name,
        base_model=model_ref,
        base_weights_sha256=weights_sha256(resolved),
        method=method,
        config={**config.to_dict(), **derived, **setup},
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
