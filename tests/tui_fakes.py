"""A trainer handle with fixed data for driving the app in tests (no torch, no threads)."""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from a2c_tui.config import LIVE_KEYS, ConfigError, Config, check_value

T0 = 1_700_000_000.0  # fixed clock for deterministic screens


@dataclass(frozen=True)
class FakeEvent:
    time: float
    level: str
    text: str


@dataclass(frozen=True)
class FakeSnapshot:
    run_name: str
    run_dir: str
    env_id: str
    device: str
    state: str
    step: int
    total_steps: int
    updates: int
    elapsed: float
    steps_per_sec: float
    score: float
    games: int
    hparams: Mapping[str, float]
    metrics: Mapping[str, Any]
    time: float = T0
    evaluation: Mapping[str, Any] = field(default_factory=dict)

    @property
    def eta(self) -> float:
        left = self.total_steps - self.step
        return left / self.steps_per_sec if self.steps_per_sec > 0 else math.inf


@dataclass
class FakeCheckpoint:
    path: Path
    step: int
    mtime: float
    size: int
    score: float | None
    eval_mean: float | None
    tags: tuple[str, ...] = ()


def record(i: int) -> dict[str, Any]:
    """A deterministic diagnostics record number i (wavy curves)."""
    wave = math.sin(i / 7.0)
    return {"step": 800 * i, "updates": 10 * i, "score": 150 + 3 * i + 20 * wave, "r2": min(0.9, 0.02 * i),
            "grad_norm": 0.5 + 0.2 * wave, "entropy": 1.79 - 0.004 * i, "value_loss": 0.05 + 0.01 * wave,
            "policy_loss": -0.01 * wave, "steps_per_sec": 1000 + 30 * wave, "advantage_std": 0.2 + 0.05 * wave,
            "time_env": 0.031, "time_act": 0.024, "time_update": 0.045}


def eval_record(i: int) -> dict[str, Any]:
    """An evaluation beside training of the state of record i's step."""
    return {"step": 800 * i, "updates": 10 * i, "eval_score": 140 + 4 * i + 30 * math.cos(i / 5.0),
            "eval_score_std": 60.0, "eval_games": 10}


class FakeHandle:
    """Records every command; `emit` plays the trainer's part (call it from any thread)."""

    def __init__(self, config: Config, run_dir: Path, state: str = "PAUSED", records: int = 60,
                 checkpoints: list[FakeCheckpoint] | None = None, scores: list[float] | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self._state = state
        self.calls: list[tuple[str, Any]] = []
        self.subscribers: list[Callable[[Any], None]] = []
        self.records = [record(i) for i in range(1, records + 1)]
        self.hparams = {k: getattr(config.algo, k) for k in LIVE_KEYS}
        self.checkpoints = list(checkpoints or [])
        self.eval_scores = scores or [110.0, 135.0, 180.0, 180.0, 210.0, 255.0, 290.0, 410.0]
        self.step = self.records[-1]["step"] if self.records else 0
        self.closed = False
        self.eval_gate: threading.Event | None = None  # set to hold evaluate() until released

    # --- facts ---
    @property
    def state(self) -> str:
        return self._state

    def snapshot(self) -> FakeSnapshot:
        last = self.records[-1] if self.records else {}
        return FakeSnapshot(
            run_name="space_invaders-20231114-221320", run_dir=str(self.run_dir), env_id=self.config.env.id,
            device="cpu", state=self._state, step=self.step, total_steps=self.config.run.total_steps,
            updates=last.get("updates", 0), elapsed=3723.0, steps_per_sec=1024.0,
            score=last.get("score", math.nan), games=42, hparams=MappingProxyType(dict(self.hparams)),
            metrics=MappingProxyType(dict(last)))

    def history(self) -> list[dict[str, Any]]:
        """As metrics.jsonl holds them: an evaluation's record comes a few records after its step."""
        records = []
        for record in self.records[:-1]:
            records.append(record)
            i = record["step"] // 800 - 3
            if i > 0 and i % 8 == 0:
                records.append(eval_record(i))
        return records

    # --- the trainer's side ---
    def emit(self, item: Any) -> None:
        for callback in list(self.subscribers):
            callback(item)

    def event(self, level: str, text: str) -> None:
        self.emit(FakeEvent(T0, level, text))

    def set_state(self, state: str) -> None:
        self._state = state
        self.emit(self.snapshot())

    def fail(self, text: str) -> None:
        self._state = "ERROR"
        self.event("error", text)
        self.emit(self.snapshot())

    # --- commands ---
    def subscribe(self, callback: Callable[[Any], None]) -> None:
        self.subscribers.append(callback)

    def start(self, paused: bool = False) -> None:
        self.calls.append(("start", paused))
        self._state = "PAUSED" if paused else self._state

    def pause(self) -> bool:
        self.calls.append(("pause", None))
        if self._state != "RUNNING":
            return False
        self.set_state("PAUSED")
        return True

    def resume(self) -> bool:
        self.calls.append(("resume", None))
        if self._state not in ("PAUSED", "ERROR"):
            return False
        self.set_state("RUNNING")
        return True

    def stop(self) -> Future:
        self.calls.append(("stop", None))
        self._state = "STOPPED"
        self.emit(self.snapshot())
        return _done(self.run_dir / "step_48000.pt")

    def close(self, timeout: float = 5.0) -> None:
        self.calls.append(("close", timeout))
        self.closed = True

    def set_hparams(self, **values: float) -> Future:
        checked = {k: check_value(f"algo.{k}", v) for k, v in values.items()}
        self.calls.append(("set_hparams", checked))
        self.hparams.update(checked)
        return _done(dict(self.hparams))

    def save_now(self) -> Future:
        self.calls.append(("save_now", None))
        path = self.run_dir / f"step_{self.step}.pt"
        self.checkpoints = [replace(c, tags=()) for c in self.checkpoints if c.path != path]
        self.checkpoints.insert(0, FakeCheckpoint(path, self.step, T0 + 60, 13_000_000, 201.5, None, ("latest",)))
        self.event("info", f"saved {path.name} (requested, 12.4 MiB)")
        return _done(path)

    def load(self, path: str | Path) -> Future:
        self.calls.append(("load", Path(path)))
        return _done(4000)

    def list_checkpoints(self) -> list[FakeCheckpoint]:
        return list(self.checkpoints)

    def delete_checkpoint(self, path: str | Path) -> None:
        self.calls.append(("delete", Path(path)))
        info = next(c for c in self.checkpoints if c.path == Path(path))
        if "latest" in info.tags and self._state in ("RUNNING", "PAUSED"):
            raise ConfigError("the latest checkpoint cannot be deleted while training")
        self.checkpoints.remove(info)

    def evaluate(self, source, episodes=100, envs=16, greedy=False, seed=12345, progress=None,
                 cancel=None) -> dict[str, Any]:
        self.calls.append(("evaluate", (source, episodes, envs)))
        self.eval_options = {"greedy": greedy, "seed": seed}
        scores = [self.eval_scores[i % len(self.eval_scores)] for i in range(episodes)]
        for done, score in enumerate(scores, 1):
            if self.eval_gate is not None:
                self.eval_gate.wait(5)
            if cancel is not None and cancel.is_set():
                raise RuntimeError(f"evaluation cancelled after {done - 1} of {episodes} games")
            if progress is not None:
                progress(_Progress(done, episodes, score, 700))
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        ordered = sorted(scores)
        median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
        result = {"episodes": episodes, "mean": mean, "std": std, "median": median, "min": min(scores),
                  "max": max(scores), "mean_length": 700.0, "scores": scores, "lengths": [700] * episodes,
                  "source": Path(source).name, "greedy": greedy, "seed": seed,
                  "step": next((c.step for c in self.checkpoints if c.path == Path(source)), None)}
        for i, info in enumerate(self.checkpoints):
            if info.path == Path(source):
                self.checkpoints[i] = replace(info, eval_mean=mean)
        return result


    def follow_evaluation(self, eid: int, cancel=None, progress=None) -> dict[str, Any]:
        """An evaluation the service was running when the app attached (running_evaluation)."""
        running = self.running_evaluation
        return self.evaluate(running.path, running.episodes, running.envs, progress=progress, cancel=cancel)


@dataclass
class _Progress:
    done: int
    total: int
    score: float
    length: int


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def fake_checkpoints(run_dir: Path) -> list[FakeCheckpoint]:
    return [
        FakeCheckpoint(run_dir / "step_48000.pt", 48000, T0, 13_104_512, 201.5, None, ("latest",)),
        FakeCheckpoint(run_dir / "step_40000.pt", 40000, T0 - 600, 13_104_512, 188.25, 240.5, ("best",)),
        FakeCheckpoint(run_dir / "step_32000.pt", 32000, T0 - 1200, 13_104_512, 170.0, None, ()),
    ]
