import pytest

from genpi.llm import BackendError, SamplingParams, cut_at_stop, load_backend
from genpi.llm.local import LocalBackend

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "a much longer question " * 6},
    ],
    [{"role": "user", "content": "what is two plus two?"}],
]


def test_batched_greedy_equals_one_at_a_time(tiny_backend):
    """Left padding and the attention mask must not change what each conversation gets."""
    params = SamplingParams(max_new_tokens=12)
    batched = tiny_backend.generate(CONVERSATIONS, params)
    single = [tiny_backend.generate([c], params)[0] for c in CONVERSATIONS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.prompt_tokens for g in batched] == [
        len(tiny_backend.encode(c)) for c in CONVERSATIONS
    ]


def test_length_limit_and_finish_reason(tiny_backend):
    gens = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=5))
    for gen in gens:
        assert gen.completion_tokens <= 5
        assert gen.finish_reason in ("stop", "length")
        if gen.finish_reason == "length":
            assert gen.completion_tokens == 5


def test_sampling_is_reproducible_with_a_seed(tiny_backend):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    first = [g.text for g in tiny_backend.generate(CONVERSATIONS, params)]
    again = [g.text for g in tiny_backend.generate(CONVERSATIONS, params)]
    other = [
        g.text
        for g in tiny_backend.generate(
            CONVERSATIONS, SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=8)
        )
    ]
    assert first == again
    assert first != other


def test_stop_strings_cut_the_text(tiny_backend):
    # a random model's greedy reply is blank lines: sample (seeded) to get varied text
    params = SamplingParams(max_new_tokens=24, temperature=1.0, seed=3)
    conv = CONVERSATIONS[0]
    (free,) = tiny_backend.generate([conv], params)
    assert len(free.text) > 4
    stop = free.text[2:4]
    (cut,) = tiny_backend.generate([conv], SamplingParams(**{**params.to_dict(), "stop": (stop,)}))
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_cut_at_stop():
    assert cut_at_stop("abc END def", ["END"]) == ("abc ", True)
    assert cut_at_stop("abc", ["X", ""]) == ("abc", False)
    assert cut_at_stop("a2b1", ["1", "2"]) == ("a", True)


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


def test_adapter_can_be_disabled_to_get_the_base_model(
    tiny_model_dir, tiny_adapter_dir, tiny_backend
):
    with_adapter = LocalBackend.from_ref(
        str(tiny_model_dir), adapter=tiny_adapter_dir, dtype="fp32"
    )
    params = SamplingParams(max_new_tokens=10)
    adapted = [g.text for g in with_adapter.generate(CONVERSATIONS, params)]
    with with_adapter.adapter_disabled():
        disabled = [g.text for g in with_adapter.generate(CONVERSATIONS, params)]
    base = [g.text for g in tiny_backend.generate(CONVERSATIONS, params)]
    assert disabled == base
    assert adapted != base


def test_bad_adapter_dir_and_backend_refs(tmp_path, tiny_model_dir):
    with pytest.raises(BackendError, match="not an adapter directory"):
        LocalBackend.from_ref(str(tiny_model_dir), adapter=tmp_path, dtype="fp32")
    with pytest.raises(BackendError, match="append '#MODEL'"):
        load_backend("http://127.0.0.1:9/v1")
    with pytest.raises(BackendError, match="cannot be attached to a remote server"):
        load_backend("http://127.0.0.1:9/v1#m", adapter=tmp_path)


def test_adapter_for_another_base_model_is_refused(tiny_adapter_dir):
    from genpi.adapter import AdapterError

    with pytest.raises(AdapterError, match="was trained on .*not 'smollm2-135m'"):
        LocalBackend.from_ref("smollm2-135m", adapter=tiny_adapter_dir, dtype="fp32")


def test_a_final_assistant_message_is_continued_not_answered(tiny_backend):
    user = [{"role": "user", "content": "list three fruits"}]
    prefilled = [*user, {"role": "assistant", "content": "1. apple"}]
    answer_ids = tiny_backend.encode(user)
    continued_ids = tiny_backend.encode(prefilled)
    text = tiny_backend.tokenizer.decode(continued_ids)
    # The prefill is the end of the context: no end-of-turn and no fresh assistant header after it.
    assert text.rstrip().endswith("1. apple")
    assert continued_ids[: len(answer_ids)] == answer_ids
    gen = tiny_backend.generate([prefilled], SamplingParams(max_new_tokens=4))[0]
    assert gen.prompt_tokens == len(continued_ids)


def test_threads_take_turns_on_one_local_model(tiny_backend, monkeypatch):
    """eval-os --concurrency calls one backend from several threads: they must not overlap."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    params = SamplingParams(max_new_tokens=3)
    expected = [tiny_backend.generate([c], params)[0].text for c in CONVERSATIONS]
    active, peak = [0], [0]
    original = tiny_backend._generate_batch

    def spy(*args):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.05)  # long enough for another thread to arrive while this one runs
        try:
            return original(*args)
        finally:
            active[0] -= 1

    monkeypatch.setattr(tiny_backend, "_generate_batch", spy)
    with ThreadPoolExecutor(len(CONVERSATIONS)) as pool:
        texts = list(pool.map(lambda c: tiny_backend.generate([c], params)[0].text, CONVERSATIONS))
    assert peak[0] == 1 and texts == expected


def test_an_adapter_is_accepted_with_its_base_spelled_differently(
    tiny_model_dir, tiny_adapter_dir, monkeypatch
):
    """The base check compares local directories, not spellings (the serve engine always did; the
    local backend refused a relative path to the very directory the adapter was trained on)."""
    from genpi.adapter import AdapterError, check_adapter

    monkeypatch.chdir(tiny_model_dir.parent)
    relative = f"./{tiny_model_dir.name}/"
    backend = LocalBackend.from_ref(relative, adapter=tiny_adapter_dir, dtype="fp32")
    assert backend.has_adapter
    with pytest.raises(AdapterError, match="was trained on"):
        check_adapter(tiny_adapter_dir, base_model=str(tiny_model_dir.parent))
