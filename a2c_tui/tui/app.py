"""The a2c-tui app: a status bar, five panes (metrics, hyperparameters, checkpoints,
evaluation, log) and the keys that steer the run.

Data flow: the trainer calls `_from_trainer` on its own thread; that only posts an
immutable Snapshot/Event message. Snapshots are applied at most 4 times a second and each
pane redraws only what changed. Commands go back through the handle's methods; their
futures report through messages too. Nothing here imports torch: `run_app` imports the
handle (which does) only when it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from concurrent.futures import Future
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, TabbedContent, TabPane, Tabs

from a2c_tui.tui import stylescache
from a2c_tui.tui.checkpoints import CheckpointsPane
from a2c_tui.tui.dialogs import DETACH, STOP_RUN, ConfirmScreen, HelpScreen, QuitScreen
from a2c_tui.tui.evaluation import EvaluationPane, summary_text
from a2c_tui.tui.footer import Footer
from a2c_tui.tui.gameview import GamePane, live_weights
from a2c_tui.tui.hparams import HyperparametersPane
from a2c_tui.tui.log import LogView
from a2c_tui.tui.messages import (ERROR, FINISHED, PAUSED, RUNNING, STOPPED, CommandDone, EvalFinished,
                                  EvalStarted, EvalStopped, NewRunFailed, NewRunReady, RunDisconnected,
                                  RunEvaluating, ShutdownDone, TrainerEvent, TrainerHandle, TrainerSnapshot,
                                  first_line, state_name)
from a2c_tui.tui.metrics import MetricsPane
from a2c_tui.tui.status import StatusBar

stylescache.install()  # before any widget renders: Textualize/textual#6665

HANGUP_EXIT_DELAY = 3.0  # seconds a hung-up app gets to exit normally once the run is saved
REFRESH_INTERVAL = 0.25  # seconds: the UI applies trainer snapshots at most 4 times a second
PANES = (("metrics", "Metrics"), ("hparams", "Hyperparameters"), ("checkpoints", "Checkpoints"),
         ("evaluation", "Evaluation"), ("log", "Log"))


class A2CApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "a2c-tui"
    ENABLE_COMMAND_PALETTE = True
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("s", "save", "Save"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("c", "cancel_evaluation", "Cancel eval", show=False),
        Binding("w", "toggle_window", "Window", show=False),
        Binding("v", "toggle_game", "Game", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("d", "detach", "Detach", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("escape", "leave_field", "Leave field", show=False),
        *(Binding(str(n), f"show_pane('{pane}')", title, show=False) for n, (pane, title) in enumerate(PANES, 1)),
    ]

    def __init__(self, handle: TrainerHandle, paused: bool = False,
                 new_handle: Callable[[Any], TrainerHandle] | None = None, handle_signals: bool = False) -> None:
        super().__init__()
        self.animation_level = "none"  # no sliding underlines or scrolls: fewer redraws over SSH
        self.handle = handle
        self.start_paused = paused
        self.new_handle = new_handle  # config -> handle, for "start new run"; None: not offered
        self.handle_signals = handle_signals
        self.snapshot: Any = None  # the last snapshot applied to the screen
        self._pending: Any = None
        self._last_apply = 0.0
        self._apply_timer: Any = None
        self.applied = 0  # snapshots applied (the refresh limit is tested on it)
        self.shutting_down = False
        self.trainer_closed = False
        self.stopped_run = False  # the app ended by stopping the run (not by detaching)
        self.disconnected = False  # the run's service went away while attached
        self.hung_up = False  # SIGHUP: the terminal went away
        self.clock: Callable[[], float] = time.time  # times of the app's own log lines (fixed in tests)

    # ----- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(id="panes", initial="metrics"):
            with TabPane("1 Metrics", id="metrics"):
                yield MetricsPane(id="metrics-pane")
            with TabPane("2 Hyperparameters", id="hparams"):
                yield HyperparametersPane(self.handle.config, id="hparams-pane")
            with TabPane("3 Checkpoints", id="checkpoints"):
                yield CheckpointsPane(id="checkpoints-pane")
            with TabPane("4 Evaluation", id="evaluation"):
                yield EvaluationPane(id="evaluation-pane")
            with TabPane("5 Log", id="log"):
                yield LogView(id="log-view")
        game = GamePane(id="game-pane")
        game.display = False  # shown instead of the panes by v; plays only while shown
        yield game
        yield LogView(max_lines=200, id="log-strip")
        yield Footer(compact=True)

    @cached_property  # the panes live as long as the app
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @cached_property
    def metrics_pane(self) -> MetricsPane:
        return self.query_one(MetricsPane)

    @cached_property
    def hparams_pane(self) -> HyperparametersPane:
        return self.query_one(HyperparametersPane)

    @cached_property
    def checkpoints_pane(self) -> CheckpointsPane:
        return self.query_one(CheckpointsPane)

    @cached_property
    def evaluation_pane(self) -> EvaluationPane:
        return self.query_one(EvaluationPane)

    @property
    def game_pane(self) -> GamePane:
        return self.query_one(GamePane)

    @cached_property
    def log_view(self) -> LogView:
        return self.query_one("#log-view", LogView)

    def on_mount(self) -> None:
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, self._on_signal, sig)
        self._attach_run(self.handle)
        self._update_log_strip()

    def _attach_run(self, handle: TrainerHandle) -> None:
        """Show `handle`'s run (its history, recent log and running evaluation) and start its trainer."""
        self.disconnected = False
        self.metrics_pane.seed(handle.history())
        for event in getattr(handle, "recent_log", ()):
            self.log_line(event.level, event.text, event.time)
        handle.subscribe(lambda item: self._from_trainer(item, handle))
        handle.start(paused=self.start_paused)
        self._pending = handle.snapshot()
        self._apply_pending()
        self.refresh_checkpoints()
        # The live game needs torch (~2 s to import): the first screen is drawn before it loads.
        self.call_after_refresh(self.game_pane.attach, handle.config, live_weights(handle))
        running = getattr(handle, "running_evaluation", None)
        if running is not None:
            self.evaluation_pane.follow(running)

    # ----- trainer -> UI ----------------------------------------------------------------
    def _from_trainer(self, item: Any, source: TrainerHandle) -> None:
        """Runs on the training thread (or a remote handle's reader): hand the immutable item over."""
        if hasattr(item, "level"):
            message: Any = TrainerEvent(item, source)
        elif hasattr(item, "reason"):
            message = RunDisconnected(item, source)
        elif hasattr(item, "episodes"):
            message = RunEvaluating(item, source)
        else:
            message = TrainerSnapshot(item, source)
        with contextlib.suppress(RuntimeError):  # the event loop is already gone (exiting)
            self.post_message(message)

    def on_trainer_snapshot(self, message: TrainerSnapshot) -> None:
        if message.source is not self.handle:
            return
        self._pending = message.snapshot
        wait = REFRESH_INTERVAL - (time.monotonic() - self._last_apply)
        if wait <= 0:
            self._apply_pending()
        elif self._apply_timer is None:
            self._apply_timer = self.set_timer(wait, self._timed_apply)

    def _timed_apply(self) -> None:
        self._apply_timer = None
        self._apply_pending()

    def _apply_pending(self) -> None:
        snapshot, self._pending = self._pending, None
        if snapshot is None or not self.status.is_attached:  # none yet, or the app is closing
            return
        self._last_apply = time.monotonic()
        self.applied += 1
        previous = state_name(self.snapshot.state) if self.snapshot is not None else None
        self.snapshot = snapshot
        self.status.show(snapshot)
        self.metrics_pane.add(snapshot.metrics)
        self.metrics_pane.add(snapshot.evaluation)
        self.hparams_pane.show(snapshot)
        state = state_name(snapshot.state)
        if previous is not None and state != previous and state == FINISHED:
            self.notify(f"training finished at step {snapshot.step:,}", timeout=10)

    def on_trainer_event(self, message: TrainerEvent) -> None:
        if message.source is not self.handle:
            return
        event = message.event
        if not self.status.is_attached:  # the app is closing
            return
        self.log_line(event.level, event.text, event.time)
        if event.level in ("error", "warning"):
            self.notify(event.text, severity=event.level, timeout=15 if event.level == "error" else 8,
                        markup=False)
        self.refresh_checkpoints()  # saves, loads and prunes are all announced as events

    def on_run_disconnected(self, message: RunDisconnected) -> None:
        """The run's service went away: say so, stay usable, offer to resume from the latest checkpoint."""
        if message.source is not self.handle or self.shutting_down or not self.status.is_attached:
            return
        gone = message.item
        self._pending = self.handle.snapshot()
        self._apply_pending()
        if gone.stopped or state_name(self.handle.state) in (STOPPED, FINISHED):  # by this app or another
            self.log_line("info", f"the run is {state_name(self.handle.state)}; its process ended")
            self.disconnected = True  # nothing left to detach from or stop
            return
        self.disconnected = True
        self.status.disconnected()
        self.log_line("error", f"DISCONNECTED: {gone.reason}")
        if self.new_handle is None:
            self.notify(f"disconnected: {gone.reason}", severity="error", timeout=30, markup=False)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.log_line("info", f"resuming {self.handle.run_dir} from its latest checkpoint…")
                self._create_run(self.handle, None)
        self.push_screen(ConfirmScreen(f"The run's process ended ({gone.reason}).\nResume the run from its latest "
                                       "checkpoint?", yes="Resume"), answer)

    def on_run_evaluating(self, message: RunEvaluating) -> None:
        """An evaluation started in the run's service by another app: follow it here too."""
        if message.source is self.handle and self.status.is_attached and not self.evaluation_pane.running:
            self.evaluation_pane.follow(message.item)

    def log_line(self, level: str, text: str, when: float | None = None) -> None:
        when = self.clock() if when is None else when
        self.log_view.add(when, level, text)
        self.query_one("#log-strip", LogView).add(when, level, text)

    def refresh_checkpoints(self) -> None:
        try:
            infos = self.handle.list_checkpoints()
        except OSError as e:
            # A run stopped or finished ends its process: its last save's announcement may
            # come after the service is gone, and that is no news
            if not self.disconnected and state_name(self.handle.state) not in (STOPPED, FINISHED):
                self.log_line("warning", f"cannot list checkpoints: {first_line(e)}")
            return
        self.checkpoints_pane.show(infos)
        self.evaluation_pane.set_checkpoints(infos)

    # ----- commands -------------------------------------------------------------------
    def _when_done(self, future: Future, what: str) -> None:
        """Report a trainer command's outcome as a message (the callback runs on the training thread)."""
        def done(f: Future) -> None:
            error = f.exception()
            message = CommandDone(what, None if error else f.result(), first_line(error) if error else None)
            with contextlib.suppress(RuntimeError):
                self.post_message(message)
        future.add_done_callback(done)

    def on_command_done(self, message: CommandDone) -> None:
        if message.error:
            self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=10, markup=False)
            self.log_line("error", f"{message.what} failed: {message.error}")
        elif message.what == "load":
            # A load changes the step without a new snapshot while paused: ask for one.
            self._pending = self.handle.snapshot()
            self._apply_pending()
            self.notify(f"loaded; training continues from step {message.result:,}")
        elif message.what == "save" and message.result is not None:
            self.notify(f"saved {Path(message.result).name}", timeout=4)
        elif message.what == "recording":
            self.notify(f"recording five games to {message.result}/ in the run's process", timeout=6,
                        markup=False)
        self.refresh_checkpoints()

    def action_toggle_pause(self) -> None:
        state = state_name(self.handle.state)
        if state == RUNNING:
            done = self.handle.pause()
        elif state in (PAUSED, ERROR):
            done = self.handle.resume()
        else:
            self.notify(f"the run is {state}: load a checkpoint or start a new run (pane 2)", severity="warning")
            return
        if not done:
            self.notify(f"the run is {state_name(self.handle.state)}; nothing to pause or resume", severity="warning")

    def action_save(self) -> None:
        self._when_done(self.handle.save_now(), "save")

    def action_evaluate(self) -> None:
        """In the evaluation pane: start. Elsewhere: show the pane ready to start (e or Enter),
        so a stray key never launches a long evaluation."""
        tabs = self.query_one(TabbedContent)
        if tabs.active == "evaluation":
            self.evaluation_pane.start()
            return
        # From the checkpoints table: the selected file; from anywhere else: the current weights.
        self.evaluation_pane.choose(self.checkpoints_pane.selected if tabs.active == "checkpoints" else None)
        self._ready_evaluation()

    def _ready_evaluation(self) -> None:
        self.action_show_pane("evaluation")
        if not self.evaluation_pane.running:
            self.notify(f"e or Enter starts: {self.evaluation_pane.describe()}", timeout=6, markup=False)

    def action_cancel_evaluation(self) -> None:
        if not self.evaluation_pane.cancel():
            self.notify("no evaluation is running")

    def action_toggle_window(self) -> None:
        self.metrics_pane.toggle_window()
        self.action_show_pane("metrics")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.shutting_down or isinstance(self.screen, QuitScreen):
            return
        self.push_screen(QuitScreen(), callback=self._quit_choice)

    def _quit_choice(self, choice: str | None) -> None:
        if choice == STOP_RUN:
            self.begin_shutdown(stop=True, reason="stop the run")
        elif choice == DETACH:
            self.begin_shutdown(stop=False, reason="detach")

    def action_detach(self) -> None:
        self.begin_shutdown(stop=False, reason="detach")

    def action_show_pane(self, pane: str) -> None:
        self._show_game(False)
        self.query_one(TabbedContent).active = pane
        self._focus_pane(pane)

    def action_toggle_game(self) -> None:
        self._show_game(not self.game_pane.display)

    def _show_game(self, show: bool) -> None:
        if show == self.game_pane.display:
            return
        tabs = self.query_one(TabbedContent)
        self.game_pane.display = show
        tabs.display = not show
        # Textual hands the focus of a hidden widget to a sibling, hidden with it (a form field
        # that then swallows every key): keys go to the app while the game shows.
        if show:
            self.set_focus(None)
        else:
            self._focus_pane(tabs.active)

    def _focus_pane(self, pane: str) -> None:
        if pane == "checkpoints":
            self.checkpoints_pane.table.focus()
        elif pane == "evaluation":
            self.set_focus(self.evaluation_pane.query_one("#eval-start"))
        else:  # no field: keys stay global and Tab moves into the pane
            self.query_one(TabbedContent).query_one(Tabs).focus()

    def action_leave_field(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one(TabbedContent).query_one(Tabs).focus()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self) -> None:
        self._update_log_strip()
        self.metrics_pane.set_shown(self.query_one(TabbedContent).active == "metrics")

    def _update_log_strip(self) -> None:
        # The strip repeats the log below the panes on tall screens; not under the log itself.
        self.query_one("#log-strip").set_class(self.query_one(TabbedContent).active == "log", "-hidden")

    # ----- pane requests --------------------------------------------------------------
    @on(CheckpointsPane.Request)
    def _checkpoint_request(self, request: CheckpointsPane.Request) -> None:
        path = request.path
        if request.action == "save":
            self.action_save()
        elif request.action == "refresh":
            self.refresh_checkpoints()
        elif request.action == "evaluate" and path is not None:
            self.evaluation_pane.choose(path)
            self._ready_evaluation()
        elif request.action == "record" and path is not None and hasattr(self.handle, "record"):
            self._when_done(self.handle.record(path), "recording")  # in the run's process: outlives a detach
        elif request.action == "record" and path is not None:
            if self.game_pane.record(path):
                self._show_game(True)
            else:
                self.notify("a recording is already running", severity="warning")
        elif request.action == "load" and path is not None:
            def load(yes: bool | None) -> None:
                if yes:
                    self.log_line("info", f"loading {path.name}…")
                    self._when_done(self.handle.load(path), "load")
            step = next((f"{i.step:,}" for i in self.checkpoints_pane.infos if i.path == path), "?")
            self.push_screen(ConfirmScreen(f"Load {path.name} into the trainer?\nTraining continues from step "
                                           f"{step}; progress since the last save is lost.", yes="Load"), load)
        elif request.action == "delete" and path is not None:
            tags = next((i.tags for i in self.checkpoints_pane.infos if i.path == path), ())
            if "latest" in tags and state_name(self.handle.state) in (RUNNING, PAUSED):  # the handle refuses it
                self.notify(f"{path.name} is the latest checkpoint: it cannot be deleted while training",
                            severity="warning", markup=False)
                return

            def delete(yes: bool | None) -> None:
                if not yes:
                    return
                try:
                    self.handle.delete_checkpoint(path)
                except (ValueError, OSError) as e:
                    self.notify(str(e), severity="error", markup=False)
                    self.log_line("warning", f"{path.name} not deleted: {e}")
                else:
                    self.log_line("info", f"deleted {path.name}")
                self.refresh_checkpoints()
            also = " and best.pt (the same checkpoint)" if "best" in tags and path.name != "best.pt" else ""
            self.push_screen(ConfirmScreen(f"Delete {path.name}{also} and its evaluation?", yes="Delete"), delete)

    @on(HyperparametersPane.LiveChange)
    def _live_change(self, change: HyperparametersPane.LiveChange) -> None:
        try:
            future = self.handle.set_hparams(**{change.key: change.value})
        except ValueError as e:  # ConfigError: the trainer refused it
            self.hparams_pane.refused(change.key, getattr(e, "reason", str(e)))
            return
        self._when_done(future, f"{change.key} change")

    @on(HyperparametersPane.StopRequest)
    def _stop_request(self) -> None:
        def stop(yes: bool | None) -> None:
            if yes:
                self._when_done(self.handle.stop(), "stop")
        self.push_screen(ConfirmScreen("Stop training for good?\nA checkpoint is saved; then the structural "
                                       "fields can be changed to start a new run.", yes="Stop"), stop)

    @on(HyperparametersPane.NewRunRequest)
    def _new_run_request(self, request: HyperparametersPane.NewRunRequest) -> None:
        if self.new_handle is None:
            self.notify("this app cannot start new runs", severity="error")
            return
        self.log_line("info", "starting a new run: " + ", ".join(f"{k}={v}" for k, v in request.overrides.items()))
        self._create_run(self.handle, request.overrides)

    @work(thread=True, exclusive=True, group="new-run", exit_on_error=False)
    def _create_run(self, old: TrainerHandle, overrides: dict[str, Any] | None) -> None:
        """A new run with `old`'s config and `overrides`; None: resume `old`'s run."""
        try:
            handle = self.new_handle(old.config.replace(**overrides) if overrides is not None else old.run_dir)
        except Exception as e:  # noqa: BLE001 - ConfigError, env errors: all shown to the user
            self.post_message(NewRunFailed(str(e) if isinstance(e, ValueError) else first_line(e)))
            return
        old.close(timeout=5)
        self.post_message(NewRunReady(handle))

    def on_new_run_ready(self, message: NewRunReady) -> None:
        self.evaluation_pane.cancel()
        self.handle = message.handle
        self.snapshot = None
        self.start_paused = False
        self.metrics_pane.reset()
        self.hparams_pane.set_config(message.handle.config)
        self._attach_run(message.handle)
        self.notify(f"new run {Path(message.handle.run_dir).name}")

    def on_new_run_failed(self, message: NewRunFailed) -> None:
        text = f"new run not started: {message.text}"
        self.hparams_pane.say(text, error=True)
        self.notify(text, severity="error", markup=False)
        self.log_line("error", text)

    # ----- evaluation results (bubbling up from the evaluation pane) ---------------------
    def on_eval_started(self, message: EvalStarted) -> None:
        if not self.status.is_attached:  # the app is closing: a late word from the worker
            return
        self.log_line("info", f"evaluating the current weights, saved as {message.label}")

    def on_eval_finished(self, message: EvalFinished) -> None:
        if not self.status.is_attached:  # the app is closing: a late word from the worker
            return
        self.log_line("info", f"evaluation done: {summary_text(message.result)}")
        self.notify(f"evaluation: mean {message.result['mean']:.1f} ± {message.result['std']:.1f}", timeout=8)
        self.refresh_checkpoints()

    def on_eval_stopped(self, message: EvalStopped) -> None:
        if not self.status.is_attached:  # the app is closing: a late word from the worker
            return
        self.log_line("info" if message.cancelled else "error", message.text)
        self.notify(message.text, severity="information" if message.cancelled else "error", markup=False)

    def on_game_pane_news(self, news: GamePane.News) -> None:
        self.log_line(news.level, news.text)
        if news.done:
            self.notify(news.text, severity="error" if news.level == "error" else "information", timeout=10,
                        markup=False)

    # ----- quitting -------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        """A lost terminal (SIGHUP) or SIGTERM ends this app only: it detaches, the run goes on."""
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.hung_up = True
        if not self.shutting_down:
            self.log_line("warning", f"received {name}: detaching; the run goes on")
        self.begin_shutdown(stop=False, reason=name)

    def begin_shutdown(self, stop: bool, reason: str) -> None:
        """Leave the app: detach from the run, or first `stop` it (its service saves a checkpoint
        and ends). An evaluation running in the run's service goes on after a detach."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.stopped_run = stop
        handle = self.handle
        if stop or not getattr(handle, "detachable", False):
            self.evaluation_pane.cancel()  # else it goes on in the run's service; this app just stops following
        self.game_pane.close()
        self.notify("saving a checkpoint and stopping the run…" if stop else "detaching…", timeout=30)
        self._shutdown_trainer(handle, stop)

    @work(thread=True, exclusive=True, group="shutdown", exit_on_error=False)
    def _shutdown_trainer(self, handle: TrainerHandle, stop: bool) -> None:
        error = None
        try:
            if stop and not self.disconnected:
                handle.stop().result(timeout=120)
        except Exception as e:  # noqa: BLE001 - reported after exit
            error = f"the final checkpoint was not saved: {first_line(e)}"
        finally:
            handle.close(timeout=5)
            self.trainer_closed = True
        if self.hung_up:
            # The terminal is gone: Textual's output thread may be dead and its next write block
            # the event loop for good. The app is detached; make sure the process ends.
            watchdog = threading.Timer(HANGUP_EXIT_DELAY, os._exit, args=(0,))
            watchdog.daemon = True
            watchdog.start()
        self.post_message(ShutdownDone(error))

    def on_shutdown_done(self, message: ShutdownDone) -> None:
        if message.error:
            self.exit(1, return_code=1, message=message.error)
        else:
            self.exit(0)

    # ----- command palette ------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Pause / resume training", "p: pause a running trainer or resume a paused one",
                            self.action_toggle_pause)
        yield SystemCommand("Save checkpoint now", "s: write a checkpoint of the current weights", self.action_save)
        yield SystemCommand("Evaluate", "e: play whole games with the current weights or the selected checkpoint",
                            self.action_evaluate)
        yield SystemCommand("Cancel evaluation", "c: stop the running evaluation", self.action_cancel_evaluation)
        yield SystemCommand("Load selected checkpoint", "l in pane 3: load it into the trainer (asks first)",
                            lambda: self._palette_checkpoint("load"))
        yield SystemCommand("Delete selected checkpoint", "d in pane 3: delete it (asks first)",
                            lambda: self._palette_checkpoint("delete"))
        yield SystemCommand("Stop training", "stop for good (saves a checkpoint); then a new run can be started",
                            lambda: self.post_message(HyperparametersPane.StopRequest()))
        yield SystemCommand("Metrics window: recent / whole run", "w: switch the sparklines' window",
                            self.action_toggle_window)
        for number, (pane, title) in enumerate(PANES, 1):
            yield SystemCommand(f"Show {title.lower()}", f"{number}: switch to the {title.lower()} pane",
                                lambda pane=pane: self.action_show_pane(pane))
        yield SystemCommand("Show / hide the game", "v: the agent playing live, or the game being recorded",
                            self.action_toggle_game)
        yield SystemCommand("Record videos of selected checkpoint", "m in pane 3: five games to MP4s in videos/",
                            lambda: self._palette_checkpoint("record"))
        yield SystemCommand("Help", "?: keys and panes", self.action_help)
        yield SystemCommand("Detach", "d: leave the app; the run goes on (a2c-tui attach brings it back)",
                            self.action_detach)
        yield SystemCommand("Quit", "q: detach, stop the run, or cancel", self.action_quit)
        yield from (c for c in super().get_system_commands(screen) if c.title != "Quit")

    def _palette_checkpoint(self, action: str) -> None:
        self.action_show_pane("checkpoints")
        if action == "load":
            self.checkpoints_pane.action_load()
        elif action == "record":
            self.checkpoints_pane.action_record()
        else:
            self.checkpoints_pane.action_delete()


def run_app(handle: TrainerHandle, paused: bool = False) -> int:
    """Run the app on `handle` (a RemoteHandle: the run lives in its own process); returns the exit code."""
    from a2c_tui.tui.remote import start_run

    app = A2CApp(handle, paused=paused, new_handle=start_run, handle_signals=True)
    try:
        app.run()
    finally:
        if not app.trainer_closed:  # the app ended without its own shutdown (a crash): detach, the run goes on
            with contextlib.suppress(Exception):
                app.handle.close(timeout=5)
    from a2c_tui.cli import survive_lost_terminal

    run_dir = Path(app.handle.run_dir)
    with survive_lost_terminal():  # after a dropped SSH session there is no terminal: exit 0, not EIO
        if (app.stopped_run or app.disconnected) and not (run_dir / "latest.pt").exists():
            print(f"{'stopped' if app.stopped_run else 'disconnected from'} {run_dir.name} (no checkpoint saved)")
        elif app.stopped_run or app.disconnected:
            state = "stopped" if app.stopped_run else "disconnected from"
            print(f"{state} {run_dir.name}; continue with: a2c-tui --resume {run_dir}")
        else:
            print(f"detached from {run_dir.name}; it goes on (a2c-tui attach {run_dir.name}, a2c-tui stop "
                  f"{run_dir.name})")
    return app.return_code or 0
