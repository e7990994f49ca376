"""AgentBench OS-interaction evaluation in a sandbox that needs no Docker engine.

- ``rootfs``: the Debian root filesystem (debootstrap), built once and cached;
- ``sandbox``: Docker or namespace (bubblewrap + overlayfs) sandboxes with a persistent shell;
- ``task``: AgentBench's problem layout, the agent loop and the scoring rules;
- ``agents``: the oracle agent and LLM agents over any ``genpi.llm`` backend;
- ``cli`` / ``sandbox_cli``: the ``genpi eval-os`` and ``genpi sandbox`` verbs.
"""
