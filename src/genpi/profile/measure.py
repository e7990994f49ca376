"""Run each setting's forward passes over a conversation: FLOPs counted, latency timed, KV bytes.

A setting is a model, a view of the conversation (with or without the prompt) and a plan: the
forward passes a server runs for it. Every turn is a prefill of the new tokens (the user's
message, plus whatever the setting recomputes) whose last logits give the first answer token, then
teacher-forced decoding: the answer's tokens fed one at a time with the KV cache, so counts are
exact and deterministic. The answer's last token is fed with the next turn's prefill, as a server
does (the last generated token is only ever fed in the next request).

Settings (``SETTINGS``):

- ``prompted_no_cache``: every turn recomputes prompt + history + new message (no cache across turns);
- ``prompted_cache``: the prompt is pre-cached once before the first turn (reported apart as
  ``precache``), then each turn prefills only its new tokens (the paper's Figure 4 setting);
- ``compressed_cache``: as ``prompted_cache`` with the prompt compressed by LLMLingua as a whole, as
  ``genpi eval``'s baseline does (``genpi.evaluate.compression``), when ``llmlingua``
  is installed; the compression's own cost is reported apart;
- ``adapter_unmerged``: the internalized LoRA adapter, no prompt, LoRA matmuls beside the base ones;
- ``adapter_merged``: the same adapter merged into the weights (``merge_and_unload``);
- ``no_prompt``: the base model without the prompt, the floor.

Every cached setting pre-caches its constant prefix, the rendered text before the task input
(the chat template's start; plus the prompt, with the prompt), and keeps the cache across turns.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genpi.errors import GenpiError
from genpi.profile.conversation import Conversation, Segments, student_segments, teacher_segments
from genpi.profile.flops import ModelShape, counting_flops, lora_flops_per_token, set_attention
from genpi.prompt import Prompt

log = logging.getLogger(__name__)

SETTINGS: dict[str, str] = {
    "prompted_no_cache": "prompt, no cache",
    "prompted_cache": "prompt, pre-cached",
    "compressed_cache": "compressed prompt, pre-cached",
    "adapter_unmerged": "adapter (unmerged LoRA)",
    "adapter_merged": "adapter (merged)",
    "no_prompt": "no prompt (floor)",
}
BASELINE = "prompted_cache"


class ProfileError(GenpiError):
    pass


@dataclass
class Step:
    turn: int  # 0: before the conversation (pre-caching); 1..: the conversation's turns
    kind: str  # "precache" | "prefill" | "decode"
    tokens: list[int]
    fresh: bool  # start from an empty cache


def cached_plan(segments: Segments) -> list[Step]:
    """Cache kept across turns; a non-empty prefix is pre-cached as turn 0."""
    steps = [Step(0, "precache", segments.prefix, True)] if segments.prefix else []
    carry: list[int] = []
    for t, (user, answer) in enumerate(
        zip(segments.user, segments.assistant, strict=True), start=1
    ):
        steps.append(Step(t, "prefill", carry + user, not steps))
        steps += [Step(t, "decode", [token], False) for token in answer[:-1]]
        carry = answer[-1:]
    return steps


def recompute_plan(segments: Segments) -> list[Step]:
    """No cache across turns: each turn prefills prefix + history + its new tokens from scratch."""
    steps: list[Step] = []
    history = list(segments.prefix)
    for t, (user, answer) in enumerate(
        zip(segments.user, segments.assistant, strict=True), start=1
    ):
        history += user
        steps.append(Step(t, "prefill", list(history), True))
        steps += [Step(t, "decode", [token], False) for token in answer[:-1]]
        history += answer
    return steps


@dataclass
class StepResult:
    flops: int | None
    seconds: float
    past: int  # cached tokens before the step
    cache_tokens: int  # after it
    kv_bytes: int  # after it


def _cache_bytes(cache: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += tensor.nbytes
    return total


def run_plan(model: Any, steps: list[Step], *, count: bool) -> list[StepResult]:
    """Run the plan's forward passes; count FLOPs (``count``) or time them (otherwise)."""
    import torch

    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = []
    cache = None
    with torch.inference_mode():
        for step in steps:
            if step.fresh:
                cache = None
            past = cache.get_seq_length() if cache is not None else 0
            ids = torch.tensor([step.tokens], device=device)
            flops = None
            sync()
            start = time.perf_counter()
            if count:
                with counting_flops() as counter:
                    out = model(
                        input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1
                    )
                flops = int(counter.get_total_flops())
            else:
                out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            sync()
            seconds = time.perf_counter() - start
            cache = out.past_key_values
            results.append(
                StepResult(flops, seconds, past, cache.get_seq_length(), _cache_bytes(cache))
            )
    return results


def simulate_plan(steps: list[Step], shape: ModelShape, bytes_per_value: int) -> list[StepResult]:
    """The cache lengths a plan goes through, without running it (FLOPs left to the formula)."""
    results = []
    cached = 0
    for step in steps:
        past = 0 if step.fresh else cached
        cached = past + len(step.tokens)
        results.append(StepResult(None, 0.0, past, cached, shape.kv_bytes(cached, bytes_per_value)))
    return results


@dataclass
class Setting:
    name: str
    model: Any
    segments: Segments
    plan: list[Step]
    lora_per_token: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    counted: list[StepResult] = field(default_factory=list)
    timed: list[list[StepResult]] = field(default_factory=list)


def make_adapter_models(base: Any, adapter: str | None, lora_rank: int) -> tuple[Any, Any, str]:
    """(unmerged PEFT model, merged model, description); a random LoRA of the paper's shape
    (all linear layers, rank ``lora_rank``) when no adapter is given: the cost does not depend on
    the weights' values."""
    from genpi.adapter import attach_adapter, random_lora

    if adapter is not None:
        unmerged = attach_adapter(copy.deepcopy(base), adapter)
        description = f"adapter {adapter}"
    else:
        unmerged = random_lora(copy.deepcopy(base), rank=lora_rank, seed=0)
        description = (
            f"random LoRA adapter, r={lora_rank}, all linear layers (cost only; values irrelevant)"
        )
    merged = copy.deepcopy(unmerged).merge_and_unload().eval()
    return unmerged, merged, description


Compressor = Callable[[str], str]


def compress_prompt(prompt: Prompt, compress: Compressor) -> Prompt:
    """The prompt compressed as the evaluation's baseline compresses it: the whole prompt as one
    text, given as one system message (``genpi.evaluate.compression``)."""
    from genpi.evaluate.compression import compressed_prompt, prompt_document

    document = prompt_document(prompt)
    return compressed_prompt(compress(document) or document, prompt)


def _measure_compression(
    prompt: Prompt, compress: Compressor, *, timed: bool
) -> tuple[Prompt, dict[str, Any]]:
    with counting_flops() as counter:
        compressed = compress_prompt(prompt, compress)
    seconds = None
    if timed:  # timed apart: the counter slows what it counts
        start = time.perf_counter()
        compress_prompt(prompt, compress)
        seconds = time.perf_counter() - start
    flops = int(counter.get_total_flops())
    return compressed, {"flops": flops, "macs": flops // 2, "latency_s": seconds}


def profile(
    prompt: Prompt,
    conversation: Conversation,
    model: Any,
    tokenizer: Any,
    *,
    adapter: str | None = None,
    lora_rank: int = 16,
    compressor: Compressor | None = None,
    compress_rate: float = 0.5,
    repeats: int = 3,
    latency_attention: str = "sdpa",
    settings: list[str] | None = None,
    count: bool = True,
) -> dict[str, Any]:
    """Profile every setting over ``conversation``; returns the report (see ``genpi.profile``).

    ``compressor`` overrides LLMLingua (any text -> shorter text); ``repeats`` = 0 skips timing;
    ``count`` = False takes FLOPs from the analytic formula alone (no counting passes: for a busy
    CPU; the formula equals the count for Llama-family models, which the tests check).
    """
    wanted = list(settings or SETTINGS)
    unknown = [s for s in wanted if s not in SETTINGS]
    if unknown:
        raise ProfileError(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    import torch

    shape = ModelShape.from_config(model.config)
    dtype = next(model.parameters()).dtype
    bytes_per_value = torch.empty((), dtype=dtype).element_size()
    teacher = teacher_segments(tokenizer, prompt, conversation)
    student = student_segments(tokenizer, prompt, conversation)
    built: dict[str, Setting] = {}
    unavailable: dict[str, str] = {}
    adapter_description = None
    if "prompted_no_cache" in wanted:
        built["prompted_no_cache"] = Setting(
            "prompted_no_cache", model, teacher, recompute_plan(teacher)
        )
    if "prompted_cache" in wanted:
        built["prompted_cache"] = Setting("prompted_cache", model, teacher, cached_plan(teacher))
    if "compressed_cache" in wanted:
        compress = compressor
        compressor_name = getattr(compressor, "__name__", "custom compressor")
        if compress is None and importlib.util.find_spec("llmlingua") is None:
            unavailable["compressed_cache"] = "llmlingua is not installed (`pip install llmlingua`)"
        else:
            if compress is None:
                from genpi.evaluate.compression import llmlingua_compressor

                path = model.genpi_ref.path if hasattr(model, "genpi_ref") else model.name_or_path
                device = str(next(model.parameters()).device)
                try:
                    compress = llmlingua_compressor(path, compress_rate, device)
                    compressor_name = f"LLMLingua, rate {compress_rate}, {path}"
                except Exception as exc:  # llmlingua raises anything from a model it cannot load
                    unavailable["compressed_cache"] = f"LLMLingua could not start: {exc}"[:300]
            if "compressed_cache" not in unavailable:
                log.info("compressing the prompt (%s)", compressor_name)
                compressed, cost = _measure_compression(prompt, compress, timed=repeats > 0)
                segments = teacher_segments(tokenizer, compressed, conversation)
                cost.update(compressor=compressor_name, prefix_tokens=len(segments.prefix))
                built["compressed_cache"] = Setting(
                    "compressed_cache",
                    model,
                    segments,
                    cached_plan(segments),
                    extra={"compression": cost},
                )
    if {"adapter_unmerged", "adapter_merged"} & set(wanted):
        unmerged, merged, adapter_description = make_adapter_models(model, adapter, lora_rank)
        if "adapter_unmerged" in wanted:
            built["adapter_unmerged"] = Setting(
                "adapter_unmerged",
                unmerged,
                student,
                cached_plan(student),
                lora_flops_per_token(unmerged),
            )
        if "adapter_merged" in wanted:
            built["adapter_merged"] = Setting(
                "adapter_merged",
                merged,
                student,
                cached_plan(student),
                lora_flops_per_token(merged),
            )
    if "no_prompt" in wanted:
        built["no_prompt"] = Setting("no_prompt", model, student, cached_plan(student))

    models = {id(s.model): s.model for s in built.values()}
    original_attention = {key: m.config._attn_implementation for key, m in models.items()}
    try:
        # Eager attention: QK^T and AV are plain matmuls the counter sees.
        for m in models.values():
            set_attention(m, "eager")
        for setting in built.values():
            if count:
                log.info("counting FLOPs: %s (%d forward passes)", setting.name, len(setting.plan))
                setting.counted = run_plan(setting.model, setting.plan, count=True)
            else:
                setting.counted = simulate_plan(setting.plan, shape, bytes_per_value)
        if repeats > 0:
            for key, m in models.items():
                set_attention(m, latency_attention or original_attention[key])
            for setting in built.values():  # warm-up: first calls allocate and pick kernels
                run_plan(setting.model, setting.plan[:2], count=False)
            # Repeats interleave the settings, so load from other processes hits them alike.
            for r in range(repeats):
                for setting in built.values():
                    log.info("timing %s, repeat %d/%d", setting.name, r + 1, repeats)
                    setting.timed.append(run_plan(setting.model, setting.plan, count=False))
    finally:
        for key, m in models.items():
            set_attention(m, original_attention[key])

    report: dict[str, Any] = {
        "model_shape": shape.to_dict(),
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
        "conversation": {
            "source": conversation.source,
            "turns": len(teacher.assistant),
            "prompt_tokens": len(teacher.prefix) - len(student.prefix),
            "prefix_tokens_prompted": len(teacher.prefix),
            "prefix_tokens_no_prompt": len(student.prefix),
            "user_tokens_prompted": [len(u) for u in teacher.user],
            "user_tokens_no_prompt": [len(u) for u in student.user],
            "assistant_tokens": [len(a) for a in teacher.assistant],
        },
        "adapter": adapter_description,
        "latency": {
            "repeats": repeats,
            "attention": latency_attention if repeats > 0 else None,
            "statistic": "median over repeats",
        },
        "flop_counting": {
            "method": "torch.utils.flop_counter.FlopCounterMode",
            "attention": "eager",
        },
        "settings": {name: _summarize(s, shape, dtype) for name, s in built.items()},
        "unavailable": unavailable,
    }
    report["comparison"] = _compare(report["settings"])
    return report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summarize(setting: Setting, shape: ModelShape, dtype: Any) -> dict[str, Any]:
    import torch

    bytes_per_value = torch.empty((), dtype=dtype).element_size()
    analytic = [
        shape.forward_flops(len(step.tokens), res.past, lora_per_token=setting.lora_per_token)
        for step, res in zip(setting.plan, setting.counted, strict=True)
    ]

    counted = [
        res.flops if res.flops is not None else a
        for res, a in zip(setting.counted, analytic, strict=True)
    ]

    def part(indices: list[int]) -> dict[str, Any]:
        flops = sum(counted[i] for i in indices)
        last = setting.counted[indices[-1]]
        prefill = [i for i in indices if setting.plan[i].kind != "decode"]
        decode = [i for i in indices if setting.plan[i].kind == "decode"]
        timed = setting.timed
        ttft = [sum(rep[i].seconds for i in prefill) for rep in timed]
        tpot = [statistics.fmean(rep[i].seconds for i in decode) for rep in timed] if decode else []
        total = [sum(rep[i].seconds for i in indices) for rep in timed]
        return {
            "new_tokens": sum(len(setting.plan[i].tokens) for i in indices),
            "forward_passes": len(indices),
            "context_tokens": last.cache_tokens,
            "flops": flops,
            "macs": flops // 2,
            "flops_analytic": sum(analytic[i] for i in indices),
            "ttft_s": _median(ttft),
            "per_output_token_s": _median(tpot),
            "latency_s": _median(total),
            "kv_bytes": last.kv_bytes,
            "kv_bytes_analytic": shape.kv_bytes(last.cache_tokens, bytes_per_value),
        }

    n_turns = max(step.turn for step in setting.plan)
    precache_idx = [i for i, s in enumerate(setting.plan) if s.turn == 0]
    turns = []
    for t in range(1, n_turns + 1):
        indices = [i for i, s in enumerate(setting.plan) if s.turn == t]
        turns.append(
            {"turn": t, "output_tokens": len(setting.segments.assistant[t - 1]), **part(indices)}
        )
    precache = part(precache_idx) if precache_idx else None
    if precache:
        for key in ("ttft_s", "per_output_token_s"):
            precache.pop(key)
    total_flops = sum(t["flops"] for t in turns)
    latencies = [t["latency_s"] for t in turns]
    total_latency = sum(latencies) if None not in latencies else None
    mismatches = [i for i, a in enumerate(analytic) if setting.counted[i].flops not in (None, a)]
    summary: dict[str, Any] = {
        "label": SETTINGS[setting.name],
        "lora_flops_per_token": setting.lora_per_token,
        "turns": turns,
        "precache": precache,
        "total": {
            "flops": total_flops,
            "macs": total_flops // 2,
            "flops_analytic": sum(t["flops_analytic"] for t in turns),
            "latency_s": total_latency,
            "output_tokens": sum(t["output_tokens"] for t in turns),
            "kv_bytes_peak": max(r.kv_bytes for r in setting.counted),
            "flops_with_precache": total_flops + (precache["flops"] if precache else 0),
            "latency_with_precache_s": (
                total_latency + (precache["latency_s"] or 0)
                if precache and total_latency is not None
                else total_latency
            ),
        },
        "flops_source": "counted"
        if all(r.flops is not None for r in setting.counted)
        else "analytic",
        "analytic_matches_counted": not mismatches,
        "analytic_mismatched_passes": len(mismatches),
    }
    summary.update(setting.extra)
    if "compression" in setting.extra:
        comp = setting.extra["compression"]
        total = summary["total"]
        total["flops_with_compression"] = total["flops_with_precache"] + comp["flops"]
        if comp["latency_s"] is not None and total["latency_with_precache_s"] is not None:
            total["latency_with_compression_s"] = (
                total["latency_with_precache_s"] + comp["latency_s"]
            )
    return summary


def _compare(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each setting against the prompted, pre-cached baseline (the paper's comparison)."""
    if BASELINE not in settings:
        return {}
    base = settings[BASELINE]["total"]
    out: dict[str, Any] = {"baseline": BASELINE}
    for name, s in settings.items():
        total = s["total"]
        entry = {
            "flops_saved": 1 - total["flops"] / base["flops"],
            "flops_saved_vs_incl_precache": 1
            - total["flops_with_precache"] / base["flops_with_precache"],
        }
        if total["latency_s"] is not None and base["latency_s"]:
            entry["latency_ratio"] = total["latency_s"] / base["latency_s"]
            entry["latency_ratio_incl_precache"] = (
                total["latency_with_precache_s"] / base["latency_with_precache_s"]
            )
        out[name] = entry
    floor = settings.get("no_prompt", {}).get("total")
    if floor:
        for name in ("adapter_unmerged", "adapter_merged"):
            if name in settings:
                out[name]["flops_over_floor"] = settings[name]["total"]["flops"] - floor["flops"]
    return out
