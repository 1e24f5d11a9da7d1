"""Modal screens: quit (detach / stop the run / cancel), yes-no confirmations, help."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

DETACH, STOP_RUN, CANCEL = "detach", "stop_run", "cancel"


class QuitScreen(ModalScreen[str]):
    BINDINGS = [
        Binding("d,q", "choose('detach')", "Detach"),
        Binding("s", "choose('stop_run')", "Stop the run"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog", classes="dialog"):
            yield Static("[b]Leave the app?[/b]\nDetach: the run goes on in the background (a2c-tui attach "
                         "brings it back). Stop the run: save a checkpoint and end it.", classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Detach (d)", id="detach", variant="primary", compact=True)
                yield Button("Stop the run (s)", id="stop_run", variant="error", compact=True)
                yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or CANCEL)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="warning", compact=True)
                yield Button("Cancel (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


HELP = """\
[b]Keys[/b]
  [b]p[/b]       pause / resume training
  [b]s[/b]       save a checkpoint now
  [b]e[/b]       evaluate: shows the form for the current weights
          (in pane 3: the selected file); e or Enter starts
  [b]c[/b]       cancel the running evaluation
  [b]w[/b]       metrics window: recent records / whole run
  [b]v[/b]       show / hide the game: the agent playing live (only
          while shown)
  [b]d[/b]       detach: leave the app, the run goes on (in pane 3:
          delete)
  [b]q[/b]       quit: detach, stop the run (saves), or cancel
  [b]1[/b]-[b]5[/b]     metrics, hyperparameters, checkpoints, evaluation, log
  [b]?[/b]       this help
  [b]ctrl+p[/b]  command palette: every action is there too
  [b]Tab[/b]     next field (shift+Tab: previous); [b]Esc[/b] leaves a field

[b]Hyperparameters (2)[/b]  type a value and press Enter: it
  applies at the next update; an invalid value is refused with
  the reason and the field shows the run's value again.
  Structural fields open once training is stopped ("Stop
  training") and start a new run.
[b]Checkpoints (3)[/b]  arrows select; [b]l[/b] load into the trainer,
  [b]e[/b] evaluate, [b]d[/b] delete (both ask first), [b]m[/b] record five
  games to MP4s in videos/ (the game view shows them playing).
[b]Evaluation (4)[/b]  current weights are saved as a checkpoint
  first, so the result (JSON beside the file) shows in pane 3.

The run is a process of its own: closing the terminal (SIGHUP)
detaches. `a2c-tui attach` brings the app back; `a2c-tui ls`
lists the runs.
Esc, q or ? closes this help."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Static(HELP, classes="dialog-text")

    def action_close(self) -> None:
        self.dismiss(None)
