"""``genpi compare``: one table of every system evaluated in a run, normalised to the upper bound.

Run as: genpi compare RUN_DIR [--bootstrap 1000] [--confidence 0.95]

Reads every ``RUN_DIR/eval/<set>.json`` written by ``genpi eval`` (and its ``.answers.jsonl``)
and writes ``RUN_DIR/compare.md`` (Markdown), ``RUN_DIR/compare.json`` and ``RUN_DIR/compare.png``
(bar chart): per evaluation set, one row per system (adapters of one method and setting trained
with several seeds pooled into one row: the mean over seeds), each cell the score normalised by
the upper bound with the raw score beside it, the noise interval of the raw score (the seeds'
min-max joined with a bootstrap interval over inputs) and a mark where the row is within noise of
the column's best; plus the gap closed in NLL, the per-seed table when a method has several
seeds, and the ablation table (the paper's Tables 2-3) when any ablation method was evaluated.
``compare(run_dir)`` returns the Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from genpi.errors import GenpiError
from genpi.evaluate import spread
from genpi.evaluate.metrics import HIGHER_IS_BETTER, METRIC_LABELS, METRICS, normalise_scores
from genpi.train.methods import ablations

GAP_CLOSED = "gap_closed"
LABELS = {**METRIC_LABELS, GAP_CLOSED: "gap closed"}
COLUMNS = (*METRICS, GAP_CLOSED)
BETTER_HIGH = {**HIGHER_IS_BETTER, GAP_CLOSED: True}
NOISE = "≈"  # the Markdown mark of a cell within noise of its column's best
# The ablation table's methods and order come from the method registry (Method.ablation_row).
ABLATIONS = tuple(ablations())
# genpi and sft are trained by every default run: they alone do not make an ablation table.
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


def load_answers(run_dir: str | Path, set_name: str) -> dict[str, list[dict[str, Any]]]:
    """Each system's per-item rows of ``eval/<set>.answers.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / "eval" / f"{set_name}.answers.jsonl"
    rows: dict[str, list[dict[str, Any]]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["system"], []).append(row)
    return rows


def _method(entry: dict[str, Any]) -> str:
    return entry.get("method") or entry["name"]


# -- rows: systems pooled over seeds -------------------------------------------------------------


def _teacher(summary: dict[str, Any]) -> dict[str, Any]:
    systems = summary["systems"]
    return next((e for e in systems if e["kind"] == "upper_bound"), systems[0])


def _with_gap_closed(summary: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Every system's raw scores plus its gap closed (None without a base model or NLL)."""
    systems = summary["systems"]
    teacher = _teacher(summary)
    base = next((e for e in systems if e["kind"] == "base"), None)
    nll_teacher = teacher["scores"].get("nll")
    nll_base = base["scores"].get("nll") if base else None
    return {
        e["name"]: {
            **e["scores"],
            GAP_CLOSED: spread.gap_closed(nll_base, e["scores"].get("nll"), nll_teacher),
        }
        for e in systems
    }


def group_systems(systems: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Systems pooled by what they are, in first-seen order: adapters that record the same method
    and training setting (eval's ``setting``: the config without the seed) are seeds of one
    row; every other system, and adapters from results without a setting, stand alone."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for entry in systems:
        if entry["kind"] == "adapter" and entry.get("setting"):
            key: tuple[str, ...] = ("setting", _method(entry), entry["setting"])
        else:
            key = ("system", entry["name"])
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def _bootstrap_samples(
    summary: dict[str, Any],
    answers: dict[str, list[dict[str, Any]]],
    scores: dict[str, dict[str, float | None]],
    resamples: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Each system's score on every bootstrap resample of the set's inputs, per column. Every
    system uses the same resamples (a paired bootstrap); a system whose answers do not cover
    the set's items (an older or partial answers file) gets none."""
    systems = summary["systems"]
    teacher = _teacher(summary)["name"]
    base = next((e["name"] for e in systems if e["kind"] == "base"), None)
    ids = [r["id"] for r in answers.get(teacher, [])]
    if resamples < 1 or not ids or len(ids) != summary["n_items"]:
        return {}
    cluster_of = spread.clusters(ids, multi_turn=bool(summary.get("multi_turn")))
    indices = spread.bootstrap_indices(max(cluster_of) + 1, resamples)
    samples: dict[str, dict[str, np.ndarray]] = {}
    for entry in systems:
        rows = answers.get(entry["name"], [])
        if [r["id"] for r in rows] != ids:
            continue
        samples[entry["name"]] = {
            m: spread.resampled_ratio(*spread.cluster_parts(rows, m, cluster_of), indices)
            for m in METRICS
            if scores[entry["name"]].get(m) is not None
        }
    if base in samples and teacher in samples:
        for by_metric in samples.values():
            if "nll" in by_metric and "nll" in samples[base] and "nll" in samples[teacher]:
                by_metric[GAP_CLOSED] = spread.resampled_gap_closed(
                    samples[base]["nll"], by_metric["nll"], samples[teacher]["nll"]
                )
    return samples


def _row(
    members: list[dict[str, Any]],
    name: str,
    scores: dict[str, dict[str, float | None]],
    samples: dict[str, dict[str, np.ndarray]],
    teacher_scores: dict[str, float | None],
    confidence: float,
) -> dict[str, Any]:
    """One table row: the members' mean per column, the seeds' spread (several members), the
    bootstrap interval of the mean over members, and the noise interval joining both."""
    first = members[0]
    row: dict[str, Any] = {
        "name": name,
        "kind": first["kind"],
        "method": first.get("method"),
        "rate": first.get("rate"),
        "systems": [e["name"] for e in members],
        "seeds": [e.get("seed") for e in members],
        "scores": {},
        "spread": {},
        "bootstrap": {},
        "interval": {},
    }
    for column in COLUMNS:
        found = spread.seed_spread([scores[e["name"]].get(column) for e in members])
        row["scores"][column] = found.mean if found else None
        if found is None:
            continue
        seeds = found.interval if len(members) > 1 else None
        if len(members) > 1:
            row["spread"][column] = {"mean": found.mean, "min": found.min, "max": found.max}
        boot = None
        if all(column in samples.get(e["name"], {}) for e in members):
            # The mean over seeds on each resample: input noise of the pooled row.
            pooled = np.mean([samples[e["name"]][column] for e in members], axis=0)
            boot = spread.percentile_interval(pooled, confidence)
            if boot is not None:
                row["bootstrap"][column] = list(boot)
        interval = spread.hull(seeds, boot)
        if interval is not None:
            row["interval"][column] = list(interval)
    metric_scores = {m: row["scores"][m] for m in METRICS}
    row["normalised"] = normalise_scores(metric_scores, teacher_scores)
    return row


def _row_names(groups: list[list[dict[str, Any]]]) -> list[str]:
    """A lone system keeps its name; seeds pooled are named by their method when no other row
    has that method, else by their lowest seed's system."""
    methods = [_method(g[0]) for g in groups]
    names = []
    for group, method in zip(groups, methods, strict=True):
        if len(group) == 1:
            names.append(group[0]["name"])
        elif methods.count(method) == 1 and all(
            method != other[0]["name"] for other in groups if other is not group
        ):
            names.append(method)
        else:
            lowest = min(group, key=lambda e: (e.get("seed") is None, e.get("seed") or 0))
            names.append(lowest["name"])
    return names


def _best(rows: list[dict[str, Any]], column: str) -> dict[str, Any] | None:
    """The row with the best score in ``column`` among the rows other than the upper bound."""
    scored = [r for r in rows if r["kind"] != "upper_bound" and r["scores"].get(column) is not None]
    if not scored:
        return None
    sign = 1 if BETTER_HIGH[column] else -1
    return max(scored, key=lambda r: sign * r["scores"][column])


def _interval(row: dict[str, Any], column: str) -> tuple[float, float] | None:
    found = row["interval"].get(column)
    return (found[0], found[1]) if found else None


def mark_noise(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Set each row's ``within_noise_of_best`` (per column: True when its noise interval
    overlaps the best row's, False when apart, None when an interval is unknown or it is the
    best) and return every pair of rows (upper bound left out) with, per column, whether their
    intervals overlap."""
    for row in rows:
        row["within_noise_of_best"] = {}
    for column in columns:
        best = _best(rows, column)
        for row in rows:
            same = best is None or row is best or row["kind"] == "upper_bound"
            row["within_noise_of_best"][column] = (
                None if same else spread.overlaps(_interval(row, column), _interval(best, column))
            )
    others = [r for r in rows if r["kind"] != "upper_bound"]
    return [
        {
            "a": a["name"],
            "b": b["name"],
            "within_noise": {c: spread.overlaps(_interval(a, c), _interval(b, c)) for c in columns},
        }
        for a, b in combinations(others, 2)
    ]


def build_table(
    summary: dict[str, Any],
    answers: dict[str, list[dict[str, Any]]] | None = None,
    *,
    resamples: int = spread.DEFAULT_RESAMPLES,
    confidence: float = spread.DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """One evaluation set's comparison: pooled rows, per-seed rows, noise pairs, ablation."""
    scores = _with_gap_closed(summary)
    samples = _bootstrap_samples(summary, answers or {}, scores, resamples)
    teacher_scores = _teacher(summary)["scores"]
    groups = group_systems(summary["systems"])
    names = _row_names(groups)
    rows = [
        _row(g, n, scores, samples, teacher_scores, confidence)
        for g, n in zip(groups, names, strict=True)
    ]
    columns = [c for c in COLUMNS if any(r["scores"].get(c) is not None for r in rows)]
    pairs = mark_noise(rows, columns)
    seeded = [g for g in groups if len(g) > 1]
    seed_rows = [
        _row([e], e["name"], scores, samples, teacher_scores, confidence) for g in seeded for e in g
    ]
    return {
        "set": summary["set"],
        "n_items": summary["n_items"],
        "reference": summary["reference"],
        "metrics": [m for m in columns if m in METRICS],
        "columns": columns,
        "bootstrap": {
            "resamples": resamples if samples else 0,
            "confidence": confidence,
            "seed": spread.BOOTSTRAP_SEED,
            "unit": "conversation" if summary.get("multi_turn") else "input",
        },
        "rows": rows,
        "seed_rows": seed_rows,
        "within_noise": pairs,
        "ablation": [r["name"] for r in ablation_rows(rows)],
    }


def ablation_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapters trained with ablation methods (Tables 2-3), in the paper's order, if any
    ablation beyond genpi and sft was evaluated."""
    adapters = [r for r in rows if r["kind"] == "adapter"]
    if not any(_method(r) in ABLATION_ONLY for r in adapters):
        return []
    rank = {m: i for i, m in enumerate(ABLATIONS)}
    chosen = [r for r in adapters if _method(r) in rank]
    return sorted(chosen, key=lambda r: rank[_method(r)])


# -- Markdown ------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], column: str) -> str:
    raw = row["scores"].get(column)
    if raw is None:
        return "–"
    norm = row["normalised"].get(column) if column in METRICS else None
    text = f"{norm:.2f} ({raw:.2f})" if norm is not None else f"({raw:.2f})"
    if column == GAP_CLOSED:
        text = f"{raw:.2f}"  # already relative: 1 is the teacher, 0 the base model
    interval = _interval(row, column)
    if interval is not None and row["kind"] != "upper_bound":  # the reference: no interval
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    if row.get("within_noise_of_best", {}).get(column):
        text += f" {NOISE}"
    return text


def _kind(row: dict[str, Any]) -> str:
    if row["kind"] != "adapter":
        return row["kind"]
    count = len(row["systems"])
    return _method(row) + (f", {count} seeds" if count > 1 else "")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    head = "| system | kind | " + " | ".join(LABELS[c] for c in columns) + " |"
    rule = "|---|---|" + "---:|" * len(columns)
    body = [
        f"| {r['name']} | {_kind(r)} | " + " | ".join(_cell(r, c) for c in columns) + " |"
        for r in rows
    ]
    return [head, rule, *body]


def _noise_lines(table: dict[str, Any]) -> list[str]:
    """Which methods' differences are within noise, metric by metric (adapters only)."""
    kinds = {r["name"]: r["kind"] for r in table["rows"]}
    lines = []
    for pair in table["within_noise"]:
        if kinds[pair["a"]] != "adapter" or kinds[pair["b"]] != "adapter":
            continue
        known = {c: v for c, v in pair["within_noise"].items() if v is not None}
        if not known:
            continue
        same = [LABELS[c] for c, v in known.items() if v]
        apart = [LABELS[c] for c, v in known.items() if not v]
        parts = []
        if same:
            parts.append("within noise on " + ", ".join(same))
        if apart:
            parts.append("apart on " + ", ".join(apart))
        lines.append(f"- {pair['a']} vs {pair['b']}: " + "; ".join(parts))
    return lines


def render_markdown(
    summaries: list[dict[str, Any]], tables: list[dict[str, Any]] | None = None
) -> str:
    tables = tables or [build_table(s) for s in summaries]
    out = []
    for summary, table in zip(summaries, tables, strict=True):
        columns = table["columns"]
        out.append(
            f"### {summary['set']} ({summary['n_items']} items, prompt {summary['prompt']['name']}, "
            f"model {summary['model']['ref']})"
        )
        out.append("")
        out.append(
            "Each cell: score / upper bound (raw score). NLL: upper bound's NLL / system's NLL. "
            f"Reference: {summary['reference']}."
        )
        if GAP_CLOSED in columns:
            out.append(
                "Gap closed: (NLL base - NLL system) / (NLL base - NLL upper bound), 1 = the "
                "teacher, 0 = the base model."
            )
        if any(r["interval"] for r in table["rows"] if r["kind"] != "upper_bound"):
            boot = table["bootstrap"]
            sources = ["the seeds' min..max"] * any(len(r["systems"]) > 1 for r in table["rows"])
            if boot["resamples"]:
                sources.append(
                    f"the {boot['confidence']:.0%} bootstrap interval over {boot['unit']}s "
                    f"({boot['resamples']} resamples, seed {boot['seed']})"
                )
            out.append(
                "A row of several seeds holds their mean. [lo, hi]: the raw score's noise "
                f"interval ({' joined with '.join(sources)}); {NOISE}: within noise of the "
                "column's best system (the intervals overlap)."
            )
        out.append("")
        out.extend(_table(table["rows"], columns))
        compression = summary.get("compression") or {}
        if compression:
            sizes = ", ".join(
                f"{rate}: {c['origin_tokens']}→{c['compressed_tokens']} tokens"
                for rate, c in compression.items()
            )
            compressor = next(iter(compression.values()))["compressor"]
            out.append("")
            out.append(f"Compressed prompts ({compressor}): {sizes}.")
        noise = _noise_lines(table)
        if noise:
            out.append("")
            out.append("Methods compared (noise intervals overlap or not):")
            out.append("")
            out.extend(noise)
        if table["seed_rows"]:
            out.append("")
            out.append(f"Per seed ({summary['set']}):")
            out.append("")
            out.extend(_table(table["seed_rows"], columns))
        ablation = ablation_rows(table["rows"])
        if ablation:
            out.append("")
            out.append(f"Ablation ({summary['set']}, normalised to the upper bound):")
            out.append("")
            out.extend(_table(ablation, columns))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# -- the chart -----------------------------------------------------------------------------------


def _relative(column: str, value: float | None, teacher: dict[str, Any]) -> float | None:
    """``value`` (raw) on the chart's scale: relative to the upper bound (gap closed as is)."""
    if value is None or column == GAP_CLOSED:
        return value
    upper = teacher.get(column)
    if upper is None:
        return None
    if BETTER_HIGH[column]:
        return value / upper if upper > 0 else None
    return upper / value if value > 0 else None


def plot(tables: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 1, figsize=(10, 3.6 * len(tables)), squeeze=False)
    for ax, table in zip(axes[:, 0], tables, strict=True):
        columns = table["columns"]
        rows = table["rows"]
        teacher = rows[0]["scores"]
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            values, low, high = [], [], []
            for c in columns:
                value = _relative(c, row["scores"].get(c), teacher) or 0.0
                interval = _interval(row, c) if row["kind"] != "upper_bound" else None
                ends = [_relative(c, v, teacher) for v in interval] if interval else []
                ends = [e for e in ends if e is not None and math.isfinite(e)]
                values.append(value)
                low.append(max(value - min(ends), 0.0) if ends else 0.0)
                high.append(max(max(ends) - value, 0.0) if ends else 0.0)
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            label = row["name"] + (
                f" ({len(row['systems'])} seeds)" if len(row["systems"]) > 1 else ""
            )
            ax.bar(xs, values, width, yerr=[low, high], capsize=2, label=label)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(columns)), [LABELS[c] for c in columns])
        ax.set_ylabel("relative to upper bound")
        ax.set_title(f"{table['set']} ({table['n_items']} items)")
        ax.legend(fontsize=7, ncol=min(len(rows), 4), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(
    run_dir: str | Path,
    *,
    png: bool = True,
    resamples: int = spread.DEFAULT_RESAMPLES,
    confidence: float = spread.DEFAULT_CONFIDENCE,
) -> str:
    """Write RUN_DIR/compare.{md,json,png} and return the Markdown.

    ``resamples``: bootstrap resamples of the inputs (0: intervals from the seeds alone)."""
    if not 0 < confidence < 1:
        raise CompareError(f"--confidence must be between 0 and 1, got {confidence}")
    run_dir = Path(run_dir)
    summaries = load_summaries(run_dir)
    tables = [
        build_table(
            s,
            load_answers(run_dir, s["set"]),
            resamples=resamples,
            confidence=confidence,
        )
        for s in summaries
    ]
    markdown = render_markdown(summaries, tables)
    (run_dir / "compare.md").write_text(markdown, encoding="utf-8")
    data = [
        {
            **table,
            "systems": [
                {
                    k: e.get(k)
                    for k in ("name", "kind", "method", "seed", "rate", "scores", "normalised")
                }
                for e in s["systems"]
            ],
            "compression": s.get("compression") or {},
        }
        for s, table in zip(summaries, tables, strict=True)
    ]
    (run_dir / "compare.json").write_text(
        json.dumps({"tables": data}, indent=2) + "\n", encoding="utf-8"
    )
    if png:
        plot(tables, run_dir / "compare.png")
    return markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory evaluated by `genpi eval`")
    parser.add_argument("--no-png", action="store_true", help="skip the bar chart")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=spread.DEFAULT_RESAMPLES,
        metavar="N",
        help="bootstrap resamples of the inputs for each score's interval (default "
        f"{spread.DEFAULT_RESAMPLES}, fixed seed; 0: intervals from the seeds alone)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=spread.DEFAULT_CONFIDENCE,
        help=f"coverage of the bootstrap interval (default {spread.DEFAULT_CONFIDENCE})",
    )


def main(args: argparse.Namespace) -> int:
    markdown = compare(
        args.run_dir,
        png=not args.no_png,
        resamples=args.bootstrap,
        confidence=args.confidence,
    )
    print(markdown, end="")
    print(
        f"\nwrote {Path(args.run_dir) / 'compare.md'}, compare.json"
        + ("" if args.no_png else ", compare.png")
    )
    return 0
