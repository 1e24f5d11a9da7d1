"""The live game for the app's game view: one game played beside training, in colour.

ale-py's vector env gives the trainer only 84×84 grayscale stacks; neither
`AtariVectorEnv` nor `ALEVectorInterface` can hand out a colour screen of one of its envs.
And training env 0 runs at ~60–80 agent steps/s, so a 10 frames/s view of it would skip
about 25 emulator frames between pictures: a slideshow, not a game one can follow.
So the live view plays its own game (`record.AtariGame`, preprocessed exactly like a
training env) with a copy of the current weights, at the console's speed, in colour, and
only while the view is shown: the thread blocks on `FrameSource.wait_watched()` otherwise,
and the training loop has no code for it at all. The weights are copied by the trainer's
own `weights()` command (a few ms on the training thread) at each new game and every
`refresh_s` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import torch

from a2c_tui.config import Config
from a2c_tui.learn.envs import atari_rom
from a2c_tui.learn.frames import FrameSource
from a2c_tui.learn.model import ActorCritic, act
from a2c_tui.run.record import FRAME_RATE, SCREEN_ASPECT, AtariGame

# () -> (state_dict on the CPU, words naming them, e.g. "step 1,200,000"); called on the player's thread
WeightsFn = Callable[[], tuple[dict[str, torch.Tensor], str]]


class LivePlayer:
    """Plays games with the freshest weights while `source` is watched; idle otherwise."""

    def __init__(self, config: Config, weights: WeightsFn, source: FrameSource, *, speed: float = 1.0,
                 refresh_s: float = 30.0, greedy: bool = False, seed: int | None = None):
        if atari_rom(config.env.id) is None:
            raise ValueError(f"{config.env.id!r} is not an Atari game")
        self.env = config.env
        self.weights = weights
        self.source = source
        self.step_period = AtariGame.FRAMESKIP / (FRAME_RATE * speed)
        self.refresh_s = refresh_s
        self.greedy = greedy
        self.seed = seed
        self.game: AtariGame | None = None
        self.model: ActorCritic | None = None
        self.weights_label: str | None = None
        self.steps_played = 0
        self._loaded_at = -float("inf")
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-game", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _refresh_weights(self) -> bool:
        try:
            state, label = self.weights()
            self.model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - shown in the view, retried; never kills the thread
            self.source.offer(np.zeros((210, 160, 3), np.uint8),
                              f"{self.env.id}: no weights yet ({type(e).__name__}: {str(e)[:80]}); retrying",
                              aspect=SCREEN_ASPECT)
            return False
        self.weights_label = label
        self._loaded_at = time.monotonic()
        return True

    def _build(self) -> None:
        """The game and the network: on this thread at the first watch, not in __init__ (which
        may run on the UI thread) nor for a view that is never opened."""
        env = self.env
        self.game = AtariGame(env.id, seed=self.seed or 0, noop_max=env.noop_max,
                              max_episode_frames=env.max_episode_frames)
        # init=False: the weights are loaded before the first move (no orthogonal init's QR)
        self.model = ActorCritic(self.game.observation_shape, self.game.n_actions, init=False).eval()

    def _run(self) -> None:
        try:
            self._play()
        finally:
            self.game = self.model = None  # the emulator goes with the thread, not at exit (a nanobind "leak")

    def _play(self) -> None:
        rng = np.random.default_rng(self.seed)
        obs = None
        games = score = 0
        deadline = time.monotonic()
        while not self._closing.is_set():
            if not self.source.wait_watched(timeout=0.5):
                continue
            if self.game is None:
                self._build()
            if obs is None or time.monotonic() - self._loaded_at >= self.refresh_s:
                if not self._refresh_weights():
                    self._closing.wait(2.0)
                    continue
            if obs is None:
                obs, games, score = self.game.reset(rng), games + 1, 0
            action = int(act(self.model, torch.as_tensor(obs[None]), greedy=self.greedy).actions[0])
            step = self.game.step(action)
            self.steps_played += 1
            score += step.reward
            obs = None if step.game_over else step.obs
            if self.source.watching:
                self.source.offer(self.game.screen(), f"{self.env.id} live · {self.weights_label} · game {games} · "
                                                      f"score {score:.0f} · lives {step.lives}", aspect=SCREEN_ASPECT)
            # console speed; after a pause (unwatched, slow weights) start afresh instead of catching up
            deadline = max(deadline + self.step_period, time.monotonic() - 0.5)
            self._closing.wait(max(0.0, deadline - time.monotonic()))
