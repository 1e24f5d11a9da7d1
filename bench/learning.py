"""Learning record: last-100 raw score against agent steps for a run, next to the published
A2C results on SpaceInvaders (../shared/FACTS.md), as a table and a PNG.

    .venv/bin/python bench/learning.py checkpoints/<run> [--png bench/learning_curve.png]
    .venv/bin/python bench/learning.py <run_a> <run_b> --label fp32 --label bf16 --every 100000   # side by side

Reads the run's metrics.jsonl (the same stream the app and TensorBoard get).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from a2c_tui.run.metrics import read_jsonl

# Average raw whole-game score over the last 100 training games, SpaceInvaders, A2C.
REFERENCES = {
    "rl-baselines3-zoo A2C": {1_000_000: 242, 2_000_000: 243, 5_000_000: 469, 10_000_000: 676},
    "openai/baselines A2C (read off plot)": {1_000_000: 210, 2_000_000: 256, 5_000_000: 595, 10_000_000: 689},
    "PPO paper, A2C": {10_000_000: 744.5},
}
RANDOM_PLAY = 150


def score_at(records: list[dict], step: int) -> float | None:
    """The last-100 score of the last record at or before `step` (None if the run is shorter)."""
    best = None
    for record in records:
        if record["step"] <= step and record.get("score") is not None:
            best = record
    if best is None or records[-1]["step"] < step:
        return None
    return best["score"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="+", help="run directories with metrics.jsonl (several: side by side)")
    parser.add_argument("--png", help="write the curve here (needs matplotlib)")
    parser.add_argument("--label", action="append", help="one per run (default: a2c-tui, or the directory names)")
    parser.add_argument("--every", type=int, default=0,
                        help="a table row every N steps up to the shortest run (default: 0.5M, then each 1M)")
    args = parser.parse_args()
    labels = args.label or (["a2c-tui"] if len(args.run) == 1 else [Path(r).name for r in args.run])
    if len(labels) != len(args.run):
        print("give one --label per run", file=sys.stderr)
        return 2

    runs = {}
    for label, run in zip(labels, args.run):
        records = [r for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("score") is not None]
        if not records:
            print(f"no scored records in {run}", file=sys.stderr)
            return 2
        last = records[-1]
        print(f"{label}: {last['step']:,} steps, last-100 score {last['score']:.1f}, {last['games']} games")
        runs[label] = records
    if args.every:
        shortest = min(records[-1]["step"] for records in runs.values())
        steps = range(args.every, shortest + 1, args.every)
    else:
        steps = (500_000, *range(1_000_000, 10_000_001, 1_000_000))
    print("| steps | " + " | ".join([*runs, *REFERENCES]) + " |")
    print("|---" * (len(REFERENCES) + len(runs) + 1) + "|")
    for step in steps:
        cells = []
        for records in runs.values():
            ours = score_at(records, step)
            cells.append(f"{ours:.0f}" if ours is not None else "–")
        cells += [f"{ref[step]:g}" if step in ref else "" for ref in REFERENCES.values()]
        print(f"| {step / 1e6:g}M | " + " | ".join(cells) + " |")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
        for label, records in runs.items():
            ax.plot([r["step"] / 1e6 for r in records], [r["score"] for r in records], lw=1.2, label=label)
        for (name, ref), marker in zip(REFERENCES.items(), "os^"):
            ax.scatter([s / 1e6 for s in ref], list(ref.values()), marker=marker, s=40, label=name, zorder=3)
        ax.axhline(RANDOM_PLAY, color="grey", ls=":", lw=1, label="random play ≈150")
        ax.axhline(600, color="red", ls="--", lw=0.8, label="course target 600")
        ax.set_xlabel("agent steps (millions; 1 step = 4 frames)")
        ax.set_ylabel("last-100 raw game score")
        ax.set_title("SpaceInvaders, A2C")
        longest = max(records[-1]["step"] for records in runs.values())
        ax.set_xlim(0, max(10, math.ceil(longest / 1e6)) if not args.every else longest / 1e6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
