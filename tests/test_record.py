"""Recording: the single game plays exactly like a training env, and the MP4s are whole and native."""

from __future__ import annotations

import threading
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from a2c_tui.run import checkpoints as ckpt
from a2c_tui import config as cfg
from a2c_tui.cli import main
from a2c_tui.learn.envs import make_envs
from a2c_tui.run.evaluate import Cancelled
from a2c_tui.learn.frames import FrameSource
from a2c_tui.learn.model import ActorCritic
from a2c_tui.run.record import FRAME_RATE, AtariGame, record


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Batch-one inference, as `a2c-tui record` runs it; two threads are several times slower on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_video(path: Path) -> tuple[dict, list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return meta, [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]


def short_config(frames: int = 240) -> cfg.Config:
    """SpaceInvaders with games cut at `frames` emulator frames, so a video takes a second."""
    return cfg.load(None).replace(**{"env.max_episode_frames": frames})


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return ActorCritic((4, 84, 84), 6).state_dict()


def test_single_game_preprocessing_is_identical_to_the_training_envs():
    training = make_envs("SpaceInvaders", 1, seed=1, num_threads=1, clip_rewards=False)  # as the trainer makes them
    expected = training.reset()
    start_frames = int(training._episode_frames[0])  # FIRE + the noops this reset drew
    game = AtariGame("SpaceInvaders", seed=1)

    class SameNoops:  # hands reset() the draw that gives the training env's noop count
        def integers(self, low, high):
            return start_frames

    obs = game.reset(SameNoops())
    actions = np.random.default_rng(0)
    lives_lost = 0
    for t in range(10_000):
        np.testing.assert_array_equal(obs, expected[0], err_msg=f"observation differs at step {t}")
        action = int(actions.integers(game.n_actions))
        step = training.step(np.array([action]))
        mine = game.step(action)
        assert mine.reward == step.rewards[0]
        if mine.game_over:
            assert step.finished == [(0, step.finished[0][1], t + 1)]  # the training env's game ended here too
            np.testing.assert_array_equal(mine.obs, step.final_obs[0])
            break
        assert not step.finished
        lives_lost += bool(step.dones[0])
        obs, expected = mine.obs, step.obs
    else:
        pytest.fail("random play did not lose the game in 10,000 steps")
    training.close()
    assert lives_lost == 2  # a whole game, with its lost lives, was compared frame by frame


def test_recorded_videos_hold_every_frame_at_native_size_and_colour(tmp_path):
    screens = []
    game = AtariGame("SpaceInvaders", seed=7)
    game.reset(np.random.default_rng(7))
    screens.append(game.screen().copy())  # what the first video frame must show

    games = record(short_config(), random_weights(), tmp_path / "videos", games=2, seed=7, name="si")

    assert [g.path.name for g in games] == ["si-01.mp4", "si-02.mp4"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["si-01.mp4", "si-02.mp4"]  # no partial files
    for g in games:
        meta, frames = read_video(g.path)
        assert meta["size"] == (160, 210) and meta["fps"] == FRAME_RATE
        assert len(frames) == g.frames == 240 + 1  # the start screen and every emulator frame up to the cut
        assert g.length == 60 and g.seconds == pytest.approx(241 / 60)
    _, frames = read_video(games[0].path)
    error = np.abs(frames[0].astype(int) - screens[0].astype(int)).mean()
    assert error < 4, f"first frame is not the game's colour screen (mean abs error {error:.1f})"


def test_cancel_drops_the_game_in_progress_and_keeps_finished_videos(tmp_path):
    cancel = threading.Event()

    def progress(p):
        if p.finished is not None and p.game == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        record(short_config(), random_weights(), tmp_path, games=3, name="g", progress=progress, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g-01.mp4"]


def test_frames_are_offered_only_while_someone_watches(tmp_path):
    source = FrameSource()
    record(short_config(40), random_weights(), tmp_path, games=1, frames=source)
    assert source.latest() is None
    source.subscribe()
    record(short_config(40), random_weights(), tmp_path, games=1, frames=source)
    frame = source.latest()
    assert frame.pixels.shape == (210, 160, 3) and frame.aspect == pytest.approx(4 / 3)
    assert frame.number == 10 and "recording game 1/1" in frame.label  # one offer per agent step


def save_checkpoint(path: Path, config: cfg.Config, n_actions: int = 6, obs_shape=(4, 84, 84)) -> Path:
    model = ActorCritic(obs_shape, n_actions)
    ckpt.save(path, {"config": config.to_dict(), "env_id": config.env.id, "n_actions": n_actions,
                     "obs_shape": list(obs_shape), "model": model.state_dict(), "step": 1000})
    return path


def test_record_command_writes_one_video_and_one_line_per_game(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "step_1000.pt", short_config(80))
    code = main(["record", str(checkpoint), "--games", "2", "--out", str(tmp_path / "v"), "--seed", "3"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        "space_invaders-step_1000-seed3-01.mp4", "space_invaders-step_1000-seed3-02.mp4"]
    assert out[0].startswith("game 1/2: score ") and "20 steps (81 frames" in out[0]
    assert out[1].startswith("game 2/2: score ")
    assert "2 games recorded" in out[2] and "sampled actions" in out[2]


@pytest.mark.parametrize("args, message", [
    (["--games", "0"], "--games 0 is not allowed"),
    (["--out", "FILE"], "is a file, not a directory"),
])
def test_record_command_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    checkpoint = save_checkpoint(tmp_path / "c.pt", short_config())
    (tmp_path / "FILE").write_text("")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    assert main(["record", str(checkpoint), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_record_command_refuses_missing_and_non_atari_checkpoints(tmp_path, capsys):
    assert main(["record", str(tmp_path / "nothing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cartpole = save_checkpoint(tmp_path / "cp.pt", cfg.load(None).replace(**{"env.id": "CartPole-v1"}), 2, (4,))
    assert main(["record", str(cartpole), "--out", str(tmp_path / "v")]) == 2
    assert "Atari games only" in capsys.readouterr().err
    wrong = save_checkpoint(tmp_path / "wrong.pt", short_config(), n_actions=4)
    assert main(["record", str(wrong), "--out", str(tmp_path / "v")]) == 2
    assert "has 4 actions" in capsys.readouterr().err
