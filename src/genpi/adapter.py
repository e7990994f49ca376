"""What an adapter directory records beside its PEFT weights, and the checks on loading it.

An adapter directory holds

- ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT; loadable by vLLM ``--enable-lora``);
- ``genpi_adapter.json``: prompt fingerprint and name, base model reference and weights hash,
  method, hyperparameters, data fingerprint, chat template;
- ``prompt.json``: the prompt it internalizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Prompt, prompt_from_dict

INFO_FILE = "genpi_adapter.json"
PROMPT_FILE = "prompt.json"


class AdapterError(GenpiError):
    pass


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
    if not (adapter_dir / "adapter_config.json").exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} is not an adapter directory (no adapter_config.json)"
        )
    path = adapter_dir / INFO_FILE
    if not path.exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} has no {INFO_FILE}: it was not trained by genpi, so its prompt is unknown"
        )
    data = json.loads(path.read_text())
    known = set(AdapterInfo.__dataclass_fields__)
    return AdapterInfo(**{k: v for k, v in data.items() if k in known})


def read_adapter_prompt(adapter_dir: str | Path) -> Prompt:
    path = Path(adapter_dir) / PROMPT_FILE
    if not path.exists():
        raise AdapterError(f"{str(adapter_dir)!r} has no {PROMPT_FILE}")
    return prompt_from_dict(json.loads(path.read_text()), source=str(path))


def check_adapter(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    base_weights_sha256: str | None = None,
    prompt: Prompt | None = None,
) -> AdapterInfo:
    """Refuse an adapter trained on another base model or for another prompt."""
    info = read_adapter_info(adapter_dir)
    if base_weights_sha256 and info.base_weights_sha256:
        if base_weights_sha256 != info.base_weights_sha256:
            raise AdapterError(
                f"adapter {str(adapter_dir)!r} was trained on other weights ({info.base_model}, "
                f"sha256 {info.base_weights_sha256[:12]}) than the model given ({base_model}, "
                f"sha256 {base_weights_sha256[:12]}): load it with --model {info.base_model}"
            )
    # Without a weights hash on both sides, the model references must agree.
    elif base_model and base_model != info.base_model:
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
