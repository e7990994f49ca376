"""The profile as a table and as plots in the style of the paper's Figures 3 and 4."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _g(flops: float) -> str:
    return f"{flops / 1e9:,.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def format_table(report: dict[str, Any]) -> str:
    """Totals per setting against the prompted, pre-cached baseline."""
    comparison = report.get("comparison", {})
    header = (
        f"{'setting':<32}{'GFLOPs':>10}{'GMACs':>9}{'+precache':>11}{'saved':>9}"
        f"{'TTFT ms':>9}{'ms/tok':>8}{'total s':>9}{'x lat':>7}{'KV MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, s in report["settings"].items():
        total = s["total"]
        first = s["turns"][0]
        ttfts = [t["ttft_s"] for t in s["turns"] if t["ttft_s"] is not None]
        tpots = [t["per_output_token_s"] for t in s["turns"] if t["per_output_token_s"] is not None]
        cmp = comparison.get(name, {})
        precache_flops = s["precache"]["flops"] if s["precache"] else 0
        lines.append(
            f"{s['label']:<32}{_g(total['flops']):>10}{_g(total['macs']):>9}{_g(precache_flops):>11}"
            f"{cmp.get('flops_saved', 0) * 100:>8.1f}%"
            f"{_ms(sum(ttfts) / len(ttfts) if ttfts and first['ttft_s'] is not None else None):>9}"
            f"{_ms(sum(tpots) / len(tpots) if tpots else None):>8}"
            f"{'-' if total['latency_s'] is None else format(total['latency_s'], '.2f'):>9}"
            f"{'-' if 'latency_ratio' not in cmp else format(cmp['latency_ratio'], '.2f'):>7}"
            f"{total['kv_bytes_peak'] / 2**20:>8.1f}"
        )
    for name, reason in report.get("unavailable", {}).items():
        lines.append(f"{name:<32}unavailable: {reason}")
    conv = report["conversation"]
    lines.append(
        f"turns {conv['turns']}, prompt {conv['prompt_tokens']} tokens (prefix {conv['prefix_tokens_prompted']} vs "
        f"{conv['prefix_tokens_no_prompt']} without), answers "
        f"{sum(conv['assistant_tokens'])} tokens; saved/x lat vs 'prompt, pre-cached' (excl. its "
        f"pre-caching); latency: {report['latency']['statistic']} of {report['latency']['repeats']}, "
        f"TTFT and ms/tok averaged over turns"
    )
    mismatched = [n for n, s in report["settings"].items() if not s["analytic_matches_counted"]]
    if any(s["flops_source"] == "analytic" for s in report["settings"].values()):
        lines.append("FLOPs from the analytic formula (not counted)")
    elif mismatched:
        lines.append(
            f"analytic FLOPs differ from counted for: {', '.join(mismatched)} (non-Llama layout?)"
        )
    else:
        lines.append("analytic FLOPs = counted FLOPs on every forward pass")
    return "\n".join(lines)


Metric = tuple[str, str, float]  # (a turn's key, axis label, divisor)


def _save_figure(
    plt: Any,
    metrics: list[Metric],
    draw: Callable[[Any, str, str, float], None],
    title: str,
    path: Path,
) -> Path:
    """One panel per metric, side by side, drawn by ``draw(ax, key, label, scale)``; saved as
    ``path``."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, (key, label, scale) in zip(axes[0], metrics, strict=True):
        draw(ax, key, label, scale)
        ax.set_xlabel("turn")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Per-turn FLOPs and latency (Figure 3 style) and cumulative ones (Figure 4 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    settings = report["settings"]
    timed = all(t["latency_s"] is not None for s in settings.values() for t in s["turns"])
    metrics: list[Metric] = [("flops", "GFLOPs", 1e9)]
    metrics += [("latency_s", "latency (s)", 1.0)] if timed else []
    width = 0.8 / max(len(settings), 1)

    def per_turn(ax: Any, key: str, label: str, scale: float) -> None:
        for k, s in enumerate(settings.values()):
            turns = [t["turn"] for t in s["turns"]]
            ax.bar(
                [t + (k - (len(settings) - 1) / 2) * width for t in turns],
                [t[key] / scale for t in s["turns"]],
                width,
                label=s["label"],
            )
        ax.set_ylabel(f"{label} per turn")
        ax.set_xticks(turns)

    def cumulative(ax: Any, key: str, label: str, scale: float) -> None:
        for s in settings.values():
            turns = [0] + [t["turn"] for t in s["turns"]]
            running, points = 0.0, [0.0]
            for t in s["turns"]:
                running += t[key]
                points.append(running / scale)
            line = ax.plot(turns, points, marker="o", label=s["label"])[0]
            if s["precache"]:
                offset = s["precache"][key] / scale
                ax.plot(
                    turns,
                    [p + offset for p in points],
                    linestyle="--",
                    color=line.get_color(),
                    label=f"{s['label']} + pre-caching",
                )
        ax.set_ylabel(f"cumulative {label}")

    return [
        _save_figure(plt, metrics, per_turn, "cost per turn", out_dir / "profile_per_turn.png"),
        _save_figure(
            plt,
            metrics,
            cumulative,
            "cumulative cost over the conversation",
            out_dir / "profile_cumulative.png",
        ),
    ]
