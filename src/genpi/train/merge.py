"""``genpi merge``: fold a LoRA adapter into its base model, for engines without LoRA support.

Run as: genpi merge ADAPTER_DIR --out MERGED_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from genpi.adapter import (
    INFO_FILE,
    PROMPT_FILE,
    AdapterError,
    attach_adapter,
    check_adapter,
    read_adapter_info,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "adapter", metavar="ADAPTER", help="an adapter directory written by genpi train"
    )
    parser.add_argument("--out", required=True, help="directory for the merged model")
    parser.add_argument(
        "--model", default=None, help="base model (default: the one it was trained on)"
    )
    parser.add_argument(
        "--dtype", default="fp32", help="dtype of the merged weights: fp32, bf16, fp16"
    )


def merge(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    model_ref: str | None = None,
    dtype: str = "fp32",
) -> Path:
    """Write base model + adapter as one model (with tokenizer and the adapter's record)."""
    import json

    from genpi.models import load_model, resolve_model
    from genpi.train.trainer import weights_sha256

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    info = read_adapter_info(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise AdapterError(
            f"{str(adapter_dir)!r} is a {config.get('peft_type')} adapter; only LoRA adapters merge "
            "into the weights (serve soft prompts with genpi's local backend)"
        )
    model_ref = model_ref or info.base_model
    check_adapter(
        adapter_dir,
        base_model=model_ref,
        base_weights_sha256=weights_sha256(resolve_model(model_ref)),
    )
    model, tokenizer = load_model(model_ref, dtype=dtype, device="cpu")
    merged = attach_adapter(model, adapter_dir).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    for name in (INFO_FILE, PROMPT_FILE):
        shutil.copy(adapter_dir / name, out_dir / name)
    return out_dir


def main(args: argparse.Namespace) -> int:
    out = merge(args.adapter, args.out, model_ref=args.model, dtype=args.dtype)
    print(f"merged model written to {out} (load it with --model {out})")
    return 0
