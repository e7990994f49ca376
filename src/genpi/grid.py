"""``genpi grid``: the paper's experiments as one reproducible grid.

Run as: genpi grid PROMPT --out runs/grid --grid table1 --seeds 0,1,2 \
    [--bench os --bench-data ../shared/agentbench/os_interaction]

One synthesis (``genpi internalize``'s stage 1, resumed), then every cell of the chosen tables
trained with the same budget (the preset's training config and --max-steps; a cell changes only
its method and its own fields, such as λ or the prepend probability), every system evaluated on
the same inputs in one ``genpi eval`` run, and each table written normalised to the upper bound
as the paper's Table 1 is: ``RUN_DIR/grid-<GRID>.md``, ``.json`` and ``.png`` (the PNG needs
matplotlib, the ``genpi[eval]`` extra). With ``--bench os`` the upper bound, the base model and
every adapter also run the benchmark harness (``genpi eval-agent``), and its success rate joins
the table, with the oracle agent's as the harness's ceiling.

The grids are data (``TABLE1``, ``ABLATIONS``, ``LAMBDA``): a row is a label and a system: the
upper bound, the base model, LLMLingua at each rate, or a cell (a method plus config fields)
whose adapter directory is named after the fields it changes (``prepend-p0.5``, ``genpi-lam0.3``;
a field at the preset's value adds nothing, so λ 0.7 is the ``genpi`` cell of Table 1).

Resuming: a re-run trains nothing finished (``genpi train`` returns a finished adapter as is),
reuses every cached answer and every finished benchmark problem. A cell that fails (training,
evaluation or the benchmark) is marked in the table with its error, the traceback is kept in
``RUN_DIR/grid/errors/``, and the other cells go on; a re-run tries failed cells again.
"""

from __future__ import annotations

import argparse
import json
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genpi.errors import GenpiError
from genpi.grid_report import COMPRESSED, UPPER, RowSpec

if TYPE_CHECKING:
    from genpi.prompt import Prompt

BASE = "base"
ADAPTER = "adapter"
# The λ of the sweep (the paper chose 0.7 on Web Shopping).
LAMBDAS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
# Short names of the config fields a cell sets, for its adapter's directory name.
SHORT = {"lam": "lam", "prepend_prob": "p"}
# Benchmark problems played at once: their replies share batches (the local backend's batch size).
BENCH_CONCURRENCY = 16


# -- the grids, as data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A trained system of the grid: a method and the config fields it sets."""

    method: str
    fields: tuple[tuple[str, Any], ...] = ()

    def name(self, base: Any) -> str:
        """Its adapter's name: the method, then each field whose value is not ``base``'s (the
        run's training config), so cells of one setting share one adapter."""
        parts = [self.method]
        for key, value in self.fields:
            if getattr(base, key) != value:
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                parts.append(f"{SHORT.get(key, key)}{shown}")
        return "-".join(parts)


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # upper_bound | base | compressed (one row per rate) | adapter
    cell: Cell | None = None


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[Row, ...]


def _adapter(label: str, method: str, **fields: Any) -> Row:
    return Row(label, ADAPTER, Cell(method, tuple(fields.items())))


TABLE1 = Table(
    "table1",
    "Table 1",
    (
        Row("upper bound (prompt given)", UPPER),
        Row("base model (no prompt)", BASE),
        _adapter("prompt prepending, 100%", "prepend", prepend_prob=1.0),
        _adapter("prompt prepending, 50%", "prepend", prepend_prob=0.5),
        Row("LLMLingua", COMPRESSED),
        _adapter("soft prompt (prompt tuning)", "soft-prompt"),
        _adapter("KLD", "kld"),
        _adapter("SeqKD", "seqkd"),
        _adapter("SeqKD+KLD", "seqkd-kld"),
        _adapter("only SFT", "sft"),
        _adapter("GenPI", "genpi"),
    ),
)


def _ablations() -> Table:
    """Tables 2-3 from the method registry (its ablation rows, in its order)."""
    from genpi.train.methods import ablations, get_method

    rows = [_adapter(get_method(m).paper_row, m) for m in ablations()]
    return Table("ablations", "Tables 2-3 (ablations)", tuple(rows))


ABLATIONS = _ablations()
LAMBDA = Table(
    "lambda",
    "λ sweep (L = λ·L_SFT + (1−λ)·L_PG)",
    tuple(_adapter(f"GenPI, λ = {lam:g}", "genpi", lam=lam) for lam in LAMBDAS),
)
GRIDS: dict[str, tuple[Table, ...]] = {
    "table1": (TABLE1,),
    "ablations": (ABLATIONS,),
    "lambda": (LAMBDA,),
    "all": (TABLE1, ABLATIONS, LAMBDA),
}


def cells_of(tables: Sequence[Table], base: Any) -> dict[str, Cell]:
    """Every cell to train, by adapter name, in first-seen order (a cell in several tables,
    or a λ equal to the preset's, is trained once)."""
    cells: dict[str, Cell] = {}
    for table in tables:
        for row in table.rows:
            if row.cell is not None:
                cells.setdefault(row.cell.name(base), row.cell)
    return cells


def system_name(cell: str, seed: int) -> str:
    """The evaluated system of a cell's seed: its adapter directory's name (``genpi train``'s
    layout: seed 0 in adapters/NAME, seed N in adapters/NAME-seedN)."""
    from genpi.train.trainer import adapter_dir

    return adapter_dir(".", cell, seed).name


def cell_seeds(name: str, seeds: Sequence[int], seeded: Collection[str] | None) -> list[int]:
    """The seeds a cell is trained with: every one of ``seeds`` for a cell named in ``seeded``
    (None: every cell), the first alone for the others (the paper's grid spends its seeds on the
    methods it compares most closely)."""
    return list(seeds) if seeded is None or name in seeded else list(seeds[:1])


def resolve(
    table: Table,
    base: Any,
    seeds: Sequence[int],
    rates: Sequence[float],
    seeded: Collection[str] | None = None,
) -> list[RowSpec]:
    """The table's rows for a run: the LLMLingua row expanded to one row per rate (in the
    given order), each adapter row with one system per seed it is trained with."""
    from genpi.evaluate.systems import compressed_system

    specs = []
    for row in table.rows:
        if row.kind == COMPRESSED:
            for rate in rates:
                name = compressed_system(rate, "").name
                specs.append(RowSpec(f"{row.label}, rate {rate:g}", COMPRESSED, (name,)))
        elif row.cell is not None:
            cell = row.cell.name(base)
            own = cell_seeds(cell, seeds, seeded)
            systems = tuple(system_name(cell, s) for s in own)
            specs.append(RowSpec(row.label, ADAPTER, systems, cell, tuple(own)))
        else:
            specs.append(RowSpec(row.label, row.kind, (row.kind,)))
    return specs


# -- failures ------------------------------------------------------------------------------------


@dataclass
class Failures:
    """What failed, by system name: a one-line error for the table, the traceback on disk."""

    folder: Path
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, systems: Sequence[str], stage: str, exc: BaseException) -> None:
        line = f"{stage}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = "".join(traceback.format_exception(exc))
        for system in systems:
            self.errors[system] = line
            (self.folder / f"{stage}-{system}.txt").write_text(trace)
        print(f"   FAILED {', '.join(systems)}: {line} (the other cells go on)", flush=True)


def evaluate_isolating(
    run_eval: Callable[[list[Path], list[float]], list[dict[str, Any]]],
    adapters: dict[str, Path],
    rates: list[float],
    failures: Failures,
) -> list[dict[str, Any]]:
    """Evaluate everything in one run; when that fails, find what fails alone (the LLMLingua
    baseline, then each adapter, every cached answer reused), mark it, and evaluate the rest.
    The upper bound and the base model failing alone is not a cell's failure: it is raised."""
    try:
        return run_eval(list(adapters.values()), rates)
    except Exception as exc:  # any system's crash: find which one below
        print(f"   evaluation failed ({type(exc).__name__}: {exc}); finding the cell", flush=True)
    run_eval([], [])  # the teacher and the base model: every table needs them
    if rates:
        try:
            run_eval([], rates)
        except Exception as exc:
            from genpi.evaluate.systems import compressed_system

            failures.add([compressed_system(r, "").name for r in rates], "evaluation", exc)
            rates = []
    kept = {}
    for name, path in adapters.items():
        try:
            run_eval([path], [])
        except Exception as exc:
            failures.add([name], "evaluation", exc)
        else:
            kept[name] = path
    return run_eval(list(kept.values()), rates)


# -- success rates: a benchmark harness (genpi eval-agent) ---------------------------------------


def bench_unavailable(bench: str) -> str | None:
    """Why the harness cannot run here (None: it can). For ``os``: no Docker engine and no
    ready namespace sandbox."""
    if bench != "os":
        return None
    from genpi.bench.os.sandbox import docker_available, ready_rootfs

    if docker_available():
        return None
    path, reason = ready_rootfs(build=False)
    return None if path is not None else reason


def run_bench(
    args: argparse.Namespace, out: Path, name: str, mode: list[str], model_ref: str
) -> dict[str, Any]:
    """One system on the benchmark (``genpi eval-agent --bench B ...`` in this process, which
    resumes finished problems): {pass, total} from its result.json."""
    from genpi.bench import cli
    from genpi.data import PROMPT_FILE

    folder = out / "bench" / args.bench / name
    argv = ["--bench", args.bench, "--data", args.bench_data, "--out", str(folder)]
    argv += ["--model", model_ref]
    if "--prompt" not in mode:  # a compressed prompt's system brings its own
        argv += ["--prompt", str(out / PROMPT_FILE)]
    argv += ["--max-new-tokens", str(args.bench_max_new_tokens), *mode]
    argv += ["--concurrency", str(args.bench_concurrency)]
    if args.bench_limit:
        argv += ["--limit", str(args.bench_limit)]
    parser = argparse.ArgumentParser(prog="genpi eval-agent")
    cli.add_arguments(parser)
    cli.main(parser.parse_args(argv))
    result = json.loads((folder / "result.json").read_text())
    return {"pass": result["pass"], "total": result["total"], "out": str(folder)}


def compressed_prompt_files(
    out: Path, prompt: Prompt, rates: Sequence[float]
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """({system: a prompt file holding its compressed prompt}, {system: why it has none}) for the
    LLMLingua rows, from the compressions the evaluation cached: the harness's agent is then
    given the compressed prompt where the upper bound is given the prompt."""
    from genpi.evaluate.compression import cache_path, compressed_prompt, run_cache_dir
    from genpi.evaluate.systems import compressed_system

    files: dict[str, Path] = {}
    missing: dict[str, dict[str, Any]] = {}
    for rate in rates:
        name = compressed_system(rate, "").name
        cached = cache_path(run_cache_dir(out), prompt, rate)
        if not cached.exists():  # its evaluation failed before compressing: marked there
            missing[name] = {"skipped": "no compressed prompt (its evaluation did not compress)"}
            continue
        given = compressed_prompt(json.loads(cached.read_text())["text"], prompt)
        files[name] = out / "bench" / "prompts" / f"{name}.json"
        files[name].parent.mkdir(parents=True, exist_ok=True)
        # named with its rate: the benchmark's run.json names the agent by its prompt
        replace(given, name=f"{given.name}-{rate:g}").save(files[name])
    return files, missing


def success_stage(
    args: argparse.Namespace,
    out: Path,
    model_ref: str,
    adapters: dict[str, Path],
    unavailable: str | None,
    failures: Failures,
    left_out: Collection[str] = (),
    compressed: dict[str, Path] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(each system's {pass, total} or {error} or {skipped}, the oracle's run: the ceiling).
    ``left_out``: adapters not run on the benchmark (--bench-cells), marked skipped;
    ``compressed``: the LLMLingua systems, each with its compressed prompt's file."""
    systems: dict[str, list[str]] = {UPPER: [], BASE: ["--no-prompt"]}
    systems.update(
        {name: ["--adapter", str(path)] for name, path in adapters.items() if name not in left_out}
    )
    # The compression baseline last: a run cut short has the adapters', which the table is for.
    systems.update({name: ["--prompt", str(path)] for name, path in (compressed or {}).items()})
    not_run = {name: {"skipped": "not run on the benchmark (--bench-cells)"} for name in left_out}
    if unavailable:
        skipped = {"skipped": unavailable}
        return {**dict.fromkeys(systems, skipped), **not_run}, skipped
    bench_failures = Failures(failures.folder)
    try:
        ceiling = run_bench(args, out, "oracle", ["--oracle"], model_ref)
    except Exception as exc:  # the harness itself cannot run: say so everywhere
        bench_failures.add(["oracle"], "benchmark", exc)
        error = {"error": bench_failures.errors["oracle"]}
        return {**dict.fromkeys(systems, error), **not_run}, error
    results: dict[str, dict[str, Any]] = dict(not_run)
    for i, (name, mode) in enumerate(systems.items(), 1):
        print(f"   {args.bench} {i}/{len(systems)}: {name}", flush=True)
        try:
            results[name] = run_bench(args, out, name, mode, model_ref)
        except Exception as exc:
            bench_failures.add([name], "benchmark", exc)
            results[name] = {"error": bench_failures.errors[name]}
    return results, ceiling


# -- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.bench import runnable
    from genpi.bench.core import MAX_NEW_TOKENS
    from genpi.internalize import PRESETS, add_run_arguments

    paper = ",".join(f"{r:g}" for r in PRESETS["paper"].compression)
    add_run_arguments(parser, compression_default=f"{paper}, the paper preset's")
    parser.add_argument(
        "--grid",
        choices=sorted(GRIDS),
        default="table1",
        help="table1: every method; ablations: Tables 2-3; lambda: the λ sweep; all: the three",
    )
    parser.add_argument(
        "--all-seeds-for",
        default=None,
        metavar="CELLS",
        help="comma-separated cells (adapter names: genpi, sft, kld, prepend-p0.5, genpi-lam0.3, "
        "...) trained with every seed of --seeds; the others with its first seed only "
        "(default: every cell with every seed)",
    )
    parser.add_argument(
        "--bench",
        choices=runnable(),
        default=None,
        help="also measure each system's success rate on this benchmark harness",
    )
    parser.add_argument(
        "--bench-data", default=None, help="the benchmark's data (e.g. agentbench/os_interaction)"
    )
    parser.add_argument("--bench-limit", type=int, default=None, help="only the first N problems")
    parser.add_argument(
        "--bench-cells",
        default=None,
        metavar="CELLS",
        help="comma-separated cells (adapter names) run on the benchmark, with every seed they "
        "are trained with, beside the upper bound and the base model; the other rows' success "
        "cells say they were not run (default: every cell)",
    )
    parser.add_argument(
        "--bench-max-new-tokens",
        type=int,
        default=MAX_NEW_TOKENS,
        help=f"the agent's reply budget per round on the benchmark (default {MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--bench-concurrency",
        type=int,
        default=BENCH_CONCURRENCY,
        help="problems played at once on the benchmark, their replies generated in shared "
        f"batches (default {BENCH_CONCURRENCY})",
    )


def _check_bench(args: argparse.Namespace) -> str | None:
    """Refuse a benchmark without data now, not after hours of training; say (once) when the
    harness cannot run here, so its column says why and the rest runs."""
    if args.bench is None:
        return None
    if not args.bench_data or not Path(args.bench_data).is_dir():
        raise GenpiError(
            f"--bench {args.bench} needs --bench-data DIR, the benchmark's data directory "
            f"(got {args.bench_data!r}; e.g. ../shared/agentbench/os_interaction)"
        )
    reason = bench_unavailable(args.bench)
    if reason:
        print(f"note: the {args.bench} harness cannot run here ({reason}); its column says so")
    return reason


def run(
    args: argparse.Namespace,
    *,
    tables: Sequence[Table] | None = None,
    backends: tuple[Any, Any] | None = None,
) -> dict[str, Any] | None:
    """Run the grid (``tables``: GRIDS[args.grid] unless given; ``backends``: the synthesis's
    target and generator, loaded from --model/--generator unless given). Returns the report
    (None after --estimate-only) and writes it beside the run."""
    from genpi.evaluate.compare import compare
    from genpi.grid_report import build_rows, grid_json, plot, render_markdown
    from genpi.internalize import (
        PRESETS,
        Recipe,
        evaluation_sets,
        evaluation_stage,
        rates_of,
        seeds_of,
        synthesis_stage,
        train_config_of,
    )
    from genpi.train import train
    from genpi.train.methods import get_method
    from genpi.train.trainer import adapter_dir

    recipe = Recipe.from_args(args)
    prompt, preset, model_ref, out = recipe.prompt, recipe.preset, recipe.model_ref, recipe.out
    tables = tuple(tables or GRIDS[args.grid])
    seeds = seeds_of(args)
    rates = rates_of(args, PRESETS["paper"].compression)
    base = train_config_of(args, preset, 0)
    cells = cells_of(tables, base)
    for cell in cells.values():
        get_method(cell.method)  # an unknown method fails here, before hours of synthesis
    seeded = seeded_cells(args, cells)
    benched = named_cells(args, cells, "bench_cells")
    unavailable = _check_bench(args)
    stage = recipe.stage

    stage(f"1/4 synthesis: {prompt.name!r} on {model_ref} (one for every cell)")
    runs = [
        (name, cell, seed)
        for name, cell in cells.items()
        for seed in cell_seeds(name, seeds, seeded)
    ]
    heldout = synthesis_stage(
        recipe,
        runs=[(cell.method, adapter_dir(out, name, seed)) for name, cell, seed in runs],
        eval_systems=2 + len(runs) + len(rates),
        backends=backends,
    )
    if heldout is None:
        if args.bench:
            print(f"(the {args.bench} benchmark's runs are not in this estimate)")
        return None

    failures = Failures(out / "grid" / "errors")
    adapters: dict[str, Path] = {}
    for i, (name, cell, seed) in enumerate(runs, 1):
        system = system_name(name, seed)
        stage(f"2/4 training {i}/{len(runs)}: {system} ({cell.method})")
        try:
            config = train_config_of(args, preset, seed, **dict(cell.fields))
            path = adapter_dir(out, name, seed)
            adapters[system] = train(out, cell.method, config, model_ref=model_ref, out_dir=path)
        except Exception as exc:  # a cell's failure is marked; the rest go on
            failures.add([system], "training", exc)

    stage(
        f"3/4 evaluation: {evaluation_sets(args, heldout)} ({2 + len(adapters) + len(rates)} systems)"
    )

    def run_eval(paths: list[Path], rates_now: list[float]) -> list[dict[str, Any]]:
        return evaluation_stage(recipe, adapters=paths, heldout=heldout, rates=rates_now)

    summaries = evaluate_isolating(run_eval, adapters, list(rates), failures)

    success: dict[str, dict[str, Any]] | None = None
    ceiling: dict[str, Any] | None = None
    if args.bench:
        stage(f"4/4 success rates: {args.bench} ({args.bench_data})")
        left_out = [
            system_name(n, s) for n, _, s in runs if benched is not None and n not in benched
        ]
        compressed, uncompressed = compressed_prompt_files(out, prompt, rates)
        success, ceiling = success_stage(
            args, out, model_ref, adapters, unavailable, failures, left_out, compressed
        )
        success.update(uncompressed)
    else:
        stage("4/4 tables")

    report: dict[str, Any] = {
        "grid": args.grid,
        "bench": args.bench,
        "settings": {
            "prompt": prompt.name,
            "model": model_ref,
            "preset": args.preset,
            "train_preset": preset.train_preset,
            "steps": _budget(base),
            "seeds": seeds,
            "all_seeds_for": sorted(seeded) if seeded is not None else None,
            "rates": list(rates),
            "eval_max_new_tokens": args.max_new_tokens or preset.eval_max_new_tokens,
            "bench_data": args.bench_data,
            "bench_limit": args.bench_limit,
            "bench_cells": sorted(benched) if benched is not None else None,
        },
        "failures": dict(failures.errors),
        "success": success,
        "ceiling": ceiling,
        "tables": [
            {
                "table": table.name,
                "title": table.title,
                "summary": summary,
                "rows": build_rows(
                    resolve(table, base, seeds, rates, seeded), summary, failures.errors, success
                ),
            }
            for summary in summaries
            for table in tables
        ],
    }
    stem = out / f"grid-{args.grid}"
    markdown = render_markdown(report)
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    stem.with_suffix(".json").write_text(grid_json(report), encoding="utf-8")
    png = plot(report, stem.with_suffix(".png"))
    compare(out, png=png)  # every system with its noise interval, beside the grid's tables
    print(markdown)
    written = [f"{stem.name}.md", f"{stem.name}.json"] + [f"{stem.name}.png"] * png
    print(f"wrote {', '.join(written)} and compare.md in {out}/")
    if not png:
        print("(no PNG: matplotlib is not installed; pip install 'genpi[eval]')")
    if failures.errors:
        print(
            f"{len(failures.errors)} failed, marked in the tables (tracebacks: {failures.folder})"
        )
    print(f"done in {recipe.seconds:.0f} s")
    return report


def seeded_cells(args: argparse.Namespace, cells: dict[str, Cell]) -> set[str] | None:
    """--all-seeds-for as a set of cell names, each checked against this grid's cells."""
    return named_cells(args, cells, "all_seeds_for")


def named_cells(args: argparse.Namespace, cells: dict[str, Cell], option: str) -> set[str] | None:
    """A comma-separated list of cell names (``--all-seeds-for``, ``--bench-cells``) as a set,
    each checked against this grid's cells; None when the option is not given."""
    text = getattr(args, option, None)
    if text is None:
        return None
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(cells))
    if unknown:
        flag = "--" + option.replace("_", "-")
        raise GenpiError(
            f"{flag} names {', '.join(unknown)}, not a cell of --grid {args.grid}: "
            f"use some of {', '.join(cells)}"
        )
    return names


def _budget(config: Any) -> str:
    if config.max_steps > 0:
        return f"{config.max_steps} optimizer step{'s' * (config.max_steps != 1)}"
    return f"{config.epochs:g} epochs"


def main(args: argparse.Namespace) -> int:
    run(args)
    return 0
