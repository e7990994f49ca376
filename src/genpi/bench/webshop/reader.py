"""AgentBench WebShop's action reader: ``Action: search[query]`` or ``Action: click[element]``."""

from __future__ import annotations

import re

_WEBSHOP_ACTION = re.compile(r"[Aa]ction: *\n* *((search|click)\[(.+?)\])")


def read_eval_action(answer: str) -> tuple[str, str] | None:
    """AgentBench WebShop: search[query] or click[element]."""
    match = _WEBSHOP_ACTION.search(answer)
    if match is None:
        return None
    return match.group(2), match.group(3).strip()
