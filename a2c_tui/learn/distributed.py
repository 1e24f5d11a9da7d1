"""Data-parallel A2C across processes started by torchrun (CleanRL's ppo_atari_multigpu.py, as a module).

Every rank steps its own `env.num_envs` games and computes the gradient of its own rollout;
one flattened all-reduce averages the gradients, so every rank takes the big batch's step
and the weights stay identical (they start identical: rank 0's state is shared at the start
and after every load). Rank 0 owns the outside world (files, commands); at each update
boundary it tells the others what to do (`Group.exchange`), and every rank tells the others
which games it finished.

Nothing here runs unless torchrun's WORLD_SIZE is above 1: one process takes the plain path.
A collective that fails (a rank died) or takes longer than A2C_TUI_COLLECTIVE_TIMEOUT seconds
raises `RankFailure`, whose message names the rank that went away.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = 300.0  # seconds: a checkpoint write on a slow disk must fit, a hang must not last
_BEAT = 1.0  # seconds between a rank's heartbeats in the store


class RankFailure(RuntimeError):
    """Another rank is gone or stopped answering; the job cannot go on (message: one line)."""


def world_size() -> int:
    """torchrun's WORLD_SIZE (1 when not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def join() -> Group | None:
    """This process's group when torchrun started several, else None. Idempotent."""
    if world_size() == 1:
        return None
    global _group
    if _group is None:
        _group = Group()
    return _group


def leave() -> None:
    """Tear the process group down (at exit; after a failure it may not answer)."""
    global _group
    if _group is not None:
        _group.close()
        _group = None


_group: Group | None = None


class Group:
    """Rank and world from torchrun's environment (RANK, not LOCAL_RANK, so several nodes
    work) and the few collectives the trainer needs."""

    def __init__(self):
        from a2c_tui.config import ConfigError

        env = os.environ
        try:
            self.rank = int(env["RANK"])
            self.world_size = int(env["WORLD_SIZE"])
            self.local_rank = int(env.get("LOCAL_RANK", self.rank))
            self.local_world_size = int(env.get("LOCAL_WORLD_SIZE", self.world_size))
        except (KeyError, ValueError):
            raise ConfigError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} needs RANK (and LOCAL_RANK, LOCAL_WORLD_SIZE) "
                              f"as integers, as torchrun sets them; RANK={env.get('RANK')!r}") from None
        try:
            timeout = float(env.get("A2C_TUI_COLLECTIVE_TIMEOUT", DEFAULT_TIMEOUT))
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < 10**7:
            raise ConfigError(f"A2C_TUI_COLLECTIVE_TIMEOUT={env['A2C_TUI_COLLECTIVE_TIMEOUT']!r} is not allowed: "
                              f"must be seconds, > 0")
        # Commands, games and shared state are small CPU tensors (gloo); on GPUs the gradients
        # go through NCCL. One process group serves both. NCCL refuses two ranks on one GPU
        # (measured on an H200: ranks sharing it): then the gradients go through gloo, via the host.
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.shared_gpu = 0 < gpus < self.local_world_size
        nccl = gpus > 0 and dist.is_nccl_available() and not self.shared_gpu
        backend = "cpu:gloo,cuda:nccl" if nccl else "gloo"
        self._reduce_on_host = gpus > 0 and not nccl
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            raise RankFailure(f"rank {self.rank}: could not join the other {self.world_size - 1} ranks "
                              f"({_first_line(e)})") from None
        self._store = dist.distributed_c10d._get_default_store()
        self._closed = threading.Event()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()

    @property
    def cores_per_rank(self) -> int:
        """This node's cores shared among the ranks on it."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def device(self, device: torch.device) -> torch.device:
        """A GPU per rank on its node (LOCAL_RANK; more ranks than GPUs share them round-robin);
        the CPU stays the CPU."""
        if device.type != "cuda":
            return device
        index = self.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)

    # ----- collectives ----------------------------------------------------------------
    def share(self, value: Any = None) -> Any:
        """rank 0's `value` on every rank: plain data and tensors, sent as torch.save bytes
        and read with weights_only=True (nothing a peer sends can run code)."""
        if self.rank == 0:
            buffer = io.BytesIO()
            torch.save(value, buffer)
            data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
            size = torch.tensor([data.numel()], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        self._collective(dist.broadcast, size, 0)
        if self.rank != 0:
            data = torch.empty(int(size), dtype=torch.uint8)
        self._collective(dist.broadcast, data, 0)
        if self.rank == 0:
            return value
        return torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=True)

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> None:
        """Replace every rank's gradients by their mean over the ranks (one all-reduce).

        The loss rides along: a non-finite loss on any rank makes every gradient NaN, so the
        update's own check skips the step on every rank alike."""
        grads = [in_memory_order(p.grad) for p in parameters]
        not_finite = torch.where(torch.isfinite(loss), 0.0, torch.nan).reshape(1).to(grads[0].dtype)
        flat = torch.cat([g.reshape(-1) for g in grads] + [not_finite])
        if self._reduce_on_host and flat.is_cuda:
            flat = flat.cpu()
        self._collective(dist.all_reduce, flat)
        flat = flat.to(grads[0].device, non_blocking=True)
        flat[:-1] += flat[-1]  # + 0 everywhere, or NaN everywhere (no device sync to decide)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def exchange(self, header: list[float], games: list[tuple[float, int]], capacity: int
                 ) -> tuple[list[list[float]], list[tuple[float, int]]]:
        """Every rank's `header` and finished games (at most `capacity` from each; the rest
        stays in `games` for the next call), in rank order. One all-gather."""
        sent, games[:] = games[:capacity], games[capacity:]
        row = torch.zeros(len(header) + 1 + 2 * capacity, dtype=torch.float64)
        row[:len(header)] = torch.tensor(header, dtype=torch.float64)
        row[len(header)] = len(sent)
        base = len(header) + 1
        for i, (score, length) in enumerate(sent):
            row[base + i] = score
            row[base + capacity + i] = length
        rows = [torch.empty_like(row) for _ in range(self.world_size)]
        self._collective(dist.all_gather, rows, row)
        headers, finished = [], []
        for r in rows:
            values = r.tolist()
            headers.append(values[:len(header)])
            count = int(values[len(header)])
            finished += [(values[base + i], int(values[base + capacity + i])) for i in range(count)]
        return headers, finished

    def _collective(self, op: Callable, *args) -> None:
        try:
            op(*args)
        except RuntimeError as e:  # DistBackendError, gloo's closed connections and timeouts
            raise RankFailure(self._who_failed(e)) from None

    # ----- failure --------------------------------------------------------------------
    def note_failure(self, message: str) -> None:
        """Leave this rank's last words in the store, where the others look when it is gone."""
        try:
            self._store.set(f"a2c-tui/failed/{self.rank}", message)
        except Exception:  # noqa: BLE001 - the store may be gone too; the others still notice
            pass

    def _who_failed(self, error: Exception) -> str:
        """Name the rank that failed: by its note if it left one, else by its heartbeat."""
        others = [r for r in range(self.world_size) if r != self.rank]
        cause = _first_line(error)
        try:
            for r in others:
                key = f"a2c-tui/failed/{r}"
                if self._store.check([key]):
                    return f"{self._store.get(key).decode(errors='replace')} (seen by rank {self.rank})"
            before = {r: self._store.add(f"a2c-tui/beat/{r}", 0) for r in others}
            time.sleep(3 * _BEAT)
            silent = [r for r in others if self._store.add(f"a2c-tui/beat/{r}", 0) == before[r]]
        except Exception:  # noqa: BLE001 - the store lives with rank 0 or torchrun's agent
            return (f"rank {self.rank} lost rank 0 (which holds the job's store) or the network ({cause}); "
                    f"the job ends")
        if silent:
            names = ", ".join(str(r) for r in silent)
            return f"rank {names} stopped answering ({cause}); the job ends"
        return f"a collective failed on rank {self.rank} ({cause}); the job ends"

    def _heartbeat(self) -> None:
        key = f"a2c-tui/beat/{self.rank}"
        while not self._closed.wait(_BEAT):
            try:
                self._store.add(key, 1)
            except Exception:  # noqa: BLE001 - the store's host is gone: nobody is listening
                return

    def close(self) -> None:
        self._closed.set()
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - after a failure the group may not tear down cleanly
            pass


def in_memory_order(tensor: torch.Tensor) -> torch.Tensor:
    """A view of `tensor` with its dimensions in the order they lie in memory: contiguous for
    the dense layouts the model uses (channels-last convolutions, transposed Linear weights),
    so flattening it copies nothing (a transposing copy of the 3136x512 gradient took ~4 ms
    each way on 2 cores). Every rank builds the same model, so every rank flattens alike."""
    return tensor.permute(sorted(range(tensor.dim()), key=lambda d: -tensor.stride(d)))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
