"""Headless steps/s on configs/space_invaders.toml for torch CPU threads x ALE env threads,
to choose the defaults (run.torch_threads, env.num_threads). Quiet machine, ~25 s a cell:

    .venv/bin/python bench/threads.py --seconds 25
    OMP_WAIT_POLICY=ACTIVE .venv/bin/python bench/threads.py --seconds 25   # spinning waits
"""

from __future__ import annotations

import argparse
import os
import sys

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch

sys.path.insert(0, os.path.dirname(__file__))
from throughput import bench_ours  # noqa: E402

from a2c_tui import config as cfg  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--config", default="configs/space_invaders.toml")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {cores} cores")
    print("| torch threads | env threads | steps/s |\n|---|---|---|")
    for torch_threads in sorted({1, cores}):
        for env_threads in sorted({1, cores}):
            config = cfg.load(args.config, [f"run.torch_threads={torch_threads}", f"env.num_threads={env_threads}",
                                            'run.device="cpu"'])
            torch.set_num_threads(torch_threads)
            print(f"| {torch_threads} | {env_threads} | {bench_ours(config, args.seconds):,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
