"""bf16 vs fp32 gradients along a real training run: at every update of an fp32 run, the
gradient of the same batch with the same weights is also computed under bf16 autocast
(run.precision = "bf16"), and the two are compared before the fp32 update is applied.

    .venv/bin/python bench/precision.py --updates 1200 [--config configs/space_invaders.toml] [--json out.json]
    .venv/bin/python bench/precision.py --updates 1000 --resume runs/<run>/step_1000000.pt   # a trained agent

Prints the distribution over updates of the cosine similarity of the two gradients, the
ratio of their norms and the difference of the losses. `--dry-run`: 5 updates of the smoke config.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import config as cfg
from a2c_tui.learn.a2c import a2c_loss
from a2c_tui.run import trainer as trainer_module
from a2c_tui.run.trainer import Trainer


def gradient(model, obs, actions, targets, value_coef, entropy_coef) -> tuple[torch.Tensor, float]:
    model.zero_grad(set_to_none=True)
    logits, values = model(obs)
    loss = a2c_loss(logits, values, actions, targets, value_coef, entropy_coef).total
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grad, float(loss.detach())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--updates", type=int, default=1200)
    parser.add_argument("--json", help="write every update's figures here")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="start from this checkpoint (a copy of it, in a temporary run directory)")
    parser.add_argument("--dry-run", action="store_true", help="5 updates of configs/smoke.toml")
    args = parser.parse_args()
    if args.dry_run:
        args.config, args.updates = "configs/smoke.toml", 5

    # one thread each: the probe must not be slowed by thread hand-offs on a busy machine
    config = cfg.load(args.config).replace(**{"run.precision": "fp32", "run.torch_threads": 1,
                                              "env.num_threads": 1})
    rows: list[dict[str, float]] = []
    real_update = trainer_module.update

    def probed_update(model, optimizer, obs, actions, targets, lr, value_coef, entropy_coef, *rest):
        model.bf16 = True  # the same weights, under bf16 autocast
        try:
            g16, loss16 = gradient(model, obs, actions, targets, value_coef, entropy_coef)
        finally:
            model.bf16 = False
        stats = real_update(model, optimizer, obs, actions, targets, lr, value_coef, entropy_coef, *rest)
        # The fp32 gradient is still in .grad after the step, clipped: a positive multiple of
        # the unclipped one (same cosine); its norm before the clip is in the stats.
        g32 = torch.cat([p.grad.flatten() for p in model.parameters()])
        # in float64: a float32 cosine of two 1.7M-long vectors rounds to values above 1
        rows.append({"cosine": float(torch.nn.functional.cosine_similarity(g32.double(), g16.double(), dim=0)),
                     "norm_ratio": float(g16.norm()) / stats["grad_norm"],
                     "loss_diff": abs(loss16 - stats["loss"]) / max(abs(stats["loss"]), 1e-12)})
        return stats

    trainer_module.update = probed_update
    with tempfile.TemporaryDirectory() as tmp:
        if args.resume:
            copy = Path(tmp) / "run" / Path(args.resume).name
            copy.parent.mkdir()
            shutil.copyfile(args.resume, copy)
            trainer = Trainer(config, resume=copy, tensorboard=False, resume_overrides={
                "run.precision": "fp32", "run.torch_threads": 1, "env.num_threads": 1})
        else:
            trainer = Trainer(config.replace(**{"run.out_dir": tmp}), tensorboard=False)
        first_step = trainer.step
        try:
            for i in range(args.updates):
                trainer.train_update()
                if (i + 1) % 100 == 0:
                    print(f"{i + 1} updates, step {trainer.step:,}, last cosine {rows[-1]['cosine']:.5f}", flush=True)
        finally:
            trainer.metrics.close()
            trainer.envs.close()
    print(f"{args.config}: {len(rows)} updates of {config.env.num_envs * config.algo.n_steps} steps "
          f"(steps {first_step:,} to {trainer.step:,}), fp32 run, bf16 gradient of the same batch")
    for key in ("cosine", "norm_ratio", "loss_diff"):
        values = np.array([r[key] for r in rows])
        q = np.percentile(values, [0, 1, 5, 50, 95, 99, 100])
        print(f"  {key:<10} min {q[0]:.5f}  p1 {q[1]:.5f}  p5 {q[2]:.5f}  median {q[3]:.5f}  "
              f"p95 {q[4]:.5f}  p99 {q[5]:.5f}  max {q[6]:.5f}  mean {values.mean():.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "rows": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
