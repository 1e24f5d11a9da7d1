"""Two settings of the same run side by side: agent steps/s of headless training with the
preset as it is (A) and with `--set` overrides (B), in alternating windows of one process
(B, A, A, B, ...), each ratio taken between neighbouring windows.

    .venv/bin/python bench/ab_config.py --set env.overlap=on [--set run.torch_threads=1] \
        [--config configs/space_invaders.toml] [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from throughput import Ours

from a2c_tui import config as cfg


def compare(a, b, rounds: int, seconds: float, label: str = "B") -> float:
    """B, A, A, B windows per round (each side's measure(seconds) -> steps/s), the ratios B/A of
    neighbouring windows printed with their median, which is returned; closes both sides."""
    ratios = []
    try:
        for i in range(rounds):
            b1, a1, a2, b2 = b.measure(seconds), a.measure(seconds), a.measure(seconds), b.measure(seconds)
            ratios += [b1 / a1, b2 / a2]
            print(f"round {i + 1}: B {b1:.0f}, A {a1:.0f}, A {a2:.0f}, B {b2:.0f} steps/s", flush=True)
    finally:
        a.close()
        b.close()
    median = statistics.median(ratios)
    print(f"{label} / A: {median:.3f} (median of {len(ratios)} paired ratios: "
          f"{', '.join(f'{r:.3f}' for r in sorted(ratios))})")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--set", dest="overrides", action="append", required=True, help="B's KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per window")
    args = parser.parse_args(argv)
    a, b = Ours(cfg.load(args.config)), Ours(cfg.load(args.config, args.overrides))
    compare(a, b, args.rounds, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
