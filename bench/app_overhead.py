"""Training steps/s with the app open vs headless (the issue asks for >= 95%).

The trainer runs in its thread as in the app. One A2CApp (headless Textual, a real screen
size) is open throughout; in alternating windows (ABBA order) the trainer's snapshots and
events either reach it — it redraws the status bar, sparklines and log at most 4 times a
second, as on a terminal — or go nowhere, which is headless training (an app that gets no
messages costs nothing). Each "app" window is compared with the "headless" window next to
it, so the load of other programs on a shared machine affects both sides of a pair alike:

    .venv/bin/python bench/app_overhead.py --seconds 60 --rounds 10 [--size 200x60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from a2c_tui import config as cfg
from a2c_tui.run.handle import LocalHandle
from a2c_tui.tui.app import A2CApp

MODES = ("headless", "app")


class Switchable:
    """The handle as the app sees it, with the trainer's items switched on or off."""

    def __init__(self, handle: LocalHandle):
        self._handle = handle
        self._callback = None
        self.connected = False
        handle.subscribe(self._forward)

    def _forward(self, item) -> None:
        if self.connected and self._callback is not None:
            self._callback(item)

    def subscribe(self, callback) -> None:
        self._callback = callback

    def start(self, paused: bool = False) -> None:
        """The bench started the trainer before the app opened."""

    def __getattr__(self, name):
        return getattr(self._handle, name)


async def measure(handle: LocalHandle, size: tuple[int, int], window: float, rounds: int,
                  settle: float) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    switch = Switchable(handle)
    app = A2CApp(switch)
    async with app.run_test(size=size):
        await asyncio.sleep(max(settle, 3.0))
        for round_ in range(rounds):
            for mode in (MODES if round_ % 2 == 0 else MODES[::-1]):
                switch.connected = mode == "app"
                await asyncio.sleep(settle)
                step, applied = handle.trainer.step, app.applied
                cpu, start = time.process_time(), time.monotonic()
                await asyncio.sleep(window)
                elapsed = time.monotonic() - start
                results[mode].append({"steps_per_sec": (handle.trainer.step - step) / elapsed,
                                      "redraws_per_sec": (app.applied - applied) / elapsed,
                                      "process_cpu": (time.process_time() - cpu) / elapsed,
                                      "load": os.getloadavg()[0]})
            headless, shown = results["headless"][-1], results["app"][-1]
            print(f"pair {round_ + 1}: headless {headless['steps_per_sec']:,.0f} steps/s, app "
                  f"{shown['steps_per_sec']:,.0f} steps/s ({shown['redraws_per_sec']:.1f} snapshots drawn/s), "
                  f"load {shown['load']:.1f}", file=sys.stderr, flush=True)
        switch.connected = False
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per mode, in all")
    parser.add_argument("--rounds", type=int, default=10, help="pairs of windows (headless, app)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after each switch before measuring")
    parser.add_argument("--size", default="120x40", help="terminal size COLSxROWS of the headless app")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        config = cfg.load(args.config, [f"run.out_dir={tmp!r}", "run.checkpoint_every=100000000"])
        handle = LocalHandle.create(config)
        handle.start()
        try:
            results = asyncio.run(measure(handle, (cols, rows), args.seconds / args.rounds, args.rounds, args.settle))
        finally:
            handle.close(timeout=30)

    import torch

    def mean(mode: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[mode])

    print(f"{config.env.id}, {config.env.num_envs} envs, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, load average {statistics.mean(r['load'] for m in MODES for r in results[m]):.1f}, "
          f"app {cols}x{rows}, {args.rounds} pairs of {args.seconds / args.rounds:.1f} s windows")
    for mode in MODES:
        print(f"{mode:8s}: {mean(mode, 'steps_per_sec'):,.0f} training steps/s, {mean(mode, 'redraws_per_sec'):.1f} "
              f"snapshots drawn/s, process CPU {mean(mode, 'process_cpu'):.2f} cores")
    ratios = sorted(a["steps_per_sec"] / h["steps_per_sec"] for h, a in zip(results["headless"], results["app"]))
    spread = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    print(f"app / headless, paired windows: mean {statistics.mean(ratios):.1%} ± {spread:.1%} (standard error), "
          f"median {statistics.median(ratios):.1%}, range {ratios[0]:.1%} to {ratios[-1]:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
