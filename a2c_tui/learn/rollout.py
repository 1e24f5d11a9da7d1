"""Preallocated rollout storage and n-step / GAE(lambda) value targets."""

from __future__ import annotations

import torch


class Rollout:
    """n_steps x num_envs transitions. Row t holds s_t, a_t, r_t, done_t (the episode ended
    after a_t) and v(s_t) from acting time."""

    def __init__(self, n_steps: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype,
                 device: torch.device, kept_shapes: tuple[tuple[int, ...], ...] = (),
                 kept_dtype: torch.dtype = torch.float32):
        """`kept_shapes`: (C, H, W) of the activations acting keeps for the update (ActorCritic.replay)."""
        self.n_steps, self.num_envs = n_steps, num_envs
        pin = device.type == "cuda"
        # Images as the env gives them, (C, H, W): the first convolution reads them so (model.py)
        self.obs = torch.zeros((n_steps, num_envs, *obs_shape), dtype=obs_dtype, device=device)
        # (T, N, C, H, W) each, channels-last like the convolutions' outputs
        self.kept = [_channels_last((n_steps, num_envs), shape, kept_dtype, device) for shape in kept_shapes]
        # Rewards and dones arrive from the env as numpy; keep them on the host until the update.
        self.rewards = torch.zeros((n_steps, num_envs), pin_memory=pin)
        self.dones = torch.zeros((n_steps, num_envs), pin_memory=pin)
        self.actions = torch.zeros((n_steps, num_envs), dtype=torch.long, device=device)
        self.values = torch.zeros((n_steps, num_envs), device=device)


def _channels_last(lead: tuple[int, int], shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
                   ) -> torch.Tensor:
    channels, height, width = shape
    return torch.zeros((*lead, height, width, channels), dtype=dtype, device=device).permute(0, 1, 4, 2, 3)


def value_targets(rewards: torch.Tensor, dones: torch.Tensor, values: torch.Tensor,
                  last_values: torch.Tensor, gamma: float, gae_lambda: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and value targets for a (T, N) rollout.

    delta_t = r_t + gamma * (1 - done_t) * v(s_{t+1}) - v(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    target  = A_t + v(s_t)

    With lambda = 1 the target is the n-step return
    v^(s_t) = sum_k gamma^k r_{t+k} + gamma^(T-t) v(s_T), cut at the first done.
    `last_values` is v(s_T) for the observation after the rollout. Returns (targets, advantages).
    """
    steps = rewards.shape[0]
    not_done = 1.0 - dones
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * not_done[t] * next_values - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    return advantages + values, advantages
