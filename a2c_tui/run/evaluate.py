"""Evaluation: N whole games (all lives, raw score) in parallel envs, without bias.

Counting "the first N games to finish" over parallel envs favours short, low-scoring
games: whether a game is counted depends on its own length. Here the first N games to
*start* are counted, each whatever its length: whether a game counts is decided before it
is played, so the N scores are an unbiased sample. An env whose game ends starts the next
numbered game while fewer than N have started, so all envs stay busy and the run ends
with at most one game's tail (a fixed share per env would wait for the unluckiest env).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from a2c_tui.config import EVAL_ENVS, EVAL_SEED, Config, ConfigError
from a2c_tui.learn.envs import make_envs
from a2c_tui.learn.model import ActorCritic, choose_actions, resolve_precision
from a2c_tui.run import memory


MAX_ENVS = 1024  # env.num_envs' limit: ALE's vector env is not made for more


class Cancelled(Exception):
    """The evaluation was cancelled before it finished."""


@dataclass
class EvalProgress:
    done: int
    total: int
    score: float  # the game that just finished
    length: int


def summarize(scores: list[float], lengths: list[int]) -> dict[str, Any]:
    values = np.asarray(scores, dtype=np.float64)
    return {
        "episodes": len(scores),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean_length": float(np.mean(lengths)),
        "scores": [float(s) for s in scores],
        "lengths": [int(n) for n in lengths],
    }


def evaluate(config: Config, weights: dict[str, torch.Tensor], episodes: int = 100, num_envs: int = EVAL_ENVS,
             greedy: bool = False, seed: int = EVAL_SEED, device: str | torch.device = "cpu",
             progress: Callable[[EvalProgress], None] | None = None,
             cancel: threading.Event | None = None, num_threads: int | None = None) -> dict[str, Any]:
    """Play `episodes` whole games with the given weights; returns summarize(...) plus settings.

    Games are capped by env.max_episode_frames (108,000 frames = 30 minutes of play).
    Raises Cancelled if `cancel` is set. `num_threads`: ALE's threads (None: env.num_threads).
    """
    if episodes < 1 or num_envs < 1:
        raise ValueError("episodes and envs must be >= 1")
    num_envs = min(num_envs, episodes)
    if num_envs > MAX_ENVS:
        raise ConfigError(f"an evaluation on {num_envs:,} envs is not allowed: at most {MAX_ENVS} (as env.num_envs)")
    env = config.env
    memory.check_evaluation(env.id, num_envs)
    threads = env.num_threads if num_threads is None else num_threads
    envs = make_envs(env.id, num_envs, seed=seed, num_threads=threads, noop_max=env.noop_max,
                     max_episode_frames=env.max_episode_frames, clip_rewards=False, life_loss=False)
    try:
        model = ActorCritic.from_weights(envs.observation_shape, envs.n_actions, weights,
                                         bf16=resolve_precision(config.run.precision, torch.device(device),
                                                                images=len(envs.observation_shape) == 3) == "bf16")
        model.to(device).eval()
        generator = torch.Generator(device=device).manual_seed(seed)  # same seed, same games
        counted = np.ones(num_envs, dtype=bool)  # is the game each env is playing one of the N?
        started = num_envs
        scores: list[float] = []
        lengths: list[int] = []
        obs = envs.reset()
        while len(scores) < episodes:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"evaluation cancelled after {len(scores)} of {episodes} games")
            # Only envs playing a counted game need the network; the others (the run's tail)
            # play no-ops until the counted games are over.
            rows = np.flatnonzero(counted)
            actions = np.zeros(num_envs, dtype=np.int64)
            if rows.size:
                batch = obs if rows.size == num_envs else obs[rows]
                actions[rows] = choose_actions(model, torch.as_tensor(batch, device=device), greedy, generator)
            step = envs.step(actions)
            obs = step.obs
            for i, score, length in step.finished:
                if counted[i]:
                    scores.append(score)
                    lengths.append(length)
                    if progress is not None:
                        progress(EvalProgress(len(scores), episodes, score, length))
                # the env has already started its next game (autoreset): does that one count?
                counted[i] = started < episodes
                started += counted[i]
    finally:
        envs.close()
    result = summarize(scores, lengths)
    result.update(greedy=greedy, envs=num_envs, env_id=env.id, seed=seed)
    return result



PERIODIC_ENVS = 4  # envs of an evaluation beside training: few, on one ALE thread, so training keeps the cores


@dataclass
class PeriodicJob:
    """One evaluation beside training, of the run's state at `step`."""
    step: int
    updates: int
    payload: dict[str, Any]  # a checkpoint's payload of that state: saved if the evaluation makes it the best
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # how long it took
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled: bool = False


class PeriodicEvaluation:
    """Evaluations of snapshots of the training weights every `run.eval_every` steps, as SB3's
    EvalCallback, but in a thread beside training instead of stopping it: at most one at a
    time (a due one is skipped while the previous runs). `done(job)` is called on the
    evaluation's thread when it ends, finished, failed or cancelled."""

    def __init__(self, config: Config, step: int, done: Callable[[PeriodicJob], None],
                 run: Callable[..., dict[str, Any]] = evaluate):
        self.config = config
        self.every, self.episodes = config.run.eval_every, config.run.eval_episodes
        self.done = done
        self._run = run
        self.job: PeriodicJob | None = None  # the one in flight
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.reset(step)

    def reset(self, step: int) -> None:
        """The next evaluation is due at the first multiple of eval_every after `step`."""
        self.next_step = (step // self.every + 1) * self.every

    def due(self, step: int) -> bool:
        return step >= self.next_step

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, step: int, updates: int, payload: dict[str, Any]) -> PeriodicJob:
        """Evaluate `payload`'s weights in a thread (check `busy` first)."""
        assert not self.busy, "one evaluation at a time"
        self.reset(step)
        job = self.job = PeriodicJob(step, updates, payload)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._evaluate, args=(job, self._cancel), name="periodic-evaluation",
                                        daemon=True)
        self._thread.start()
        return job

    def _evaluate(self, job: PeriodicJob, cancel: threading.Event) -> None:
        try:
            job.result = self._run(self.config, job.payload["model"], episodes=self.episodes,
                                   num_envs=PERIODIC_ENVS, num_threads=1, cancel=cancel)
        except Cancelled:
            job.cancelled = True
        except Exception as e:  # noqa: BLE001 - told to the user by done(); training goes on
            job.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        job.seconds = time.monotonic() - job.started
        if job.result is None:
            job.payload = {}  # only a finished evaluation's state may be saved
        self.done(job)

    def cancel(self, timeout: float = 10.0) -> None:
        """End the evaluation in flight (at its next step) and wait until its envs are closed."""
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
