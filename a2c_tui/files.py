"""Files that come from elsewhere: a config, a checkpoint, a run directory someone shared.

Reads take regular files only, within a size limit: a FIFO would hang the reader and
/dev/zero never ends. A name found in a run directory (an entry of index.json, latest.pt,
metrics.jsonl, tb/) must resolve inside that directory: a shared tarball keeps symlinks and
may name "../x". Writes never go through a symlink: a temp file renamed over the name
(checkpoints.atomic_write_bytes), or O_NOFOLLOW where a file is appended to.
No torch here: config.py and the app use it too.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TextIO

CONFIG_LIMIT = 1 << 20  # a config is a few hundred bytes
CHECKPOINT_LIMIT = 1 << 28  # a Nature-CNN checkpoint (weights and RMSprop state) is 13.5 MB
SIDE_FILE_LIMIT = 1 << 28  # index.json, *.eval.json, metrics.jsonl (a 10M-step run writes ~1 MB)


class RefusedFile(ValueError):
    """A file or a name that must not be used (message: one line naming it)."""


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; RefusedFile for anything else.
    OSError as usual when it is missing or unreadable."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"{what} {str(path)!r} is not a regular file")
        if info.st_size > limit:
            raise RefusedFile(f"{what} {str(path)!r} is {info.st_size:,} bytes, more than the {limit:,} allowed")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while we read
        raise RefusedFile(f"{what} {str(path)!r} is more than the {limit:,} bytes allowed")
    return data


def outside(run_dir: str | Path, name: object) -> str | None:
    """Why `name`, read from a run directory or a checkpoint, does not name a file inside
    run_dir (symlinks followed); None when it does."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\x00" in name:
        return "is not a plain file name"
    try:
        root = Path(run_dir).resolve()
        target = (Path(run_dir) / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return "cannot be resolved"
    if target == root or not target.is_relative_to(root):
        return f"points outside the run directory (to {str(target)!r})"
    return None


def inside(run_dir: str | Path, name: object) -> Path:
    """run_dir / name, for a name read from a run directory or a checkpoint; RefusedFile when
    it does not resolve inside run_dir."""
    reason = outside(run_dir, name)
    if reason is not None:
        shown = str(Path(run_dir) / name) if isinstance(name, str) and "\x00" not in name else f"{run_dir}: {name!r}"
        raise RefusedFile(f"{shown!r} {reason}; this run directory is refused")
    return Path(run_dir) / str(name)


def open_append(path: str | Path) -> TextIO:
    """A regular file opened for appending text, line buffered, never through a symlink."""

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)

    try:
        f = open(path, "a", buffering=1, opener=opener)
    except OSError as e:
        if Path(path).is_symlink():
            raise RefusedFile(f"{str(path)!r} is a symbolic link; it is not written through") from None
        raise e
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise RefusedFile(f"{str(path)!r} is not a regular file")
    return f


def check_writable(directory: str | Path) -> None:
    """RefusedFile unless a file can be created in `directory` (a read-only mount refuses even
    root, which os.access would not show)."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe.", suffix=".tmp")
    except OSError as e:
        raise RefusedFile(f"{str(directory)!r} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
