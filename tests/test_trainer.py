"""The trainer: reproducible first updates, the diagnostics stream, the lr schedule and live
hyperparameters; the evaluation's sampling of games."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run import evaluate as evaluation
from a2c_tui.learn.a2c import scheduled_lr
from a2c_tui.config import ConfigError
from a2c_tui.learn.envs import GameTracker, Step
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.learn.model import ActorCritic
from a2c_tui.run.trainer import State, Trainer
from conftest import load_config


def first_updates(config, updates: int = 2):
    trainer = Trainer(config, tensorboard=False)
    try:
        stats = [trainer.train_update() for _ in range(updates)]
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        actions = trainer.rollout.actions.clone()
    finally:
        trainer.metrics.close()
        trainer.envs.close()
    return stats, weights, actions


def same_stats(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("preset", ["smoke", "cartpole"])
def test_same_seed_and_config_give_identical_first_updates(preset, tmp_path):
    config = load_config(preset, tmp_path, "env.num_envs=2", "run.torch_threads=1", "run.seed=5")
    stats_a, weights_a, actions_a = first_updates(config)
    stats_b, weights_b, actions_b = first_updates(config)
    assert all(same_stats(a, b) for a, b in zip(stats_a, stats_b)), (stats_a, stats_b)
    assert torch.equal(actions_a, actions_b)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    if preset == "cartpole":  # ... and the seed is what fixes them: another seed starts elsewhere
        _, weights_c, _ = first_updates(config.replace(**{"run.seed": 6}))
        assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


DIAGNOSTICS = ("score", "game_length", "r2", "entropy", "value_loss", "policy_loss", "value_target_mean",
               "value_mean", "grad_norm", "advantage_mean", "advantage_std", "loss", "lr", "steps_per_sec")


def test_run_to_the_end_logs_diagnostics_and_decays_lr_to_zero(tmp_path):
    # 4 envs x 5 steps = 20 steps an update; 100 updates; a record every 10
    config = load_config("cartpole", tmp_path, "env.num_envs=4", "run.total_steps=2000", "run.log_every=10",
                         "run.torch_threads=1", "run.checkpoint_every=1000")
    trainer = Trainer(config, tensorboard=False)
    seen = []
    trainer.subscribe(seen.append)
    assert trainer.run() == State.FINISHED
    assert trainer.step == 2000 and trainer.updates == 100
    assert trainer.current_lr() == 0.0  # lr reaches 0 at total_steps

    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(200, 2001, 200))
    for record in records:
        missing = [k for k in DIAGNOSTICS if k not in record]
        assert not missing, missing
    # the lr logged is the mean over each record's 10 updates of base * (1 - step_before / total)
    for record in records:
        first = record["step"] - 200
        expected = np.mean([scheduled_lr(config.algo.lr, "linear", first + 20 * k, 2000) for k in range(10)])
        assert record["lr"] == pytest.approx(expected)
    assert records[-1]["lr"] > 0
    assert records[-1]["games"] >= 50 and records[-1]["score"] > 0
    assert all(r["grad_norm"] > 0 and 0 < r["entropy"] <= math.log(2) + 1e-6 for r in records)

    # periodic checkpoints at 1000 and the end, latest pointing at the last
    names = sorted(p.name for p in trainer.run_dir.glob("step_*.pt"))
    assert names == ["step_1000.pt", "step_2000.pt"]
    assert (trainer.run_dir / "latest.pt").read_bytes() == (trainer.run_dir / "step_2000.pt").read_bytes()
    assert any(getattr(item, "step", None) == 2000 for item in seen)  # the final snapshot was published


def test_live_hyperparameters_apply_and_bad_ones_are_refused(tmp_path):
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=10000", "run.torch_threads=1")
    trainer = Trainer(config, tensorboard=False)
    try:
        for _ in range(50):  # step 500 of 10,000
            trainer.train_update()
        trainer.set_hparams(lr=1e-3, entropy_coef=0.05).result()
        assert trainer.current_lr() == pytest.approx(1e-3)  # the typed value is the lr from now on
        stats = trainer.train_update()
        assert stats["lr"] == pytest.approx(1e-3)
        assert trainer.hparams["entropy_coef"] == 0.05
        # ... and it decays from there to 0 at total_steps
        assert trainer.current_lr() == pytest.approx(1e-3 * (1 - 510 / 10000) / (1 - 500 / 10000))
        with pytest.raises(ConfigError, match="algo.gamma"):
            trainer.set_hparams(gamma=1.5)
        with pytest.raises(ConfigError, match="n_steps"):
            trainer.set_hparams(n_steps=3)
        assert trainer.hparams["gamma"] == 0.99
    finally:
        trainer.metrics.close()
        trainer.envs.close()


def wait_until(condition, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def test_pause_takes_effect_and_stop_saves(tmp_path):
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=1000000", "run.torch_threads=1")
    trainer = Trainer(config, tensorboard=False)
    trainer.start()
    try:
        assert wait_until(lambda: trainer.updates >= 5)
        assert trainer.pause()
        # the update in progress may finish; after that the count stays put
        seen = []
        assert wait_until(lambda: seen.append(trainer.updates) or seen[-5:] == [seen[-1]] * 5, interval=0.1)
        paused_at = trainer.updates
        time.sleep(0.5)
        assert trainer.updates == paused_at and trainer.state == State.PAUSED
        assert trainer.resume()
        assert wait_until(lambda: trainer.updates > paused_at)
        path = trainer.stop().result(timeout=30)
        assert trainer.state == State.STOPPED
        assert path is not None and path.exists() and ckpt.load(path)["step"] == trainer.step
    finally:
        trainer.close()


class CoinFlipGames:
    """Exchangeable envs whose games are short and worthless (1 step, score 0, probability 0.8)
    or long and rich (20 steps, score 100, probability 0.2): the true mean score is 20, and
    the first games to *finish* are mostly the short ones."""

    observation_shape = (4,)
    n_actions = 2

    def __init__(self, num_envs: int, rng: np.random.Generator):
        self.num_envs = num_envs
        self.rng = rng
        self.left = np.zeros(num_envs, dtype=int)
        self.prize = np.zeros(num_envs)
        self.games = GameTracker(num_envs)

    def _new_game(self, i: int) -> None:
        long = self.rng.random() < 0.2
        self.left[i], self.prize[i] = (20, 100.0) if long else (1, 0.0)

    def reset(self) -> np.ndarray:
        for i in range(self.num_envs):
            self._new_game(i)
        return np.zeros((self.num_envs, 4), dtype=np.float32)

    def step(self, actions) -> Step:
        self.left -= 1
        over = self.left == 0
        rewards = np.where(over, self.prize, 0.0)
        finished = self.games.update(rewards, over)
        for i in np.flatnonzero(over):
            self._new_game(i)
        return Step(np.zeros((self.num_envs, 4), dtype=np.float32), rewards.astype(np.float32), over,
                    np.zeros(self.num_envs, dtype=bool), None, finished)

    def close(self) -> None:
        pass


def test_evaluation_is_not_biased_toward_short_games(monkeypatch):
    config = load_config("cartpole", "unused")
    weights = ActorCritic((4,), 2).state_dict()
    rng = np.random.default_rng(0)
    monkeypatch.setattr(evaluation, "make_envs", lambda *a, **k: CoinFlipGames(a[1], rng))
    scores = []
    for _ in range(100):
        result = evaluation.evaluate(config, weights, episodes=12, num_envs=4)
        assert result["episodes"] == len(result["scores"]) == 12
        scores += result["scores"]
    # 1,200 games: the mean of fair draws has a standard error of 100 * sqrt(0.2 * 0.8 / 1200) = 1.2;
    # counting the first 12 games to finish would give far less (short games win the race).
    assert np.mean(scores) == pytest.approx(20, abs=5)
    assert set(scores) <= {0.0, 100.0}


def test_evaluation_reports_progress_and_can_be_cancelled(monkeypatch):
    config = load_config("cartpole", "unused")
    weights = ActorCritic((4,), 2).state_dict()
    monkeypatch.setattr(evaluation, "make_envs", lambda *a, **k: CoinFlipGames(a[1], np.random.default_rng(1)))
    progress = []
    result = evaluation.evaluate(config, weights, episodes=7, num_envs=3, progress=progress.append)
    assert [p.done for p in progress] == list(range(1, 8)) and all(p.total == 7 for p in progress)
    assert [p.score for p in progress] == result["scores"]
    assert result["mean"] == pytest.approx(np.mean(result["scores"]))
    assert result["median"] == pytest.approx(np.median(result["scores"]))
    assert result["mean_length"] == pytest.approx(np.mean(result["lengths"]))
    assert set(result["lengths"]) <= {1, 20}

    cancel = threading.Event()

    def stop_after_two(p):
        if p.done == 2:
            cancel.set()

    with pytest.raises(evaluation.Cancelled):
        evaluation.evaluate(config, weights, episodes=50, num_envs=2, progress=stop_after_two, cancel=cancel)


def test_evaluation_runs_the_policy_only_for_counted_games(monkeypatch):
    """Once N games have started, envs that go on playing uncounted games get no-ops, not a
    forward pass: every row the policy sees is a step of one of the N counted games."""
    config = load_config("cartpole", "unused")
    weights = ActorCritic((4,), 2).state_dict()
    monkeypatch.setattr(evaluation, "make_envs", lambda *a, **k: CoinFlipGames(a[1], np.random.default_rng(2)))
    fed = []
    real = evaluation.choose_actions

    def spy(model, obs, *args):
        fed.append(len(obs))
        return real(model, obs, *args)

    monkeypatch.setattr(evaluation, "choose_actions", spy)
    result = evaluation.evaluate(config, weights, episodes=9, num_envs=4)
    assert fed[0] == 4 and min(fed) < 4
    assert sum(fed) == sum(result["lengths"])


def test_the_score_line_says_when_no_game_has_finished():
    from a2c_tui.run.metrics import ScoreWindow, score_line

    window = ScoreWindow(100)
    assert score_line(window) == "no game finished yet"  # not "nan over 0 games"
    window.add(120.0, 500)
    window.add(180.0, 700)
    assert score_line(window) == "last-100 raw score 150.0 over 2 games"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_snapshot_names_the_device_and_the_precision(tmp_path, precision):
    # the status bar shows it: a bf16 run must not look like an fp32 one
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.torch_threads=1", f"run.precision={precision}")
    trainer = Trainer(config, tensorboard=False)
    try:
        assert trainer.snapshot().device == f"cpu ({precision})"
    finally:
        trainer.metrics.close()
        trainer.envs.close()
