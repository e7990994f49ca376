"""AgentBench's Web Browsing task (Mind2Web, multiple-choice element selection):
``data.py`` (the published task files), ``dom.py`` (the pruned page each round shows),
``task.py`` (rounds, environment, scoring), ``metrics.py`` (Mind2Web's step-level metrics),
``reader.py``, ``agents.py`` (the oracle), ``cli.py`` (``genpi eval-agent --bench mind2web``)."""
