"""What the app talks to: a trainer *handle* — commands one way, snapshots and events the
other. `LocalHandle` drives a `Trainer` in this process; a handle for a trainer in another
process would offer the same methods, and the panes would not change.

Every method here returns quickly (commands are queued for the training thread) except
`evaluate`, which runs a whole evaluation and must be called from a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from a2c_tui.config import EVAL_ENVS, EVAL_SEED, Config, ConfigError
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run.evaluate import EvalProgress, evaluate
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.run.trainer import Event, Snapshot, State, Trainer


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system (glibc; elsewhere nothing).

    An evaluation allocates tens of MB (checkpoint, a model, a batch of games) in its worker
    thread's malloc arena and frees them, and glibc keeps the pages: 16 games on 8 envs left
    RSS ~20 MB higher (357 -> 377 MB), which this trim gives back in 1-4 ms. (The app soak's
    steady RSS rise was something else: Textual objects kept alive, see tui/footer.py and
    tui/stylescache.py.)"""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class LocalHandle:
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    @classmethod
    def create(cls, config: Config, resume: str | None = None,
               resume_overrides: dict[str, Any] | None = None) -> LocalHandle:
        """Build the trainer (may raise ConfigError / CheckpointError: one-line messages)."""
        return cls(Trainer(config, resume=resume, resume_overrides=resume_overrides))

    # --- facts about the run ---
    @property
    def config(self) -> Config:
        return self.trainer.config

    @property
    def run_dir(self) -> Path:
        return self.trainer.run_dir

    @property
    def state(self) -> State:
        return self.trainer.state

    def snapshot(self) -> Snapshot:
        return self.trainer.snapshot()

    def history(self) -> list[dict[str, Any]]:
        """The diagnostics records already written for this run (a resumed run's past), oldest first."""
        return read_jsonl(self.run_dir / "metrics.jsonl")

    # --- lifecycle and commands ---
    def subscribe(self, callback: Callable[[Snapshot | Event], None]) -> None:
        """callback runs on the training thread: it must only hand the item over (post_message)."""
        self.trainer.subscribe(callback)

    def start(self, paused: bool = False) -> None:
        self.trainer.start(paused=paused)

    def pause(self) -> bool:
        return self.trainer.pause()

    def resume(self) -> bool:
        return self.trainer.resume()

    def stop(self) -> Future:
        return self.trainer.stop()

    def close(self, timeout: float = 5.0) -> None:
        self.trainer.close(timeout)

    def set_hparams(self, **values: float) -> Future:
        """Raises ConfigError at once for a bad value; otherwise applied at the next update."""
        return self.trainer.set_hparams(**values)

    def save_now(self) -> Future:
        return self.trainer.save_now()

    def weights(self) -> Future:
        """A CPU copy of the current weights, made between updates (for the live game view)."""
        return self.trainer.weights()

    def load(self, path: str | Path) -> Future:
        return self.trainer.load(path)

    # --- checkpoints ---
    def list_checkpoints(self) -> list[ckpt.CheckpointInfo]:
        return ckpt.list_checkpoints(self.run_dir)

    def delete_checkpoint(self, path: str | Path) -> None:
        """Delete a checkpoint file (and its evaluation; best.pt with the file it was made from).
        `latest` cannot go while training."""
        path = Path(path)
        if path.parent.resolve() != self.run_dir.resolve() or path.suffix != ".pt":
            raise ConfigError(f"{path} is not a checkpoint of this run")
        index = ckpt.read_index(self.run_dir)
        is_latest = path.name == "latest.pt" or index.get("latest") == path.name
        if is_latest and self.state in (State.RUNNING, State.PAUSED):
            raise ConfigError("the latest checkpoint cannot be deleted while training")
        ckpt.delete(path)

    # --- evaluation (call from a worker thread) ---
    def evaluate(self, source: str | Path | None, episodes: int = 100, envs: int = EVAL_ENVS, greedy: bool = False,
                 seed: int = EVAL_SEED, progress: Callable[[EvalProgress], None] | None = None,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
        """Evaluate the current weights (source None) or a checkpoint file. A checkpoint's
        result is saved beside it (and may move best.pt)."""
        if source is None:
            weights = self.trainer.weights().result(timeout=60)
            label, step = "current weights", self.snapshot().step
        else:
            payload = ckpt.load(source)
            ckpt.check_compatible(payload, self.config.env.id, self.trainer.envs.n_actions,
                                  self.trainer.envs.observation_shape, source)
            weights, label, step = payload["model"], Path(source).name, payload.get("step")
        try:
            result = evaluate(self.config, weights, episodes=episodes, num_envs=envs, greedy=greedy, seed=seed,
                              progress=progress, cancel=cancel)
        finally:
            weights = payload = None  # free the checkpoint's tensors before the trim
            release_free_memory()
        result.update(source=label, step=step)
        if source is not None:
            saved = ckpt.record_evaluation(Path(source), result)  # None: the file was rotated out meanwhile
            result["saved_to"] = str(saved) if saved else None
        return result
