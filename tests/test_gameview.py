"""The live game view: half-block cells in colour, scaled, throttled, and free while hidden."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import numpy as np
import pytest
import torch
from textual.app import App, ComposeResult

from a2c_tui import config as cfg
from a2c_tui.learn.frames import FrameSource
from a2c_tui.run.liveview import LivePlayer
from a2c_tui.learn.model import ActorCritic
from a2c_tui.tui.gameview import CellPainter, GamePane, GameView, box_resize, fit

def sync(test):
    """Run an async test body in its own event loop (no async pytest plugin needed)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))
    return run


RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def cells(strip) -> list[tuple[str, tuple | None, tuple | None]]:
    """(character, foreground, background) of every cell of a Strip."""
    out = []
    for segment in strip:
        style = segment.style
        fg = style.color.triplet if style and style.color else None
        bg = style.bgcolor.triplet if style and style.bgcolor else None
        out += [(ch, fg and tuple(fg), bg and tuple(bg)) for ch in segment.text]
    return out


def picture(rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


# A 2-wide, 4-tall test card: exactly one 2×2 block of half-block cells.
CARD = picture([[RED, GREEN],
                [BLUE, GREEN],
                [WHITE, BLACK],
                [WHITE, RED]])


def test_each_cell_is_an_upper_half_block_with_the_upper_pixel_over_the_lower_one():
    strips = CellPainter().paint(CARD, aspect=0.5, cols=2, rows=2)
    assert cells(strips[0]) == [("▀", RED, BLUE), (" ", None, GREEN)]  # same colour twice: a space on it
    assert cells(strips[1]) == [(" ", None, WHITE), ("▀", BLACK, RED)]


def test_picture_keeps_its_aspect_and_is_centred_in_a_wider_pane():
    strips = CellPainter().paint(CARD, aspect=0.5, cols=6, rows=2)
    row = cells(strips[0])
    assert [c[0] for c in row] == [" ", " ", "▀", " ", " ", " "]
    assert row[2] == ("▀", RED, BLUE) and row[3] == (" ", None, GREEN)


def test_downscaling_averages_each_source_box_so_thin_details_survive():
    image = np.zeros((8, 8, 3), np.uint8)
    image[0:2, 0:2] = WHITE  # one 2×2 white block in the corner
    image[4, 6] = (200, 0, 0)  # one lone red pixel
    small = box_resize(image, 4, 4)
    assert tuple(small[0, 0]) == WHITE
    assert tuple(small[2, 3]) == (50, 0, 0)  # 200 spread over its 2×2 box: dim, not dropped
    assert box_resize(CARD, 8, 4)[::2, ::2].tolist() == CARD.tolist()  # enlarging repeats pixels


@pytest.mark.parametrize("cols, rows, expected", [
    (80, 24, (64, 48)),  # height-limited: 4:3 of 48 half-block rows
    (40, 24, (40, 30)),  # width-limited
    (1, 1, (1, 1)),
    (0, 5, (0, 0)),
])
def test_fit_gives_the_largest_picture_with_the_aspect(cols, rows, expected):
    assert fit(4 / 3, cols, rows) == expected


def test_atari_screen_fills_an_80x24_terminal_pane():
    screen = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    strips = CellPainter().paint(screen, 4 / 3, cols=38, rows=20)
    assert len(strips) == 20 and all(s.cell_length == 38 for s in strips)


class ViewApp(App):
    CSS = "GameView { width: 6; height: 3; }"

    def __init__(self, source: FrameSource | None = None):
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        yield GameView(self.source, id="view")


@sync
async def test_view_draws_a_known_frame_into_its_cells_under_a_caption():
    app = ViewApp()
    async with app.run_test(size=(20, 5)) as pilot:
        view = app.query_one(GameView)
        view.show_frame(CARD, "card")
        await pilot.pause()
        assert view.render_line(0).text == "card  "
        # 6×2 cells for the picture; a 2×4-pixel card at aspect 0.5 is 2 cells wide, centred
        assert cells(view.render_line(1))[2:4] == [("▀", RED, BLUE), (" ", None, GREEN)]
        assert cells(view.render_line(2))[2:4] == [(" ", None, WHITE), ("▀", BLACK, RED)]


@sync
async def test_view_draws_at_most_ten_frames_a_second():
    app = ViewApp()
    async with app.run_test(size=(20, 5)) as pilot:
        view = app.query_one(GameView)
        frames = [np.full((4, 2, 3), i, np.uint8) for i in range(100)]
        started = time.monotonic()
        for i, frame in enumerate(frames):  # 100 frames in 0.5 s
            view.show_frame(frame, f"frame {i}")
            await asyncio.sleep(0.005)
        await pilot.pause(0.15)  # the last pending frame gets its slot
        elapsed = time.monotonic() - started
        assert 3 <= view.frames_drawn <= elapsed * 10 + 1
        assert view.caption == "frame 99"  # the newest frame wins, none queue up


@sync
async def test_view_pulls_from_its_source_only_while_shown():
    source = FrameSource()
    app = ViewApp(source)
    async with app.run_test(size=(20, 5)) as pilot:
        view = app.query_one(GameView)
        await pilot.pause()
        assert source.watching

        stop = threading.Event()

        def produce():  # a producer thread offering 200 frames a second
            i = 0
            while not stop.is_set():
                if source.watching:
                    source.offer(CARD, f"frame {i}", aspect=0.5)
                    i += 1
                time.sleep(0.005)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            await pilot.pause(0.6)
            drawn = view.frames_drawn
            assert 2 <= drawn <= 8
            assert cells(view.render_line(1))[2] == ("▀", RED, BLUE)

            view.display = False
            await pilot.pause(0.1)
            assert not source.watching and source.latest() is None
            await pilot.pause(0.3)
            assert view.frames_drawn == drawn

            view.display = True
            await pilot.pause(0.3)
            assert source.watching and view.frames_drawn > drawn
        finally:
            stop.set()
            producer.join()


def test_live_player_plays_only_while_watched():
    torch.manual_seed(0)
    weights = ActorCritic((4, 84, 84), 6).state_dict()
    fetched = []

    def current_weights():
        fetched.append(time.monotonic())
        return weights, "step 0"

    source = FrameSource()
    player = LivePlayer(cfg.load(None), current_weights, source, speed=4.0, seed=1)
    player.start()
    try:
        time.sleep(0.3)
        assert player.steps_played == 0 and not fetched  # nobody watches: no weights copied, no game

        source.subscribe()
        deadline = time.monotonic() + 10
        while source.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        frame = source.latest()
        assert frame is not None and frame.pixels.shape == (210, 160, 3)
        assert frame.label.startswith("SpaceInvaders live · step 0 · game 1 · score ")
        assert len(fetched) == 1

        source.unsubscribe()
        time.sleep(0.2)
        played = player.steps_played
        time.sleep(0.4)
        assert player.steps_played == played  # idle again
    finally:
        player.close()
    assert not player._thread.is_alive()


def test_live_player_refuses_games_that_are_not_atari():
    with pytest.raises(ValueError, match="not an Atari game"):
        LivePlayer(cfg.load(None).replace(**{"env.id": "CartPole-v1"}), lambda: ({}, ""), FrameSource())



class PaneApp(App):
    def __init__(self):
        super().__init__()
        self.news: list[GamePane.News] = []

    def compose(self) -> ComposeResult:
        yield GamePane(id="pane")

    def on_game_pane_news(self, news: GamePane.News) -> None:
        self.news.append(news)


@sync
async def test_game_pane_plays_the_attached_run_while_shown():
    torch.manual_seed(0)
    weights = ActorCritic((4, 84, 84), 6).state_dict()
    app = PaneApp()
    async with app.run_test(size=(60, 20)) as pilot:
        pane = app.query_one(GamePane)
        pane.attach(cfg.load(None).replace(**{"env.id": "CartPole-v1"}), lambda: (weights, "step 0"))
        assert pane.player is None and "not an Atari game" in pane.view.caption
        pane.attach(cfg.load(None), lambda: (weights, "step 7"))
        for _ in range(200):
            await pilot.pause(0.05)
            if pane.view.frames_drawn:
                break
        assert pane.view.caption.startswith("SpaceInvaders live · step 7 · game 1")
        pane.close()
        assert pane.player is None


@sync
async def test_game_pane_records_a_checkpoint_and_shows_the_recorded_game(tmp_path):
    from a2c_tui.run import checkpoints as ckpt

    config = cfg.load(None).replace(**{"env.max_episode_frames": 400})
    checkpoint = tmp_path / "step_100.pt"
    ckpt.save(checkpoint, {"config": config.to_dict(), "env_id": "SpaceInvaders", "n_actions": 6,
                           "obs_shape": [4, 84, 84], "model": ActorCritic((4, 84, 84), 6).state_dict()})
    app = PaneApp()
    async with app.run_test(size=(60, 20)) as pilot:
        pane = app.query_one(GamePane)
        assert pane.record(checkpoint, tmp_path / "videos", games=2)
        assert not pane.record(checkpoint, tmp_path / "videos")  # one recording at a time
        assert pane.view.source is pane.recorded
        for _ in range(600):
            await pilot.pause(0.05)
            if app.news and app.news[-1].done:
                break
        texts = [n.text for n in app.news]
        assert texts[0] == f"recording 2 games of step_100.pt to {tmp_path / 'videos'}/"
        assert texts[1].startswith("recorded game 1/2 of step_100.pt: score ")
        assert texts[-1].startswith("recorded 2 games of step_100.pt") and app.news[-1].done
        assert len(list((tmp_path / "videos").glob("space_invaders-step_100-seed12345-*.mp4"))) == 2
        assert pane.view.source is pane.live and not pane.recording
        assert pane.view.frames_drawn > 0 and "recording game" in pane.view.caption


@sync
async def test_app_shows_the_game_with_v_and_records_from_the_checkpoints_pane(tmp_path):
    from textual.widgets import TabbedContent
    from tui_fakes import FakeHandle, fake_checkpoints

    from a2c_tui.tui.app import A2CApp

    config = cfg.load(None).replace(**{"run.out_dir": str(tmp_path)})
    handle = FakeHandle(config, tmp_path / "run", checkpoints=fake_checkpoints(tmp_path / "run"))
    app = A2CApp(handle)
    async with app.run_test(size=(80, 24)) as pilot:
        pane, tabs = app.game_pane, app.query_one(TabbedContent)
        assert not pane.display and tabs.display
        await pilot.pause()  # the game is attached after the first screen is drawn
        assert "cannot hand out its weights" in pane.view.caption  # the fake handle has no weights()
        await pilot.press("v")
        assert pane.display and not tabs.display and pane.live.watching
        await pilot.press("v")
        await pilot.pause()
        assert not pane.display and tabs.display and not pane.live.watching  # hidden: the live game idles
        await pilot.press("v", "3")  # a pane key brings the panes back
        assert not pane.display and tabs.active == "checkpoints"

        await pilot.press("m")  # record the selected checkpoint (the fake's files do not exist)
        assert pane.display
        for _ in range(100):
            await pilot.pause(0.05)
            if not pane.recording:
                break
        notes = [n.message for n in app._notifications if n.severity == "error"]
        assert notes == [f"recording step_48000.pt failed: checkpoint '{tmp_path / 'run' / 'step_48000.pt'}' "
                         f"does not exist"]
        assert any("recording 5 games of step_48000.pt to videos/" in line for line in app.log_view.plain)
