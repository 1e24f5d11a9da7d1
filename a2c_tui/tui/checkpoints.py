"""Checkpoints pane: the run's checkpoint files with their scores; save, load, evaluate, delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Static

from a2c_tui.tui.messages import fmt_number, fmt_size

COLUMNS = ("step", "saved", "last-100", "eval", "size", "tags", "file")
SPREAD_MAX = 10  # cells a column may widen by to use a wide terminal (more only spaces the numbers apart)


def _saved(mtime: float) -> str:
    today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", time.localtime(mtime))
    return time.strftime("%H:%M:%S" if today else "%m-%d %H:%M", time.localtime(mtime))


def column_widths(rows: list[tuple[str, ...]], room: int) -> list[int]:
    """Each column as wide as its widest cell, the room left over shared out evenly (a wide
    terminal left the table in its first 50 columns)."""
    natural = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    extra = min(SPREAD_MAX, max(0, room - sum(natural)) // len(natural))
    return [width + extra for width in natural]


def checkpoint_row(info: Any) -> tuple[str, ...]:
    return (f"{info.step:,}" if info.step >= 0 else "?", _saved(info.mtime), fmt_number(info.score),
            fmt_number(info.eval_mean), fmt_size(info.size), " ".join(info.tags), info.path.name)


class CheckpointsPane(Vertical):
    BINDINGS = [
        Binding("l", "load", "Load"),
        Binding("d", "delete", "Delete"),
        Binding("e", "evaluate", "Evaluate this"),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("m", "record", "Record MP4s", show=False),
    ]

    class Request(Message):
        """The user asked for `action` ("load" | "delete" | "evaluate" | "save" | "record") on `path`."""

        def __init__(self, action: str, path: Path | None) -> None:
            super().__init__()
            self.action = action
            self.path = path

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.infos: list[Any] = []
        self._rows: list[tuple[str, ...]] = []
        self._filled_for = -1  # the table width the columns were sized for

    def compose(self) -> ComposeResult:
        yield DataTable(id="ckpt-table", cursor_type="row", zebra_stripes=True)
        yield Static("no checkpoints yet — press s to save one", id="ckpt-detail")
        with Horizontal(id="ckpt-buttons"):
            yield Button("Save now (s)", id="ckpt-save", compact=True)
            yield Button("Load (l)", id="ckpt-load", compact=True)
            yield Button("Evaluate (e)", id="ckpt-evaluate", compact=True)
            yield Button("Delete (d)", id="ckpt-delete", compact=True, variant="error")

    @property
    def table(self) -> DataTable:
        return self.query_one("#ckpt-table", DataTable)

    def show(self, infos: list[Any]) -> None:
        """Redraw the table if the list changed, keeping the cursor on the same file."""
        unique = {str(i.path): i for i in infos}  # a file listed twice gets one row
        infos = list(unique.values())
        rows = [checkpoint_row(i) + (str(i.path),) for i in infos]
        if rows == self._rows:
            return
        selected = self.selected
        self.infos, self._rows = list(infos), rows
        self._fill(selected)

    def on_mount(self) -> None:
        self._fill(None)

    def on_resize(self) -> None:
        if self.table.scrollable_content_region.width != self._filled_for:
            self._fill(self.selected)

    def on_show(self) -> None:
        self.on_resize()  # rows that came while the pane was hidden were sized for no room

    def _fill(self, selected: Path | None) -> None:
        """The table's columns (sized to the pane) and rows, the cursor on `selected`."""
        table = self.table
        self._filled_for = room = table.scrollable_content_region.width
        cells = [COLUMNS] + [row[:-1] for row in self._rows]
        table.clear(columns=True)
        for column, width in zip(COLUMNS, column_widths(cells, room - 2 * table.cell_padding * len(COLUMNS))):
            table.add_column(column, key=column, width=width)
        for info, row in zip(self.infos, self._rows):
            table.add_row(*row[:-1], key=str(info.path))
        for index, info in enumerate(self.infos):
            if selected is not None and info.path == selected:
                table.move_cursor(row=index)
        self._show_detail()

    @property
    def selected(self) -> Path | None:
        if not self.infos:
            return None
        row = self.table.cursor_row
        return self.infos[row].path if 0 <= row < len(self.infos) else None

    def _show_detail(self) -> None:
        path = self.selected
        detail = self.query_one("#ckpt-detail", Static)
        if path is None:
            detail.update("no checkpoints yet — press s to save one")
        else:
            detail.update(f"{path.name} in {path.parent}")

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    def _request(self, action: str) -> None:
        path = self.selected
        if path is None and action != "save":
            self.app.notify("no checkpoint selected", severity="warning")
            return
        self.post_message(self.Request(action, path))

    def action_load(self) -> None:
        self._request("load")

    def action_delete(self) -> None:
        self._request("delete")

    def action_evaluate(self) -> None:
        self._request("evaluate")

    def action_record(self) -> None:
        self._request("record")

    def action_refresh(self) -> None:
        self.post_message(self.Request("refresh", None))

    @on(DataTable.RowSelected)
    def _enter(self) -> None:
        self.app.notify("l load · e evaluate · d delete", timeout=3)

    @on(Button.Pressed, "#ckpt-buttons Button")
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        self._request((event.button.id or "").removeprefix("ckpt-"))
