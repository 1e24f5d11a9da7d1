"""The training loop as an object another thread can drive.

Commands (pause, resume, stop, set_hparams, save, load, weights) are queued and run on
the training thread between updates, so the model is only ever touched by that thread.
Progress flows out as immutable `Snapshot`s and `Event`s to subscribers. No UI imports.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch

from a2c_tui import files
from a2c_tui.config import LIVE_KEYS, Config, ConfigError, check_resume_overrides, check_value, from_dict, to_toml
from a2c_tui.learn import distributed
from a2c_tui.learn.a2c import (NonFiniteError, WeightCheck, forward_losses, make_optimizer, match_layouts,
                                replayed_losses, scheduled_lr, update)
from a2c_tui.learn.envs import EnvGroups, Step, StepLater, is_atari, make_envs
from a2c_tui.learn.model import ActorCritic, act, policy_step, resolve_precision
from a2c_tui.learn.rollout import Rollout, value_targets
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run import memory
from a2c_tui.run.evaluate import PeriodicEvaluation, PeriodicJob
from a2c_tui.run.metrics import NO_METRICS, MetricsSink, ScoreWindow, read_jsonl, score_line
from a2c_tui.run.protocol import Event, Snapshot, State


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' is not allowed: no CUDA device is available here")
    return torch.device(name)


def choose_threads(config: Config, device: torch.device, ranks_per_node: int = 1) -> int:
    """Torch intra-op threads. Env stepping and the CNN run one after the other, so on the
    CPU both may use every core (measured in BENCHMARKS.md) — shared among the ranks on
    the node; the small MLP of a vector env only loses to thread hand-offs, and on a GPU
    torch needs one."""
    if config.run.torch_threads:
        return config.run.torch_threads
    if device.type == "cuda" or not is_atari(config.env.id):
        return 1
    return max(1, (os.cpu_count() or 1) // ranks_per_node)


def use_tf32(config: Config, device: torch.device) -> bool:
    """TF32 (a 10-bit mantissa in fp32 matmuls and convolutions) on CUDA unless run.tf32 = "off";
    the CPU has no such mode and its numerics stay untouched."""
    return device.type == "cuda" and config.run.tf32 != "off"


def set_tf32(enabled: bool) -> None:
    # Process-wide flags. cuDNN's convolutions use TF32 by default already; matmuls do not.
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def compile_parts(config: Config, device: torch.device) -> str:
    """What run.compile compiles: "off", "act" (the acting forward) or "all" (and the update's
    forward and backward). "auto" is "off" everywhere until the GPU measurements say otherwise
    (BENCHMARKS.md): compiling costs tens of seconds at every start and needs a C compiler
    (and Triton on a GPU) on the box, and on the CPU it gained 5-10 %."""
    return "off" if config.run.compile == "auto" else config.run.compile


def env_groups(config: Config, device: torch.device, cores: int) -> int:
    """2 when the envs step in two groups that overlap with acting (env.overlap), else 1.
    "auto": on a GPU with >= 8 cores for the emulators, where the emulators and the network
    are different resources; on the CPU both phases already use every core (BENCHMARKS.md:
    overlap measured slower on 2 cores)."""
    setting, env = config.env.overlap, config.env
    if setting == "off":
        return 1
    possible = is_atari(env.id) and env.num_envs >= 2
    if setting == "on":
        if not possible:
            raise ConfigError("env.overlap = 'on' is not allowed here: it needs an Atari game and env.num_envs >= 2")
        return 2
    return 2 if possible and device.type == "cuda" and cores >= 8 else 1


def replays(model: ActorCritic, compile_parts: str) -> bool:
    """Whether acting keeps the convolutions' outputs and the update replays them instead of
    running the network forward on the batch again (ActorCritic.replay: same gradients, bit
    for bit on the CPU; BENCHMARKS.md: ~10 % faster training on 2 cores). Images only, and not
    with run.compile, whose compiled functions run the whole network."""
    return model.is_image and compile_parts == "off"


def compiled(fn: Callable, device: torch.device) -> Callable:
    """torch.compile(fn); on CUDA as CUDA graphs (small batches are bound by kernel launches)."""
    if device.type != "cuda":
        return torch.compile(fn, dynamic=False)
    graphed = torch.compile(fn, mode="reduce-overhead", dynamic=False)

    def step(*args: Any) -> Any:
        # A new step for the graphs: their previous outputs may be overwritten (each caller
        # has copied what it keeps before it calls again).
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(*args)
    return step


def new_run_dir(config: Config) -> Path:
    base = Path(config.run.out_dir).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{config.run.name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{config.run.name}-{stamp}-{suffix}"
    return run_dir


def resolve_resume(target: str | Path) -> tuple[Path, Path]:
    """A run directory (its newest valid checkpoint) or a checkpoint file -> (run_dir, checkpoint path).
    Every command that opens a run directory comes here: one whose files point outside it is refused."""
    target = Path(target)
    run_dir = target if target.is_dir() else target.parent
    ckpt.check_run_dir(run_dir)
    if target.is_dir():
        return target, ckpt.newest_valid(target) or target / "latest.pt"
    return run_dir, target


class Trainer:
    """A2C on a batch of envs. Drive it with start()/run() and the command methods.

    Started by torchrun with WORLD_SIZE > 1, it is one rank of a data-parallel run
    (distributed.py): every rank steps `env.num_envs` envs of its own; rank 0 (`is_rank0`)
    owns the run directory and takes the commands, which reach every rank at the same
    update boundary; the other ranks follow it and write no files."""

    def __init__(self, config: Config, run_dir: str | Path | None = None, resume: str | Path | None = None,
                 tensorboard: bool = True, resume_overrides: dict[str, Any] | None = None):
        """`resume` continues a run with its saved config; `resume_overrides` may change its
        config.RESUME_KEYS (threads, device, checkpoint and evaluation cadence), nothing else. On ranks other
        than 0 both are ignored: the config, weights and counters come from rank 0."""
        self.group = distributed.join()
        self.rank = self.group.rank if self.group is not None else 0
        self.world_size = self.group.world_size if self.group is not None else 1
        self.is_rank0 = self.rank == 0
        try:
            self._open(config, run_dir, resume, tensorboard, resume_overrides)
        except Exception as e:
            if self.group is not None and not isinstance(e, distributed.RankFailure):
                if self.is_rank0:  # the others wait for rank 0's next word: make it this error
                    self.group.share({"error": str(e), "kind": type(e).__name__})
                else:
                    self.group.note_failure(f"rank {self.rank} could not start: {type(e).__name__}: {e}")
            raise

    def _open(self, config: Config, run_dir: str | Path | None, resume: str | Path | None, tensorboard: bool,
              resume_overrides: dict[str, Any] | None) -> None:
        payload = None
        self._resume_note = ""
        if resume is not None and self.is_rank0:
            target = Path(resume)
            ckpt.check_run_dir(target if target.is_dir() else target.parent)  # nothing in it may point outside
            path, payload, skipped = ckpt.load_usable(resume)
            run_dir = path.parent
            # The run lives where it was found, whatever out_dir the checkpoint names (a new run
            # started from the app goes beside it).
            config = config_from_payload(payload, path).replace(**{"run.out_dir": str(run_dir.parent)})
            self._resume_note = f" from {path.name}{_skipped_note(skipped)}"
            if resume_overrides:
                config = config.replace(**check_resume_overrides(resume_overrides))
            files.check_writable(run_dir)
        if self.group is not None:
            config = from_dict(self._from_rank0(config.to_dict()))
        self.config = config
        memory.check_run(config)
        self.device = resolve_device(config.run.device)
        if self.group is not None:
            self.device = self.group.device(self.device)
        torch.set_num_threads(choose_threads(config, self.device, self.group.local_world_size if self.group else 1))
        if self.device.type == "cuda":
            set_tf32(use_tf32(config, self.device))
        torch.manual_seed(config.run.seed)
        np.random.seed(config.run.seed % 2**32)
        self.envs = self._make_envs(seed=config.run.seed)  # first: a game that fails to start leaves no run dir
        self._created_run_dir = False
        try:
            if payload is not None:
                ckpt.check_compatible(payload, config.env.id, self.envs.n_actions, self.envs.observation_shape, resume)
            self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
            self.precision = resolve_precision(config.run.precision, self.device,
                                               images=len(self.envs.observation_shape) == 3)
            self.model = ActorCritic(self.envs.observation_shape, self.envs.n_actions,
                                     bf16=self.precision == "bf16").to(self.device)
            parts = compile_parts(config, self.device)
            self._policy_step = compiled(policy_step, self.device) if parts in ("act", "all") else policy_step
            self._losses_fn = compiled(forward_losses, self.device) if parts == "all" else forward_losses
            self._replay = replays(self.model, parts)
            algo = config.algo
            self.optimizer = make_optimizer(algo.optimizer, self.model.parameters(), algo.lr, algo.rms_alpha,
                                            algo.rms_eps)
            self.hparams = {k: getattr(algo, k) for k in LIVE_KEYS}
            self.base_lr = algo.lr
            self.step = 0
            self.updates = 0
            self.elapsed = 0.0
            self.scores = ScoreWindow(100)
            self.best_score = -math.inf
            self.last_checkpoint_step = 0
            self.last_checkpoint: str | None = None  # the file holding last_checkpoint_step (None: there is none)
            self._failed_checkpoint_step = 0  # a periodic save that failed (disk full) is retried an interval later
            self._metrics_failing = False  # said once while metrics.jsonl cannot be written, not at every record
            if payload is not None:
                self._restore(payload, path.name)
            if self.is_rank0:
                _check_room_for_a_checkpoint(self.run_dir, self.model)
            if self.is_rank0 and not self.run_dir.exists():
                try:
                    self.run_dir.mkdir(parents=True)
                except OSError as e:
                    raise ConfigError(f"run.out_dir = {config.run.out_dir!r} is not allowed: cannot create "
                                      f"{self.run_dir} ({e.strerror or e})") from None
                self._created_run_dir = True
            if payload is not None:
                self._truncate_metrics()
                ckpt.remove_stale_temp(self.run_dir)
            if self.is_rank0:
                ckpt.atomic_write_bytes(self.run_dir / "config.toml", to_toml(config).encode())
            self._unsent_games: list[tuple[float, int]] | None = None  # games this rank finished since the last exchange
            self._job_lost = False
            self._loads = self._loads_shared = 0  # loads on rank 0; every rank takes its state when they differ
            if self.group is not None:
                self._unsent_games = []
                self._take_rank0_state()
            obs_dtype = torch.uint8 if self.model.is_image else torch.float32
            self.rollout = Rollout(algo.n_steps, config.env.num_envs, self.envs.observation_shape, obs_dtype,
                                   self.device, self.model.kept_shapes if self._replay else (),
                                   torch.bfloat16 if self.precision == "bf16" else torch.float32)
            if self._replay:
                batch = algo.n_steps * config.env.num_envs
                self._losses_fn = replayed_losses([k.reshape(batch, *k.shape[2:]) for k in self.rollout.kept])
            # Observations reach the GPU from pinned memory, asynchronously. One buffer is enough:
            # each copy out of it is finished before it is filled again (acting reads the actions
            # back after the forward that follows the copy; the update reads its numbers).
            pin = self.device.type == "cuda"
            self._staging = torch.empty((config.env.num_envs, *self.envs.observation_shape), dtype=obs_dtype,
                                        pin_memory=True) if pin else None
            # On CUDA the weights after a step are checked at the next read the loop makes anyway
            # (the next actions, a checkpoint, an evaluation, a command): one read per update.
            self._weight_check = WeightCheck(self.device) if pin else None
            self.obs = self.envs.reset()
            self.metrics = MetricsSink(self.run_dir, tensorboard=tensorboard) if self.is_rank0 else NO_METRICS
        except BaseException as e:
            self.envs.close()  # else ALE's thread pool lives on until garbage collection
            self._remove_new_run_dir()
            if isinstance(e, OSError):  # a full or read-only disk: one line, and no half-made run directory
                raise ConfigError(f"cannot write the run directory {self.run_dir} ({e.strerror or e})") from None
            raise
        self._pending_stats: list[dict[str, float]] = []
        self._last_record: Mapping[str, Any] = MappingProxyType({})
        self._last_evaluation: Mapping[str, Any] = MappingProxyType({})  # the latest evaluation beside training
        self.evaluations = (PeriodicEvaluation(config, self.step, self._evaluation_ended)
                            if self.is_rank0 and config.run.eval_every else None)
        self._rate = (time.perf_counter(), self.step, 0.0)  # for steps/s between records

        self._lock = threading.Condition()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._state = State.PAUSED
        self._closing = False
        self._thread: threading.Thread | None = None
        self._looping = False  # commands are queued for the loop only while it runs
        self._subscribers: list[Callable[[Snapshot | Event], None]] = []
        self._last_publish = 0.0
        self.publish_interval = 0.25  # seconds between snapshots while running

    # ----- construction helpers -------------------------------------------------------
    def _make_envs(self, seed: int):
        """Env i of rank r gets seed + r * num_envs + i: the seeds of one process with all ranks' envs."""
        env = self.config.env
        cores = self.group.cores_per_rank if self.group is not None else 0
        groups = env_groups(self.config, self.device, cores or os.cpu_count() or 1)
        return make_envs(env.id, env.num_envs, seed=seed + self.rank * env.num_envs,
                         num_threads=env.num_threads or cores, noop_max=env.noop_max,
                         max_episode_frames=env.max_episode_frames, clip_rewards=env.clip_rewards, groups=groups)

    def _from_rank0(self, value: Any) -> Any:
        """rank 0's `value` on every rank; rank 0's failure (shared by __init__) raised on every rank."""
        shared = self.group.share({"value": value})
        if "error" in shared:
            error = {"ConfigError": ConfigError, "CheckpointError": ckpt.CheckpointError}.get(shared["kind"],
                                                                                             distributed.RankFailure)
            raise error(shared["error"])
        return shared["value"]

    def _take_rank0_state(self) -> None:
        """Every rank from rank 0's weights, optimizer state and counters (at the start and after
        a load): the same state everywhere, then each rank's own games and random stream."""
        state = self._from_rank0({"payload": self._payload(), "run_dir": str(self.run_dir)} if self.is_rank0 else None)
        if self.is_rank0:
            return
        self.run_dir = Path(state["run_dir"])
        # A fresh run's envs already have their seeds (seed + 0): starting them again costs seconds.
        self._restore(state["payload"], new_games=int(state["payload"]["updates"]) > 0)
        seed = self.config.run.seed + 1_000_003 * self.rank + self.updates
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)

    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "env_id": self.config.env.id,
            "n_actions": self.envs.n_actions,
            "obs_shape": list(self.envs.observation_shape),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "step": self.step,
            "updates": self.updates,
            "elapsed": self.elapsed,
            "base_lr": self.base_lr,
            "hparams": dict(self.hparams),
            "scores": self.scores.state(),
            "score": _finite_or_none(self.scores.mean_score()),
            "best_score": _finite_or_none(self.best_score),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
            "saved_at": time.time(),
        }

    def _restore(self, payload: dict[str, Any], name: str | None = None, new_games: bool = True) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            match_layouts(self.optimizer)
            self.step = int(payload["step"])
            self.updates = int(payload["updates"])
            self.elapsed = float(payload.get("elapsed", 0.0))
            self.base_lr = float(payload["base_lr"])
            self.hparams.update({k: float(v) for k, v in payload["hparams"].items() if k in LIVE_KEYS})
            self.scores = ScoreWindow.from_state(payload["scores"])
            best = payload.get("best_score")
            self.best_score = -math.inf if best is None else float(best)
            torch.set_rng_state(payload["rng"]["torch"])
            _set_numpy_rng_state(payload["rng"]["numpy"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise ckpt.CheckpointError(f"checkpoint does not match this model: {str(e).splitlines()[0][:160]}") from None
        self.last_checkpoint_step = self._failed_checkpoint_step = self.step
        self.last_checkpoint = name
        if new_games:
            # The games in progress cannot be restored; new seeds keep them from repeating.
            self.envs.close()
            self.envs = self._make_envs(seed=self.config.run.seed + self.updates)

    def _remove_new_run_dir(self) -> None:
        """A run directory this trainer made and never trained in holds nothing worth keeping."""
        if self._created_run_dir and self.updates == 0:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._created_run_dir = False

    def _truncate_metrics(self) -> None:
        """Drop records written after the checkpoint we resume from (a crash left them)."""
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= self.step]
            ckpt.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # ----- the algorithm --------------------------------------------------------------
    def collect(self) -> None:
        """n_steps x num_envs transitions into self.rollout; ends with v(s_T) in last_values.
        With env groups (env.overlap) group g steps while the network acts for the next group;
        every env still fills its own column in order, and the model is the same throughout."""
        rollout = self.rollout
        self._acting = self._stepping = 0.0  # seconds in the network / waiting for the envs (recv)
        if isinstance(self.envs, EnvGroups):
            groups = list(zip(self.envs.groups, self.envs.slices))
        else:
            groups = [(StepLater(self.envs), slice(None))]
        for t in range(rollout.n_steps):
            for envs, part in groups:
                if t > 0:
                    self._record(t - 1, part, self._recv(envs))
                envs.send(self._act(t, part))
        for envs, part in groups:
            self._record(rollout.n_steps - 1, part, self._recv(envs))
        started = time.perf_counter()
        with torch.inference_mode():
            obs = self._host_obs(slice(None)).to(self.device, non_blocking=True)
            self.last_values = self.model(obs)[1]
        self.phase_times = {"time_env": self._stepping, "time_act": self._acting + time.perf_counter() - started}

    def _recv(self, envs) -> Step:
        started = time.perf_counter()
        step = envs.recv()
        self._stepping += time.perf_counter() - started
        return step

    def _host_obs(self, part: slice) -> torch.Tensor:
        """The envs' current observations (rows `part`) as a CPU tensor: pinned on CUDA."""
        if self._staging is None:
            return torch.from_numpy(self.obs[part])
        staged = self._staging[part]
        staged.numpy()[...] = self.obs[part]
        return staged

    def _act(self, t: int, part: slice) -> np.ndarray:
        """Act on envs `part` at rollout step t; their actions for the env."""
        started = time.perf_counter()
        rollout = self.rollout
        obs_t = rollout.obs[t, part]
        obs_t.copy_(self._host_obs(part), non_blocking=True)
        keep = [kept[t, part] for kept in rollout.kept] if rollout.kept else None
        policy = act(self.model, obs_t, step=self._policy_step, keep=keep)
        if self._weight_check is not None:
            self._weight_check.settle()  # the last step's weights: the actions' read has waited for them
        rollout.actions[t, part].copy_(policy.action_tensor)
        rollout.values[t, part].copy_(policy.values)
        self._acting += time.perf_counter() - started  # on a GPU this includes the actions' sync (.cpu())
        return policy.actions

    def _record(self, t: int, part: slice, step: Step) -> None:
        """What envs `part` did at rollout step t: rewards, dones, games, next observations."""
        rollout, rewards = self.rollout, step.rewards
        if step.truncated.any():
            # A time limit is not a death: bootstrap from the final observation's value.
            rewards = rewards.copy()
            index = np.flatnonzero(step.truncated)
            final = torch.as_tensor(np.asarray(step.final_obs)[index], device=self.device)
            with torch.inference_mode():
                rewards[index] += self.hparams["gamma"] * self.model(final)[1].cpu().numpy()
        rollout.rewards[t, part].copy_(torch.from_numpy(rewards))
        rollout.dones[t, part].copy_(torch.from_numpy(step.dones))
        for _, score, length in step.finished:
            if self._unsent_games is None:
                self.scores.add(score, length)
            else:  # every rank's games reach the window at the next exchange
                self._unsent_games.append((score, length))
        if part == slice(None):
            self.obs = step.obs
        else:
            self.obs[part] = step.obs

    def train_update(self) -> dict[str, float]:
        """Collect one rollout and take one gradient step; returns that update's stats."""
        self.collect()
        collected = time.perf_counter()
        rollout, hp = self.rollout, self.hparams
        rewards = rollout.rewards.to(self.device, non_blocking=True)
        dones = rollout.dones.to(self.device, non_blocking=True)
        targets, _ = value_targets(rewards, dones, rollout.values, self.last_values, hp["gamma"],
                                   self.config.algo.gae_lambda)
        batch = rollout.n_steps * rollout.num_envs
        lr = scheduled_lr(self.base_lr, self.config.algo.lr_schedule, self.step, self.config.run.total_steps)
        stats = update(self.model, self.optimizer, rollout.obs.reshape(batch, *rollout.obs.shape[2:]),
                       rollout.actions.reshape(batch), targets.reshape(batch).clone(), lr,
                       hp["value_coef"], hp["entropy_coef"], hp["max_grad_norm"],
                       self.group.average_gradients if self.group is not None else None, self._losses_fn,
                       self._weight_check)
        self.step += batch * self.world_size  # the step counter and the lr schedule count every rank's envs
        self.updates += 1
        # targets, forward/backward and the optimizer; on a GPU this includes the stats' one sync
        self.phase_times["time_update"] = time.perf_counter() - collected
        return stats

    # ----- the loop -------------------------------------------------------------------
    def start(self, paused: bool = False) -> None:
        """Run the loop in a daemon thread (for the app)."""
        self._state = State.PAUSED if paused else State.RUNNING
        self._thread = threading.Thread(target=self._loop, name="trainer", daemon=True)
        self._thread.start()

    def run(self) -> State:
        """Run the loop in this thread until finished, stopped or failed (headless)."""
        with self._lock:
            if self._state == State.PAUSED:  # not STOPPED: a signal may have come first
                self._state = State.RUNNING
        self._loop(exit_when_idle=True)
        return self._state

    def discard(self) -> None:
        """Let go of a run that never took an update (stopped before it began): its envs, and
        the run directory if this trainer made it. A run that trained is left as it is."""
        self.metrics.close()
        self.envs.close()
        self._remove_new_run_dir()

    def _loop(self, exit_when_idle: bool = False) -> None:
        self._looping = True
        try:
            self._loop_body(exit_when_idle)
        except Exception as e:
            if self.group is None:
                raise
            self._end_job(e)
        finally:
            self._looping = False
            self._run_commands()  # whatever was queued meanwhile still gets its answer
            if self.evaluations is not None:
                self.evaluations.cancel()  # its envs are closed before the process ends (no nanobind leak)
            self.metrics.close()
            self.envs.close()

    def _loop_body(self, exit_when_idle: bool) -> None:
        self._event("info", f"run {self.run_dir.name} at step {self.step:,} of {self.config.run.total_steps:,} "
                            f"on {self.device.type} ({self.precision}){self._resume_note}")
        self._publish(force=True)
        while True:
            self._run_commands()
            with self._lock:
                closing = self._closing
                finished = (self.is_rank0 and not closing and self._state == State.RUNNING
                            and self.step >= self.config.run.total_steps)
                if finished:
                    self._state = State.FINISHED
                state = self._state
                closing = closing or (exit_when_idle and state != State.RUNNING)
            if self.group is not None:
                closing, state, finished = self._follow_rank0(closing, state, finished)
            if finished:
                self._finish()
            if closing:
                break
            if state != State.RUNNING:
                if self.is_rank0:  # the other ranks wait for it in the next exchange
                    with self._lock:
                        self._lock.wait(timeout=0.5)
                continue
            self._one_update()
        self._publish(force=True)

    def _follow_rank0(self, closing: bool, state: State, finished: bool) -> tuple[bool, State, bool]:
        """The update boundary of a run on several ranks: every rank gets rank 0's decision
        (close, state, live hparams, a load) and every rank's finished games. A stop asked of
        any rank (a signal) stops them all; rank 0 then saves."""
        states = list(State)
        header = [float(closing), float(states.index(state)), float(self._loads), self.base_lr,
                  *(self.hparams[k] for k in LIVE_KEYS)]
        capacity = self.config.algo.n_steps * self.config.env.num_envs
        headers, games = self.group.exchange(header, self._unsent_games, capacity)
        for score, length in games:
            self.scores.add(score, length)
        closing, new_state, loads, base_lr, *hparams = headers[0]
        new_state = states[int(new_state)]
        if not self.is_rank0:
            finished = new_state == State.FINISHED and self._state != State.FINISHED
            self.base_lr = base_lr
            self.hparams.update(zip(LIVE_KEYS, hparams))
            with self._lock:
                self._state = new_state
        if int(loads) != self._loads_shared:
            self._loads_shared = int(loads)
            self._take_rank0_state()
            if not self.is_rank0:
                self.obs = self.envs.reset()
        asked_to_stop = any(states[int(h[1])] == State.STOPPED for h in headers)
        if asked_to_stop and new_state not in (State.STOPPED, State.FINISHED):
            self._stop_now()
            new_state = State.STOPPED
        return bool(closing), new_state, finished

    def _end_job(self, error: Exception) -> None:
        """A run on several ranks cannot go on without one of them: say which, and keep what
        rank 0 has (the weights are every rank's, as of the last finished update)."""
        if isinstance(error, distributed.RankFailure):
            message = str(error)
        else:
            message = f"rank {self.rank} failed: {type(error).__name__}: {distributed._first_line(error)}"
            self.group.note_failure(message)
        with self._lock:
            self._state = State.ERROR
            self._job_lost = True  # a stop that comes after (torchrun's SIGTERM) must not hide the failure
        self._event("error", message)
        if self.is_rank0 and self.step != self.last_checkpoint_step:
            self._save_checkpoint(reason="a rank failed")
        self._publish(force=True)

    def _finish(self) -> None:
        if self.step != self.last_checkpoint_step:
            self._save_checkpoint(reason="final")
        self._event("info", f"finished {self.step:,} steps; {score_line(self.scores)}")
        self._publish(force=True)

    def _one_update(self) -> None:
        started = time.perf_counter()
        try:
            stats = self.train_update()
        except NonFiniteError as e:
            self._fail(f"{e}; training paused — load the last good checkpoint, then resume")
            return
        except Exception as e:  # noqa: BLE001 - any failure must reach the user, not kill the thread
            if self.group is not None:
                raise  # the other ranks cannot go on without this one: _loop ends the job
            self._fail(f"training failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return
        self.elapsed += time.perf_counter() - started
        self._pending_stats.append({**stats, **self.phase_times})
        if self.updates % self.config.run.log_every == 0:
            try:
                self._write_record()
            except OSError as e:  # a full disk loses records, not the run
                if not self._metrics_failing:
                    self._event("error", f"metrics not written ({e.strerror or e}); training goes on")
                self._metrics_failing = True
            else:
                self._metrics_failing = False
        since = self.step - max(self.last_checkpoint_step, self._failed_checkpoint_step)
        if since >= self.config.run.checkpoint_every and self._save_checkpoint(reason="periodic") is None:
            self._failed_checkpoint_step = self.step
        # A pause asked for during this update holds new evaluations back too (one due now
        # starts after the resume, at the next update)
        if self.evaluations is not None and self._state == State.RUNNING and self.evaluations.due(self.step):
            self._start_evaluation()
        self._publish()

    def _write_record(self) -> None:
        now = time.perf_counter()
        then, step_then, _ = self._rate
        steps_per_sec = (self.step - step_then) / max(now - then, 1e-9)
        self._rate = (now, self.step, steps_per_sec)
        keys = self._pending_stats[0].keys()
        record: dict[str, Any] = {"step": self.step, "updates": self.updates, "time": time.time()}
        record.update({k: float(np.nanmean([s[k] for s in self._pending_stats])) for k in keys})
        record.update(score=self.scores.mean_score(), game_length=self.scores.mean_length(),
                      games=self.scores.games, steps_per_sec=steps_per_sec, **{
                          f"hp_{k}": v for k, v in self.hparams.items() if k != "lr"})
        record.update(device_usage(self.device))
        self._pending_stats.clear()
        self._last_record = MappingProxyType(record)
        self.metrics.write(record)

    # ----- evaluations beside training (rank 0) -----------------------------------------
    def _start_evaluation(self) -> None:
        if not self._weights_checked():
            return
        running = self.evaluations.job
        if self.evaluations.busy:
            self.evaluations.reset(self.step)
            self._event("info", f"evaluation at step {self.step:,} skipped: the one of {running.step:,} still runs")
            return
        # A copy: on the CPU the payload's tensors are the live weights, which the next update changes.
        self.evaluations.start(self.step, self.updates, copy.deepcopy(self._payload()))
        self._event("info", f"evaluating step {self.step:,} beside training ({self.evaluations.episodes} games)")

    def _evaluation_ended(self, job: PeriodicJob) -> None:
        """On the evaluation's thread: the record is written between updates, as every record."""
        self._submit(lambda: self._record_evaluation(job))

    def _record_evaluation(self, job: PeriodicJob) -> None:
        if job.cancelled:
            self._event("info", f"evaluation of step {job.step:,} cancelled")
            return
        if job.result is None:
            self._event("error", f"evaluation of step {job.step:,} failed: {job.error}; training goes on")
            return
        result = job.result
        record = {"step": job.step, "updates": job.updates, "time": time.time(), "eval_score": result["mean"],
                  "eval_score_std": result["std"], "eval_games": result["episodes"],
                  "eval_game_length": result["mean_length"], "eval_seconds": job.seconds}
        self._last_evaluation = MappingProxyType(record)
        try:
            self.metrics.write(record, scalars={"eval/score": result["mean"], "eval/score_std": result["std"]})
        except OSError as e:
            self._event("error", f"evaluation record not written ({e.strerror or e}); training goes on")
        best = self._keep_if_best(job)
        self._event("info", f"evaluation of step {job.step:,}: {result['mean']:.1f} ± {result['std']:.1f} over "
                            f"{result['episodes']} games{' — new best.pt' if best else ''}")
        self._publish(force=True)

    def _keep_if_best(self, job: PeriodicJob) -> bool:
        """best.pt follows the evaluations once there are any: the evaluated state becomes
        step_<N>.pt (unless it is one already) with its result beside it."""
        index, mean = ckpt.read_index(self.run_dir), job.result["mean"]
        if index.get("best_by") == "eval" and mean <= index.get("best_value", -math.inf):
            return False
        path = self.run_dir / f"step_{job.step}.pt"
        try:
            if not path.exists():
                ckpt.save(path, job.payload)
                ckpt.update_index(self.run_dir, {"files": {path.name: {"step": job.step, "score": job.payload["score"],
                                                                        "time": time.time()}}})
            saved = ckpt.record_evaluation(path, {**job.result, "source": path.name, "step": job.step})
        except (OSError, ckpt.CheckpointError) as e:
            self._event("error", f"best.pt not updated: {path.name} not written ({getattr(e, 'strerror', None) or e})")
            return False
        return saved is not None

    def _weights_checked(self) -> bool:
        """Settle the last step's weight check (WeightCheck: on CUDA it waits for a read) before
        the weights leave the training loop; False, and training paused with the reason, if the
        step made them non-finite."""
        if self._weight_check is None or not self._weight_check.pending:
            return True
        try:
            self._weight_check.settle()
        except NonFiniteError as e:
            self._fail(f"{e}; training paused — load the last good checkpoint, then resume")
            return False
        return True

    def _fail(self, message: str) -> None:
        with self._lock:
            self._state = State.ERROR
        self._event("error", message)
        self._publish(force=True)

    # ----- checkpoints ----------------------------------------------------------------
    def _save_checkpoint(self, reason: str) -> Path | None:
        """Write step_<N>.pt, point latest (and best) at it, prune. Errors are reported, not raised."""
        if not self.is_rank0 or not self._weights_checked():
            return None
        path = self.run_dir / f"step_{self.step}.pt"
        try:
            size = ckpt.save(path, self._payload())
        except (OSError, ckpt.CheckpointError) as e:  # a full disk; non-finite weights
            after = {"periodic": f"training goes on (retried in {self.config.run.checkpoint_every:,} steps)",
                     "stop": "training stopped", "final": "training finished"}.get(reason)
            lost = self.unsaved()
            self._event("error", f"checkpoint {path.name} not written ({getattr(e, 'strerror', None) or e}); "
                                 f"{after + '; ' if after else ''}{lost + ' are not saved' if lost else 'nothing is lost'}")
            return None
        self.last_checkpoint_step, self.last_checkpoint = self.step, path.name
        try:
            ckpt.link_or_copy(path, self.run_dir / "latest.pt")
            score = self.scores.mean_score()
            index_update = {"latest": path.name, "files": {path.name: {"step": self.step, "score": _finite_or_none(score),
                                                                       "time": time.time()}}}
            ckpt.update_index(self.run_dir, index_update)
            if math.isfinite(score) and score > self.best_score:
                self.best_score = score
                ckpt.mark_best(self.run_dir, path, "score", score)
        except OSError as e:  # the checkpoint is whole; --resume finds it by its name
            self._event("warning", f"{path.name} written, but latest.pt or index.json not updated ({e.strerror or e})")
        ckpt.prune(self.run_dir, self.config.run.keep_last)
        self._event("info", f"saved {path.name} ({reason}, {size / 2**20:.1f} MiB)")
        return path

    def unsaved(self) -> str:
        """The training no checkpoint holds, in words ("" when there is none)."""
        if self.step == self.last_checkpoint_step:
            return ""
        if self.last_checkpoint is None:
            return f"all {self.step:,} steps of this run (it has no checkpoint)"
        return f"the {self.step - self.last_checkpoint_step:,} steps since {self.last_checkpoint} (step " \
               f"{self.last_checkpoint_step:,})"

    def _load(self, path: str | Path) -> int:
        if not self.is_rank0:
            raise ConfigError(f"rank {self.rank} takes its weights from rank 0: load on rank 0")
        path, payload, skipped = ckpt.load_usable(path)
        ckpt.check_compatible(payload, self.config.env.id, self.envs.n_actions, self.envs.observation_shape, path)
        self._restore(payload, path.name)
        if self.evaluations is not None:  # the weights it evaluates are not this run's any more
            self.evaluations.cancel()
            self.evaluations.reset(self.step)
        self._loads += 1
        self.obs = self.envs.reset()
        self._rate = (time.perf_counter(), self.step, 0.0)
        self._pending_stats.clear()
        with self._lock:
            if self._state in (State.ERROR, State.FINISHED):
                self._state = State.PAUSED
        self._event("info", f"loaded {path.name} at step {self.step:,}{_skipped_note(skipped)}")
        return self.step

    # ----- commands (any thread) ------------------------------------------------------
    def _submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        if not self._looping:
            _run_into(fn, future)  # no loop to hand it to: run here
            return future
        self._commands.put((fn, future))
        with self._lock:
            self._lock.notify_all()
        if not self._looping:  # the loop ended between the check and the put
            self._run_commands()
        return future

    def _run_commands(self) -> None:
        if not self._commands.empty():
            self._weights_checked()  # a command may read or save the weights
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            _run_into(fn, future)

    def _set_state(self, new: State, allowed: tuple[State, ...], verb: str) -> bool:
        with self._lock:
            if self._state not in allowed:
                return False
            self._state = new
            self._lock.notify_all()
        self._event("info", verb)
        self._publish(force=True)
        return True

    @property
    def state(self) -> State:
        return self._state

    @property
    def total_envs(self) -> int:
        """Every rank's envs: env.num_envs is per rank."""
        return self.world_size * self.config.env.num_envs

    def pause(self) -> bool:
        return self._set_state(State.PAUSED, (State.RUNNING,), "paused")

    def resume(self) -> bool:
        self._rate = (time.perf_counter(), self.step, self._rate[2])  # paused time is not training time
        return self._set_state(State.RUNNING, (State.PAUSED, State.ERROR), "resumed")

    def stop(self) -> Future:
        """Stop training for good (a checkpoint is written); the trainer still answers commands."""
        return self._submit(self._stop_now)

    def _stop_now(self) -> Path | None:
        with self._lock:
            was = self._state
            if was in (State.STOPPED, State.FINISHED) or self._job_lost:
                return None
            self._state = State.STOPPED
        if self.evaluations is not None:
            self.evaluations.cancel()
        path = self._save_checkpoint(reason="stop") if self.step > 0 and was != State.ERROR else None
        self._event("info", "stopped")
        self._publish(force=True)
        return path

    def close(self, timeout: float = 5.0) -> None:
        """End the loop thread (after the update in progress)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def set_hparams(self, **values: float) -> Future:
        """Validate now (ConfigError in the caller), apply at the next update."""
        checked = {}
        for key, value in values.items():
            if key not in LIVE_KEYS:
                raise ConfigError(f"{key} cannot be changed while training: live keys are {', '.join(LIVE_KEYS)}")
            checked[key] = check_value(f"algo.{key}", value)

        def do() -> dict[str, float]:
            for key, value in checked.items():
                old = self.hparams[key]
                self.hparams[key] = value
                if key == "lr":
                    # The typed value is the learning rate from now on; the schedule decays from it.
                    left = 1.0 - self.step / self.config.run.total_steps
                    linear = self.config.algo.lr_schedule == "linear" and left > 0
                    self.base_lr = value / left if linear else value
                self._event("info", f"{key} changed {old:g} -> {value:g}")
                self.metrics.text("hparams", f"{key}: {old:g} -> {value:g}", self.step)
            self._publish(force=True)
            return dict(self.hparams)
        return self._submit(do)

    def save_now(self) -> Future:
        return self._submit(lambda: self._save_checkpoint(reason="requested"))

    def load(self, path: str | Path) -> Future:
        return self._submit(lambda: self._load(path))

    def weights(self) -> Future:
        """A CPU copy of the current weights (for an evaluation beside training)."""
        return self._submit(lambda: {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})

    def subscribe(self, callback: Callable[[Snapshot | Event], None]) -> None:
        """callback(Snapshot | Event), called on the training thread: it must not block."""
        self._subscribers.append(callback)

    # ----- output ---------------------------------------------------------------------
    def current_lr(self) -> float:
        return scheduled_lr(self.base_lr, self.config.algo.lr_schedule, self.step, self.config.run.total_steps)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            run_name=self.run_dir.name, run_dir=str(self.run_dir), env_id=self.config.env.id,
            device=f"{self.device.type} ({self.precision})", state=self._state, step=self.step,
            total_steps=self.config.run.total_steps, updates=self.updates, elapsed=self.elapsed,
            steps_per_sec=self._rate[2], score=self.scores.mean_score(), games=self.scores.games,
            hparams=MappingProxyType({**self.hparams, "lr": self.current_lr()}), metrics=self._last_record,
            evaluation=self._last_evaluation,
        )

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._subscribers or (not force and now - self._last_publish < self.publish_interval):
            return
        self._last_publish = now
        snapshot = self.snapshot()
        for callback in list(self._subscribers):
            callback(snapshot)

    def _event(self, level: str, text: str) -> None:
        event = Event(time.time(), level, text)
        for callback in list(self._subscribers):
            callback(event)


def config_from_payload(payload: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    try:
        return from_dict(payload["config"])
    except (KeyError, ConfigError) as e:
        raise ckpt.CheckpointError(f"{str(path)!r} holds no usable config ({e})") from None


def _run_into(fn: Callable[[], Any], future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(e)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _check_room_for_a_checkpoint(run_dir: Path, model: torch.nn.Module) -> None:
    """Refuse to start on a disk that cannot hold one checkpoint (weights and at most two
    optimizer buffers as large): every save of such a run would fail."""
    need = 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + 2**20
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # creating the directory will say what is wrong
    if free < need:
        raise ConfigError(f"not enough disk space for a checkpoint in {existing}: {free / 2**20:.1f} MiB free, "
                          f"{need / 2**20:.1f} MiB needed")


@functools.cache
def _has_nvml() -> bool:
    return importlib.util.find_spec("pynvml") is not None  # torch.cuda.utilization needs it (nvidia-ml-py)


def device_usage(device: torch.device, cuda: Any = torch.cuda) -> dict[str, float]:
    """A GPU's memory in use and reserved at most (GiB), and its utilisation (%) when NVML is
    there; nothing on a CPU."""
    if device.type != "cuda":
        return {}
    usage = {"gpu_memory_gib": cuda.memory_allocated(device) / 2**30,
             "gpu_memory_max_reserved_gib": cuda.max_memory_reserved(device) / 2**30}
    if _has_nvml():
        try:
            usage["gpu_utilization"] = float(cuda.utilization(device))
        except Exception:  # noqa: BLE001 - NVML cannot read this device (a MIG slice, a container): no figure
            pass
    return usage


def _skipped_note(skipped: list[str]) -> str:
    return f" (skipped {', '.join(skipped)}: non-finite weights)" if skipped else ""


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], np.array(state["keys"], dtype=np.uint32), state["pos"], state["has_gauss"],
                         state["cached"]))

