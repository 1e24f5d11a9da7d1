"""Checkpoint round-trip and resume; corrupt, foreign and mismatched files are refused in one line."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from a2c_tui.run import checkpoints as ckpt
from a2c_tui.learn.a2c import scheduled_lr
from a2c_tui.run.trainer import Trainer
from conftest import load_config

CARTPOLE = ("run.torch_threads=1", "env.num_envs=4", "run.total_steps=20000", "run.log_every=10",
            "run.checkpoint_every=1000000")


@pytest.fixture
def trained(tmp_path):
    """A CartPole trainer after 30 updates (600 steps, a few dozen finished games), saved."""
    config = load_config("cartpole", tmp_path, *CARTPOLE)
    trainer = Trainer(config, tensorboard=False)
    for _ in range(30):
        trainer.train_update()
    path = trainer.save_now().result()
    yield trainer, path
    trainer.metrics.close()
    trainer.envs.close()


def test_checkpoint_holds_everything_to_resume(trained):
    trainer, path = trained
    assert path.name == "step_600.pt" and (path.parent / "latest.pt").exists()
    payload = ckpt.load(path)  # torch.load(weights_only=True) inside: plain data only
    assert payload["step"] == 600 and payload["updates"] == 30
    assert payload["config"] == trainer.config.to_dict()
    assert payload["env_id"] == "CartPole-v1" and payload["n_actions"] == 2 and payload["obs_shape"] == [4]
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(payload["model"][name], tensor)
    assert payload["scores"]["scores"] == list(trainer.scores.scores)
    assert payload["scores"]["games"] == trainer.scores.games >= 20
    square_avgs = [s["square_avg"] for s in payload["optimizer"]["state"].values()]
    assert len(square_avgs) == len(list(trainer.model.parameters()))
    # the resolved config is also saved beside the run
    assert (path.parent / "config.toml").exists()


def test_resume_continues_step_schedule_scores_and_optimizer(trained):
    trainer, path = trained
    resumed = Trainer(trainer.config, resume=path.parent, tensorboard=False)
    try:
        assert resumed.run_dir == trainer.run_dir
        assert (resumed.step, resumed.updates) == (600, 30)
        assert resumed.current_lr() == pytest.approx(trainer.current_lr())
        # the schedule goes on from step 600, not from the start
        assert resumed.current_lr() == pytest.approx(trainer.config.algo.lr * (1 - 600 / 20000))
        assert list(resumed.scores.scores) == list(trainer.scores.scores)
        assert list(resumed.scores.lengths) == list(trainer.scores.lengths)
        assert resumed.scores.games == trainer.scores.games
        for name, tensor in trainer.model.state_dict().items():
            assert torch.equal(resumed.model.state_dict()[name], tensor)
        ours = [resumed.optimizer.state[p]["square_avg"] for p in resumed.model.parameters()]
        theirs = [trainer.optimizer.state[p]["square_avg"] for p in trainer.model.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        assert not all(torch.equal(a, torch.ones_like(a)) for a in ours)  # not a fresh optimizer
        assert torch.equal(torch.get_rng_state(), ckpt.load(path)["rng"]["torch"])

        games_before = resumed.scores.games
        stats = resumed.train_update()
        assert (resumed.step, resumed.updates) == (620, 31)
        assert stats["lr"] == pytest.approx(scheduled_lr(trainer.config.algo.lr, "linear", 600, 20000))
        # the optimizer went on from its saved square average: ms' = alpha * ms + (1 - alpha) g^2 >= alpha * ms
        after = [resumed.optimizer.state[p]["square_avg"] for p in resumed.model.parameters()]
        assert all(bool((a >= 0.99 * b - 1e-7).all()) for a, b in zip(after, theirs))
        assert resumed.scores.games >= games_before
    finally:
        resumed.metrics.close()
        resumed.envs.close()


def test_resume_from_a_named_checkpoint_file(trained):
    trainer, path = trained
    for _ in range(5):
        trainer.train_update()
    later = trainer.save_now().result()
    assert later.name == "step_700.pt"
    resumed = Trainer(trainer.config, resume=path, tensorboard=False)  # the older file, by name
    try:
        assert resumed.step == 600
    finally:
        resumed.metrics.close()
        resumed.envs.close()


def test_resume_may_change_machine_settings_and_nothing_else(trained, capsys):
    """Moving a run to a bigger box: --set on --resume changes threads and checkpoint cadence,
    the run keeps everything it learns with; any other key is refused before anything is written."""
    from a2c_tui import config as cfg
    from a2c_tui.cli import main

    trainer, path = trained
    overrides = cfg.resume_overrides(["env.num_threads=2", "run.keep_last=7", "run.checkpoint_every=300"])
    resumed = Trainer(trainer.config, resume=path.parent, tensorboard=False, resume_overrides=overrides)
    try:
        assert (resumed.config.env.num_threads, resumed.config.run.keep_last, resumed.config.run.checkpoint_every) \
            == (2, 7, 300)
        assert resumed.config.algo == trainer.config.algo and resumed.config.run.total_steps == 20000
        assert resumed.step == 600 and resumed.current_lr() == pytest.approx(trainer.current_lr())
        assert "keep_last = 7" in (path.parent / "config.toml").read_text()  # saved for the next resume
    finally:
        resumed.metrics.close()
        resumed.envs.close()

    before = sorted((p.name, p.stat().st_mtime_ns) for p in path.parent.iterdir())
    for bad, named in ((["--set", "algo.lr=1e-3"], "algo.lr"), (["--set", "env.num_envs=8"], "env.num_envs"),
                       (["--set", "env.num_threads=-1"], "env.num_threads = -1"),
                       (["--config", "configs/smoke.toml"], "drop --config")):
        assert main(["train", "--headless", "--resume", str(path.parent), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err, err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in path.parent.iterdir()) == before
    with pytest.raises(cfg.ConfigError):  # the trainer checks too, for callers other than the CLI
        Trainer(trainer.config, resume=path.parent, tensorboard=False, resume_overrides={"algo.lr": 1e-3})


def test_retention_keeps_the_newest_periodic_files(tmp_path):
    for step in (100, 200, 300, 400):
        ckpt.save(tmp_path / f"step_{step}.pt", {"step": step})
    ckpt.link_or_copy(tmp_path / "step_100.pt", tmp_path / "best.pt")
    removed = ckpt.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step_100.pt", "step_200.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "step_300.pt", "step_400.pt"]
    assert ckpt.load(tmp_path / "best.pt")["step"] == 100  # best survives its step file


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def one_line_error(path) -> str:
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path.name) in message
    return message


def test_corrupt_and_foreign_files_are_refused_in_one_line(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    assert "corrupt" in one_line_error(truncated)

    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(4096))
    one_line_error(noise)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    one_line_error(empty)

    flipped = tmp_path / "flipped.pt"
    middle = bytearray(data)
    for i in range(len(middle) // 3, len(middle) // 3 + 64):
        middle[i] ^= 0xFF
    flipped.write_bytes(bytes(middle))
    one_line_error(flipped)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    assert "not an a2c-tui checkpoint" in one_line_error(foreign)

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    buffer = io.BytesIO()
    torch.save({"format": ckpt.FORMAT, "step": RunsCode(marker)}, buffer, pickle_module=pickle)
    hostile.write_bytes(buffer.getvalue())
    one_line_error(hostile)
    assert not marker.exists()

    assert "does not exist" in one_line_error(tmp_path / "missing.pt")


def test_resume_from_a_corrupt_file_is_refused(trained, tmp_path):
    trainer, path = trained
    bad = tmp_path / "bad" / "step_600.pt"
    bad.parent.mkdir()
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError):
        Trainer(trainer.config, resume=bad, tensorboard=False)


def test_mismatched_checkpoints_are_refused(trained, tmp_path):
    trainer, path = trained
    payload = ckpt.load(path)
    # another game
    with pytest.raises(ckpt.CheckpointError, match="trained on CartPole-v1, not SpaceInvaders"):
        ckpt.check_compatible(payload, "SpaceInvaders", 6, (4, 84, 84), path)
    # the same game under another action count or observation shape
    with pytest.raises(ckpt.CheckpointError, match="3 actions"):
        ckpt.check_compatible({**payload, "n_actions": 3}, "CartPole-v1", 2, (4,), path)
    with pytest.raises(ckpt.CheckpointError, match="expects observations"):
        ckpt.check_compatible({**payload, "obs_shape": [8]}, "CartPole-v1", 2, (4,), path)
    # the same Atari game under another of its names is fine
    ckpt.check_compatible({**payload, "env_id": "SpaceInvaders"}, "ALE/SpaceInvaders-v5", 2, (4,), path)

    # loading into a running trainer of another game goes through the same check
    other = Trainer(load_config("smoke", tmp_path / "si", "env.num_envs=1", "run.torch_threads=1"), tensorboard=False)
    try:
        weights_before = {k: v.clone() for k, v in other.model.state_dict().items()}
        with pytest.raises(ckpt.CheckpointError, match="CartPole-v1"):
            other.load(path).result()
        assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in weights_before.items())
    finally:
        other.metrics.close()
        other.envs.close()

    # a checkpoint whose weights do not fit (another action count, mislabelled) is refused too
    wrong_weights = tmp_path / "wrong_weights.pt"
    other_model = torch.nn.Linear(4, 3)
    ckpt.save(wrong_weights, {**payload, "model": other_model.state_dict()})
    with pytest.raises(ckpt.CheckpointError):
        Trainer(trainer.config, resume=wrong_weights, tensorboard=False)


def test_a_checkpoint_with_contiguous_optimizer_state_resumes_laid_out_like_the_weights(trained, tmp_path):
    # Checkpoints from before the Linear weights were laid out transposed (model.py) hold
    # contiguous running squares; foreach ops over mismatched strides are ~3.5x slower.
    trainer, path = trained
    payload = ckpt.load(path)
    for state in payload["optimizer"]["state"].values():
        state["square_avg"] = state["square_avg"].contiguous()
    old = tmp_path / "old" / path.parent.name
    old.mkdir(parents=True)
    torch.save(payload, old / "latest.pt")
    (old / "config.toml").write_bytes((path.parent / "config.toml").read_bytes())
    resumed = Trainer(trainer.config, resume=old, tensorboard=False)
    try:
        transposed = [p for p in resumed.model.parameters() if not p.is_contiguous()]
        assert transposed  # the Linear weights
        for p in resumed.model.parameters():
            square_avg = resumed.optimizer.state[p]["square_avg"]
            assert square_avg.stride() == p.stride()
        ours = [resumed.optimizer.state[p]["square_avg"] for p in resumed.model.parameters()]
        theirs = [trainer.optimizer.state[p]["square_avg"] for p in trainer.model.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    finally:
        resumed.metrics.close()
        resumed.envs.close()


def test_a_checkpoint_whose_optimizer_state_shares_memory_resumes_and_trains(trained, tmp_path):
    # A crafted file may store the running squares as one value broadcast over the shape
    # (stride 0): finite and well-shaped, but the in-place optimizer step refuses tensors whose
    # elements share memory ("training failed" at the first update before the fix).
    trainer, path = trained
    payload = ckpt.load(path)
    for state in payload["optimizer"]["state"].values():
        state["square_avg"] = torch.full((1,), 2.0).expand(state["square_avg"].shape)
    crafted = path.parent / "crafted.pt"
    torch.save(payload, crafted)
    resumed = Trainer(trainer.config, resume=crafted, tensorboard=False)
    try:
        resumed.train_update()
        assert resumed.updates == 31
        for p in resumed.model.parameters():
            assert resumed.optimizer.state[p]["square_avg"].stride() == p.stride()
    finally:
        resumed.metrics.close()
        resumed.envs.close()
