"""Evaluation of internalized prompts: action readers, metrics, systems, ``genpi eval`` / ``compare``.

Python API (what ``genpi internalize`` calls):

- ``genpi.evaluate.run.evaluate(run_dir, ...) -> dict``: generate with every system and score it
  (``genpi.evaluate.inputs`` reads what it evaluates on; ``genpi.evaluate.cli`` is ``genpi eval``);
- ``genpi.evaluate.compare.compare(run_dir) -> str``: the comparison tables as Markdown.
"""
