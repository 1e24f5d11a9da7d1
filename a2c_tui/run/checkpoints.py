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

from a2c_tui import files
from a2c_tui.config import LIVE_KEYS, ConfigError, check_value
from a2c_tui.run.protocol import CheckpointInfo

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
        # Read once, then parse the bytes: what is checked is what is loaded.
        data = io.BytesIO(files.read_bounded(path, files.CHECKPOINT_LIMIT, "checkpoint"))
        # torch.load does not check the archive's CRCs: bytes flipped inside a tensor would load silently.
        with zipfile.ZipFile(data) as archive:
            damaged = archive.testzip()
        if damaged is not None:
            raise zipfile.BadZipFile(f"CRC mismatch in {damaged}")
        data.seek(0)
        payload = torch.load(data, map_location=map_location, weights_only=True)
    except files.RefusedFile as e:
        raise CheckpointError(str(e)) from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} refused: it is not plain data ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, OSError, KeyError, IndexError,
            TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an a2c-tui checkpoint")
    _check_fields(payload, path)
    return payload


def _is_int(value: Any, lo: int = 0, hi: int = 2**62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _is_number(value: Any, lo: float = -math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= lo


def _live_value_ok(key: Any, value: Any) -> bool:
    if key not in LIVE_KEYS:
        return True
    try:
        check_value(f"algo.{key}", value)
        return True
    except ConfigError:
        return False


_FIELDS = {  # key -> (check, what it must be); a key a payload does not have is not checked
    "step": (_is_int, "an integer >= 0"),
    "updates": (_is_int, "an integer >= 0"),
    "elapsed": (lambda v: _is_number(v, 0.0), "a finite number >= 0"),
    "saved_at": (lambda v: _is_number(v, 0.0), "a finite number >= 0"),
    "base_lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "score": (lambda v: v is None or _is_number(v), "a finite number or none"),
    "best_score": (lambda v: v is None or _is_number(v), "a finite number or none"),
    "env_id": (lambda v: isinstance(v, str), "a string"),
    "n_actions": (lambda v: _is_int(v, 1, 1 << 16), "an integer from 1 to 65536"),
    "obs_shape": (lambda v: isinstance(v, (list, tuple)) and len(v) in (1, 3) and all(_is_int(n, 1, 1 << 16) for n in v),
                  "1 or 3 sizes"),
    "config": (lambda v: isinstance(v, dict), "a table"),
    "model": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                    for k, t in v.items()), "a table of tensors"),
    "optimizer": (lambda v: isinstance(v, dict), "a table"),
    "hparams": (lambda v: isinstance(v, dict) and all(_is_number(x) and _live_value_ok(k, x) for k, x in v.items()),
                "a table of numbers, live ones within their config ranges"),
    "scores": (lambda v: isinstance(v, dict) and _is_int(v.get("games", 0))
               and isinstance(v.get("scores", []), list) and all(_is_number(x) for x in v.get("scores", []))
               and isinstance(v.get("lengths", []), list) and all(_is_int(n) for n in v.get("lengths", [])),
               "a score window (finite scores, lengths and games >= 0)"),
}


def _check_fields(payload: dict[str, Any], path: Path) -> None:
    """Every plain field a command reads from a checkpoint, of the type and range it needs."""
    for key, (ok, allowed) in _FIELDS.items():
        if key in payload and not ok(payload[key]):
            shown = repr(payload[key]) if not isinstance(payload[key], (dict, list)) else type(payload[key]).__name__
            raise CheckpointError(f"checkpoint {str(path)!r} is refused: {key} = {shown[:60]} must be {allowed}")


def check_compatible(payload: dict[str, Any], env_id: str, n_actions: int, obs_shape: tuple[int, ...],
                     path: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint made for another game or another action/observation space."""
    from a2c_tui.learn.envs import atari_rom

    theirs = payload.get("env_id", "?")
    same_game = theirs == env_id or (atari_rom(str(theirs)) is not None and atari_rom(str(theirs)) == atari_rom(env_id))
    if not same_game:
        raise CheckpointError(f"{str(path)!r} was trained on {theirs}, not {env_id}")
    if payload.get("n_actions") != n_actions:
        raise CheckpointError(f"{str(path)!r} has {payload.get('n_actions')} actions, {env_id} has {n_actions}")
    if tuple(payload.get("obs_shape", ())) != tuple(obs_shape):
        raise CheckpointError(f"{str(path)!r} expects observations {tuple(payload.get('obs_shape', ()))}, "
                              f"{env_id} gives {tuple(obs_shape)}")
    _check_tensors(payload, tuple(obs_shape), n_actions, path)


def _check_tensors(payload: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int, path: str | Path) -> None:
    """The weights (and optimizer state, if any) have exactly the model's names and shapes:
    metadata can say SpaceInvaders over another game's head or an MLP."""
    from a2c_tui.learn.model import ActorCritic

    # Shapes only. Not on the meta device: its first use imports torch._dynamo (1-3 s).
    with torch.random.fork_rng(devices=[]):
        model = ActorCritic(obs_shape, n_actions, init=False)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    weights = payload.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{str(path)!r} holds no model weights")
    got = {name: tuple(t.shape) for name, t in weights.items()}
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    if missing or extra:
        what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                          f"unexpected {', '.join(extra)}" if extra else "") if part)
        raise CheckpointError(f"{str(path)!r} does not hold this model's weights: {what[:200]}")
    for name, shape in expected.items():
        if got[name] != shape or not weights[name].is_floating_point():
            raise CheckpointError(f"{str(path)!r} does not hold this model's weights: {name} is "
                                  f"{list(got[name])} {weights[name].dtype}, the model needs {list(shape)} floats")
    optimizer = payload.get("optimizer")
    if optimizer is None:
        return
    shapes = [tuple(p.shape) for p in model.parameters()]
    state = optimizer.get("state") if isinstance(optimizer, dict) else None
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    ok = isinstance(state, dict) and isinstance(groups, list) and all(
        isinstance(i, int) and 0 <= i < len(shapes) and isinstance(entry, dict)
        and all(not isinstance(t, torch.Tensor) or t.dim() == 0 or tuple(t.shape) == shapes[i] for t in entry.values())
        for i, entry in state.items())
    if not ok:
        raise CheckpointError(f"{str(path)!r} holds an optimizer state that does not fit this model")


def eval_result_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".eval.json")


_index_lock = threading.Lock()  # the trainer and evaluations both update index.json


def read_index(run_dir: Path, strict: bool = False) -> dict[str, Any]:
    """index.json: {"latest": name, "best": name, "best_by": "score"|"eval", "best_value": x,
    "files": {name: {"step", "score", "time"}}}. Missing or damaged -> {}; entries of the wrong
    type are dropped. A name that does not resolve inside run_dir is dropped too, or with
    `strict` refused (files.RefusedFile), as is an index.json that is not a file of run_dir."""
    run_dir = Path(run_dir)

    def unsafe(name: Any) -> bool:
        reason = files.outside(run_dir, name)
        if reason is not None and strict:
            raise files.RefusedFile(f"{str(run_dir / 'index.json')!r} names {str(name)[:80]!r}, which {reason}; "
                                    f"this run directory is refused")
        return reason is not None

    if strict:
        files.inside(run_dir, "index.json")
    elif files.outside(run_dir, "index.json"):
        return {}
    try:
        raw = json.loads(files.read_bounded(run_dir / "index.json", files.SIDE_FILE_LIMIT, "index"))
    except files.RefusedFile:
        if strict:
            raise
        return {}
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    index: dict[str, Any] = {}
    for key in ("latest", "best"):
        if key in raw and not unsafe(raw[key]):
            index[key] = raw[key]
    if raw.get("best_by") in ("score", "eval") and _is_number(raw.get("best_value")):
        index.update(best_by=raw["best_by"], best_value=raw["best_value"])
    entries = raw.get("files") if isinstance(raw.get("files"), dict) else {}
    index["files"] = {name: meta for name, meta in entries.items() if not unsafe(name) and isinstance(meta, dict)
                      and _is_int(meta.get("step")) and (meta.get("score") is None or _is_number(meta["score"]))}
    return index


def update_index(run_dir: Path, changes: dict[str, Any]) -> dict[str, Any]:
    with _index_lock:
        index = read_index(run_dir)
        # Entries whose file is gone (keep_last rotated it out) are forgotten, but for the step
        # files latest.pt and best.pt were linked from: their rows still show that step.
        linked = {index.get("latest"), index.get("best"), changes.get("latest"), changes.get("best")}
        kept = {name: meta for name, meta in index.get("files", {}).items()
                if name in linked or (Path(run_dir) / name).exists()}
        files = {**kept, **changes.pop("files", {})}
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
        target = read_index(path.parent).get(path.stem)  # only names inside the run directory
        if target and (path.parent / target).exists():
            return path.parent / target
    return path


RUN_FILES = ("index.json", "config.toml", "metrics.jsonl", "tb", "latest.pt", "best.pt")


def check_run_dir(run_dir: str | Path) -> None:
    """Refuse (files.RefusedFile, one line naming the file) a run directory that a command is
    about to read or write when any file it uses, or any name in its index.json, resolves
    outside it, or when a file written in place is a symlink."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return  # nothing there to point anywhere; the missing checkpoint is reported by whoever loads it
    if run_dir.is_symlink():  # e.g. a crafted run's latest.pt linking to another run: it would be trained in
        raise files.RefusedFile(f"{str(run_dir)!r} is a symbolic link to a directory; name the run directory "
                                f"itself")
    read_index(run_dir, strict=True)
    used = [*RUN_FILES, *(p.name for p in run_dir.iterdir() if p.name.endswith((".pt", ".eval.json")))]
    for name in used:
        files.inside(run_dir, name)
    # written in place: metrics.jsonl is appended to, TensorBoard opens new files in tb/ by name
    tb = run_dir / "tb"
    for path in [run_dir / "metrics.jsonl", tb, *(tb.iterdir() if tb.is_dir() and not tb.is_symlink() else ())]:
        if path.is_symlink():
            raise files.RefusedFile(f"{str(path)!r} is a symbolic link; it is not written through; "
                                    f"this run directory is refused")


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
    entries = index.get("files", {})
    names = {p.name for p in run_dir.glob("*.pt")}
    infos = []
    for name in names:
        # latest.pt / best.pt get their own row only when their step file is gone
        if name in ("latest.pt", "best.pt") and index.get(name[:-3]) in names:
            continue
        path = run_dir / name
        if files.outside(run_dir, name):
            continue  # a symlink out of the run directory: not ours to show
        try:
            stat = path.stat()
        except OSError:
            continue  # rotated out while we looked
        meta = entries.get(index.get(name[:-3], name) if name in ("latest.pt", "best.pt") else name, {})
        tags = tuple(t for t in ("latest", "best") if index.get(t) == name or name == f"{t}.pt")
        eval_mean = None
        try:
            result = eval_result_path(path)
            if not files.outside(run_dir, result.name):
                eval_mean = float(json.loads(files.read_bounded(result, files.SIDE_FILE_LIMIT))["mean"])
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


# atomic_write_bytes' and link_or_copy's temp names for every file of a run directory
_STALE_TEMP = re.compile(r"^\.((step_\d+|latest|best)\.(pt|eval\.json)|index\.json|config\.toml|metrics\.jsonl"
                         r"|write-probe)\..+\.(tmp|link)$")


def remove_stale_temp(run_dir: str | Path) -> list[Path]:
    """Delete temp files that a killed process left half written (call before training)."""
    removed = []
    for path in Path(run_dir).iterdir():
        if _STALE_TEMP.match(path.name):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed
