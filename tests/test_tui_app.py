"""The app driven with Pilot: a fake handle for the UI's logic, a paused real trainer
(smoke config) for the paths that must reach the trainer. A busy trainer makes every
Pilot key wait ~2 s, so real trainers are kept paused except where running is the point."""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from a2c_tui import config as cfg
from a2c_tui.tui.app import A2CApp
from a2c_tui.tui.dialogs import ConfirmScreen, HelpScreen, QuitScreen
from a2c_tui.tui.log import LogView
from tui_fakes import FakeHandle, fake_checkpoints

ROOT = Path(__file__).resolve().parent.parent


def sync(test):
    """Run an async test body in its own event loop (no async pytest plugin needed)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))
    return run


async def until(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until condition() holds (fails the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


# ----- fixtures ---------------------------------------------------------------------
@pytest.fixture
def fake(tmp_path) -> FakeHandle:
    config = cfg.load(ROOT / "configs/space_invaders.toml", [f"run.out_dir='{tmp_path}'"])
    return FakeHandle(config, tmp_path / "run", checkpoints=fake_checkpoints(tmp_path / "run"))


@pytest.fixture
def smoke(tmp_path):
    """A real trainer on the smoke config, not yet started (the app starts it paused)."""
    from a2c_tui.run.handle import LocalHandle

    # Two envs and games capped at 400 frames (100 steps) keep start-up and evaluation short.
    config = cfg.load(ROOT / "configs/smoke.toml", [f"run.out_dir='{tmp_path}'", "run.total_steps=1000000",
                                                    "run.checkpoint_every=1000000", "env.num_envs=2",
                                                    "env.max_episode_frames=400"])
    handle = LocalHandle.create(config)
    yield handle
    handle.close(timeout=5)


@pytest.fixture(params=["local", "remote"])
def attach(request, runtime):
    """The handle the app gets for a real trainer: the trainer's own (in this process), or a
    RemoteHandle over the run's socket to a RunService serving it (as `a2c-tui` runs it, minus the
    process), so each test below runs against both."""
    from a2c_tui.run.service import RunService
    from a2c_tui.tui.remote import RemoteHandle

    opened = []

    def connect(handle, paused: bool = True):
        if request.param == "local":
            return handle
        service = RunService(handle)
        service.open()
        handle.start(paused=paused)
        remote = RemoteHandle.attach(handle.run_dir)
        opened.append((service, remote))
        return remote
    connect.remote = request.param == "remote"
    yield connect
    for service, remote in opened:
        remote.close()
        service.close()


# ----- with a real trainer ----------------------------------------------------------
@sync
async def test_pause_and_resume_change_the_trainers_state(smoke, attach):
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
        assert smoke.state == "PAUSED" and "PAUSED" in app.status.text
        await pilot.press("p")
        await until(pilot, lambda: smoke.state == "RUNNING" and "RUNNING" in app.status.text, what="running")
        await until(pilot, lambda: app.snapshot.step > 0, what="training steps")
        await pilot.press("p")
        await until(pilot, lambda: smoke.state == "PAUSED" and "PAUSED" in app.status.text, what="paused again")
        paused_at = smoke.trainer.step
        await pilot.pause(0.5)
        assert smoke.trainer.step == paused_at  # paused means no more updates
        assert any(line.endswith("resumed") for line in app.log_view.plain)


@sync
async def test_valid_lr_edit_reaches_the_trainer(smoke, attach):
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test() as pilot:
        await pilot.press("2")
        field = app.query_one("#live-lr", Input)
        field.focus()
        field.value = ""
        await pilot.press(*"3e-4", "enter")
        await until(pilot, lambda: smoke.trainer.hparams["lr"] == pytest.approx(3e-4), what="lr applied")
        assert smoke.trainer.current_lr() == pytest.approx(3e-4)
        await until(pilot, lambda: any("lr changed 0.0007 -> 0.0003" in line for line in app.log_view.plain),
                    what="log line")


@sync
async def test_invalid_lr_is_refused_with_the_reason_and_not_applied(smoke, attach):
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("2")
        field = app.query_one("#live-lr", Input)
        field.focus()
        for typed, reason in (("2", "must be in (0, 1]"), ("fast", "must be a number")):
            field.value = ""
            await pilot.press(*typed)
            message = app.query_one("#hp-message")
            assert reason in str(message.render())  # shown while typing
            await pilot.press("enter")
            await pilot.pause(0.6)  # a command would have reached the paused loop by now
            assert "not applied" in str(message.render()) and message.has_class("-error")
            assert any(reason in text for text in errors(app))
        assert smoke.trainer.hparams["lr"] == pytest.approx(7e-4)
        assert not any("lr changed" in line for line in app.log_view.plain)


@sync
async def test_save_adds_a_row(smoke, attach):
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test() as pilot:
        await pilot.press("3")
        table = app.query_one("#ckpt-table", DataTable)
        assert table.row_count == 0
        await pilot.press("s")
        await until(pilot, lambda: table.row_count == 1, what="a checkpoint row")
        assert (smoke.run_dir / "step_0.pt").exists()
        assert "latest" in str(table.get_row_at(0)[5])


@sync
async def test_evaluation_of_current_weights_completes_with_a_summary(smoke, attach):
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test() as pilot:
        await pilot.press("4")
        app.query_one("#eval-episodes", Input).value = "2"
        app.query_one("#eval-envs", Input).value = "2"
        await pilot.press("e")  # in the evaluation pane: start
        pane = app.evaluation_pane
        await until(pilot, lambda: pane.result is not None or "failed" in str(
            app.query_one("#eval-status").render()), timeout=120, what="evaluation")
        summary = str(app.query_one("#eval-summary").render())
        assert "2 games" in summary and "mean" in summary and "median" in summary
        assert (smoke.run_dir / "step_0.eval.json").exists()
        await pilot.press("3")
        table = app.query_one("#ckpt-table", DataTable)
        await until(pilot, lambda: table.row_count >= 1 and str(table.get_row_at(0)[3]) != "-",
                    what="eval score in the checkpoints table")
        assert float(str(table.get_row_at(0)[3])) == pytest.approx(pane.result["mean"], abs=0.05)


@sync
async def test_a_failing_update_surfaces_and_the_app_stays_usable(smoke, attach):
    def broken():
        raise RuntimeError("simulated CUDA error")

    smoke.trainer.train_update = broken
    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("p")
        await until(pilot, lambda: smoke.state == "ERROR" and "ERROR" in app.status.text, what="error state")
        assert any("simulated CUDA error" in text for text in errors(app))
        assert any("error: training failed: RuntimeError: simulated CUDA error" in line
                   for line in app.log_view.plain)
        await pilot.press("3", "s")  # still answers keys, and the trainer still answers commands
        await until(pilot, lambda: app.query_one("#ckpt-table", DataTable).row_count == 1, what="save after error")


@sync
async def test_save_and_quit_writes_a_checkpoint_and_stops_the_trainer(smoke, attach):
    app = A2CApp(attach(smoke, paused=False), paused=False)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.step > 0, what="training steps")
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        started = time.monotonic()
        await pilot.press("s")
        await until(pilot, lambda: app.trainer_closed, what="trainer closed")
        assert time.monotonic() - started < 5  # ~2 s with a busy Pilot; the save itself is ~0.2 s
    assert app.return_code == 0
    assert smoke.state == "STOPPED"
    assert (smoke.run_dir / "latest.pt").exists()
    if not attach.remote:  # else the trainer lives on in its service until that ends
        assert not smoke.trainer._thread.is_alive()


# ----- with a fake handle -----------------------------------------------------------
@sync
async def test_quit_asks_first_and_cancel_keeps_running(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, QuitScreen)
        assert not fake.closed and app.is_running
        await pilot.press("q", "q")  # detach
        await until(pilot, lambda: fake.closed, what="close")
    assert ("stop", None) not in fake.calls
    assert app.return_code == 0


@sync
async def test_save_and_quit_stops_then_closes(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("q", "s")
        await until(pilot, lambda: fake.closed, what="close")
    names = [name for name, _ in fake.calls]
    assert names.index("stop") < names.index("close")


@sync
async def test_sigterm_or_sighup_detaches_and_leaves_the_run_going(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        app._on_signal(signal.SIGTERM)
        await until(pilot, lambda: fake.closed, what="close")
        assert any("received SIGTERM: detaching" in line for line in app.log_view.plain)
    assert "stop" not in [name for name, _ in fake.calls]  # the app is a client: it never stops the run


@sync
async def test_trainer_error_from_the_training_thread_is_shown(fake):
    fake._state = "RUNNING"
    app = A2CApp(fake)
    async with app.run_test(notifications=True) as pilot:
        thread = threading.Thread(target=fake.fail, args=("non-finite loss (loss=nan); training paused",))
        thread.start()
        thread.join()
        await until(pilot, lambda: "ERROR" in app.status.text, what="ERROR in the status bar")
        assert any("non-finite loss" in text for text in errors(app))
        assert any("error: non-finite loss" in line for line in app.log_view.plain)
        await pilot.press("p")  # an errored run can be resumed
        assert ("resume", None) in fake.calls


@sync
async def test_snapshots_are_applied_at_most_four_times_a_second(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.pause(0.3)
        before = app.applied

        def flood():
            for step in range(100):
                fake.step = step
                fake.emit(fake.snapshot())
        started = time.monotonic()
        thread = threading.Thread(target=flood)
        thread.start()
        thread.join()
        await until(pilot, lambda: app.snapshot.step == 99, what="the last snapshot")
        elapsed = time.monotonic() - started
        assert app.applied - before <= 2 + 4 * elapsed
        assert "99/10,000,000" in app.status.text


@sync
async def test_load_and_delete_ask_first_and_latest_is_protected(fake):
    app = A2CApp(fake)
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("3")
        table = app.query_one("#ckpt-table", DataTable)
        assert table.row_count == 3
        await pilot.press("l")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not any(name == "load" for name, _ in fake.calls)
        await pilot.press("l", "y")
        await until(pilot, lambda: ("load", fake.checkpoints[0].path) in fake.calls, what="load")
        await pilot.press("d")  # the first row is latest: refused while training, before asking
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("cannot be deleted" in n.message for n in app._notifications)
        assert table.row_count == 3 and not any(name == "delete" for name, _ in fake.calls)
        await pilot.press("down", "d", "y")
        await until(pilot, lambda: table.row_count == 2, what="row deleted")
        assert all(c.step != 40000 for c in fake.checkpoints)


@sync
async def test_evaluation_can_be_cancelled(fake):
    fake.eval_gate = threading.Event()
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("3", "e")  # from a checkpoint row: shows the form, a second e starts
        assert app.query_one("#panes").active == "evaluation"
        assert not app.evaluation_pane.running
        await pilot.press("e")
        assert app.evaluation_pane.running
        await pilot.press("c")
        fake.eval_gate.set()
        await until(pilot, lambda: not app.evaluation_pane.running, what="cancelled")
        assert "cancelled" in str(app.query_one("#eval-status").render())
        assert app.evaluation_pane.result is None
        source, _, _ = next(args for name, args in fake.calls if name == "evaluate")
        assert Path(source) == fake.checkpoints[0].path


@sync
async def test_an_evaluation_followed_on_attach_shows_its_checkpoint_as_the_source(fake):
    from types import SimpleNamespace

    fake.eval_gate = threading.Event()
    followed = fake.checkpoints[1].path
    fake.running_evaluation = SimpleNamespace(id=7, path=followed, episodes=10, envs=4, scores=[])
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.evaluation_pane.running, what="the followed evaluation")
        assert app.query_one("#eval-source").value == str(followed)  # not "current weights"
        assert followed.name in app.evaluation_pane.describe()
        fake.eval_gate.set()
        await until(pilot, lambda: app.evaluation_pane.result is not None, what="the result")


@sync
async def test_structural_fields_open_when_stopped_and_start_a_new_run(fake, tmp_path):
    created: list = []

    def new_handle(config):
        handle = FakeHandle(config, tmp_path / "run2", records=0)
        created.append(handle)
        return handle

    app = A2CApp(fake, new_handle=new_handle)
    async with app.run_test() as pilot:
        await pilot.press("2")
        seed = app.query_one("#struct-seed", Input)
        assert seed.disabled
        fake.set_state("STOPPED")
        await until(pilot, lambda: not seed.disabled, what="fields enabled")
        seed.value = "7"
        app.query_one("#hp-new-run").press()
        await until(pilot, lambda: app.handle is not fake and created, what="new run")
        assert created[0].config.run.seed == 7 and created[0].config.env.id == fake.config.env.id
        assert fake.closed and ("start", False) in created[0].calls
        assert seed.disabled  # the new run trains


@sync
async def test_help_palette_window_and_panes(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        for key, pane in (("2", "hparams"), ("3", "checkpoints"), ("4", "evaluation"), ("5", "log"), ("1", "metrics")):
            await pilot.press(key)
            assert app.query_one("#panes").active == pane
        assert "recent" in str(app.query_one("#metrics-window").render())
        await pilot.press("w")
        assert "whole run" in str(app.query_one("#metrics-window").render())
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title in ("Pause / resume training", "Save checkpoint now", "Evaluate", "Cancel evaluation",
                      "Load selected checkpoint", "Delete selected checkpoint", "Stop training", "Help", "Quit",
                      "Metrics window: recent / whole run", "Show metrics", "Show log"):
            assert title in titles


def test_tui_modules_do_not_import_torch():
    code = ("import sys, pkgutil, importlib, a2c_tui.tui as t\n"
            "for m in pkgutil.iter_modules(t.__path__): importlib.import_module('a2c_tui.tui.' + m.name)\n"
            "assert 'a2c_tui.tui.app' in sys.modules\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_bad_arguments_fail_before_the_screen_opens(tmp_path, capsys):
    from a2c_tui.cli import main

    assert main(["--config", str(ROOT / "configs/smoke.toml"), "--set", "algo.lr=5"]) == 2
    assert main(["--resume", str(tmp_path / "nothing.pt")]) == 2
    err = capsys.readouterr().err
    assert "algo.lr = 5" in err and "does not exist" in err


@sync
async def test_hidden_hyperparameters_pane_catches_up_when_shown(fake):
    """The pane skips drawing while hidden (the decaying lr would force a layout pass per
    refresh) and shows the newest values, and the state's editable fields, when opened."""
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.pause(0.3)
        pane = app.hparams_pane
        lr_field, now_lr = app.query_one("#live-lr", Input), pane._now["lr"]
        shown_before = now_lr.text
        fake.hparams["lr"] = 3.25e-4
        fake.step += 800
        fake.emit(fake.snapshot())
        await until(pilot, lambda: app.snapshot.step == fake.step, what="the snapshot")
        await pilot.pause(0.3)
        assert now_lr.text == shown_before and lr_field.value != "0.000325"  # hidden: not drawn
        await pilot.press("2")
        await until(pilot, lambda: "0.000325" in now_lr.text, what="the pane to catch up")
        assert lr_field.value == "0.000325"


@sync
async def test_switching_panes_does_not_keep_old_footer_keys_alive(fake):
    """Every pane switch rebuilds the footer's keys; Textual kept each old key alive through
    a watcher on the Footer (~20 widgets per switch, the soak's RSS rise). After many
    switches only the keys on screen (and not-yet-collected garbage) may remain. Six switches
    are plenty: the leak kept ~20 keys a switch, the bound is 12."""
    import gc

    from textual.widgets._footer import FooterKey

    def live_keys() -> int:
        gc.collect()
        # type(o), not isinstance: isinstance reads __class__ of every object in the heap, and
        # torch.distributed's deprecated reduce_op warns when touched
        return sum(issubclass(type(o), FooterKey) for o in gc.get_objects())

    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.pause(0.3)
        before = live_keys()
        for _ in range(3):
            for key in ("4", "1"):
                await pilot.press(key)
                await pilot.pause(0.05)
        await pilot.pause(0.3)
        assert before > 0 and live_keys() <= before + 12, (before, live_keys())


@sync
async def test_removed_widgets_do_not_stay_alive_in_textuals_styles_cache():
    """Textual's StylesCache.get_inner_outer cached on the StylesCache itself, keeping up to
    1024 removed widgets' rendered lines alive (the soak's RSS rise after the Footer fix).
    The app module re-keys it on the colours: after 200 widgets came and went, none of their
    caches may remain."""
    import gc

    from textual.app import App
    from textual.containers import Vertical
    from textual.widget import Widget
    from textual.widgets import Label
    from textual._styles_cache import StylesCache

    def orphaned_caches() -> int:
        gc.collect()
        owned = {id(o._styles_cache) for o in gc.get_objects() if issubclass(type(o), Widget)}
        return sum(issubclass(type(o), StylesCache) and id(o) not in owned for o in gc.get_objects())

    class Churn(App):
        CSS = "Label { background: $primary 40%; }"

        def compose(self):
            yield Vertical(id="list")

    app = Churn()
    async with app.run_test() as pilot:
        box = app.query_one("#list")
        for round in range(10):
            await box.remove_children()
            await box.mount(*(Label(f"card {round}.{i}") for i in range(20)))
            await pilot.pause(0.05)
        await box.remove_children()
        await pilot.pause(0.05)
        assert orphaned_caches() < 10


@sync
async def test_a_log_pane_never_opened_keeps_only_its_last_lines(fake):
    """Textual's RichLog holds every write until it first has a size, which a hidden pane
    never gets: hours of events must not pile up there. Opening the pane later shows the
    newest lines."""
    import gc

    from textual.widgets._rich_log import DeferredRender

    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.pause(0.2)
        limit = app.log_view.max_lines
        for i in range(limit + 500):
            app.log_line("info", f"event {i}")
        gc.collect()
        bound = sum(log.max_lines for log in app.query(LogView))  # the pane's and the strip's
        assert sum(issubclass(type(o), DeferredRender) for o in gc.get_objects()) <= bound
        await pilot.press("5")
        await until(pilot, lambda: len(app.log_view.lines) > 0, what="the log pane to render")
        assert f"event {limit + 499}" in app.log_view.lines[-1].text
        assert len(app.log_view.lines) <= limit


# ----- attached to a run's service ---------------------------------------------------
@sync
async def test_a_dead_service_shows_disconnected_and_offers_to_resume(fake, runtime):
    """The run's process dies while an app is attached: DISCONNECTED within 2 s, the app stays
    usable, and it offers to resume the run from its latest checkpoint."""
    from a2c_tui.run.service import RunService
    from a2c_tui.tui.remote import RemoteHandle

    service = RunService(fake)
    service.open()
    resumed: list = []

    def new_handle(what):
        resumed.append(what)
        return FakeHandle(fake.config, fake.run_dir, records=0)

    app = A2CApp(RemoteHandle.attach(fake.run_dir), new_handle=new_handle)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
        service.close()  # as if killed: the socket closes under the app
        gone = time.monotonic()
        await until(pilot, lambda: "DISCONNECTED" in app.status.text, timeout=5, what="DISCONNECTED")
        assert time.monotonic() - gone < 2
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the offer to resume")
        await pilot.press("y")
        await until(pilot, lambda: resumed, what="resume requested")
        assert resumed == [fake.run_dir]  # the run directory: resume it, do not start another
        await until(pilot, lambda: app.handle is not None and "DISCONNECTED" not in app.status.text, what="resumed")


@sync
async def test_d_detaches_and_leaves_the_run_untouched(fake, runtime):
    from a2c_tui.run.service import RunService
    from a2c_tui.tui.remote import RemoteHandle

    service = RunService(fake)
    service.open()
    try:
        remote = RemoteHandle.attach(fake.run_dir)
        app = A2CApp(remote)
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
            await pilot.press("d")
            await until(pilot, lambda: app.trainer_closed, what="detached")
        assert not remote.connected and not app.stopped_run
        assert "stop" not in [name for name, _ in fake.calls] and not fake.closed  # the run is untouched
    finally:
        service.close()


# ----- issue 17: what a new user met --------------------------------------------------
@sync
async def test_showing_the_game_leaves_no_focus_in_a_hidden_field(fake):
    """At 200x60 Textual handed the hidden Start button's focus to the episodes field beside
    it: `p` then typed into the hidden form instead of pausing."""
    app = A2CApp(fake)
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.press("4", "v")
        await pilot.pause(0.1)
        assert app.focused is None or app.focused in app.screen.focus_chain
        await pilot.press("p", "1", "2", "3")
        assert ("resume", None) in fake.calls and app.query_one("#eval-episodes", Input).value == "100"
        await pilot.press("4", "v", "v")  # back from the game: the pane's control has the keys again
        assert app.focused is app.query_one("#eval-start")


@sync
async def test_a_paused_run_shows_no_speed(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        assert "- steps/s" in app.status.text and "1,024" not in app.status.text
        await pilot.press("p")
        await until(pilot, lambda: "RUNNING" in app.status.text, what="running")
        assert "1,024 steps/s" in app.status.text


@sync
async def test_e_outside_the_checkpoints_pane_evaluates_the_current_weights(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("3", "e")  # the selected checkpoint
        assert "step_48000.pt" in app.evaluation_pane.describe()
        await pilot.press("1", "e")
        assert "the current weights" in app.evaluation_pane.describe()


@sync
async def test_a_long_refused_value_is_clipped_and_the_reason_comes_first(fake):
    app = A2CApp(fake)
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("2")
        field = app.query_one("#live-value_coef", Input)
        field.focus()
        field.value = "x" * 800
        await pilot.press("enter")
        message = str(app.query_one("#hp-message").render())
        shown = [message, *errors(app), app.log_view.plain[-1]]
        assert all(len(text) < 100 for text in shown), shown
        assert message.startswith("value_coef not applied: must be a number")
        assert "xxxxxxxx…" in app.log_view.plain[-1]


@sync
async def test_a_refused_value_is_replaced_by_the_runs_and_its_reason_stays(fake):
    """The refusal stays in the form's message row (a decaying lr redraws its field at every
    refresh and used to clear it), and the field shows what the run uses again."""
    app = A2CApp(fake)
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("2")
        field = app.query_one("#live-entropy_coef", Input)
        field.focus()
        field.value = "-1"
        await pilot.press("enter")
        assert field.value == "0.01" and not field.has_class("-invalid")
        fake.hparams["lr"] = 6.5e-4  # the schedule moves on
        fake.emit(fake.snapshot())
        await until(pilot, lambda: app.query_one("#live-lr", Input).value == "0.00065", what="lr redrawn")
        await pilot.pause(0.1)
        message = app.query_one("#hp-message")
        assert str(message.render()).startswith("entropy_coef not applied: must be in [0, 100]")
        assert message.has_class("-error")


@sync
async def test_an_unchanged_value_is_not_sent(fake):
    app = A2CApp(fake)
    async with app.run_test() as pilot:
        await pilot.press("2")
        app.query_one("#live-entropy_coef", Input).focus()
        await pilot.press("enter")
        assert "already 0.01" in str(app.query_one("#hp-message").render())
        assert not any(name == "set_hparams" for name, _ in fake.calls)


@sync
async def test_a_refused_structural_field_says_the_new_run_did_not_start(fake):
    app = A2CApp(fake, new_handle=lambda config: pytest.fail("no run may start"))
    async with app.run_test() as pilot:
        await pilot.press("2")
        fake.set_state("STOPPED")
        seed = app.query_one("#struct-seed", Input)
        await until(pilot, lambda: not seed.disabled, what="fields enabled")
        seed.value = "-3"
        app.query_one("#hp-new-run").press()
        await pilot.pause(0.1)
        assert str(app.query_one("#hp-message").render()).startswith("new run not started: seed must be")


@sync
async def test_sparklines_share_the_metrics_pane_evenly_in_one_colour(fake):
    from a2c_tui.tui.metrics import MetricRow, Spark

    for size in ((80, 24), (120, 40), (200, 60)):
        app = A2CApp(fake)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.1)
            rows = list(app.query(MetricRow))
            main = {r.size.height for r in rows if r.has_class("main")}
            other = {r.size.height for r in rows if not r.has_class("main")}
            assert len(main) == len(other) == 1 and min(main) >= min(other), (size, main, other)
            pane = app.metrics_pane
            assert sum(r.outer_size.height for r in rows) + 1 <= pane.content_size.height, size
            for spark in app.query(Spark):
                colours = {segment.style.color for y in range(spark.size.height) for segment in spark.render_line(y)
                           if segment.text.strip()}
                assert len(colours) == 1, (size, spark.parent.id, colours)


def test_a_tiny_range_is_drawn_flat_not_full_height():
    from a2c_tui.tui.metrics import spark_lines

    entropy = [1.791759, 1.791761, 1.791760] * 10
    assert spark_lines(entropy, 20, 3) == [" " * 20, " " * 20, "▁" * 20]
    assert spark_lines([1.0, 2.0], 2, 1) == ["▁█"]  # a real range still fills the height


@sync
async def test_help_fits_80_columns_without_wrapping(fake):
    from rich.text import Text

    from a2c_tui.tui.dialogs import HELP

    app = A2CApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        text = app.screen.query_one(".dialog-text")
        width = text.content_size.width
        assert [line for line in HELP.splitlines() if len(Text.from_markup(line).plain) > width] == []


@sync
async def test_checkpoints_and_evaluation_use_a_wide_terminal(fake):
    from textual.widgets._progress_bar import Bar

    app = A2CApp(fake)
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.press("3")
        table = app.query_one("#ckpt-table", DataTable)
        assert sum(column.get_render_width(table) for column in table.ordered_columns) > 120
        assert str(table.get_row_at(0)[-1]) == "step_48000.pt"  # and the table names its files
        await pilot.press("4")
        fake.step = 56_000
        fake.save_now()  # a new row while the pane is hidden
        app.refresh_checkpoints()
        await pilot.press("3")
        await until(pilot, lambda: table.row_count == 4, what="the new row")
        await pilot.pause(0.1)
        assert sum(column.get_render_width(table) for column in table.ordered_columns) > 120
        await pilot.press("4")
        assert app.query_one("#eval-progress").query_one(Bar).size.width > 100


@sync
async def test_the_evaluation_form_offers_greedy_actions_and_the_seed(fake):
    from textual.widgets import Select

    app = A2CApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        assert "the same games for every checkpoint" in str(app.query_one("#eval-note").render())
        app.query_one("#eval-actions", Select).value = "greedy"
        app.query_one("#eval-seed", Input).value = "7"
        app.query_one("#eval-episodes", Input).value = "4"
        assert app.evaluation_pane.describe().endswith("greedy actions, seed 7")
        await pilot.press("e")
        await until(pilot, lambda: app.evaluation_pane.result is not None, what="the result")
        assert fake.eval_options == {"greedy": True, "seed": 7}
        assert "greedy actions, seed 7" in str(app.query_one("#eval-summary").render())
        app.query_one("#eval-seed", Input).value = "-1"  # refused with the reason, nothing started
        await pilot.press("e")
        assert not app.evaluation_pane.running and len([c for c in fake.calls if c[0] == "evaluate"]) == 1


@sync
async def test_each_sparkline_says_which_steps_it_spans(fake):
    from a2c_tui.tui.messages import fmt_steps

    assert [fmt_steps(s) for s in (800, 9_999, 49_600, 480_000, 2_400_000)] == ["800", "9,999", "49.6k", "480k",
                                                                                "2.40M"]
    fake.records[0]["score"] = float("nan")  # no game finished before the second record
    app = A2CApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        spans = {row.key: row.query_one(".metric-steps").text for row in app.query("MetricRow")}
        assert spans["score"] == "1,600–48.0k" and spans["entropy"] == "800–48.0k"
        fake.records.append({**fake.records[-1], "step": 49_600, "updates": 620})
        fake.emit(fake.snapshot())
        await until(pilot, lambda: app.query_one("#metric-entropy .metric-steps").text == "800–49.6k",
                    what="the span to follow the run")


@sync
async def test_evaluations_beside_training_and_the_time_split_reach_the_metrics_pane(smoke, attach):
    import copy

    from a2c_tui.run.evaluate import PeriodicJob, summarize

    app = A2CApp(attach(smoke), paused=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
        row = app.query_one("#metric-eval_score")
        assert row.stats.split()[0] == "-" and app.query_one("#metrics-time").text == ""
        trainer = smoke.trainer

        def train_and_evaluate() -> None:  # what the loop does, on the training thread
            for _ in range(trainer.config.run.log_every):
                trainer._one_update()
            job = PeriodicJob(trainer.step, trainer.updates, copy.deepcopy(trainer._payload()))
            job.result = summarize([100.0, 200.0, 300.0], [500, 600, 700])
            trainer._record_evaluation(job)

        trainer._submit(train_and_evaluate).result(timeout=60)
        await until(pilot, lambda: row.stats.split()[0] == "200", what="the evaluation's sparkline")
        assert row.query_one(".metric-steps").text == f"{trainer.step}–{trainer.step}"
        assert app.query_one("#metrics-time").text.startswith("time/update ")
        assert "· act " in app.query_one("#metrics-time").text


@sync
async def test_evaluation_records_in_the_history_do_not_disturb_the_training_curves(fake):
    app = A2CApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        spans = {row.key: row.query_one(".metric-steps").text for row in app.query("MetricRow")}
        assert spans["score"] == "800–48.0k" and spans["eval_score"] == "6,400–44.8k"
        pane = app.metrics_pane
        assert len(pane.history.recent) == 60 and len(pane.evaluations.recent) == 7
        assert app.query_one("#metrics-time").text == "time/update 100 ms: env 31% · act 24% · update 45%"
