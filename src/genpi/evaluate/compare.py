"""``genpi compare``: one table of every system evaluated in a run, normalised to the upper bound.

Run as: genpi compare RUN_DIR

Reads every ``RUN_DIR/eval/<set>.json`` written by ``genpi eval`` and writes
``RUN_DIR/compare.md`` (Markdown), ``RUN_DIR/compare.json`` and ``RUN_DIR/compare.png`` (bar
chart): per evaluation set, systems x metrics, each cell the score normalised by the upper
bound with the raw score beside it; plus the ablation table (the paper's Tables 2-3) when any
ablation method was evaluated. ``compare(run_dir)`` returns the Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.evaluate.metrics import METRICS

LABELS = {
    "format": "format",
    "action_type": "action type",
    "exact_action": "exact action",
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    "nll": "NLL",
}
ABLATIONS = (
    "genpi",
    "genpi-no-reason",
    "genpi-no-prompt",
    "genpi-r-given-p",
    "genpi-p-given-r",
    "pg",
    "sft",
)
ABLATION_ONLY = set(ABLATIONS) - {"genpi", "sft"}


class CompareError(GenpiError):
    pass


def load_summaries(run_dir: str | Path) -> list[dict[str, Any]]:
    eval_dir = Path(run_dir) / "eval"
    paths = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
    summaries = []
    for path in paths:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "systems" in data:
            summaries.append(data)
    if not summaries:
        raise CompareError(f"no evaluation results in {eval_dir}: run `genpi eval {run_dir}` first")
    return summaries


def _method(entry: dict[str, Any]) -> str:
    return entry.get("method") or entry["name"]


def _cell(entry: dict[str, Any], metric: str) -> str:
    raw = entry["scores"].get(metric)
    norm = entry["normalised"].get(metric)
    if raw is None:
        return "–"
    if norm is None:
        return f"({raw:.2f})"
    return f"{norm:.2f} ({raw:.2f})"


def _table(entries: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    head = "| system | kind | " + " | ".join(LABELS[m] for m in metrics) + " |"
    rule = "|---|---|" + "---:|" * len(metrics)
    rows = [
        f"| {e['name']} | {e['kind'] if e['kind'] != 'adapter' else _method(e)} | "
        + " | ".join(_cell(e, m) for m in metrics)
        + " |"
        for e in entries
    ]
    return [head, rule, *rows]


def ablation_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The adapters trained with ablation methods (Tables 2-3), in the paper's order, if any
    ablation beyond genpi and sft was evaluated."""
    adapters = [e for e in summary["systems"] if e["kind"] == "adapter"]
    if not any(_method(e) in ABLATION_ONLY for e in adapters):
        return []
    rank = {m: i for i, m in enumerate(ABLATIONS)}
    chosen = [e for e in adapters if _method(e) in rank]
    return sorted(chosen, key=lambda e: rank[_method(e)])


def _used_metrics(summary: dict[str, Any]) -> list[str]:
    return [m for m in METRICS if any(e["scores"].get(m) is not None for e in summary["systems"])]


def render_markdown(summaries: list[dict[str, Any]]) -> str:
    out = []
    for summary in summaries:
        metrics = _used_metrics(summary)
        out.append(
            f"### {summary['set']} ({summary['n_items']} items, prompt {summary['prompt']['name']}, "
            f"model {summary['model']['ref']})"
        )
        out.append("")
        out.append(
            "Each cell: score / upper bound (raw score). NLL: upper bound's NLL / system's NLL. "
            f"Reference: {summary['reference']}."
        )
        out.append("")
        out.extend(_table(summary["systems"], metrics))
        compression = summary.get("compression") or {}
        if compression:
            sizes = ", ".join(
                f"{rate}: {c['origin_tokens']}→{c['compressed_tokens']} tokens"
                for rate, c in compression.items()
            )
            compressor = next(iter(compression.values()))["compressor"]
            out.append("")
            out.append(f"Compressed prompts ({compressor}): {sizes}.")
        ablation = ablation_entries(summary)
        if ablation:
            out.append("")
            out.append(f"Ablation ({summary['set']}, normalised to the upper bound):")
            out.append("")
            out.extend(_table(ablation, metrics))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summaries), 1, figsize=(10, 3.6 * len(summaries)), squeeze=False)
    for ax, summary in zip(axes[:, 0], summaries, strict=True):
        metrics = _used_metrics(summary)
        systems = summary["systems"]
        width = 0.8 / max(len(systems), 1)
        for i, entry in enumerate(systems):
            values = [entry["normalised"].get(m) or 0.0 for m in metrics]
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(metrics))]
            ax.bar(xs, values, width, label=entry["name"])
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(metrics)), [LABELS[m] for m in metrics])
        ax.set_ylabel("relative to upper bound")
        ax.set_title(f"{summary['set']} ({summary['n_items']} items)")
        ax.legend(fontsize=7, ncol=min(len(systems), 4), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(run_dir: str | Path, *, png: bool = True) -> str:
    """Write RUN_DIR/compare.{md,json,png} and return the Markdown."""
    run_dir = Path(run_dir)
    summaries = load_summaries(run_dir)
    markdown = render_markdown(summaries)
    (run_dir / "compare.md").write_text(markdown, encoding="utf-8")
    tables = [
        {
            "set": s["set"],
            "n_items": s["n_items"],
            "reference": s["reference"],
            "metrics": _used_metrics(s),
            "systems": [
                {k: e.get(k) for k in ("name", "kind", "method", "rate", "scores", "normalised")}
                for e in s["systems"]
            ],
            "ablation": [e["name"] for e in ablation_entries(s)],
            "compression": s.get("compression") or {},
        }
        for s in summaries
    ]
    (run_dir / "compare.json").write_text(
        json.dumps({"tables": tables}, indent=2) + "\n", encoding="utf-8"
    )
    if png:
        plot(summaries, run_dir / "compare.png")
    return markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory evaluated by `genpi eval`")
    parser.add_argument("--no-png", action="store_true", help="skip the bar chart")


def main(args: argparse.Namespace) -> int:
    print(compare(args.run_dir, png=not args.no_png), end="")
    print(
        f"\nwrote {Path(args.run_dir) / 'compare.md'}, compare.json"
        + ("" if args.no_png else ", compare.png")
    )
    return 0
