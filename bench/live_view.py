"""Training steps/s with the live game view shown vs hidden.

The trainer runs configs/space_invaders.toml in its thread, as in the app; a headless
Textual app holds the real GameView fed by the real LivePlayer (its own game, weights
copied from the trainer). The view is shown and hidden in alternating short windows
(ABBA order) and each shown window is compared with the hidden window next to it, so the
load that other programs put on the machine, which drifts by tens of percent within a
minute on a shared 2-core box, affects both sides of each pair alike:

    .venv/bin/python bench/live_view.py --seconds 60 --rounds 20

--seconds is the measured time per mode in all, split into --rounds pairs of windows.
--no-trainer measures what the view itself costs in CPU, with no trainer beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from io import StringIO

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from rich.console import Console
from textual.app import App, ComposeResult

from a2c_tui import config as cfg
from a2c_tui.learn.frames import FrameSource
from a2c_tui.run.liveview import LivePlayer
from a2c_tui.tui.gameview import GameView

MODES = ("hidden", "shown")


class BenchApp(App):
    CSS = "GameView { width: 1fr; height: 1fr; }"

    def __init__(self, trainer, source: FrameSource, player: LivePlayer, window: float, rounds: int, settle: float):
        super().__init__()
        self.trainer, self.source, self.player = trainer, source, player
        self.window, self.rounds, self.settle = window, rounds, settle
        self.results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        self.frame_bytes: list[int] = []

    def compose(self) -> ComposeResult:
        yield GameView(self.source)

    def on_mount(self) -> None:
        view = self.query_one(GameView)
        view.display = False
        paint = view._painter.paint

        def measuring_paint(*args, **kwargs):
            strips = paint(*args, **kwargs)
            if len(self.frame_bytes) < 20:
                self.frame_bytes.append(ansi_bytes(strips))
            return strips

        view._painter.paint = measuring_paint
        if self.trainer is not None:
            self.trainer.start()
        self.run_worker(self.measure(view), exclusive=True)

    def steps(self) -> int:
        return self.trainer.step if self.trainer is not None else 0

    async def measure(self, view: GameView) -> None:
        view.display = True  # the first game's weights and network are ready before measuring
        await asyncio.sleep(max(self.settle, 5.0))
        for round_ in range(self.rounds):
            for mode in (MODES if round_ % 2 == 0 else MODES[::-1]):
                view.display = mode == "shown"
                await asyncio.sleep(self.settle)
                step, drawn, played = self.steps(), view.frames_drawn, self.player.steps_played
                cpu, start = time.process_time(), time.monotonic()
                await asyncio.sleep(self.window)
                elapsed = time.monotonic() - start
                self.results[mode].append({
                    "steps_per_sec": (self.steps() - step) / elapsed,
                    "frames_per_sec": (view.frames_drawn - drawn) / elapsed,
                    "live_steps_per_sec": (self.player.steps_played - played) / elapsed,
                    "process_cpu": (time.process_time() - cpu) / elapsed,
                    "load": os.getloadavg()[0],
                })
            hidden, shown = self.results["hidden"][-1], self.results["shown"][-1]
            print(f"pair {round_ + 1}: hidden {hidden['steps_per_sec']:,.0f} steps/s, shown "
                  f"{shown['steps_per_sec']:,.0f} steps/s ({shown['frames_per_sec']:.1f} frames/s drawn), "
                  f"load {shown['load']:.1f}", file=sys.stderr, flush=True)
        self.exit()


def ansi_bytes(strips) -> int:
    """Bytes a truecolour terminal would receive for these lines (no cursor moves)."""
    console = Console(file=StringIO(), color_system="truecolor", force_terminal=True, width=10_000)
    return sum(len(strip.render(console).encode()) for strip in strips)


def mean_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.mean(r[key] for r in rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per mode, in all")
    parser.add_argument("--rounds", type=int, default=20, help="pairs of windows (hidden, shown)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after each switch before measuring")
    parser.add_argument("--size", default="100x30", help="terminal size COLSxROWS of the headless app")
    parser.add_argument("--no-trainer", action="store_true", help="the view's own CPU cost, nothing else running")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        config = cfg.load(args.config, [f"run.out_dir={tmp!r}"])
        source = FrameSource()
        if args.no_trainer:
            import torch

            from a2c_tui.learn.model import ActorCritic

            trainer = None
            weights = ActorCritic((4, 84, 84), 6).state_dict()
            player = LivePlayer(config, lambda: (weights, "untrained"), source)
        else:
            from a2c_tui.run.trainer import Trainer

            trainer = Trainer(config, tensorboard=False)
            player = LivePlayer(config, lambda: (trainer.weights().result(timeout=60), f"step {trainer.step:,}"),
                                source)
        player.start()
        app = BenchApp(trainer, source, player, args.seconds / args.rounds, args.rounds, args.settle)
        try:
            app.run(headless=True, size=(cols, rows))
        finally:
            player.close()
            if trainer is not None:
                trainer.close(timeout=30)

    import torch

    hidden, shown = app.results["hidden"], app.results["shown"]
    print(f"{config.env.id}, {config.env.num_envs} envs, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, load average {mean_of(hidden + shown, 'load'):.1f}, app {cols}x{rows}, "
          f"{args.rounds} pairs of {args.seconds / args.rounds:.1f} s windows"
          + (", no trainer" if trainer is None else ""))
    for mode, rounds in app.results.items():
        line = f"{mode:6s}: "
        if trainer is not None:
            line += f"{mean_of(rounds, 'steps_per_sec'):,.0f} training steps/s, "
        print(line + f"view {mean_of(rounds, 'frames_per_sec'):.1f} frames/s, live game "
                     f"{mean_of(rounds, 'live_steps_per_sec'):.1f} agent steps/s, process CPU "
                     f"{mean_of(rounds, 'process_cpu'):.3f} cores")
    if trainer is not None:
        ratios = sorted(s["steps_per_sec"] / h["steps_per_sec"] - 1 for h, s in zip(hidden, shown))
        spread = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
        print(f"shown vs hidden, paired windows: mean {statistics.mean(ratios):+.1%} ± {spread:.1%} (standard error), "
              f"median {statistics.median(ratios):+.1%}, range {ratios[0]:+.1%} to {ratios[-1]:+.1%}")
    else:
        print(f"the view's own cost: {mean_of(shown, 'process_cpu') - mean_of(hidden, 'process_cpu'):.3f} cores "
              f"while shown")
    if app.frame_bytes:
        size = statistics.mean(app.frame_bytes) / 1024
        print(f"one frame of the view at {cols}x{rows}: {size:.1f} KiB of truecolour output "
              f"({10 * size:.0f} KiB/s at 10 frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
