"""AgentBench Mind2Web (multiple-choice element selection): its action reader; the harness goes
beside it (``task.py``, ``cli.py``) and registers in ``genpi.bench``."""
