"""Shared helpers: paths, small configs, and scripted stand-ins for the vector envs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from a2c_tui import config as cfg
from a2c_tui.run import service
from a2c_tui.run.service import RunLock
from a2c_tui.learn.envs import GameTracker, Step

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
CLI = Path(sys.executable).with_name("a2c-tui")


def load_config(name: str, out_dir: Path, *overrides: str) -> cfg.Config:
    """A preset from configs/ with its run directory under the test's tmp_path."""
    return cfg.load(CONFIGS / f"{name}.toml", [f"run.out_dir={str(out_dir)!r}", *overrides])


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed `a2c-tui` entry point, as a user runs it (not a TTY: plain output)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli_in_process(capture, *args: str) -> subprocess.CompletedProcess:
    """`a2c-tui ARGS` through `cli.main` in this process, its exit code and output shaped like
    run_cli's: the same code path but for the interpreter start (seconds apiece: each process
    imports torch), so a file's one-line errors need one real process, not one per case.
    `capture` is capsys, or capfd for `train --headless` (it writes to the file descriptors)."""
    from a2c_tui import cli

    capture.readouterr()
    code = cli.main(list(args))
    out, err = capture.readouterr()
    return subprocess.CompletedProcess(["a2c-tui", *args], code, out, err)


def wait_until(condition, timeout: float = 90, what: str = "condition", poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def runtime(monkeypatch):
    """A private runtime directory (short: socket paths are limited to 107 bytes); at the end every
    process still holding a run lock registered there is killed."""
    path = Path(tempfile.mkdtemp(prefix="a2c-rt-"))
    path.chmod(0o700)
    monkeypatch.setenv(service.RUNTIME_ENV, str(path))
    yield path
    for entry in (path / "runs").glob("*.json") if (path / "runs").exists() else ():
        run_dir = Path(json.loads(entry.read_text())["run_dir"])
        pid = RunLock.holder(run_dir) if RunLock.held(run_dir) else None
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass




def drain_terminal(fd: int) -> None:
    """Read a pty's master until it closes, as a terminal reads what it shows."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*")) if Path(path).exists() else []


class ScriptedEnvs:
    """A vector env with the `Step` interface whose transitions are written out in advance.

    `script` is a list of dicts, one per step, with per-env lists under "obs", "rewards",
    "dones", "truncated" and optionally "final_obs" (rows of ended envs) and "finished".
    Observations are 1-D float vectors; the value of a state can be read off obs[0] by
    `ValueReadingModel`, so targets can be worked out by hand.
    """

    def __init__(self, first_obs: list[list[float]], script: list[dict], n_actions: int = 2):
        self.first_obs = np.asarray(first_obs, dtype=np.float32)
        self.num_envs, size = self.first_obs.shape
        self.observation_shape = (size,)
        self.n_actions = n_actions
        self.script = list(script)
        self.actions: list[np.ndarray] = []
        self.games = GameTracker(self.num_envs)
        self.closed = False

    def reset(self) -> np.ndarray:
        return self.first_obs.copy()

    def step(self, actions: np.ndarray) -> Step:
        self.actions.append(np.asarray(actions).copy())
        s = self.script.pop(0)
        final = s.get("final_obs")
        return Step(
            obs=np.asarray(s["obs"], dtype=np.float32),
            rewards=np.asarray(s["rewards"], dtype=np.float32),
            dones=np.asarray(s["dones"], dtype=bool),
            truncated=np.asarray(s.get("truncated", [False] * self.num_envs), dtype=bool),
            final_obs=None if final is None else np.asarray(final, dtype=np.float32),
            finished=list(s.get("finished", [])),
        )

    def close(self) -> None:
        self.closed = True


class ValueReadingModel:
    """Stands in for ActorCritic: uniform policy over `n_actions`, v(s) = obs[0]."""

    is_image = False

    def __init__(self, n_actions: int = 2):
        self.n_actions = n_actions

    def __call__(self, obs):
        import torch

        obs = torch.as_tensor(obs, dtype=torch.float32)
        return torch.zeros(obs.shape[0], self.n_actions), obs[:, 0].clone()
