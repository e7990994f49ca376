"""Stage 1: pseudo user inputs, written by the generator from the prompt alone.

The generator reads the prompt as a document and writes a numbered list of ``num_gen_once`` new
problems (with up to 5 demonstration inputs from ``--seed-inputs``), sampled with top-p 0.9 and
T 1.0. Items are parsed robustly, and empty items, exact and near duplicates, and copies of the
prompt's own demonstrations are dropped until ``n`` inputs are kept.

Run as: genpi synth inputs --prompt examples/shell_agent.json --out runs/shell --n 100
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.data import split_of
from genpi.errors import GenpiError
from genpi.llm import Backend, SamplingParams
from genpi.prompt import INPUT_SLOT, Prompt
from genpi.synth.common import GuardedBackend, add_stats, progress
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import RunDir

# "1. x", "1) x", "(1) x", "**1.** x", "#1: x"; a bullet ("- x", "* x") only when nothing is numbered.
_NUMBERED = re.compile(r"^\s*(?:\*\*|__)?[#(]?(\d{1,3})(?:[.):]|\s*-)(?:\*\*|__)?\s+(\S.*)$")
# A number written again inside an item ("1. #2. Check ..."), as small generators do.
_ECHOED_NUMBER = re.compile(r"^#?\d{1,3}[.)]\s+")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(\S.*)$")
_LABEL = re.compile(
    r"^(?:\*\*)?(?:task|problem|question|input|user input|request)\s*\d*\s*:(?:\*\*)?\s*", re.I
)


# -- parsing -----------------------------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    """The items of the numbered (else bulleted) list in ``text``; [] when it holds no list.

    An item runs on over the lines that follow it directly (or indented after a blank line);
    a blank line followed by unindented text ends it, so trailing chatter is not kept.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    items = _collect(lines, _NUMBERED, group=2)
    if not items:
        items = _collect(lines, _BULLET, group=1)
    return [cleaned for cleaned in (clean_item(i) for i in items) if cleaned]


def _collect(lines: list[str], marker: re.Pattern[str], *, group: int) -> list[str]:
    items: list[list[str]] = []
    open_item = False
    blank_before = False
    for line in lines:
        match = marker.match(line)
        if match:
            items.append([match.group(group)])
            open_item, blank_before = True, False
        elif not line.strip():
            blank_before = True
        elif open_item and (not blank_before or line[:1].isspace()):
            items[-1].append(line.strip())
            blank_before = False
        else:
            open_item = False  # chatter between or after the items
    return ["\n".join(parts) for parts in items]


def clean_item(item: str) -> str:
    item = item.strip()
    item = _ECHOED_NUMBER.sub("", item)
    item = _LABEL.sub("", item).strip()
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'`":
        item = item[1:-1].strip()
    return item.strip("*_ ").strip()


# -- duplicates --------------------------------------------------------------------------------
def normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .?!:;\"'`")


def tokens(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def demonstration_inputs(prompt: Prompt) -> list[str]:
    """The task inputs of the prompt's demonstrations: user turns that fit ``input_template``."""
    prefix, _, suffix = prompt.input_template.partition(INPUT_SLOT)
    pattern = re.compile(
        re.escape(prefix.strip()) + r"\s*(.+?)\s*" + re.escape(suffix.strip()), re.S
    )
    found = []
    for message in prompt.messages:
        if message["role"] != "user":
            continue
        match = pattern.fullmatch(message["content"].strip())
        if match and match.group(1).strip():
            found.append(match.group(1).strip())
    return found


@dataclass
class InputFilter:
    """Keeps an input unless it is empty, a duplicate (exact or near), or a demonstration's copy."""

    prompt: Prompt
    threshold: float = 0.8
    kept_norm: set[str] = field(default_factory=set)
    kept_tokens: list[frozenset[str]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {
            "empty": 0,
            "exact_duplicates": 0,
            "near_duplicates": 0,
            "demo_copies": 0,
        }
    )

    def __post_init__(self) -> None:
        demos = demonstration_inputs(self.prompt)
        self._demo_tokens = [tokens(d) for d in demos]
        self._demo_norm = {normalize(d) for d in demos}
        # Inputs can sit inside a longer demonstration turn (AgentBench OS: instructions + problem).
        self._user_turns = [
            normalize(m["content"]) for m in self.prompt.messages if m["role"] == "user"
        ]

    def seen(self, text: str) -> None:
        """Register an input kept by an earlier run (resume)."""
        self.kept_norm.add(normalize(text))
        self.kept_tokens.append(tokens(text))

    def verdict(self, text: str) -> str | None:
        """None to keep ``text``, else the counter it falls under."""
        norm = normalize(text)
        toks = tokens(text)
        if not norm or not toks:
            return "empty"
        if norm in self._demo_norm or any(
            jaccard(toks, d) >= self.threshold for d in self._demo_tokens
        ):
            return "demo_copies"
        if len(norm) >= 12 and any(norm in turn for turn in self._user_turns):
            return "demo_copies"
        if norm in self.kept_norm:
            return "exact_duplicates"
        if any(jaccard(toks, k) >= self.threshold for k in self.kept_tokens):
            return "near_duplicates"
        return None

    def offer(self, text: str) -> bool:
        reason = self.verdict(text)
        if reason is not None:
            self.counts[reason] += 1
            return False
        self.seen(text)
        return True


# -- the generator's instruction ---------------------------------------------------------------
def read_seed_inputs(path: str | Path) -> list[str]:
    """Seed inputs: one per line, or JSONL with a string or an {"input": ...} object per line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenpiError(
            f"seed inputs file {str(path)!r} cannot be read ({exc}): check the path"
        ) from None
    seeds = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if path.suffix.lower() == ".jsonl" or line.startswith(("{", '"')):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = line
            if isinstance(value, dict):
                value = value.get("input", "")
            line = str(value).strip()
        if line:
            seeds.append(line)
    if not seeds:
        raise GenpiError(f"seed inputs file {str(path)!r} holds no inputs: put one input per line")
    return seeds


def input_request(
    prompt: Prompt, k: int, demos: list[str], prefill: str = ""
) -> list[dict[str, str]]:
    """The generator's request for ``k`` new inputs to the task the prompt sets up.

    With ``prefill``, the request ends with an assistant message the generator continues.
    """
    # The task is stated before and after the prompt: small generators lose it in a long prompt.
    lines = [
        f"Write {k} new user inputs for the AI assistant set up by the prompt below, as a "
        "numbered list.",
        "",
        "The prompt sets up the assistant for one task. After the prompt, a user sends an "
        f"input; it takes the place of {INPUT_SLOT} in the last USER message.",
        "",
        "<prompt>",
        prompt.text,
        "</prompt>",
        "",
    ]
    if demos:
        lines += ["Examples of user inputs for this task:"]
        lines += [f"- {d}" for d in demos]
        lines += [""]
    lines += [
        f"Write {k} new user inputs for this task. Make them realistic, specific and different from "
        "each other and from the examples in the prompt; each one must be solvable as the prompt "
        "describes. Write only the input itself (not the surrounding template, no answers), as a "
        f"numbered list from 1 to {k}, one item per number, and nothing else."
    ]
    request = [{"role": "user", "content": "\n".join(lines)}]
    if prefill:
        request.append({"role": "assistant", "content": prefill})
    return request


def continued(prefill: str, text: str) -> str:
    """The whole answer: the prefill, then what the generator wrote after it."""
    lines = text.splitlines()
    if not prefill or any((m := _NUMBERED.match(line)) and m.group(1) == "1" for line in lines):
        return text  # an endpoint that ignored the prefill and wrote the list from item 1
    return prefill + ("" if text[:1].isspace() else " ") + text


def read_items(prefill: str, text: str, k: int) -> list[str]:
    """The items of a generator's answer to a request for ``k`` inputs.

    After a prefill, an answer that never reaches item 2 is chatter (a refusal, a comment on the
    prompt) that the prefill's "1." made look like an item, so it counts as no list.
    """
    items = parse_list(continued(prefill, text))
    if prefill and k >= 2 and len(items) < 2:
        return []
    return items


# -- the stage ---------------------------------------------------------------------------------
def import_inputs(run: RunDir, texts: list[str], config: SynthConfig) -> dict[str, int]:
    """Add given inputs (``--inputs-file``) to the run, filtered like generated ones, up to ``n``."""
    existing = run.read("inputs")
    filt = InputFilter(run.prompt, threshold=config.near_duplicate_jaccard)
    for rec in existing:
        filt.seen(rec["input"])
    next_index = _next_index(existing)
    records = []
    for text in texts:
        if len(existing) + len(records) >= config.n:
            break
        if filt.offer(text.strip()):
            record_id = f"x{next_index:05d}"
            next_index += 1
            split = split_of(record_id, config.heldout_fraction)
            records.append(
                run.record(record_id, {"source": "given"}, input=text.strip(), split=split)
            )
    with run.writer("inputs") as writer:
        writer.write(records)
    return {"given": len(texts), "given_kept": len(records), **filt.counts}


def _next_index(existing: list[dict[str, Any]]) -> int:
    numbers = [int(r["id"][1:]) for r in existing if r["id"][:1] == "x" and r["id"][1:].isdigit()]
    return 1 + max(numbers, default=-1)


def run_inputs(
    run: RunDir,
    generator: Backend,
    config: SynthConfig,
    *,
    seed_inputs: list[str] | None = None,
) -> dict[str, Any]:
    """Generate pseudo inputs until ``config.n`` are kept (resuming what the run dir holds)."""
    existing = run.read("inputs")
    filt = InputFilter(run.prompt, threshold=config.near_duplicate_jaccard)
    for rec in existing:
        filt.seen(rec["input"])
    stats = run.stage_stats("inputs")
    next_index = _next_index(existing)
    kept = len(existing)
    guard = GuardedBackend(
        generator, "inputs", max_consecutive_failures=config.max_consecutive_failures
    )
    limit = config.input_request_limit()
    requests_before = int(stats.get("requests", 0))
    requests = 0
    new: dict[str, Any] = {
        "requests": 0,
        "responses": 0,
        "no_list": 0,
        "candidates": 0,
        "kept": 0,
        "surplus": 0,
    }
    rng = random.Random(config.seed + requests_before)
    bar = progress(config.n, "inputs", enabled=config.progress)
    bar.update(min(kept, config.n))
    try:
        with run.writer("inputs") as writer:
            while kept < config.n and requests < limit:
                wanted = -(-(config.n - kept) // config.num_gen_once)
                width = max(1, min(config.batch_size, wanted, limit - requests))
                conversations = []
                for _ in range(width):
                    demos = (
                        rng.sample(seed_inputs, min(config.max_seed_demos, len(seed_inputs)))
                        if seed_inputs
                        else []
                    )
                    conversations.append(
                        input_request(run.prompt, config.num_gen_once, demos, config.input_prefill)
                    )
                params = SamplingParams(
                    max_new_tokens=config.input_max_new_tokens,
                    temperature=config.input_temperature,
                    top_p=config.input_top_p,
                    seed=config.seed + requests_before + requests,
                    # A model that runs on past the list it was asked for stops at the next number.
                    stop=(f"\n{config.num_gen_once + 1}.", f"\n{config.num_gen_once + 1})"),
                )
                requests += width
                new["requests"] += width
                generations = guard.generate(conversations, params)
                if generations is None:
                    continue
                settings = {
                    "generator": getattr(generator, "name", "?"),
                    "params": params.to_dict(),
                }
                records = []
                for gen in generations:
                    new["responses"] += 1
                    items = read_items(config.input_prefill, gen.text, config.num_gen_once)
                    if not items:
                        new["no_list"] += 1
                        new["last_answer_without_list"] = gen.text[:300]  # for the user to judge
                    for item in items:
                        new["candidates"] += 1
                        if kept >= config.n:
                            new["surplus"] += 1
                            continue
                        if not filt.offer(item):
                            continue
                        record_id = f"x{next_index:05d}"
                        next_index += 1
                        kept += 1
                        new["kept"] += 1
                        records.append(
                            run.record(
                                record_id,
                                settings,
                                input=item,
                                split=split_of(record_id, config.heldout_fraction),
                            )
                        )
                writer.write(records)
                bar.update(len(records))
                run.update_manifest(
                    "inputs", add_stats(stats, {**new, **filt.counts, **guard.stats()})
                )
    finally:
        bar.close()
        total = add_stats(stats, {**new, **filt.counts, **guard.stats()})
        total["target"] = config.n
        total["total_kept"] = kept
        total["exhausted"] = kept < config.n
        run.update_manifest("inputs", total)
    return total
