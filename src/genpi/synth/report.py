"""The synthesis quality report (the paper's Table 4), from a run directory's files.

Run as: genpi synth report --out runs/shell
"""

from __future__ import annotations

import random
import statistics
from itertools import pairwise
from typing import Any

from genpi.data import write_json_atomic
from genpi.prompt import Prompt
from genpi.synth.conversations import episode_ends
from genpi.synth.rundir import REPORT_FILE, RunDir


def gold_turns(prompt: Prompt) -> float | None:
    """Average agent turns per demonstration episode in the prompt (None: no demonstrations)."""
    ends = episode_ends(prompt)
    if not ends:
        return None
    counts, start = [], 0
    for end in ends:
        counts.append(sum(m["role"] == "assistant" for m in prompt.messages[start : end + 1]))
        start = end + 1
    return sum(counts) / len(counts)


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def distinct_2(texts: list[str]) -> float | None:
    """Distinct word bigrams over all bigrams of ``texts`` (1.0: no bigram repeats; None: none)."""
    bigrams = [pair for text in texts for pair in pairwise(text.lower().split())]
    return round(len(set(bigrams)) / len(bigrams), 3) if bigrams else None


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def input_quality(inputs: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
    """Stage 1 at a glance: what was asked, parsed, kept and dropped (by reason), the teacher's
    check, and how varied and long the kept inputs are, with 5 random ones to read."""
    from genpi.synth.frames import Frame
    from genpi.synth.inputs import DROP_REASONS

    texts = [r["input"] for r in inputs]
    # Framed inputs (pages around a goal) repeat their frame: variety is the goals'.
    frame = Frame(*stats["input_frame"]) if stats.get("input_frame") else None
    varying = [frame.slot_of(t) or t for t in texts] if frame else texts
    checked = int(stats.get("teacher_checked", 0))
    return {
        "input_style": stats.get("input_style", "describe"),  # runs before the field: describe
        "requests": stats.get("requests", 0),
        "items_parsed": stats.get("candidates", 0),
        "kept_generated": stats.get("kept", 0),
        "dropped": {r: stats[r] for r in DROP_REASONS if stats.get(r)},
        "teacher_check": stats.get("teacher_check", "n/a"),
        "teacher_checked": checked,
        "teacher_accepted_pct": _pct(int(stats.get("teacher_accepted", 0)), checked),
        "distinct_2": distinct_2(varying),
        "median_words": _median([len(t.split()) for t in texts]),
        "median_chars": _median([len(t) for t in texts]),
        # A fixed seed: the same run prints the same sample every time.
        "sample": random.Random(0).sample(texts, min(5, len(texts))),
    }


def build_report(run: RunDir) -> dict[str, Any]:
    prompt = run.prompt
    manifest = run.read_manifest() or {}
    stages = manifest.get("stages", {})
    inputs = run.read("inputs")
    convs = run.read("conversations")
    outputs = run.read("outputs")
    reasons = run.read("reasons")
    n = len(convs)
    reasons_by_end: dict[str, int] = {}
    for c in convs:
        reasons_by_end[c.get("end_reason", "?")] = (
            reasons_by_end.get(c.get("end_reason", "?"), 0) + 1
        )
    no_action = (
        sum(1 for c in convs if c.get("final_action") is None) if prompt.action_pattern else None
    )
    in_stats = stages.get("inputs", {})
    return {
        "prompt": prompt.name,
        "models": manifest.get("models"),
        "table4": {
            "gold_turns": gold_turns(prompt),
            "avg_turns_generated": round(sum(c.get("agent_turns", 0) for c in convs) / n, 2)
            if n
            else None,
            "pct_hit_turn_limit": _pct(reasons_by_end.get("max_turns", 0), n),
            "pct_no_termination_token": _pct(n - reasons_by_end.get("end_token", 0), n),
            "pct_final_answer_not_matching_action_pattern": _pct(no_action, n)
            if no_action is not None
            else None,
        },
        "end_reasons": reasons_by_end,
        "inputs": {
            "kept": len(inputs),
            "heldout": sum(r.get("split") == "heldout" for r in inputs),
            "given": sum((r.get("settings") or {}).get("source") == "given" for r in inputs),
            "requests": in_stats.get("requests", 0),
            "responses_without_list": in_stats.get("no_list", 0),
            "candidates": in_stats.get("candidates", 0),
            "empty": in_stats.get("empty", 0),
            "exact_duplicates": in_stats.get("exact_duplicates", 0),
            "near_duplicates": in_stats.get("near_duplicates", 0),
            "demo_copies": in_stats.get("demo_copies", 0),
            "surplus": in_stats.get("surplus", 0),
        },
        "input_quality": input_quality(inputs, in_stats),
        "counts": {
            "inputs": len(inputs),
            "conversations": n,
            "outputs": len(outputs),
            "reasons": len(reasons),
        },
        "empty": {
            "agent": reasons_by_end.get("empty_agent", 0),
            "environment": reasons_by_end.get("empty_env", 0),
            "student_output": stages.get("outputs", {}).get("empty_student", 0),
            "teacher_output": stages.get("outputs", {}).get("empty_teacher", 0),
            "reason": stages.get("reasons", {}).get("empty", 0),
        },
        "backend_errors": {s: stages.get(s, {}).get("backend_errors", 0) for s in stages},
        "generation": {
            s: {
                "completion_tokens": stages[s].get("completion_tokens", 0),
                "generate_seconds": stages[s].get("generate_seconds", 0.0),
            }
            for s in stages
        },
    }


def format_report(report: dict[str, Any]) -> str:
    t = report["table4"]
    i = report["inputs"]

    def show(value: Any, suffix: str = "") -> str:
        return "n/a" if value is None else f"{value}{suffix}"

    lines = [
        f"Synthesis quality report: prompt {report['prompt']!r}, models {report['models']}",
        "",
        "  Table 4                                         value",
        f"  gold turns in the prompt's demonstrations       {show(t['gold_turns'])}",
        f"  average turns generated                         {show(t['avg_turns_generated'])}",
        f"  conversations that hit the turn limit           {show(t['pct_hit_turn_limit'], ' %')}",
        f"  ended without the termination token             {show(t['pct_no_termination_token'], ' %')}",
        f"  final answer not matching action_pattern        {show(t['pct_final_answer_not_matching_action_pattern'], ' %')}",
        "",
        f"  inputs: {i['kept']} kept ({i['heldout']} held out; {i['given']} given) from "
        f"{i['candidates']} generated candidates in "
        f"{i['requests']} requests; {i['responses_without_list']} responses without a list; dropped "
        f"{i['empty']} empty, {i['exact_duplicates']} exact and {i['near_duplicates']} near duplicates, "
        f"{i['demo_copies']} demonstration copies, {i['surplus']} surplus",
        *_quality_lines(report.get("input_quality")),
        f"  end reasons: {report['end_reasons']}",
        f"  records: {report['counts']}",
        f"  empty answers: {report['empty']}",
        f"  backend errors: {report['backend_errors']}",
    ]
    for stage, g in report["generation"].items():
        secs = g["generate_seconds"]
        rate = f"{g['completion_tokens'] / secs:.1f} tok/s" if secs else "n/a"
        lines.append(
            f"  {stage}: {g['completion_tokens']} tokens generated in {secs:.1f} s ({rate})"
        )
    return "\n".join(lines)


def _quality_lines(q: dict[str, Any] | None) -> list[str]:
    if not q:
        return []
    dropped = ", ".join(f"{count} {reason}" for reason, count in q["dropped"].items()) or "none"
    teacher = q["teacher_check"]
    if teacher == "on":
        teacher = f"{q['teacher_accepted_pct']} % of {q['teacher_checked']} accepted"
    lines = [
        f"  input quality: {q['requests']} requests ({q.get('input_style', 'describe')} style), "
        f"{q['items_parsed']} items parsed, "
        f"{q['kept_generated']} kept; dropped: {dropped}",
        f"  teacher's check: {teacher}; distinct-2 {q['distinct_2']}, median length "
        f"{q['median_words']} words ({q['median_chars']} chars)",
        "  5 random kept inputs:",
    ]
    for text in q["sample"]:
        one_line = text.replace("\n", " / ")
        lines.append(f"    - {one_line[:160]}{' ...' if len(one_line) > 160 else ''}")
    return lines


def write_report(run: RunDir) -> tuple[dict[str, Any], str]:
    """Build the report, write report.json and report.txt into the run directory."""
    report = build_report(run)
    text = format_report(report)
    write_json_atomic(run.path / REPORT_FILE, report)
    (run.path / "report.txt").write_text(text + "\n", encoding="utf-8")
    return report, text
