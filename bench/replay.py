"""The update's replay (ActorCritic.replay: the convolutions' outputs kept at acting time stand
in for a second forward on the batch) against the forward on the batch, in one process:
agent steps/s of headless training in alternating windows (B = replay, A = forward again).

    .venv/bin/python bench/replay.py [--config configs/space_invaders.toml] [--rounds 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from ab_config import compare
from throughput import Ours

from a2c_tui import config as cfg
from a2c_tui.run import trainer as trainer_module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="per window")
    args = parser.parse_args(argv)
    config = cfg.load(args.config)
    b = Ours(config)
    replays, trainer_module.replays = trainer_module.replays, lambda model, parts: False
    try:
        a = Ours(config)
    finally:
        trainer_module.replays = replays
    if not b.trainer._replay or a.trainer._replay:
        print("this config does not replay (run.compile is on, or not an image game)", file=sys.stderr)
        return 2
    compare(a, b, args.rounds, args.seconds, label="replay")
    return 0


if __name__ == "__main__":
    sys.exit(main())
