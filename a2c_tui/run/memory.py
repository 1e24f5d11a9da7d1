"""Refuse a run or an evaluation that this machine cannot hold, before allocating it.

Sizes that are each within their limit can together need far more memory than there is
(n_steps=10000 with num_envs=256 is 2.56M transitions; 5000 evaluation envs are 5000
emulators), and then the allocation fails deep inside torch or ALE. The estimate is the
sum of a few per-item costs measured on the CPU (torch 2.13, ale-py 0.12; the peak RSS
rise, rounded up):

- an Atari env (ALE emulator, frame buffers, stack): 1.7 MB;
- an Atari transition in the rollout: 28 KB stored (4x84x84 uint8) plus ~330 KB at the
  update's peak (the float input, the CNN's activations and their gradients);
- an Atari observation at an evaluation's forward pass: ~220 KB;
- vector envs (gymnasium) are small: 64 KiB per env and 4 KiB per transition cover
  observations of a few hundred numbers and the 64-64 MLP.

Available memory is MemAvailable from /proc/meminfo (else the physical memory), and at
most what a cgroup v2 memory limit leaves. The estimate is for the CPU; on a GPU the
rollout and activations live in GPU memory, so it errs on the safe side only there.
"""

from __future__ import annotations

import os
from pathlib import Path

from a2c_tui.config import Config, ConfigError

ATARI_ENV = 2 << 20
ATARI_TRANSITION = 360 << 10
ATARI_FORWARD = 224 << 10
VECTOR_ENV = 64 << 10
VECTOR_TRANSITION = 4 << 10


def available_bytes() -> int:
    available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def _check(needed: int, what: str, hint: str) -> None:
    available = available_bytes()
    if needed > available:
        raise ConfigError(f"{what} needs about {needed / 2**30:,.1f} GiB of memory and this machine has "
                          f"{available / 2**30:,.1f} GiB available; {hint}")


def check_run(config: Config) -> None:
    from a2c_tui.learn.envs import is_atari

    atari = is_atari(config.env.id)
    envs, transitions = config.env.num_envs, config.env.num_envs * config.algo.n_steps
    needed = envs * (ATARI_ENV if atari else VECTOR_ENV) + transitions * (ATARI_TRANSITION if atari else VECTOR_TRANSITION)
    _check(needed, f"a run of env.num_envs {envs} x algo.n_steps {config.algo.n_steps} = {transitions:,} transitions",
           "lower env.num_envs or algo.n_steps")


def check_evaluation(env_id: str, num_envs: int) -> None:
    from a2c_tui.learn.envs import is_atari

    needed = num_envs * (ATARI_ENV + ATARI_FORWARD if is_atari(env_id) else VECTOR_ENV + VECTOR_TRANSITION)
    _check(needed, f"an evaluation on {num_envs:,} envs", "use fewer envs")
