"""``genpi profile``: what internalizing the prompt saves, per turn (the paper's Section 8).

Modules: ``flops`` (analytic count, FLOP counter), ``conversation`` (what is profiled, cut into
per-turn tokens), ``measure`` (the settings' forward passes), ``report`` (table, plots), ``cli``.

Run as: genpi profile --prompt ../shared/agentbench/prompts/webshop.json --turns 5 --out runs/profile
"""

from genpi.profile.cli import add_arguments, main

__all__ = ["add_arguments", "main"]
