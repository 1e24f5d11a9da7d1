"""Screens of the app at 80x24 and 120x40, with a fake handle holding fixed data.

Times are fixed (the fake's clock and TZ=UTC) so the pictures are the same everywhere.
Update after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from a2c_tui import config as cfg
from a2c_tui.tui.app import A2CApp
from tui_fakes import T0, FakeHandle, fake_checkpoints

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path("/runs/space_invaders-20231114-221320")  # never written: the fake only names it


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_app() -> A2CApp:
    config = cfg.load(ROOT / "configs/space_invaders.toml")
    handle = FakeHandle(config, RUN_DIR, checkpoints=fake_checkpoints(RUN_DIR))
    app = A2CApp(handle)
    app.clock = lambda: T0 + 5
    return app


async def started(pilot) -> None:
    """Events the real trainer would send on start (the fake sends none by itself)."""
    pilot.app.handle.event("info", "run space_invaders-20231114-221320 at step 48,000 of 10,000,000 on cpu")
    pilot.app.handle.event("info", "paused")
    await pilot.pause(0.1)


def test_metrics_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=started)


def test_metrics_120x40(snap_compare):
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=started)


def test_hyperparameters_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["2"], run_before=started)


def test_checkpoints_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["3", "down"], run_before=started)


def test_evaluation_done_120x40(snap_compare):
    async def evaluate(pilot) -> None:
        await started(pilot)
        await pilot.press("3", "down", "e", "e")  # the best checkpoint: show the form, then start
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.4)  # the last redraw is at most 0.25 s behind
        pilot.app.clear_notifications()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=evaluate)


def test_quit_dialog_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["q"], run_before=started)


def test_evaluation_form_focus_80x24(snap_compare):
    """The focused field stands out (it was one grey step from the others in 256 colours)."""
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["4", "shift+tab"], run_before=started)


def test_help_80x24(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["question_mark"], run_before=started)
