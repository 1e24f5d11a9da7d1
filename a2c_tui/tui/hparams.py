"""Hyperparameters pane: the full resolved config, live fields editable while training,
structural fields editable once the run is stopped (they start a new run)."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Static

from a2c_tui.config import LIVE_KEYS, ConfigError, check_value, echo, parse_override, to_toml
from a2c_tui.tui.cell import Cell
from a2c_tui.tui.messages import FINISHED, STOPPED, state_name

STRUCTURAL = (("env.id", "game"), ("env.num_envs", "num_envs"), ("algo.n_steps", "n_steps"),
              ("run.total_steps", "total_steps"), ("run.seed", "seed"))
NEW_RUN_STATES = (STOPPED, FINISHED)


def parse_field(key: str, text: str) -> Any:
    """Typed text -> a checked value for `key` (TOML literals: 3e-4, 10_000, Breakout); raises ConfigError."""
    if not text.strip():
        raise ConfigError(f"{key} needs a value")
    _, value = parse_override(f"{key}={text}")
    return check_value(key, value)


class ConfigValidator(Validator):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_field(self.key, value)
        except ConfigError as e:
            return self.failure(e.reason)
        return self.success()


class ConfigView(Static, can_focus=True):
    """The resolved config; focusable so the keyboard can reach and scroll it."""

    BINDINGS = [
        Binding("up", "scroll('up')", show=False),
        Binding("down", "scroll('down')", show=False),
        Binding("pageup", "scroll('page_up')", show=False),
        Binding("pagedown", "scroll('page_down')", show=False),
    ]

    def action_scroll(self, how: str) -> None:
        pane = self.parent
        if isinstance(pane, VerticalScroll):
            getattr(pane, f"scroll_{how}")()


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class HyperparametersPane(VerticalScroll, can_focus=False):
    """Not focusable itself, so Tab goes straight to the fields (focusing one scrolls it into view)."""

    class LiveChange(Message):
        """The user submitted a valid live value (the app sends it to the trainer)."""

        def __init__(self, key: str, value: float) -> None:
            super().__init__()
            self.key = key
            self.value = value

    class StopRequest(Message):
        pass

    class NewRunRequest(Message):
        def __init__(self, overrides: dict[str, Any]) -> None:
            super().__init__()
            self.overrides = overrides

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self._shown_live: dict[str, str] = {}  # what each live field showed last (unchanged = not edited)
        self._now_text: dict[str, str] = {}
        self._state = ""
        self._latest: Any = None  # the newest snapshot, drawn while the pane is on screen
        self._on_screen = False
        self._said: tuple[str, bool] | None = None
        self._typing_error = False  # the message is a typed value's problem (cleared once it is fixed)

    def compose(self) -> ComposeResult:
        schedule = self.config.algo.lr_schedule
        with Vertical(id="hp-edit"):
            yield Static("[b]Live[/b] — applied at the next update · Enter applies · Esc leaves",
                         classes="hp-title")
            for key in LIVE_KEYS:
                value = getattr(self.config.algo, key)
                self._shown_live[key] = _shown(value)
                with Horizontal(classes="hp-row"):
                    yield Static(key, classes="hp-label")
                    yield Input(_shown(value), id=f"live-{key}", compact=True, classes="hp-input",
                                validators=[ConfigValidator(f"algo.{key}")], validate_on=["changed", "submitted"])
                    note = " (linear decay)" if key == "lr" and schedule == "linear" else ""
                    yield Cell(f"now {_shown(value)}{note}", id=f"now-{key}", classes="hp-now")
            yield Static("", id="hp-message")
            yield Static("[b]Structural[/b] — editable when stopped; start a new run",
                         classes="hp-title")
            for key, label in STRUCTURAL:
                section, _, name = key.partition(".")
                with Horizontal(classes="hp-row"):
                    yield Static(label, classes="hp-label")
                    yield Input(_shown(getattr(getattr(self.config, section), name)), id=f"struct-{name}",
                                compact=True, classes="hp-input", disabled=True,
                                validators=[ConfigValidator(key)], validate_on=["submitted"])
            with Horizontal(classes="hp-buttons"):
                yield Button("Stop training", id="hp-stop", compact=True, variant="warning")
                yield Button("Start new run", id="hp-new-run", compact=True, variant="primary", disabled=True)
        yield ConfigView(self._config_text(), id="hp-config")

    def _config_text(self) -> str:
        return "[b]Resolved config[/b]\n" + to_toml(self.config).replace("[", r"\[").rstrip()

    def on_mount(self) -> None:
        self._now = {key: self.query_one(f"#now-{key}", Cell) for key in LIVE_KEYS}
        self._live = {key: self.query_one(f"#live-{key}", Input) for key in LIVE_KEYS}

    # ----- from the app -------------------------------------------------------------------
    def show(self, snapshot: Any) -> None:
        """The latest snapshot; drawn now if the pane is on screen, else when it is shown
        (the decaying lr would otherwise cost a layout pass of the whole screen per refresh)."""
        self._latest = snapshot
        if self._on_screen:
            self._draw(snapshot)

    def on_show(self) -> None:
        self._on_screen = True
        if self._latest is not None:
            self._draw(self._latest)

    def on_hide(self) -> None:
        self._on_screen = False

    def _draw(self, snapshot: Any) -> None:
        for key in LIVE_KEYS:
            value = snapshot.hparams.get(key)
            if value is None:
                continue
            text = _shown(value)
            note = " (linear decay)" if key == "lr" and self.config.algo.lr_schedule == "linear" else ""
            if self._now_text.get(key) != text:
                self._now_text[key] = text
                self._now[key].set(f"now {text}{note}")
            field = self._live[key]
            # Never overwrite what the user is typing.
            if not field.has_focus and field.value == self._shown_live[key]:
                field.value = text
                self._shown_live[key] = text
        state = state_name(snapshot.state)
        if state != self._state:
            self._state = state
            editable = state in NEW_RUN_STATES
            for _, name in ((k, k.partition(".")[2]) for k, _ in STRUCTURAL):
                self.query_one(f"#struct-{name}", Input).disabled = not editable
            self.query_one("#hp-new-run", Button).disabled = not editable
            self.query_one("#hp-stop", Button).disabled = editable

    def set_config(self, config: Any) -> None:
        """A new run: show its config."""
        self.config = config
        for key in LIVE_KEYS:
            self._shown_live[key] = _shown(getattr(config.algo, key))
            self.query_one(f"#live-{key}", Input).value = self._shown_live[key]
        for key, _ in STRUCTURAL:
            section, _, name = key.partition(".")
            self.query_one(f"#struct-{name}", Input).value = _shown(getattr(getattr(config, section), name))
        self.query_one("#hp-config", Static).update(self._config_text())
        self.say("")

    def say(self, text: str, error: bool = False) -> None:
        # The lr field follows the decaying lr at every refresh, and each change asks to clear
        # the message: only a real change may cost a layout pass.
        if self._said == (text, error):
            return
        self._said = (text, error)
        self._typing_error = False
        message = self.query_one("#hp-message", Static)
        message.set_class(error, "-error")
        message.update(text)

    # ----- user input ---------------------------------------------------------------------
    @on(Input.Changed, ".hp-input")
    def _changed(self, event: Input.Changed) -> None:
        # Also posted when the pane itself sets a field (the lr follows its schedule): a valid
        # value clears only a typing problem, never a refusal or a confirmation.
        field_id = event.input.id or ""
        if not field_id.startswith("live-") or event.validation_result is None:
            return
        failures = event.validation_result.failure_descriptions
        if failures:
            self.say(f"{field_id.removeprefix('live-')} {failures[0]}", error=True)
            self._typing_error = True
        elif self._typing_error:
            self.say("")

    @on(Input.Submitted, ".hp-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field_id = event.input.id or ""
        if not field_id.startswith("live-"):
            self.query_one("#hp-new-run", Button).focus()
            return
        key = field_id.removeprefix("live-")
        try:
            value = parse_field(f"algo.{key}", event.value)
        except ConfigError as e:
            self.refused(key, e.reason, event.value)
            return
        current = self._trainer_value(key)
        if _shown(value) == current:  # (as shown: the lr field shows the scheduled lr rounded)
            event.input.value = self._shown_live[key] = current
            self.say(f"{key} is already {current}: nothing to change")
            return
        self._shown_live[key] = event.input.value  # the field may now follow the trainer again
        self.say(f"{key} = {value:g} sent to the trainer")
        self.post_message(self.LiveChange(key, float(value)))

    def refused(self, key: str, reason: str, typed: Any = None) -> None:
        """A live value was refused (here or by the trainer): say why, reason first, and put
        the trainer's value back in the field, so the form shows what the run uses."""
        self._live[key].value = self._shown_live[key] = self._trainer_value(key)
        self.say(f"{key} not applied: {reason}", error=True)
        self.app.notify(f"{key} not applied: {reason}", severity="error", markup=False)
        typed_text = "" if typed is None else f" (typed {echo(typed)})"
        self.app.log_line("warning", f"{key} not applied: {reason}{typed_text}")

    def _trainer_value(self, key: str) -> str:
        """A live value as the run uses it now (lr: the scheduled lr), as the field shows it."""
        value = self._latest.hparams.get(key) if self._latest is not None else None
        return _shown(getattr(self.config.algo, key) if value is None else value)

    @on(Button.Pressed, "#hp-stop")
    def _stop(self) -> None:
        self.post_message(self.StopRequest())

    @on(Button.Pressed, "#hp-new-run")
    def _new_run(self) -> None:
        overrides = {}
        for key, label in STRUCTURAL:
            field = self.query_one(f"#struct-{key.partition('.')[2]}", Input)
            try:
                overrides[key] = parse_field(key, field.value)
            except ConfigError as e:
                self.say(f"new run not started: {label} {e.reason}", error=True)
                field.focus()
                return
        self.say("starting a new run…")
        self.post_message(self.NewRunRequest(overrides))
