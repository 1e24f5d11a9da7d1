"""What flows between the trainer handle, the app and the panes, and small formatting helpers.

Trainer items (`Snapshot`, `Event`) arrive on the training thread and are wrapped in
messages posted to the app; they are immutable, so handing them across threads is safe.
State names are compared as strings so that this package never imports the trainer (torch).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from textual.message import Message

from a2c_tui.config import EVAL_ENVS, EVAL_SEED

RUNNING, PAUSED, STOPPED, FINISHED, ERROR = "RUNNING", "PAUSED", "STOPPED", "FINISHED", "ERROR"
STATE_STYLES = {RUNNING: "bold green", PAUSED: "bold yellow", STOPPED: "bold magenta", FINISHED: "bold cyan",
                ERROR: "bold white on red"}


class TrainerHandle(Protocol):
    """What the app needs from a trainer (a2c_tui.run.handle.LocalHandle is the one in this process)."""

    config: Any
    run_dir: Path

    @property
    def state(self) -> str: ...
    def snapshot(self) -> Any: ...
    def subscribe(self, callback: Callable[[Any], None]) -> None: ...
    def start(self, paused: bool = False) -> None: ...
    def pause(self) -> bool: ...
    def resume(self) -> bool: ...
    def stop(self) -> Any: ...  # Future -> Path | None
    def close(self, timeout: float = 5.0) -> None: ...
    def set_hparams(self, **values: float) -> Any: ...  # Future; raises ConfigError at once
    def save_now(self) -> Any: ...  # Future -> Path | None
    def load(self, path: str | Path) -> Any: ...  # Future -> step
    def list_checkpoints(self) -> list[Any]: ...
    def delete_checkpoint(self, path: str | Path) -> None: ...
    def evaluate(self, source: str | Path | None, episodes: int = 100, envs: int = EVAL_ENVS, greedy: bool = False,
                 seed: int = EVAL_SEED, progress: Callable[[Any], None] | None = None, cancel: Any = None) -> dict[str, Any]: ...
    def history(self) -> list[dict[str, Any]]: ...


def state_name(state: Any) -> str:
    """'RUNNING' for State.RUNNING or 'RUNNING' (the trainer's State is a str enum)."""
    return str(getattr(state, "value", state))


# ----- trainer -> app ------------------------------------------------------------------
class TrainerSnapshot(Message):
    def __init__(self, snapshot: Any, source: Any = None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.source = source  # the handle it came from (a replaced run's late items are dropped)


class TrainerEvent(Message):
    def __init__(self, event: Any, source: Any = None) -> None:
        super().__init__()
        self.event = event
        self.source = source


class RunDisconnected(Message):
    """The connection to the run's service ended (item: protocol.Disconnected)."""

    def __init__(self, item: Any, source: Any = None) -> None:
        super().__init__()
        self.item = item
        self.source = source


class RunEvaluating(Message):
    """An evaluation started in the run's service (item: remote.RemoteEvaluation)."""

    def __init__(self, item: Any, source: Any = None) -> None:
        super().__init__()
        self.item = item
        self.source = source


class CommandDone(Message):
    """A queued trainer command finished (posted from the training thread by a future callback)."""

    def __init__(self, what: str, result: Any = None, error: str | None = None) -> None:
        super().__init__()
        self.what = what
        self.result = result
        self.error = error


class NewRunReady(Message):
    def __init__(self, handle: Any) -> None:
        super().__init__()
        self.handle = handle


class NewRunFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ShutdownDone(Message):
    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


# ----- evaluation worker -> evaluation pane (bubbles to the app) -------------------------
class EvalStarted(Message):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


class EvalProgressed(Message):
    def __init__(self, done: int, total: int, score: float, length: int) -> None:
        super().__init__()
        self.done = done
        self.total = total
        self.score = score
        self.length = length


class EvalFinished(Message):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result


class EvalStopped(Message):
    """The evaluation ended without a result: cancelled, or failed with `text`."""

    def __init__(self, text: str, cancelled: bool) -> None:
        super().__init__()
        self.text = text
        self.cancelled = cancelled


# ----- formatting ------------------------------------------------------------------------
def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--:--"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def fmt_number(value: Any, digits: int = 4) -> str:
    """`digits` significant digits (fewer in exponent form), "-" for missing or non-finite values."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{min(digits - 1, 4)}g}"  # at most 9 characters
    return f"{value:.{digits}g}"


def fmt_steps(steps: float) -> str:
    """A step count in three significant digits or so: 8,000 / 49.6k / 480k / 2.40M."""
    if steps < 10_000:
        return f"{steps:,.0f}"
    if steps < 99_950:
        return f"{steps / 1e3:.1f}k"
    if steps < 999_500:
        return f"{steps / 1e3:.0f}k"
    return f"{steps / 1e6:.2f}M"


def fmt_clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def fmt_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
