"""The run as a service: what attaching apps cost the training, and how fast attaching feels.

    .venv/bin/python bench/service.py --seconds 30 --rounds 3 [--json out.json]

On configs/space_invaders.toml (16 envs), in alternating windows of one run:
  - in-process: a Trainer's train_update loop in this process (the headless loop before the
    service existed), while the service is paused;
  - service with 0, 1 and 3 attached apps (real `a2c-tui attach` processes on ptys that draw
    the screen), and with 1 app showing the live game (played in the app's process with weights
    fetched over the socket), while the in-process trainer idles; steps/s from the service's
    step counter;
  - service with one client that said hello and never reads (a suspended ssh): for --stall
    seconds, with the service's RSS before and after.
Then: time to the first full screen of `a2c-tui attach` (the status bar drawn on the pty), and
the pause / resume round trip (command sent -> reply, and -> the paused snapshot seen).
Ratios are service / in-process in adjacent windows (the machine drifts ±10 % minute to minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

from a2c_tui import config as cfg
from a2c_tui.run import protocol, service
from a2c_tui.run.service import RunLock, request
from a2c_tui.run.trainer import Trainer
from a2c_tui.tui.remote import RemoteHandle

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("a2c-tui")


def service_steps(run_dir: Path) -> int:
    return protocol.snapshot_from(request(run_dir, "status")["snapshot"]).step


def service_rate(run_dir: Path, seconds: float) -> float:
    request(run_dir, "resume")
    time.sleep(3)  # the first updates after a resume
    s0, t0 = service_steps(run_dir), time.perf_counter()
    time.sleep(seconds)
    s1, t1 = service_steps(run_dir), time.perf_counter()
    request(run_dir, "pause")
    return (s1 - s0) / (t1 - t0)


class App:
    """`a2c-tui attach RUN` on a pty of 120x40 whose output is read (as a terminal does)."""

    def __init__(self, run_dir: Path, game: bool = False):
        import fcntl
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.started = time.perf_counter()
        self.first_screen: float | None = None
        self.proc = subprocess.Popen([str(CLI), "attach", str(run_dir)], stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, env={**os.environ, "TERM": "xterm-256color"})
        os.close(slave)
        self.master = master
        self.seen = b""
        self.game = game
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self.master, 65536):
                if self.first_screen is None:
                    self.seen = (self.seen + chunk)[-200_000:]
                    if b"steps/s" in self.seen and b"Metrics" in self.seen:  # status bar and tabs drawn
                        self.first_screen = time.perf_counter() - self.started
                        if self.game:
                            os.write(self.master, b"v")  # show the live game: played in this app's process
        except OSError:
            pass

    def close(self) -> None:
        self.proc.terminate()  # SIGTERM: the app detaches
        self.proc.wait(30)
        os.close(self.master)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="measuring window (default 30)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stall", type=float, default=60, help="seconds of the non-reading client (default 60)")
    parser.add_argument("--config", default=str(ROOT / "configs/space_invaders.toml"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="a2c-bench-svc-"))
    os.environ.setdefault(service.RUNTIME_ENV, str(out / "rt"))
    config = cfg.load(args.config, [f"run.out_dir='{out}/runs'", "run.total_steps=1000000000",
                                    "run.checkpoint_every=1000000000"])
    head = subprocess.Popen([str(CLI), "train", "--headless", "--config", args.config, "--set",
                             f"run.out_dir='{out}/svc'", "--set", "run.total_steps=1000000000", "--set",
                             "run.checkpoint_every=1000000000"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    apps: list[App] = []
    try:
        deadline = time.monotonic() + 120
        while not any(e.state == "RUNNING" for e in service.known_runs()):
            if time.monotonic() > deadline or head.poll() is not None:
                raise SystemExit("the service did not start")
            time.sleep(0.5)
        run_dir = next(e.run_dir for e in service.known_runs() if e.state == "RUNNING")
        request(run_dir, "pause")
        trainer = Trainer(config, tensorboard=False)
        batch = config.env.num_envs * config.algo.n_steps
        for _ in range(5):
            trainer.train_update()

        def in_process(seconds: float) -> float:
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                trainer.train_update()
                n += 1
            return n * batch / (time.perf_counter() - t0)

        rows: dict[str, list[float]] = {k: [] for k in ("in_process", "apps_0", "apps_1", "apps_3", "app_game")}
        ratios: dict[str, list[float]] = {k: [] for k in ("apps_0", "apps_1", "apps_3", "app_game")}
        first_screens: list[float] = []
        for r in range(args.rounds):
            while apps:
                apps.pop().close()
            base = in_process(args.seconds)
            rows["in_process"].append(base)
            for n in (0, 1, 3):
                while len(apps) < n:
                    apps.append(App(run_dir))
                while len(apps) > n:
                    apps.pop().close()
                time.sleep(4 if n else 0)  # the new apps start, attach and draw
                rate = service_rate(run_dir, args.seconds)
                rows[f"apps_{n}"].append(rate)
                ratios[f"apps_{n}"].append(rate / base)
                print(f"round {r + 1}: in-process {base:,.0f}, service with {n} app(s) {rate:,.0f} steps/s "
                      f"({rate / base:.3f})", flush=True)
            first_screens += [a.first_screen for a in apps if a.first_screen is not None]
            while apps:
                apps.pop().close()
            apps.append(App(run_dir, game=True))
            time.sleep(6)
            rate = service_rate(run_dir, args.seconds)
            rows["app_game"].append(rate)
            ratios["app_game"].append(rate / base)
            print(f"round {r + 1}: service with 1 app showing the live game {rate:,.0f} steps/s ({rate / base:.3f})",
                  flush=True)
        while apps:
            apps.pop().close()

        # attach: the first full screen, several times
        request(run_dir, "resume")
        for _ in range(3):
            app = App(run_dir)
            deadline = time.monotonic() + 30
            while app.first_screen is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if app.first_screen is not None:
                first_screens.append(app.first_screen)
            app.close()

        # pause / resume round trips while training
        remote = RemoteHandle.attach(run_dir)
        paused_seen = threading.Event()
        remote.subscribe(lambda item: paused_seen.set() if getattr(item, "state", None) == "PAUSED" else None)
        replies, effects = [], []
        for _ in range(10):
            paused_seen.clear()
            t0 = time.perf_counter()
            remote.pause()
            replies.append(time.perf_counter() - t0)
            paused_seen.wait(5)
            effects.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            remote.resume()
            replies.append(time.perf_counter() - t0)
            time.sleep(1)
        remote.close()

        # a client that stops reading
        pid = RunLock.holder(run_dir)
        request(run_dir, "pause")
        before_rate = service_rate(run_dir, args.stall / 2)
        rss_before = rss_mb(pid)
        stalled = service.connect(run_dir)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(protocol.command(0, "hello", subscribe=True))
        stalled_rate = service_rate(run_dir, args.stall)
        rss_after = rss_mb(pid)
        stalled.close()

        result = {
            "machine": f"{platform.node()} {os.cpu_count()} cores, python {platform.python_version()}",
            "config": args.config, "seconds": args.seconds, "rounds": args.rounds,
            "steps_per_sec": {k: [round(v) for v in vs] for k, vs in rows.items()},
            "ratio_to_in_process_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
            "attach_first_screen_s": [round(v, 2) for v in first_screens],
            "pause_reply_ms_median": round(1000 * statistics.median(replies), 1),
            "pause_reply_ms_max": round(1000 * max(replies), 1),
            "pause_seen_ms_median": round(1000 * statistics.median(effects), 1),
            "pause_seen_ms_max": round(1000 * max(effects), 1),
            "stalled_client": {"seconds": args.stall, "steps_per_sec_before": round(before_rate),
                               "steps_per_sec_stalled": round(stalled_rate),
                               "ratio": round(stalled_rate / before_rate, 3),
                               "service_rss_mb_before": round(rss_before, 1),
                               "service_rss_mb_after": round(rss_after, 1)},
        }
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        trainer.metrics.close()
        trainer.envs.close()
        return 0
    finally:
        for app in apps:
            app.proc.kill()
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()


if __name__ == "__main__":
    sys.exit(main())
