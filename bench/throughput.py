"""Headless training throughput (agent steps/s) on configs/space_invaders.toml, side by side
with stable-baselines3's A2C on the same settings, plus the env-only and network-only
bounds. Run on a quiet machine:

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/throughput.py --seconds 60 [--json out.json] [--skip-sb3]

Each figure is steps/s after a warm-up; the ratio is ours / stable-baselines3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import config as cfg
from a2c_tui.learn.a2c import make_optimizer, replayed_losses, update
from a2c_tui.learn.envs import make_envs
from a2c_tui.learn.model import ActorCritic, act, resolve_precision
from a2c_tui.learn.rollout import Rollout
from a2c_tui.run.trainer import Trainer, choose_threads, resolve_device


def timed(step, steps_per_call: int, seconds: float, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * steps_per_call / (time.perf_counter() - start)


def clocked(spent: dict[str, float], key: str, fn):
    """fn, adding the seconds each call takes to spent[key]."""
    def call(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started
    return call


class Ours:
    """A headless Trainer on the config; measure(seconds) -> steps/s of train_update."""

    def __init__(self, config: cfg.Config):
        self.tmp = tempfile.TemporaryDirectory()
        self.trainer = Trainer(config.replace(**{"run.out_dir": self.tmp.name}), tensorboard=False)
        self.batch = config.env.num_envs * config.algo.n_steps

    def measure(self, seconds: float) -> float:
        return timed(self.trainer.train_update, self.batch, seconds, warmup=5)

    def close(self) -> None:
        self.trainer.metrics.close()
        self.trainer.envs.close()
        self.tmp.cleanup()


def bench_env_only(config: cfg.Config, seconds: float) -> float:
    env = config.env
    envs = make_envs(env.id, env.num_envs, num_threads=env.num_threads)
    envs.reset()
    rng = np.random.default_rng(0)
    try:
        return timed(lambda: envs.step(rng.integers(0, envs.n_actions, env.num_envs)), env.num_envs, seconds)
    finally:
        envs.close()


def bench_network_only(config: cfg.Config, seconds: float, device: torch.device) -> float:
    """n_steps forward passes of num_envs observations, then one update on the whole batch, as
    the trainer does them (the convolutions' outputs kept while acting and replayed)."""
    n, t = config.env.num_envs, config.algo.n_steps
    bf16 = resolve_precision(config.run.precision, device) == "bf16"
    model = ActorCritic((4, 84, 84), 6, bf16=bf16).to(device)
    algo = config.algo
    optimizer = make_optimizer(algo.optimizer, model.parameters(), algo.lr, algo.rms_alpha, algo.rms_eps)
    rollout = Rollout(t, n, (4, 84, 84), torch.uint8, device, model.kept_shapes,
                      torch.bfloat16 if bf16 else torch.float32)
    rollout.obs.copy_(torch.randint(0, 255, rollout.obs.shape, dtype=torch.uint8))
    actions = torch.randint(0, 6, (t * n,), device=device)
    targets = torch.randn(t * n, device=device)
    losses = replayed_losses([k.reshape(t * n, *k.shape[2:]) for k in rollout.kept])

    def one_update():
        for i in range(t):
            act(model, rollout.obs[i], keep=[k[i] for k in rollout.kept])
        update(model, optimizer, rollout.obs.reshape(t * n, 4, 84, 84), actions, targets, 1e-5, algo.value_coef,
               algo.entropy_coef, algo.max_grad_norm, losses_fn=losses)

    return timed(one_update, t * n, seconds, warmup=5)


class SB3:
    """stable-baselines3's A2C on the same settings; measure(seconds) -> steps/s of learn()."""

    def __init__(self, config: cfg.Config, device: torch.device):
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import A2C
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
        from stable_baselines3.common.vec_env import VecFrameStack

        gym.register_envs(ale_py)
        algo = config.algo
        self.env = VecFrameStack(make_atari_env("SpaceInvadersNoFrameskip-v4", n_envs=config.env.num_envs, seed=0), 4)
        self.model = A2C("CnnPolicy", self.env, n_steps=algo.n_steps, gamma=algo.gamma, learning_rate=algo.lr,
                         ent_coef=algo.entropy_coef, vf_coef=algo.value_coef, max_grad_norm=algo.max_grad_norm,
                         policy_kwargs=dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=algo.rms_eps)),
                         device=device, seed=0, verbose=0)
        self.fresh = True

    def measure(self, seconds: float, warmup: int = 5) -> float:
        from stable_baselines3.common.callbacks import BaseCallback

        class Clock(BaseCallback):
            def __init__(self):
                super().__init__()
                self.marks: list[tuple[float, int]] = []

            def _on_rollout_end(self) -> None:
                self.marks.append((time.perf_counter(), self.num_timesteps))

            def _on_step(self) -> bool:  # False stops learn()
                return not (len(self.marks) > warmup and self.marks[-1][0] - self.marks[warmup][0] >= seconds)

        clock = Clock()
        self.model.learn(total_timesteps=10**9, callback=clock, reset_num_timesteps=self.fresh)
        self.fresh = False
        (t0, s0), (t1, s1) = clock.marks[warmup], clock.marks[-1]
        return (s1 - s0) / (t1 - t0)

    def close(self) -> None:
        self.env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring time per figure (split over the rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating windows per side")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    config = cfg.load(args.config, args.overrides)
    device = resolve_device(config.run.device)
    torch.set_num_threads(choose_threads(config, device))
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device.type}",
        "torch_threads": torch.get_num_threads(),
        "env_threads": config.env.num_threads,
        "num_envs": config.env.num_envs,
        "precision": resolve_precision(config.run.precision, device),
    }
    print(f"{results['machine']}, {results['precision']}, {results['torch_threads']} torch threads", flush=True)
    results["env_only"] = bench_env_only(config, args.seconds / 2)
    print(f"env only (random actions): {results['env_only']:,.0f} steps/s", flush=True)
    results["network_only"] = bench_network_only(config, args.seconds / 2, device)
    print(f"network only (act + update): {results['network_only']:,.0f} steps/s", flush=True)
    ours = Ours(config)
    sb3 = None if args.skip_sb3 else SB3(config, device)
    window = args.seconds / args.rounds
    rounds = []
    try:
        for r in range(args.rounds):
            # Alternate windows (ours, sb3, sb3, ours, ...) so drifting load hits both alike.
            pair = {}
            for name in (("ours", "sb3") if r % 2 == 0 else ("sb3", "ours")):
                if name == "ours" or sb3 is not None:
                    torch.set_num_threads(choose_threads(config, device))
                    pair[name] = (ours if name == "ours" else sb3).measure(window)
            rounds.append(pair)
            line = f"round {r + 1}: a2c-tui {pair['ours']:,.0f} steps/s"
            if sb3 is not None:
                line += f", stable-baselines3 {pair['sb3']:,.0f} steps/s, ratio {pair['ours'] / pair['sb3']:.2f}x"
            print(line, flush=True)
    finally:
        ours.close()
        if sb3 is not None:
            sb3.close()
    results["rounds"] = rounds
    results["ours"] = statistics.median(p["ours"] for p in rounds)
    print(f"a2c-tui headless: {results['ours']:,.0f} steps/s (median of {args.rounds} windows)", flush=True)
    if sb3 is not None:
        results["sb3"] = statistics.median(p["sb3"] for p in rounds)
        results["ratio"] = statistics.median(p["ours"] / p["sb3"] for p in rounds)
        print(f"stable-baselines3 A2C: {results['sb3']:,.0f} steps/s; ratio {results['ratio']:.2f}x "
              f"(median of the rounds' ratios)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
