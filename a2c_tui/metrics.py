"""Rolling score window and metric sinks (JSON lines + TensorBoard through tensorboardX)."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any


class ScoreWindow:
    """The last `size` finished whole games: raw scores and lengths."""

    def __init__(self, size: int = 100, scores=(), lengths=()):
        self.scores: deque[float] = deque(scores, maxlen=size)
        self.lengths: deque[int] = deque(lengths, maxlen=size)
        self.games = len(self.scores)  # all games finished in the run, not only the window

    def add(self, score: float, length: int) -> None:
        self.scores.append(score)
        self.lengths.append(length)
        self.games += 1

    def mean_score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan

    def mean_length(self) -> float:
        return sum(self.lengths) / len(self.lengths) if self.lengths else math.nan

    def state(self) -> dict[str, Any]:
        return {"scores": list(self.scores), "lengths": list(self.lengths), "games": self.games}

    @classmethod
    def from_state(cls, state: dict[str, Any], size: int = 100) -> ScoreWindow:
        window = cls(size, state.get("scores", ()), state.get("lengths", ()))
        window.games = int(state.get("games", len(window.scores)))
        return window


def _clean(value: Any) -> Any:
    # JSON has no NaN; write null so every reader can parse the stream.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsSink:
    """Appends one JSON object per record to metrics.jsonl and mirrors numbers to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tb"), flush_secs=30)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        if self._writer is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def text(self, tag: str, message: str, step: int) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, message, step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (crash mid-write) is skipped."""
    records = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return records
