"""Mind2Web's published task files, read into one problem per action step.

``--data`` is one JSON file or a directory of them (``*.json``, sorted; e.g. Mind2Web's
``test_task/``), each a list of tasks. The fields read, and nothing else:

- task: ``annotation_id``, ``confirmed_task``, ``website``, ``action_reprs`` (the previous
  actions shown to the agent: the last 5 before the step), ``actions``;
- action step: ``action_uid``, ``operation.op``, ``operation.value``, ``cleaned_html``,
  ``pos_candidates`` and ``neg_candidates``, and of each candidate ``backend_node_id`` and
  ``rank`` (0 = best, from Mind2Web's candidate-ranking model).

Not read: ``raw_html``, ``operation.original_op``, the candidates' ``attributes``, ``tag`` and
``score`` (the ranking's order is all the harness uses), ``subdomain``/``domain``.

Ranks come from the candidates' own ``rank`` fields, or from ``--ranks FILE``: Mind2Web's
published ranking (``scores_all_data.pkl``, or the same content as JSON):
``{"ranks": {"<annotation_id>_<action_uid>": {"<backend_node_id>": rank}}, "scores": ...}``.
A pickle is read with an unpickler that builds only dicts, lists, strings and numbers (numpy
scalars included), so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError

TOP_K = 10  # AgentBench's eval.topk (Mind2Web's MindAct evaluates with 50)
SEED = 123  # AgentBench's seed
PREVIOUS_K = 5  # previous actions shown
_SAFE_ID = re.compile(r"[\w.-]+")


class DataError(GenpiError, ValueError):
    """Mind2Web data that cannot be read; the message names the file or step and the fix."""


@dataclass(frozen=True)
class Mind2WebStep:
    """One action step, evaluated on its own with the gold history (as Mind2Web does)."""

    id: str  # "<annotation_id>_<action_uid>", Mind2Web's sample id
    task_id: str  # annotation_id
    website: str
    task: str  # confirmed_task
    index: int  # the step's position in its task
    steps: int  # the task's number of steps
    previous: tuple[str, ...]  # action_reprs before this step (the last PREVIOUS_K)
    operation: str
    value: str
    cleaned_html: str = field(repr=False)
    positives: tuple[str, ...]  # positive candidates ranked under top_k
    pool: tuple[str, ...]  # positives + negatives ranked under top_k, shuffled per step

    @property
    def description(self) -> str:
        """For transcripts; the agent gets each round's page through the environment."""
        return f"{self.task} (step {self.index + 1} of {self.steps}, {self.website})"


# -- the ranking ----------------------------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    """Builds containers, strings and numbers only: numpy scalars are the one class allowed."""

    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 writes the scalars' bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def read_ranks(path: str | Path) -> dict[str, dict[str, int]]:
    """``{sample id: {backend_node_id: rank}}`` from Mind2Web's ranking file (pickle or JSON)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"--ranks {path} cannot be read ({exc.strerror}); check the path") from None
    try:
        loaded = (
            json.loads(blob)
            if blob.lstrip()[:1] == b"{"
            else _PlainUnpickler(io.BytesIO(blob)).load()
        )
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, ImportError, AttributeError,
            KeyError, IndexError) as exc:  # fmt: skip
        raise DataError(
            f"--ranks {path} is neither JSON nor a plain-data pickle ({exc}); pass Mind2Web's "
            f"scores_all_data.pkl or the same content as JSON"
        ) from None
    ranks = loaded.get("ranks") if isinstance(loaded, dict) else None
    if not isinstance(ranks, dict):
        raise DataError(f"--ranks {path} has no 'ranks' table; pass Mind2Web's scores_all_data.pkl")
    try:
        return {str(k): {str(c): int(r) for c, r in v.items()} for k, v in ranks.items()}
    except (AttributeError, TypeError, ValueError):
        raise DataError(
            f"--ranks {path}: 'ranks' must map each sample id to {{backend_node_id: rank}}"
        ) from None


# -- the task files -------------------------------------------------------------------------------


def _files(data: Path) -> list[Path]:
    if data.is_file():
        return [data]
    if data.is_dir():
        files = sorted(data.glob("*.json"))
        if files:
            return files
    raise DataError(
        f"no Mind2Web task files at {data}; pass --data a JSON file or a directory of them "
        f"(Mind2Web's test_task/, test_website/, test_domain/ or train/)"
    )


def _tasks(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable JSON file ({exc})") from None
    if not isinstance(loaded, list):
        raise DataError(f"{path} is not a list of tasks (Mind2Web's task file layout)")
    yield from enumerate(loaded)


def _need(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where} has no {key!r}; is this Mind2Web's published task format?")
    return obj[key]


def _ranked(
    candidates: Any, where: str, ranks: dict[str, int] | None, top_k: int
) -> tuple[str, ...]:
    """The ids of ``candidates`` ranked under ``top_k``, in the file's order."""
    if not isinstance(candidates, list):
        raise DataError(f"{where} is not a list of candidates")
    kept = []
    for i, candidate in enumerate(candidates):
        node_id = str(_need(candidate, "backend_node_id", f"{where}[{i}]"))
        if ranks is not None:
            if node_id not in ranks:
                raise DataError(f"{where}[{i}] ({node_id}) has no rank in --ranks; wrong file?")
            rank = ranks[node_id]
        elif "rank" in candidate:
            rank = candidate["rank"]
        else:
            raise DataError(
                f"{where}[{i}] has no 'rank': pass --ranks with Mind2Web's candidate ranking "
                f"(scores_all_data.pkl), or data with ranks merged into the candidates"
            )
        if not isinstance(rank, int | float) or isinstance(rank, bool):
            raise DataError(f"{where}[{i}] has rank {rank!r}; a rank is a number (0 = best)")
        if rank < top_k:
            kept.append(node_id)
    return tuple(kept)


def load_steps(
    data: str | Path,
    *,
    top_k: int = TOP_K,
    ranks: str | Path | None = None,
    seed: int = SEED,
) -> list[Mind2WebStep]:
    """Every action step of every task under ``data`` (module doc), in file order."""
    table = read_ranks(ranks) if ranks is not None else None
    steps: list[Mind2WebStep] = []
    seen: set[str] = set()
    for path in _files(Path(data)):
        for t, task in _tasks(path):
            where = f"{path.name} task {t}"
            task_id = str(_need(task, "annotation_id", where))
            actions = _need(task, "actions", where)
            reprs = _need(task, "action_reprs", where)
            if not isinstance(actions, list) or not isinstance(reprs, list):
                raise DataError(f"{where}: 'actions' and 'action_reprs' must be lists")
            for i, action in enumerate(actions):
                at = f"{where} action {i}"
                step_id = f"{task_id}_{_need(action, 'action_uid', at)}"
                if not _SAFE_ID.fullmatch(step_id) or step_id in seen:
                    raise DataError(
                        f"{at}: step id {step_id!r} is repeated or not file-name safe "
                        f"(letters, digits, '_', '-', '.'); fix annotation_id/action_uid"
                    )
                seen.add(step_id)
                operation = _need(action, "operation", at)
                step_ranks = None
                if table is not None:
                    if step_id not in table:
                        raise DataError(f"{at}: {step_id} is not in --ranks; wrong ranking file?")
                    step_ranks = table[step_id]
                positives = _ranked(
                    _need(action, "pos_candidates", at), f"{at} pos_candidates", step_ranks, top_k
                )
                negatives = _ranked(
                    _need(action, "neg_candidates", at), f"{at} neg_candidates", step_ranks, top_k
                )
                pool = list(positives + negatives)
                # One seeded order per step (AgentBench draws all steps from one random stream,
                # which depends on the order steps run in): runs repeat and resume exactly.
                random.Random(f"{seed}:{step_id}").shuffle(pool)
                steps.append(
                    Mind2WebStep(
                        id=step_id,
                        task_id=task_id,
                        website=str(_need(task, "website", where)),
                        task=str(_need(task, "confirmed_task", where)),
                        index=i,
                        steps=len(actions),
                        previous=tuple(str(r) for r in reprs[:i][-PREVIOUS_K:]),
                        operation=str(_need(operation, "op", f"{at} operation")),
                        value=str(_need(operation, "value", f"{at} operation")),
                        cleaned_html=str(_need(action, "cleaned_html", at)),
                        positives=positives,
                        pool=tuple(pool),
                    )
                )
    return steps
