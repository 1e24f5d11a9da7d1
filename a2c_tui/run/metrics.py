"""Rolling score window and metric sinks (JSON lines + TensorBoard through tensorboardX)."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

from a2c_tui import files


def score_line(scores: "ScoreWindow") -> str:
    """'last-100 raw score 123.4 over 56 games', or 'no game finished yet' (not 'nan over 0 games')."""
    if not scores.games:
        return "no game finished yet"
    return f"last-100 raw score {scores.mean_score():.1f} over {scores.games:,} games"


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
        self.path = files.inside(run_dir, "metrics.jsonl")
        self._file = files.open_append(self.path)
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            tb = files.inside(run_dir, "tb")
            if tb.is_symlink() or (tb.exists() and not tb.is_dir()):
                self._file.close()
                raise files.RefusedFile(f"{str(tb)!r} is not a directory of this run; it is not written into")
            self._writer = SummaryWriter(str(tb), flush_secs=30, max_queue=1000)

    def write(self, record: dict[str, Any], scalars: dict[str, float] | None = None) -> None:
        """Raises OSError when a line cannot be written (disk full); the caller reports it.
        TensorBoard gets `scalars` (tag: value) or else every number of the record."""
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        step = int(record["step"])
        for key, value in (record if scalars is None else scalars).items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._tensorboard().add_scalar(key, value, step)

    def text(self, tag: str, message: str, step: int) -> None:
        self._tensorboard().add_text(tag, message, step)

    def _tensorboard(self):
        """The TensorBoard writer, or a stand-in that drops everything once it is off.

        tensorboardX writes from a thread of its own. When a write fails (disk full) that thread
        dies, and once its queue is full every add_* blocks forever: training would hang, deaf
        even to SIGTERM. So a dead writer is dropped (and reported once, as an OSError)."""
        if self._writer is not None and not _writer_thread_alive(self._writer):
            self._writer = None
            raise OSError("TensorBoard writer stopped after a failed write; TensorBoard logging is off for this run")
        return self._writer if self._writer is not None else _NO_TENSORBOARD

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the last lines could not be written (disk full); reported when they failed
        if self._writer is not None and _writer_thread_alive(self._writer):
            try:
                self._writer.close()
            except OSError:
                pass


def _writer_thread_alive(writer) -> bool:
    worker = getattr(getattr(writer.file_writer, "event_writer", None), "_worker", None)
    return worker is None or worker.is_alive()


class _NoTensorBoard:
    def add_scalar(self, *args) -> None:
        pass

    def add_text(self, *args) -> None:
        pass


_NO_TENSORBOARD = _NoTensorBoard()


class _NoMetrics:
    """The sink of a rank other than 0: rank 0 writes the run's records."""

    def write(self, record: dict[str, Any], scalars: dict[str, float] | None = None) -> None:
        pass

    def text(self, tag: str, message: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass


NO_METRICS = _NoMetrics()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (crash mid-write), or a line that is not a
    record with an integer step, is skipped."""
    records = []
    try:
        lines = files.read_bounded(path, files.SIDE_FILE_LIMIT, "metrics").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        # every record written has an integer step (a resume truncates by it)
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
    return records
