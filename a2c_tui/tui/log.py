"""Log pane: what happened, with times — the trainer's events and the app's own actions."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from a2c_tui.tui.messages import fmt_clock

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}
MAX_LINES = 2000


class LogView(RichLog):
    """A log of timed lines; `plain` keeps the text for tests and the copy to the log strip."""

    def __init__(self, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(max_lines=max_lines, wrap=True, markup=False, highlight=False, **kwargs)
        self.plain: deque[str] = deque(maxlen=max_lines)
        # RichLog queues every write until it first learns its size, and a pane never opened
        # never does: without a bound, a run whose Log pane is never looked at keeps every
        # line it ever logged. Only the last max_lines could be shown anyway.
        self._deferred_renders = deque(self._deferred_renders, maxlen=max_lines)

    def add(self, when: float, level: str, text: str) -> None:
        tag = "" if level == "info" else f"{level}: "
        line = Text.assemble((fmt_clock(when) + " ", "dim"), (tag + text, LEVEL_STYLES.get(level, "")))
        self.plain.append(line.plain)
        self.write(line)
