"""Record whole games played by a checkpoint's policy to MP4, at the Atari's own
resolution (160×210), colour and frame rate (60 frames/s).

The policy was trained on ale-py's C++ vector env, which hands out only the preprocessed
84×84 grayscale stack, never the colour screen. `AtariGame` therefore plays one game on
`ale_py.ALEInterface` directly and redoes that preprocessing step for step: FIRE on reset
then noop starts (the same count distribution), frameskip 4 with the max over the last two
grayscale frames, ALE's grayscale palette, OpenCV's INTER_AREA resize to 84×84 (the same
float32 taps and summation order, so the result is bit-identical), 4 frames stacked
oldest first with zeros after a reset. `tests/test_record.py` checks it frame by frame
against `AtariVectorEnv`. Every emulator frame in between is available in colour.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from a2c_tui import files
from a2c_tui.config import Config, ConfigError
from a2c_tui.learn.envs import atari_rom
from a2c_tui.learn.frames import FrameSource
from a2c_tui.learn.model import ActorCritic, act
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run.evaluate import Cancelled

FRAME_RATE = 60  # emulator frames per second of an NTSC Atari 2600
SCREEN_ASPECT = 4 / 3  # the 160×210 screen was shown on a 4:3 television


def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and float32 weights of OpenCV's INTER_AREA for a non-integer
    downscale (computeResizeAreaTab): row d of the result = sum_j weight[d, j] * x[index[d, j]]."""
    scale = 1.0 / (target / source)
    rows = []
    for d in range(target):
        start, stop = d * scale, d * scale + scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), min(math.floor(stop), source - 1)
        first = min(first, last)
        taps = []
        if first - start > 1e-3:
            taps.append((first - 1, (first - start) / cell))
        taps += [(s, 1.0 / cell) for s in range(first, last)]
        if stop - last > 1e-3:
            taps.append((last, min(min(stop - last, 1.0), cell) / cell))
        rows.append(taps)
    width = max(len(t) for t in rows)
    index = np.zeros((target, width), np.int64)
    weight = np.zeros((target, width), np.float32)  # padding taps weigh 0: adding +0.0 changes nothing
    for d, taps in enumerate(rows):
        for j, (s, w) in enumerate(taps):
            index[d, j], weight[d, j] = s, np.float32(w)
    return index, weight


class AreaResize:
    """uint8 (H, W) -> (h, w) exactly as cv2.resize(..., INTER_AREA) computes it."""

    def __init__(self, source_hw: tuple[int, int], target_hw: tuple[int, int]):
        self.rows = _area_taps(source_hw[0], target_hw[0])
        self.cols = _area_taps(source_hw[1], target_hw[1])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        pixels = image.astype(np.float32)
        col_index, col_weight = self.cols
        across = pixels[:, col_index[:, 0]] * col_weight[:, 0]
        for j in range(1, col_index.shape[1]):
            across += pixels[:, col_index[:, j]] * col_weight[:, j]
        row_index, row_weight = self.rows
        out = row_weight[:, 0, None] * across[row_index[:, 0]]
        for j in range(1, row_index.shape[1]):
            out += row_weight[:, j, None] * across[row_index[:, j]]
        return np.rint(out).clip(0, 255).astype(np.uint8)


@dataclass
class GameStep:
    obs: np.ndarray  # uint8 (4, 84, 84), oldest frame first
    reward: float  # raw
    lives: int
    game_over: bool  # the game ended (no lives left) or hit the frame limit
    frames: int  # emulator frames since the reset


class AtariGame:
    """One Atari game, preprocessed for the policy like one env of `envs.AtariEnvs`,
    with the colour screen of every emulator frame on the side."""

    FRAMESKIP = 4
    STACK = 4
    SIZE = 84

    def __init__(self, env_id: str, *, seed: int = 0, noop_max: int = 30, max_episode_frames: int = 108_000):
        import ale_py
        from ale_py import roms

        rom = atari_rom(env_id)
        if rom is None:
            raise ValueError(f"{env_id!r} is not an Atari game")
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setInt("random_seed", seed)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.loadROM(str(roms.get_rom_path(rom)))
        self.actions = self.ale.getMinimalActionSet()
        self.n_actions = len(self.actions)
        self.has_fire = ale_py.Action.FIRE in self.actions
        self._fire, self._noop = ale_py.Action.FIRE, ale_py.Action.NOOP
        self.noop_max = noop_max
        self.max_episode_frames = max_episode_frames
        height, width = self.ale.getScreenDims()
        self.observation_shape = (self.STACK, self.SIZE, self.SIZE)
        self._resize = AreaResize((height, width), (self.SIZE, self.SIZE))
        self._gray = [np.zeros((height, width), np.uint8) for _ in range(2)]  # the last two frames, for the max
        self._rgb = np.zeros((height, width, 3), np.uint8)
        self._stack = np.zeros(self.observation_shape, np.uint8)
        self.frames = 0

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """A new game: FIRE, then the same random number of noops as the vector env
        (uniform over 0..noop_max-1, less the FIRE frame)."""
        self.ale.reset_game()
        if self.has_fire:
            self.ale.act(self._fire)
        for _ in range(int(rng.integers(0, max(self.noop_max, 1))) - int(self.has_fire)):
            self.ale.act(self._noop)
            if self.ale.game_over(with_truncation=False):
                self.ale.reset_game()
        self.frames = 0
        self.ale.getScreenGrayscale(self._gray[0])
        self._gray[1].fill(0)
        self._stack.fill(0)
        self._push()
        return self._stack.copy()

    def _push(self) -> None:
        np.maximum(self._gray[0], self._gray[1], out=self._gray[0])
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._resize(self._gray[0])

    def screen(self) -> np.ndarray:
        """The colour screen now: uint8 (210, 160, 3), a buffer reused by the next call."""
        self.ale.getScreenRGB(self._rgb)
        return self._rgb

    def step(self, action: int, on_frame: Callable[[np.ndarray], None] | None = None) -> GameStep:
        """One agent step (up to 4 emulator frames); on_frame(screen) after each frame."""
        reward = 0.0
        over = False
        for skip in range(self.FRAMESKIP, 0, -1):
            reward += self.ale.act(self.actions[action])
            self.frames += 1
            if on_frame is not None:
                on_frame(self.screen())
            over = self.ale.game_over(with_truncation=False) or self.frames >= self.max_episode_frames
            if over:
                break  # as the vector env: the frames of an ending step are not captured
            if skip <= 2:
                self.ale.getScreenGrayscale(self._gray[skip - 1])
        self._push()
        return GameStep(self._stack.copy(), reward, self.ale.lives(), over, self.frames)


class Mp4Writer:
    """H.264 MP4 from RGB frames through the ffmpeg binary that imageio-ffmpeg ships.
    Written under a temporary name and renamed when complete; removed if abandoned."""

    def __init__(self, path: Path, width: int, height: int, fps: int = FRAME_RATE, crf: int = 18):
        import imageio_ffmpeg

        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.frames = 0
        # macro_block_size 2 keeps 160×210 as it is (H.264 with yuv420p needs even sizes only)
        self._writer = imageio_ffmpeg.write_frames(
            str(self.partial), (width, height), fps=fps, codec="libx264", quality=None,
            macro_block_size=2, ffmpeg_log_level="error", output_params=["-crf", str(crf), "-preset", "fast"])
        self._writer.send(None)  # start ffmpeg

    def write(self, frame: np.ndarray) -> None:
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def finish(self) -> Path:
        self._writer.close()
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        try:
            self._writer.close()
        finally:
            try:
                self.partial.unlink()
            except FileNotFoundError:
                pass


@dataclass(frozen=True)
class RecordedGame:
    game: int  # 1-based
    path: Path
    score: float  # raw, all lives
    length: int  # agent steps
    frames: int  # video frames (emulator frames + the start frame)

    @property
    def seconds(self) -> float:
        return self.frames / FRAME_RATE


@dataclass(frozen=True)
class RecordProgress:
    game: int  # 1-based, the game being played
    games: int
    steps: int  # agent steps into this game
    score: float  # raw score so far in this game
    finished: RecordedGame | None = None  # set once, when this game's video is complete


def record(config: Config, weights: dict[str, torch.Tensor], out_dir: str | Path, games: int = 5,
           greedy: bool = False, seed: int = 12345, device: str | torch.device = "cpu", name: str = "game",
           progress: Callable[[RecordProgress], None] | None = None, cancel: threading.Event | None = None,
           frames: FrameSource | None = None) -> list[RecordedGame]:
    """Play `games` whole games (all lives, raw score, noop starts; sampled actions unless
    greedy) and write <out_dir>/<name>-NN.mp4 for each. Returns one RecordedGame per video.

    progress() runs on this thread at most 4 times a second, and once more as each video is
    complete. With `cancel` set, the game in progress is dropped (its partial file removed)
    and Cancelled is raised. `frames` (a FrameSource) is offered the screen
    after every agent step while someone watches it.

    Sampled actions draw from torch's global generator: seed it for repeatable videos.
    """
    if games < 1:
        raise ValueError("games must be >= 1")
    env = config.env
    game = AtariGame(env.id, seed=seed, noop_max=env.noop_max, max_episode_frames=env.max_episode_frames)
    model = ActorCritic.from_weights(game.observation_shape, game.n_actions, weights)
    model.to(device).eval()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"videos directory {str(out_dir)!r} cannot be made ({e.strerror or e})") from None
    files.check_writable(out_dir)
    rng = np.random.default_rng(seed)
    height, width = game.screen().shape[:2]
    recorded: list[RecordedGame] = []
    for number in range(1, games + 1):
        video = Mp4Writer(out_dir / f"{name}-{number:02d}.mp4", width, height)
        try:
            obs = game.reset(rng)
            video.write(game.screen())
            score, steps, last_report = 0.0, 0, time.monotonic()
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"recording cancelled after {len(recorded)} of {games} games")
                action = int(act(model, torch.as_tensor(obs[None], device=device), greedy=greedy).actions[0])
                step = game.step(action, on_frame=video.write)
                obs, score, steps = step.obs, score + step.reward, steps + 1
                if frames is not None and frames.watching:
                    frames.offer(game.screen(), f"recording game {number}/{games}  score {score:.0f}  "
                                                f"lives {step.lives}", aspect=SCREEN_ASPECT)
                if step.game_over:
                    break
                if progress is not None and time.monotonic() - last_report >= 0.25:
                    last_report = time.monotonic()
                    progress(RecordProgress(number, games, steps, score))
            path = video.finish()
        except BaseException:
            video.abandon()
            raise
        done = RecordedGame(number, path, score, steps, video.frames)
        recorded.append(done)
        if progress is not None:
            progress(RecordProgress(number, games, steps, score, finished=done))
    return recorded


def record_checkpoint(checkpoint: str | Path, out_dir: str | Path, games: int = 5, greedy: bool = False,
                      seed: int = 12345, device: str | torch.device = "cpu",
                      progress: Callable[[RecordProgress], None] | None = None,
                      cancel: threading.Event | None = None, frames: FrameSource | None = None) -> list[RecordedGame]:
    """record() with a checkpoint file or run directory (latest.pt); the videos are named
    <game>-<checkpoint>-seed<N>-NN.mp4. A checkpoint that cannot be used raises CheckpointError."""
    from a2c_tui.run.trainer import config_from_payload, resolve_resume

    _, path = resolve_resume(checkpoint)
    payload = ckpt.load(path)
    config = config_from_payload(payload, path)
    rom = atari_rom(config.env.id)
    if rom is None:
        raise ckpt.CheckpointError(f"{str(path)!r} plays {config.env.id}: videos are made of Atari games only")
    probe = AtariGame(config.env.id)
    ckpt.check_compatible(payload, config.env.id, probe.n_actions, probe.observation_shape, path)
    return record(config, payload["model"], out_dir, games=games, greedy=greedy, seed=seed, device=device,
                  name=f"{rom}-{ckpt.resolve(path).stem}-seed{seed}", progress=progress, cancel=cancel, frames=frames)
