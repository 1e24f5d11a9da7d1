"""Training throughput (agent steps/s) of one process against the same total envs split over
ranks (torch.distributed, gloo on the CPU / NCCL on GPUs), in alternating windows as
bench/throughput.py does, so drifting load hits every side alike:

    .venv/bin/python bench/distributed.py --ranks 1 2 --envs 16 --updates 40 --rounds 4

Every side is started once (a plain process for 1 rank; for N ranks, N processes with
torchrun's environment variables) and kept waiting between its windows. A window is the
same number of updates on every side (the ranks' all-reduce keeps them in step), so every
window covers the same agent steps. `--set run.device=cuda` puts every rank on a GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path


def worker(rank: int, ranks: int, port: int, config_path: str, overrides: list[str], conn) -> None:
    if ranks > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
    from a2c_tui import config as cfg
    from a2c_tui.learn import distributed
    from a2c_tui.run.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg.load(config_path, [*overrides, f"run.out_dir={out!r}", "run.total_steps=1000000000"]),
                          tensorboard=False)
        conn.send((trainer.config.env.num_envs, trainer.config.algo.n_steps))
        try:
            while (updates := conn.recv()) > 0:
                started = time.perf_counter()
                for _ in range(updates):
                    trainer.train_update()
                conn.send(time.perf_counter() - started)
        finally:
            trainer.metrics.close()
            trainer.envs.close()
            distributed.leave()


class Side:
    """`ranks` processes with `total_envs // ranks` envs each, waiting for windows."""

    def __init__(self, ranks: int, total_envs: int, config: str, overrides: list[str]):
        ctx = mp.get_context("spawn")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        per_rank = [*overrides, f"env.num_envs={total_envs // ranks}"]
        self.ranks = ranks
        self.conns, self.procs = [], []
        for rank in range(ranks):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(rank, ranks, port, config, per_rank, theirs), daemon=True)
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)
        num_envs, n_steps = self.conns[0].recv()
        for conn in self.conns[1:]:
            conn.recv()
        self.steps_per_update = num_envs * n_steps * ranks

    def window(self, updates: int) -> float:
        for conn in self.conns:
            conn.send(updates)
        seconds = max(conn.recv() for conn in self.conns)
        return updates * self.steps_per_update / seconds

    def close(self) -> None:
        for conn in self.conns:
            conn.send(0)
        for proc in self.procs:
            proc.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--envs", type=int, default=16, help="total envs, split evenly over the ranks")
    parser.add_argument("--updates", type=int, default=40, help="updates per window")
    parser.add_argument("--warmup", type=int, default=5, help="updates before the first window")
    parser.add_argument("--rounds", type=int, default=4, help="windows per side")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    sides = {}
    try:
        for ranks in args.ranks:
            sides[ranks] = Side(ranks, args.envs, args.config, args.overrides)
            sides[ranks].window(args.warmup)
        rounds = []
        for r in range(args.rounds):
            order = args.ranks if r % 2 == 0 else args.ranks[::-1]
            figures = {ranks: sides[ranks].window(args.updates) for ranks in order}
            rounds.append(figures)
            print(f"round {r + 1}: " + ", ".join(f"{n} rank{'s' if n > 1 else ''} {figures[n]:,.0f} steps/s"
                                                 for n in args.ranks), flush=True)
    finally:
        for side in sides.values():
            side.close()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": args.config, "overrides": args.overrides, "total_envs": args.envs, "updates_per_window": args.updates,
        "rounds": [{str(k): v for k, v in r.items()} for r in rounds],
        "median": {str(n): statistics.median(r[n] for r in rounds) for n in args.ranks},
    }
    base = results["median"][str(args.ranks[0])]
    for n in args.ranks:
        figure = results["median"][str(n)]
        print(f"{n} rank{'s' if n > 1 else ''} x {args.envs // n} envs: {figure:,.0f} steps/s "
              f"(median of {args.rounds} windows; {figure / base:.2f}x {args.ranks[0]} rank)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
