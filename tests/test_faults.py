"""Faults a long run must survive: kill -9, SIGTERM/SIGHUP (a dropped SSH session), a full
disk, NaN/inf in an update, and evaluations running beside training.

Every test here fails when the protection it names is taken away (how each was checked is
listed in issue 5's report). Waits have timeouts: a hang is a failure, not a stuck CI job.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from a2c_tui.run import checkpoints as ckpt
from a2c_tui import config as cfg
from a2c_tui.learn.a2c import NonFiniteError, WeightCheck, scheduled_lr
from a2c_tui.run.evaluate import Cancelled
from a2c_tui.run.handle import LocalHandle
from a2c_tui.run.trainer import Event, State, Trainer, resolve_resume

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import kill_loop as kill_bench  # noqa: E402
from conftest import drain_terminal, wait_until  # noqa: E402

TEMP_NAME = re.compile(r"^\..*\.(tmp|link)$")  # atomic_write_bytes / link_or_copy temp files


def small_config(out_dir: Path, **overrides) -> cfg.Config:
    """The smoke preset made smaller: 2 envs (10 steps an update), 100-step games, a
    checkpoint every 100 steps, a schedule long enough never to finish in a test."""
    values = {"run.out_dir": str(out_dir), "run.total_steps": 1_000_000, "run.checkpoint_every": 100,
              "run.log_every": 2, "env.num_envs": 2, "env.max_episode_frames": 400}
    values.update(overrides)
    return cfg.load(ROOT / "configs" / "smoke.toml").replace(**values)


class Events:
    """Collects the trainer's Events (a subscriber: called on the training thread)."""

    def __init__(self):
        self.items: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, item) -> None:
        if isinstance(item, Event):
            with self._changed:
                self.items.append(item)
                self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 60.0, after: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.items[after:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event within {timeout} s; got {[e.text for e in self.items]}")
                self._changed.wait(left)

    def errors(self, after: int = 0) -> list[Event]:
        with self._changed:
            return [e for e in self.items[after:] if e.level == "error"]


def between_updates(trainer: Trainer) -> None:
    """Pause and wait until the update in flight (and its checkpoint) is done."""
    trainer.pause()
    trainer.weights().result(timeout=60)  # commands run on the training thread between updates


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(run_dir).iterdir() if TEMP_NAME.match(p.name))


def shut(trainer: Trainer) -> None:
    trainer.close(timeout=30)
    assert trainer._thread is None or not trainer._thread.is_alive(), "the training thread did not end"


# ----- kill -9 --------------------------------------------------------------------------
@pytest.mark.slow
def test_kill9_loop_short_no_corrupt_checkpoint_and_resume_continues(tmp_path):
    """Two SIGKILLs (one at a random moment, one fired the instant a checkpoint write starts),
    each followed by --resume; then SIGTERM. The 20-kill loop is the slow test below.

    Slow (three trainer starts, ~30 s). In the default run the same is pinned by
    test_death_mid_write_leaves_the_old_file_whole (a death mid-write, made certain),
    test_resume_after_kill_between_checkpoint_and_latest_uses_the_newest,
    test_resume_after_kill_before_the_first_latest_uses_the_step_file,
    test_resume_clears_temp_files_left_by_a_killed_write,
    test_sigterm_headless_saves_exits_0_and_resume_continues, and end to end by
    test_service.py::test_a_second_writer_is_refused_and_a_killed_run_resumes (a real kill -9 of
    `train --headless`: every checkpoint loads, `--resume` starts at the newest)."""
    result = kill_bench.kill_loop(2, tmp_path, seed=5, log=lambda line: None)
    assert result.corrupt == []
    assert result.resume_failures == []
    assert result.resumes_ok == result.kills == 2
    assert result.checkpoints_verified >= 2
    assert result.resumed_steps == sorted(result.resumed_steps)  # the step counter never goes back
    assert result.final_exit_code == 0 and result.final_step >= result.resumed_steps[-1]
    assert temp_files(Path(result.run_dir)) == [], "stale temp files of killed writes were not cleared"


@pytest.mark.slow
def test_kill9_loop_twenty_kills(tmp_path):
    result = kill_bench.kill_loop(20, tmp_path, seed=20, log=print)
    print(result.summary())
    assert result.ok, result.summary() + "".join(f"\n  {p}" for p in result.corrupt + result.resume_failures)
    assert result.kills_mid_write >= 1  # at least one kill really interrupted a write


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory with step_100.pt ... step_300.pt (keep_last 3) and latest.pt -> step_300."""
    out = tmp_path_factory.mktemp("trained")
    trainer = Trainer(small_config(out, **{"run.keep_last": 3, "run.total_steps": 300}), tensorboard=False)
    assert trainer.run() == State.FINISHED
    assert ckpt.load(trainer.run_dir / "latest.pt")["step"] == 300
    return trainer.run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_resume_after_kill_between_checkpoint_and_latest_uses_the_newest(trained_run, tmp_path):
    # Killed after step_300.pt was renamed into place but before latest.pt was pointed at it.
    run_dir = copy_run(trained_run, tmp_path)
    (run_dir / "latest.pt").unlink()
    os.link(run_dir / "step_200.pt", run_dir / "latest.pt")
    _, path = resolve_resume(run_dir)
    assert ckpt.load(path)["step"] == 300


def test_resume_after_kill_before_the_first_latest_uses_the_step_file(trained_run, tmp_path):
    # Killed after the first step_N.pt was written but before latest.pt existed.
    run_dir = copy_run(trained_run, tmp_path)
    (run_dir / "latest.pt").unlink()
    (run_dir / "best.pt").unlink(missing_ok=True)
    trainer = Trainer(small_config(tmp_path), resume=run_dir, tensorboard=False)
    try:
        assert trainer.step == 300
    finally:
        trainer.envs.close()
        trainer.metrics.close()


def test_resume_skips_a_corrupt_newest_file(trained_run, tmp_path):
    # Not from a kill (writes are atomic) but from a bad disk or a bad copy: fall back, don't lose the run.
    run_dir = copy_run(trained_run, tmp_path)
    (run_dir / "latest.pt").unlink()
    (run_dir / "best.pt").unlink(missing_ok=True)
    data = (run_dir / "step_300.pt").read_bytes()
    (run_dir / "step_300.pt").write_bytes(data[: len(data) // 2])
    _, path = resolve_resume(run_dir)
    assert path.name == "step_200.pt"


CRASH_MID_WRITE = r"""
import os, sys
from pathlib import Path
from a2c_tui.run import checkpoints as ckpt

target, kind = Path(sys.argv[1]), sys.argv[2]
real_fdopen = os.fdopen


class PowerCut:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os._exit(9)  # the process dies mid-write: no cleanup, no rename

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Os:
    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, *args, **kwargs):
        return PowerCut(real_fdopen(*args, **kwargs))


ckpt.os = Os()
if kind == "checkpoint":
    ckpt.save(target, ckpt.load(target))  # rewriting a file under its own name (a resumed run does)
else:
    ckpt.update_index(target.parent, {"latest": "step_999.pt"})
"""


@pytest.mark.parametrize("kind", ["checkpoint", "index"])
def test_death_mid_write_leaves_the_old_file_whole(trained_run, tmp_path, kind):
    """kill -9 in the middle of a write, made certain: the name still holds the old file."""
    run_dir = copy_run(trained_run, tmp_path)
    target = run_dir / ("step_300.pt" if kind == "checkpoint" else "index.json")
    before = digest(target)
    proc = subprocess.run([sys.executable, "-c", CRASH_MID_WRITE, str(target), kind], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert temp_files(run_dir), "the write did not start"
    assert digest(target) == before
    if kind == "checkpoint":
        assert ckpt.load(target)["step"] == 300
    else:
        assert ckpt.read_index(run_dir)["latest"] == "step_300.pt"


def test_resume_clears_temp_files_left_by_a_killed_write(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    (run_dir / ".step_400.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run_dir / f".latest.pt.{os.getpid()}.link").write_bytes(b"x")
    trainer = Trainer(small_config(tmp_path), resume=run_dir, tensorboard=False)
    try:
        assert temp_files(run_dir) == []
    finally:
        trainer.envs.close()
        trainer.metrics.close()


# ----- SIGTERM / SIGHUP ------------------------------------------------------------------
FINAL_LINE = re.compile(r"stopped at step ([\d,]+); last-100 raw score (\S+) over (\d+) games")


def start_headless(out_dir: Path, stdout, stderr) -> subprocess.Popen:
    """Headless training of the smoke config (100-step games, so the score window fills at
    once) with no periodic checkpoint: whatever is saved, the signal saved."""
    args = ["train", "--headless", "--config", "configs/smoke.toml", "--set", f'run.out_dir="{out_dir}"',
            "--set", "run.total_steps=1000000", "--set", "run.checkpoint_every=1000000",
            "--set", "run.log_every=1", "--set", "env.max_episode_frames=400"]
    return subprocess.Popen(kill_bench.cli_command() + args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def wait_for_games(out_dir: Path, proc: subprocess.Popen, games: int, timeout: float = 120) -> Path:
    """Until metrics.jsonl shows `games` finished games; returns the run directory."""
    from a2c_tui.run.metrics import read_jsonl

    def ready() -> bool:
        assert proc.poll() is None, f"the trainer exited early with {proc.returncode}"
        runs = list(out_dir.iterdir()) if out_dir.exists() else []
        return bool(runs) and any(r.get("games", 0) >= games for r in read_jsonl(runs[0] / "metrics.jsonl"))

    wait_until(ready, timeout, f"{games} finished games")
    return next(out_dir.iterdir())


def check_resume_continues(run_dir: Path, tmp_path: Path, stopped_at: int, score: float | None, games: int | None):
    """--resume <run_dir> starts where the signal stopped the run: step counter, lr schedule
    position, score window; and training goes on from there."""
    payload = ckpt.load(run_dir / "latest.pt")
    trainer = Trainer(small_config(tmp_path), resume=run_dir, tensorboard=False)
    try:
        assert trainer.step == payload["step"] == stopped_at
        total = trainer.config.run.total_steps
        assert trainer.current_lr() == pytest.approx(scheduled_lr(7e-4, "linear", stopped_at, total))
        assert trainer.current_lr() < 7e-4  # the schedule did not restart
        assert trainer.scores.state() == payload["scores"]
        assert trainer.scores.games >= 8
        if score is not None:
            assert f"{trainer.scores.mean_score():.1f}" == score and trainer.scores.games == games
        trainer.train_update()
        assert trainer.step == stopped_at + 8 * 5
    finally:
        trainer.envs.close()
        trainer.metrics.close()


def test_sigterm_headless_saves_exits_0_and_resume_continues(tmp_path):
    out_dir = tmp_path / "runs"
    log = tmp_path / "out.txt"
    with open(log, "wb") as out:
        proc = start_headless(out_dir, out, subprocess.STDOUT)
        try:
            run_dir = wait_for_games(out_dir, proc, games=8)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "received SIGTERM: saving a checkpoint and stopping" in text
    step, score, games = FINAL_LINE.search(text).groups()
    step = int(step.replace(",", ""))
    assert [p.name for p in run_dir.glob("step_*.pt")] == [f"step_{step}.pt"]
    check_resume_continues(run_dir, tmp_path, step, score, int(games))


def test_sighup_from_a_dropped_ssh_session_saves_and_exits_0(tmp_path):
    """The terminal is gone (its pty closed: every write fails with EIO), then SIGHUP."""
    out_dir = tmp_path / "runs"
    master, slave = pty.openpty()
    try:
        proc = start_headless(out_dir, slave, slave)
    finally:
        os.close(slave)
    drain = threading.Thread(target=drain_terminal, args=(master,), daemon=True)  # a terminal reads what it shows
    drain.start()
    try:
        run_dir = wait_for_games(out_dir, proc, games=8)
        os.close(master)  # the connection drops
        drain.join(5)
        time.sleep(0.3)  # the progress bar's refresh thread writes to the dead terminal meanwhile
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    files = list(run_dir.glob("step_*.pt"))
    assert len(files) == 1, "no checkpoint was written on SIGHUP"
    stopped_at = ckpt.load(files[0])["step"]
    from a2c_tui.run.metrics import read_jsonl

    assert stopped_at >= read_jsonl(run_dir / "metrics.jsonl")[-1]["step"]
    check_resume_continues(run_dir, tmp_path, stopped_at, None, None)


def test_a_stdout_pipe_nobody_reads_never_stalls_training_or_the_signal(tmp_path):
    """`Popen(stdout=PIPE, stderr=STDOUT)` never drained, the pipe shrunk to one page so that a
    line per checkpoint fills it within seconds: training goes on after it is full, and
    SIGTERM still saves and exits."""
    import fcntl
    import termios

    from a2c_tui.run.metrics import read_jsonl

    out_dir = tmp_path / "runs"
    args = ["train", "--headless", "--config", "configs/cartpole.toml", "--set", f'run.out_dir="{out_dir}"',
            "--set", "run.total_steps=100000000", "--set", "run.checkpoint_every=40", "--set", "run.log_every=1"]
    proc = subprocess.Popen(kill_bench.cli_command() + args, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        fcntl.fcntl(proc.stdout, fcntl.F_SETPIPE_SZ, 4096)

        def last_step() -> int:
            assert proc.poll() is None, f"the trainer exited early with {proc.returncode}"
            records = [r for run in out_dir.glob("*") for r in read_jsonl(run / "metrics.jsonl")]
            return records[-1]["step"] if records else 0

        def waiting_in_pipe() -> int:
            last_step()
            return int.from_bytes(fcntl.ioctl(proc.stdout, termios.FIONREAD, b"\0" * 4), sys.byteorder)

        wait_until(lambda: waiting_in_pipe() >= 4096 - 200, 120, "stdout to fill up")  # no room for another line
        full_at = last_step()
        wait_until(lambda: last_step() >= full_at + 4000, 120, "training to go on while stdout is full")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    run_dir = next(out_dir.iterdir())
    stopped_at = ckpt.load(run_dir / "latest.pt")["step"]
    assert stopped_at >= read_jsonl(run_dir / "metrics.jsonl")[-1]["step"] >= full_at + 4000  # the signal's checkpoint


SIGNAL_DURING = r"""
import os, signal, sys
import a2c_tui.run.trainer
from a2c_tui import cli

name = sys.argv[1]
real = getattr(a2c_tui.run.trainer, name)


def signalled(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)


setattr(a2c_tui.run.trainer, name, signalled)
sys.exit(cli.main(sys.argv[2:]))
"""


def test_sigterm_before_training_starts_exits_0_and_leaves_no_run_directory(tmp_path):
    """SIGTERM while the games start (before the run directory exists) or just after the run
    directory was made: the run stops cleanly, and a run that never trained leaves nothing."""
    def run(during: str) -> tuple[str, subprocess.CompletedProcess]:
        out_dir = tmp_path / during
        args = ["train", "--headless", "--config", "configs/cartpole.toml", "--set", f'run.out_dir="{out_dir}"']
        return out_dir, subprocess.run([sys.executable, "-c", SIGNAL_DURING, during, *args], cwd=ROOT,
                                       capture_output=True, text=True, timeout=300,
                                       env={**os.environ, "PYTHONWARNINGS": "ignore"})

    with ThreadPoolExecutor(2) as pool:
        for out_dir, proc in pool.map(run, ["make_envs", "MetricsSink"]):
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            assert "received SIGTERM: stopping before training" in proc.stdout
            assert "stopped before training; nothing to save, run directory removed" in proc.stdout
            assert not out_dir.exists() or list(out_dir.iterdir()) == []


# ----- a full disk -------------------------------------------------------------------------
class FullDisk:
    """Stands in for the `os` module inside a2c_tui.run.checkpoints. While `full`, a file write
    stops half way with ENOSPC ("write"), or the data never reaches the disk: fsync fails
    with ENOSPC ("fsync"), as with delayed allocation on a full filesystem."""

    def __init__(self, real_os, failure: str):
        self._os = real_os
        self.failure = failure
        self.full = False

    def __getattr__(self, name):
        return getattr(self._os, name)

    def fdopen(self, fd, *args, **kwargs):
        f = self._os.fdopen(fd, *args, **kwargs)
        return _HalfWriter(f) if self.full and self.failure == "write" else f

    def fsync(self, fd):
        if self.full and self.failure == "fsync" and not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._os.fsync(fd)


class _HalfWriter:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("failure", ["write", "fsync"])
def test_disk_full_during_checkpoint_keeps_the_previous_one_and_training_goes_on(tmp_path, monkeypatch, failure):
    disk = FullDisk(os, failure)
    monkeypatch.setattr(ckpt, "os", disk)
    every = 100
    trainer = Trainer(small_config(tmp_path, **{"run.checkpoint_every": every}), tensorboard=False)
    events = Events()
    trainer.subscribe(events)
    trainer.start()
    try:
        events.wait_for(lambda e: e.text.startswith("saved step_"))
        between_updates(trainer)
        run_dir = trainer.run_dir
        before = {name: digest(run_dir / name) for name in ("latest.pt", ckpt.read_index(run_dir)["latest"])}
        saved_step = ckpt.load(run_dir / "latest.pt")["step"]
        step_at_fault, seen = trainer.step, len(events.items)
        disk.full = True
        trainer.resume()
        events.wait_for(lambda e: e.level == "error", after=seen)
        wait_until(lambda: trainer.step >= step_at_fault + 4 * every, 120, "training to go on")
        between_updates(trainer)

        errors = events.errors(after=seen)
        assert errors and all("not written" in e.text and "\n" not in e.text for e in errors)
        assert trainer.state == State.PAUSED  # paused by the test, not stopped or failed by the error
        # Retried once per checkpoint interval, not at every update (which would flood the log
        # and spend most of the time serialising checkpoints that cannot be written).
        assert len(errors) <= (trainer.step - step_at_fault) // every + 1
        assert {name: digest(run_dir / name) for name in before} == before
        assert ckpt.load(run_dir / "latest.pt")["step"] == saved_step
        assert temp_files(run_dir) == []
        for path in run_dir.glob("*.pt"):  # no half-written file under a real name
            ckpt.load(path)

        disk.full = False  # space was freed: the next periodic checkpoint is written
        seen = len(events.items)
        trainer.resume()
        saved = events.wait_for(lambda e: e.text.startswith("saved step_"), after=seen)
        between_updates(trainer)
        assert ckpt.load(run_dir / "latest.pt")["step"] > step_at_fault + 4 * every
        assert saved.text.split()[1] == ckpt.read_index(run_dir)["latest"]
    finally:
        shut(trainer)


@pytest.mark.slow
def test_real_full_filesystem_headless_run_goes_on_and_stops_cleanly(tmp_path):
    """A real tiny filesystem (tmpfs, needs root): one checkpoint fits, then the disk is filled.
    Checkpoints, metrics.jsonl and TensorBoard all fail; training goes on, SIGTERM still ends
    it, with exit code 1 and a line saying what is lost (its checkpoint could not be written);
    the checkpoint from before is intact and the run resumes from it. A new run or a resume
    on the full disk is refused in one line and leaves nothing behind."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    log = tmp_path / "out.txt"
    try:
        args = ["train", "--headless", "--config", "configs/smoke.toml", "--set", f'run.out_dir="{mount}"',
                "--set", "run.total_steps=1000000", "--set", "run.checkpoint_every=400",
                "--set", "run.log_every=1", "--set", "env.max_episode_frames=400"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(kill_bench.cli_command() + args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_until(lambda: list(mount.glob("*/latest.pt")), 120, "the first checkpoint")
                run_dir = next(mount.glob("*/latest.pt")).parent
                first = digest(run_dir / "latest.pt")
                first_step = ckpt.load(run_dir / "latest.pt")["step"]
                with open(mount / "filler", "wb") as filler:  # fill the disk to the last byte
                    chunk = b"\0" * 2**20
                    try:
                        while True:
                            filler.write(chunk)
                            filler.flush()
                    except OSError:
                        pass
                wait_until(lambda: log.read_text().count("No space left") >= 2, 120, "failed writes")
                time.sleep(5)  # training on a full disk
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 1, log.read_text()[-2000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        text = log.read_text()
        stopped_at = int(FINAL_LINE.search(text).group(1).replace(",", ""))
        assert (f"a2c-tui: error: stopped without a checkpoint of step {stopped_at:,}: the {stopped_at - first_step:,} "
                f"steps since step_{first_step}.pt (step {first_step:,}) are lost") in text, text[-2000:]
        assert "intact" not in text and "training stopped; training goes on" not in text
        assert stopped_at >= first_step + 2 * 400, "training did not go on"
        failures = len(re.findall(r"checkpoint step_\d+\.pt not written \(No space left on device\)", text))
        assert 1 <= failures <= (stopped_at - first_step) // 400 + 2  # retried once an interval, not every update
        assert text.count("metrics not written") == 1  # said once, not at every record
        assert digest(run_dir / "latest.pt") == first
        assert temp_files(run_dir) == []
        files = sorted(mount.rglob("*"))
        for args in (["--config", "configs/smoke.toml", "--set", f'run.out_dir="{mount}"'], ["--resume", str(run_dir)]):
            refused = subprocess.run(kill_bench.cli_command() + ["train", "--headless", *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=300,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
            assert refused.returncode == 2, refused.stdout[-1000:] + refused.stderr[-1000:]
            assert refused.stderr.startswith("a2c-tui: error: ") and len(refused.stderr.splitlines()) == 1
            assert sorted(mount.rglob("*")) == files  # nothing left behind
        (mount / "filler").unlink()  # space freed: the run resumes from the checkpoint before the fault
        _, path = resolve_resume(run_dir)
        assert ckpt.load(path)["step"] == first_step
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def headless(out_dir: Path, *overrides: str) -> list[str]:
    """`train --headless` arguments: the smoke preset, 2 envs (10 steps an update)."""
    args = ["train", "--headless", "--config", str(ROOT / "configs" / "smoke.toml"), "--set",
            f"run.out_dir={str(out_dir)!r}", "--set", "env.num_envs=2", "--set", "env.max_episode_frames=400"]
    for override in overrides:
        args += ["--set", override]
    return args


def test_a_run_whose_final_checkpoint_is_not_written_exits_1_and_says_what_is_lost(tmp_path, monkeypatch, capfd):
    from a2c_tui import cli

    monkeypatch.setattr(ckpt, "save", _no_space)
    code = cli.main(headless(tmp_path, "run.total_steps=100", "run.checkpoint_every=40"))
    out, err = capfd.readouterr()
    assert code == 1, out + err
    assert err.splitlines() == ["a2c-tui: error: finished without a checkpoint of step 100: all 100 steps of this "
                                "run (it has no checkpoint) are lost"]
    assert "checkpoint step_40.pt not written (No space left on device); training goes on (retried in 40 steps); " \
           "all 40 steps of this run (it has no checkpoint) are not saved" in out
    assert "checkpoint step_100.pt not written (No space left on device); training finished; all 100 steps " in out
    assert "intact" not in out


def test_messages_about_a_failed_save_say_only_what_is_true(tmp_path, monkeypatch):
    """A checkpoint asked for, then the stop, on a full disk: no "previous one is intact" when
    there is none, no "training goes on" when it stopped; what is not saved, counted."""
    disk = FullDisk(os, "write")
    monkeypatch.setattr(ckpt, "os", disk)
    trainer = Trainer(small_config(tmp_path), tensorboard=False)
    events = Events()
    trainer.subscribe(events)
    try:
        trainer.train_update()
        trainer.train_update()
        disk.full = True
        assert trainer.save_now().result(timeout=60) is None
        assert events.errors()[-1].text == "checkpoint step_20.pt not written (No space left on device); all 20 " \
                                           "steps of this run (it has no checkpoint) are not saved"
        disk.full = False
        assert trainer.save_now().result(timeout=60) == trainer.run_dir / "step_20.pt"
        trainer.train_update()
        disk.full = True
        assert trainer.stop().result(timeout=60) is None
        assert events.errors()[-1].text == "checkpoint step_30.pt not written (No space left on device); training " \
                                           "stopped; the 10 steps since step_20.pt (step 20) are not saved"
        assert trainer.unsaved() == "the 10 steps since step_20.pt (step 20)"
    finally:
        trainer.envs.close()
        trainer.metrics.close()


def _full(monkeypatch, how: str) -> None:
    if how == "no room for a checkpoint":
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    else:  # the free space is not what statvfs says (quotas, reserved blocks): writes fail
        disk = FullDisk(os, "write")
        disk.full = True
        monkeypatch.setattr(ckpt, "os", disk)


@pytest.mark.parametrize("how", ["no room for a checkpoint", "writes fail"])
def test_a_new_run_or_resume_on_a_full_disk_is_one_line_and_leaves_nothing(trained_run, tmp_path, monkeypatch,
                                                                              capfd, how):
    from a2c_tui import cli

    run_dir = copy_run(trained_run, tmp_path)
    before = {p.name: digest(p) for p in run_dir.iterdir() if p.is_file()}
    out_dir = tmp_path / "runs"
    _full(monkeypatch, how)
    for args in (headless(out_dir, "run.total_steps=100"), ["train", "--headless", "--resume", str(run_dir)]):
        code = cli.main(args)
        err = capfd.readouterr().err
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("a2c-tui: error: "), err
        assert ("not enough disk space" if how == "no room for a checkpoint" else "No space left on device") in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []  # no empty run directory
    assert {p.name: digest(p) for p in run_dir.iterdir() if p.is_file()} == before  # the resumed run untouched


class _FailingFile:
    """A metrics.jsonl whose writes fail with ENOSPC while `full`."""

    def __init__(self, f):
        self._f = f
        self.full = True

    def write(self, text):
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(text)

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_disk_full_for_metrics_is_reported_and_training_goes_on(tmp_path):
    trainer = Trainer(small_config(tmp_path, **{"run.log_every": 1}), tensorboard=False)
    events = Events()
    trainer.subscribe(events)
    failing = _FailingFile(trainer.metrics._file)
    trainer.metrics._file = failing
    trainer.start()
    try:
        events.wait_for(lambda e: e.level == "error")
        wait_until(lambda: trainer.step >= 300, 120, "training to go on")
        assert trainer.state == State.RUNNING
        assert "metrics" in events.errors()[0].text and "No space left" in events.errors()[0].text
        assert len(events.errors()) == 1  # said once, not at every record
        failing.full = False
        step = trainer.step
        wait_until(lambda: trainer.snapshot().metrics.get("step", 0) > step, 60, "records again")
    finally:
        shut(trainer)


def test_tensorboard_writer_dying_on_a_full_disk_does_not_hang_training(tmp_path, monkeypatch):
    """tensorboardX writes from its own thread; a failed write kills that thread, and its queue
    then blocks the next add_scalar forever: the trainer would hang, deaf even to SIGTERM."""
    import tensorboardX.record_writer

    trainer = Trainer(small_config(tmp_path, **{"run.log_every": 1}), tensorboard=True)
    events = Events()
    trainer.subscribe(events)

    def no_space(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensorboardX.record_writer.RecordWriter, "write", no_space)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the writer thread's traceback
    trainer.start()
    try:
        # ~20 scalars a record, one record an update (10 steps): 1,000 steps are ~2,000 events,
        # past any queue tensorboardX is given (10 by default, 1,000 here).
        wait_until(lambda: trainer.step >= 1000, 60, "training to go past the dead TensorBoard writer")
        assert any("TensorBoard" in e.text for e in events.errors())
        assert trainer.stop().result(timeout=60) is not None  # the stop checkpoint is still written
    finally:
        shut(trainer)
    assert (trainer.run_dir / "metrics.jsonl").read_text().count("\n") >= 30  # metrics.jsonl went on


# ----- NaN / inf ---------------------------------------------------------------------------
def _poison_rewards(trainer: Trainer, after_updates: int, captured: dict):
    """From update `after_updates` on, the env hands out NaN rewards (so NaN value targets and
    a NaN loss); records the weights and optimizer state the failing update starts from.
    Returns the cure."""
    step_envs = trainer.envs.step

    def step(actions):
        result = step_envs(actions)
        if trainer.updates >= after_updates:
            if "model" not in captured:
                captured.update(_state_of(trainer))
            result.rewards[:] = float("nan")
        return result

    envs = trainer.envs
    envs.step = step
    return lambda: setattr(envs, "step", step_envs)


def _poison_gradients(trainer: Trainer, after_updates: int, captured: dict):
    """From update `after_updates` on, the policy head's gradient is infinite (the loss stays finite)."""
    def hook(grad):
        if trainer.updates >= after_updates:
            if "model" not in captured:
                captured.update(_state_of(trainer))
            return grad * float("inf")
        return grad

    return trainer.model.policy_head.weight.register_hook(hook).remove


def _state_of(trainer: Trainer) -> dict:
    return {"model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "square_avg": [s["square_avg"].clone() for s in trainer.optimizer.state.values()],
            "step": trainer.step, "updates": trainer.updates}


@pytest.mark.parametrize("poison", [_poison_rewards, _poison_gradients], ids=["nan_loss", "inf_gradient"])
def test_non_finite_update_is_not_applied_and_the_run_can_go_on_from_the_last_checkpoint(tmp_path, poison):
    trainer = Trainer(small_config(tmp_path, **{"run.total_steps": 400}), tensorboard=False)
    events = Events()
    trainer.subscribe(events)
    captured: dict = {}
    cure = poison(trainer, after_updates=15, captured=captured)  # checkpoint at step 100 = update 10
    trainer.start()  # as the app runs it: the loop waits in ERROR for the user
    try:
        wait_until(lambda: trainer.state == State.ERROR, 60, "the ERROR state")
        error = events.wait_for(lambda e: e.level == "error")
        assert "non-finite" in error.text and "last good checkpoint" in error.text and "\n" not in error.text
        trainer.weights().result(timeout=60)  # the loop is idle, not stepping
        assert captured["updates"] == 15
        # The update was not applied: weights, optimizer state and counters as before it.
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, captured["model"][key]), key
        assert all(torch.equal(a, s["square_avg"]) for a, s in
                   zip(captured["square_avg"], trainer.optimizer.state.values()))
        assert (trainer.step, trainer.updates) == (captured["step"], 15)
        assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())

        # The user loads the last good checkpoint and resumes: training goes on to the end.
        last_good = trainer.run_dir / "latest.pt"
        assert ckpt.load(last_good)["step"] == 100
        cure()
        assert trainer.load(last_good).result(timeout=60) == 100
        assert trainer.state == State.PAUSED
        assert trainer.resume()
        wait_until(lambda: trainer.state == State.FINISHED, 120, "the run to finish")
        assert trainer.step == 400
    finally:
        shut(trainer)


def test_headless_non_finite_update_exits_1_and_resume_starts_at_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(small_config(tmp_path, **{"run.total_steps": 400}), tensorboard=False)
    _poison_rewards(trainer, after_updates=15, captured={})
    assert trainer.run() == State.ERROR  # cli: exit code 1
    assert not list(trainer.run_dir.glob("step_15*.pt"))  # nothing saved from the failed state
    resumed = Trainer(small_config(tmp_path), resume=trainer.run_dir, tensorboard=False)
    try:
        assert resumed.step == 100
        assert resumed.run() == State.FINISHED and resumed.step == 400
    finally:
        resumed.envs.close()


def _finite(path: Path) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt.load(path)["model"].values())


@pytest.mark.parametrize("check", ["at once", "at the checkpoint after", "at the next actions"])
def test_an_optimizer_step_that_breaks_the_weights_pauses_and_nothing_non_finite_is_saved(tmp_path, check):
    """Adam with an eps that is 0 in float32 (the config refuses one now; an old checkpoint
    could bring it): 0/0 gives NaN weights from a finite loss and gradient. On the CPU the
    update checks the weights at once; on CUDA (forced here) the check is read later, before a
    checkpoint is written or else at the next rollout's first actions: the same pause either way."""
    every = 10_000 if check == "at the next actions" else 10
    config = small_config(tmp_path, **{"algo.optimizer": "adam", "run.checkpoint_every": every})
    trainer = Trainer(config, tensorboard=False)
    if check != "at once":
        trainer._weight_check = WeightCheck(torch.device("cpu"))
    for group in trainer.optimizer.param_groups:
        group["eps"] = 0.0
    found_by = []
    if check != "at once":
        settle = trainer._weight_check.settle

        def spied() -> None:
            try:
                settle()
            except NonFiniteError:
                found_by.append(sys._getframe(1).f_code.co_name if check == "at the next actions"
                                else sys._getframe(2).f_code.co_name)
                raise
        trainer._weight_check.settle = spied
    events = Events()
    trainer.subscribe(events)
    assert trainer.run() == State.ERROR
    # the first step broke the weights, and nothing trained on them (read later, that update is counted)
    assert trainer.updates == (0 if check == "at once" else 1)
    assert found_by == {"at once": [], "at the checkpoint after": ["_save_checkpoint"],
                        "at the next actions": ["_act"]}[check]
    assert all(_finite(path) for path in trainer.run_dir.glob("*.pt"))
    errors = events.errors()
    assert "optimizer step gave weights with a non-finite norm" in errors[0].text, [e.text for e in errors]
    assert "last good checkpoint" in errors[0].text
    assert trainer.save_now().result(timeout=60) is None  # and a save asked for by hand is refused
    assert "not finite" in events.errors()[-1].text
    assert all(_finite(path) for path in trainer.run_dir.glob("*.pt"))


def _save_non_finite(path: Path) -> None:
    """What a run made before non-finite weights were refused could leave: NaN weights."""
    payload = ckpt.load(path)
    payload["model"] = {k: torch.full_like(v, float("nan")) for k, v in payload["model"].items()}
    torch.save(payload, path)


def test_resume_and_load_skip_checkpoints_with_non_finite_weights_and_say_so(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    for name in ("latest.pt", "step_300.pt"):
        _save_non_finite(run_dir / name)
    trainer = Trainer(small_config(tmp_path), resume=run_dir, tensorboard=False)
    events = Events()
    trainer.subscribe(events)
    try:
        assert trainer.step == 200
        # In the app the user picks the broken file: the newest finite one is loaded instead.
        assert trainer.load(run_dir / "step_300.pt").result(timeout=60) == 200
        assert events.items[-1].text == "loaded step_200.pt at step 200 (skipped step_300.pt, latest.pt: non-finite weights)"
        assert trainer.run() == State.FINISHED and trainer.step == 300
        started = next(e.text for e in events.items if e.text.startswith("run "))
        assert started.endswith(" from step_200.pt (skipped latest.pt, step_300.pt: non-finite weights)")
    finally:
        trainer.envs.close()
    assert all(_finite(path) for path in run_dir.glob("*.pt"))
    for path in run_dir.glob("*.pt"):
        _save_non_finite(path)
    with pytest.raises(ckpt.CheckpointError, match="holds finite weights") as refused:
        Trainer(small_config(tmp_path), resume=run_dir, tensorboard=False)
    assert "\n" not in str(refused.value)


# ----- evaluations beside training ---------------------------------------------------------
def _run_threads(target, count: int, timeout: float) -> list[BaseException]:
    """Run `target(i)` in `count` threads; a thread still running after `timeout` is a deadlock."""
    failures: list[BaseException] = []

    def body(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            failures.append(e)

    threads = [threading.Thread(target=body, args=(i,), name=f"eval-test-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"deadlock: {hung} still running after {timeout} s"
    return failures


@pytest.fixture
def training(tmp_path):
    """A LocalHandle training the small config in its thread; closed (with a timeout) after."""
    handles = []

    def make(**overrides) -> LocalHandle:
        handle = LocalHandle(Trainer(small_config(tmp_path, **overrides), tensorboard=False))
        handle.start()
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        shut(handle.trainer)


def test_repeated_evaluations_while_training(training):
    handle = training(**{"run.checkpoint_every": 50, "run.keep_last": 1000})  # rotation: the test after this
    wait_until(lambda: handle.list_checkpoints(), 60, "a first checkpoint")
    step_before = handle.snapshot().step
    results = []

    def evaluate_again_and_again(i):
        for n in range(3):
            source = None if (i + n) % 2 == 0 else handle.list_checkpoints()[0].path
            results.append(handle.evaluate(source, episodes=2, envs=2))

    failures = _run_threads(evaluate_again_and_again, 2, timeout=180)
    assert failures == []
    assert len(results) == 6 and all(r["episodes"] == 2 for r in results)
    assert handle.state == State.RUNNING and handle.snapshot().step > step_before  # training went on
    assert handle.stop().result(timeout=60) is not None


def test_cancelled_evaluation_stops_promptly_and_closes_its_envs(training, monkeypatch):
    import a2c_tui.run.evaluate

    opened = []

    def make_envs(*args, **kwargs):
        envs = real_make_envs(*args, **kwargs)
        opened.append(envs)
        close = envs.close
        envs.closed = False
        envs.close = lambda: (close(), setattr(envs, "closed", True))
        return envs

    real_make_envs = a2c_tui.run.evaluate.make_envs
    monkeypatch.setattr(a2c_tui.run.evaluate, "make_envs", make_envs)
    handle = training()
    cancel = threading.Event()
    progressed = threading.Event()

    def on_progress(p):
        progressed.set()
        cancel.set()  # cancelled midway: after its first finished game

    def long_evaluation(_):
        with pytest.raises(Cancelled):
            handle.evaluate(None, episodes=10_000, envs=2, progress=on_progress, cancel=cancel)

    assert _run_threads(long_evaluation, 1, timeout=120) == []
    assert progressed.is_set()
    # Cancelled before it started: refused at once.
    assert _run_threads(long_evaluation, 1, timeout=30) == []
    assert opened and all(envs.closed for envs in opened)  # the envs' C++ thread pools went with them
    assert handle.state == State.RUNNING


def test_evaluating_checkpoints_while_they_are_rotated_out(training):
    """keep_last 1 and a checkpoint every update: the file an evaluation picked is usually
    deleted before or while it loads. Each evaluation either runs or is refused with a
    CheckpointError; nothing else, no hang, and no result file left beside a deleted checkpoint."""
    handle = training(**{"run.checkpoint_every": 10, "run.keep_last": 1})
    wait_until(lambda: list(handle.run_dir.glob("step_*.pt")), 60, "a first checkpoint")
    outcomes = {"ran": 0, "refused": 0}

    def chase_the_newest(_):
        for _ in range(6):
            newest = max(handle.run_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
            try:
                handle.evaluate(newest, episodes=1, envs=1)
                outcomes["ran"] += 1
            except ckpt.CheckpointError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1

    failures = _run_threads(chase_the_newest, 2, timeout=180)
    assert failures == [], [f"{type(e).__name__}: {e}" for e in failures]
    assert outcomes["ran"] + outcomes["refused"] == 12
    assert handle.state == State.RUNNING
    assert handle.stop().result(timeout=60) is not None
    shut(handle.trainer)
    run_dir = handle.run_dir
    orphans = [p.name for p in run_dir.glob("*.eval.json") if not p.with_name(p.name[:-len(".eval.json")] + ".pt").exists()]
    assert orphans == []
    assert ckpt.load(run_dir / "best.pt") and ckpt.load(run_dir / "latest.pt")


# ----- soak ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_soak_app_four_minutes(tmp_path):
    """bench/soak.py for 4 minutes: RSS, threads and file descriptors flat, the UI answers."""
    import soak as soak_bench

    result = soak_bench.soak(240, tmp_path, log=print)
    print(result.verdict(60.0))
    assert result.flat(60.0) == []
    assert result.actions.get("evaluate", 0) >= 2 and result.actions.get("edit", 0) >= 2


def test_every_evaluation_hands_its_free_memory_back(tmp_path, monkeypatch):
    """An evaluation's checkpoint, model and games are freed and their pages trimmed when it
    ends, finished or cancelled (without the trim the app's RSS crept up per evaluation)."""
    import a2c_tui.run.handle as handle_module

    trims = []
    monkeypatch.setattr(handle_module, "release_free_memory", lambda: trims.append(1))
    handle = LocalHandle(Trainer(small_config(tmp_path), tensorboard=False))
    try:
        path = handle.trainer.save_now().result()
        assert handle.evaluate(path, episodes=1, envs=1)["episodes"] == 1
        assert len(trims) == 1
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            handle.evaluate(None, episodes=1, envs=1, cancel=cancel)
        assert len(trims) == 2
    finally:
        handle.close(timeout=30)
    assert handle_module._libc() is None or handle_module._libc().malloc_trim(0) in (0, 1)


def test_a_library_thread_dying_of_a_full_disk_gets_one_line(monkeypatch, capsys):
    import errno
    import threading

    from a2c_tui import cli

    def write_fails():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(threading, "excepthook", cli._thread_error)
    thread = threading.Thread(target=write_fails, name="tensorboard-writer")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    assert err.splitlines() == ["a2c-tui: tensorboard-writer stopped: [Errno 28] No space left on device"]

    bug = threading.Thread(target=lambda: 1 / 0)  # a bug elsewhere keeps its traceback
    bug.start()
    bug.join()
    assert "Traceback" in capsys.readouterr().err
