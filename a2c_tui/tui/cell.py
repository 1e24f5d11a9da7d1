"""A one-line text widget whose updates redraw only itself.

`Static.update` asks for a new layout of the whole screen each time (its size may change);
text that changes 4 times a second in a box of fixed size should not pay for that."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget


class Cell(Widget):
    DEFAULT_CSS = "Cell { height: 1; }"

    def __init__(self, text: str | Text = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._text = text

    @property
    def text(self) -> str:
        return self._text.plain if isinstance(self._text, Text) else self._text

    def set(self, text: str | Text) -> None:
        if text != self._text:
            self._text = text
            self.refresh()

    def render(self) -> str | Text:
        return self._text
