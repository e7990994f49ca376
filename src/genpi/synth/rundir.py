"""The run directory: append-only JSONL per stage, a manifest, resumable after any crash.

The layout is the contract in ``genpi.data``'s docstring (training and evaluation read it).
Every record is appended as one line and flushed + fsynced before the next batch starts, so a
process killed with SIGKILL loses at most the records it had in flight. A torn last line (a write
cut off mid-record) is dropped when read (``genpi.data.read_jsonl``) and cut off before the next
append, so it can never glue itself onto a new record.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The run directory's names, error and read side live in genpi.data (every reader uses them).
from genpi.data import (
    MANIFEST,
    PROMPT_FILE,
    RunDirError,
    read_jsonl,
    read_manifest,
    write_json_atomic,
)
from genpi.prompt import Prompt

STAGES = ("inputs", "conversations", "outputs", "reasons")
REPORT_FILE = "report.json"
# Stage 1's ledger: one line per batch (its counts, the records it kept, the items it dropped),
# written before the batch's records, so the stage's counts are read from durable lines.
INPUTS_LOG = "inputs.log.jsonl"


def stage_path(run_dir: Path, stage: str) -> Path:
    return run_dir / f"{stage}.jsonl"


def cut_torn_tail(path: Path) -> bool:
    """Truncate a last line that has no newline (a record cut off by a crash). True if cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        data_end = f.seek(0, os.SEEK_END)
        # Walk back to the last newline (the file is append-only, so the tail is one record).
        chunk = 1 << 16
        pos = data_end
        last_newline = -1
        while pos > 0 and last_newline < 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                last_newline = start + i
            pos = start
        f.truncate(last_newline + 1)
        f.flush()
        os.fsync(f.fileno())
    return True


class StageWriter:
    """Append records to one stage's JSONL file, durably, batch by batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn_dropped = cut_torn_tail(path)
        self._file = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        if not lines:
            return 0
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        return len(lines)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prompt_mismatch(manifest: dict[str, Any], prompt: Prompt) -> str | None:
    """How ``prompt`` differs from the one a run's manifest records (None: the same prompt).

    Every verb that writes into a run directory refuses another prompt with this: its files
    (data, adapters, cached teacher answers) belong to the run's prompt.
    """
    if manifest.get("prompt_fingerprint") == prompt.fingerprint:
        return None
    return (
        f"prompt {manifest.get('prompt_name')!r} "
        f"({str(manifest.get('prompt_fingerprint'))[:12]}), not {prompt.name!r} "
        f"({prompt.fingerprint[:12]})"
    )


class RunDir:
    """One synthesis run: its directory, manifest and stage files."""

    def __init__(self, path: str | Path, prompt: Prompt) -> None:
        self.path = Path(path)
        self.prompt = prompt

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        prompt: Prompt,
        *,
        model: str,
        generator: str,
        settings: dict[str, Any],
        force: bool = False,
    ) -> RunDir:
        """Create the run directory, or check that an existing one was made for this prompt/models.

        ``force`` moves a foreign run's files aside (into ``replaced-<time>/``), never deletes them.
        """
        run = cls(path, prompt)
        run.path.mkdir(parents=True, exist_ok=True)
        manifest = run.read_manifest()
        if manifest is None and any(stage_path(run.path, s).exists() for s in STAGES):
            mismatch = ["it holds stage files but no manifest.json"]
        elif manifest is None:
            mismatch = []
        else:
            mismatch = run._mismatches(manifest, model=model, generator=generator)
        if mismatch:
            if not force:
                raise RunDirError(
                    f"run directory {str(run.path)!r} was made for another run ({'; '.join(mismatch)}): "
                    "choose another --out, or pass --force to move its files aside and start over"
                )
            run._move_aside()
            manifest = None
        if manifest is None:
            manifest = {
                "genpi_run": 1,
                "created": _now(),
                "prompt_name": prompt.name,
                "prompt_fingerprint": prompt.fingerprint,
                "models": {"model": model, "generator": generator},
                "settings": settings,
                "stages": {},
                "counts": {},
            }
        manifest["settings"] = settings
        manifest["updated"] = _now()
        write_json_atomic(run.path / MANIFEST, manifest)
        prompt.save(run.path / PROMPT_FILE)
        return run

    def _mismatches(self, manifest: dict[str, Any], *, model: str, generator: str) -> list[str]:
        out = []
        if (mismatch := prompt_mismatch(manifest, self.prompt)) is not None:
            out.append(mismatch)
        models = manifest.get("models", {})
        if models.get("model") != model:
            out.append(f"model {models.get('model')!r}, not {model!r}")
        if models.get("generator") != generator:
            out.append(f"generator {models.get('generator')!r}, not {generator!r}")
        return out

    def _move_aside(self) -> None:
        aside = self.path / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        names = [f"{s}.jsonl" for s in STAGES] + [INPUTS_LOG, MANIFEST, PROMPT_FILE, REPORT_FILE]
        names.append("report.txt")
        for name in names:
            if (self.path / name).exists():
                os.replace(self.path / name, aside / name)

    # -- manifest -----------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        return read_manifest(self.path, remedy="fix or delete it, or pass --force to start over")

    def update_manifest(self, stage: str, stats: dict[str, Any]) -> None:
        """Record a stage's statistics and every stage file's record count."""
        manifest = self.read_manifest() or {}
        manifest.setdefault("stages", {})[stage] = stats
        manifest["counts"] = {s: len(self.read(s)) for s in STAGES}
        manifest["updated"] = _now()
        write_json_atomic(self.path / MANIFEST, manifest)

    def stage_stats(self, stage: str) -> dict[str, Any]:
        """The statistics a previous (possibly interrupted) run of ``stage`` left."""
        return dict(((self.read_manifest() or {}).get("stages") or {}).get(stage) or {})

    # -- stage files --------------------------------------------------------------------------
    def read(self, stage: str) -> list[dict[str, Any]]:
        return read_jsonl(stage_path(self.path, stage))

    def done_ids(self, stage: str) -> set[str]:
        return {r["id"] for r in self.read(stage)}

    def writer(self, stage: str) -> StageWriter:
        return StageWriter(stage_path(self.path, stage))

    def record(self, record_id: str, settings: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A stage record: its id, the prompt's fingerprint, the generation settings, the data."""
        return {
            "id": record_id,
            **fields,
            "prompt_fingerprint": self.prompt.fingerprint,
            "settings": settings,
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
