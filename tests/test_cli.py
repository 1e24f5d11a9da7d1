"""Atari end to end through the installed `a2c-tui` command: headless training on the smoke
preset, then `eval` on its checkpoint; bad checkpoints given to `eval`/`--resume` fail in one line."""

from __future__ import annotations

import functools
import json
import os
import re

import numpy as np
import pytest

from a2c_tui.run import checkpoints as ckpt
from a2c_tui import config as cfg
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.learn.model import ActorCritic
from conftest import CONFIGS, cli_in_process, run_cli


def test_smoke_training_then_evaluation_through_the_cli(tmp_path, capsys, monkeypatch):
    """Training through the installed command; `eval` through cli.main in this process (a second
    interpreter start would only import torch again)."""
    runs = tmp_path / "runs"
    train = run_cli("train", "--headless", "--config", str(CONFIGS / "smoke.toml"), "--set",
                    f"run.out_dir={str(runs)!r}", cwd=tmp_path, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert "Traceback" not in train.stderr
    (run_dir,) = runs.iterdir()
    assert f"run directory: {run_dir}" in train.stdout
    assert re.search(r"finished at step 4,000\b", train.stdout), train.stdout[-1000:]
    assert train.stdout.count("step 4,000/4,000") == 1, train.stdout[-1000:]  # piped: the end once

    # what a run leaves behind
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.toml", "metrics.jsonl", "latest.pt", "index.json", "tb", "step_2000.pt", "step_4000.pt"} <= names
    assert cfg.load(run_dir / "config.toml") == cfg.load(CONFIGS / "smoke.toml", [f"run.out_dir={str(runs)!r}"])
    assert any((run_dir / "tb").iterdir())  # TensorBoard events
    records = read_jsonl(run_dir / "metrics.jsonl")
    # 8 envs x 5 steps = 40 steps an update, a record every 5 updates: 4,000 steps -> 20 records
    assert [r["step"] for r in records] == list(range(200, 4001, 200))
    assert all(0 < r["entropy"] <= np.log(6) + 1e-6 and r["lr"] > 0 for r in records)
    latest = ckpt.load(run_dir / "latest.pt")
    assert latest["step"] == 4000 and latest["env_id"] == "SpaceInvaders" and latest["n_actions"] == 6
    assert not (tmp_path / "checkpoints").exists()  # nothing outside out_dir

    result_file = tmp_path / "r.json"
    monkeypatch.chdir(tmp_path)
    ev = cli_in_process(capsys, "eval", str(run_dir / "latest.pt"), "--episodes", "2", "--envs", "2",
                        "--json", str(result_file))
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "2 games" in ev.stdout and "mean" in ev.stdout
    result = json.loads(result_file.read_text())
    for key in ("mean", "std", "median", "min", "max", "mean_length", "episodes", "scores"):
        assert key in result, key
    scores = result["scores"]
    assert result["episodes"] == len(scores) == 2
    assert result["mean"] == pytest.approx(np.mean(scores))
    assert result["std"] == pytest.approx(np.std(scores))
    assert result["median"] == pytest.approx(np.median(scores))
    assert (result["min"], result["max"]) == (min(scores), max(scores))
    # raw SpaceInvaders points (5 to 30 an invader, 50-300 a saucer), not clipped rewards
    assert all(s >= 0 and s % 5 == 0 for s in scores)
    assert result["mean_length"] > 0
    # the result is also kept beside the checkpoint it scored
    assert (run_dir / "step_4000.eval.json").exists()


@functools.cache
def model_state(n_actions: int) -> dict:
    return ActorCritic((4, 84, 84), n_actions).state_dict()  # its orthogonal init takes ~0.5 s


def write_payload(path, **changes):
    """A checkpoint file for the smoke preset, with some fields changed."""
    config = cfg.load(CONFIGS / "smoke.toml")
    payload = {"config": config.to_dict(), "env_id": "SpaceInvaders", "n_actions": 6, "obs_shape": [4, 84, 84],
               "model": model_state(6), "step": 0}
    payload.update(changes)
    ckpt.save(path, payload)
    return path


def test_bad_checkpoints_fail_in_one_line_through_the_cli(tmp_path, capfd, monkeypatch):
    """Through cli.main in this process (each start imports torch: seconds apiece); the real
    process's exit code and single line are pinned by test_bad_input.py and test_config.py."""
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(10_000))
    good = write_payload(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:50_000])
    four_actions = write_payload(tmp_path / "four_actions.pt", n_actions=4,
                                 model=model_state(4))
    breakout_config = cfg.load(CONFIGS / "smoke.toml", ["env.id=Breakout"]).to_dict()
    other_game = write_payload(tmp_path / "other_game.pt", config=breakout_config)
    resume_dir = tmp_path / "run"
    resume_dir.mkdir()
    (resume_dir / "latest.pt").write_bytes(good.read_bytes()[:50_000])

    cases = {
        # name: (arguments, what the one line must mention)
        "eval random bytes": (["eval", str(noise), "--episodes", "1"], "noise.pt"),
        "eval truncated": (["eval", str(truncated), "--episodes", "1"], "truncated.pt"),
        "eval missing": (["eval", str(tmp_path / "nothing.pt"), "--episodes", "1"], "does not exist"),
        "eval other action count": (["eval", str(four_actions), "--episodes", "1"], "4 actions"),
        "eval other game": (["eval", str(other_game), "--episodes", "1"], "not Breakout"),
        "resume truncated": (["train", "--headless", "--resume", str(resume_dir)], "latest.pt"),
    }
    monkeypatch.chdir(tmp_path)
    results = {name: cli_in_process(capfd, *args) for name, (args, _) in cases.items()}
    failures = []
    for name, (_, mention) in cases.items():
        proc = results[name]
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1 or mention not in lines[0] or "Traceback" in proc.stderr:
            failures.append(f"{name}: exit {proc.returncode}, stderr {proc.stderr.strip()[-400:]!r}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in resume_dir.iterdir()) == ["latest.pt"]  # a refused resume writes nothing


def test_eval_progress_says_what_its_number_is():
    from types import SimpleNamespace

    from a2c_tui.cli import _EvalBar

    shown = []
    bar = _EvalBar(3)
    bar.progress, bar.task = SimpleNamespace(update=lambda task, **fields: shown.append(fields)), 0
    bar(SimpleNamespace(done=1, total=3, score=180.0, length=700))
    assert shown == [{"completed": 1, "description": "games · last game scored 180"}]


def test_run_options_before_the_command_are_not_dropped():
    from a2c_tui.cli import UsageError, parse_args

    args = parse_args(["--config", "configs/smoke.toml", "--set", "algo.lr=1e-3", "--paused",
                       "train", "--headless", "--set", "run.seed=3"])
    assert (args.config, args.overrides, args.paused) == ("configs/smoke.toml", ["algo.lr=1e-3", "run.seed=3"], True)
    args = parse_args(["train", "--config", "configs/pong.toml"])
    assert (args.config, args.overrides, args.paused) == ("configs/pong.toml", [], False)
    with pytest.raises(UsageError, match="--resume given twice"):
        parse_args(["--resume", "runs/a", "train", "--resume", "runs/b"])
    with pytest.raises(UsageError, match="'ls' does not take them"):
        parse_args(["--config", "configs/pong.toml", "ls"])
    assert parse_args(["eval", "runs/a/latest.pt"]).command == "eval"
