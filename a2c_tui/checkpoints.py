"""Checkpoint files: atomic save, safe load (weights_only), listing and retention.

A checkpoint is a dict of tensors and plain data only, so `torch.load(weights_only=True)`
can read it and a file from elsewhere can never run code. Files are written to a temp
file in the same directory, fsynced and renamed, so a crash never leaves a broken file
under a real name.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from a2c_tui.protocol import CheckpointInfo

FORMAT = "a2c-tui/1"
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used (message: one line)."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _float_tensors(value: Any):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _float_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _float_tensors(item)


def finite_weights(payload: dict[str, Any]) -> bool:
    """Whether the weights and the optimizer state hold no NaN or inf (a run must never go
    on from, or save, weights a diverged update left behind)."""
    return all(bool(torch.isfinite(t).all()) for t in _float_tensors([payload.get("model"), payload.get("optimizer")]))


def save(path: Path, payload: dict[str, Any]) -> int:
    """Serialise and write atomically; returns the size in bytes. Non-finite weights are
    refused (CheckpointError): "the last good checkpoint" must be good."""
    if not finite_weights(payload):
        raise CheckpointError("the weights are not finite (NaN or inf)")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(Path(path), data)
    return len(data)


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same file as `source`, atomically (hard link, else a copy)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        atomic_write_bytes(target, Path(source).read_bytes())


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; any problem becomes a one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        # torch.load does not check the archive's CRCs: bytes flipped inside a tensor would load silently.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        if damaged is not None:
            raise zipfile.BadZipFile(f"CRC mismatch in {damaged}")
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} refused: it is not plain data ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, OSError, KeyError, IndexError,
            TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an a2c-tui checkpoint")
    return payload


def check_compatible(payload: dict[str, Any], env_id: str, n_actions: int, obs_shape: tuple[int, ...],
                     path: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint made for another game or another action/observation space."""
    from a2c_tui.envs import atari_rom

    theirs = payload.get("env_id", "?")
    same_game = theirs == env_id or (atari_rom(str(theirs)) is not None and atari_rom(str(theirs)) == atari_rom(env_id))
    if not same_game:
        raise CheckpointError(f"{str(path)!r} was trained on {theirs}, not {env_id}")
    if payload.get("n_actions") != n_actions:
        raise CheckpointError(f"{str(path)!r} has {payload.get('n_actions')} actions, {env_id} has {n_actions}")
    if tuple(payload.get("obs_shape", ())) != tuple(obs_shape):
        raise CheckpointError(f"{str(path)!r} expects observations {tuple(payload.get('obs_shape', ()))}, "
                              f"{env_id} gives {tuple(obs_shape)}")


def eval_result_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".eval.json")


_index_lock = threading.Lock()  # the trainer and evaluations both update index.json


def read_index(run_dir: Path) -> dict[str, Any]:
    """index.json: {"latest": name, "best": name, "best_by": "score"|"eval", "best_value": x,
    "files": {name: {"step", "score", "time"}}}. Missing or damaged -> {}."""
    try:
        index = json.loads((Path(run_dir) / "index.json").read_text())
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def update_index(run_dir: Path, changes: dict[str, Any]) -> dict[str, Any]:
    with _index_lock:
        index = read_index(run_dir)
        files = {**index.get("files", {}), **changes.pop("files", {})}
        index.update(changes, files=files)
        atomic_write_bytes(Path(run_dir) / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())
        return index


def delete(path: Path) -> None:
    """Delete a checkpoint and its evaluation, and forget it in index.json. Deleting the file
    best.pt was made from (or best.pt) deletes both: a best tag left on the other copy would
    say the deleted checkpoint is still there."""
    path = Path(path)
    run_dir = path.parent
    with _index_lock:
        index = read_index(run_dir)
        was_best = path.name == "best.pt" or index.get("best") == path.name
        for checkpoint in (path, run_dir / "best.pt") if was_best else (path,):
            for victim in (checkpoint, eval_result_path(checkpoint)):
                victim.unlink(missing_ok=True)
        if not index:
            return
        index.get("files", {}).pop(path.name, None)
        if was_best:
            index.get("files", {}).pop(index.get("best"), None)
            for key in ("best", "best_by", "best_value"):
                index.pop(key, None)
        atomic_write_bytes(run_dir / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())


def resolve(path: Path) -> Path:
    """latest.pt / best.pt -> the step_<N>.pt they were made from, when it still exists."""
    path = Path(path)
    if path.name in ("latest.pt", "best.pt"):
        target = read_index(path.parent).get(path.stem)
        if target and (path.parent / target).exists():
            return path.parent / target
    return path


def mark_best(run_dir: Path, source: Path, by: str, value: float) -> None:
    """Point best.pt at `source` unless an evaluation already decided a better one.
    Once any evaluation ran, only evaluation scores compete."""
    run_dir = Path(run_dir)
    index = read_index(run_dir)
    if index.get("best_by") == "eval" and (by != "eval" or value <= index.get("best_value", -math.inf)):
        return
    link_or_copy(source, run_dir / "best.pt")
    update_index(run_dir, {"best": Path(source).name, "best_by": by, "best_value": value})


def record_evaluation(checkpoint: Path, result: dict[str, Any]) -> Path | None:
    """Save an evaluation's result beside the checkpoint it scored; best.pt follows the best mean.

    None when the checkpoint was deleted meanwhile (keep_last rotates old ones out while they
    are evaluated): a result beside no checkpoint would be litter that nothing removes."""
    checkpoint = resolve(Path(checkpoint))
    out = eval_result_path(checkpoint)
    if not checkpoint.exists():
        return None
    atomic_write_bytes(out, json.dumps(result, indent=1).encode())
    try:
        if checkpoint.name != "best.pt":
            mark_best(checkpoint.parent, checkpoint, "eval", float(result["mean"]))
    except FileNotFoundError:
        pass  # rotated out between the check and the link
    if not checkpoint.exists():
        out.unlink(missing_ok=True)
        return None
    return out


def list_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """The run's checkpoint files, newest step first, with what index.json knows about them."""
    run_dir = Path(run_dir)
    index = read_index(run_dir)
    files = index.get("files", {})
    names = {p.name for p in run_dir.glob("*.pt")}
    infos = []
    for name in names:
        # latest.pt / best.pt get their own row only when their step file is gone
        if name in ("latest.pt", "best.pt") and index.get(name[:-3]) in names:
            continue
        path = run_dir / name
        try:
            stat = path.stat()
        except OSError:
            continue  # rotated out while we looked
        meta = files.get(index.get(name[:-3], name) if name in ("latest.pt", "best.pt") else name, {})
        tags = tuple(t for t in ("latest", "best") if index.get(t) == name or name == f"{t}.pt")
        eval_mean = None
        try:
            eval_mean = float(json.loads(eval_result_path(path).read_text())["mean"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        infos.append(CheckpointInfo(path, int(meta.get("step", -1)), stat.st_mtime, stat.st_size,
                                    meta.get("score"), eval_mean, tags))
    infos.sort(key=lambda i: (i.step, i.tags), reverse=True)
    return infos


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` periodic step_<N>.pt files; returns what went."""
    steps = sorted((int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := STEP_FILE.match(p.name)))
    best = read_index(run_dir).get("best")
    removed = []
    for _, path in steps[:-keep_last] if keep_last > 0 else steps:
        if path.name == best and eval_result_path(path).exists():
            # best.pt (a hard link) outlives its step file: its evaluation goes with it
            os.replace(eval_result_path(path), eval_result_path(Path(run_dir) / "best.pt"))
        for victim in (path, eval_result_path(path)):
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
        removed.append(path)
    return removed


def _newest_first(run_dir: Path):
    """(path, payload) for latest.pt and every step_<N>.pt that loads, highest step first;
    latest.pt before the step file it was linked from."""
    steps = sorted(((int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_FILE.match(p.name))), reverse=True)
    latest = None
    try:
        latest = load(run_dir / "latest.pt")
        latest_step = int(latest["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        latest_step = -1
    for step, path in steps:
        if latest is not None and step <= latest_step:
            yield run_dir / "latest.pt", latest
            latest = None
            if step == latest_step and _same_file(path, run_dir / "latest.pt"):
                continue
        try:
            yield path, load(path)
        except CheckpointError:
            continue
    if latest is not None:
        yield run_dir / "latest.pt", latest


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def newest_usable(run_dir: str | Path) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """The file to resume a run from: the highest step among latest.pt and step_<N>.pt that
    loads and holds finite weights, its payload, and the names of newer files skipped for
    non-finite weights (a run made before they were refused saved them).

    latest.pt lags behind a step file when a crash came between writing the file and pointing
    latest at it, and is missing when that happened at the run's first checkpoint."""
    skipped = []
    for path, payload in _newest_first(Path(run_dir)):
        if finite_weights(payload):
            return path, payload, skipped
        skipped.append(path.name)
    return None, None, skipped


def newest_valid(run_dir: str | Path) -> Path | None:
    """newest_usable's file (None: no checkpoint of the run loads with finite weights)."""
    return newest_usable(run_dir)[0]


def load_usable(target: str | Path) -> tuple[Path, dict[str, Any], list[str]]:
    """The checkpoint to train from: `target` when it holds finite weights, else (or for a
    run directory) the newest file of its run that does; with the names of those skipped."""
    target = Path(target)
    if target.is_dir():
        path, payload, skipped = newest_usable(target)
        if path is None:
            if not skipped:
                load(target / "latest.pt")  # raises the reason nothing loads
            raise CheckpointError(f"no checkpoint in {str(target)!r} holds finite weights "
                                  f"({', '.join(skipped)}: NaN or inf)")
        return path, payload, skipped
    payload = load(target)
    if finite_weights(payload):
        return target, payload, []
    path, payload, skipped = newest_usable(target.parent)
    if path is None:
        raise CheckpointError(f"checkpoint {str(target)!r} holds non-finite weights (NaN or inf) and no other "
                              f"checkpoint of its run holds finite ones")
    return path, payload, [target.name] + [name for name in skipped if name != target.name]


_STALE_TEMP = re.compile(r"^\.(step_\d+|latest|best)\.pt\..+\.(tmp|link)$")


def remove_stale_temp(run_dir: str | Path) -> list[Path]:
    """Delete checkpoint temp files that a killed process left half written (call before training)."""
    removed = []
    for path in Path(run_dir).iterdir():
        if _STALE_TEMP.match(path.name):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed
