"""Stage 2: Self Role-Playing Conversation.

The target model with the prompt is the agent. The same model plays the environment: it sees the
prompt with the demonstrations' user/assistant roles exchanged (so the environment's turns are its
own, the agent's turns are its "user"), under a system instruction telling it to answer as the
environment does in the demonstrations and to write a termination token once the agent gives its
final action. Greedy decoding; a conversation stops at the token or at ``max_turns`` agent turns,
and its record says why it ended. Every step batches all active conversations into one call.

Run as: genpi synth conversations --prompt examples/shell_agent.json --out runs/shell
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from genpi.llm import Backend, Conversation, Message, SamplingParams
from genpi.prompt import INPUT_SLOT, Prompt
from genpi.synth.common import GuardedBackend, add_stats, progress
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import RunDir, RunDirError

ENV_INSTRUCTION = (
    "You are not the assistant in this conversation: you are its environment (for example the "
    "operating system, the web page or the shop that an AI agent acts on). The conversation below "
    "shows, as your own turns, how the environment answers the agent. Answer each of the agent's "
    "messages the same way: give only what the environment would return (command output, page "
    "content, observations, results), never the agent's thoughts or actions, and never solve the "
    "task yourself. When the agent gives its final action (its final answer, or says it has "
    "finished), reply with {end_token} and nothing else."
)
AGENT_CONTEXT = "For reference, the agent was given these instructions:\n\n{system}"

END_REASONS = ("end_token", "max_turns", "empty_agent", "empty_env")


def swap_role(role: str) -> str:
    return {"user": "assistant", "assistant": "user"}.get(role, role)


def merge_consecutive(messages: list[Message]) -> list[Message]:
    """Join neighbouring turns of one role (strict chat templates require alternation)."""
    out: list[Message] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out


def episode_ends(prompt: Prompt) -> list[int]:
    """Indices of demonstration turns that end an episode: the agent's final action.

    An assistant turn ends an episode when it is the prompt's last turn or when the next turn
    starts a new task (a user turn that begins like ``input_template``).
    """
    prefix = prompt.input_template.partition(INPUT_SLOT)[0].strip()
    msgs = prompt.messages
    ends = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        if (
            i == len(msgs) - 1
            or prefix
            and msgs[i + 1]["role"] == "user"
            and msgs[i + 1]["content"].lstrip().startswith(prefix)
        ):
            ends.append(i)
    return ends


def environment_prefix(prompt: Prompt, end_token: str) -> list[Message]:
    """The role-swapped prompt: the environment's instruction, then the demonstrations swapped."""
    system = ENV_INSTRUCTION.format(end_token=end_token)
    messages = list(prompt.messages)
    if messages and messages[0]["role"] == "system":
        system += "\n\n" + AGENT_CONTEXT.format(system=messages[0]["content"])
        offset = 1
    else:
        offset = 0
    ends = set(episode_ends(prompt))
    swapped: list[Message] = [{"role": "system", "content": system}]
    for i, m in enumerate(messages[offset:], start=offset):
        swapped.append({"role": swap_role(m["role"]), "content": m["content"]})
        if i in ends:
            swapped.append({"role": "assistant", "content": end_token})  # the environment ends it
    return swapped


def environment_conversation(
    prompt: Prompt, x: str, turns: list[Message], end_token: str
) -> Conversation:
    """What the environment model sees: it wrote the task input and every environment turn."""
    messages = environment_prefix(prompt, end_token)
    messages.append({"role": "assistant", "content": prompt.fill(x)})
    messages += [{"role": swap_role(t["role"]), "content": t["content"]} for t in turns]
    return merge_consecutive(messages)


def agent_conversation(prompt: Prompt, x: str, turns: list[Message]) -> Conversation:
    return prompt.teacher_messages(x) + [dict(t) for t in turns]


def find_end_token(text: str, end_token: str) -> int:
    """Where the termination token starts in ``text`` (brackets and case optional), or -1."""
    core = re.escape(end_token.strip("[]<>"))
    match = re.search(r"[\[<]?\s*" + core + r"\s*[\]>]?", text, re.I)
    return match.start() if match else -1


@dataclass
class Rollout:
    id: str
    input: str
    split: str
    turns: list[Message] = field(default_factory=list)
    end_reason: str | None = None
    # The agent's first answer, stored by stage 1's teacher check: used instead of generating it.
    stored_answer: str | None = None
    reused_first_turn: bool = False

    def __post_init__(self) -> None:
        self.reused_first_turn = self.stored_answer is not None

    @property
    def last_agent_turn(self) -> str | None:
        agent = [t["content"] for t in self.turns if t["role"] == "assistant"]
        return agent[-1] if agent else None

    @property
    def agent_turns(self) -> int:
        return sum(t["role"] == "assistant" for t in self.turns)


def require_inputs(run: RunDir, inputs: list[dict[str, Any]]) -> None:
    """Raise a clear error when stage 1 left nothing to role-play."""
    if inputs:
        return
    tried = run.stage_stats("inputs")
    if tried.get("requests"):
        raise RunDirError(
            f"the generator wrote no usable input in {tried['requests']} requests "
            f"({tried.get('no_list', 0)} answers without a numbered list): use a stronger "
            "--generator or give --seed-inputs, then re-run the same command"
        )
    raise RunDirError(f"{str(run.path)!r} has no inputs yet: run `genpi synth inputs` first")


def run_conversations(run: RunDir, model: Backend, config: SynthConfig) -> dict[str, Any]:
    """Role-play a conversation for every input (held-out ones too) that has none yet."""
    prompt = run.prompt
    inputs = run.read("inputs")
    require_inputs(run, inputs)
    done = run.done_ids("conversations")
    pending = [r for r in inputs if r["id"] not in done]
    max_turns = config.turn_limit(prompt.max_turns)
    agent_params = SamplingParams(max_new_tokens=config.agent_max_new_tokens, temperature=0.0)
    # No stop string for the environment: the token must stay visible to be told apart from EOS.
    env_params = SamplingParams(max_new_tokens=config.env_max_new_tokens, temperature=0.0)
    settings = {
        "model": getattr(model, "name", "?"),
        "agent_params": agent_params.to_dict(),
        "env_params": env_params.to_dict(),
        "max_turns": max_turns,
        "end_token": config.end_token,
    }
    stats = run.stage_stats("conversations")
    guard = GuardedBackend(
        model, "conversations", max_consecutive_failures=config.max_consecutive_failures
    )
    new: dict[str, Any] = {
        "written": 0,
        "dropped_by_backend_errors": 0,
        "first_turns_reused": 0,
        **{r: 0 for r in END_REASONS},
    }
    bar = progress(len(pending), "conversations", enabled=config.progress)
    try:
        with run.writer("conversations") as writer:
            for start in range(0, len(pending), config.batch_size):
                wave = [
                    Rollout(
                        r["id"],
                        r["input"],
                        r.get("split", "train"),
                        stored_answer=r.get("first_agent_turn"),
                    )
                    for r in pending[start : start + config.batch_size]
                ]
                finished = _roll_wave(
                    wave,
                    prompt,
                    guard,
                    agent_params,
                    env_params,
                    max_turns,
                    config.end_token,
                    writer,
                    run,
                    settings,
                    bar,
                )
                for r in wave:
                    if r.end_reason is None:
                        new["dropped_by_backend_errors"] += 1
                for r in finished:
                    new[r.end_reason] += 1
                    new["written"] += 1
                    new["first_turns_reused"] += r.reused_first_turn
                run.update_manifest("conversations", add_stats(stats, {**new, **guard.stats()}))
    finally:
        bar.close()
        total = add_stats(stats, {**new, **guard.stats()})
        total["max_turns"] = max_turns
        run.update_manifest("conversations", total)
    return total


def _roll_wave(
    wave: list[Rollout],
    prompt: Prompt,
    guard: GuardedBackend,
    agent_params: SamplingParams,
    env_params: SamplingParams,
    max_turns: int,
    end_token: str,
    writer: Any,
    run: RunDir,
    settings: dict[str, Any],
    bar: Any,
) -> list[Rollout]:
    """Advance a wave of conversations turn by turn; write each one as soon as it ends."""
    active = list(wave)
    finished: list[Rollout] = []

    def close(ended: list[Rollout]) -> None:
        records = [
            run.record(
                r.id,
                settings,
                input=r.input,
                split=r.split,
                turns=r.turns,
                end_reason=r.end_reason,
                agent_turns=r.agent_turns,
                final_action=prompt.read_action(r.last_agent_turn) if r.last_agent_turn else None,
            )
            for r in ended
        ]
        writer.write(records)
        finished.extend(ended)
        bar.update(len(ended))

    while active:
        asked = [r for r in active if r.stored_answer is None]
        answers = guard.generate(
            [agent_conversation(prompt, r.input, r.turns) for r in asked], agent_params
        )
        if answers is None:
            return finished  # left unwritten: a rerun retries them
        generated = iter(answers)
        ended = []
        for r in active:
            text = r.stored_answer if r.stored_answer is not None else next(generated).text
            r.stored_answer = None
            cut = find_end_token(text, end_token)
            text = (text[:cut] if cut >= 0 else text).strip()
            if not text:
                r.end_reason = "empty_agent"
                ended.append(r)
            else:
                r.turns.append({"role": "assistant", "content": text})
        active = [r for r in active if r.end_reason is None]
        envs = guard.generate(
            [environment_conversation(prompt, r.input, r.turns, end_token) for r in active],
            env_params,
        )
        if envs is None:
            close(ended)
            return finished
        for r, gen in zip(active, envs, strict=True):
            cut = find_end_token(gen.text, end_token)
            reply = gen.text.strip()
            if cut >= 0:
                r.end_reason = "end_token"
            elif r.agent_turns >= max_turns:
                r.end_reason = "max_turns"
            elif not reply:
                r.end_reason = "empty_env"
            else:
                r.turns.append({"role": "user", "content": reply})
                continue
            ended.append(r)
        active = [r for r in active if r.end_reason is None]
        close(ended)
    return finished
