"""The measurements bench/gpu.sh makes, one kind per call, each figure appended to a JSON-lines
file as soon as it is measured (a run cut short by the wall-clock guard keeps what it had):

    python bench/gpu_bench.py env  --out R.jsonl --sizes 16 32 64 128 --seconds 5
    python bench/gpu_bench.py net  --out R.jsonl --sizes 16 32 64 128 --seconds 4 [--set run.precision=bf16]
    python bench/gpu_bench.py loop --out R.jsonl --name overlap-off --seconds 8 [--set env.overlap=off]
    python bench/gpu_bench.py summary --out R.jsonl     # a Markdown table of everything in R.jsonl

env: the emulators alone (random actions, ALE's pool on every core). net: the trainer's own
loop (acting, targets, update: everything but emulation) with the envs replaced by one that
returns fixed frames at once, for num_envs of each size. loop: the trainer on the config with
real envs. Figures are agent steps/s after a warm-up that lasts until `--warmup` seconds and
5 updates have passed (compiling happens there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import config as cfg
from a2c_tui.learn.envs import EnvGroups, Step
from a2c_tui.run import trainer as trainer_module
from a2c_tui.run.trainer import Trainer, compile_parts, resolve_device
from throughput import bench_env_only, bench_network_only, clocked


def append(out: str, record: dict) -> None:
    record = {"time": time.time(), **record}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


class FixedFrames:
    """Envs that cost nothing: the same frames every step, no reward, no end."""

    def __init__(self, num_envs: int, observation_shape: tuple[int, ...], n_actions: int):
        self.num_envs, self.observation_shape, self.n_actions = num_envs, observation_shape, n_actions
        frames = np.random.default_rng(0).integers(0, 256, (num_envs, *observation_shape), dtype=np.uint8)
        zeros = np.zeros(num_envs, dtype=bool)
        self._step = Step(frames, np.zeros(num_envs, dtype=np.float32), zeros, zeros, None, [])

    def reset(self) -> np.ndarray:
        return self._step.obs

    def step(self, actions: np.ndarray) -> Step:
        return self._step

    def close(self) -> None:
        pass


def measure_trainer(trainer: Trainer, seconds: float, warmup: float) -> dict:
    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()

    started, updates = time.perf_counter(), 0
    while updates < 5 or time.perf_counter() - started < warmup:
        trainer.train_update()
        updates += 1
    sync()
    warm = time.perf_counter() - started
    spent = time_the_parts(trainer)
    step0, updates0, start = trainer.step, trainer.updates, time.perf_counter()
    while time.perf_counter() - start < seconds:
        trainer.train_update()
    sync()
    elapsed = time.perf_counter() - start
    per_update = {f"{k}_ms": round(1000 * v / (trainer.updates - updates0), 3) for k, v in spent.items()}
    per_update["other_ms"] = round(1000 * elapsed / (trainer.updates - updates0) - sum(per_update.values()), 3)
    return {"steps_per_sec": (trainer.step - step0) / elapsed, "updates": trainer.updates, "warmup_s": round(warm, 1),
            "seconds": round(elapsed, 1), **per_update}


def time_the_parts(trainer: Trainer) -> dict[str, float]:
    """Seconds spent acting (it waits for the GPU: the actions come back), waiting for the
    emulators (recv; with env groups only what acting for the other group did not hide) and
    in the update (it waits for the GPU too); the rest is targets, copies and Python."""
    spent = {"act": 0.0, "env_wait": 0.0, "update": 0.0, "env_send": 0.0}
    trainer._act = clocked(spent, "act", trainer._act)
    envs = trainer.envs
    for target, name in ([(g, "recv") for g in envs.groups] if isinstance(envs, EnvGroups) else [(envs, "step")]):
        setattr(target, name, clocked(spent, "env_wait", getattr(target, name)))
    for group in envs.groups if isinstance(envs, EnvGroups) else []:
        group.send = clocked(spent, "env_send", group.send)  # should return at once: the emulators run in ALE's threads
    trainer_module.update = clocked(spent, "update", trainer_module.update)
    return spent


def describe(trainer: Trainer) -> dict:
    envs = trainer.envs
    return {"device": trainer.device.type, "num_envs": trainer.config.env.num_envs,
            "env_groups": len(envs.groups) if isinstance(envs, EnvGroups) else 1,
            "compile": compile_parts(trainer.config, trainer.device),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if trainer.device.type == "cuda" else False,
            "precision": getattr(trainer.config.run, "precision", "fp32"), "torch_threads": torch.get_num_threads()}


def new_trainer(args, *overrides: str) -> tuple[Trainer, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory()
    config = cfg.load(args.config, [*args.overrides, *overrides, f"run.out_dir={tmp.name}"])
    return Trainer(config, tensorboard=False), tmp


def close(trainer: Trainer, tmp: tempfile.TemporaryDirectory) -> None:
    trainer.metrics.close()
    trainer.envs.close()
    tmp.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("env", "net", "loop", "summary"))
    parser.add_argument("--out", required=True, help="JSON-lines file the figures are appended to")
    parser.add_argument("--config", default="configs/space_invaders_gpu.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--sizes", type=int, nargs="*", default=[16, 32, 64, 128], help="num_envs (env, net)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--name", default="", help="the variant's name")
    parser.add_argument("--bare", action="store_true", help="net: also bench/throughput.py's network-only figure "
                                                             "(act + update alone, fp32: the figure BENCHMARKS.md had)")
    args = parser.parse_args()
    if args.what == "summary":
        print(summary(args.out))
        return 0
    try:
        measure(args)
    except Exception as e:  # noqa: BLE001 - recorded: the next measurement still runs
        append(args.out, {"kind": args.what, "name": args.name, "overrides": args.overrides,
                          "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"})
        return 1
    return 0


def measure(args: argparse.Namespace) -> None:
    config = cfg.load(args.config, args.overrides)
    if args.what == "env":
        for size in args.sizes:
            rate = bench_env_only(config.replace(**{"env.num_envs": size, "env.num_threads": 0}), args.seconds)
            append(args.out, {"kind": "env", "num_envs": size, "threads": os.cpu_count(), "steps_per_sec": rate})
    elif args.what == "net":
        for size in args.sizes:
            trainer, tmp = new_trainer(args, f"env.num_envs={size}", "env.overlap=off")
            try:
                trainer.envs.close()
                trainer.envs = FixedFrames(size, trainer.envs.observation_shape, trainer.envs.n_actions)
                trainer.obs = trainer.envs.reset()
                append(args.out, {"kind": "net", "name": args.name, **describe(trainer), "env_groups": 0,
                                  **measure_trainer(trainer, args.seconds, args.warmup)})
            finally:
                close(trainer, tmp)
            if args.bare:
                sized = config.replace(**{"env.num_envs": size})
                append(args.out, {"kind": "net-bare", "num_envs": size, "precision": "fp32",
                                  "steps_per_sec": bench_network_only(sized, args.seconds, resolve_device(sized.run.device))})
    else:
        trainer, tmp = new_trainer(args)
        try:
            append(args.out, {"kind": "loop", "name": args.name, "overrides": args.overrides, **describe(trainer),
                              **measure_trainer(trainer, args.seconds, args.warmup)})
        finally:
            close(trainer, tmp)


def summary(path: str) -> str:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] \
        if Path(path).exists() else []
    lines = ["| kind | variant | envs | groups | compile | tf32 | precision | steps/s | warm-up s | ms per update: "
             "act / env wait / update / env send / other |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r.get('name', '')} | | | | | | failed: {r['error'][:160]} | | |")
        elif r.get("kind") in ("env", "net", "net-bare", "loop"):
            lines.append(f"| {r['kind']} | {r.get('name', '')} | {r.get('num_envs', '')} | {r.get('env_groups', '')} | "
                         f"{r.get('compile', '')} | {r.get('tf32', '')} | {r.get('precision', '')} | "
                         f"{r['steps_per_sec']:,.0f} | {r.get('warmup_s', '')} | "
                         f"{' / '.join(str(r[k]) for k in ('act_ms', 'env_wait_ms', 'update_ms', 'env_send_ms', 'other_ms') if k in r)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
