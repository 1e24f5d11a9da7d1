"""Headless training with and without an environment variable that must be set before torch
loads (OpenMP's, for one): agent steps/s of the preset in two worker processes, A with this
process's environment and B with `--env` added, measured in alternating windows (B, A, A, B,
...; the idle worker waits on its pipe), each ratio taken between neighbouring windows.

    .venv/bin/python bench/ab_env.py --env GOMP_SPINCOUNT=200000 [--rounds 4] [--seconds 10] \
        [--config configs/space_invaders.toml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def worker(config_path: str, overrides: list[str]) -> int:
    import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
    from throughput import Ours

    from a2c_tui import config as cfg

    ours = Ours(cfg.load(config_path, overrides))
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            print(f"{ours.measure(float(line)):.3f}", flush=True)
    finally:
        ours.close()
    return 0


class Worker:
    def __init__(self, env: dict[str, str], config_path: str, overrides: list[str]):
        args = [sys.executable, os.path.abspath(__file__), "--worker", "--config", config_path]
        for item in overrides:
            args += ["--set", item]
        self.process = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=os.getcwd())
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker failed to start (see its output above)")

    def measure(self, seconds: float) -> float:
        self.process.stdin.write(f"{seconds}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", dest="env", action="append", default=[], help="B's NAME=VALUE (repeatable)")
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="both workers' KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="per window")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.config, args.overrides)
    if not args.env:
        parser.error("give B's environment with --env NAME=VALUE")
    env_b = dict(os.environ)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        env_b[name] = value
    from ab_config import compare

    bench_dir = os.path.dirname(os.path.abspath(__file__))
    for env in (env_a := dict(os.environ), env_b):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [bench_dir, env.get("PYTHONPATH")]))
    a = Worker(env_a, args.config, args.overrides)
    b = Worker(env_b, args.config, args.overrides)
    compare(a, b, args.rounds, args.seconds, label=f"B ({' '.join(args.env)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
