"""`a2c-tui` entry point: the app by default, `train --headless`, `eval`, `record`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = "configs/space_invaders.toml"


class UsageError(Exception):
    """Bad command-line input (one line, exit code 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"TOML preset (default: {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set algo.lr=3e-4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_OR_CKPT",
                   help="continue a run: its directory (its newest valid checkpoint) or a checkpoint file; "
                        "--set may then change only threads, device and checkpoint cadence")


def build_parser() -> Parser:
    parser = Parser(prog="a2c-tui", description="Train A2C agents on Atari games, in a terminal app or headless.")
    _add_run_options(parser)
    parser.add_argument("--paused", action="store_true", help="open the app with training paused")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    train = sub.add_parser("train", help="train (the app, or --headless for scripts and nohup)")
    _add_run_options(train)
    train.add_argument("--headless", action="store_true", help="no app: progress bar on a TTY, log lines otherwise")
    train.add_argument("--paused", action="store_true", help="open the app with training paused")

    ev = sub.add_parser("eval", help="play whole games with a checkpoint and report raw scores")
    ev.add_argument("checkpoint", help="a .pt file or a run directory (uses latest.pt)")
    ev.add_argument("--episodes", type=int, default=100, help="games to play (default 100)")
    ev.add_argument("--envs", type=int, default=8, help="games played in parallel (default 8)")
    ev.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    ev.add_argument("--seed", type=int, default=12345)
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


def main(argv: list[str] | None = None) -> int:
    from a2c_tui.checkpoints import CheckpointError
    from a2c_tui.config import ConfigError

    try:
        args = build_parser().parse_args(argv)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "record":
            return cmd_record(args)
        config, resume_overrides = load_config(args)
        if args.command == "train" and args.headless:
            return cmd_train_headless(args, config, resume_overrides)
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise UsageError("torchrun starts ranks of a headless run: use `train --headless`")
        from a2c_tui.tui.app import run_app

        return run_app(config, resume=args.resume, paused=args.paused, resume_overrides=resume_overrides)
    except (UsageError, ConfigError, CheckpointError) as e:
        if os.environ.get("RANK", "0") != "0":
            return 2  # rank 0 has the same error and says it (every rank got the same input)
        return _fail(str(e))


def cmd_train_headless(args, config, resume_overrides=None) -> int:
    from a2c_tui import distributed

    try:
        return _train_headless(args, config, resume_overrides)
    except distributed.RankFailure as e:
        return _fail(str(e), code=1)
    finally:
        distributed.leave()


def _train_headless(args, config, resume_overrides) -> int:
    from a2c_tui.trainer import State, Trainer

    trainer = Trainer(config, resume=args.resume, resume_overrides=resume_overrides)
    if not trainer.is_rank0:
        return _follow(trainer)
    report = _Reporter(trainer)
    trainer.subscribe(report)

    def on_signal(signum, _frame):
        # Queued and run between updates on this (the training) thread: checkpoint, then exit.
        # The stop goes first: nothing that happens to the terminal may keep it from being queued.
        trainer.stop()
        with contextlib.suppress(RuntimeError):  # the signal interrupted a print: it cannot be re-entered
            report.line(f"received {signal.Signals(signum).name}: saving a checkpoint and stopping")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with survive_lost_terminal():
        print(f"run directory: {trainer.run_dir}", flush=True)
        if trainer.world_size > 1:
            print(f"{trainer.world_size} ranks x {trainer.config.env.num_envs} envs = {trainer.total_envs} envs",
                  flush=True)
    with report:
        state = trainer.run()
    with survive_lost_terminal():
        print(f"{state.value.lower()} at step {trainer.step:,}; last-100 raw score "
              f"{trainer.scores.mean_score():.1f} over {trainer.scores.games} games; run directory {trainer.run_dir}",
              flush=True)
    return 1 if state == State.ERROR else 0


def _follow(trainer) -> int:
    """A rank other than 0: it trains as rank 0 says and speaks only of its own errors."""
    from a2c_tui.trainer import Event, State

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


class _Reporter:
    """Rich progress bar on a terminal; otherwise a plain log line every 10 seconds."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.tty = sys.stdout.isatty()
        self.progress = None
        self._last_line = 0.0

    def __enter__(self):
        if self.tty:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                                     TextColumn("{task.fields[sps]:,.0f} steps/s"), TimeRemainingColumn(),
                                     TextColumn("score {task.fields[score]}"))
            self.progress.start()
            name = self.trainer.config.run.name
            if self.trainer.world_size > 1:
                name += f" ({self.trainer.total_envs} envs on {self.trainer.world_size} ranks)"
            self.task = self.progress.add_task(name, total=self.trainer.config.run.total_steps,
                                               completed=self.trainer.step, sps=0.0, score="-")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            with survive_lost_terminal():
                self.progress.stop()

    def line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with survive_lost_terminal():
            if self.progress is not None:
                self.progress.console.print(f"{stamp} {text}")
            else:
                print(f"{stamp} {text}", flush=True)

    def __call__(self, item) -> None:
        from a2c_tui.trainer import Event

        if isinstance(item, Event):
            self.line(f"{item.level}: {item.text}" if item.level != "info" else item.text)
            return
        score = f"{item.score:.1f}" if math.isfinite(item.score) else "-"
        if self.progress is not None:
            self.progress.update(self.task, completed=item.step, sps=item.steps_per_sec, score=score)
        elif time.monotonic() - self._last_line >= 10 or item.step >= item.total_steps:
            self._last_line = time.monotonic()
            m = item.metrics
            extra = "".join(f" {k} {m[k]:.3g}" for k in ("entropy", "r2", "grad_norm") if isinstance(m.get(k), float))
            self.line(f"step {item.step:,}/{item.total_steps:,} ({item.step / item.total_steps:.1%}) "
                      f"{item.steps_per_sec:,.0f} steps/s score {score} games {item.games}{extra}")


def cmd_eval(args) -> int:
    import torch

    from a2c_tui import checkpoints as ckpt
    from a2c_tui.evaluate import evaluate
    from a2c_tui.trainer import config_from_payload, resolve_device, resolve_resume

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} is not allowed: must be >= 1")
    if args.envs < 1:
        raise UsageError(f"--envs {args.envs} is not allowed: must be >= 1")
    _, path = resolve_resume(args.checkpoint)
    payload = ckpt.load(path)
    config = config_from_payload(payload, path)
    from a2c_tui.envs import make_envs

    probe = make_envs(config.env.id, 1, life_loss=False)
    try:
        ckpt.check_compatible(payload, config.env.id, probe.n_actions, probe.observation_shape, path)
    finally:
        probe.close()
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
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if path.parent.joinpath("index.json").exists():
        ckpt.record_evaluation(path, result)
    return 0


def cmd_record(args) -> int:
    import torch

    from a2c_tui.record import record_checkpoint
    from a2c_tui.trainer import resolve_device

    if args.games < 1:
        raise UsageError(f"--games {args.games} is not allowed: must be >= 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is not allowed: it is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {args.out} is not allowed: {e.strerror or e}") from None
    device = resolve_device(args.device)
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
            self.progress.update(self.task, completed=p.done, description=f"games (last {p.score:.0f})")


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
