"""Metrics pane: a sparkline with current, min and max for each training diagnostic and for
the evaluations beside training, and where an update's time goes.

Series are kept in bounded buffers: the recent window is a deque of the last records, the
whole run is a list thinned to every 2nd, 4th, ... record so it never grows past a bound.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from a2c_tui.tui.cell import Cell
from a2c_tui.tui.messages import fmt_number, fmt_steps

# (record key, label, main) — main rows get taller sparklines.
METRICS = (
    ("score", "last-100 score", True),
    ("eval_score", "eval score", True),  # evaluations beside training (run.eval_every): records of their own
    ("r2", "R² (value)", True),
    ("grad_norm", "grad norm", True),
    ("entropy", "entropy", False),
    ("value_loss", "value loss", False),
    ("policy_loss", "policy loss", False),
    ("steps_per_sec", "steps/s", False),
    ("advantage_std", "advantage std", False),
)
EVALUATION_KEYS = ("step", "eval_score")
RECENT = 300  # records in the "recent" window
WHOLE_MAX = 1000  # points kept for the whole run


class MetricHistory:
    """Records (one per trainer diagnostics record) in a recent window and a whole-run sample."""

    def __init__(self, keys: Iterable[str], recent: int = RECENT, whole_max: int = WHOLE_MAX):
        self.keys = tuple(keys)
        self.recent: deque[tuple[float, ...]] = deque(maxlen=recent)
        self.whole: list[tuple[float, ...]] = []
        self.whole_max = whole_max
        self.stride = 1  # keep every stride-th record in `whole`
        self.seen = 0
        self.last_update = None  # the trainer's update count of the last record taken

    def add(self, record: Mapping[str, Any]) -> bool:
        """Take a record if it is new; returns whether it was."""
        update = record.get("updates")
        if not record or update is None or update == self.last_update:
            return False
        self.last_update = update
        row = tuple(_as_float(record.get(k)) for k in self.keys)
        self.recent.append(row)
        if self.seen % self.stride == 0:
            self.whole.append(row)
            if len(self.whole) >= self.whole_max:
                self.whole = self.whole[::2]
                self.stride *= 2
        self.seen += 1
        return True

    def series(self, key: str, whole: bool) -> list[float]:
        """The finite values of one metric in the chosen window (NaN before the first game etc.)."""
        index = self.keys.index(key)
        rows = self.whole if whole else self.recent
        return [row[index] for row in rows if math.isfinite(row[index])]

    def span(self, key: str, whole: bool) -> tuple[float, float] | None:
        """The first and last step under one metric's sparkline (records with a value of it)."""
        index, step_index = self.keys.index(key), self.keys.index("step")
        rows = [row for row in (self.whole if whole else self.recent) if math.isfinite(row[index])]
        return (rows[0][step_index], rows[-1][step_index]) if rows else None

    def clear(self) -> None:
        self.__init__(self.keys, self.recent.maxlen or RECENT, self.whole_max)


def is_evaluation(record: Mapping[str, Any]) -> bool:
    """metrics.jsonl holds diagnostics records and, between them, evaluation records."""
    return "eval_score" in record


PHASES = (("time_env", "env"), ("time_act", "act"), ("time_update", "update"))


def time_split(record: Mapping[str, Any]) -> str:
    """Where an update's time goes, and a GPU's memory and load: "time/update 61 ms: env 31% · act 24% · update 45%"."""
    seconds = [_as_float(record.get(key)) for key, _ in PHASES]
    if not all(math.isfinite(s) for s in seconds) or sum(seconds) <= 0:
        return ""
    total = sum(seconds)
    parts = [f"time/update {total * 1000:.0f} ms: " + " · ".join(
        f"{name} {s / total:.0%}" for (_, name), s in zip(PHASES, seconds))]
    memory, reserved = _as_float(record.get("gpu_memory_gib")), _as_float(record.get("gpu_memory_max_reserved_gib"))
    if math.isfinite(memory):
        parts.append(f"GPU {memory:.1f}/{reserved:.1f} GiB")
    utilization = _as_float(record.get("gpu_utilization"))
    if math.isfinite(utilization):
        parts.append(f"busy {utilization:.0f}%")
    return " │ ".join(parts)


def _as_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


BARS = "▁▂▃▄▅▆▇█"


class Spark(Widget):
    """A sparkline of any height in one colour, one styled run per line: Textual's own
    Sparkline styles every cell, ~70 ms a redraw at 200x60 with eight. (A gradient from the
    bottom line up read as several series.)"""

    DEFAULT_CSS = """
    Spark { color: $accent; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values: list[float] = []

    def show(self, values: list[float]) -> None:
        if values != self.values:
            self.values = list(values)
            self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        if width <= 0 or height <= 0:
            return Text()
        return Text("\n".join(spark_lines(self.values, width, height)), no_wrap=True, overflow="crop")


MIN_SPAN = 1e-3  # of the values' magnitude: a smaller range is drawn flat (the numbers show it)


def spark_lines(values: list[float], width: int, height: int) -> list[str]:
    """The sparkline's lines, top to bottom. Each column shows the mean of its share of the
    values (values stretch when there are fewer than columns); the lowest still shows ▁.
    The height spans at least MIN_SPAN of the values' size: an entropy moving in its sixth
    digit must not swing from bottom to top."""
    if not values:
        return [" " * width] * (height - 1) + ["▁" * width]
    count = len(values)
    columns = []
    for column in range(width):
        start = column * count // width
        share = values[start:max(start + 1, (column + 1) * count // width)]
        columns.append(sum(share) / len(share))
    low, high = min(columns), max(columns)
    extent = max(high - low, MIN_SPAN * max(abs(low), abs(high))) or 1.0
    top_index = 8 * height - 1
    indexes = [int((v - low) / extent * top_index) for v in columns]
    lines = []
    for line in reversed(range(height)):
        floor = 8 * line
        lines.append("".join(" " if i < floor else "█" if i >= floor + 8 else BARS[i - floor] for i in indexes))
    return lines


def row_heights(lines: int, main_rows: int, other_rows: int) -> tuple[int, int]:
    """(main, other) row heights that share `lines` evenly: every row as tall as the space
    allows (1 to 4 lines), then what is left to the main rows (at most 8). Textual's fr
    heights rounded eight rows into 3, 2 and 1 lines."""
    other = max(1, min(4, lines // (main_rows + other_rows)))
    main = max(other, min(8, (lines - other * other_rows) // main_rows))
    return main, other


class MetricRow(Horizontal):
    def __init__(self, key: str, label: str, main: bool) -> None:
        super().__init__(classes="metric-row main" if main else "metric-row", id=f"metric-{key}")
        self.key = key
        self.label = label
        self._stats = ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="metric-label"):
            yield Static(self.label, classes="metric-name")
            yield Cell("", classes="metric-steps")  # a row of one line has no room for it
        yield Spark(classes="metric-spark")
        yield Cell("", classes="metric-stats")

    def on_mount(self) -> None:
        self._spark = self.query_one(Spark)
        self._cell = self.query_one(".metric-stats", Cell)
        self._steps = self.query_one(".metric-steps", Cell)

    def show(self, values: list[float], span: tuple[float, float] | None = None) -> None:
        self._spark.show(values)
        self._steps.set(f"{fmt_steps(span[0])}–{fmt_steps(span[1])}" if span else "")
        if values:
            now, low, high = values[-1], min(values), max(values)
            digits = 4 if fmt_number(low) != fmt_number(high) or low == high else 6  # show that it moves
            stats = " ".join(f"{fmt_number(v, digits):>9}" for v in (now, low, high))
        else:
            stats = f"{'-':>9} {'-':>9} {'-':>9}"
        self._stats = stats
        self._cell.set(stats)

    @property
    def stats(self) -> str:
        return self._stats


class MetricsPane(Vertical):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history = MetricHistory(("step", *(key for key, _, _ in METRICS if key not in EVALUATION_KEYS)))
        self.evaluations = MetricHistory(EVALUATION_KEYS)  # thinned apart: one every 30+ records
        self.whole_run = False
        self._last_time_split = ""
        self.shown = True  # the app says when its tab is hidden: then records are only stored
        self._stale = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="metrics-header"):
            yield Cell(self._header(), id="metrics-window")
            yield Static(f"{'now':>9} {'min':>9} {'max':>9}", classes="metric-stats")
        yield Cell("", id="metrics-time")
        for key, label, main in METRICS:
            yield MetricRow(key, label, main)

    def _header(self) -> str:
        window = (f"whole run, {len(self.history.whole)} points" if self.whole_run
                  else f"recent {len(self.history.recent)} records")
        return f"window: {window} · w switches"

    def on_mount(self) -> None:
        self._rows = list(self.query(MetricRow))
        self._window = self.query_one("#metrics-window", Cell)
        self._time = self.query_one("#metrics-time", Cell)
        self.redraw()

    def on_resize(self) -> None:
        header = self.query_one("#metrics-header").outer_size.height + self._time.outer_size.height
        mains = sum(row.has_class("main") for row in self._rows)
        main, other = row_heights(self.content_size.height - header, mains, len(self._rows) - mains)
        for row in self._rows:
            row.styles.height = main if row.has_class("main") else other

    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Records written before the app opened (a resumed run)."""
        for record in records:
            self._take(record)
        self.redraw()

    def add(self, record: Mapping[str, Any]) -> None:
        """A diagnostics or evaluation record (the same record again is ignored)."""
        if self._take(record):
            self.redraw()

    def _take(self, record: Mapping[str, Any]) -> bool:
        if is_evaluation(record):
            return self.evaluations.add(record)
        if not self.history.add(record):
            return False
        self._last_time_split = time_split(record)
        return True

    def toggle_window(self) -> None:
        self.whole_run = not self.whole_run
        self.redraw()

    def reset(self) -> None:
        self.history.clear()
        self.evaluations.clear()
        self._last_time_split = ""
        self.redraw()

    def set_shown(self, shown: bool) -> None:
        self.shown = shown
        if shown and self._stale:
            self.redraw()

    def redraw(self) -> None:
        if not self.is_mounted or not self.shown:
            self._stale = True
            return
        self._stale = False
        self._window.set(self._header())
        self._time.set(self._last_time_split)
        for row in self._rows:
            history = self.evaluations if row.key in EVALUATION_KEYS else self.history
            row.show(history.series(row.key, self.whole_run), history.span(row.key, self.whole_run))
