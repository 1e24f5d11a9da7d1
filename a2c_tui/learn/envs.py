"""Vector environments for training and evaluation, with raw whole-game score tracking.

Atari runs on ale-py's C++ vector env (`AtariVectorEnv`) with DeepMind preprocessing.
Two of its options do not do what their names say (see FACTS.md): `episodic_life=True`
resets the whole game on each life loss, so the DeepMind behaviour is
`episodic_life=False, life_loss_info=True` (terminated on a life loss, the game goes on).
Autoreset is SAME_STEP: at a terminal step the returned observation already belongs to
the next start and `info["final_obs"]` holds the last one.

Every env returns `Step` records in which `dones` cut the learner's bootstrap (a lost life
counts), `truncated` marks time-limit ends that must be bootstrapped from `final_obs`,
and `finished` lists (env, score, length) of whole games (all lives, raw rewards) that ended at this step.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def atari_rom(env_id: str) -> str | None:
    """'SpaceInvaders', 'space_invaders', 'SpaceInvadersNoFrameskip-v4', 'ALE/SpaceInvaders-v5'
    -> 'space_invaders'; None if it names no ALE game."""
    from ale_py import roms

    spec = gym.registry.get(env_id)
    if spec is not None and not str(spec.entry_point).startswith("ale_py"):
        return None  # a full gymnasium id means gymnasium's env (Blackjack-v1 is not the Atari Blackjack)
    name = env_id.removeprefix("ALE/")
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    rom = _snake(name)
    return rom if rom in roms.get_all_rom_ids() else None


def is_atari(env_id: str) -> bool:
    return atari_rom(env_id) is not None


def check_env_id(env_id: str) -> str | None:
    """None if env_id names an Atari game or a gymnasium env with a vector observation;
    otherwise a one-line reason."""
    if atari_rom(env_id):
        return None
    if env_id in gym.registry:
        return _unsupported_gym_env(env_id)
    from ale_py import roms

    games = ["".join(p.title() for p in r.split("_")) for r in roms.get_all_rom_ids()]
    close = difflib.get_close_matches(env_id, games + list(gym.registry), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown game; use an Atari game name such as SpaceInvaders or Breakout, or a gymnasium id such as CartPole-v1{hint}"


def _unsupported_gym_env(env_id: str) -> str | None:
    """Make the gymnasium env once to see its spaces: the trainer handles vector
    observations with discrete actions only (a one-line reason otherwise)."""
    try:
        env = gym.make(env_id)
    except Exception as e:  # noqa: BLE001 - missing extras, bad kwargs: all end as one line
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return f"{env_id} cannot be made here ({type(e).__name__}: {first})"
    try:
        observations, actions = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(actions, gym.spaces.Discrete):
        return f"{env_id} has a {type(actions).__name__} action space; only Discrete actions are supported"
    if not (isinstance(observations, gym.spaces.Box) and len(observations.shape) == 1):
        return f"{env_id} has {observations} observations; only vector observations (or an Atari game) are supported"
    return None


@dataclass
class Step:
    obs: np.ndarray  # next observations (already the new start where an episode ended)
    rewards: np.ndarray  # float32 rewards as the learner sees them (clipped if configured)
    dones: np.ndarray  # bool: bootstrap is cut after this step (life loss, game over, truncation)
    truncated: np.ndarray  # bool: ended by a time limit; bootstrap from final_obs instead
    final_obs: np.ndarray | None  # last observations of ended episodes (rows where dones)
    finished: list[tuple[int, float, int]]  # (env index, raw score, length in agent steps) of games over here


class GameTracker:
    """Per-env raw score and length of the game in progress; whole games only."""

    def __init__(self, num_envs: int):
        self.scores = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def update(self, raw_rewards: np.ndarray, game_over: np.ndarray) -> list[tuple[int, float, int]]:
        self.scores += raw_rewards
        self.lengths += 1
        finished = []
        for i in np.flatnonzero(game_over):
            finished.append((int(i), float(self.scores[i]), int(self.lengths[i])))
            self.scores[i] = 0.0
            self.lengths[i] = 0
        return finished


class AtariEnvs:
    """ale-py vector env with DeepMind preprocessing for the learner and raw game scores."""

    def __init__(self, env_id: str, num_envs: int, *, seed: int = 0, num_threads: int = 0,
                 noop_max: int = 30, max_episode_frames: int = 108_000, clip_rewards: bool = True,
                 life_loss: bool = True):
        from ale_py.vector_env import AtariVectorEnv

        rom = atari_rom(env_id)
        if rom is None:
            raise ValueError(f"{env_id!r} is not an Atari game")
        self.num_envs = num_envs
        self.clip_rewards = clip_rewards
        self.env = AtariVectorEnv(
            rom, num_envs, num_threads=num_threads, autoreset_mode="SameStep",
            episodic_life=False, life_loss_info=life_loss, reward_clipping=False,
            noop_max=noop_max, max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=0.0, use_fire_reset=True,
        )
        self.observation_shape = self.env.single_observation_space.shape
        self.n_actions = int(self.env.single_action_space.n)
        self.games = GameTracker(num_envs)
        self._seed = seed
        self._episode_frames = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> np.ndarray:
        obs, info = self.env.reset(seed=self._seed)
        self._episode_frames = info["episode_frame_number"].astype(np.int64)
        self.games = GameTracker(self.num_envs)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        return self._step(*self.env.step(actions))

    def send(self, actions: np.ndarray) -> None:
        """Start a step: the emulators run in ALE's threads until recv()."""
        self.env.send(actions)

    def recv(self) -> Step:
        return self._step(*self.env.recv())

    def _step(self, obs: np.ndarray, raw: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
              info: dict) -> Step:
        frames = info["episode_frame_number"].astype(np.int64)
        ended = terminated | truncated
        # A new game restarts the frame counter; a lost life does not.
        game_over = truncated | (terminated & (frames < self._episode_frames))
        self._episode_frames = frames
        finished = self.games.update(raw, game_over)
        rewards = np.sign(raw) if self.clip_rewards else raw
        return Step(obs, rewards.astype(np.float32), ended, truncated & ~terminated,
                    info.get("final_obs"), finished)

    def close(self) -> None:
        # AtariVectorEnv.close() frees nothing: its ALEVectorInterface (the emulators and their
        # threads) lives as long as the env object, and one still alive at exit (the app keeps
        # its trainer to the end; a thread may hold an evaluation's envs) is reported by
        # nanobind as a leak. Dropping it here frees it now.
        self.env.close()
        self.env.ale = None


class GymEnvs:
    """gymnasium vector env (classic control), same Step interface."""

    def __init__(self, env_id: str, num_envs: int, *, seed: int = 0, clip_rewards: bool = False,
                 max_episode_frames: int | None = None, **_: object):
        self.num_envs = num_envs
        self.clip_rewards = clip_rewards
        self.env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
        self.observation_shape = self.env.single_observation_space.shape
        space = self.env.single_action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"{env_id} has a {type(space).__name__} action space; only Discrete is supported")
        self.n_actions = int(space.n)
        self.games = GameTracker(num_envs)
        self._seed = seed

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seed)
        self.games = GameTracker(self.num_envs)
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> Step:
        obs, raw, terminated, truncated, info = self.env.step(actions)
        ended = terminated | truncated
        finished = self.games.update(raw, ended)
        final_obs = None
        if ended.any():
            final_obs = np.zeros_like(obs, dtype=np.float32)
            for i in np.flatnonzero(ended):
                final_obs[i] = info["final_obs"][i]
        rewards = np.sign(raw) if self.clip_rewards else raw
        return Step(obs.astype(np.float32), rewards.astype(np.float32), ended,
                    truncated & ~terminated, final_obs, finished)

    def close(self) -> None:
        self.env.close()


class EnvGroups:
    """Atari envs as groups that step on their own (ale-py's send/recv), so that one group's
    emulators run while the network acts for another. Env i of the whole has the seed it
    would have in one AtariEnvs (seed + i); each group has its share of the threads."""

    def __init__(self, env_id: str, num_envs: int, groups: int, *, seed: int = 0, num_threads: int = 0, **options):
        sizes = [len(part) for part in np.array_split(np.arange(num_envs), groups)]
        threads = max(1, (num_threads or os.cpu_count() or 1) // groups)
        self.groups: list[AtariEnvs] = []
        self.slices: list[slice] = []
        start = 0
        try:
            for size in sizes:
                self.groups.append(AtariEnvs(env_id, size, seed=seed + start, num_threads=threads, **options))
                self.slices.append(slice(start, start + size))
                start += size
        except BaseException:
            self.close()
            raise
        self.num_envs = num_envs
        self.observation_shape = self.groups[0].observation_shape
        self.n_actions = self.groups[0].n_actions
        self._seed = seed

    def reset(self) -> np.ndarray:
        return np.concatenate([group.reset() for group in self.groups])

    def step(self, actions: np.ndarray) -> Step:
        for group, part in zip(self.groups, self.slices):
            group.send(actions[part])
        return join_steps([group.recv() for group in self.groups], self.slices)

    def close(self) -> None:
        for group in self.groups:
            group.close()


def join_steps(steps: list[Step], slices: list[slice]) -> Step:
    """The groups' Steps as one Step of the whole (env indices of the whole)."""
    obs, final_obs = np.concatenate([step.obs for step in steps]), None
    if any(step.final_obs is not None for step in steps):
        final_obs = np.zeros_like(obs)
        for step, part in zip(steps, slices):
            if step.final_obs is not None:
                final_obs[part] = step.final_obs
    return Step(obs, np.concatenate([step.rewards for step in steps]),
                np.concatenate([step.dones for step in steps]), np.concatenate([step.truncated for step in steps]),
                final_obs, [(part.start + i, score, length) for step, part in zip(steps, slices)
                            for i, score, length in step.finished])


class StepLater:
    """send/recv over envs that only step: recv() steps them with the actions sent."""

    def __init__(self, envs: AtariEnvs | GymEnvs):
        self.envs = envs
        self._actions: np.ndarray | None = None

    def send(self, actions: np.ndarray) -> None:
        self._actions = actions

    def recv(self) -> Step:
        return self.envs.step(self._actions)


def make_envs(env_id: str, num_envs: int, *, seed: int = 0, num_threads: int = 0,
              noop_max: int = 30, max_episode_frames: int = 108_000, clip_rewards: bool = True,
              life_loss: bool = True, groups: int = 1) -> AtariEnvs | GymEnvs | EnvGroups:
    """Training envs (life_loss=True) or evaluation envs (life_loss=False, whole games);
    Atari envs in `groups` groups that step on their own (EnvGroups) when groups > 1."""
    if is_atari(env_id) and groups > 1:
        return EnvGroups(env_id, num_envs, groups, seed=seed, num_threads=num_threads, noop_max=noop_max,
                         max_episode_frames=max_episode_frames, clip_rewards=clip_rewards, life_loss=life_loss)
    if is_atari(env_id):
        return AtariEnvs(env_id, num_envs, seed=seed, num_threads=num_threads, noop_max=noop_max,
                         max_episode_frames=max_episode_frames, clip_rewards=clip_rewards,
                         life_loss=life_loss)
    return GymEnvs(env_id, num_envs, seed=seed, clip_rewards=clip_rewards)
