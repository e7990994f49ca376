"""Does a prompt fit the model's context? Checked by every verb before it loads or runs a model.

A prompt longer than the context does not fail loudly on its own: generation runs for minutes and
prints garbage, synthesis runs out of memory. So every verb that puts the prompt in front of a
model checks, before any heavy work, that the prompt's teacher view (its messages and an empty
input, rendered with the chat template and the generation prompt) plus the room the reply needs
(``reserve``, usually ``--max-new-tokens``) fits the model's context.
"""

from __future__ import annotations

from typing import Any

from genpi.prompt import Prompt, PromptError

# Config keys that hold the context length, by model family (the first one present wins).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# transformers' "no limit known" model_max_length is 1e30; anything above this is no real limit.
_SANE_TOKENIZER_LIMIT = 10_000_000


def context_length(config: Any, tokenizer: Any = None) -> int | None:
    """The model's context in tokens: its config's positions, else the tokenizer's limit when
    that is a real number; None when neither says."""
    if config is not None:
        text_config = getattr(config, "text_config", None)  # multimodal configs nest it
        for source in (config, text_config):
            for key in CONTEXT_KEYS:
                value = source.get(key) if isinstance(source, dict) else getattr(source, key, None)
                if isinstance(value, int) and value > 0:
                    return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _SANE_TOKENIZER_LIMIT:
        return limit
    return None


def prompt_tokens(prompt: Prompt, tokenizer: Any) -> int:
    """Tokens of the prompt's teacher view with an empty input, as the model reads it."""
    from genpi.encoding import encode_chat

    return len(encode_chat(tokenizer, prompt.teacher_messages("")))


def check_prompt_fits(
    prompt: Prompt,
    tokenizer: Any,
    model_config_or_max_context: Any,
    *,
    reserve: int = 0,
    model: str | None = None,
) -> int:
    """The prompt's token count; raise PromptError when it and ``reserve`` tokens of reply do not
    fit the context (an int, or a model config). An unknown context is not checked."""
    if isinstance(model_config_or_max_context, int):
        max_context: int | None = model_config_or_max_context
    else:
        max_context = context_length(model_config_or_max_context, tokenizer)
    n = prompt_tokens(prompt, tokenizer)
    if max_context is None:
        return n
    # At least one token must be left for the reply, even when no reserve is asked for.
    if n + max(reserve, 1) <= max_context:
        return n
    context = (
        f"the context of {max_context} tokens of model {model!r}"
        if model
        else f"the model's context of {max_context} tokens"
    )
    if n >= max_context:
        problem = f"is {n} tokens, longer than {context}"
    else:
        problem = f"is {n} tokens and the reply needs up to {reserve} more, over {context}"
    fix = "shorten the prompt or use a model with a longer context"
    if reserve and n < max_context:
        fix = "lower --max-new-tokens, " + fix
    raise PromptError(f"prompt {prompt.name!r} {problem}: {fix}")


def model_context(ref: str | None, tokenizer: Any = None) -> int | None:
    """The context of a model reference, read from its config (no weights are loaded); None for
    a remote server (its context is not known here) or a config that cannot be read."""
    from genpi.llm.refs import parse_backend_ref
    from genpi.models import resolve_model

    parsed = parse_backend_ref(ref)
    if parsed.remote:
        return None
    resolved = resolve_model(parsed.local_model)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolved.path)
    except (OSError, ValueError):  # loading the model reports this with its own error
        config = None
    return context_length(config, tokenizer)


def check_model_fits(prompt: Prompt, ref: str | None, *, reserve: int = 0) -> int | None:
    """Check ``prompt`` against the model ``ref`` names, loading only its tokenizer and config.

    Returns the prompt's token count, or None for a remote server, whose context is unknown.
    """
    from genpi.llm.refs import parse_backend_ref
    from genpi.models import DEFAULT_MODEL, load_tokenizer

    parsed = parse_backend_ref(ref)
    if parsed.remote:
        return None
    local_ref = parsed.local_model
    tokenizer = load_tokenizer(local_ref)
    return check_prompt_fits(
        prompt,
        tokenizer,
        model_context(local_ref, tokenizer),
        reserve=reserve,
        model=ref or DEFAULT_MODEL,
    )
