"""What an evaluation beside training (run.eval_every) costs the training, in one process:
windows with one evaluation in flight (from start to end) alternate with windows as long
without, both training configs/space_invaders.toml the whole time.

    .venv/bin/python bench/eval_cost.py [--pairs 3] [--episodes 10] [--checkpoint step_N.pt]

Per evaluation: the training steps it cost (steps/s without - steps/s with, times its
duration) and its agent steps (whole games: longer as the agent learns). The cost at a
cadence is those steps / eval_every; an agent with longer games costs in proportion.

On a machine others share, the evaluation's thread takes part of its CPU from the other
processes, so the steps/s difference understates what it costs on a quiet machine. The
CPU-time figure does not depend on that: the process's CPU seconds in a window with the
evaluation, less its training steps at the CPU seconds per step of the window without, is
the evaluation's CPU time; on a quiet machine whose cores training fills, that CPU time is
taken from training.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import threading
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

from a2c_tui import config as cfg
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run.evaluate import PeriodicEvaluation
from a2c_tui.run.trainer import Trainer


def train_for(trainer: Trainer, until) -> tuple[int, float, float]:
    """(steps, seconds, process CPU seconds)"""
    step, start, cpu = trainer.step, time.perf_counter(), time.process_time()
    while not until(time.perf_counter() - start):
        trainer.train_update()
    return trainer.step - step, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--checkpoint", help="evaluate these weights (a trained agent plays longer games)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = cfg.load(args.config, [f"run.out_dir={tmp!r}", "run.eval_every=1",
                                        f"run.eval_episodes={args.episodes}", "run.device='cpu'"])
        trainer = Trainer(config, tensorboard=False)
        try:
            if args.checkpoint:
                trainer._restore(ckpt.load(args.checkpoint))
            train_for(trainer, lambda seconds: seconds > 5)  # warm-up
            ended = threading.Event()
            evaluations = PeriodicEvaluation(config, trainer.step, lambda job: ended.set())
            rows = []
            for _ in range(args.pairs):
                ended.clear()
                job = evaluations.start(trainer.step, trainer.updates, copy.deepcopy(trainer._payload()))
                steps_on, seconds, cpu_on = train_for(trainer, lambda _: ended.is_set())
                steps_off, seconds_off, cpu_off = train_for(trainer, lambda s: s >= seconds)
                on, off = steps_on / seconds, steps_off / seconds_off
                eval_steps = sum(job.result["lengths"])
                eval_cpu = cpu_on - steps_on * cpu_off / steps_off
                cpu_cost = eval_cpu * steps_off / cpu_off  # training steps that CPU time pays for
                rows.append((on, off, seconds, (off - on) * seconds, eval_steps, cpu_cost))
                print(f"with an evaluation {on:7.0f} steps/s | without {off:7.0f} steps/s | evaluation {seconds:5.1f} s, "
                      f"{eval_steps:,} agent steps ({job.result['mean_length']:.0f} per game) | cost "
                      f"{(off - on) * seconds:,.0f} training steps | CPU {eval_cpu:.1f} s = {cpu_cost:,.0f} training "
                      f"steps", flush=True)
            evaluations.cancel()
        finally:
            trainer.metrics.close()
            trainer.envs.close()
    for name, column in (("measured steps/s", 3), ("CPU time (quiet machine)", 5)):
        lost = statistics.median(r[column] for r in rows)
        per_eval_step = statistics.median(r[column] / r[4] for r in rows)
        print(f"{name}: one {args.episodes}-game evaluation costs {lost:,.0f} training steps "
              f"({per_eval_step:.2f} per agent step it plays)")
        for every in (100_000, 250_000, 500_000):
            print(f"  eval_every {every:,}: {lost / every:.1%} of training; with 2,000-step games "
                  f"{per_eval_step * 2000 * args.episodes / every:.1%}")


if __name__ == "__main__":
    main()
