"""kill -9 at random moments, then resume: no checkpoint may be corrupt, no run lost.

Runs `a2c-tui train --headless` on the smoke config with a checkpoint every 400 steps
and SIGKILLs it, over and over, resuming the same run each time with `--resume <run_dir>`.
A third of the kills land at a random moment of training; a third are fired the instant a
checkpoint's temp file appears in the run directory (in the middle of writing its data);
a third the instant a new step_<N>.pt appears under its name (between the rename and
pointing latest.pt at it, or during the index update and pruning that follow).
After every kill:
  - every *.pt in the run directory must load with `checkpoints.load`;
  - the next `--resume <run_dir>` must start at the step of the newest valid checkpoint.
At the end the run is resumed once more and stopped with SIGTERM: exit code 0, and a
checkpoint at a later step.

    .venv/bin/python bench/kill_loop.py --kills 20 [--seed 0] [--keep DIR]

The test suite calls `kill_loop()` with 2 kills and with 20 (tests/test_faults.py), both in
slow-marked tests.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a2c_tui.run import checkpoints as ckpt  # noqa: E402

STARTED = re.compile(r"\brun (\S+) at step ([\d,]+) of")
TEMP = re.compile(r"^\..*\.(tmp|link)$")  # checkpoints.atomic_write_bytes / link_or_copy temp names


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("a2c-tui")
    return [str(script)] if script.exists() else [sys.executable, "-m", "a2c_tui.cli"]


@dataclass
class KillLoopResult:
    kills: int = 0
    kills_mid_write: int = 0  # a temp file was left behind: the kill interrupted a write
    kills_aimed_at_writes: int = 0  # fired when a temp file appeared (it may have just finished)
    kills_aimed_after_rename: int = 0  # fired when a new step_<N>.pt appeared
    latest_lagged: int = 0  # after a kill, latest.pt was older than the newest valid step file
    checkpoints_verified: int = 0  # *.pt loads, summed over all verifications
    corrupt: list[str] = field(default_factory=list)
    resumes_ok: int = 0
    resume_failures: list[str] = field(default_factory=list)
    resumed_steps: list[int] = field(default_factory=list)
    final_exit_code: int | None = None
    final_step: int | None = None
    seconds: float = 0.0
    run_dir: str = ""

    @property
    def ok(self) -> bool:
        return (not self.corrupt and not self.resume_failures and self.resumes_ok == self.kills
                and self.final_exit_code == 0 and self.final_step is not None
                and self.final_step >= max(self.resumed_steps, default=0))

    def summary(self) -> str:
        return (f"{self.kills} kills ({self.kills_aimed_at_writes} fired at a checkpoint write, "
                f"{self.kills_aimed_after_rename} right after a step file appeared; "
                f"{self.kills_mid_write} left a temp file = landed mid-write, "
                f"{self.latest_lagged} left latest.pt behind the newest step file), "
                f"{self.checkpoints_verified} checkpoint loads verified, {len(self.corrupt)} corrupt, "
                f"{self.resumes_ok}/{self.kills} resumes at the newest valid checkpoint, "
                f"final SIGTERM exit code {self.final_exit_code} at step {self.final_step}, "
                f"{self.seconds:.0f} s")


class _Launch:
    """One `a2c-tui train --headless` process, its output in a file."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(cli_command() + args, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, timeout: float) -> tuple[str, int]:
        """Wait for the trainer's first line; returns (run name, step it starts at)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = STARTED.search(self.text())
            if match:
                return match.group(1), int(match.group(2).replace(",", ""))
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before training: {self.text()[-500:]}")
            time.sleep(0.05)
        raise TimeoutError(f"no start line after {timeout} s: {self.text()[-500:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


def temp_files(run_dir: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(run_dir) if TEMP.match(e.name)}
    except FileNotFoundError:
        return set()


def step_files(run_dir: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(run_dir) if ckpt.STEP_FILE.match(e.name)}
    except FileNotFoundError:
        return set()


def wait_for_new_name(names, before: set[str], proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll (every 0.2 ms) until names() holds one not in `before`, the process ends, or time is up."""
    deadline = time.monotonic() + timeout
    while not (names() - before) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0002)


def verify_checkpoints(run_dir: Path, result: KillLoopResult) -> int | None:
    """Load every *.pt; returns the newest valid step (None when there is none)."""
    newest = None
    latest = None
    for path in sorted(run_dir.glob("*.pt")):
        try:
            payload = ckpt.load(path)
        except ckpt.CheckpointError as e:
            result.corrupt.append(f"{path.name}: {e}")
            continue
        result.checkpoints_verified += 1
        newest = max(newest or 0, int(payload["step"]))
        if path.name == "latest.pt":
            latest = int(payload["step"])
    if newest is not None and latest != newest:
        result.latest_lagged += 1
    return newest


def kill_loop(kills: int, out_dir: Path, seed: int = 0, start_timeout: float = 120.0,
              log=print) -> KillLoopResult:
    rng = random.Random(seed)
    result = KillLoopResult()
    started_at = time.monotonic()
    base = ["train", "--headless"]
    fresh = base + ["--config", "configs/smoke.toml",
                    "--set", f'run.out_dir="{out_dir}"', "--set", "run.name=killloop",
                    "--set", "run.checkpoint_every=400", "--set", "run.total_steps=10000000",
                    "--set", "env.max_episode_frames=400"]
    launch = _Launch(fresh, out_dir / "launch-0.log")
    try:
        name, _ = launch.wait_started(start_timeout)
        run_dir = out_dir / name
        result.run_dir = str(run_dir)
        # The first kill only once a checkpoint exists: before that there is nothing to resume.
        deadline = time.monotonic() + start_timeout
        while not (run_dir / "latest.pt").exists():
            if time.monotonic() > deadline or launch.proc.poll() is not None:
                raise RuntimeError(f"no first checkpoint: {launch.text()[-500:]}")
            time.sleep(0.05)
        leftovers = temp_files(run_dir)
        for k in range(kills):
            mode = ("random moment", "aimed at a write", "aimed after a rename")[k % 3]
            if mode == "aimed at a write":
                # Fire the moment a new temp file shows up: a checkpoint is being written.
                wait_for_new_name(lambda: temp_files(run_dir), leftovers, launch.proc)
                result.kills_aimed_at_writes += 1
            elif mode == "aimed after a rename":
                # Fire the moment a new step file has its name: latest.pt is about to follow.
                wait_for_new_name(lambda: step_files(run_dir), step_files(run_dir), launch.proc)
                result.kills_aimed_after_rename += 1
            else:
                time.sleep(rng.uniform(0.0, 3.0))
            launch.kill()
            code = launch.wait(30)
            result.kills += 1
            now = temp_files(run_dir)
            mid_write = bool(now - leftovers)
            result.kills_mid_write += mid_write
            leftovers = now
            newest = verify_checkpoints(run_dir, result)
            launch = _Launch(base + ["--resume", str(run_dir)], out_dir / f"launch-{k + 1}.log")
            try:
                _, step = launch.wait_started(start_timeout)
            except (RuntimeError, TimeoutError) as e:
                result.resume_failures.append(f"kill {k + 1}: {e}")
                break
            if step != newest:
                result.resume_failures.append(f"kill {k + 1}: resumed at step {step}, newest valid checkpoint {newest}")
            else:
                result.resumes_ok += 1
            result.resumed_steps.append(step)
            leftovers = temp_files(run_dir)  # a resume may clear stale temp files
            log(f"kill {k + 1}/{kills}: exit {code}, {mode}"
                f"{', landed mid-write' if mid_write else ''}; newest valid step {newest}; resumed at {step}")
        # Last launch: let it run a moment, then stop it the polite way.
        time.sleep(1.0)
        launch.kill(signal.SIGTERM)
        result.final_exit_code = launch.wait(120)
        result.final_step = verify_checkpoints(run_dir, result)
    finally:
        launch.close()
    result.seconds = time.monotonic() - started_at
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    args = parser.parse_args()
    out_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kill-loop-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = kill_loop(args.kills, out_dir, seed=args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    print(result.summary())
    for problem in result.corrupt + result.resume_failures:
        print(f"  problem: {problem}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
