"""Evaluation of internalized prompts: action readers, metrics, systems, ``genpi eval`` / ``compare``.

Python API (what ``genpi internalize`` calls):

- ``genpi.evaluate.cli.evaluate(run_dir, ...) -> dict``: generate with every system and score it;
- ``genpi.evaluate.compare.compare(run_dir) -> str``: the comparison tables as Markdown.
"""
