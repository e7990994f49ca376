"""Data synthesis from the prompt alone (GenPI Section 5): inputs, conversations, outputs, reasons.

Python API: ``synthesize(prompt, out_dir, model_backend=..., generator_backend=..., config=...)``
with a ``SynthConfig`` (``SynthConfig.quick()`` for CPU demos); each stage is also callable alone
(``genpi.synth.inputs.run_inputs`` and so on, on a ``RunDir`` from ``open_run``).
"""

from genpi.synth.config import END_TOKEN, SynthConfig
from genpi.synth.pipeline import open_run, synthesize

__all__ = ["END_TOKEN", "SynthConfig", "open_run", "synthesize"]
