"""AgentBench OS interaction in a sandbox that needs no Docker engine (``--bench os``).

- ``task``: AgentBench's problem layout, the environment (setup, bash steps) and the scoring rules;
- ``reader``: the one reader of the agent's ``Act:`` lines (the harness and ``genpi eval``);
- ``agents``: the oracle agent (LLM agents: ``genpi.bench.core.LLMAgent``);
- ``rootfs``: the Debian root filesystem (debootstrap), built once and cached;
- ``sandbox``: picks a backend per problem (``SandboxFactory``), checks that sandboxes run here;
  ``shell`` (the persistent shell, bounded output, the ``Sandbox`` interface), ``docker``,
  ``namespace`` (bubblewrap + overlayfs in a user namespace), ``cgroups`` (its limits);
- ``cli`` / ``sandbox_cli``: ``genpi eval-agent --bench os`` (alias ``eval-os``), ``genpi sandbox``.
"""
