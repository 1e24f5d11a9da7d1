"""RemoteHandle: the trainer handle of a run that lives in its own process (a2c_tui.run.service),
reached over the run's Unix socket. It offers LocalHandle's methods, so the panes do not
change: commands return futures (or answer at once), snapshots and events reach the
subscribers on this handle's reader thread, as a LocalHandle's do on the training thread.

When the connection ends the subscribers get a `Disconnected`; waiting futures fail.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from a2c_tui.config import EVAL_ENVS, EVAL_SEED, LIVE_KEYS, ConfigError, check_value, from_dict
from a2c_tui.run import protocol
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.run.protocol import CheckpointInfo, Disconnected, Event, ProtocolError, Snapshot, State
from a2c_tui.run.service import ServiceError, connect, decode_weights, first_line

CALL_TIMEOUT = 10.0  # seconds for a command that answers at once (pause, list, delete)
MAX_REPLY = 256 * 2**20  # the service's lines carry weights (~10 MB); anything near this is broken


class RemoteEvaluation:
    """An evaluation running in the service (started by this app or another, or before an attach)."""

    def __init__(self, data: dict[str, Any]):
        self.id = int(data["id"])
        self.path = Path(str(data["path"]))
        self.episodes = int(data["episodes"])
        self.envs = int(data["envs"])
        self.scores = [float(s) for s in data.get("scores", [])]


class _Progress:
    def __init__(self, data: dict[str, Any]):
        self.done, self.total = int(data["done"]), int(data["total"])
        self.score, self.length = float(data["score"]), int(data["length"])


class RemoteHandle:
    detachable = True  # closing it leaves the run (and its evaluations) going

    def __init__(self, sock: socket.socket, welcome: dict[str, Any]):
        self._sock = sock
        self.config = from_dict(welcome["config"])
        self.run_dir = Path(welcome["run_dir"])
        self.pid = int(welcome["pid"])
        self._snapshot = protocol.snapshot_from(welcome["snapshot"])
        self.recent_log = [protocol.event_from(e) for e in welcome.get("log", [])]
        evaluation = welcome.get("evaluation")
        self.running_evaluation = RemoteEvaluation(evaluation) if evaluation else None
        self._ids = itertools.count(2)
        self._waiting: dict[int, tuple[Future, Callable[[Any], Any]]] = {}
        self._evals: dict[int, queue.SimpleQueue] = {}
        self._subscribers: list[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.connected = True
        self.stop_requested = False
        self._reader = sock.makefile("rb")
        self._thread = threading.Thread(target=self._read_loop, name="remote-handle", daemon=True)
        self._thread.start()

    @classmethod
    def attach(cls, run_dir: str | Path, timeout: float = 10.0) -> RemoteHandle:
        """Connect to the run's service and receive its state (ServiceError: one line)."""
        sock = connect(run_dir, timeout)
        try:
            sock.sendall(protocol.command(0, "hello", subscribe=True, client="app"))
            reader = sock.makefile("rb")
            while True:
                line = reader.readline(MAX_REPLY)
                if not line:
                    raise ServiceError(f"the run {Path(run_dir).name} closed the connection")
                message = protocol.decode(line, limit=None)
                if message.get("type") != "reply" or message.get("id") not in (0, None):
                    continue  # a snapshot sent before the welcome: the welcome has a newer one
                if "error" in message:
                    raise ServiceError(f"the run {Path(run_dir).name} refused: {message['error']}")
                sock.settimeout(None)
                return cls(sock, message["result"])
        except (OSError, ProtocolError, KeyError, TypeError, ValueError) as e:
            sock.close()
            if isinstance(e, ServiceError):
                raise
            raise ServiceError(f"cannot attach to {Path(run_dir).name}: {first_line(e)}") from None

    # --- facts about the run ---
    @property
    def state(self) -> Any:
        return self._snapshot.state

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def history(self) -> list[dict[str, Any]]:
        """The run's diagnostics records from its metrics.jsonl (the service is on this box)."""
        return read_jsonl(self.run_dir / "metrics.jsonl")

    def subscribe(self, callback: Callable[[Any], None]) -> None:
        self._subscribers.append(callback)

    # --- commands ---
    def _call(self, name: str, convert: Callable[[Any], Any] = lambda r: r, **args: Any) -> Future:
        future: Future = Future()
        cid = next(self._ids)
        with self._lock:
            if not self.connected:
                future.set_exception(ServiceError("the run's service is gone"))
                return future
            self._waiting[cid] = (future, convert)
        try:
            with self._send_lock:
                self._sock.sendall(protocol.command(cid, name, **args))
        except OSError as e:
            with self._lock:
                mine = self._waiting.pop(cid, None) is not None
            if mine:  # else the reader, seeing the service go, has already failed it
                future.set_exception(ServiceError(f"the run's service is gone ({e.strerror or e})"))
        return future

    def _ask(self, name: str, **args: Any) -> Any:
        return self._call(name, **args).result(timeout=CALL_TIMEOUT)

    def start(self, paused: bool = False) -> None:
        if paused:
            self.pause()

    def pause(self) -> bool:
        return bool(self._ask("pause"))

    def resume(self) -> bool:
        return bool(self._ask("resume"))

    def stop(self) -> Future:
        """Stop the run for good (its service saves a checkpoint and ends)."""
        self.stop_requested = True
        return self._call("stop", _path)

    def close(self, timeout: float = 5.0) -> None:
        """Detach: the run goes on."""
        with self._lock:
            self.connected = False
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def set_hparams(self, **values: float) -> Future:
        for key, value in values.items():  # the same check the service makes, answered at once
            if key not in LIVE_KEYS:
                raise ConfigError(f"{key} cannot be changed while training: live keys are {', '.join(LIVE_KEYS)}")
            values[key] = check_value(f"algo.{key}", value)
        return self._call("set_hparams", values=values)

    def save_now(self) -> Future:
        return self._call("save", _path)

    def weights(self) -> Future:
        return self._call("weights", lambda r: decode_weights(r["weights"]))

    def load(self, path: str | Path) -> Future:
        return self._call("load", path=str(path))

    def list_checkpoints(self) -> list[CheckpointInfo]:
        try:
            rows = self._ask("checkpoints")
        except ServiceError as e:
            raise OSError(str(e)) from None
        return [CheckpointInfo(Path(r["path"]), int(r["step"]), float(r["mtime"]), int(r["size"]), r.get("score"),
                               r.get("eval_mean"), tuple(r.get("tags", ()))) for r in rows]

    def delete_checkpoint(self, path: str | Path) -> None:
        try:
            self._ask("delete", path=str(path))
        except ServiceError as e:
            raise ConfigError(str(e)) from None

    def record(self, path: str | Path, games: int = 5) -> Future:
        """Record `games` games of a checkpoint to MP4s in the run's process (it goes on after a
        detach); the result is the videos' directory, the news arrives as the run's events."""
        return self._call("record", path=str(path), games=games)

    # --- evaluations run in the service ---
    def evaluate(self, source: str | Path | None, episodes: int = 100, envs: int = EVAL_ENVS, greedy: bool = False,
                 seed: int = EVAL_SEED, progress: Callable[[Any], None] | None = None,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
        """Start an evaluation of a checkpoint in the service and follow it to its end. Called from
        a worker thread. Detaching does not stop it: its result lands beside the checkpoint."""
        if source is None:
            raise ConfigError("the service evaluates checkpoints: save the current weights first")
        reply = self._call("evaluate", path=str(source), episodes=episodes, envs=envs, greedy=greedy, seed=seed)
        eid = int(reply.result(timeout=CALL_TIMEOUT)["id"])
        return self.follow_evaluation(eid, progress, cancel)

    def follow_evaluation(self, eid: int, progress: Callable[[Any], None] | None = None,
                          cancel: threading.Event | None = None) -> dict[str, Any]:
        messages = self._eval_queue(eid)
        asked_cancel = False
        while True:
            if cancel is not None and cancel.is_set() and not asked_cancel:
                asked_cancel = True
                self._call("cancel_eval", id=eid)
            try:
                kind, data = messages.get(timeout=0.2)
            except queue.Empty:
                if not self.connected:
                    raise ServiceError("the run's service is gone") from None
                continue
            if kind == "eval" and progress is not None:
                progress(_Progress(data))
            elif kind == "eval_end":
                with self._lock:
                    self._evals.pop(eid, None)
                if data.get("cancelled"):
                    raise RuntimeError("evaluation cancelled")
                if "result" not in data:
                    raise RuntimeError(str(data.get("error", "evaluation failed")))
                return data["result"]

    def _eval_queue(self, eid: int) -> queue.SimpleQueue:
        with self._lock:
            return self._evals.setdefault(eid, queue.SimpleQueue())

    # --- the reader thread ---
    def _read_loop(self) -> None:
        reason = "the connection to the run's service closed"
        try:
            while True:
                line = self._reader.readline(MAX_REPLY)
                if not line:
                    break
                self._dispatch(protocol.decode(line, limit=None))
        except (OSError, ValueError) as e:
            if self.connected:
                reason = f"the connection to the run's service failed: {first_line(e)}"
        finally:
            self._disconnected(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message.get("data")
        if kind == "reply":
            with self._lock:
                waiting = self._waiting.pop(message.get("id"), None)
            if waiting is None:
                return
            future, convert = waiting
            if "error" in message:
                future.set_exception(ServiceError(str(message["error"])))
            else:
                try:
                    future.set_result(convert(message.get("result")))
                except Exception as e:  # noqa: BLE001 - a reply we cannot use fails its command only
                    future.set_exception(ServiceError(f"bad reply: {first_line(e)}"))
        elif kind == "snapshot":
            self._snapshot = protocol.snapshot_from(data)
            self._publish(self._snapshot)
        elif kind == "event":
            self._publish(protocol.event_from(data))
        elif kind == "eval_start":
            evaluation = RemoteEvaluation(data)
            with self._lock:
                self._evals = {k: q for k, q in self._evals.items() if k == evaluation.id}  # older ones are over
                self._evals.setdefault(evaluation.id, queue.SimpleQueue())
            self.running_evaluation = evaluation
            self._publish(evaluation)
        elif kind in ("eval", "eval_end") and isinstance(data, dict):
            if kind == "eval_end":
                self.running_evaluation = None
            self._eval_queue(int(data["id"])).put((kind, data))

    def _publish(self, item: Any) -> None:
        for callback in list(self._subscribers):
            callback(item)

    def _disconnected(self, reason: str) -> None:
        with self._lock:
            was_connected, self.connected = self.connected, False
            waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_exception(ServiceError("the run's service is gone"))
        if self.stop_requested:
            self._snapshot = _with_state(self._snapshot, State.STOPPED)
        if was_connected or self.stop_requested:
            self._publish(Disconnected(reason, stopped=self.stop_requested))


def _path(result: Any) -> Path | None:
    return None if result is None else Path(str(result))


def _with_state(snapshot: Snapshot, state: State) -> Snapshot:
    from dataclasses import replace

    return replace(snapshot, state=state, steps_per_sec=0.0, time=time.time())


def start_run(what: Any) -> RemoteHandle:
    """Start a run in a process of its own and attach to it: `what` is a Config (a new run) or a
    run directory (resume it from its newest valid checkpoint). ServiceError, ConfigError: one line."""
    from a2c_tui.run.service import start

    return RemoteHandle.attach(start(what))
