"""Evaluation pane: pick current weights or a checkpoint, play N whole games in a worker
thread, watch progress and scores, read the summary and a histogram of scores.

"Current weights" are first saved as a checkpoint and that file is evaluated, so the result
is saved beside it and shows in the checkpoints table. Actions are sampled from the policy
or greedy (argmax); the seed fixes the games' starts and the sampling, so evaluations with
one seed compare checkpoints on the same games.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Input, ProgressBar, Select, Static

from a2c_tui.config import EVAL_ENVS, EVAL_SEED, ConfigError, check_value
from a2c_tui.tui.messages import (EvalFinished, EvalProgressed, EvalStarted, EvalStopped, first_line, fmt_number)

CURRENT = "current"
CURRENT_LABEL = "current weights (saved first as a checkpoint)"
ACTIONS = [("sampled", "sampled"), ("greedy", "greedy")]
SEED_NOTE = "one seed plays the same games for every checkpoint"
REFRESH_INTERVAL = 0.25  # at most 4 redraws a second however fast games finish


class Histogram(Widget):
    """Horizontal bars: one line per score bin."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores: list[float] = []

    def show(self, scores: list[float]) -> None:
        self.scores = list(scores)
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        if not self.scores:
            return Text("histogram of scores: no games yet", style="dim")
        return Text("\n").join(histogram_lines(self.scores, width, max(1, height - 1)))


def histogram_lines(scores: list[float], width: int, max_bins: int) -> list[Text]:
    low, high = min(scores), max(scores)
    bins = max(1, min(max_bins, 12, len(set(scores))))
    span = (high - low) / bins if high > low else 1.0
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, int((score - low) / span))] += 1
    edges = [low + i * span for i in range(bins + 1)]
    label_width = max(len(f"{e:,.0f}") for e in edges)
    count_width = len(str(max(counts)))
    bar_space = max(1, width - (2 * label_width + 3) - count_width - 2)
    lines = [Text(f"scores ({len(scores)} games)", style="bold")]
    for i, count in enumerate(counts):
        bar = "█" * round(bar_space * count / max(counts)) if count else ""
        line = Text(f"{edges[i]:>{label_width},.0f}–{edges[i + 1]:<{label_width},.0f} │", style="dim")
        line.append(bar, "cyan")
        line.append(f" {count}")
        lines.append(line)
    return lines


def summary_text(result: dict[str, Any]) -> str:
    step = result.get("step")
    where = f" (step {step:,})" if isinstance(step, int) else ""
    how = ""
    if "greedy" in result:
        how = f" · {'greedy' if result['greedy'] else 'sampled'} actions, seed {result.get('seed', '?')}"
    return (f"{result.get('source', '?')}{where}: {result['episodes']} games · "
            f"mean {result['mean']:.1f} ± {result['std']:.1f} · median {result['median']:.1f} · "
            f"min {result['min']:.0f} · max {result['max']:.0f} · mean length {result['mean_length']:.0f} steps"
            f"{how}")


class EvaluationPane(Vertical):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cancel_event: threading.Event | None = None
        self.scores: list[float] = []
        self.total = 0
        self.result: dict[str, Any] | None = None
        self._dirty = False
        self._last_draw = 0.0
        self._draw_timer = None
        self._options: list[tuple[str, str]] = [(CURRENT_LABEL, CURRENT)]

    def compose(self) -> ComposeResult:
        with Horizontal(classes="eval-row"):
            yield Static("source", classes="eval-label")
            yield Select(self._options, value=CURRENT, allow_blank=False, compact=True, id="eval-source")
        with Horizontal(classes="eval-row"):
            yield Static("episodes", classes="eval-label")
            yield Input("100", id="eval-episodes", type="integer", compact=True, classes="eval-number")
            yield Static("envs", classes="eval-label-short")
            yield Input(str(EVAL_ENVS), id="eval-envs", type="integer", compact=True, classes="eval-number")
            yield Static("actions", classes="eval-label-short")
            yield Select(ACTIONS, value="sampled", allow_blank=False, compact=True, id="eval-actions")
            yield Static("seed", classes="eval-label-short")
            yield Input(str(EVAL_SEED), id="eval-seed", type="integer", compact=True, classes="eval-number")
        with Horizontal(classes="eval-row"):
            yield Button("Start (e)", id="eval-start", compact=True, variant="primary")
            yield Button("Cancel (c)", id="eval-cancel", compact=True, disabled=True)
            yield Static(SEED_NOTE, id="eval-note")
        yield ProgressBar(total=100, show_eta=False, id="eval-progress")
        yield Static("no evaluation yet — press e or Start", id="eval-status")
        yield Static("", id="eval-live")
        yield Static("", id="eval-summary")
        yield Histogram(id="eval-hist")

    @property
    def running(self) -> bool:
        return self.cancel_event is not None

    def set_checkpoints(self, infos: list[Any]) -> None:
        options = [(CURRENT_LABEL, CURRENT)] + [
            (f"{i.path.name} · step {i.step:,}{' · ' + ' '.join(i.tags) if i.tags else ''}", str(i.path))
            for i in infos]
        if options == self._options:
            return
        self._options = options
        select = self.query_one("#eval-source", Select)
        value = select.value
        select.set_options(options)
        if any(v == value for _, v in options):
            select.value = value

    def choose(self, path: Path | None) -> None:
        select = self.query_one("#eval-source", Select)
        value = CURRENT if path is None else str(path)
        if not any(v == value for _, v in self._options):
            self._options.append((Path(value).name, value))
            select.set_options(self._options)
        select.value = value

    def describe(self) -> str:
        """What Start would do, in words."""
        value = self.query_one("#eval-source", Select).value
        label = "the current weights" if value == CURRENT else Path(str(value)).name
        episodes = self.query_one("#eval-episodes", Input).value
        envs = self.query_one("#eval-envs", Input).value
        actions = self.query_one("#eval-actions", Select).value
        seed = self.query_one("#eval-seed", Input).value
        return f"{episodes} games of {label} on {envs} envs, {actions} actions, seed {seed}"

    # ----- start / cancel -----------------------------------------------------------------
    def start(self) -> bool:
        """Start an evaluation with the form's settings; False (and a message) if it cannot."""
        if self.running:
            self.app.notify("an evaluation is already running; c cancels it", severity="warning")
            return False
        try:
            episodes = int(self.query_one("#eval-episodes", Input).value)
            envs = int(self.query_one("#eval-envs", Input).value)
        except ValueError:
            episodes = envs = 0
        if episodes < 1 or envs < 1:
            self.app.notify("episodes and envs must be whole numbers >= 1", severity="error")
            return False
        try:  # the envs take seed + i: the run seed's range
            seed = check_value("run.seed", int(self.query_one("#eval-seed", Input).value or "x"))
        except (ValueError, ConfigError) as e:
            self.app.notify(f"seed {getattr(e, 'reason', 'must be a whole number')}", severity="error")
            return False
        greedy = self.query_one("#eval-actions", Select).value == "greedy"
        value = self.query_one("#eval-source", Select).value
        source = None if value == CURRENT else Path(str(value))
        label = CURRENT_LABEL if source is None else source.name
        self._begin(episodes, f"evaluating {label}: {episodes} games on {envs} envs…")
        self._evaluate(self.app.handle, source, episodes, envs, greedy, seed, self.cancel_event)
        return True

    def follow(self, running: Any) -> None:
        """Show an evaluation that runs in the run's service (started before this app attached,
        or by another app) until it ends; c cancels it there."""
        if self.running:
            return
        self.choose(running.path)  # the form shows what is being played, not "current weights"
        self._begin(running.episodes, f"evaluating {running.path.name}: {running.episodes} games on "
                                      f"{running.envs} envs (running in the run's process)…", running.scores,
                    focus=False)
        self._follow(self.app.handle, running.id, self.cancel_event)

    def _begin(self, episodes: int, status: str, scores: list[float] | None = None, focus: bool = True) -> None:
        self.cancel_event = threading.Event()
        self.scores, self.total, self.result = list(scores or []), episodes, None
        start_button, cancel_button = self.query_one("#eval-start", Button), self.query_one("#eval-cancel", Button)
        cancel_button.disabled = False
        if focus or self.app.focused is start_button:
            cancel_button.focus()  # else disabling a focused Start would hand the focus to a text field
        start_button.disabled = True
        self.query_one("#eval-summary", Static).update("")
        self.query_one("#eval-progress", ProgressBar).update(total=episodes, progress=len(self.scores))
        self._status(status)
        self._draw(force=True)

    def cancel(self) -> bool:
        if self.cancel_event is None:
            return False
        self.cancel_event.set()
        self._status("cancelling…")
        return True

    @on(Button.Pressed, "#eval-start")
    def _start_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.start()

    @on(Button.Pressed, "#eval-cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.cancel()

    @on(Input.Submitted, ".eval-number")
    def _number_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#eval-start", Button).focus()

    @work(thread=True, exclusive=True, group="evaluation", exit_on_error=False)
    def _evaluate(self, handle: Any, source: Path | None, episodes: int, envs: int, greedy: bool, seed: int,
                  cancel: threading.Event) -> None:
        """Runs in a worker thread: only post_message from here."""
        try:
            if source is None:
                source = handle.save_now().result(timeout=300)
                if source is None:
                    raise RuntimeError("the current weights could not be saved (see the log)")
                self.post_message(EvalStarted(Path(source).name))
            result = handle.evaluate(source, episodes=episodes, envs=envs, greedy=greedy, seed=seed, cancel=cancel,
                                     progress=self._progressed)
        except Exception as e:  # noqa: BLE001 - every failure must reach the pane
            self._stopped(e, cancel)
            return
        self.post_message(EvalFinished(result))

    @work(thread=True, exclusive=True, group="evaluation", exit_on_error=False)
    def _follow(self, handle: Any, eid: int, cancel: threading.Event) -> None:
        try:
            result = handle.follow_evaluation(eid, cancel=cancel, progress=self._progressed)
        except Exception as e:  # noqa: BLE001 - every failure must reach the pane
            self._stopped(e, cancel)
            return
        self.post_message(EvalFinished(result))

    def _progressed(self, p: Any) -> None:
        self.post_message(EvalProgressed(p.done, p.total, p.score, p.length))

    def _stopped(self, error: Exception, cancel: threading.Event) -> None:
        if cancel.is_set():
            self.post_message(EvalStopped("evaluation cancelled", cancelled=True))
        else:
            self.post_message(EvalStopped(f"evaluation failed: {first_line(error)}", cancelled=False))

    # ----- worker messages (they bubble on to the app) -----------------------------------
    def on_eval_started(self, message: EvalStarted) -> None:
        self._status(f"evaluating {message.label} (the current weights): {self.total} games…")

    def on_eval_progressed(self, message: EvalProgressed) -> None:
        self.scores.append(message.score)
        self.total = message.total
        self._dirty = True
        self._draw()

    def on_eval_finished(self, message: EvalFinished) -> None:
        self._end()
        self.result = message.result
        self.scores = list(message.result.get("scores", self.scores))
        self._draw(force=True)
        self._status("done; the result is saved beside the checkpoint")
        self.query_one("#eval-summary", Static).update(summary_text(message.result))

    def on_eval_stopped(self, message: EvalStopped) -> None:
        self._end()
        self._draw(force=True)
        self._status(message.text, error=not message.cancelled)

    def _end(self) -> None:
        self.cancel_event = None
        start_button, cancel_button = self.query_one("#eval-start", Button), self.query_one("#eval-cancel", Button)
        start_button.disabled = False
        if self.app.focused in (cancel_button, None):
            start_button.focus()
        cancel_button.disabled = True

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#eval-status", Static)
        status.set_class(error, "-error")
        status.update(text)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < REFRESH_INTERVAL:
            if self._draw_timer is None:
                self._draw_timer = self.set_timer(REFRESH_INTERVAL - (now - self._last_draw), self._timed_draw)
            return
        self._last_draw = now
        self._dirty = False
        scores = self.scores
        self.query_one("#eval-progress", ProgressBar).update(total=max(self.total, 1), progress=len(scores))
        if scores:
            mean = sum(scores) / len(scores)
            recent = " ".join(f"{s:.0f}" for s in scores[-8:])
            self.query_one("#eval-live", Static).update(
                f"{len(scores)}/{self.total} games · running mean {fmt_number(mean)} · last: {recent}")
        else:
            self.query_one("#eval-live", Static).update("")
        self.query_one("#eval-hist", Histogram).show(scores)

    def _timed_draw(self) -> None:
        self._draw_timer = None
        if self._dirty:
            self._draw(force=True)

