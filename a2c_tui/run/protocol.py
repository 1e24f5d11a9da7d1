"""What a run's service and its clients say to each other over the run's Unix socket.

One JSON object per line (UTF-8, `\\n`-terminated), never pickle. A client opens with

    {"v": 1, "id": 0, "cmd": "hello", "args": {"subscribe": true}}

and every command carries an integer id that its reply repeats:

    client -> service   {"v": 1, "id": 7, "cmd": "pause", "args": {}}
    service -> client   {"type": "reply", "id": 7, "result": true}
                        {"type": "reply", "id": 7, "error": "one line"}
                        {"type": "snapshot", "data": {...}}     (subscribers, at most 4 a second)
                        {"type": "event", "data": {"time", "level", "text"}}
                        {"type": "eval", "data": {"id", "done", "total", "score", "length"}}
                        {"type": "eval_end", "data": {"id", "result" | "error", "cancelled"}}

The dataclasses the trainer publishes (`State`, `Event`, `Snapshot`) live here, free of
torch, so the app can rebuild them from a message. Everything a peer sends is checked
here: a bad message is a `ProtocolError` (one line) for that peer alone.
"""

from __future__ import annotations

import enum
import json
import math
import time
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

VERSION = 1
MAX_LINE = 64 * 1024  # bytes in one client message (commands are small; weights go the other way)
COMMANDS = {
    # name: {argument: accepted types}
    "hello": {"subscribe": (bool,), "client": (str,)},
    "status": {},
    "pause": {},
    "resume": {},
    "stop": {},
    "save": {},
    "weights": {},
    "checkpoints": {},
    "load": {"path": (str,)},
    "delete": {"path": (str,)},
    "set_hparams": {"values": (dict,)},
    "evaluate": {"path": (str,), "episodes": (int,), "envs": (int,), "greedy": (bool,), "seed": (int,)},
    "cancel_eval": {"id": (int,)},
    "record": {"path": (str,), "games": (int,)},
}
REQUIRED = {"load": ("path",), "delete": ("path",), "set_hparams": ("values",), "evaluate": ("path",),
            "cancel_eval": ("id",), "record": ("path",)}


class ProtocolError(ValueError):
    """A message that breaks the protocol (message: one line)."""


class State(str, enum.Enum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    FINISHED = "FINISHED"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Event:
    time: float
    level: str  # "info" | "warning" | "error"
    text: str


@dataclass(frozen=True)
class Snapshot:
    run_name: str
    run_dir: str
    env_id: str
    device: str
    state: State
    step: int
    total_steps: int
    updates: int
    elapsed: float  # seconds of training (this run, resumes included)
    steps_per_sec: float
    score: float  # last-100 raw whole-game score (nan before the first game)
    games: int
    hparams: Mapping[str, float]
    metrics: Mapping[str, Any]  # the latest diagnostics record (empty before the first)
    time: float = field(default_factory=time.time)
    evaluation: Mapping[str, Any] = field(default_factory=dict)  # the latest evaluation beside training's record

    @property
    def eta(self) -> float:
        left = self.total_steps - self.step
        return left / self.steps_per_sec if self.steps_per_sec > 0 else math.inf


# ----- encoding ---------------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    # NaN (a score before the first game) travels as JSON's common extension; both ends are Python.
    return json.dumps(message, separators=(",", ":"), default=_plain).encode() + b"\n"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)  # Path and the like


def decode(line: bytes, limit: int | None = MAX_LINE) -> dict[str, Any]:
    """One line -> a JSON object, or ProtocolError. A client's lines are short (`limit`); the
    service's may carry weights."""
    if limit is not None and len(line) > limit + 1:
        raise ProtocolError(f"message too long ({len(line):,} bytes; at most {limit:,})")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("message is not a JSON object on one line") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


def check_command(message: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """A client's command -> (id, name, args), every argument of the expected type."""
    cid = message.get("id")
    if type(cid) is not int or not 0 <= cid < 2**53:
        raise ProtocolError("every command needs an integer id >= 0")
    if message.get("v") != VERSION:
        raise ProtocolError(f"protocol version {message.get('v')!r} is not spoken here (this service speaks {VERSION})")
    name = message.get("cmd")
    if not isinstance(name, str) or name not in COMMANDS:
        raise ProtocolError(f"unknown command {str(name)[:40]!r}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"{name}: args must be an object")
    allowed = COMMANDS[name]
    for key, value in args.items():
        if key not in allowed:
            raise ProtocolError(f"{name}: unknown argument {str(key)[:40]!r}")
        # bool is an int in Python: an int argument must not accept true/false, nor the reverse
        if not any(type(value) is t for t in allowed[key]):
            raise ProtocolError(f"{name}: {key} must be {' or '.join(t.__name__ for t in allowed[key])}")
    missing = [k for k in REQUIRED.get(name, ()) if k not in args]
    if missing:
        raise ProtocolError(f"{name}: missing {', '.join(missing)}")
    return cid, name, args


def command(cid: int, name: str, **args: Any) -> bytes:
    return encode({"v": VERSION, "id": cid, "cmd": name, "args": args})


@dataclass(frozen=True)
class CheckpointInfo:
    path: Any  # Path
    step: int
    mtime: float
    size: int
    score: float | None  # last-100 raw training score when saved
    eval_mean: float | None  # mean of the evaluation saved beside it, if any
    tags: tuple[str, ...]  # "latest", "best"


@dataclass(frozen=True)
class Disconnected:
    """Handed to a remote handle's subscribers when the connection to the run's service ends."""
    reason: str
    stopped: bool  # the run was stopped on request (not lost)
    time: float = field(default_factory=time.time)


# ----- the trainer's items as data --------------------------------------------------------
def snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    # not dataclasses.asdict: it deep-copies, and the mappings are read-only proxies
    data = {f.name: getattr(snapshot, f.name) for f in fields(Snapshot)}
    data.update(state=State(data["state"]).value, hparams=dict(snapshot.hparams), metrics=dict(snapshot.metrics),
                evaluation=dict(snapshot.evaluation))
    return data


_SNAPSHOT_TYPES = {"run_name": str, "run_dir": str, "env_id": str, "device": str, "step": int, "total_steps": int,
                   "updates": int, "elapsed": float, "steps_per_sec": float, "score": float, "games": int,
                   "time": float}


def snapshot_from(data: Any) -> Snapshot:
    """A snapshot rebuilt from the service's message (checked: the service is a peer too)."""
    if not isinstance(data, dict):
        raise ProtocolError("snapshot is not an object")
    values: dict[str, Any] = {}
    for f in fields(Snapshot):
        value = data.get(f.name)
        if f.name == "state":
            try:
                value = State(value)
            except ValueError:
                raise ProtocolError(f"snapshot state {str(value)[:20]!r} is unknown") from None
        elif f.name in ("hparams", "metrics", "evaluation"):
            if not isinstance(value, dict):
                raise ProtocolError(f"snapshot {f.name} is not an object")
            value = MappingProxyType(value)
        else:
            typ = _SNAPSHOT_TYPES[f.name]
            if typ is float and type(value) is int:
                value = float(value)
            if type(value) is not typ:
                raise ProtocolError(f"snapshot {f.name} is not {typ.__name__}")
        values[f.name] = value
    return Snapshot(**values)


def event_from(data: Any) -> Event:
    if not isinstance(data, dict):
        raise ProtocolError("event is not an object")
    when, level, text = data.get("time"), data.get("level"), data.get("text")
    if type(when) not in (int, float) or level not in ("info", "warning", "error") or not isinstance(text, str):
        raise ProtocolError("event needs time, level and text")
    return Event(float(when), level, text)
