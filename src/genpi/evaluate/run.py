"""``genpi eval``'s library: every system's greedy answers on held-out inputs, scored against the
teacher (``genpi.evaluate.cli`` is its command line; ``genpi internalize`` calls ``evaluate``).

Systems: the upper bound (the model with the prompt: the teacher), the base model without the
prompt, every adapter without the prompt (default: all of RUN_DIR/adapters/*), and the prompt
compressed by LLMLingua at each ``--compression`` rate. Single-turn sets are scored against the
upper bound's greedy answers; the multi-turn set replays the held-out role-played conversations
and scores every agent turn against the teacher's recorded turn, given the conversation so far.

Writes, per evaluation set (``heldout``, ``heldout-multiturn``, or the inputs file's stem):
``RUN_DIR/eval/<set>.json`` (settings, per-system scores raw and normalised by the upper bound)
and ``RUN_DIR/eval/<set>.answers.jsonl`` (every answer with its action and scores). Each
system's answers are cached in ``RUN_DIR/eval/<set>/``, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genpi.data import write_atomic
from genpi.evaluate import metrics
from genpi.evaluate.inputs import (
    EvalError,
    Item,
    default_model,
    default_prompt,
    find_adapters,
    heldout_items,
    read_inputs,
    refuse_another_prompt,
)
from genpi.evaluate.readers import Action, reader_for, reader_name
from genpi.evaluate.systems import UPPER_BOUND, ModelHost, System
from genpi.prompt import Prompt

log = logging.getLogger(__name__)


# -- generation and scoring ----------------------------------------------------------------------


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _adapter_stamp(adapter: str | None) -> Any:
    if adapter is None:
        return None
    weights = sorted(Path(adapter).glob("adapter_model.*"))
    # Lists, not tuples: the stamp is compared with the one read back from eval/<set>.json.
    return [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights]


def run_system(
    host: ModelHost,
    system: System,
    prompt: Prompt,
    items: Sequence[Item],
    references: Sequence[str] | None,
    *,
    max_new_tokens: int,
    cache_path: Path | None,
    cache_key: str,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Greedy answers (and, given references, the teacher-forced NLL of each) for one system."""
    from tqdm import tqdm

    from genpi.llm import SamplingParams

    if cache_path is not None and cache_path.exists():
        cached = json.loads(cache_path.read_text())
        if cached.get("key") == cache_key:
            log.info("%s: reusing %s", system.name, cache_path)
            return cached["records"]
    params = SamplingParams(max_new_tokens=max_new_tokens)
    conversations = [system.conversation(prompt, it.input, it.context) for it in items]
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    with host.active(system) as backend:
        bar = tqdm(
            total=len(items), desc=f"eval {system.name}", unit="answer", disable=not progress
        )
        for lo in range(0, len(items), host.batch_size):
            batch = conversations[lo : lo + host.batch_size]
            for gen in backend.generate(batch, params):
                records.append(
                    {
                        "answer": gen.text,
                        "finish_reason": gen.finish_reason,
                        "prompt_tokens": gen.prompt_tokens,
                        "completion_tokens": gen.completion_tokens,
                    }
                )
            bar.update(len(batch))
        bar.close()
        seconds = time.perf_counter() - start
        refs = references if references is not None else [r["answer"] for r in records]
        # An empty reference still has a target: the end-of-turn token.
        nlls = metrics.teacher_forced_nlls(backend.model, host.tokenizer, conversations, refs)
        for rec, nll in zip(records, nlls, strict=True):
            rec["nll"] = nll
    for rec in records:
        rec["seconds"] = seconds / max(len(records), 1)
    if cache_path is not None:
        write_atomic(
            cache_path,
            json.dumps({"key": cache_key, "records": records}, ensure_ascii=False) + "\n",
        )
    return records


def evaluate_set(
    host: ModelHost,
    set_name: str,
    prompt: Prompt,
    items: Sequence[Item],
    systems: Sequence[System],
    *,
    out_dir: Path,
    model_info: dict[str, Any],
    max_new_tokens: int = 256,
    compression_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every system on ``items``, score against the teacher, write eval/<set>.json + answers.

    Systems an earlier call scored on the same basis and this one does not are kept in the
    table (``_earlier_systems``)."""
    if not items:
        raise EvalError(f"evaluation set {set_name!r} has no inputs")
    if systems[0].name != UPPER_BOUND:
        raise ValueError("the upper bound must be the first system: it gives the references")
    read = reader_for(prompt)
    recorded = [it.reference for it in items]
    multi_turn = all(r is not None for r in recorded)
    items_key = [(it.id, it.input, it.context, it.reference) for it in items]
    results: dict[str, list[dict[str, Any]]] = {}
    references: list[str] | None = [r or "" for r in recorded] if multi_turn else None
    for system in systems:
        key = _fingerprint(
            prompt.fingerprint,
            model_info,
            system.describe(),
            system.compressed_text,
            _adapter_stamp(system.adapter),
            items_key,
            references,
            max_new_tokens,
        )
        results[system.name] = run_system(
            host,
            system,
            prompt,
            items,
            references,
            max_new_tokens=max_new_tokens,
            cache_path=out_dir / set_name / f"{system.name}.json",
            cache_key=key,
            progress=progress,
        )
        if references is None:  # single-turn: the upper bound's greedy answers are the references
            references = [r["answer"] for r in results[system.name]]
    assert references is not None
    ref_actions: list[Action | None] | None = [read(r) for r in references] if read else None
    summary_systems = []
    answer_rows = []
    for system in systems:
        records = results[system.name]
        answers = [r["answer"] for r in records]
        actions = [read(a) for a in answers] if read else None
        scores = metrics.score_answers(
            answers, references, actions, ref_actions, [r["nll"] for r in records]
        )
        summary_systems.append(
            {
                **system.describe(),
                **system.labels(),
                "scores": scores,
                "n": len(records),
                "seconds": sum(r["seconds"] for r in records),
                "stamp": _adapter_stamp(system.adapter),
            }
        )
        rouge = metrics.rouge_l(answers, references)
        chrf = metrics.chrf(answers, references)
        for k, (it, rec) in enumerate(zip(items, records, strict=True)):
            answer_rows.append(
                {
                    "set": set_name,
                    "system": system.name,
                    "id": it.id,
                    "turn": it.turn,
                    "input": it.input,
                    "answer": rec["answer"],
                    "reference": references[k],
                    "action": list(actions[k]) if actions and actions[k] else None,
                    "reference_action": list(ref_actions[k])
                    if ref_actions and ref_actions[k]
                    else None,
                    "rouge_l": rouge[k],
                    "chrf": chrf[k],
                    "nll": rec["nll"],
                    "finish_reason": rec["finish_reason"],
                }
            )
    # What every score of the set is measured against: the same items, references and settings.
    basis = _fingerprint(prompt.fingerprint, model_info, items_key, references, max_new_tokens)
    carried, carried_rows, carried_rates = _earlier_systems(
        out_dir, set_name, basis, {s.name for s in systems}
    )
    summary_systems += carried
    answer_rows += carried_rows
    compression_info = {**carried_rates, **(compression_info or {})}
    upper_scores = summary_systems[0]["scores"]
    for entry in summary_systems:
        entry["normalised"] = metrics.normalise_scores(entry["scores"], upper_scores)
    summary = {
        "set": set_name,
        "multi_turn": multi_turn,
        "reference": "recorded teacher turns" if multi_turn else "the upper bound's greedy answers",
        "n_items": len(items),
        "basis": basis,
        "prompt": {"name": prompt.name, "fingerprint": prompt.fingerprint},
        "reader": reader_name(prompt),
        "model": model_info,
        "settings": {"max_new_tokens": max_new_tokens, "decoding": "greedy"},
        "compression": compression_info or {},
        "systems": summary_systems,
    }
    write_atomic(
        out_dir / f"{set_name}.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    )
    write_atomic(
        out_dir / f"{set_name}.answers.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in answer_rows),
    )
    return summary


def _earlier_systems(
    out_dir: Path, set_name: str, basis: str, names: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The systems an earlier evaluation of this set scored and this one does not (a resumed
    ``genpi internalize`` with fewer --methods, ``genpi eval --adapter`` of one adapter): their
    entries, answer rows and compression records, so that the set's table keeps every system.

    Only what is still true is carried: the earlier results must share this call's basis (the
    same items, references, model and settings), and an adapter must still be on disk with the
    weights it was scored with; anything else is left out, to be evaluated again when asked for.
    """
    try:
        earlier = json.loads((out_dir / f"{set_name}.json").read_text())
    except (OSError, ValueError):
        return [], [], {}
    if not isinstance(earlier, dict) or earlier.get("basis") != basis:
        return [], [], {}
    carried = []
    for entry in earlier.get("systems", []):
        if entry.get("name") in names:
            continue
        adapter = entry.get("adapter")
        if adapter is not None and (
            not Path(adapter).is_dir() or _adapter_stamp(adapter) != entry.get("stamp")
        ):
            continue
        carried.append(entry)
    kept = {e["name"] for e in carried}
    rows: list[dict[str, Any]] = []
    if kept:
        try:
            text = (out_dir / f"{set_name}.answers.jsonl").read_text()
        except OSError:
            return [], [], {}
        rows = [r for r in map(json.loads, text.splitlines()) if r.get("system") in kept]
    rates = {
        f"{e['rate']:g}": earlier.get("compression", {}).get(f"{e['rate']:g}")
        for e in carried
        if e.get("rate") is not None
    }
    return carried, rows, {k: v for k, v in rates.items() if v is not None}


def evaluate(
    run_dir: str | Path,
    *,
    prompt: Prompt | str | Path | None = None,
    model: str | None = None,
    adapters: Sequence[str | Path] | None = None,
    inputs: str | Path | None = None,
    heldout: bool | None = None,
    multi_turn: bool = False,
    compression: Sequence[float] = (),
    limit: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    dtype: str | None = "auto",
    device: str | None = None,
    set_name: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every system on each requested set; returns the summaries (one per set).

    ``adapters`` None means every adapter in RUN_DIR/adapters; ``heldout`` None means "when no
    ``inputs`` file is given".
    """
    from genpi.adapter import check_adapter
    from genpi.evaluate.compression import compress_prompt, run_cache_dir
    from genpi.evaluate.systems import adapter_system, base, compressed_system, upper_bound
    from genpi.models import resolve_model
    from genpi.prompt import load_prompt
    from genpi.train.config import setting_key

    run_dir = Path(run_dir)
    if isinstance(prompt, (str, Path)):
        prompt = load_prompt(prompt)
    if prompt is not None:
        refuse_another_prompt(run_dir, prompt)  # before any work, so no cached file is touched
    run_dir.mkdir(parents=True, exist_ok=True)
    adapter_dirs = find_adapters(run_dir) if adapters is None else [Path(a) for a in adapters]
    prompt = prompt or default_prompt(run_dir, adapter_dirs)
    model = model or default_model(run_dir, adapter_dirs)
    resolved = resolve_model(model)
    model_info = {"ref": model, "weights_sha256": resolved.provenance.get("weights_sha256")}
    from genpi.context import check_model_fits

    # The upper bound answers with the prompt; refuse one the model cannot hold before any work.
    check_model_fits(prompt, model, reserve=max_new_tokens)

    systems = [upper_bound(), base()]
    compression_info: dict[str, Any] = {}
    if compression:
        if not resolved.local:
            raise EvalError(
                f"the compression baseline needs a local model directory, not {model!r}"
            )
        compressed = compress_prompt(
            prompt,
            list(compression),
            model_dir=resolved.path,
            cache_dir=run_cache_dir(run_dir),
        )
        for rate, record in compressed.items():
            systems.append(compressed_system(rate, record["text"]))
            compression_info[f"{rate:g}"] = {
                k: record[k] for k in ("origin_tokens", "compressed_tokens", "compressor")
            }
    for adapter in adapter_dirs:
        info = check_adapter(
            adapter,
            base_model=model,
            base_weights_sha256=model_info["weights_sha256"],
            prompt=prompt,
        )
        method = info.method
        seed = info.config.get("seed")
        systems.append(
            adapter_system(
                adapter,
                method=method,
                seed=seed if isinstance(seed, int) else None,
                setting=setting_key(method, info.config, info.data_fingerprint),
            )
        )
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise EvalError(
            f"two systems share a name in {names}: give adapters directories with distinct names"
        )

    sets: list[tuple[str, list[Item]]] = []
    if inputs is not None:
        sets.append((set_name or Path(inputs).stem, read_inputs(inputs)))
    if heldout or (heldout is None and inputs is None):
        items = heldout_items(run_dir, multi_turn=False)
        if not items:
            raise EvalError(
                f"{run_dir} has no held-out examples: run `genpi synth` first, or give --inputs FILE"
            )
        sets.append(("heldout", items))
    if multi_turn:
        items = heldout_items(run_dir, multi_turn=True)
        if not items:
            raise EvalError(f"{run_dir} has no held-out conversations with agent turns to replay")
        sets.append(("heldout-multiturn", items))
    if not sets:
        raise EvalError("nothing to evaluate: give --inputs FILE, --heldout or --multi-turn")
    if limit is not None:
        sets = [(name, items[:limit]) for name, items in sets]

    host = ModelHost.load(model, dtype=dtype, device=device, batch_size=batch_size)
    return [
        evaluate_set(
            host,
            name,
            prompt,
            items,
            systems,
            out_dir=run_dir / "eval",
            model_info=model_info,
            max_new_tokens=max_new_tokens,
            compression_info=compression_info,
            progress=progress,
        )
        for name, items in sets
    ]


def format_summary(summary: dict[str, Any]) -> str:
    header = f"{summary['set']}: {summary['n_items']} items, reader {summary['reader']}, reference = {summary['reference']}"
    lines = [header, f"{'system':24} " + " ".join(f"{m:>12}" for m in metrics.METRICS)]
    for entry in summary["systems"]:
        cells = []
        for m in metrics.METRICS:
            raw, norm = entry["scores"].get(m), entry["normalised"].get(m)
            cells.append(
                f"{'-':>12}"
                if raw is None
                else f"{raw:6.3f}({norm:.2f})"
                if norm is not None
                else f"{raw:12.3f}"
            )
        lines.append(f"{entry['name']:24} " + " ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)
