"""Know the bill before paying it: each stage's wall time on this machine, estimated from a short
measured probe, printed by ``genpi internalize`` before the heavy work starts.

The probe runs, on the loaded target model: two batched generate calls on the prompt (one new
token, then a few) to measure the cost of a call's prompt and of each decoding step, and one
training micro-step (forward and backward through a fresh LoRA) per stream on the sequence
lengths the run will have (the prompt's real token count, the configured caps). Each stage's time
is then the number of calls or steps it makes times what the probe measured. Generation caps
make the synthesis and evaluation figures upper bounds: replies that end early cost less.

Run as: genpi internalize PROMPT --out RUN --estimate-only
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from genpi.llm import SamplingParams

# A run estimated past this on a CPU gets a warning that names the cheaper settings.
CPU_WARN_SECONDS = 3 * 3600


@dataclass(frozen=True)
class GenerationProbe:
    """What one generate call over ``rows`` conversations with the prompt costs here."""

    rows: int
    call_s: float  # the call with one new token: mostly the prompt's tokens
    step_s: float  # each further decoding step of those rows

    def call(self, max_new_tokens: int) -> float:
        return self.call_s + max(max_new_tokens - 1, 0) * self.step_s


@dataclass(frozen=True)
class TrainProbe:
    """Seconds per token of a training sequence: forward and backward through the LoRA, or
    forward only (the frozen teacher of a KL term)."""

    backward_s_per_token: float
    forward_s_per_token: float

    def micro_step(self, lengths: dict[str, int], batch: int) -> float:
        return batch * sum(
            n * (self.forward_s_per_token if stream == "teacher" else self.backward_s_per_token)
            for stream, n in lengths.items()
        )


@dataclass
class Estimate:
    stages: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.stages.values())

    def format(self, title: str) -> str:
        lines = [title]
        for name, seconds in self.stages.items():
            extra = f"  ({self.details[name]})" if name in self.details else ""
            lines.append(f"  {name:<24s} {human(seconds):>8s}{extra}")
        lines.append(f"  {'total':<24s} {human(self.total):>8s}")
        return "\n".join(lines)


def too_long_here(device: str, seconds: float) -> bool:
    """Whether to say that the run is hours on a CPU and name the cheaper settings."""
    return device == "cpu" and seconds > CPU_WARN_SECONDS


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def probe_generation(
    backend: Any, conversations: list[list[dict[str, str]]], rows: int, tokens: int = 8
) -> GenerationProbe:
    """Time a generate call with 1 and with ``tokens`` new tokens over ``rows`` conversations."""
    batch = (conversations * rows)[:rows]
    backend.generate(batch[:2], SamplingParams(max_new_tokens=1))  # first-call overheads
    start = time.perf_counter()
    backend.generate(batch, SamplingParams(max_new_tokens=1))
    one = time.perf_counter() - start
    start = time.perf_counter()
    gens = backend.generate(batch, SamplingParams(max_new_tokens=tokens))
    more = time.perf_counter() - start
    steps = max(max(g.completion_tokens for g in gens) - 1, 1)
    return GenerationProbe(rows=rows, call_s=one, step_s=max(more - one, 0.0) / steps)


def probe_training(model: Any, length: int, config: Any) -> TrainProbe:
    """One sequence of ``length`` random tokens through a LoRA of the run's rank on ``model``:
    forward and backward, then forward only. The LoRA is removed again, leaving ``model`` as it
    was (the backend keeps generating with it)."""
    import torch
    from peft import get_peft_model

    from genpi.train.trainer import lora_config

    lora = lora_config(config)
    was_training = model.training
    peft = get_peft_model(model, lora)
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=device)
    try:
        peft.train()
        start = time.perf_counter()
        peft(input_ids=ids, labels=ids).loss.backward()
        backward = time.perf_counter() - start
        peft.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.no_grad(), peft.disable_adapter():
            peft(input_ids=ids)
        forward = time.perf_counter() - start
    finally:
        peft.unload()
        model.train(was_training)
    return TrainProbe(backward / length, forward / length)


def stream_lengths(
    method: Any, prompt_tokens: int, input_tokens: int, synth: Any, turns: int
) -> dict[str, int]:
    """Token lengths of a training item's streams at the configured caps (upper bounds)."""
    conversation = input_tokens + turns * (synth.agent_max_new_tokens + synth.env_max_new_tokens)
    pg = (
        input_tokens
        + synth.output_max_new_tokens
        + synth.agent_max_new_tokens
        + prompt_tokens
        + synth.reason_max_new_tokens
    )
    sizes = {"sft": conversation, "pg": pg, "teacher": prompt_tokens + conversation}
    streams = {stream for _, stream in method.terms.values()}
    if method.needs_teacher:  # a KL term also runs the frozen teacher on its own view
        streams.add("teacher")
    if method.name == "prepend":
        return {"sft": prompt_tokens + conversation}
    return {s: sizes.get(s, conversation) for s in sorted(streams)}


def synthesis_seconds(
    probe: GenerationProbe, synth: Any, turns: int, local_generator: bool, todo: int
) -> dict[str, float]:
    """Seconds of each synthesis stage for ``todo`` new inputs (0 when they are done)."""
    if todo <= 0:
        return {}
    batches = math.ceil(todo / synth.batch_size)
    stages = {}
    if local_generator:
        requests = math.ceil(todo / synth.num_gen_once)
        stages["synthesis: inputs"] = math.ceil(requests / synth.batch_size) * probe.call(
            synth.input_max_new_tokens
        )
    stages["synthesis: role-play"] = (
        turns
        * batches
        * (probe.call(synth.agent_max_new_tokens) + probe.call(synth.env_max_new_tokens))
    )
    stages["synthesis: outputs"] = batches * probe.call(synth.output_max_new_tokens)
    if local_generator:
        stages["synthesis: reasons"] = batches * probe.call(synth.reason_max_new_tokens)
    return stages


def training_steps(train: Any, n_train: int) -> int:
    if train.max_steps > 0:
        return train.max_steps
    return max(1, math.ceil(train.epochs * n_train / train.effective_batch))


def evaluation_seconds(probe: GenerationProbe, systems: int, items: int, max_new: int) -> float:
    """Every system answers every item, then one teacher-forced pass per item scores it."""
    calls = math.ceil(items / probe.rows)
    scoring = calls * probe.call_s  # a forward over the same tokens, without decoding
    return systems * (calls * probe.call(max_new) + scoring)


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: the settings an estimate multiplies the probe by."""

    synth: Any  # SynthConfig
    train: Any  # TrainConfig
    methods: tuple[Any, ...]  # Method
    turns: int
    prompt_tokens: int
    input_tokens: int
    local_generator: bool
    inputs_todo: int  # inputs still to synthesize (0: synthesis is done)
    eval_systems: int
    eval_items: int
    eval_max_new_tokens: int


def estimate_run(plan: RunPlan, generation: GenerationProbe, training: TrainProbe) -> Estimate:
    """Each stage's seconds: calls or steps of the plan times what the probes measured."""
    est = Estimate()
    est.stages.update(
        synthesis_seconds(
            generation, plan.synth, plan.turns, plan.local_generator, plan.inputs_todo
        )
    )
    n_train = round(plan.synth.n * (1 - plan.synth.heldout_fraction))
    steps = training_steps(plan.train, n_train)
    micro = plan.train.grad_accum()
    # One method trained with several seeds is one row, its runs counted (not one run kept).
    runs = Counter(method.name for method in plan.methods)
    for method in {m.name: m for m in plan.methods}.values():
        lengths = stream_lengths(
            method, plan.prompt_tokens, plan.input_tokens, plan.synth, plan.turns
        )
        per_micro = training.micro_step(lengths, plan.train.per_device_batch)
        count = runs[method.name]
        est.stages[f"training: {method.name}"] = count * steps * micro * per_micro
        est.details[f"training: {method.name}"] = (
            f"{count} x " * (count > 1) + f"{steps} steps x {micro} micro-steps x {per_micro:.1f} s"
        )
    est.stages["evaluation"] = evaluation_seconds(
        generation, plan.eval_systems, plan.eval_items, plan.eval_max_new_tokens
    )
    est.details["evaluation"] = f"{plan.eval_systems} systems x {plan.eval_items} inputs"
    return est
