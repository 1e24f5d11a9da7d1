"""Evaluations beside training (run.eval_every) and where an update's time goes."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run import protocol
from a2c_tui.config import ConfigError
from a2c_tui.run.evaluate import PERIODIC_ENVS, Cancelled, summarize
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.run.trainer import State, Trainer, device_usage
from conftest import load_config, wait_until


class FakeEvaluations:
    """Stands in for evaluate(): each call waits for its score (or a cancel), then returns it."""

    def __init__(self):
        self.calls: list[dict] = []
        self.released: dict[int, float] = {}
        self.changed = threading.Condition()

    def release(self, index: int, score: float) -> None:
        with self.changed:
            self.released[index] = score
            self.changed.notify_all()

    def __call__(self, config, weights, *, cancel, **options):
        index = len(self.calls)
        self.calls.append({"weights": {k: v.clone() for k, v in weights.items()}, **options})
        with self.changed:
            while index not in self.released:
                if cancel.is_set():
                    raise Cancelled("cancelled")
                self.changed.wait(0.02)
        score = self.released[index]
        return summarize([score - 10, score, score + 10], [30, 40, 50])


def trainer_with(tmp_path, *overrides: str) -> tuple[Trainer, FakeEvaluations, list]:
    # 2 envs x 5 steps = 10 steps an update: an evaluation every 3 updates
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=100000", "run.torch_threads=1",
                         "run.eval_every=30", "run.eval_episodes=3", *overrides)
    trainer = Trainer(config, tensorboard=False)
    fake = FakeEvaluations()
    trainer.evaluations._run = fake
    trainer._state = State.RUNNING  # as in the loop: tests call _one_update directly (paused, none start)
    events: list = []
    trainer.subscribe(lambda item: events.append(item.text) if hasattr(item, "level") else None)
    return trainer, fake, events


def close(trainer: Trainer) -> None:
    if trainer.evaluations is not None:
        trainer.evaluations.cancel()
    trainer.metrics.close()
    trainer.envs.close()


def test_an_evaluation_of_a_snapshot_lands_in_the_metrics_and_moves_best(tmp_path):
    trainer, fake, events = trainer_with(tmp_path)
    try:
        for _ in range(3):
            trainer._one_update()
        assert trainer.evaluations.busy and "evaluating step 30 beside training (3 games)" in events
        snapshot = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        for _ in range(3):  # the next is due while the first still runs: skipped, training goes on
            trainer._one_update()
        assert "evaluation at step 60 skipped: the one of 30 still runs" in events
        assert len(fake.calls) == 1 and trainer.step == 60
        call = fake.calls[0]
        assert call["episodes"] == 3 and call["num_envs"] == PERIODIC_ENVS and call["num_threads"] == 1
        assert all(torch.equal(call["weights"][k], snapshot[k]) for k in snapshot)  # the weights of step 30 ...
        assert not all(torch.equal(call["weights"][k], v) for k, v in trainer.model.state_dict().items())  # ... kept

        fake.release(0, 120.0)
        wait_until(lambda: not trainer.evaluations.busy, 10, "the evaluation's thread to end")
        trainer._run_commands()  # the record is written between updates, on the training thread
        (record,) = [r for r in read_jsonl(trainer.run_dir / "metrics.jsonl") if "eval_score" in r]
        assert record["step"] == 30 and record["updates"] == 3 and record["eval_score"] == 120.0
        assert record["eval_games"] == 3 and record["eval_score_std"] == pytest.approx(8.165, abs=1e-3)
        assert dict(trainer.snapshot().evaluation) == record
        index = ckpt.read_index(trainer.run_dir)
        assert (index["best"], index["best_by"], index["best_value"]) == ("step_30.pt", "eval", 120.0)
        best = ckpt.load(trainer.run_dir / "best.pt")
        assert best["step"] == 30 and all(torch.equal(best["model"][k], snapshot[k]) for k in snapshot)
        assert any(e == "evaluation of step 30: 120.0 ± 8.2 over 3 games — new best.pt" for e in events)

        # a worse evaluation leaves best.pt; a better one moves it
        trainer._save_checkpoint("periodic")  # step 60: the training score no longer competes
        for index, score, best_name in ((1, 100.0, "step_30.pt"), (2, 150.0, "step_120.pt")):
            for _ in range(3):
                trainer._one_update()
            wait_until(lambda: len(fake.calls) > index, 10, "the next evaluation")
            fake.release(index, score)
            wait_until(lambda: not trainer.evaluations.busy, 10, "the evaluation's thread to end")
            trainer._run_commands()
            assert ckpt.read_index(trainer.run_dir)["best"] == best_name
        records = [r for r in read_jsonl(trainer.run_dir / "metrics.jsonl") if "eval_score" in r]
        assert [(r["step"], r["eval_score"]) for r in records] == [(30, 120.0), (90, 100.0), (120, 150.0)]
    finally:
        close(trainer)


def test_pause_lets_the_evaluation_finish_and_stop_cancels_the_next(tmp_path):
    trainer, fake, events = trainer_with(tmp_path)
    trainer.start()
    try:
        wait_until(lambda: fake.calls, 30, "the first evaluation")
        assert trainer.pause()
        fake.release(0, 50.0)
        wait_until(lambda: trainer.snapshot().evaluation, 10, "the result while paused")
        time.sleep(0.3)
        assert trainer.state == State.PAUSED and len(fake.calls) == 1  # paused: no new one
        assert trainer.resume()
        wait_until(lambda: len(fake.calls) == 2, 30, "the second evaluation")
        thread = trainer.evaluations._thread
        trainer.stop().result(timeout=10)  # does not wait for the games: cancels them
        assert not thread.is_alive()
        wait_until(lambda: any("cancelled" in e for e in events), 10, "the cancel to be told")
    finally:
        trainer.close()
        close(trainer)


def test_closing_the_run_cancels_the_evaluation_in_flight(tmp_path):
    trainer, fake, _ = trainer_with(tmp_path)
    trainer.start()
    wait_until(lambda: fake.calls, 30, "an evaluation")
    thread = trainer.evaluations._thread
    trainer.close(timeout=10)
    assert not trainer._thread.is_alive() and not thread.is_alive()
    close(trainer)


def test_no_evaluations_by_default_and_best_follows_the_training_score(tmp_path):
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=400", "run.torch_threads=1",
                         "run.checkpoint_every=200")
    assert config.run.eval_every == 0
    trainer = Trainer(config, tensorboard=False)
    assert trainer.evaluations is None
    assert trainer.run() == State.FINISHED
    assert ckpt.read_index(trainer.run_dir).get("best_by") in ("score", None)
    assert not [r for r in read_jsonl(trainer.run_dir / "metrics.jsonl") if "eval_score" in r]


def test_a_checkpoint_from_before_evaluations_resumes_and_may_turn_them_on(tmp_path):
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=1000", "run.torch_threads=1")
    trainer = Trainer(config, tensorboard=False)
    try:
        for _ in range(4):
            trainer.train_update()
        path = trainer._save_checkpoint("periodic")
    finally:
        close(trainer)
    payload = ckpt.load(path)
    for key in ("eval_every", "eval_episodes"):  # as written before this change
        del payload["config"]["run"][key]
    ckpt.save(path, payload)
    resumed = Trainer(config, resume=path, tensorboard=False, resume_overrides={"run.eval_every": 25})
    try:
        assert resumed.step == 40 and resumed.evaluations.next_step == 50
    finally:
        close(resumed)
    plain = Trainer(config, resume=path, tensorboard=False)
    try:
        assert plain.evaluations is None
    finally:
        close(plain)


@pytest.mark.parametrize("value", ["-1", "true", "1.5", "'often'", "2**63"])
def test_hostile_eval_settings_are_refused_in_one_line(value, tmp_path):
    for key in ("run.eval_every", "run.eval_episodes"):
        with pytest.raises(ConfigError) as e:
            load_config("smoke", tmp_path, f"{key}={value}")
        assert str(e.value).startswith(f"{key} = ") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="run.eval_episodes"):
        load_config("smoke", tmp_path, "run.eval_episodes=0")


def test_a_snapshot_carries_the_latest_evaluation_over_the_socket():
    snapshot = protocol.Snapshot("r", "/r", "Pong", "cpu", State.RUNNING, 10, 100, 1, 1.0, 5.0, 1.0, 1, {}, {},
                                 evaluation={"step": 10, "eval_score": 3.5})
    line = protocol.encode({"type": "snapshot", "data": protocol.snapshot_data(snapshot)})
    again = protocol.snapshot_from(protocol.decode(line, None)["data"])
    assert dict(again.evaluation) == {"step": 10, "eval_score": 3.5}


def test_each_record_says_where_the_update_time_went(tmp_path):
    config = load_config("cartpole", tmp_path, "env.num_envs=2", "run.total_steps=60", "run.torch_threads=1",
                         "run.log_every=2")
    trainer = Trainer(config, tensorboard=False)
    assert trainer.run() == State.FINISHED
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert records and all(r["time_env"] > 0 and r["time_act"] > 0 and r["time_update"] > 0 for r in records)
    assert not any(k.startswith("gpu_") for r in records for k in r)  # a CPU run has no GPU figures


def test_gpu_figures_come_from_torch_and_nvml_when_there(monkeypatch):
    from a2c_tui.run import trainer as trainer_module

    cuda = SimpleNamespace(memory_allocated=lambda d: 3 * 2**29, max_memory_reserved=lambda d: 2**32,
                           utilization=lambda d: 87)
    device = torch.device("cuda")
    monkeypatch.setattr(trainer_module, "_has_nvml", lambda: True)
    assert device_usage(device, cuda) == {"gpu_memory_gib": 1.5, "gpu_memory_max_reserved_gib": 4.0,
                                          "gpu_utilization": 87.0}

    def no_nvml(d):
        raise RuntimeError("NVML cannot read this device")

    assert "gpu_utilization" not in device_usage(device, SimpleNamespace(**{**vars(cuda), "utilization": no_nvml}))
    monkeypatch.setattr(trainer_module, "_has_nvml", lambda: False)
    assert device_usage(device, cuda) == {"gpu_memory_gib": 1.5, "gpu_memory_max_reserved_gib": 4.0}
    assert device_usage(torch.device("cpu"), cuda) == {}


def test_the_time_split_reads_as_shares_of_an_update():
    from a2c_tui.tui.metrics import time_split

    record = {"time_env": 0.031, "time_act": 0.024, "time_update": 0.045}
    assert time_split(record) == "time/update 100 ms: env 31% · act 24% · update 45%"
    assert time_split({**record, "gpu_memory_gib": 1.25, "gpu_memory_max_reserved_gib": 3.5,
                       "gpu_utilization": 87.0}).endswith(" │ GPU 1.2/3.5 GiB │ busy 87%")
    assert time_split({"score": 1.0}) == ""  # a record from before this change


def test_a_failing_evaluation_is_told_and_training_goes_on(tmp_path):
    trainer, _, events = trainer_with(tmp_path)

    def broken(config, weights, **options):
        raise MemoryError("no room for 4 more envs")

    trainer.evaluations._run = broken
    try:
        for _ in range(3):
            trainer._one_update()
        wait_until(lambda: not trainer.evaluations.busy, 10, "the evaluation's thread to end")
        trainer._run_commands()
        assert "evaluation of step 30 failed: MemoryError: no room for 4 more envs; training goes on" in events
        trainer._one_update()
        assert trainer.step == 40 and not trainer.snapshot().evaluation
        assert "best_by" not in ckpt.read_index(trainer.run_dir)
    finally:
        close(trainer)


def test_an_update_that_ends_after_a_pause_starts_no_evaluation(tmp_path):
    trainer, fake, events = trainer_with(tmp_path)
    try:
        trainer._one_update()
        trainer._one_update()
        trainer._state = State.PAUSED  # pause() while the third update runs
        trainer._one_update()
        assert trainer.step == 30 and not trainer.evaluations.busy and not fake.calls
        trainer._state = State.RUNNING  # resumed: the due evaluation starts at the next update
        trainer._one_update()
        assert trainer.evaluations.busy
        wait_until(lambda: fake.calls, 10, "the evaluation's thread")
        assert fake.calls[0]["episodes"] == 3
    finally:
        close(trainer)
