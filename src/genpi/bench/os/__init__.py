"""AgentBench OS interaction in a sandbox that needs no Docker engine (``--bench os``).

- ``task``: AgentBench's problem layout, the environment (setup, bash steps) and the scoring rules;
- ``reader``: the one reader of the agent's ``Act:`` lines (the harness and ``genpi eval``);
- ``agents``: the oracle agent (LLM agents: ``genpi.bench.core.LLMAgent``);
- ``rootfs``: the Debian root filesystem (debootstrap), built once and cached;
- ``sandbox``: Docker or namespace (bubblewrap + overlayfs) sandboxes with a persistent shell;
- ``cli`` / ``sandbox_cli``: ``genpi eval-agent --bench os`` (alias ``eval-os``), ``genpi sandbox``.
"""
