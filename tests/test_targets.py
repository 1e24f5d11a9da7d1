"""n-step value targets and GAE(lambda) against hand-worked numbers, and the truncation path
through Trainer.collect with a scripted env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2c_tui.learn.rollout import value_targets
from a2c_tui.run.trainer import Trainer
from conftest import ScriptedEnvs, ValueReadingModel, load_config


def column(*xs: float) -> torch.Tensor:
    """A (T, 1) rollout column."""
    return torch.tensor(xs, dtype=torch.float32)[:, None]


def targets_of(rewards, dones, values, last, gamma, lam=1.0):
    targets, advantages = value_targets(column(*rewards), column(*dones), column(*values),
                                        torch.tensor([last], dtype=torch.float32), gamma, lam)
    return targets[:, 0].tolist(), advantages[:, 0].tolist()


def test_nstep_targets_bootstrap_from_last_values():
    # gamma 0.9, rewards 1, 2, 3, no done, v(s_T) = 10:
    #   t=2: 3 + 0.9 * 10   = 12
    #   t=1: 2 + 0.9 * 12   = 12.8
    #   t=0: 1 + 0.9 * 12.8 = 12.52
    targets, advantages = targets_of([1, 2, 3], [0, 0, 0], [0.5, 1.5, -2.0], 10.0, 0.9)
    assert targets == pytest.approx([12.52, 12.8, 12.0], abs=1e-5)
    # A = target - v(s_t)
    assert advantages == pytest.approx([12.52 - 0.5, 12.8 - 1.5, 12.0 + 2.0], abs=1e-5)


def test_done_mid_rollout_cuts_the_bootstrap():
    # done after step 1: the return from t=1 is only r_1; t=0 sees r_0 + gamma * r_1.
    #   t=2: 3 + 0.9 * 10  = 12
    #   t=1: 2             = 2
    #   t=0: 1 + 0.9 * 2   = 2.8
    targets, _ = targets_of([1, 2, 3], [0, 1, 0], [5.0, 5.0, 5.0], 10.0, 0.9)
    assert targets == pytest.approx([2.8, 2.0, 12.0], abs=1e-5)


def test_done_at_last_step_ignores_last_values():
    # done after the last step: v(s_T) belongs to the next episode and must not leak in.
    #   t=2: 3
    #   t=1: 2 + 0.9 * 3   = 4.7
    #   t=0: 1 + 0.9 * 4.7 = 5.23
    targets, _ = targets_of([1, 2, 3], [0, 0, 1], [0.0, 0.0, 0.0], 1000.0, 0.9)
    assert targets == pytest.approx([5.23, 4.7, 3.0], abs=1e-4)


def test_envs_are_independent_columns():
    # The three cases above side by side in one (T=3, N=3) rollout give the same numbers.
    rewards = torch.tensor([[1, 1, 1], [2, 2, 2], [3, 3, 3]], dtype=torch.float32)
    dones = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    values = torch.zeros(3, 3)
    last = torch.tensor([10.0, 10.0, 1000.0])
    targets, _ = value_targets(rewards, dones, values, last, 0.9, 1.0)
    expected = torch.tensor([[12.52, 2.8, 5.23], [12.8, 2.0, 4.7], [12.0, 12.0, 3.0]])
    assert torch.allclose(targets, expected, atol=1e-4)


def test_gae_with_lambda_half_by_hand():
    # gamma 0.5, lambda 0.5, rewards 1, 1, v = 2, 4, v(s_T) = 8:
    #   delta_1 = 1 + 0.5 * 8 - 4 = 1          A_1 = 1
    #   delta_0 = 1 + 0.5 * 4 - 2 = 1          A_0 = 1 + 0.5 * 0.5 * 1 = 1.25
    #   targets = A + v = 3.25, 5
    targets, advantages = targets_of([1, 1], [0, 0], [2, 4], 8.0, 0.5, 0.5)
    assert advantages == pytest.approx([1.25, 1.0])
    assert targets == pytest.approx([3.25, 5.0])


def random_rollout(seed: int, steps: int = 7, envs: int = 4):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=g)
    dones = (torch.rand(steps, envs, generator=g) < 0.3).float()
    values = torch.randn(steps, envs, generator=g)
    last = torch.randn(envs, generator=g)
    return rewards, dones, values, last


def nstep_reference(rewards, dones, last, gamma):
    """v^(s_t) = sum_k gamma^k r_{t+k} up to and including the first done, + gamma^(T-t) v(s_T) if none."""
    steps, envs = rewards.shape
    out = np.zeros((steps, envs))
    for i in range(envs):
        for t in range(steps):
            total, discount = 0.0, 1.0
            for k in range(t, steps):
                total += discount * float(rewards[k, i])
                discount *= gamma
                if dones[k, i]:
                    break
            else:
                total += discount * float(last[i])
            out[t, i] = total
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_is_the_nstep_return(seed):
    rewards, dones, values, last = random_rollout(seed)
    targets, advantages = value_targets(rewards, dones, values, last, 0.97, 1.0)
    expected = nstep_reference(rewards, dones, last, 0.97)
    assert np.allclose(targets.numpy(), expected, atol=1e-5)
    assert np.allclose(advantages.numpy(), expected - values.numpy(), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gae_lambda_zero_is_one_step_td(seed):
    rewards, dones, values, last = random_rollout(seed)
    targets, _ = value_targets(rewards, dones, values, last, 0.9, 0.0)
    next_values = torch.cat([values[1:], last[None]])
    expected = rewards + 0.9 * (1 - dones) * next_values
    assert torch.allclose(targets, expected, atol=1e-6)


def test_truncation_bootstraps_from_final_obs_in_collect(tmp_path):
    """A time-limit end is not a death: collect adds gamma * v(final_obs) to that step's
    reward and cuts the bootstrap, so the target is r + gamma * v(final_obs)."""
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "algo.n_steps=4", "algo.gamma=0.5",
                         "algo.gae_lambda=1.0")
    trainer = Trainer(config, tensorboard=False)
    trainer.envs.close()

    def obs(*values):  # the scripted model reads v(s) off obs[0]
        return [[v, 0.0, 0.0, 0.0] for v in values]

    # env 0: a time limit after step 1 (final obs worth 8, the new start worth 3);
    # env 1: a lost life after the last step (the next life's start is worth 100: must be ignored).
    script = [
        {"obs": obs(2, 6), "rewards": [1, 0], "dones": [0, 0]},
        {"obs": obs(3, 5), "rewards": [1, 2], "dones": [1, 0], "truncated": [1, 0],
         "final_obs": obs(8, 0), "finished": [(0, 57.0, 2)]},
        {"obs": obs(4, 9), "rewards": [1, 0], "dones": [0, 0]},
        {"obs": obs(5, 100), "rewards": [1, 4], "dones": [0, 1]},
    ]
    trainer.envs = ScriptedEnvs(obs(1, 7), script)
    trainer.model = ValueReadingModel()
    trainer.obs = trainer.envs.reset()
    try:
        trainer.collect()
    finally:
        trainer.metrics.close()

    rollout = trainer.rollout
    # the truncated step's reward is 1 + 0.5 * v(final_obs) = 1 + 4 = 5; the rest are untouched
    assert rollout.rewards.tolist() == [[1, 0], [5, 2], [1, 0], [1, 4]]
    assert rollout.dones.tolist() == [[0, 0], [1, 0], [0, 0], [0, 1]]
    assert rollout.values.tolist() == [[1, 7], [2, 6], [3, 5], [4, 9]]
    assert trainer.last_values.tolist() == [5, 100]
    assert trainer.scores.games == 1 and trainer.scores.mean_score() == 57.0

    targets, _ = value_targets(rollout.rewards, rollout.dones, rollout.values, trainer.last_values, 0.5, 1.0)
    # env 0: t3 = 1 + .5*5 = 3.5; t2 = 1 + .5*3.5 = 2.75; t1 = 1 + .5*8 = 5 (cut); t0 = 1 + .5*5 = 3.5
    # env 1: t3 = 4 (cut);        t2 = 0 + .5*4 = 2;      t1 = 2 + .5*2 = 3;        t0 = 0 + .5*3 = 1.5
    assert targets[:, 0].tolist() == pytest.approx([3.5, 5.0, 2.75, 3.5])
    assert targets[:, 1].tolist() == pytest.approx([1.5, 3.0, 2.0, 4.0])


def test_image_rollout_is_stored_as_the_env_gives_it_and_kept_activations_channels_last():
    """Frames are copied in as the env gives them (C, H, W; no transposing copy), and the
    update reads all rows without a copy; the convolutions' kept outputs are channels-last, the
    layout the model's convolutions produce."""
    from a2c_tui.learn.rollout import Rollout

    rollout = Rollout(5, 3, (4, 84, 84), torch.uint8, torch.device("cpu"), ((32, 20, 20), (64, 9, 9)))
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    rollout.obs[2].copy_(frames)
    flat = rollout.obs.reshape(15, 4, 84, 84)
    assert flat.data_ptr() == rollout.obs.data_ptr() and flat.is_contiguous()
    assert torch.equal(flat[6:9], frames)
    assert [tuple(k.shape) for k in rollout.kept] == [(5, 3, 32, 20, 20), (5, 3, 64, 9, 9)]
    for kept in rollout.kept:
        assert kept[1].is_contiguous(memory_format=torch.channels_last)
        flat = kept.reshape(15, *kept.shape[2:])
        assert flat.data_ptr() == kept.data_ptr() and flat.is_contiguous(memory_format=torch.channels_last)
    vectors = Rollout(5, 3, (4,), torch.float32, torch.device("cpu"))
    assert vectors.obs.is_contiguous()
