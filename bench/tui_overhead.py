"""Training steps/s with the app open in a real pseudo-terminal vs headless, as a user runs
them: `a2c-tui --config C` on a pty (TERM=xterm-256color, a real screen size, its output
read and thrown away as a terminal would) against `a2c-tui train --headless --config C`.
Windows alternate (headless, app, headless, app, ...) so drifting load hits both alike;
steps/s comes from each run's own metrics.jsonl after a warm-up.

    .venv/bin/python bench/tui_overhead.py --seconds 90 --rounds 2 [--size 120x40]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

BIN = str(Path(sys.executable).with_name("a2c-tui"))


def steps_per_sec(run_root: Path, warmup: float) -> float:
    (metrics,) = run_root.glob("*/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    records = [r for r in records if "eval_score" not in r]  # an evaluation's record has its snapshot's step
    start = records[0]["time"] + warmup
    window = [r for r in records if r["time"] >= start]
    if len(window) < 2 or window[-1]["time"] <= window[0]["time"]:
        raise SystemExit(f"too few metrics records after the warm-up in {metrics}: use longer windows")
    return (window[-1]["step"] - window[0]["step"]) / (window[-1]["time"] - window[0]["time"])


def run_headless(args, out: Path) -> None:
    cmd = [BIN, "train", "--headless", "--config", args.config, "--set", f"run.out_dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(args.seconds)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def run_app(args, out: Path) -> None:
    cols, rows = (int(v) for v in args.size.split("x"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    proc = subprocess.Popen([BIN, "--config", args.config, "--set", f"run.out_dir={out}"], stdin=slave,
                            stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    received = [0]

    def drain() -> None:  # a terminal reads everything the app writes
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            received[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    time.sleep(args.seconds)
    proc.send_signal(signal.SIGTERM)  # the app detaches, as on a dropped session; the run goes on
    proc.wait(timeout=60)
    os.close(master)
    (run_dir,) = out.glob("*/metrics.jsonl")
    subprocess.run([BIN, "stop", str(run_dir.parent)], stdout=subprocess.DEVNULL, timeout=120)
    print(f"    app wrote {received[0] / args.seconds / 1024:.1f} KiB/s to its terminal", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--seconds", type=float, default=90.0, help="length of each window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds left out at the start of each window")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of windows")
    parser.add_argument("--size", default="120x40")
    args = parser.parse_args()

    results: dict[str, list[float]] = {"headless": [], "app": []}
    for _ in range(args.rounds):
        for mode, runner in (("headless", run_headless), ("app", run_app)):
            with tempfile.TemporaryDirectory() as tmp:
                runner(args, Path(tmp))
                results[mode].append(steps_per_sec(Path(tmp), args.warmup))
            print(f"  {mode}: {results[mode][-1]:,.0f} steps/s", flush=True)
    headless, app = statistics.mean(results["headless"]), statistics.mean(results["app"])
    print(f"headless {headless:,.0f} steps/s, app {app:,.0f} steps/s: app/headless = {app / headless:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
