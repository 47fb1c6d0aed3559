"""The run history: one frozen record per evaluated candidate, appended to history.jsonl as it goes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from promptopt.core._files import write_text_atomic
from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.evaluation.evaluator import EvalResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """A candidate and its evaluation. ``full`` marks an evaluation on the whole dev split (only those
    compete for best prompt); minibatch evaluations have ``full=False``."""

    trial: int
    step: int
    prompt: Prompt
    result: EvalResult | None
    status: Literal["complete", "failed"] = "complete"
    error: str | None = None
    full: bool = True
    calls_so_far: int = 0
    elapsed: float = 0.0

    @property
    def mean(self) -> float:
        return self.result.mean if self.result is not None else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "step": self.step,
            "status": self.status,
            "error": self.error,
            "full": self.full,
            "calls_so_far": self.calls_so_far,
            "elapsed": round(self.elapsed, 3),
            "summary": self.result.summary() if self.result is not None else None,
            "prompt": self.prompt.to_dict(),
            "result": self.result.to_dict() if self.result is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        return cls(
            trial=d["trial"],
            step=d["step"],
            prompt=Prompt.from_dict(d["prompt"]),
            result=EvalResult.from_dict(d["result"]) if d.get("result") else None,
            status=d["status"],
            error=d.get("error"),
            full=d["full"],
            calls_so_far=d.get("calls_so_far", 0),
            elapsed=d.get("elapsed", 0.0),
        )


class History:
    """Ordered trial records; written line by line to ``path`` when given."""

    def __init__(self, path: Path | None = None, *, previous: Sequence[TrialRecord] = ()) -> None:
        """``previous``: records already in ``path`` from an interrupted run. They stay on disk while a
        resumed run replays them, so a second crash before the replay catches up loses nothing."""
        self.path = path
        self.records: list[TrialRecord] = []
        self._on_disk = list(previous)
        if path is not None:  # exactly the previous records: a torn last line of a crash is gone
            self._rewrite(self._on_disk)

    def _rewrite(self, records: Sequence[TrialRecord]) -> None:
        """Replace the file with ``records`` atomically (a crash leaves the old file or the new one)."""
        assert self.path is not None
        write_text_atomic(self.path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records))

    def append(self, record: TrialRecord) -> None:
        i = len(self.records)
        self.records.append(record)
        if self.path is None:
            return
        if i < len(self._on_disk):
            if self._on_disk[i].to_dict() == record.to_dict():
                return  # replayed exactly: already on disk
            self._on_disk = []  # the replay diverged: the file becomes this run's records
            self._rewrite(self.records)
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def full(self) -> list[TrialRecord]:
        """Completed full-dev evaluations, in order."""
        return [r for r in self.records if r.full and r.status == "complete" and r.result is not None]

    def best(self) -> TrialRecord | None:
        """Highest full-dev mean; ties go to the earlier (simpler) candidate."""
        full = self.full()
        return max(full, key=lambda r: (r.mean, -r.trial)) if full else None

    def find(self, prompt_id: str, *, full: bool = True) -> TrialRecord | None:
        return next(
            (r for r in self.records if r.prompt.id == prompt_id and r.full == full and r.status == "complete"),
            None,
        )

    @staticmethod
    def load(path: Path) -> list[TrialRecord]:
        """The records in ``path``. A torn last line (a crash mid-write) is dropped with a warning; any other line
        that is not a trial record is a :class:`ConfigError` naming the file and the line."""
        damaged = "The run directory is damaged: restore the file or start a new run."
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text ({exc}). {damaged}", source=str(path)) from None
        numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        records: list[TrialRecord] = []
        for n, line in numbered:
            try:
                records.append(TrialRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if n == numbered[-1][0]:
                    logger.warning("%s: dropped the unreadable last line %d (%s); that trial runs again", path, n, exc)
                    break
                detail = f"no key {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ConfigError(f"line {n} is not a trial record ({detail}). {damaged}", source=str(path)) from None
        return records
