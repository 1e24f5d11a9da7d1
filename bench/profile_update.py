"""Where one update's time goes: acting (forward passes), env steps, value targets and the
gradient step, timed inside Trainer.train_update on a config (default: SpaceInvaders).

    .venv/bin/python bench/profile_update.py [--updates 300] [--config configs/space_invaders.toml]

For a sampling view of the same loop: py-spy record -f raw -o out.txt -- .venv/bin/python bench/profile_update.py
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch

from a2c_tui import config as cfg
from a2c_tui.run import trainer as trainer_module
from a2c_tui.run.trainer import Trainer, choose_threads, resolve_device
from throughput import clocked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()

    config = cfg.load(args.config)
    torch.set_num_threads(choose_threads(config, resolve_device(config.run.device)))
    spent: dict[str, float] = collections.defaultdict(float)
    for name, key in (("act", "act"), ("update", "update"), ("value_targets", "targets")):
        setattr(trainer_module, name, clocked(spent, key, getattr(trainer_module, name)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config.replace(**{"run.out_dir": tmp}), tensorboard=False)
        trainer.envs.step = clocked(spent, "env", trainer.envs.step)
        try:
            for _ in range(20):
                trainer.train_update()
            spent.clear()
            start = time.perf_counter()
            for _ in range(args.updates):
                trainer.train_update()
            total = time.perf_counter() - start
        finally:
            trainer.metrics.close()
            trainer.envs.close()
    batch = config.env.num_envs * config.algo.n_steps
    per = {k: v / args.updates * 1e3 for k, v in spent.items()}
    per["other"] = total / args.updates * 1e3 - sum(per.values())
    print(f"{args.updates * batch / total:,.0f} steps/s; per update of {batch} steps: {total / args.updates * 1e3:.1f} ms = "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in per.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
