"""``genpi grid``'s tables: rows in the paper's order, each score normalised to the upper bound.

Pure functions over an evaluation summary (``RUN_DIR/eval/<set>.json``, written by ``genpi
eval``), the grid's failures and the benchmark's success rates; ``genpi.grid`` runs the
experiments and calls them. A row pools its seeds: the mean of the raw scores, normalised as the
paper's Table 1 is (score / upper bound's; for NLL, where lower is better, upper bound's / the
system's, so 1.0 is the teacher for every column), with the normalised min and max over seeds.
The success rate (a benchmark harness's pass rate) is normalised the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpi.evaluate.metrics import HIGHER_IS_BETTER, METRIC_LABELS, METRICS, normalise
from genpi.evaluate.spread import seed_spread

SUCCESS = "success"
LABELS = {**METRIC_LABELS, SUCCESS: "success"}
UPPER = "upper_bound"
COMPRESSED = "compressed"


@dataclass(frozen=True)
class RowSpec:
    """One row of a grid's table, resolved for a run: the paper's label, what kind of system it
    is, the grid cell it trains (adapter rows), and the evaluated systems it pools (one per
    seed for an adapter row, in seed order)."""

    label: str
    kind: str  # upper_bound | base | compressed | adapter
    systems: tuple[str, ...]
    cell: str | None = None
    seeds: tuple[int, ...] = ()


def _spread_normalised(values: list[float], upper: float | None, higher: bool) -> list[float]:
    ends = [normalise(v, upper, higher_is_better=higher) for v in (min(values), max(values))]
    return sorted(e for e in ends if e is not None)


def metric_cell(values: Sequence[float | None], upper: float | None, metric: str) -> dict[str, Any]:
    """One metric of one row: the mean of the seeds' raw scores (None skipped), it normalised
    to the upper bound's raw score, and the normalised min and max when several seeds count."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    found = seed_spread(values)
    if found is None:
        return {"raw": None, "normalised": None}
    cell: dict[str, Any] = {
        "raw": found.mean,
        "normalised": normalise(found.mean, upper, higher_is_better=higher),
    }
    if found.n > 1:
        ends = _spread_normalised([found.min, found.max], upper, higher)
        if len(ends) == 2:
            cell["min"], cell["max"] = ends
    return cell


def success_cell(
    results: Sequence[Mapping[str, Any]], upper_rate: float | None, note: str | None = None
) -> dict[str, Any]:
    """A row's success rate: the mean of its systems' pass rates, their passes and problems
    summed, normalised by the upper bound's rate (None when that is 0 or unknown); ``note``
    says why there is none (not run, failed, no such agent)."""
    done = [r for r in results if r.get("total")]
    if not done:
        return {"raw": None, "normalised": None, "note": note}
    rates = [r["pass"] / r["total"] for r in done]
    cell = metric_cell(rates, upper_rate, SUCCESS)
    cell["pass"] = sum(r["pass"] for r in done)
    cell["total"] = sum(r["total"] for r in done)
    if note:
        cell["note"] = note
    return cell


def _rate(result: Mapping[str, Any] | None) -> float | None:
    if not result or not result.get("total"):
        return None
    return result["pass"] / result["total"]


def build_rows(
    specs: Sequence[RowSpec],
    summary: Mapping[str, Any],
    failures: Mapping[str, str] | None = None,
    success: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The table's rows, in ``specs``' order: each metric pooled over the row's seeds and
    normalised to the upper bound; ``failures`` (system -> error) marks what failed, the rest is
    pooled from the seeds that worked; ``success`` (system -> {pass, total} or {error} or
    {skipped}) adds the success column when given."""
    failures = failures or {}
    by_name = {e["name"]: e for e in summary["systems"]}
    upper = next((e for e in summary["systems"] if e["kind"] == UPPER), None)
    upper_scores = upper["scores"] if upper else {}
    upper_rate = _rate(success.get(UPPER)) if success is not None else None
    rows = []
    for spec in specs:
        errors = {s: failures[s] for s in spec.systems if s in failures}
        entries = [by_name[s] for s in spec.systems if s in by_name and s not in errors]
        if entries and not errors:
            status = "ok"
        elif entries:
            status = "partial"
        else:
            status = "failed" if errors else "missing"
        row: dict[str, Any] = {
            "label": spec.label,
            "kind": spec.kind,
            "cell": spec.cell,
            "systems": list(spec.systems),
            "seeds": list(spec.seeds),
            "evaluated": [e["name"] for e in entries],
            "status": status,
            "errors": errors,
            "scores": {
                m: metric_cell([e["scores"].get(m) for e in entries], upper_scores.get(m), m)
                for m in METRICS
            },
        }
        if success is not None:
            row["scores"][SUCCESS] = _success_of(spec, success, upper_rate)
        rows.append(row)
    return rows


def _success_of(
    spec: RowSpec, success: Mapping[str, Mapping[str, Any]], upper_rate: float | None
) -> dict[str, Any]:
    results = [success[s] for s in spec.systems if s in success]
    notes = [r.get("error") or r.get("skipped") for r in results]
    note = next((n for n in notes if n), None if results else "not run")
    return success_cell([r for r in results if "total" in r], upper_rate, note)


def columns(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[str]:
    """The metrics some system of the evaluation has a score in (so a table of failed rows
    still shows them), then the success column whenever it was asked for."""
    systems = summary["systems"]
    found = [m for m in METRICS if any(e["scores"].get(m) is not None for e in systems)]
    if any(SUCCESS in r["scores"] for r in rows):
        found.append(SUCCESS)
    return found


# -- Markdown ------------------------------------------------------------------------------------


def format_cell(cell: Mapping[str, Any], column: str) -> str:
    """``norm (raw)``, ``– (raw)`` when the upper bound gives no scale, ``[min, max]`` of the
    normalised score over seeds; a success cell shows passes/problems as its raw score."""
    raw, norm = cell.get("raw"), cell.get("normalised")
    if raw is None:
        return "–"
    shown = f"{cell['pass']}/{cell['total']}" if column == SUCCESS else f"{raw:.2f}"
    text = f"{norm:.2f} ({shown})" if norm is not None else f"– ({shown})"
    if "min" in cell:
        text += f" [{cell['min']:.2f}, {cell['max']:.2f}]"
    return text


def _seeds_text(row: Mapping[str, Any]) -> str:
    if row["kind"] != "adapter":
        return "–"
    done, asked = len(row["evaluated"]), len(row["systems"])
    return str(asked) if done == asked else f"{done} of {asked}"


def _row_cells(row: Mapping[str, Any], cols: Sequence[str]) -> list[str]:
    if row["status"] in ("failed", "missing"):
        word = "failed" if row["status"] == "failed" else "not evaluated"
        return [word if c != SUCCESS else format_cell(row["scores"][c], c) for c in cols]
    return [format_cell(row["scores"][c], c) for c in cols]


def render_table(title: str, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """One table as Markdown: a heading, what the cells mean, the rows, then what failed."""
    cols = columns(rows, summary)
    lines = [
        f"### {title}: {summary['set']} ({summary['n_items']} inputs)",
        "",
        "Each cell: score / upper bound (raw score); NLL: the upper bound's NLL / the system's. "
        "A row of several seeds: their mean, [min, max] of the normalised score. "
        f"Reference: {summary.get('reference', 'the upper bound')}.",
    ]
    if SUCCESS in cols:
        lines.append("success: the benchmark's success rate / the upper bound's (passed/problems).")
    lines += [
        "",
        "| system | seeds | " + " | ".join(LABELS[c] for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for row in rows:
        cells = _row_cells(row, cols)
        label = row["label"].replace("|", "\\|")  # P(r|p,x,y) inside a Markdown table
        lines.append(f"| {label} | {_seeds_text(row)} | " + " | ".join(cells) + " |")
    notes = _notes(rows)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = [
        f"- {row['label']} ({system}) failed: {error}"
        for row in rows
        for system, error in row["errors"].items()
    ]
    measured = [r for r in rows if SUCCESS in r["scores"]]
    why = [(r["label"], r["scores"][SUCCESS].get("note")) for r in measured]
    if why and all(n and n == why[0][1] for _, n in why):
        notes.append(f"- success not measured: {why[0][1]}")  # one reason for every row: once
    else:
        notes += [f"- {label}: success: {note}" for label, note in why if note]
    return ["Notes:", "", *notes] if notes else []


def render_markdown(report: Mapping[str, Any]) -> str:
    """Every table of a grid report (``grid_report``'s dict) as one Markdown document."""
    settings = report["settings"]
    out = [
        f"## genpi grid {report['grid']}: prompt {settings['prompt']}, model {settings['model']}",
        "",
        f"Every method trained with the same budget (train preset {settings['train_preset']}, "
        f"{settings['steps']}, seeds {', '.join(map(str, settings['seeds']))}) on one synthesis, "
        "evaluated on the same inputs against the prompted teacher (the upper bound). "
        f"LLMLingua rates: {', '.join(f'{r:g}' for r in settings['rates']) or 'none'}.",
    ]
    ceiling = report.get("ceiling")
    if ceiling:
        if "total" in ceiling:
            out.append(
                f"Harness ceiling: the oracle agent passes {ceiling['pass']}/{ceiling['total']} "
                f"of the {report['bench']} problems."
            )
        else:
            out.append(
                f"Harness ceiling: not measured ({ceiling.get('error') or ceiling.get('skipped')})."
            )
    out.append("")
    for table in report["tables"]:
        out.append(render_table(table["title"], table["summary"], table["rows"]))
    return "\n".join(out).rstrip() + "\n"


def grid_json(report: Mapping[str, Any]) -> str:
    """The report as JSON (each table's evaluation summary reduced to its set and size)."""
    tables = [
        {
            "table": t["table"],
            "title": t["title"],
            "set": t["summary"]["set"],
            "n_items": t["summary"]["n_items"],
            "columns": columns(t["rows"], t["summary"]),
            "rows": t["rows"],
        }
        for t in report["tables"]
    ]
    return json.dumps({**report, "tables": tables}, indent=2, ensure_ascii=False) + "\n"


# -- the chart -----------------------------------------------------------------------------------


def plot(report: Mapping[str, Any], path: Path) -> bool:
    """A heatmap of the normalised scores, one panel per table and evaluation set. matplotlib is
    an optional extra (``genpi[eval]``): without it no PNG is written and False returned."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report["tables"]
    heights = [0.45 * len(t["rows"]) + 1.2 for t in tables]
    fig, axes = plt.subplots(
        len(tables), 1, figsize=(9, sum(heights)), squeeze=False, height_ratios=heights
    )
    for ax, table in zip(axes[:, 0], tables, strict=True):
        rows, cols = table["rows"], columns(table["rows"], table["summary"])
        grid = [[_shown(r, c) for c in cols] for r in rows]
        ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.2)
        for i, row in enumerate(rows):
            for j, value in enumerate(grid[i]):
                text = "–" if math.isnan(value) else f"{value:.2f}"
                if row["status"] == "failed":
                    text = "failed"
                color = "black" if math.isnan(value) else "white"  # NaN cells are blank
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(len(cols)), [LABELS[c] for c in cols], fontsize=8)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
        summary = table["summary"]
        ax.set_title(
            f"{table['title']}: {summary['set']} (normalised to the upper bound)", fontsize=9
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _shown(row: Mapping[str, Any], column: str) -> float:
    """A heatmap cell: the normalised score, NaN where there is none (failed, no scale)."""
    value = row["scores"][column].get("normalised")
    if value is None or row["status"] not in ("ok", "partial"):
        return math.nan
    return float(value)
