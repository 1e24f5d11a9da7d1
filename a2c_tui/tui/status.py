"""The status bar: run, game, state, progress, speed, time and device, always visible.

Its parts are packed onto as many lines as the width needs (two at 80 columns, one when wide)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

from a2c_tui.tui.messages import STATE_STYLES, fmt_duration, state_name

SEPARATOR = " │ "


class StatusBar(Widget):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts: list[Text] = [Text("starting…")]

    def show(self, snapshot: Any) -> None:
        parts = status_parts(snapshot)
        if [p.plain for p in parts] == [p.plain for p in self._parts]:
            return  # nothing changed: no redraw
        lines_before = len(self._pack(self.content_size.width))
        self._parts = parts
        # Only a change in the number of lines needs the screen laid out again.
        self.refresh(layout=len(self._pack(self.content_size.width)) != lines_before)

    def disconnected(self) -> None:
        """The run's service is gone: the state becomes DISCONNECTED, the rest stays as last seen."""
        self._parts = [Text(" DISCONNECTED ", style="bold white on red"), *self._parts[1:]]
        self.refresh()

    @property
    def text(self) -> str:
        return SEPARATOR.join(p.plain for p in self._parts)

    def _pack(self, width: int) -> list[Text]:
        """One line if it fits; else the run's identity on one line and its progress on the next."""
        groups = [self._parts] if _length(self._parts) <= width else [self._parts[:IDENTITY], self._parts[IDENTITY:]]
        lines: list[Text] = []
        for group in groups:
            line: Text | None = None
            for part in group:
                if line is not None and len(line) + len(SEPARATOR) + len(part) <= width:
                    line.append(SEPARATOR, "dim")
                    line.append_text(part)
                else:
                    line = part.copy()
                    lines.append(line)
        return lines

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self._pack(width)))

    def render(self) -> Text:
        return Text("\n").join(self._pack(self.content_size.width))


IDENTITY = 4  # the first parts name the run; the rest say how it goes


def _length(parts: list[Text]) -> int:
    return sum(len(p) for p in parts) + len(SEPARATOR) * (len(parts) - 1)


def status_parts(s: Any) -> list[Text]:
    state = state_name(s.state)
    done = s.step / s.total_steps if s.total_steps else 0.0
    running = state == "RUNNING"  # a stopped run's last speed is not its speed
    speed = f"{s.steps_per_sec:,.0f} steps/s" if running and s.steps_per_sec > 0 else "- steps/s"
    eta = fmt_duration(s.eta) if running else "-"
    return [
        Text(f" {state} ", style=STATE_STYLES.get(state, "bold")),
        Text(s.run_name, style="bold"),
        Text(s.env_id),
        Text(s.device),
        Text(f"{s.step:,}/{s.total_steps:,} ({done:.1%})"),
        Text(speed),
        Text(f"elapsed {fmt_duration(s.elapsed)}"),
        Text(f"ETA {eta}"),
    ]
