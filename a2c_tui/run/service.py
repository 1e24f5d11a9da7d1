"""A run as a process of its own: the trainer, a lock, and a Unix socket that apps attach to.

    RunLock      one writer per run: flock on <run_dir>/.lock, released by the kernel on death
    RunService   serves a handle (LocalHandle) to clients over the run's socket; evaluations
                 run here, so they survive a detach
    registry     <runtime>/runs/<key>.json: what `a2c-tui ls` and `attach` look for

The socket and the registry live in a private runtime directory (mode 0700, ours): only
the user who owns the run can connect, and the peer's uid is checked again with
SO_PEERCRED. The I/O runs on an asyncio loop in a thread of its own; the trainer's
snapshots reach it through `call_soon_threadsafe`, so no client can slow the training
thread. A client that stops reading gets only the newest snapshot when it reads again,
and is dropped when its backlog of other messages passes a bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import io
import itertools
import json
import os
import socket
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from a2c_tui.config import EVAL_SEED, Config, ConfigError, check_value, to_toml
from a2c_tui.run import protocol
from a2c_tui.run.protocol import Event, ProtocolError, Snapshot, State

RUNTIME_ENV = "A2C_TUI_RUNTIME_DIR"
MAX_BACKLOG = 2_000  # messages queued for one client (snapshots coalesce; this bounds events and replies)
MAX_BACKLOG_BYTES = 64 * 2**20  # a few weights replies
MAX_IN_FLIGHT = 16  # commands one client may have running at once
LOG_KEPT = 200  # recent events sent to a client that attaches
MAX_EVAL_EPISODES, MAX_EVAL_ENVS = 10_000, 256
MAX_RECORD_GAMES = 100
VIDEOS = "videos"  # recordings from an app go to <the run's working directory>/videos, as `a2c-tui record`
FINAL_STATES = (State.STOPPED, State.FINISHED, State.ERROR)


class ServiceError(Exception):
    """A run's service cannot be reached or started (message: one line)."""


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


# ----- where runs are found ---------------------------------------------------------------
def runtime_dir() -> Path:
    """This user's private directory for sockets and the registry (created 0700; refused if
    it is a symlink, someone else's, or open to others)."""
    if os.environ.get(RUNTIME_ENV):
        path = Path(os.environ[RUNTIME_ENV])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "a2c-tui"
    else:
        path = Path(tempfile.gettempdir()) / f"a2c-tui-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / "runs").mkdir(mode=0o700, exist_ok=True)
        for directory in (path, path / "runs"):
            info = os.lstat(directory)
            if not os.path.isdir(directory) or os.path.islink(directory):
                raise ServiceError(f"{directory} is not a directory")
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise ServiceError(f"{directory} is not private (it must be ours, mode 0700): refusing to use it")
    except OSError as e:
        raise ServiceError(f"cannot use the runtime directory {path}: {e.strerror or e}") from None
    return path


def run_key(run_dir: str | Path) -> str:
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def socket_path(run_dir: str | Path) -> Path:
    # Not in the run directory: AF_UNIX paths are limited to 107 bytes, run directories are not.
    return runtime_dir() / f"{run_key(run_dir)}.sock"


def registry_path(run_dir: str | Path) -> Path:
    return runtime_dir() / "runs" / f"{run_key(run_dir)}.json"


@dataclass
class RunEntry:
    """A run this box knows of (from the registry), and what a look at it found."""
    name: str
    run_dir: Path
    pid: int
    alive: bool
    state: str = "dead"
    step: int = 0
    total_steps: int = 0
    score: float | None = None
    clients: int = 0


def known_runs(probe: bool = True) -> list[RunEntry]:
    """Runs registered on this box, alive or dead (a dead one: its service was killed or the
    box rebooted; its directory can be resumed). Entries whose directory is gone are dropped."""
    entries = []
    for path in sorted((runtime_dir() / "runs").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            run_dir, pid = Path(data["run_dir"]), int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not run_dir.is_dir():
            path.unlink(missing_ok=True)
            continue
        entry = RunEntry(run_dir.name, run_dir, pid, alive=RunLock.held(run_dir))
        if entry.alive:
            entry.state, entry.pid = "starting", RunLock.holder(run_dir) or pid  # until its socket answers
        if entry.alive and probe:
            with contextlib.suppress(ServiceError, OSError, ProtocolError):
                status = request(run_dir, "status", timeout=2.0)
                snap = protocol.snapshot_from(status["snapshot"])
                entry.state, entry.step, entry.total_steps = snap.state.value, snap.step, snap.total_steps
                entry.score = snap.score if snap.score == snap.score else None
                entry.clients = int(status.get("clients", 0))
        elif not entry.alive:
            entry.step, entry.total_steps = _saved_progress(run_dir)
        entries.append(entry)
    return entries


def _saved_progress(run_dir: Path) -> tuple[int, int]:
    """The step of a dead run's latest checkpoint (from index.json) and its total (config.toml)."""
    import tomllib

    step = total = 0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        index = json.loads((run_dir / "index.json").read_text())
        step = int(index["files"][index["latest"]]["step"])
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        total = int(tomllib.loads((run_dir / "config.toml").read_text())["run"]["total_steps"])
    return step, total


def find_run(name: str | None) -> RunEntry:
    """A live run by name, directory or nothing (the only live run); ServiceError otherwise."""
    alive = [e for e in known_runs(probe=False) if e.alive]
    if name is None:
        if len(alive) == 1:
            return alive[0]
        if not alive:
            raise ServiceError("no run is alive on this box (a2c-tui ls lists the runs; a2c-tui starts one)")
        raise ServiceError(f"{len(alive)} runs are alive: name one ({', '.join(e.name for e in alive)})")
    as_path = Path(name)
    for entry in alive:
        if entry.name == name or (as_path.exists() and as_path.resolve() == entry.run_dir.resolve()):
            return entry
    raise ServiceError(f"no live run named {name!r} (a2c-tui ls lists the runs)")


# ----- one writer per run ----------------------------------------------------------------
class RunLock:
    """An exclusive flock on <run_dir>/.lock for as long as this process holds it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        path = self.path = self.run_dir / ".lock"
        self.created = not path.exists()
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot lock the run {self.run_dir}: {path} ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise ConfigError(f"the run {self.run_dir.name} is alive in another process: attach to it with "
                              f"`a2c-tui attach {self.run_dir.name}` (or stop it with `a2c-tui stop "
                              f"{self.run_dir.name}`)") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    @staticmethod
    def held(run_dir: str | Path) -> bool:
        """Whether some process holds the run's lock (its service is alive)."""
        try:
            fd = os.open(Path(run_dir) / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return False

    @staticmethod
    def holder(run_dir: str | Path) -> int | None:
        """The pid the lock's holder wrote into it."""
        try:
            with open(Path(run_dir) / ".lock", "rb") as f:
                return int(f.read(32).strip() or b"0") or None
        except (OSError, ValueError):
            return None

    def abandon(self) -> None:
        """Release after a refused start: a lock file this process created goes too (nothing written)."""
        if self.created and self.fd >= 0:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def encode_weights(state_dict: dict[str, Any]) -> str:
    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def decode_weights(text: str) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(base64.b64decode(text)), map_location="cpu", weights_only=True)


# ----- the service ------------------------------------------------------------------------
class _Client:
    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.subscribed = False
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.snapshot: bytes | None = None  # the newest snapshot not yet written (older ones are dropped)
        self.wake = asyncio.Event()
        self.in_flight = 0
        self.dropped = False

    def send(self, message: dict[str, Any]) -> None:
        if self.dropped:
            return
        data = protocol.encode(message)
        if len(self.backlog) >= MAX_BACKLOG or self.backlog_bytes + len(data) > MAX_BACKLOG_BYTES:
            self.drop()
            return
        self.backlog.append(data)
        self.backlog_bytes += len(data)
        self.wake.set()

    def send_snapshot(self, data: bytes) -> None:
        self.snapshot = data
        self.wake.set()

    def drop(self) -> None:
        if not self.dropped:
            self.dropped = True
            self.backlog.clear()
            self.wake.set()
            self.writer.transport.abort()


class _Evaluation:
    def __init__(self, eid: int, path: Path, episodes: int, envs: int, greedy: bool, seed: int):
        self.id, self.path, self.episodes, self.envs, self.greedy = eid, path, episodes, envs, greedy
        self.seed = seed
        self.scores: list[float] = []
        self.cancel = threading.Event()

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "episodes": self.episodes, "envs": self.envs,
                "greedy": self.greedy, "seed": self.seed, "scores": list(self.scores)}


class RunService:
    """Serves `handle` (a LocalHandle) on the run's socket until `close()`."""

    def __init__(self, handle: Any, stop_requested: threading.Event | None = None):
        self.handle = handle
        self.stop_requested = stop_requested or threading.Event()  # `stop` asked: end even with apps attached
        self.run_dir = Path(handle.run_dir).resolve()
        self.socket_path: Path | None = None  # set by open()
        self.registry_path: Path | None = None
        self.log: deque[Event] = deque(maxlen=LOG_KEPT)
        self.clients: set[_Client] = set()
        self.in_flight = 0  # commands of all clients not yet answered
        self.evaluation: _Evaluation | None = None
        self.recording: threading.Event | None = None  # set: cancel the recording in progress
        self._eval_ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="service-io", daemon=True)
        self.changed = threading.Event()  # set when a client comes or goes (the main thread waits on it)

    # --- lifecycle (main thread) ---
    def open(self) -> None:
        """Bind the socket and announce the run in the registry."""
        self.socket_path, self.registry_path = socket_path(self.run_dir), registry_path(self.run_dir)
        self.handle.subscribe(self._from_trainer)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)
        data = {"run_dir": str(self.run_dir), "pid": os.getpid(), "socket": str(self.socket_path),
                "started": time.time()}
        tmp = self.registry_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.registry_path)

    async def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead service's socket (we hold the run's lock)
        self._server = await asyncio.start_unix_server(self._serve_client, path=str(self.socket_path),
                                                       limit=protocol.MAX_LINE)
        os.chmod(self.socket_path, 0o600)

    @property
    def subscribers(self) -> int:
        return sum(1 for c in self.clients if c.subscribed)

    def close(self) -> None:
        """Stop serving: what clients were sent is flushed (for up to 2 s), then their connections
        close; socket and registry entry removed."""
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            deadline = time.monotonic() + 2.0
            while any(c.backlog or c.snapshot for c in self.clients if not c.dropped) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            for client in list(self.clients):
                client.writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        for job in (self.evaluation.cancel if self.evaluation else None, self.recording):
            if job is not None:
                job.set()
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        for path in (self.socket_path, self.registry_path):
            if path is not None and self._server is not None:  # ours: a failed open removes nothing
                with contextlib.suppress(OSError):
                    path.unlink()

    def wait(self) -> State:
        """Block until the run is over: stopped on request, or finished, stopped or failed with no
        app attached (an app on a finished run keeps it, and its evaluations, alive until it detaches)."""
        while True:
            state = self.handle.state
            idle = self.in_flight == 0  # e.g. a `stop` whose reply (the checkpoint) is not sent yet
            if state in FINAL_STATES and idle and (self.stop_requested.is_set()
                                                   or (self.subscribers == 0 and self.evaluation is None)):
                return state
            self.changed.wait(0.5)
            self.changed.clear()

    # --- trainer -> clients (training thread) ---
    def _from_trainer(self, item: Snapshot | Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
            self.loop.call_soon_threadsafe(self._broadcast_item, item)

    def _broadcast_item(self, item: Snapshot | Event) -> None:
        if isinstance(item, Event):
            self.log.append(item)
            self._broadcast({"type": "event", "data": asdict(item)})
        else:
            data = protocol.encode({"type": "snapshot", "data": protocol.snapshot_data(item)})
            for client in self.clients:
                if client.subscribed:
                    client.send_snapshot(data)
        self.changed.set()

    def _broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self.clients):
            if client.subscribed:
                client.send(message)

    def _event(self, level: str, text: str) -> None:
        self._broadcast_item(Event(time.time(), level, text))

    # --- one client (I/O thread) ---
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
        except OSError:
            uid = -1
        if uid != os.getuid():
            writer.write(protocol.encode({"type": "reply", "id": None, "error": "permission denied: this run "
                                                                                "belongs to another user"}))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self.clients.add(client)
        self.changed.set()
        writing = asyncio.create_task(self._write_loop(client))
        try:
            await self._read_loop(reader, client)
        except asyncio.CancelledError:
            pass  # the service is closing (asyncio would log a cancelled connection handler as an error)
        finally:
            self.clients.discard(client)
            self.changed.set()
            client.drop()
            writing.cancel()

    async def _write_loop(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not client.dropped:
                await client.wake.wait()
                client.wake.clear()
                while not client.dropped and (client.backlog or client.snapshot):
                    if client.backlog:
                        data = client.backlog.popleft()
                        client.backlog_bytes -= len(data)
                    else:
                        data, client.snapshot = client.snapshot, None
                    client.writer.write(data)
                    await client.writer.drain()  # a client that does not read waits here, alone

    async def _read_loop(self, reader: asyncio.StreamReader, client: _Client) -> None:
        greeted = False
        while not client.dropped:
            try:
                line = await reader.readline()
            except ValueError:  # longer than protocol.MAX_LINE: the rest arrives as more bad lines
                client.send({"type": "reply", "id": None, "error": f"message too long (at most "
                                                                   f"{protocol.MAX_LINE:,} bytes)"})
                continue
            except ConnectionError:
                return
            if not line:
                return
            cid = None
            try:
                message = protocol.decode(line)
                cid = message.get("id") if type(message.get("id")) is int else None
                cid, name, args = protocol.check_command(message)
                if not greeted and name != "hello":
                    raise ProtocolError("say hello first")
                if client.in_flight >= MAX_IN_FLIGHT:
                    raise ProtocolError(f"too many commands at once (at most {MAX_IN_FLIGHT})")
            except ProtocolError as e:
                client.send({"type": "reply", "id": cid, "error": str(e)})
                continue
            greeted = True
            client.in_flight += 1
            self.in_flight += 1
            asyncio.create_task(self._answer(client, cid, name, args))

    async def _answer(self, client: _Client, cid: int, name: str, args: dict[str, Any]) -> None:
        try:
            result = await self._command(client, name, args)
        except Exception as e:  # noqa: BLE001 - any failure is that client's error reply, never the service's
            client.send({"type": "reply", "id": cid, "error": first_line(e)})
        else:
            client.send({"type": "reply", "id": cid, "result": result})
        finally:
            client.in_flight -= 1
            self.in_flight -= 1
            self.changed.set()

    # --- commands (I/O thread; anything slow runs in a worker thread) ---
    async def _command(self, client: _Client, name: str, args: dict[str, Any]) -> Any:
        handle, loop = self.handle, asyncio.get_running_loop()
        if name == "hello":
            client.subscribed = bool(args.get("subscribe", False))
            self.changed.set()
            return {"v": protocol.VERSION, "pid": os.getpid(), "run_dir": str(self.run_dir),
                    "config": handle.config.to_dict(), "snapshot": protocol.snapshot_data(handle.snapshot()),
                    "log": [asdict(e) for e in self.log],
                    "evaluation": self.evaluation.describe() if self.evaluation else None}
        if name == "status":
            return {"snapshot": protocol.snapshot_data(handle.snapshot()), "clients": self.subscribers,
                    "pid": os.getpid()}
        if name == "pause":
            return handle.pause()
        if name == "resume":
            return handle.resume()
        if name == "stop":
            self.stop_requested.set()
            return _text(await asyncio.wrap_future(handle.stop()))
        if name == "save":
            return _text(await asyncio.wrap_future(handle.save_now()))
        if name == "load":
            return await asyncio.wrap_future(handle.load(self._inside(args["path"])))
        if name == "set_hparams":
            return await asyncio.wrap_future(handle.set_hparams(**args["values"]))
        if name == "weights":
            weights = await asyncio.wrap_future(handle.weights())
            return {"weights": await loop.run_in_executor(None, encode_weights, weights),
                    "step": handle.snapshot().step}
        if name == "checkpoints":
            infos = await loop.run_in_executor(None, handle.list_checkpoints)
            return [{**asdict(i), "path": str(i.path), "tags": list(i.tags)} for i in infos]
        if name == "delete":
            path = self._inside(args["path"])
            await loop.run_in_executor(None, handle.delete_checkpoint, path)
            self._event("info", f"deleted {path.name}")
            return True
        if name == "evaluate":
            return self._start_evaluation(args)
        if name == "record":
            return self._start_recording(self._inside(args["path"]), args.get("games", 5))
        if name == "cancel_eval":
            if self.evaluation is None or self.evaluation.id != args["id"]:
                return False
            self.evaluation.cancel.set()
            return True
        raise ProtocolError(f"unknown command {name!r}")  # COMMANDS and this list disagree

    def _inside(self, name: str) -> Path:
        """A checkpoint path a client named, refused unless it is a file of this run."""
        path = Path(name)
        if not path.is_absolute():
            path = self.run_dir / path
        if path.parent.resolve() != self.run_dir or path.suffix != ".pt" or path.is_symlink():
            raise ConfigError(f"{name} is not a checkpoint of this run")
        return path

    def _start_evaluation(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.evaluation is not None:
            raise ConfigError("an evaluation is already running (cancel it first)")
        episodes, envs = args.get("episodes", 100), args.get("envs", 8)
        if not 1 <= episodes <= MAX_EVAL_EPISODES or not 1 <= envs <= MAX_EVAL_ENVS:
            raise ConfigError(f"episodes must be 1..{MAX_EVAL_EPISODES} and envs 1..{MAX_EVAL_ENVS}")
        seed = check_value("run.seed", args.get("seed", EVAL_SEED))
        job = _Evaluation(next(self._eval_ids), self._inside(args["path"]), episodes, envs,
                          args.get("greedy", False), seed)
        self.evaluation = job
        self._broadcast({"type": "eval_start", "data": job.describe()})
        threading.Thread(target=self._evaluate, args=(job,), name="evaluation", daemon=True).start()
        return {"id": job.id}

    def _start_recording(self, path: Path, games: int) -> str:
        if self.recording is not None:
            raise ConfigError("a recording is already running")
        if not 1 <= games <= MAX_RECORD_GAMES:
            raise ConfigError(f"games must be 1..{MAX_RECORD_GAMES}")
        out_dir = Path(VIDEOS).resolve()
        self.recording = threading.Event()
        threading.Thread(target=self._record, args=(path, out_dir, games, self.recording), name="recording",
                         daemon=True).start()
        return str(out_dir)

    def _record(self, path: Path, out_dir: Path, games: int, cancel: threading.Event) -> None:
        """Runs in its own thread: MP4s of `games` games of a checkpoint; news as the run's events."""
        from a2c_tui.run.record import record_checkpoint

        def say(level: str, text: str) -> None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._event, level, text)

        def progress(p: Any) -> None:
            if p.finished is not None:
                g = p.finished
                say("info", f"recorded game {g.game}/{p.games} of {path.name}: score {g.score:.0f}, "
                            f"{g.length:,} steps -> {g.path}")

        say("info", f"recording {games} games of {path.name} to {out_dir}/")
        try:
            done = record_checkpoint(path, out_dir, games=games, progress=progress, cancel=cancel)
            say("info", f"recorded {len(done)} games of {path.name} to {out_dir}/ "
                        f"(scores {', '.join(f'{g.score:.0f}' for g in done)})")
        except Exception as e:  # noqa: BLE001 - a bad checkpoint, a full disk, a cancel: told to every app
            say("error" if not cancel.is_set() else "info", f"recording {path.name} ended: {first_line(e)}")
        finally:
            self.recording = None

    def _evaluate(self, job: _Evaluation) -> None:
        """Runs in its own thread; every message goes through the loop."""
        def progress(p: Any) -> None:
            job.scores.append(float(p.score))
            data = {"id": job.id, "done": p.done, "total": p.total, "score": float(p.score), "length": int(p.length)}
            self.loop.call_soon_threadsafe(self._broadcast, {"type": "eval", "data": data})

        end: dict[str, Any] = {"id": job.id, "cancelled": False}
        try:
            result = self.handle.evaluate(job.path, episodes=job.episodes, envs=job.envs, greedy=job.greedy,
                                          seed=job.seed, progress=progress, cancel=job.cancel)
            end["result"] = result
        except Exception as e:  # noqa: BLE001 - reported to every client
            end["cancelled"] = job.cancel.is_set()
            end["error"] = "cancelled" if end["cancelled"] else first_line(e)

        def finish() -> None:
            self.evaluation = None
            self._broadcast({"type": "eval_end", "data": end})
            if "result" in end:
                self._event("info", f"evaluation of {job.path.name}: mean {end['result']['mean']:.1f} over "
                                    f"{end['result']['episodes']} games")
            self.changed.set()
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(finish)


def _text(value: Any) -> Any:
    return None if value is None else str(value)


# ----- the client side of a plain request ----------------------------------------------------
def connect(run_dir: str | Path, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path(run_dir)))
    except OSError as e:
        sock.close()
        raise ServiceError(f"cannot reach the run {Path(run_dir).name}: {e.strerror or e}") from None
    return sock


def request(run_dir: str | Path, name: str, timeout: float = 5.0, **args: Any) -> Any:
    """Say hello (not subscribed), send one command, return its result (ServiceError on an error)."""
    with connect(run_dir, timeout) as sock:
        sock.sendall(protocol.command(0, "hello", subscribe=False) + protocol.command(1, name, **args))
        reader = sock.makefile("rb")
        while True:
            line = reader.readline(protocol.MAX_LINE * 1024)
            if not line:
                raise ServiceError(f"the run {Path(run_dir).name} closed the connection")
            message = protocol.decode(line, limit=None)
            if message.get("type") == "reply" and message.get("id") in (None, 0, 1):
                if "error" in message:
                    raise ServiceError(str(message["error"]))
                if message.get("id") == 1:
                    return message.get("result")


def serve(handle: Any, *, paused: bool = False, stop_requested: threading.Event | None = None,
          on_ready: Callable[[RunService], None] | None = None,
          unattachable: Callable[[str], None] | None = None) -> State:
    """Run `handle`'s trainer as this process's service until the run is over; returns the final state.
    If the socket cannot be opened: ServiceError, or with `unattachable` that is told why and the run
    trains all the same (a headless run on a box without a usable runtime directory)."""
    service = RunService(handle, stop_requested)
    try:
        service.open()
    except (ServiceError, OSError) as e:
        if unattachable is None:
            raise
        unattachable(f"apps cannot attach to this run ({first_line(e)}); it trains all the same")
    try:
        handle.start(paused=paused)
        if on_ready is not None:
            on_ready(service)
        return service.wait()
    finally:
        service.close()
        handle.close(timeout=30)


def open_run(config: Any, resume: str | None = None, resume_overrides: dict[str, Any] | None = None
             ) -> tuple[Any, RunLock | None]:
    """Build the run's trainer with the run's lock held: a resumed run is locked before anything in
    it is touched; a second writer gets a ConfigError that says how to attach. Under torchrun only
    rank 0 (the run's writer) locks: the lock is None on the other ranks."""
    from a2c_tui.run.handle import LocalHandle

    lock = None
    if os.environ.get("RANK", "0") != "0":
        return LocalHandle.create(config, resume, resume_overrides), None
    if resume is not None:
        from a2c_tui import files
        from a2c_tui.run import checkpoints

        target = Path(resume)
        run_dir = target if target.is_dir() else target.parent
        if run_dir.is_dir():
            checkpoints.check_run_dir(run_dir)  # a stranger's run directory: refused before anything is written
            files.check_writable(run_dir)
            lock = RunLock(run_dir)
    try:
        handle = LocalHandle.create(config, resume, resume_overrides)
    except BaseException:
        if lock is not None:
            lock.abandon()
        raise
    if lock is None:
        try:
            lock = RunLock(handle.run_dir)
        except BaseException:
            handle.close()
            raise
    return handle, lock


def start(what: Config | str | Path) -> Path:
    """Start a run in a process of its own and return its run directory once its socket is up:
    `what` is a Config (a new run; its TOML waits in the private runtime directory until the
    process has read it) or a run directory (resumed from its newest valid checkpoint)."""
    if not isinstance(what, Config):
        return spawn(["--resume", str(Path(what).resolve())])
    config_file = runtime_dir() / f"new-run-{os.getpid()}-{time.monotonic_ns()}.toml"
    config_file.write_text(to_toml(what))
    try:
        return spawn(["--config", str(config_file)])
    finally:
        config_file.unlink(missing_ok=True)


def spawn(argv: list[str], timeout: float = 180.0) -> Path:
    """Start a run as a process of its own (a new session: no terminal, SIGHUP never reaches it) and
    return its run directory once its socket is up. `argv`: the run options (--config, --set, --resume,
    --paused). Its output goes to <run_dir>/service.log; until the run directory exists, to a file
    in the runtime directory that is shown if it fails to start."""
    import select
    import subprocess
    import sys

    runtime = runtime_dir()
    read_fd, write_fd = os.pipe()
    early = tempfile.NamedTemporaryFile(dir=runtime, prefix="start-", suffix=".log", delete=False)
    try:
        with early:
            subprocess.Popen([sys.executable, "-m", "a2c_tui", "service", "--ready-fd", str(write_fd), *argv],
                             stdin=subprocess.DEVNULL, stdout=early, stderr=early, start_new_session=True,
                             pass_fds=(write_fd,))
        os.close(write_fd)
        data, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                data += chunk
        try:
            message = json.loads(data) if data else None
        except ValueError:
            message = None
        if isinstance(message, dict) and message.get("ok"):
            return Path(message["run_dir"])
        if isinstance(message, dict) and message.get("error"):
            raise ServiceError(str(message["error"]))
        lines = Path(early.name).read_text(errors="replace").strip().splitlines()
        why = lines[-1] if lines else ("no answer in time" if data == b"" else "no word from it")
        raise ServiceError(f"the run's process did not start: {why[:300]}")
    finally:
        os.close(read_fd)
        with contextlib.suppress(OSError):
            os.unlink(early.name)


def tell_starter(fd: int | None, message: dict[str, Any]) -> None:
    """The spawned service's one word to the `a2c-tui` that started it (see spawn)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode())
        os.close(fd)


def log_to(path: Path) -> None:
    """From now on this process's stdout and stderr append to `path` (never through a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
