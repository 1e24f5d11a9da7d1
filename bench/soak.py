"""Soak: the app training the smoke config for a long time, with periodic checkpoints,
evaluations (some cancelled midway), pauses, saves and live hyperparameter edits.

The app runs in this process, headless (Textual's run_test: the screen is composed and
rendered, nothing is drawn to a terminal), with a real trainer behind a LocalHandle. Every
2 seconds a sampler thread records the process's RSS, thread count (OS threads: Python,
torch, ALE's pools), open file descriptors, and the UI's answer time (a call handed to the
UI thread with call_from_thread, timed until it ran). At the end the first and last quarter
(after a warm-up) are compared: RSS, threads and descriptors must be flat, the UI must answer.

    .venv/bin/python bench/soak.py --minutes 30 [--out soak.jsonl]

Prints a summary and exits 1 when something grew.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def proc_status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(rest.split()[0])
    return {"rss_mb": values["VmRSS"] / 1024, "threads": values["Threads"], "fds": len(os.listdir("/proc/self/fd"))}


@dataclass
class SoakResult:
    seconds: float = 0.0
    samples: list[dict] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    start_step: int = 0
    end_step: int = 0
    checkpoints_saved: int = 0
    errors: list[str] = field(default_factory=list)

    def windows(self, warmup: float) -> tuple[list[dict], list[dict]]:
        """Quiet samples (no evaluation running) of the first and last quarter after warm-up."""
        quiet = [s for s in self.samples if s["t"] >= warmup and not s["evaluating"]]
        if len(quiet) < 8:
            return quiet, quiet
        span = quiet[-1]["t"] - quiet[0]["t"]
        first = [s for s in quiet if s["t"] <= quiet[0]["t"] + span / 4]
        last = [s for s in quiet if s["t"] >= quiet[-1]["t"] - span / 4]
        return first, last

    def verdict(self, warmup: float) -> dict:
        first, last = self.windows(warmup)
        rss_first = statistics.median(s["rss_mb"] for s in first)
        rss_last = statistics.median(s["rss_mb"] for s in last)
        latencies = sorted(s["ui_ms"] for s in self.samples if s["ui_ms"] is not None)
        return {
            "rss_first_mb": rss_first, "rss_last_mb": rss_last, "rss_growth_mb": rss_last - rss_first,
            "rss_max_mb": max(s["rss_mb"] for s in self.samples),
            "threads_first_max": max(s["threads"] for s in first), "threads_last_max": max(s["threads"] for s in last),
            "threads_max": max(s["threads"] for s in self.samples),
            "fds_first_max": max(s["fds"] for s in first), "fds_last_max": max(s["fds"] for s in last),
            "ui_ms_median": statistics.median(latencies) if latencies else None,
            "ui_ms_p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
            "ui_ms_max": latencies[-1] if latencies else None,
            "ui_unanswered": sum(1 for s in self.samples if s["ui_ms"] is None),
            **self.rss_trend(warmup),
        }

    def rss_trend(self, warmup: float) -> dict:
        """Least-squares slope of the quiet samples' RSS: a slow steady rise that the two
        quarters' medians can hide (the 30-minute run in BENCHMARKS.md). The slope from the
        tenth minute on is reported beside it (not judged): it tells a fill of bounded caches
        early in the run from a rise that goes on."""
        quiet = [s for s in self.samples if s["t"] >= warmup and not s["evaluating"]]
        if len(quiet) < 8:
            return {"rss_slope_mb_per_h": None, "quiet_span_min": 0.0, "rss_slope_after_10_min_mb_per_h": None,
                    "rss_lowest_per_150_s_mb": []}
        late = [s for s in quiet if s["t"] >= 600]
        lows: dict[int, float] = {}  # the lowest quiet RSS in each 150 s: the floor the spikes sit on
        for s in quiet:
            window = int(s["t"] // 150)
            lows[window] = min(lows.get(window, s["rss_mb"]), s["rss_mb"])
        return {"rss_slope_mb_per_h": _slope(quiet) * 3600, "quiet_span_min": (quiet[-1]["t"] - quiet[0]["t"]) / 60,
                "rss_slope_after_10_min_mb_per_h": _slope(late) * 3600 if len(late) >= 8 else None,
                "rss_lowest_per_150_s_mb": [round(v) for _, v in sorted(lows.items())]}

    def flat(self, warmup: float) -> list[str]:
        """What grew (empty when flat)."""
        v = self.verdict(warmup)
        problems = []
        if v["rss_growth_mb"] > max(30.0, 0.05 * v["rss_first_mb"]):
            problems.append(f"RSS grew {v['rss_growth_mb']:.0f} MB")
        if v["quiet_span_min"] >= 15 and v["rss_slope_mb_per_h"] > 20:  # short runs: too noisy to tell
            problems.append(f"RSS rising {v['rss_slope_mb_per_h']:.0f} MB/hour")
        if v["threads_last_max"] > v["threads_first_max"] + 2:
            problems.append(f"threads {v['threads_first_max']} -> {v['threads_last_max']}")
        if v["fds_last_max"] > v["fds_first_max"] + 4:
            problems.append(f"file descriptors {v['fds_first_max']} -> {v['fds_last_max']}")
        if v["ui_unanswered"] or (v["ui_ms_max"] or 0) > 2000:
            problems.append(f"UI slow to answer: max {v['ui_ms_max']} ms, {v['ui_unanswered']} unanswered")
        if self.end_step <= self.start_step:
            problems.append("training did not advance")
        problems += self.errors
        return problems


def _slope(samples: list[dict]) -> float:
    """RSS slope in MB per second, least squares."""
    return statistics.linear_regression([s["t"] for s in samples], [s["rss_mb"] for s in samples]).slope


def soak(seconds: float, out_dir: Path, action_every: float = 15.0, log=print) -> SoakResult:
    from textual.widgets import Input

    from a2c_tui import config as cfg
    from a2c_tui.run.handle import LocalHandle
    from a2c_tui.run.trainer import Event
    from a2c_tui.tui.app import A2CApp

    config = cfg.load(ROOT / "configs" / "smoke.toml", [
        f"run.out_dir={str(out_dir)!r}", "run.total_steps=1000000000", "run.checkpoint_every=4000",
        "run.keep_last=2", "env.max_episode_frames=4000"])
    handle = LocalHandle.create(config)
    result = SoakResult()
    saved = []
    handle.subscribe(lambda item: saved.append(1) if isinstance(item, Event) and item.text.startswith("saved ") else None)
    app = A2CApp(handle)
    stop_sampling = threading.Event()
    started = time.monotonic()

    def sample_loop() -> None:
        while not stop_sampling.wait(2.0):
            t0 = time.perf_counter()
            answered = threading.Event()

            def ask() -> None:
                try:
                    app.call_from_thread(lambda: None)
                    answered.set()
                except Exception:  # noqa: BLE001 - the app is gone: unanswered
                    pass

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            asker.join(10.0)
            ui_ms = (time.perf_counter() - t0) * 1000 if answered.is_set() else None
            result.samples.append({"t": time.monotonic() - started, **proc_status(), "ui_ms": ui_ms,
                                   "py_threads": threading.active_count(), "step": handle.snapshot().step,
                                   "evaluating": app.evaluation_pane.running if app.is_running else False})

    async def drive() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.0)
            result.start_step = handle.snapshot().step
            sampler = threading.Thread(target=sample_loop, name="soak-sampler", daemon=True)
            sampler.start()
            cycle = 0
            next_action = time.monotonic() + action_every
            lr_values = ("5e-4", "7e-4", "6e-4")
            while time.monotonic() - started < seconds:
                await asyncio.sleep(0.5)
                if time.monotonic() < next_action:
                    continue
                next_action = time.monotonic() + action_every
                kind = ("pause", "evaluate", "edit", "save", "evaluate_cancel")[cycle % 5]
                cycle += 1
                result.actions[kind] = result.actions.get(kind, 0) + 1
                if kind == "pause":
                    app.action_toggle_pause()
                    await asyncio.sleep(3.0)
                    app.action_toggle_pause()
                elif kind == "save":
                    app.action_save()
                elif kind == "edit":
                    app.action_show_pane("hparams")
                    await asyncio.sleep(0.2)
                    field = app.query_one("#live-lr", Input)
                    field.value = lr_values[cycle % len(lr_values)]
                    await field.action_submit()
                    app.action_show_pane("metrics")
                elif kind.startswith("evaluate"):
                    pane = app.evaluation_pane
                    if pane.running:
                        continue
                    app.action_show_pane("evaluation")
                    await asyncio.sleep(0.2)
                    app.query_one("#eval-episodes", Input).value = "4"
                    app.query_one("#eval-envs", Input).value = "2"
                    pane.start()
                    if kind == "evaluate_cancel":
                        await asyncio.sleep(3.0)
                        pane.cancel()
                    app.action_show_pane("metrics")
                if cycle % 5 == 0:
                    s = result.samples[-1] if result.samples else {}
                    log(f"{time.monotonic() - started:6.0f} s  step {handle.snapshot().step:,}  "
                        f"RSS {s.get('rss_mb', 0):.0f} MB  threads {s.get('threads')}  fds {s.get('fds')}  "
                        f"UI {s.get('ui_ms') or 0:.1f} ms  state {handle.state}")
            deadline = time.monotonic() + 120
            while app.evaluation_pane.running and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            stop_sampling.set()
            sampler.join(15)
            result.end_step = handle.snapshot().step
            if str(getattr(handle.state, "value", handle.state)) in ("ERROR", "STOPPED", "FINISHED"):
                result.errors.append(f"trainer ended {handle.state}")
            app.exit()

    try:
        asyncio.run(drive())
    finally:
        stop_sampling.set()
        handle.close(timeout=30)
    result.seconds = time.monotonic() - started
    result.checkpoints_saved = len(saved)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the comparison")
    parser.add_argument("--out", metavar="JSONL", help="write every sample here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = soak(args.minutes * 60, Path(tmp))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(s) + "\n" for s in result.samples))
    verdict = result.verdict(args.warmup)
    steps = result.end_step - result.start_step
    print(f"soak {result.seconds / 60:.1f} min: {steps:,} steps ({steps / result.seconds:,.0f} steps/s), "
          f"{result.checkpoints_saved} checkpoints saved, actions {result.actions}")
    for key, value in verdict.items():
        print(f"  {key}: {value:.1f}" if isinstance(value, float) else f"  {key}: {value}")
    problems = result.flat(args.warmup)
    print("flat" if not problems else "NOT FLAT: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
