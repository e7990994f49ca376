"""What an adapter directory records beside its PEFT weights, and the checks on loading it.

An adapter directory holds

- ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT; loadable by vLLM ``--enable-lora``);
- ``genpi_adapter.json``: prompt fingerprint and name, base model reference and weights hash,
  method, hyperparameters, data fingerprint, chat template;
- ``prompt.json``: the prompt it internalizes.

This module owns adapters end to end: checking a directory (``check_adapter_files``,
``check_adapter``), attaching it to a loaded model (``attach_adapter``), running a soft prompt
(``soft_prompt``, ``token_logits``), and building a random one whose cost is a trained adapter's
(``random_lora``, ``make_random_adapter``: the profile's cost measurement, benchmarks and tests).

A soft prompt (``genpi train --method soft-prompt``: PEFT prompt tuning) is a LoRA's sibling with
other rules. PEFT holds adapters of one type per ``PeftModel``, so a LoRA and a soft prompt on one
base model need two (``attach_adapter`` refuses the mix; ``genpi eval`` keeps one per type). Its
forward prepends the virtual tokens, so logits have that many more positions than the input
(``token_logits`` drops them: the trainer and eval's NLL). Its ``generate`` is not used: PEFT 0.21
looks for the KV cache under transformers 4's name (``past_key_values``, now ``cache``), finds none
and inserts the virtual tokens again at every step; the local backend instead runs the causal LM
under it with the virtual tokens as a cached prefix (``soft_prompt``).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Prompt, prompt_from_dict

INFO_FILE = "genpi_adapter.json"
PROMPT_FILE = "prompt.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"  # PEFT's older format: plain PEFT adapters may hold it
RESTORE = "retrain it with genpi train, or copy the file back from where the adapter came from"


class AdapterError(GenpiError):
    pass


def _read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from an adapter's file, or an AdapterError naming the file and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"adapter file {str(path)!r} is missing: {RESTORE}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise AdapterError(
            f"adapter file {str(path)!r} is unreadable or truncated ({exc}): {RESTORE}"
        ) from None
    if not isinstance(data, dict):
        raise AdapterError(f"adapter file {str(path)!r} does not hold a JSON object: {RESTORE}")
    return data


def check_adapter_files(adapter_dir: str | Path) -> None:
    """Refuse an adapter directory whose files are missing or broken, before PEFT reads it.

    PEFT answers a missing or truncated file with a traceback, and a missing weights file with a
    download attempt from the Hub under the directory's name; every loader calls this first.
    """
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(
            f"{str(adapter_dir)!r} is not an adapter directory (it does not exist): "
            "give the directory genpi train wrote (RUN_DIR/adapters/NAME)"
        )
    if not (adapter_dir / CONFIG_FILE).exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} is not an adapter directory (no {CONFIG_FILE}): "
            f"give the directory genpi train wrote, or {RESTORE}"
        )
    _read_json_file(adapter_dir / CONFIG_FILE)
    weights = adapter_dir / WEIGHTS_FILE
    if weights.exists():
        from safetensors import safe_open

        try:
            # Reads the header and checks that it covers the whole file: a cut-off copy fails.
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: a broken file either way
            raise AdapterError(
                f"adapter weights {str(weights)!r} are truncated or corrupt ({exc}): {RESTORE}"
            ) from None
    elif not (adapter_dir / LEGACY_WEIGHTS_FILE).exists():
        raise AdapterError(f"adapter weights {str(weights)!r} are missing: {RESTORE}")
    # genpi writes its metadata and the prompt with the weights: one without the other is damage.
    info, prompt = adapter_dir / INFO_FILE, adapter_dir / PROMPT_FILE
    if info.exists() or prompt.exists():
        _read_json_file(info)
        _read_json_file(prompt)


@dataclass
class AdapterInfo:
    prompt_fingerprint: str
    prompt_name: str
    base_model: str  # the model reference used for training (e.g. smollm2-135m)
    base_weights_sha256: str | None = None
    method: str = "genpi"
    config: dict[str, Any] = field(default_factory=dict)  # every hyperparameter
    data_fingerprint: str | None = None
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_adapter_info(adapter_dir: str | Path, info: AdapterInfo, prompt: Prompt) -> None:
    adapter_dir = Path(adapter_dir)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / INFO_FILE).write_text(
        json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    prompt.save(adapter_dir / PROMPT_FILE)


def read_adapter_info(adapter_dir: str | Path) -> AdapterInfo:
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / CONFIG_FILE).exists():
        raise AdapterError(f"{str(adapter_dir)!r} is not an adapter directory (no {CONFIG_FILE})")
    path = adapter_dir / INFO_FILE
    if not path.exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} has no {INFO_FILE}: it was not trained by genpi, so its prompt "
            f"is unknown; if it was, {RESTORE}"
        )
    data = _read_json_file(path)
    known = set(AdapterInfo.__dataclass_fields__)
    try:
        return AdapterInfo(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # a required field is absent
        required = [
            f.name for f in fields(AdapterInfo) if f.default is f.default_factory is MISSING
        ]
        raise AdapterError(
            f"adapter file {str(path)!r} lacks {sorted(set(required) - set(data))}: {RESTORE}"
        ) from None


def read_adapter_prompt(adapter_dir: str | Path) -> Prompt:
    path = Path(adapter_dir) / PROMPT_FILE
    if not path.exists():
        raise AdapterError(f"{str(adapter_dir)!r} has no {PROMPT_FILE}")
    return prompt_from_dict(_read_json_file(path), source=str(path))


def same_model_ref(a: str, b: str) -> bool:
    """Whether two model references name the same model: equal, or one local directory spelled
    differently (relative vs absolute, a trailing slash, ``~``)."""
    if a == b:
        return True
    path_a, path_b = Path(a).expanduser(), Path(b).expanduser()
    return path_a.is_dir() and path_b.is_dir() and path_a.resolve() == path_b.resolve()


def check_adapter(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    base_weights_sha256: str | None = None,
    prompt: Prompt | None = None,
) -> AdapterInfo:
    """Refuse an adapter trained on another base model or for another prompt, or with broken
    files (before any model is loaded for it)."""
    check_adapter_files(adapter_dir)
    info = read_adapter_info(adapter_dir)
    if base_weights_sha256 and info.base_weights_sha256:
        if base_weights_sha256 != info.base_weights_sha256:
            raise AdapterError(
                f"adapter {str(adapter_dir)!r} was trained on other weights ({info.base_model}, "
                f"sha256 {info.base_weights_sha256[:12]}) than the model given ({base_model}, "
                f"sha256 {base_weights_sha256[:12]}): load it with --model {info.base_model}"
            )
    # Without a weights hash on both sides, the model references must agree.
    elif base_model and not same_model_ref(base_model, info.base_model):
        raise AdapterError(
            f"adapter {str(adapter_dir)!r} was trained on {info.base_model!r}, not {base_model!r}: "
            f"load it with --model {info.base_model}"
        )
    if prompt is not None and prompt.fingerprint != info.prompt_fingerprint:
        raise AdapterError(
            f"adapter {str(adapter_dir)!r} internalizes prompt {info.prompt_name!r} "
            f"({info.prompt_fingerprint[:12]}), not {prompt.name!r} ({prompt.fingerprint[:12]})"
        )
    return info


def refuse_foreign_adapter(
    adapter_dir: str | Path, base_model: str, base_weights_sha256: str | None
) -> None:
    """Refuse a genpi adapter trained on another base; a plain PEFT adapter (no genpi metadata)
    passes, as its base is unknown."""
    if (Path(adapter_dir) / INFO_FILE).exists():
        check_adapter(adapter_dir, base_model=base_model, base_weights_sha256=base_weights_sha256)


def attach_adapter(model: Any, adapter_dir: str | Path, *, name: str = "default") -> Any:
    """``model`` with the adapter in ``adapter_dir`` added under ``name``, in eval mode.

    A plain model is wrapped in a ``PeftModel``; a ``PeftModel`` gets one more adapter (switch with
    ``set_adapter``). Every file is checked first: PEFT would fail with a traceback, or try the Hub
    for missing weights.
    """
    check_adapter_files(adapter_dir)
    from peft import PeftModel

    if isinstance(model, PeftModel):
        kind, held = adapter_type(adapter_dir), _type_name(model.peft_type)
        if kind != held:
            raise AdapterError(
                f"adapter {str(adapter_dir)!r} is a {kind} adapter and PEFT holds one adapter type "
                f"per model, here {held}: attach it to the base model instead (a second PEFT model "
                "on the same weights, as genpi eval does)"
            )
        model.load_adapter(str(adapter_dir), adapter_name=name)
        return model.eval()
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name).eval()


def adapter_type(adapter_dir: str | Path) -> str:
    """The PEFT type an adapter directory holds: ``LORA``, ``PROMPT_TUNING`` (a soft prompt)..."""
    path = Path(adapter_dir) / CONFIG_FILE
    kind = _read_json_file(path).get("peft_type")
    if not isinstance(kind, str):
        raise AdapterError(f"adapter file {str(path)!r} names no peft_type: {RESTORE}")
    return kind


def require_lora(adapter_dir: str | Path, where: str) -> None:
    """Refuse an adapter that is not LoRA where only LoRA runs (``genpi serve``'s batched engine,
    vLLM): a soft prompt there would be loaded and then decoded without its virtual tokens."""
    kind = adapter_type(adapter_dir)
    if kind != "LORA":
        raise AdapterError(
            f"adapter {str(adapter_dir)!r} is {kind} (a soft prompt), and {where} runs LoRA "
            "adapters only: evaluate it with `genpi eval` or talk to it with `genpi chat "
            "--adapter`, or train a LoRA method (genpi, sft, kld, ...) to serve"
        )


def _type_name(peft_type: Any) -> str:
    return str(getattr(peft_type, "value", peft_type))  # PeftType.LORA -> "LORA"


# The prompt-learning type genpi trains (--method soft-prompt): virtual tokens that are input
# embeddings (prefix tuning's are keys and values in every layer, another way to run them).
SOFT_PROMPT_TYPES = ("PROMPT_TUNING",)


@dataclass
class SoftPrompt:
    """The active soft prompt of a ``PeftModel``: run ``lm`` on ``embeds`` followed by the input
    tokens' embeddings, at positions counted from the first virtual token."""

    lm: Any  # the causal LM under the PEFT wrapper
    embeds: Any  # [1, virtual tokens, hidden] input embeddings


def soft_prompt(model: Any) -> SoftPrompt | None:
    """The soft prompt ``model`` puts before every input, or None: not a ``PeftModel``, a LoRA
    one, or its adapter disabled (``disable_adapter``)."""
    config = getattr(model, "active_peft_config", None)
    # PEFT's disable_adapter sets this flag for every adapter type (and swaps the prompt-learning
    # forward for the base model's).
    if config is None or not config.is_prompt_learning or getattr(model, "_adapters_disabled", 0):
        return None
    kind = _type_name(config.peft_type)
    if kind not in SOFT_PROMPT_TYPES:
        raise AdapterError(
            f"a {kind} adapter is not supported: genpi runs LoRA adapters and soft prompts "
            f"({', '.join(SOFT_PROMPT_TYPES)}); retrain it with genpi train --method soft-prompt"
        )
    import torch

    lm = model.get_base_model()
    with torch.inference_mode():
        embeds = model.get_prompt(batch_size=1)
    return SoftPrompt(lm=lm, embeds=embeds.to(lm.get_input_embeddings().weight.dtype))


def token_logits(logits: Any, n_tokens: int) -> Any:
    """The logits [B, n_tokens, V] of the ``n_tokens`` input positions: a soft prompt's forward
    prepends its virtual tokens' positions (``logits`` is then longer), which are dropped; without
    one this is ``logits`` itself. The one place that knows where PEFT puts them."""
    extra = logits.shape[1] - n_tokens
    if extra < 0:
        raise ValueError(f"{logits.shape[1]} positions of logits for {n_tokens} input tokens")
    return logits[:, extra:]


def random_lora(model: Any, *, rank: int, seed: int) -> Any:
    """``model`` wrapped with a LoRA of the paper's shape (all linear layers, rank ``rank``, alpha
    ``2 * rank``) whose weights are random and non-zero, B included: every LoRA matmul is real, so
    it costs what a trained adapter costs, but says nothing useful."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules="all-linear",
        init_lora_weights=False,  # PEFT's default zero B would make the adapter a no-op
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config).eval()


def make_random_adapter(
    base: str, prompt: Prompt, out: str | Path, *, seed: int = 1, rank: int = 4
) -> Path:
    """A random adapter directory (``random_lora``) for model ``base`` and ``prompt``, with
    genpi's metadata (method ``random``): loads, checks and serves like a trained one."""
    from genpi.models import load_model, resolve_model

    model, _ = load_model(base, dtype="fp32", device="cpu")
    out = Path(out)
    random_lora(model, rank=rank, seed=seed).save_pretrained(out)
    info = AdapterInfo(
        prompt_fingerprint=prompt.fingerprint,
        prompt_name=prompt.name,
        base_model=base,
        base_weights_sha256=resolve_model(base).provenance.get("weights_sha256"),
        method="random",
    )
    write_adapter_info(out, info, prompt)
    return out
