"""Raw whole-game scores across lives: a scripted ale-py vector env fed through AtariEnvs.step,
the real SpaceInvaders env, and the gymnasium path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from a2c_tui.learn.envs import AtariEnvs, GameTracker, GymEnvs, check_env_id, make_envs

OBS_SHAPE = (4, 84, 84)


class FakeAtariVectorEnv:
    """Speaks like ale_py's AtariVectorEnv in SAME_STEP autoreset with life_loss_info:
    terminated on every lost life, and at game over the returned obs/info already belong
    to the new game (episode_frame_number restarts). Each scripted row is
    (raw rewards, terminated, truncated, episode_frame_number) for all envs."""

    def __init__(self, start_frames, rows):
        self.start_frames = np.asarray(start_frames, dtype=np.int32)
        self.rows = list(rows)
        self.num_envs = len(start_frames)
        self.t = 0

    def frame(self) -> np.ndarray:
        return np.full((self.num_envs, *OBS_SHAPE), self.t, dtype=np.uint8)

    def reset(self, seed=None):
        return self.frame(), {"episode_frame_number": self.start_frames.copy(),
                              "lives": np.full(self.num_envs, 3, dtype=np.int32)}

    def step(self, actions):
        rewards, terminated, truncated, frames = self.rows.pop(0)
        self.t += 1
        info = {"episode_frame_number": np.asarray(frames, dtype=np.int32),
                "lives": np.full(self.num_envs, 3, dtype=np.int32),
                "final_obs": np.full((self.num_envs, *OBS_SHAPE), 200 + self.t, dtype=np.uint8)}
        return (self.frame(), np.asarray(rewards, dtype=np.int32), np.asarray(terminated, dtype=bool),
                np.asarray(truncated, dtype=bool), info)

    def close(self):
        pass


def scripted_atari_envs(start_frames, rows, clip_rewards=True) -> AtariEnvs:
    envs = object.__new__(AtariEnvs)
    envs.num_envs = len(start_frames)
    envs.clip_rewards = clip_rewards
    envs.env = FakeAtariVectorEnv(start_frames, rows)
    envs.observation_shape = OBS_SHAPE
    envs.n_actions = 6
    envs.games = GameTracker(envs.num_envs)
    envs._seed = 0
    envs._episode_frames = np.zeros(envs.num_envs, dtype=np.int64)
    return envs


# env 0: one three-life game: lives lost after steps 3 and 5, game over after step 6
#        (frames jump back to 8 for the new game), then the new game goes on.
# env 1: a -3 (a penalty), then the 108k-frame cap truncates the game at step 2 (frames restart);
#        a game over at step 4 from a single life; a lost life and the time cap together at step 6.
SCRIPT = [
    # raw rewards   terminated       truncated        episode_frame_number
    ([5, -3],       [False, False], [False, False],  [20, 40]),
    ([0, 8],        [False, False], [False, True],   [24, 12]),    # env 1: time limit, new game
    ([10, 0],       [True, False],  [False, False],  [28, 16]),    # env 0: life lost
    ([30, 50],      [False, True],  [False, False],  [32, 4]),     # env 1: game over (frames restart)
    ([0, 0],        [True, False],  [False, False],  [36, 8]),     # env 0: life lost
    ([200, 1],      [True, True],   [False, True],   [8, 4]),      # env 0: game over; env 1: both at once
    ([15, 2],       [False, False], [False, False],  [12, 8]),
]


def test_scripted_game_scores_sum_all_lives_and_stay_raw():
    envs = scripted_atari_envs([16, 36], SCRIPT)
    envs.reset()
    steps = [envs.step(np.zeros(2, dtype=np.int64)) for _ in SCRIPT]

    finished = [(t, f) for t, s in enumerate(steps) for f in s.finished]
    # env 0: 5 + 0 + 10 + 30 + 0 + 200 = 245 over its three lives, 6 steps long
    # env 1: -3 + 8 = 5 in 2 steps (time limit); 0 + 50 = 50 in 2 steps; 0 + 1 = 1 in 2 steps
    assert finished == [(1, (1, 5.0, 2)), (3, (1, 50.0, 2)), (5, (0, 245.0, 6)), (5, (1, 1.0, 2))]

    # the learner sees sign-clipped rewards
    rewards = np.array([s.rewards for s in steps])
    assert rewards.tolist() == [[1, -1], [0, 1], [1, 0], [1, 1], [0, 0], [1, 1], [1, 1]]
    # every lost life and every game end cuts the bootstrap ...
    dones = np.array([s.dones for s in steps])
    assert dones.tolist() == [[False, False], [False, True], [True, False], [False, True], [True, False],
                              [True, True], [False, False]]
    # ... but only a time limit that is not also a death is bootstrapped from final_obs
    truncated = np.array([s.truncated for s in steps])
    assert truncated.tolist() == [[False, False], [False, True], [False, False], [False, False], [False, False],
                                  [False, False], [False, False]]
    assert steps[1].final_obs[1, 0, 0, 0] == 202  # the last frame of the cut game, not the new start
    assert steps[1].obs[1, 0, 0, 0] == 2

    # the game in progress carries on from the new start
    assert envs.games.scores.tolist() == [15.0, 2.0] and envs.games.lengths.tolist() == [1, 1]


def test_scripted_scores_without_clipping_are_the_raw_rewards():
    envs = scripted_atari_envs([16, 36], SCRIPT, clip_rewards=False)
    envs.reset()
    rewards = [envs.step(np.zeros(2, dtype=np.int64)).rewards.tolist() for _ in SCRIPT]
    assert rewards == [list(map(float, row[0])) for row in SCRIPT]


def test_space_invaders_game_over_detection_sums_all_three_lives():
    """The training env (a done on each lost life) and a whole-game env (done only at game
    over, unclipped rewards) play the same seeded actions: the games they report match,
    each training game spans exactly three life-loss dones, and each score is the sum of
    the raw rewards the whole-game env paid out between its game overs."""
    num_envs, seed = 2, 7  # a vector of two is enough: it plays until 4 whole games are over
    train = make_envs("SpaceInvaders", num_envs, seed=seed, num_threads=1, life_loss=True, clip_rewards=True)
    whole = make_envs("SpaceInvaders", num_envs, seed=seed, num_threads=1, life_loss=False, clip_rewards=False)
    assert isinstance(train, AtariEnvs) and train.n_actions == 6 and train.observation_shape == OBS_SHAPE
    rng = np.random.default_rng(0)
    try:
        obs_train, obs_whole = train.reset(), whole.reset()
        assert np.array_equal(obs_train, obs_whole)
        lives_lost = np.zeros(num_envs, dtype=int)
        raw = np.zeros(num_envs)
        raw_steps = np.zeros(num_envs, dtype=int)
        games_train, games_whole, games_by_hand = [], [], []
        for _ in range(6000):
            actions = rng.integers(0, 6, num_envs)
            a, b = train.step(actions), whole.step(actions)
            assert np.array_equal(a.obs, b.obs)  # same emulator trajectory
            assert set(np.unique(a.rewards)) <= {0.0, 1.0}  # SpaceInvaders pays only positive points
            raw += b.rewards
            raw_steps += 1
            lives_lost += a.dones
            for i, score, length in a.finished:
                assert lives_lost[i] == 3, f"env {i}: a game over after {lives_lost[i]} life-loss dones"
                lives_lost[i] = 0
                games_train.append((i, score, length))
            assert np.array_equal(b.dones, np.isin(np.arange(num_envs), [g[0] for g in b.finished]))
            for i, score, length in b.finished:
                games_whole.append((i, score, length))
                games_by_hand.append((i, float(raw[i]), int(raw_steps[i])))
                raw[i], raw_steps[i] = 0.0, 0
            if len(games_whole) >= 2 * num_envs:
                break
    finally:
        train.close()
        whole.close()
    assert len(games_whole) >= 2 * num_envs
    assert games_train == games_whole == games_by_hand
    assert all(score > 0 and length > 100 for _, score, length in games_train)
    # clipped rewards would sum to far less: points per invader are 5..30
    assert any(score >= 100 for _, score, _ in games_train)


def test_space_invaders_time_limit_is_truncation_with_the_last_frame():
    """max_episode_frames cuts the game: truncated (to be bootstrapped), a game over for the
    score, and final_obs is the cut game's last frame while obs is the new start."""
    envs = make_envs("SpaceInvaders", 2, seed=3, num_threads=1, max_episode_frames=400)
    try:
        previous = envs.reset()
        for t in range(200):
            step = envs.step(np.zeros(2, dtype=np.int64))  # NOOP: no life is lost in 400 frames
            if step.truncated.any():
                break
            previous = step.obs
    finally:
        envs.close()
    assert step.truncated.all() and step.dones.all()
    assert t + 1 == 100  # 400 frames / frameskip 4
    assert [(i, length) for i, _, length in step.finished] == [(0, 100), (1, 100)]
    # the frame stack shifts by one: the last frame's first three planes are the previous last three
    assert np.array_equal(step.final_obs[:, :3], previous[:, 1:])
    assert not np.array_equal(step.final_obs, step.obs)


def test_cartpole_scores_count_every_step_and_final_obs_is_terminal():
    envs = make_envs("CartPole-v1", 4, seed=0)
    assert isinstance(envs, GymEnvs) and envs.observation_shape == (4,) and envs.n_actions == 2
    rng = np.random.default_rng(0)
    games = []
    try:
        envs.reset()
        for _ in range(300):
            step = envs.step(rng.integers(0, 2, 4))
            for i, score, length in step.finished:
                games.append((score, length))
                x, _, angle, _ = step.final_obs[i]
                assert abs(x) > 2.4 or abs(angle) > 0.2095  # the terminal state, not the reset one
                assert abs(step.obs[i][2]) <= 0.05  # the new start
    finally:
        envs.close()
    assert len(games) >= 10
    assert all(score == length for score, length in games)  # +1 per step, raw


def test_unknown_and_unsupported_env_ids():
    assert check_env_id("SpaceInvaders") is None
    assert check_env_id("ALE/Breakout-v5") is None
    assert check_env_id("PongNoFrameskip-v4") is None
    assert check_env_id("CartPole-v1") is None
    assert "unknown game" in check_env_id("SpaceInvaderz")
    assert "Discrete" in check_env_id("Pendulum-v1")
    with pytest.raises(ValueError):
        AtariEnvs("CartPole-v1", 1)


def test_closed_atari_envs_leave_no_emulator_alive_at_exit():
    """ale-py's close() kept the ALEVectorInterface until the env object died; the app keeps
    its trainer (and a thread may keep an evaluation's envs) until the interpreter exits, and
    nanobind then printed "leaked 1 instances ... ALEVectorInterface" after the app quit."""
    code = ("import threading\n"
            "from a2c_tui.learn.envs import make_envs\n"
            "envs = make_envs('SpaceInvaders', 2, num_threads=1)\n"
            "envs.reset()\n"
            "envs.close()\n"
            "threading.Thread(target=lambda kept=envs: threading.Event().wait(), daemon=True).start()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "leaked" not in out.stderr, out.stderr
