"""The game pane: a game frame drawn with half-block cells in colour, scaled to the pane.

Each cell shows two pixels: "▀" with the upper pixel as foreground and the lower one as
background (a plain space on that colour where both are the same). A terminal cell is
about twice as tall as wide, so half-block pixels are square; the picture keeps its aspect
ratio (4:3 for an Atari screen) and is centred. Downscaling averages each pixel's source
box, so a one-pixel bullet stays visible at 80×24; a large terminal simply gets more cells.

Frames come from a `FrameSource`, pulled at most `max_fps` times a second while the view
is shown; the view subscribes on Show and unsubscribes on Hide, which is what lets the
producer do nothing while nobody watches. `show_frame()` may also be called directly (on
the UI thread); it is throttled to the same rate, the newest frame winning.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from a2c_tui.learn.frames import FrameSource

UPPER_HALF = "▀"


def fit(aspect: float, cols: int, rows: int) -> tuple[int, int]:
    """The largest (width, height) in half-block pixels with width/height ≈ aspect that fits
    in cols × rows cells (2 pixels a row)."""
    if cols < 1 or rows < 1:
        return 0, 0
    height = 2 * rows
    width = round(height * aspect)
    if width > cols:
        width = cols
        height = max(1, min(2 * rows, round(width / aspect)))
    return max(1, width), height


def box_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (height, width, 3): the mean of each output pixel's source box
    (at least one source pixel, so enlarging repeats pixels)."""
    source_h, source_w = pixels.shape[:2]
    ys = np.floor(np.arange(height + 1) * source_h / height).astype(np.int64)
    xs = np.floor(np.arange(width + 1) * source_w / width).astype(np.int64)
    y0, y1 = ys[:-1], np.maximum(ys[1:], ys[:-1] + 1)
    x0, x1 = xs[:-1], np.maximum(xs[1:], xs[:-1] + 1)
    table = np.zeros((source_h + 1, source_w + 1, pixels.shape[2]), np.int64)
    table[1:, 1:] = pixels.cumsum(0).cumsum(1)
    sums = (table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0])
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :])[..., None]
    return ((sums + area // 2) // area).astype(np.uint8)


class CellPainter:
    """Turns an RGB image into Strips of half-block cells, reusing one Style per colour pair."""

    def __init__(self) -> None:
        self._styles: dict[tuple[int, int], Style] = {}

    def _style(self, upper: int, lower: int) -> Style:
        style = self._styles.get((upper, lower))
        if style is None:
            if len(self._styles) > 8192:
                self._styles.clear()
            background = Color.from_rgb(lower >> 16, (lower >> 8) & 255, lower & 255)
            if upper == lower:
                style = Style(bgcolor=background)
            else:
                style = Style(color=Color.from_rgb(upper >> 16, (upper >> 8) & 255, upper & 255), bgcolor=background)
            self._styles[(upper, lower)] = style
        return style

    def paint(self, pixels: np.ndarray, aspect: float, cols: int, rows: int, base: Style | None = None) -> list[Strip]:
        """`rows` strips, `cols` cells each, with the picture scaled to fit and centred on `base`."""
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        width, height = fit(aspect, cols, rows)
        if width == 0:
            return [Strip.blank(cols, base) for _ in range(rows)]
        image = box_resize(pixels, height, width).astype(np.int32)
        keys = (image[..., 0] << 16) | (image[..., 1] << 8) | image[..., 2]
        if height % 2:
            keys = np.vstack([keys, np.zeros((1, width), np.int32)])  # the last lower half is black
        left = (cols - width) // 2
        used_rows = keys.shape[0] // 2
        top = (rows - used_rows) // 2
        strips = [Strip.blank(cols, base) for _ in range(top)]
        for row in range(used_rows):
            upper, lower = keys[2 * row], keys[2 * row + 1]
            change = np.flatnonzero((upper[1:] != upper[:-1]) | (lower[1:] != lower[:-1])) + 1
            starts = np.concatenate([[0], change])
            ends = np.concatenate([change, [width]])
            segments = [Segment(" " * left, base)] if left else []
            for start, end in zip(starts.tolist(), ends.tolist()):
                u, d = int(upper[start]), int(lower[start])
                segments.append(Segment((" " if u == d else UPPER_HALF) * (end - start), self._style(u, d)))
            if cols - left - width:
                segments.append(Segment(" " * (cols - left - width), base))
            strips.append(Strip(segments, cols))
        strips += [Strip.blank(cols, base) for _ in range(rows - len(strips))]
        return strips


class GameView(Widget):
    """A game frame in half-block cells, with a one-line caption on top."""

    DEFAULT_CSS = """
    GameView {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(self, source: FrameSource | None = None, *, max_fps: float = 10.0, name: str | None = None,
                 id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.source = source
        self.interval = 1.0 / max_fps
        self.frames_drawn = 0  # frames taken for drawing (throttled), for tests and the benchmark
        self.caption = "no game to show yet" if source is not None else ""
        self._pixels: np.ndarray | None = None
        self._aspect = 1.0
        self._pending: tuple[np.ndarray, str, float] | None = None
        self._last_draw = -float("inf")
        self._flush_timer = None
        self._shown_number = -1
        self._subscribed = False
        self._painter = CellPainter()
        self._strips: list[Strip] | None = None
        self._strips_size: tuple[int, int] | None = None

    # --- the source ---
    def on_mount(self) -> None:
        self._poll_timer = self.set_interval(self.interval, self._poll, pause=True)

    def on_show(self, _event: events.Show) -> None:
        if self.source is not None and not self._subscribed:
            self.source.subscribe()
            self._subscribed = True
            self._poll_timer.resume()

    def on_hide(self, _event: events.Hide) -> None:
        self._stop_watching()

    def on_unmount(self) -> None:
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._subscribed:
            self._subscribed = False
            self._poll_timer.pause()
            self.source.unsubscribe()

    def set_source(self, source: FrameSource) -> None:
        """Watch another source from now on (the old one is told nobody watches it any more)."""
        if source is self.source:
            return
        watching = self._subscribed
        self._stop_watching()
        self.source = source
        self._shown_number = -1
        if watching:
            self.source.subscribe()
            self._subscribed = True
            self._poll_timer.resume()

    def _poll(self) -> None:
        frame = self.source.latest() if self.source is not None else None
        if frame is not None and frame.number != self._shown_number:
            self._shown_number = frame.number
            self.show_frame(frame.pixels, frame.label, frame.aspect)

    # --- drawing ---
    def show_frame(self, pixels: np.ndarray, caption: str = "", aspect: float | None = None) -> None:
        """Draw this frame now, or at the next free slot if one was drawn less than 1/max_fps ago."""
        height, width = pixels.shape[:2]
        self._pending = (pixels, caption, aspect or width / height)
        wait = self._last_draw + self.interval - time.monotonic()
        if wait <= 0:
            self._draw_pending()
        elif self._flush_timer is None:
            self._flush_timer = self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._flush_timer = None
        if self._pending is None:
            return
        self._pixels, self.caption, self._aspect = self._pending
        self._pending = None
        self._last_draw = time.monotonic()
        self.frames_drawn += 1
        self._strips = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        cols, rows = self.size
        if y == 0:
            return Strip([Segment(self.caption[:cols].ljust(cols), self.rich_style)], cols)
        if self._pixels is None:
            return Strip.blank(cols, self.rich_style)
        if self._strips is None or self._strips_size != (cols, rows):
            self._strips = self._painter.paint(self._pixels, self._aspect, cols, rows - 1, self.rich_style)
            self._strips_size = (cols, rows)
        return self._strips[y - 1] if y - 1 < len(self._strips) else Strip.blank(cols, self.rich_style)


def live_weights(handle: Any) -> Callable[[], tuple[dict, str]] | None:
    """The live game's weights source for a trainer handle: its weights() future (a CPU copy
    made between updates) and the step they are from; None for a handle without weights()."""
    fetch = getattr(handle, "weights", None)
    if fetch is None:
        return None

    def current() -> tuple[dict, str]:
        return fetch().result(timeout=60), f"step {handle.snapshot().step:,}"

    return current


class GamePane(Vertical):
    """The game pane: the live game of the attached run, or the game being recorded.

    The live game (`liveview.LivePlayer`) plays only while this pane is on screen. A
    recording started here shows its games instead until it ends. Progress and results
    are posted as `GamePane.News` messages, which bubble up to the app (for its log).
    torch is imported only when a run is attached or a recording starts.
    """

    DEFAULT_CSS = """
    GamePane {
        height: 1fr;
    }
    """

    class News(Message):
        """A line for the app's log; `done` when a recording ended (finished, cancelled or failed)."""

        def __init__(self, level: str, text: str, done: bool = False) -> None:
            super().__init__()
            self.level = level
            self.text = text
            self.done = done

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.live = FrameSource()
        self.recorded = FrameSource()
        self.player = None
        self.recording = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        yield GameView(self.live, id="game-view")

    @property
    def view(self) -> GameView:
        return self.query_one("#game-view", GameView)

    # --- the live game ---
    def attach(self, config: Any, weights: Callable[[], tuple[dict, str]] | None) -> None:
        """Play the live game of this run from now on; weights() -> (state dict, "step N")."""
        self.close_player()
        if weights is None:
            self.view.caption = "live game: this trainer cannot hand out its weights"
            return
        from a2c_tui.run.liveview import LivePlayer

        try:
            self.player = LivePlayer(config, weights, self.live)
        except ValueError:
            self.view.caption = f"live game: {config.env.id} is not an Atari game, there is no screen to show"
            return
        self.view.caption = f"{config.env.id}: the live game starts when this pane is shown"
        self.player.start()

    def close_player(self, wait: float = 0.0) -> None:
        """Stop the live game; its thread ends within half a second, the UI waits `wait` at most."""
        if self.player is not None:
            self.player.close(timeout=wait)
            self.player = None

    def close(self, wait: float = 0.0) -> None:
        """Stop everything (the app is quitting)."""
        self.cancel_recording()
        self.close_player(wait)

    def on_unmount(self) -> None:
        # The app is exiting: let the game thread drop its emulator before the interpreter goes
        # (ale-py reports emulators still alive at exit as leaks).
        self.close(wait=1.0)

    # --- recordings ---
    def record(self, checkpoint: Path, out_dir: str | Path = "videos", games: int = 5) -> bool:
        """Record `games` games of `checkpoint` to MP4s in the background; False if one is running."""
        if self.recording:
            return False
        self.recording = True
        self._cancel.clear()
        self.view.set_source(self.recorded)
        self._record(Path(checkpoint), Path(out_dir), games)
        return True

    def cancel_recording(self) -> bool:
        if not self.recording:
            return False
        self._cancel.set()
        return True

    @work(thread=True, exclusive=True, group="recording", exit_on_error=False)
    def _record(self, checkpoint: Path, out_dir: Path, games: int) -> None:
        from a2c_tui.run.evaluate import Cancelled
        from a2c_tui.run.record import record_checkpoint

        def progress(p: Any) -> None:
            if p.finished is not None:
                g = p.finished
                self.post_message(self.News("info", f"recorded game {g.game}/{p.games} of {checkpoint.name}: "
                                                    f"score {g.score:.0f}, {g.length:,} steps -> {g.path}"))

        self.post_message(self.News("info", f"recording {games} games of {checkpoint.name} to {out_dir}/"))
        try:
            done = record_checkpoint(checkpoint, out_dir, games=games, progress=progress, cancel=self._cancel,
                                     frames=self.recorded)
        except Cancelled as e:
            self.post_message(self.News("info", str(e), done=True))
        except Exception as e:  # noqa: BLE001 - a bad checkpoint, a full disk: told to the user
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.post_message(self.News("error", f"recording {checkpoint.name} failed: {text}", done=True))
        else:
            scores = ", ".join(f"{g.score:.0f}" for g in done)
            self.post_message(self.News("info", f"recorded {len(done)} games of {checkpoint.name} to {out_dir}/ "
                                                f"(scores {scores})", done=True))

    @on(News)
    def _recording_news(self, news: News) -> None:
        if news.done:  # the news still bubbles on to the app
            self.recording = False
            self.view.set_source(self.live)
