"""The learning core against stable-baselines3's A2C on the same data: value targets,
losses, the gradient, its norm and the RMSprop step, after SB3 has trained for a while
on SpaceInvaders (so the weights and the batch are real, not random).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/sb3_parity.py [--warmup-steps 8000] [--updates 5] [--json out.json]

SB3 trains `--warmup-steps`; then for `--updates` rollouts in a row the script copies SB3's
weights (before its step) into a2c-tui's ActorCritic, computes a2c-tui's value targets from
SB3's rewards and dones, takes a2c-tui's update on SB3's batch, and compares it with the
step SB3's own `A2C.train()` took. Every figure is a maximum absolute difference (and, for
vectors, the same relative to the largest entry); exit 1 if any is above --tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import config as cfg
from a2c_tui.learn.a2c import make_optimizer, match_layouts, replayed_losses, update
from a2c_tui.learn.model import ActorCritic
from a2c_tui.learn.rollout import Rollout, value_targets

# SB3's CnnPolicy (shared NatureCNN) -> ActorCritic
NAMES = {"features_extractor.cnn.0": "torso.0.0", "features_extractor.cnn.2": "torso.0.2",
         "features_extractor.cnn.4": "torso.0.4", "features_extractor.linear.0": "torso.1",
         "action_net": "policy_head", "value_net": "value_head"}


def ours_from_sb3(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in NAMES:
            out[f"{NAMES[module]}.{leaf}"] = value
    return out


def differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, the same / max |b|), in float64."""
    a, b = a.double(), b.double()
    diff = float((a - b).abs().max())
    return diff, diff / max(float(b.abs().max()), 1e-30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--warmup-steps", type=int, default=8000)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    config = cfg.load(args.config)
    algo = config.algo
    env = VecFrameStack(make_atari_env(f"{config.env.id}NoFrameskip-v4", n_envs=config.env.num_envs, seed=0), 4)
    sb3 = A2C("CnnPolicy", env, n_steps=algo.n_steps, gamma=algo.gamma, gae_lambda=algo.gae_lambda,
              learning_rate=algo.lr, ent_coef=algo.entropy_coef, vf_coef=algo.value_coef,
              max_grad_norm=algo.max_grad_norm, device="cpu", seed=0, verbose=0,
              policy_kwargs=dict(optimizer_class=RMSpropTFLike,
                                 optimizer_kwargs=dict(alpha=algo.rms_alpha, eps=algo.rms_eps)))
    sb3.learn(total_timesteps=args.warmup_steps)

    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*a, **k):  # SB3 calls th.nn.utils.clip_grad_norm_: keep its norm
        norm = clip(*a, **k)
        norms.append(float(norm))
        return norm

    class Capture(BaseCallback):
        """Before each train(): the weights, optimizer and batch; after it: the step SB3 took."""

        def __init__(self):
            super().__init__()
            self.before: list[dict] = []
            self.after: list[dict] = []

        def _on_rollout_start(self) -> None:
            if len(self.after) < len(self.before):
                policy = self.model.policy
                self.after.append(dict(weights={k: v.detach().clone() for k, v in policy.state_dict().items()},
                                       grads={k: p.grad.detach().clone() for k, p in policy.named_parameters()},
                                       logged=dict(self.model.logger.name_to_value)))

        def _on_rollout_end(self) -> None:
            buffer, policy = self.model.rollout_buffer, self.model.policy
            self.before.append(dict(
                weights={k: v.detach().clone() for k, v in policy.state_dict().items()},
                squares={name: policy.optimizer.state[p]["square_avg"].clone()
                         for name, p in policy.named_parameters() if "square_avg" in policy.optimizer.state[p]},
                obs=torch.as_tensor(buffer.observations.copy()), actions=torch.as_tensor(buffer.actions.copy()),
                rewards=torch.as_tensor(buffer.rewards.copy()), starts=torch.as_tensor(buffer.episode_starts.copy()),
                values=torch.as_tensor(buffer.values.copy()), returns=torch.as_tensor(buffer.returns.copy()),
                last_values=self.locals["values"].detach().flatten().clone(),
                last_dones=torch.as_tensor(self.locals["dones"], dtype=torch.float32)))

        def _on_step(self) -> bool:
            return len(self.after) < args.updates

    capture = Capture()
    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        sb3.learn(total_timesteps=10**9, callback=capture, reset_num_timesteps=False)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    env.close()

    rows = []
    for i, (before, after) in enumerate(zip(capture.before, capture.after)):
        # SB3's episode_starts[t] is our dones[t - 1]; the last dones come with the last values.
        dones = torch.cat([before["starts"][1:], before["last_dones"][None]]).float()
        targets, _ = value_targets(before["rewards"].float(), dones, before["values"].float(),
                                   before["last_values"].float(), algo.gamma, algo.gae_lambda)
        def fresh() -> tuple[ActorCritic, torch.optim.Optimizer]:
            model = ActorCritic((4, 84, 84), env.action_space.n)
            model.load_state_dict(ours_from_sb3(before["weights"]))
            optimizer = make_optimizer(algo.optimizer, model.parameters(), algo.lr, algo.rms_alpha, algo.rms_eps)
            squares = ours_from_sb3(before["squares"])  # RMSpropTFLike's running squares
            for name, p in model.named_parameters():
                if name in squares:
                    optimizer.state[p]["square_avg"] = squares[name].clone()
            match_layouts(optimizer)  # as a resume does: SB3's are contiguous
            return model, optimizer

        # SB3 flattens its (steps, envs) buffer env-major; the same order keeps the means' sums alike.
        def flat(x):
            return x.transpose(0, 1).reshape(-1, *x.shape[2:])
        batch = (flat(before["obs"]), flat(before["actions"]).long().flatten(), flat(targets), algo.lr,
                 algo.value_coef, algo.entropy_coef, algo.max_grad_norm)
        model, optimizer = fresh()
        stats = update(model, optimizer, *batch)
        # The trainer's path: acting (one forward per step) keeps the convolutions' outputs, and
        # the update replays them (ActorCritic.replay); it must take the same step.
        replayed, replay_optimizer = fresh()
        steps, envs = before["obs"].shape[:2]
        kept = Rollout(steps, envs, (4, 84, 84), torch.uint8, torch.device("cpu"), replayed.kept_shapes).kept
        with torch.inference_mode():
            for t in range(steps):
                replayed(before["obs"][t], [k[t] for k in kept])
        replay_stats = update(replayed, replay_optimizer, *batch,
                              losses_fn=replayed_losses([flat(k).contiguous(memory_format=torch.channels_last)
                                                         for k in kept]))
        same = (json.dumps(replay_stats) == json.dumps(stats) and all(torch.equal(p, q) for p, q in zip(model.parameters(), replayed.parameters()))
                and all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), replayed.parameters())))
        ours_after = ours_from_sb3({k: v for k, v in after["weights"].items()})
        ours_grads = ours_from_sb3(after["grads"])
        weights = [differences(p.detach(), ours_after[name]) for name, p in model.named_parameters()]
        grads = [differences(p.grad, ours_grads[name]) for name, p in model.named_parameters()]
        logged = after["logged"]
        row = dict(
            update=i,
            value_targets=differences(targets, before["returns"].float()),
            policy_loss=abs(stats["policy_loss"] - logged["train/policy_loss"]),
            value_loss=abs(stats["value_loss"] - logged["train/value_loss"]),
            entropy=abs(stats["entropy"] + logged["train/entropy_loss"]),
            grad_norm=abs(stats["grad_norm"] - norms[i]) / norms[i], sb3_grad_norm=norms[i],
            clipped=norms[i] > algo.max_grad_norm,
            gradient=max(g[0] for g in grads), gradient_relative=max(g[1] for g in grads),
            weights=max(w[0] for w in weights), weights_relative=max(w[1] for w in weights),
            replay_identical=same,
        )
        row["value_targets"], row["value_targets_relative"] = row["value_targets"]
        rows.append(row)
        print(f"update {i}: targets {row['value_targets']:.1e}, policy loss {row['policy_loss']:.1e}, "
              f"value loss {row['value_loss']:.1e}, entropy {row['entropy']:.1e}, "
              f"grad norm {row['sb3_grad_norm']:.3f} ({row['grad_norm']:.1e} relative"
              f"{', clipped' if row['clipped'] else ''}), clipped gradient {row['gradient']:.1e} "
              f"({row['gradient_relative']:.1e} relative), weights after the step {row['weights']:.1e}; "
              f"the replayed update {'identical to the bit' if same else 'DIFFERENT'}")
    skip = ("update", "sb3_grad_norm", "clipped", "replay_identical")
    worst = {key: max(r[key] for r in rows) for key in rows[0] if key not in skip}
    print("worst:", ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), rows=rows, worst=worst), f, indent=1)
    failed = [k for k in ("policy_loss", "value_loss", "entropy", "gradient", "weights") if worst[k] > args.tolerance]
    if not all(r["replay_identical"] for r in rows):
        failed.append("the replayed update (the trainer's) is not the forward's")
    if failed:
        print(f"above the tolerance {args.tolerance}: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
