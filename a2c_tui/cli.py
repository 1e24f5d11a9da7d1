"""`a2c-tui` entry point: the app by default, `train --headless`, `ls`, `attach`, `stop`, `eval`, `record`.

A run is a process of its own (a2c_tui.run.service): `a2c-tui` starts one in the background and
attaches the app to it; `train --headless` runs the same service in the foreground."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from a2c_tui import files
from a2c_tui.config import EVAL_ENVS, EVAL_SEED

DEFAULT_CONFIG = "configs/space_invaders.toml"


class UsageError(Exception):
    """Bad command-line input (one line, exit code 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_run_options(p: argparse.ArgumentParser, sub: bool = False) -> None:
    """--config/--set/--resume/--paused, before the command (`a2c-tui --set ... train`) or after
    it. A subcommand's values go to sub_* names (merged by parse_args): argparse would let
    the subcommand's defaults silently replace what was given before it."""
    d, none = ("sub_", argparse.SUPPRESS) if sub else ("", None)
    p.add_argument("--config", dest=d + "config", default=none, help=f"TOML preset (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", dest=d + "overrides", action="append", default=none if sub else [], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set algo.lr=3e-4 (repeatable)")
    p.add_argument("--resume", dest=d + "resume", default=none, metavar="RUN_OR_CKPT",
                   help="continue a run: its directory (its newest valid checkpoint) or a checkpoint file; "
                        "--set may then change only threads, device, checkpoint and evaluation cadence")
    p.add_argument("--paused", dest=d + "paused", action="store_true", default=none if sub else False,
                   help="open the app (or start the run) with training paused")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name in ("config", "resume"):
        if hasattr(args, "sub_" + name):
            value = getattr(args, "sub_" + name)
            if getattr(args, name) not in (None, value):
                raise UsageError(f"--{name} given twice, before and after {args.command!r}: give it once")
            setattr(args, name, value)
    args.overrides = args.overrides + getattr(args, "sub_overrides", [])
    args.paused = args.paused or getattr(args, "sub_paused", False)
    if args.command not in (None, "train", "service"):
        given = [flag for flag, value in (("--config", args.config), ("--set", args.overrides),
                                          ("--resume", args.resume), ("--paused", args.paused)) if value]
        if given:  # they would be ignored without a word
            raise UsageError(f"{', '.join(given)} start or continue a run; {args.command!r} does not take them")
    return args


def build_parser() -> Parser:
    parser = Parser(prog="a2c-tui", description="Train A2C agents on Atari games, in a terminal app or headless.")
    _add_run_options(parser)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    train = sub.add_parser("train", help="train (the app, or --headless for scripts and nohup)")
    _add_run_options(train, sub=True)
    train.add_argument("--headless", action="store_true", help="no app: progress bar on a TTY, log lines otherwise")

    sub.add_parser("ls", help="the runs on this box: name, state, step, score, pid, attached apps")
    attach = sub.add_parser("attach", help="open the app on a live run (the run goes on when you detach)")
    attach.add_argument("run", nargs="?", help="run name or directory (default: the only live run)")
    stop = sub.add_parser("stop", help="save a checkpoint and end a live run")
    stop.add_argument("run", nargs="?", help="run name or directory (default: the only live run)")
    service = sub.add_parser("service", help="(internal) the run process that `a2c-tui` starts")
    _add_run_options(service, sub=True)
    service.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    ev = sub.add_parser("eval", help="play whole games with a checkpoint and report raw scores")
    ev.add_argument("checkpoint", help="a .pt file or a run directory (uses latest.pt)")
    ev.add_argument("--episodes", type=int, default=100, help="games to play (default 100)")
    ev.add_argument("--envs", type=int, default=EVAL_ENVS, help=f"games played in parallel (default {EVAL_ENVS})")
    ev.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    ev.add_argument("--seed", type=int, default=EVAL_SEED,
                    help=f"env and action seed (default {EVAL_SEED}: the same games for every checkpoint)")
    ev.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--json", metavar="FILE", help="write the result as JSON")

    rec = sub.add_parser("record", help="play whole games with a checkpoint and write one MP4 per game")
    rec.add_argument("checkpoint", help="a .pt file or a run directory (uses latest.pt)")
    rec.add_argument("--games", type=int, default=5, help="games to record (default 5)")
    rec.add_argument("--out", default="videos", help="directory for the videos (default videos/)")
    rec.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    rec.add_argument("--seed", type=int, default=12345, help="noop starts and sampled actions (default 12345)")
    rec.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"a2c-tui: error: {message}", file=sys.stderr)
    return code


def load_config(args):
    """The config for a new run, or for --resume the defaults (unused) and the validated
    --set overrides a resumed run may take (config.RESUME_KEYS)."""
    from a2c_tui import config as cfg

    if args.resume:
        if args.config:
            raise UsageError("--resume continues a run with its saved config; drop --config")
        return cfg.load(None), cfg.resume_overrides(args.overrides)
    path = args.config
    if path is None:
        path = DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None
    return cfg.load(path, args.overrides), None


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """A library's thread that dies of an OSError (tensorboardX's writer on a full disk) gets
    one line, not a traceback: what it stops is reported by the code that uses it."""
    if isinstance(args.exc_value, OSError):
        name = args.thread.name if args.thread is not None else "a thread"
        print(f"a2c-tui: {name} stopped: {args.exc_value}", file=sys.stderr, flush=True)
        return
    threading.__excepthook__(args)


def main(argv: list[str] | None = None) -> int:
    from a2c_tui.config import ConfigError
    from a2c_tui.files import RefusedFile
    from a2c_tui.run.protocol import ProtocolError
    from a2c_tui.run.service import ServiceError

    errors: tuple[type[Exception], ...] = (UsageError, ConfigError, RefusedFile, ServiceError, ProtocolError)
    threading.excepthook = _thread_error
    try:
        args = parse_args(argv)
        if args.command == "ls":
            return cmd_ls()
        if args.command == "attach":
            return cmd_attach(args)
        if args.command == "stop":
            return cmd_stop(args)
        # The commands below load torch; the ones above are light clients.
        from a2c_tui.run.checkpoints import CheckpointError

        errors = (*errors, CheckpointError)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "record":
            return cmd_record(args)
        config, resume_overrides = load_config(args)
        if args.command == "service":
            return cmd_service(args, config, resume_overrides)
        if args.command == "train" and args.headless:
            return cmd_train_headless(args, config, resume_overrides)
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise UsageError("torchrun starts ranks of a headless run: use `train --headless`")
        return cmd_app(args)
    except errors as e:
        if os.environ.get("RANK", "0") != "0":
            return 2  # rank 0 has the same error and says it (every rank got the same input)
        return _fail(str(e))


def _run_argv(args) -> list[str]:
    """The run options of this command line, for the service process that `a2c-tui` starts."""
    argv = []
    if args.config:
        argv += ["--config", str(Path(args.config).resolve())]
    for override in args.overrides:
        argv += ["--set", override]
    if args.resume:
        argv += ["--resume", str(Path(args.resume).resolve())]
    if args.paused:
        argv.append("--paused")
    return argv


def cmd_app(args) -> int:
    """Start the run as a process of its own and attach the app to it; a run that is already alive
    (`--resume` of a live run) is attached to, never given a second writer."""
    from a2c_tui.run.service import RunLock, spawn

    _leave_on_hangup()
    if args.resume:
        target = Path(args.resume)
        run_dir = target if target.is_dir() else target.parent
        if RunLock.held(run_dir):
            return _attach_app(run_dir)
    elif not args.config and Path(DEFAULT_CONFIG).exists():
        args.config = DEFAULT_CONFIG  # as load_config chose; else the built-in defaults
    return _attach_app(spawn(_run_argv(args)))


def _leave_on_hangup() -> None:
    """Until the app takes the signals over (on mount): a hangup or SIGTERM ends this client at
    once; the run, a process of its own, goes on."""
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, lambda *_: os._exit(0))


def _attach_app(run_dir: Path) -> int:
    from a2c_tui.tui.app import run_app
    from a2c_tui.tui.remote import RemoteHandle

    return run_app(RemoteHandle.attach(run_dir))


def cmd_attach(args) -> int:
    from a2c_tui.run.service import find_run

    _leave_on_hangup()
    return _attach_app(find_run(args.run).run_dir)


def cmd_ls() -> int:
    from a2c_tui.run.service import known_runs

    runs = known_runs()
    if not runs:
        print("no runs on this box (a2c-tui starts one)")
        return 0
    rows = [("NAME", "STATE", "STEP/TOTAL", "SCORE", "PID", "APPS", "DIRECTORY")]
    for r in runs:
        rows.append((r.name, r.state if r.alive else "dead", f"{r.step:,}/{r.total_steps:,}",
                     "-" if r.score is None else f"{r.score:.1f}", str(r.pid) if r.alive else "-",
                     str(r.clients) if r.alive else "-", str(r.run_dir)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    if not any(r.alive for r in runs):
        print("no run is alive (a dead one continues with: a2c-tui --resume DIRECTORY)")
    return 0


def cmd_stop(args) -> int:
    from a2c_tui.run.service import RunLock, find_run, request

    entry = find_run(args.run)
    saved = request(entry.run_dir, "stop", timeout=300)
    deadline = time.monotonic() + 60
    while RunLock.held(entry.run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    what = f"saved {Path(saved).name}" if saved else "no new checkpoint was needed"
    if RunLock.held(entry.run_dir):
        print(f"stop requested for {entry.name} ({what}), but its process {entry.pid} has not ended yet")
        return 1
    print(f"stopped {entry.name}: {what}; continue with: a2c-tui --resume {entry.run_dir}")
    return 0


def cmd_service(args, config, resume_overrides) -> int:
    """The run process that `a2c-tui` starts (service.spawn): no terminal, output to service.log."""
    import threading

    from a2c_tui.run.service import log_to, open_run, serve, tell_starter

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # it has no terminal; a stray hangup must not end the run
    try:
        handle, lock = open_run(config, args.resume, resume_overrides)
    except Exception as e:  # noqa: BLE001 - the starter prints it as one line
        tell_starter(args.ready_fd, {"ok": False, "error": str(e).strip().splitlines()[0] if str(e).strip()
                                     else type(e).__name__})
        return 2
    log_to(Path(handle.run_dir) / "service.log")
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        stop_requested.set()
        handle.stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    handle.subscribe(_log_events)
    ready = {"ok": True, "run_dir": str(Path(handle.run_dir).resolve()), "pid": os.getpid()}
    state = serve(handle, paused=args.paused, stop_requested=stop_requested,
                  on_ready=lambda _service: tell_starter(args.ready_fd, ready))
    lock.release()
    return 1 if state.value == "ERROR" else 0


def _log_events(item) -> None:
    if hasattr(item, "level"):
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.time))} {item.level}: {item.text}",
              flush=True)


def cmd_train_headless(args, config, resume_overrides=None) -> int:
    from a2c_tui.learn import distributed

    try:
        return _train_headless(args, config, resume_overrides)
    except distributed.RankFailure as e:
        return _fail(str(e), code=1)
    finally:
        distributed.leave()


def _train_headless(args, config, resume_overrides) -> int:
    """The run's service in the foreground (nohup, CI, schedulers), attachable like any run. Only the
    reporter's own thread writes stdout and stderr: a pipe nobody reads never blocks training."""
    import threading

    from a2c_tui.run.metrics import score_line
    from a2c_tui.run.protocol import State
    from a2c_tui.run.service import open_run, serve

    handle = None
    signals: list[int] = []
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        # Queued and run between updates on the training thread: checkpoint, then exit.
        # Before the trainer exists (games starting, model being built) it is only noted.
        signals.append(signum)
        stop_requested.set()
        if handle is not None:
            handle.stop()
        report.line(f"received {signal.Signals(signum).name}: "
                    + ("saving a checkpoint and stopping" if handle is not None else "stopping before training"))

    report = _Reporter()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        handle, lock = open_run(config, args.resume, resume_overrides)
        trainer = handle.trainer
        if not trainer.is_rank0:  # rank 0 owns the run directory, the socket and the output
            return _follow(trainer)
        report.say(f"run directory: {trainer.run_dir}")
        if trainer.world_size > 1:
            report.say(f"{trainer.world_size} ranks x {trainer.config.env.num_envs} envs = {trainer.total_envs} envs")
        started_at = trainer.step
        if not signals:
            with report.progress_of(trainer):
                state = serve(handle, stop_requested=stop_requested,
                              unattachable=lambda why: report.line(f"warning: {why}"))
        if signals and trainer.step == started_at:
            lock.abandon()
            trainer.discard()  # nothing trained: a new run leaves no directory behind
            report.say("stopped before training; nothing to save" + ("" if args.resume else ", run directory removed"))
            return 0
        lock.release()
        report.say(f"{state.value.lower()} at step {trainer.step:,}; {score_line(trainer.scores)}; run directory "
                   f"{trainer.run_dir}")
        if state == State.ERROR:
            return 1
        lost = trainer.unsaved()
        if lost:  # its stop or final checkpoint could not be written (a full disk)
            report.say(f"a2c-tui: error: {state.value.lower()} without a checkpoint of step {trainer.step:,}: "
                       f"{lost} are lost", fd=2)
            return 1
        return 0
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: not installed from Python, nothing to put back
                signal.signal(sig, handler)
        report.close()


def _follow(trainer) -> int:
    """A rank other than 0: it trains as rank 0 says and speaks only of its own errors."""
    from a2c_tui.run.protocol import Event, State

    def errors(item) -> None:
        if isinstance(item, Event) and item.level == "error":
            with survive_lost_terminal():
                print(f"a2c-tui: rank {trainer.rank}: {item.text}", file=sys.stderr, flush=True)

    trainer.subscribe(errors)
    # A signal here is a stop asked of the whole run: it goes to rank 0 at the next update boundary.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: trainer.stop())
    return 1 if trainer.run() == State.ERROR else 0


@contextlib.contextmanager
def survive_lost_terminal():
    """A dropped SSH session takes the terminal with it (writes fail with EIO; a closed pipe gives
    EPIPE). Output then goes to /dev/null: the run must still save its checkpoint and exit cleanly."""
    try:
        yield
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)


class _Unbuffered:
    """A file descriptor (1 or 2) as a file for rich, without Python's buffer: a thread blocked
    writing to a pipe nobody reads would hold that buffer's lock, and the interpreter aborts at
    exit when it cannot take it to flush."""

    encoding = "utf-8"

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> int:
        data = text.encode(errors="replace")
        with survive_lost_terminal():
            while data:
                data = data[os.write(self.fd, data):]
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def fileno(self) -> int:
        return self.fd


class _Reporter:
    """Rich progress bar on a terminal; otherwise a plain log line every 10 seconds.

    Only a thread of its own writes to stdout (and stderr): a pipe nobody reads (or a terminal
    on hold) blocks that thread, never the training loop or a signal handler, which only queue
    lines.
    At most MAX_WAITING lines wait; when more come the oldest waiting ones are dropped, and
    a line says how many once stdout is read again. The bar shows the newest snapshot only."""

    MAX_WAITING = 1000

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.progress = None
        self._last_line = 0.0
        self._printed_step = -1  # the end is published more than once (last update, finish, exit)
        # deque appends and pops are atomic, so a signal handler may queue a line even while
        # the training thread it interrupted is queueing one (a lock would deadlock there).
        self._waiting: collections.deque[tuple[int, str]] = collections.deque(maxlen=self.MAX_WAITING)
        self._dropped = 0
        self._snapshot = None
        self._bar = None  # (name, total, step) while a trainer runs on a terminal
        self._closing = False
        self._files = {1: _Unbuffered(1), 2: _Unbuffered(2)}
        self._writer = threading.Thread(target=self._write_all, name="stdout", daemon=True)
        self._writer.start()

    def say(self, text: str, fd: int = 1) -> None:
        if len(self._waiting) == self.MAX_WAITING:
            self._dropped += 1
        self._waiting.append((fd, text))

    def line(self, text: str) -> None:
        self.say(f"{time.strftime('%H:%M:%S')} {text}")

    @contextlib.contextmanager
    def progress_of(self, trainer):
        """Report the trainer's events and snapshots while it runs."""
        if self.tty:
            name = trainer.config.run.name
            if trainer.world_size > 1:
                name += f" ({trainer.total_envs} envs on {trainer.world_size} ranks)"
            self._bar = (name, trainer.config.run.total_steps, trainer.step)
        trainer.subscribe(self)
        try:
            yield
        finally:
            self._bar = None

    def close(self, timeout: float = 2.0) -> None:
        """Write what waits, for at most `timeout` seconds (stdout may be a pipe nobody reads)."""
        self._closing = True
        self._writer.join(timeout)

    def _write_all(self) -> None:
        written_dropped = 0
        while True:
            self._show_progress()
            if self._dropped > written_dropped:
                lines, written_dropped = self._dropped - written_dropped, self._dropped
                self._write(1, f"({lines:,} lines dropped: stdout was not being read)")
            try:
                fd, text = self._waiting.popleft()
            except IndexError:
                if self._closing:
                    break
                time.sleep(0.1)
                continue
            self._write(fd, text)
        self._bar = None
        self._show_progress()

    def _show_progress(self) -> None:
        if self._bar is not None and self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            name, total, step = self._bar
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                                     TextColumn("{task.fields[sps]:,.0f} steps/s"), TimeRemainingColumn(),
                                     TextColumn("score {task.fields[score]}"), console=Console(file=self._files[1]))
            self.progress.start()
            self.task = self.progress.add_task(name, total=total, completed=step, sps=0.0, score="-")
        item, self._snapshot = self._snapshot, None
        if item is not None and self.progress is not None:
            score = f"{item.score:.1f}" if math.isfinite(item.score) else "-"
            self.progress.update(self.task, completed=item.step, sps=item.steps_per_sec, score=score)
        if self._bar is None and self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _write(self, fd: int, text: str) -> None:
        if self.progress is not None and fd == 1:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self._files[fd].write(text + "\n")

    def __call__(self, item) -> None:
        """A subscriber: called on the training thread, so it only queues."""
        from a2c_tui.run.protocol import Event

        if isinstance(item, Event):
            self.line(f"{item.level}: {item.text}" if item.level != "info" else item.text)
        elif self.tty:
            self._snapshot = item
        elif item.step != self._printed_step and (time.monotonic() - self._last_line >= 10
                                                  or item.step >= item.total_steps):
            self._last_line, self._printed_step = time.monotonic(), item.step
            score = f"{item.score:.1f}" if math.isfinite(item.score) else "-"
            m = item.metrics
            extra = "".join(f" {k} {m[k]:.3g}" for k in ("entropy", "r2", "grad_norm") if isinstance(m.get(k), float))
            self.line(f"step {item.step:,}/{item.total_steps:,} ({item.step / item.total_steps:.1%}) "
                      f"{item.steps_per_sec:,.0f} steps/s score {score} games {item.games}{extra}")


def cmd_eval(args) -> int:
    import torch

    from a2c_tui.run import checkpoints as ckpt
    from a2c_tui.run.evaluate import evaluate
    from a2c_tui.run.trainer import config_from_payload, resolve_device, resolve_resume

    _need(args.episodes >= 1, "--episodes", args.episodes, ">= 1")
    _need(args.envs >= 1, "--envs", args.envs, ">= 1")
    _need_seed(args.seed)
    run_dir, path = resolve_resume(args.checkpoint)
    payload = ckpt.load(path)
    config = config_from_payload(payload, path)
    from a2c_tui.learn.envs import make_envs

    probe = make_envs(config.env.id, 1, life_loss=False)
    try:
        ckpt.check_compatible(payload, config.env.id, probe.n_actions, probe.observation_shape, path)
    finally:
        probe.close()
    # Everything that is written after the games is checked before them: a result is never lost.
    saved_beside = run_dir.joinpath("index.json").exists()
    if saved_beside:
        files.check_writable(run_dir)
    if args.json:
        _check_json_target(Path(args.json), run_dir)
    device = resolve_device(args.device)
    bar = _EvalBar(args.episodes)
    with bar:
        result = evaluate(config, payload["model"], episodes=args.episodes, num_envs=args.envs, greedy=args.greedy,
                          seed=args.seed, device=device, progress=bar)
    result["checkpoint"] = str(path)
    result["step"] = payload.get("step")
    print(f"{config.env.id} {path}: {result['episodes']} games, mean {result['mean']:.1f} ± {result['std']:.1f}, "
          f"median {result['median']:.1f}, min {result['min']:.0f}, max {result['max']:.0f}, "
          f"mean length {result['mean_length']:.0f} steps ({'greedy' if args.greedy else 'sampled'} actions)")
    if args.json:
        ckpt.atomic_write_bytes(Path(args.json), (json.dumps(result, indent=1) + "\n").encode())
    if saved_beside:
        ckpt.record_evaluation(path, result)
    return 0


def _need(ok: bool, option: str, value, allowed: str) -> None:
    if not ok:
        raise UsageError(f"{option} {value} is not allowed: must be {allowed}")


def _need_seed(seed: int) -> None:
    # ALE takes signed 32-bit seeds and env i of an evaluation gets seed + i (as run.seed).
    _need(0 <= seed <= 2**30, "--seed", seed, "an integer from 0 to 2**30")


def _check_json_target(target: Path, run_dir: Path) -> None:
    """--json must name a file that can be written and that is not one of the run's own."""
    from a2c_tui.run.checkpoints import RUN_FILES

    if target.is_dir():
        raise UsageError(f"--json {target} is not allowed: it is a directory")
    if not target.parent.is_dir():
        raise UsageError(f"--json {target} is not allowed: {target.parent} is not a directory")
    resolved = target.resolve()
    if resolved.suffix == ".pt":
        raise UsageError(f"--json {target} is not allowed: it names a checkpoint")
    if resolved.is_relative_to(run_dir.resolve()) and (
            resolved.exists() or resolved.name in RUN_FILES or resolved.name.endswith(".eval.json")):
        raise UsageError(f"--json {target} is not allowed: it would overwrite a file of the run directory")
    try:
        files.check_writable(target.parent)
    except files.RefusedFile as e:
        raise UsageError(f"--json {target} is not allowed: {e}") from None


def cmd_record(args) -> int:
    import torch

    from a2c_tui.run.record import record_checkpoint
    from a2c_tui.run.trainer import resolve_device

    _need(args.games >= 1, "--games", args.games, ">= 1")
    _need_seed(args.seed)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is not allowed: it is a file, not a directory")
    device = resolve_device(args.device)  # --out is made once the checkpoint is accepted
    torch.manual_seed(args.seed)  # sampled actions: the same seed gives the same videos
    # One game = batches of one: a second torch thread only adds waiting (6x slower on a busy 2-core
    # machine) and takes the core that the emulator and ffmpeg use.
    torch.set_num_threads(1)
    with _RecordBar(args.games) as bar:
        games = record_checkpoint(args.checkpoint, out, games=args.games, greedy=args.greedy, seed=args.seed,
                                  device=device, progress=bar)
    scores = [g.score for g in games]
    print(f"{args.checkpoint}: {len(games)} games recorded to {out}/, mean score {sum(scores) / len(scores):.1f}, "
          f"min {min(scores):.0f}, max {max(scores):.0f} ({'greedy' if args.greedy else 'sampled'} actions)")
    return 0


class _EvalBar:
    def __init__(self, total: int):
        self.total = total
        self.progress = None

    def __enter__(self):
        if sys.stdout.isatty():
            from rich.progress import Progress

            self.progress = Progress()
            self.progress.start()
            self.task = self.progress.add_task("games", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, p) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=p.done, description=f"games · last game scored {p.score:.0f}")


class _RecordBar:
    """One summary line per recorded game; on a terminal also a line for the game in progress."""

    def __init__(self, total: int):
        self.total = total
        self.progress = None

    def __enter__(self):
        if sys.stdout.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"game 1/{self.total}")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, p) -> None:
        if p.finished is None:
            if self.progress is not None:
                self.progress.update(self.task, description=f"game {p.game}/{p.games}: step {p.steps:,}, "
                                                            f"score {p.score:.0f}")
            return
        g = p.finished
        line = (f"game {g.game}/{p.games}: score {g.score:.0f}, {g.length:,} steps "
                f"({g.frames:,} frames, {g.seconds:.0f} s of video) -> {g.path}")
        if self.progress is not None:
            self.progress.console.print(line)
            self.progress.update(self.task, description=f"game {min(g.game + 1, p.games)}/{p.games}")
        else:
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
