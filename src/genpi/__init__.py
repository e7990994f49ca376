"""genpi: internalize a long, fixed prompt into a small LoRA adapter (GenPI, arXiv 2411.15927)."""

__version__ = "0.1.0"
