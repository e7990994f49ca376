"""The hidden-state loss path: when it is used, that it gives the model's logits, and the KL
teacher's shared-prefix cache against a full forward, on small fp32 models."""

from __future__ import annotations

import pytest
import torch

from genpi.train import hidden as hs
from genpi.train.losses import IGNORE, chunked_nll_sum, nll_sum, target_ids
from genpi.train.sampling import length_grouped_indices


def tiny_llama(vocab: int = 300, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def with_lora(model, target_modules="all-linear"):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=target_modules, init_lora_weights=False)
    return get_peft_model(model, config)


def batch(seed: int = 0, prefix: int = 10):
    """Two right-padded rows sharing their first ``prefix`` tokens, targets after position 12."""
    torch.manual_seed(seed)
    ids = torch.randint(0, 300, (2, 24))
    ids[1, :prefix] = ids[0, :prefix]
    mask = torch.ones_like(ids)
    mask[1, 19:] = 0
    labels = ids.clone()
    labels[:, :13] = IGNORE
    labels[1, 19:] = IGNORE
    return ids, mask, labels


def test_lora_model_splits_and_the_projected_hidden_states_are_its_logits():
    model = with_lora(tiny_llama())
    split, why = hs.split_model(model)
    assert split is not None and why == ""
    assert split.head is model.get_base_model().lm_head
    ids, mask, labels = batch()
    assert hs.probe(model, split, ids[:1, :8]) == ""
    want, count = nll_sum(model(input_ids=ids, attention_mask=mask).logits, labels)
    rows = hs.gather_targets(hs.student_hidden(model, ids, mask), labels)
    got, got_count = chunked_nll_sum(rows, split.head, target_ids(labels), chunk_size=4)
    assert got_count.item() == count.item() == 17
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_the_full_logits_path_is_kept_where_the_split_is_not_exact(monkeypatch):
    assert hs.split_model(with_lora(tiny_llama()), prompt_tuning=True)[0] is None
    # A LoRA-wrapped output layer is not a plain Linear.
    wrapped = with_lora(tiny_llama(), target_modules=["q_proj", "lm_head"])
    split, why = hs.split_model(wrapped)
    assert split is None and "output layer" in why
    monkeypatch.setenv(hs.FULL_LOGITS_ENV, "1")
    split, why = hs.split_model(with_lora(tiny_llama()))
    assert split is None and hs.FULL_LOGITS_ENV in why


def test_the_probe_catches_logits_that_are_not_the_output_layer_alone():
    # Gemma 2 soft-caps its logits after the output layer: structurally splittable, numerically
    # not the same.
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=1.0,
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    split, why = hs.split_model(model)
    assert split is not None, why
    assert "not the logits" in hs.probe(model, split, batch()[0][:1, :8])


def test_shared_prefix_stops_before_the_first_scored_position():
    a = ([1, 2, 3, 4, 5, 6], [IGNORE, IGNORE, IGNORE, IGNORE, 5, 6])  # scores from output 3
    b = ([1, 2, 3, 4, 9], [IGNORE, IGNORE, IGNORE, IGNORE, 9])
    assert hs.shared_prefix([a, b]) == [1, 2, 3]
    c = ([1, 2, 7, 4, 9], [IGNORE, IGNORE, IGNORE, IGNORE, 9])
    assert hs.shared_prefix([a, c]) == [1, 2]
    early = ([1, 2, 3, 4], [IGNORE, 2, 3, 4])  # scores from output 0
    assert hs.shared_prefix([a, early]) == []
    assert hs.shared_prefix([]) == []


@pytest.mark.parametrize("prefix", [1, 6, 10])
def test_teacher_prefix_cache_equals_the_full_forward(prefix):
    model = with_lora(tiny_llama())
    split, _ = hs.split_model(model)
    ids, mask, labels = batch(prefix=prefix)
    cached = hs.SharedPrefix(ids[0, :prefix].tolist())
    assert cached.matches(ids)
    with torch.no_grad(), model.disable_adapter():
        full = split.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        want = hs.gather_targets(full, labels)
        for _ in range(2):  # the second micro-batch reuses the cache the first computed
            suffix = cached.hidden(split.backbone, ids, mask)
            got = hs.gather_targets(suffix, labels[:, prefix:])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other = ids.clone()
    other[0, 0] += 1
    assert not cached.matches(other)


def test_only_a_frozen_teacher_gets_a_cached_prefix():
    model = with_lora(tiny_llama())
    assert hs.is_frozen(model.get_base_model())  # LoRA: the base is frozen, the adapter disabled
    assert not hs.is_frozen(tiny_llama())  # a model being fine-tuned in full


def test_length_grouped_batches_are_a_shuffled_permutation_of_similar_lengths():
    lengths = [10 * (i % 7) + i for i in range(64)]
    generator = torch.Generator().manual_seed(0)
    order = length_grouped_indices(lengths, batch_size=4, pool_batches=4, generator=generator)
    assert sorted(order) == list(range(64))
    batches = [order[i : i + 4] for i in range(0, 64, 4)]
    padding = sum(max(lengths[i] for i in b) * 4 - sum(lengths[i] for i in b) for b in batches)
    random_order = torch.randperm(64, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [random_order[i : i + 4] for i in range(0, 64, 4)]
    random_padding = sum(
        max(lengths[i] for i in b) * 4 - sum(lengths[i] for i in b) for b in random_batches
    )
    assert padding < random_padding / 2
    again = length_grouped_indices(lengths, batch_size=4, pool_batches=4, generator=generator)
    assert again != order  # a new order each epoch
