"""``genpi serve``: an OpenAI-compatible server that applies internalized prompts transparently.

- ``router``: which weights answer a request (pure);
- ``engine``: batched generation on one base model with several LoRA adapters;
- ``server``: the HTTP API (FastAPI);
- ``cli``: the ``genpi serve`` verb; ``export``: ``genpi export vllm`` and ``agentbench``
  (``export_agentbench``).
"""
