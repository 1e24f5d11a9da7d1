"""A mailbox for game frames between a producer thread and a viewer, free while unwatched.

A producer (the live player, a recording) asks `source.watching` — one Event check —
before it builds a frame, and offers it only while a viewer is subscribed. The source
keeps the newest frame only; the viewer pulls it at its own pace (at most 10 times a
second), so a fast producer is never slowed down by drawing and never queues frames.
No UI imports: any thread may offer, any thread may pull.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray  # uint8 (H, W, 3) RGB or (H, W) grayscale; owned by the Frame
    label: str
    aspect: float  # width / height the picture should be shown at
    number: int  # counts offers; a viewer redraws when it changes


class FrameSource:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._viewers = 0
        self._watched = threading.Event()
        self._frame: Frame | None = None
        self._offers = 0

    # --- producer side ---
    @property
    def watching(self) -> bool:
        """True while at least one viewer is subscribed: check it before building a frame."""
        return self._watched.is_set()

    def wait_watched(self, timeout: float | None = None) -> bool:
        """Block (without spinning) until someone watches; False on timeout."""
        return self._watched.wait(timeout)

    def offer(self, pixels: np.ndarray, label: str = "", aspect: float | None = None) -> None:
        """Replace the newest frame with a copy of `pixels`. aspect: width/height to show it
        at (default: square pixels)."""
        height, width = pixels.shape[:2]
        copy = np.array(pixels, dtype=np.uint8, copy=True)
        with self._lock:
            self._offers += 1
            self._frame = Frame(copy, label, aspect or width / height, self._offers)

    # --- viewer side ---
    def subscribe(self) -> None:
        with self._lock:
            self._viewers += 1
            self._watched.set()

    def unsubscribe(self) -> None:
        with self._lock:
            self._viewers = max(0, self._viewers - 1)
            if self._viewers == 0:
                self._watched.clear()
                self._frame = None  # a stale picture must not show when watching starts again

    def latest(self) -> Frame | None:
        return self._frame
