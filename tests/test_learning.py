"""CartPole-v1 is learned by the cartpole preset as it ships: last-100 average >= 400 within
its fixed step budget. The one test that the whole learner learns end to end, so it stays in
the default run (~40 s on 2 cores)."""

from __future__ import annotations

import time

from a2c_tui.run.metrics import read_jsonl
from a2c_tui.run.trainer import State, Trainer
from conftest import load_config


def test_cartpole_preset_learns_within_its_budget(tmp_path):
    config = load_config("cartpole", tmp_path)  # the preset unchanged, but for where the run goes
    trainer = Trainer(config, tensorboard=False)
    started = time.perf_counter()
    state = trainer.run()
    seconds = time.perf_counter() - started

    assert state == State.FINISHED
    assert config.run.total_steps <= trainer.step < config.run.total_steps + config.env.num_envs * config.algo.n_steps
    assert trainer.scores.games >= 100
    score = trainer.scores.mean_score()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    curve = [round(r["score"]) for r in records[:: max(1, len(records) // 10)] if r["score"] is not None]
    # (how long it takes is a speed figure: BENCHMARKS.md, not an assertion that a busy machine fails)
    assert score >= 400, f"last-100 average {score:.1f} after {trainer.step:,} steps in {seconds:.0f} s; curve {curve}"
