"""Benchmark harnesses: one folder each under ``genpi/bench/``, one line each in :data:`HARNESSES`.

``genpi.bench.core`` runs any harness (the agent loop, resume, transcripts, concurrency, the
upper-bound normalisation, the LLM agent); a harness ``genpi.bench.<name>`` brings the rest:

- ``reader.py`` (every harness): ``read_eval_action(answer) -> (type, argument) | None``, the one
  reading of the agent's action; ``genpi eval`` uses it for a prompt named ``<name>`` or
  ``agentbench-<name>``, and the harness's own environment reads with the same rules;
- ``cli.py`` (a harness that runs episodes, ``runs=True``): ``add_harness_arguments(group)`` (its
  own flags), ``add_arguments(parser)`` (the shared flags from
  :func:`genpi.bench.core.add_agent_arguments` plus its own) and ``main(args)``, reached as
  ``genpi eval-agent --bench <name>``;
- its problems, a :class:`genpi.bench.core.Environment` (``reset``/``step``/``judge``/``close``)
  and an oracle agent that proves it right, in modules of its own (``os``: ``task.py``,
  ``agents.py``, ``sandbox.py``).

A new harness: a folder ``genpi/bench/<name>/`` with those files and one :class:`Harness` line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from genpi.errors import GenpiError

Reader = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Harness:
    name: str  # the folder under genpi/bench/, and AgentBench's prompt name without "agentbench-"
    summary: str
    runs: bool  # has cli.py: `genpi eval-agent --bench NAME` runs its episodes

    @property
    def package(self) -> str:
        return f"{__name__}.{self.name}"

    def reader(self) -> Reader:
        return importlib.import_module(f"{self.package}.reader").read_eval_action

    def cli(self) -> ModuleType:
        if not self.runs:
            raise GenpiError(
                f"benchmark {self.name!r} has no harness here (only its action reader); "
                f"run it through AgentBench against `genpi serve`, or pick one of: "
                + ", ".join(runnable())
            )
        return importlib.import_module(f"{self.package}.cli")


HARNESSES: dict[str, Harness] = {
    h.name: h
    for h in (
        Harness("os", "AgentBench OS interaction, each problem in a fresh sandbox", runs=True),
        Harness("webshop", "AgentBench WebShop (reader only: runs in AgentBench)", runs=False),
        Harness("mind2web", "AgentBench Web Browsing (Mind2Web multiple choice)", runs=True),
    )
}


def runnable() -> list[str]:
    return [name for name, h in HARNESSES.items() if h.runs]


def get_harness(name: str) -> Harness:
    if name not in HARNESSES:
        raise GenpiError(f"no benchmark {name!r}; known: {', '.join(HARNESSES)}")
    return HARNESSES[name]


def harness_for_prompt(prompt_name: str) -> Harness | None:
    """The harness whose prompt this is (``agentbench-os`` or ``os`` -> ``os``), or None."""
    name = prompt_name.lower().removeprefix("agentbench-").replace("_", "-")
    return HARNESSES.get(name)
