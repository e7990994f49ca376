"""The bill before the run: the estimate's arithmetic on hand-made probes (exact), and the probes
themselves on the tiny model (they measure, and leave the model as it was)."""

from __future__ import annotations

import pytest

from genpi.estimate import (
    Estimate,
    GenerationProbe,
    RunPlan,
    TrainProbe,
    estimate_run,
    human,
    probe_generation,
    probe_training,
    stream_lengths,
)
from genpi.synth.config import SynthConfig
from genpi.train.config import make_config
from genpi.train.methods import get_method


def test_estimate_arithmetic_on_hand_made_probes():
    synth = SynthConfig(
        n=40,
        batch_size=16,
        num_gen_once=10,
        heldout_fraction=0.2,
        input_max_new_tokens=101,
        agent_max_new_tokens=11,
        env_max_new_tokens=21,
        output_max_new_tokens=31,
        reason_max_new_tokens=41,
    )
    gen = GenerationProbe(rows=16, call_s=2.0, step_s=0.5)
    assert gen.call(1) == 2.0 and gen.call(11) == 7.0
    train = make_config("paper", max_steps=-1, epochs=2.0, effective_batch=8, per_device_batch=4)
    plan = RunPlan(
        synth=synth,
        train=train,
        methods=(get_method("genpi"), get_method("sft")),
        turns=2,
        prompt_tokens=500,
        input_tokens=20,
        local_generator=True,
        inputs_todo=40,
        eval_systems=4,
        eval_items=20,
        eval_max_new_tokens=21,
    )
    train_probe = TrainProbe(backward_s_per_token=0.01, forward_s_per_token=0.002)
    est = estimate_run(plan, gen, train_probe)
    # 3 batches of 16 rows; 4 input requests fit one call of 16 rows
    assert est.stages["synthesis: inputs"] == 1 * gen.call(101) == 52.0
    assert est.stages["synthesis: role-play"] == 2 * 3 * (gen.call(11) + gen.call(21)) == 114.0
    assert est.stages["synthesis: outputs"] == 3 * gen.call(31) == 51.0
    assert est.stages["synthesis: reasons"] == 3 * gen.call(41) == 66.0
    # 32 training items x 2 epochs / 8 per step = 8 steps of 2 micro-steps of 4 sequences;
    # sft: 20 + 2 * (11 + 21) = 84 tokens, pg: 20 + 31 + 11 + 500 + 41 = 603 tokens
    assert est.stages["training: genpi"] == pytest.approx(8 * 2 * 4 * (84 + 603) * 0.01)
    assert est.stages["training: sft"] == pytest.approx(8 * 2 * 4 * 84 * 0.01)
    # 2 calls per system, each answering (12 s) and scoring (2 s)
    assert est.stages["evaluation"] == 4 * (2 * gen.call(21) + 2 * 2.0) == 112.0
    assert est.total == pytest.approx(52 + 114 + 51 + 66 + 439.68 + 53.76 + 112)
    assert "training: genpi" in est.format("bill") and "total" in est.format("bill")


def test_remote_generator_and_finished_synthesis_cost_nothing_here():
    synth = SynthConfig(n=16)
    gen = GenerationProbe(rows=16, call_s=1.0, step_s=1.0)
    probe = TrainProbe(0.0, 0.0)
    plan = RunPlan(synth, make_config("quick"), (), 1, 100, 10, False, 16, 1, 1, 1)
    stages = estimate_run(plan, gen, probe).stages
    assert "synthesis: inputs" not in stages and "synthesis: reasons" not in stages
    done = RunPlan(synth, make_config("quick"), (), 1, 100, 10, True, 0, 1, 1, 1)
    assert not any(k.startswith("synthesis") for k in estimate_run(done, gen, probe).stages)


def test_teacher_tokens_cost_a_forward_only():
    probe = TrainProbe(backward_s_per_token=0.03, forward_s_per_token=0.01)
    assert probe.micro_step({"sft": 10, "teacher": 20}, batch=2) == pytest.approx(2 * (0.3 + 0.2))


def test_stream_lengths_follow_the_method():
    synth = SynthConfig(
        agent_max_new_tokens=10,
        env_max_new_tokens=5,
        output_max_new_tokens=7,
        reason_max_new_tokens=3,
    )
    genpi = stream_lengths(get_method("genpi"), 500, 20, synth, turns=2)
    assert genpi == {"sft": 20 + 2 * 15, "pg": 20 + 7 + 10 + 500 + 3}
    assert stream_lengths(get_method("sft"), 500, 20, synth, 2) == {"sft": 50}
    assert stream_lengths(get_method("kld"), 500, 20, synth, 2) == {"sft": 50, "teacher": 550}


def test_only_hours_on_a_cpu_get_the_warning():
    from genpi.estimate import CPU_WARN_SECONDS, too_long_here

    assert too_long_here("cpu", CPU_WARN_SECONDS + 1)
    assert not too_long_here("cpu", CPU_WARN_SECONDS)
    assert not too_long_here("cuda:0", 10 * CPU_WARN_SECONDS)


def test_human_durations():
    assert human(42) == "42 s"
    assert human(600) == "10 min"
    assert human(3 * 3600) == "3.0 h"


def test_probes_measure_and_leave_the_model_untouched(tiny_backend):
    import torch

    conv = [[{"role": "system", "content": "Be brief. " * 20}, {"role": "user", "content": "hi"}]]
    gen = probe_generation(tiny_backend, conv, rows=3, tokens=4)
    assert gen.rows == 3 and gen.call_s > 0 and gen.step_s >= 0
    model = tiny_backend.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = probe_training(model, 24, make_config("quick"))
    assert train.backward_s_per_token > 0 and train.forward_s_per_token > 0
    after = model.state_dict()
    assert set(after) == set(before)  # no LoRA modules left behind
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(model, "peft_config") or not model.peft_config
    assert isinstance(Estimate().format("t"), str)


def test_each_seed_of_a_method_is_counted():
    """Three seeds of one method cost three runs (a seed used to overwrite the last one's row)."""
    synth = SynthConfig(n=40, heldout_fraction=0.0)
    gen = GenerationProbe(rows=16, call_s=1.0, step_s=1.0)
    probe = TrainProbe(backward_s_per_token=0.01, forward_s_per_token=0.0)
    train = make_config("quick", max_steps=5)
    one = RunPlan(synth, train, (get_method("sft"),), 1, 100, 10, True, 0, 1, 1, 1)
    three = RunPlan(synth, train, (get_method("sft"),) * 3, 1, 100, 10, True, 0, 1, 1, 1)
    single = estimate_run(one, gen, probe)
    triple = estimate_run(three, gen, probe)
    assert triple.stages["training: sft"] == pytest.approx(3 * single.stages["training: sft"])
    assert triple.details["training: sft"].startswith("3 x 5 steps")
